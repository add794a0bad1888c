"""Where the catalog lives: `--home`, else `SHOAL_HOME`, else the per-user default."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SHOAL_HOME"
DEFAULT_HOME = Path("~/.local/share/shoal")
WORK_ENV = "SHOAL_WORK"
DEFAULT_WORK = Path("~/.cache/shoal")


def is_url(home: str) -> bool:
    """True for an object-store home such as `s3://bucket/prefix`."""
    return "://" in home and not home.startswith("file://")


def resolve_home(home: str | Path | None = None) -> str:
    """The catalog home: the argument, else `$SHOAL_HOME`, else `~/.local/share/shoal`.

    A local home is returned as an absolute path; a URL is returned unchanged.
    """
    chosen = str(home) if home else os.environ.get(HOME_ENV) or str(DEFAULT_HOME)
    if is_url(chosen):
        return chosen.rstrip("/")
    return str(Path(chosen.removeprefix("file://")).expanduser().resolve())


def local_folder(home: str) -> Path:
    """Where the files that stay on this machine go: training runs, plots, tuning studies, fetched checkpoints.

    The home itself when it is local; for an object-store home, `$SHOAL_WORK` (default
    `~/.cache/shoal`) / scheme / bucket / prefix.
    """
    if not is_url(home):
        return Path(home)
    scheme, _, rest = home.partition("://")
    return Path(os.environ.get(WORK_ENV) or DEFAULT_WORK).expanduser().resolve() / scheme / rest

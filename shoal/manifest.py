"""A folder's `sha256sum`-format manifest (`SHA256SUMS`), and downloads that keep it up to date.

`download_into` is what a `shoal fetch` command calls: it downloads into one folder with
`shoal.download.download` and records every file's sha256 in the folder's manifest
(`cd DIR && sha256sum -c SHA256SUMS` checks them), reporting a local copy that no longer
matches the manifest instead of trusting it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from shoal.download import (
    DownloadConfig,
    DownloadedFile,
    DownloadError,
    DownloadFailure,
    DownloadReport,
    FetchArgumentError,
    ProgressFn,
    download,
)
from shoal.files import atomic_write

MANIFEST = "SHA256SUMS"
_MANIFEST_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def download_into(
    items: Sequence[tuple[str, str]],
    dest: str | Path,
    *,
    config: DownloadConfig = DownloadConfig(),
    progress: ProgressFn | None = None,
    manifest: str = MANIFEST,
    resume: bool = False,
) -> DownloadReport:
    """Download each `(url, name)` to `dest/name` and keep `dest/<manifest>` up to date.

    A file already complete in `dest` is skipped (and hashed); when the manifest lists it
    with another sha256, it is a failure in the report instead (the local copy changed), and
    the manifest keeps the recorded sha256. Every other downloaded or skipped file gets its
    entry; entries of other files stay.

    Args:
        items: URL and file name (relative to `dest`, `/`-separated) pairs.
        dest: the folder; created when missing.
        config: retries, timeout, backoff and concurrency.
        progress: called once per item with its URL and outcome.
        manifest: the manifest's file name in `dest`.
        resume: continue partial downloads from `NAME.part` (see `download`).

    Returns:
        The report of `download`, with changed local copies moved from skipped to failures.

    Raises:
        FetchArgumentError: `dest` cannot be created.
        DownloadError: the manifest cannot be read (before any download) or written.
    """
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FetchArgumentError(f"{dest}: cannot create the destination folder ({error}); pick a writable folder") from error
    manifest_path = dest / manifest
    entries = read_manifest(manifest_path)  # a broken manifest stops us before any download
    report = download([(url, dest / name) for url, name in items], config=config, progress=progress, resume=resume)

    changed = [f for f in report.skipped if entries.get(_name_in(dest, f.path), f.sha256) != f.sha256]
    entries.update(manifest_entries(report.downloaded, dest))
    entries.update(manifest_entries([f for f in report.skipped if f not in changed], dest))
    write_manifest(manifest_path, entries)
    if not changed:
        return report
    mismatches = tuple(
        DownloadFailure(url=f.url, path=f.path, attempts=0,
                        problem=f"{f.path} has sha256 {f.sha256[:12]}…, {manifest} says {entries[_name_in(dest, f.path)][:12]}…",
                        fix="the local copy changed: delete it and fetch again")
        for f in changed
    )
    return replace(report, skipped=tuple(f for f in report.skipped if f not in changed),
                   failures=report.failures + mismatches)


def read_manifest(path: str | Path) -> dict[str, str]:
    """Read a `sha256sum`-format manifest into {name: sha256}; {} when there is none.

    Raises:
        DownloadError: a line is not `<64 hex digits>  <name>`, or the file is unreadable.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise DownloadError(f"{path}: cannot read the manifest ({error}); delete it, the next fetch rewrites it") from error
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        found = _MANIFEST_LINE.fullmatch(line)
        if not found:
            raise DownloadError(f"{path}:{number}: expected '<sha256>  <name>' (sha256sum format), found {line[:60]!r}; "
                                "fix the line or delete the manifest, the next fetch rewrites it")
        entries[found.group(2)] = found.group(1).lower()
    return entries


def write_manifest(path: str | Path, entries: Mapping[str, str]) -> Path:
    """Write {name: sha256} as a `sha256sum`-format manifest, sorted by name, atomically.

    `cd <folder> && sha256sum -c <manifest>` checks it.

    Raises:
        DownloadError: a name holds a newline or backslash, or the file cannot be written.
    """
    path = Path(path)
    for name in entries:
        if "\n" in name or "\\" in name:
            raise DownloadError(f"{path}: file name {name!r} holds a newline or backslash; rename the file")
    text = "".join(f"{entries[name]}  {name}\n" for name in sorted(entries))
    try:
        with atomic_write(path) as f:
            f.write(text.encode("utf-8"))
    except OSError as error:
        raise DownloadError(f"{path}: cannot write the manifest ({error}); check the folder's permissions and free space") from error
    return path


def manifest_entries(files: Iterable[DownloadedFile], folder: str | Path) -> dict[str, str]:
    """{name relative to `folder`: sha256} for files inside `folder`.

    Raises:
        DownloadError: a file lies outside `folder`.
    """
    return {_name_in(folder, file.path): file.sha256 for file in files}


def _name_in(folder: str | Path, path: str | Path) -> str:
    """`path` relative to `folder`, `/`-separated: its name in the folder's manifest."""
    folder = Path(os.path.abspath(folder))
    try:
        return Path(os.path.abspath(path)).relative_to(folder).as_posix()
    except ValueError:
        raise DownloadError(f"{path}: not inside {folder}; a manifest lists only files in its own folder") from None

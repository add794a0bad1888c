"""The `ShoalError` hierarchy: one line that says what, where, and how to fix it.

Core code raises these; the CLI prints `str(error)` on one line and exits non-zero.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def exit_code(*, failed: bool, done: bool) -> int:
    """The CLI's contract: 0 nothing failed; 1 some inputs failed, the rest were done; 2 nothing done."""
    if not failed:
        return 0
    return 1 if done else 2


class ShoalError(Exception):
    """Base class of every error shoal raises on purpose."""


class SourceError(ShoalError):
    """A source file cannot be read or is not what its source expects.

    Args:
        path: the file.
        problem: what was expected and what was found.
        fix: how to fix it.
        line: the 1-based line (text files) or message number (GRIB), when known.
    """

    def __init__(self, path: str | Path, problem: str, *, fix: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}; {fix}")

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled as its message, path and line (a Dask worker's error reaches the driver whole)."""
        return _restore, (type(self), str(self), self.path, self.line)


def _restore(kind: type[SourceError], message: str, path: str, line: int | None) -> SourceError:
    error = Exception.__new__(kind)
    Exception.__init__(error, message)
    error.path, error.line = path, line
    return error


class SchemaError(SourceError):
    """A source parsed, but its columns or values do not match the expected schema."""


class CatalogError(ShoalError):
    """The catalog cannot do what was asked (unknown dataset, bad name, bad version, ...)."""


def no_dataset(name: str, uri: str) -> CatalogError:
    """The error for a dataset `name` without a commit, whose files (if any) would be at `uri`."""
    from shoal.files import holds_files

    if holds_files(uri):
        return CatalogError(f"no dataset {name!r} (an interrupted first write left files; they are ignored)")
    return CatalogError(f"no dataset {name!r}; see `shoal catalog list`")


class ConcurrentCommit(CatalogError):
    """Another writer committed changes this commit could not be rebased over; nothing was committed."""


class HomeError(CatalogError):
    """The catalog home itself failed (full disk, read-only, no permission, not a folder).

    Never a source file's fault: ingests let it through instead of turning it into a
    per-file failure line, and the CLI prints it as one line naming the home and the fix.
    """


_HOME_FIXES = {
    errno.ENOSPC: ("is full (no space left on device)", "free space there, or pass --home a folder on another disk"),
    errno.EDQUOT: ("is over its disk quota", "free space there, or pass --home a folder on another disk"),
    errno.EROFS: ("is on a read-only file system", "remount it writable, or pass --home a writable folder"),
    errno.EACCES: ("cannot be written (permission denied)", "give this user write access to it, or pass --home "
                                                             "a folder you own"),
}
_HOME_FIXES[errno.EPERM] = _HOME_FIXES[errno.EACCES]


def home_failure(error: BaseException, home: str) -> HomeError | None:
    """The `HomeError` an exception from writing into `home` amounts to, or None when it is not the home's.

    Walks the exception's causes: an `OSError` with the errno of a full disk, a quota, a
    read-only file system, or (for a file inside the home) a denied permission; or a storage
    library's error whose text carries one of those (deltalake, Icechunk and polars report
    them as text). Reading a source cannot fill a disk, so those errors are never a source's.
    """
    texts = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)}
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = getattr(error, "errno", None)
        filename = str(getattr(error, "filename", "") or "")
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or (
                code in (errno.EACCES, errno.EPERM) and filename.startswith(home)):
            return _home_error(home, code)
        text = str(error)
        for phrase, found in texts.items():
            if phrase in text:
                return _home_error(home, found)
        if os.strerror(errno.EACCES) in text and home in text:
            return _home_error(home, errno.EACCES)
        error = error.__cause__ or error.__context__
    return None


def _home_error(home: str, code: int) -> HomeError:
    what, fix = _HOME_FIXES[code]
    return HomeError(f"the home {home} {what}; {fix}. Every dataset is still at its last version "
                     "(`shoal catalog check --repair` removes what the failed write left)")


class ModelConfigError(ShoalError, ValueError):
    """A model configuration that cannot work (sizes, grid); the message says the fix."""


class TrainingError(ShoalError):
    """Training cannot go on (bad settings, an incompatible checkpoint, a diverged loss)."""

"""Per-dataset file locks for local homes (object stores bring their own commit protocols)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


def dataset_lock(path: Path | None) -> contextlib.AbstractContextManager[object]:
    """An exclusive lock on `path` (released by the OS if the holder dies); none for None.

    Re-entrant within a thread (one `FileLock` per path, `is_singleton`): a feature build
    holds its dataset's lock while it checks for an identical version and writes, and the
    write takes the same lock again. Other threads and processes wait.
    """
    if path is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, is_singleton=True)


@contextlib.contextmanager
def lock_if_free(path: Path | None) -> Iterator[bool]:
    """Take the lock on `path` if nobody holds it; yields whether it was taken (always True for None)."""
    if path is None:
        yield True
        return
    from filelock import Timeout

    lock = dataset_lock(path)
    try:
        lock.acquire(timeout=0)  # type: ignore[attr-defined]
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()  # type: ignore[attr-defined]

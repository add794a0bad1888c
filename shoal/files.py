"""Local files written whole or not at all, and their sha256.

`atomic_write` is the one way shoal writes a file that others may read (downloads,
manifests, checkpoints): the bytes go to a hidden temporary file in the same folder, are
fsynced, and only then renamed over the final name, so a reader (or a crash) never sees a
partial file under that name.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

BLOCK = 1 << 20  # 1 MiB reads: hashing runs at disk speed without holding the file in memory


def temporary_name(path: str | Path) -> Path:
    """Where `atomic_write` puts the bytes of `path` before the rename.

    Hidden (`.NAME....tmp`) so that globs like `sst*.grb` never pick it up, and named after
    the process and thread so that two writers of the same file never share one.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Write a file so that `path` holds either its old content or all of the new.

    Yields a binary file open on a temporary file in the same folder; when the block ends
    normally the file is flushed, fsynced and renamed to `path` (`os.replace`), and the
    folder is fsynced so the rename survives a power cut. When the block raises, the
    temporary file is removed and `path` is left as it was.

    Args:
        path: the final file; its folder must exist.

    Yields:
        The open temporary file.

    Raises:
        OSError: the file cannot be written or renamed (nothing is left behind).
    """
    path = Path(path)
    partial = temporary_name(path)
    try:
        with partial.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        fsync_dir(path.parent)
    finally:
        partial.unlink(missing_ok=True)


def sha256_file(path: str | Path) -> tuple[str, int]:
    """The hex sha256 of a file and its size in bytes, read in 1 MiB blocks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def copy_atomic(source: str | Path, target: str | Path) -> str:
    """Copy `source` to `target` with `atomic_write`, hashing on the way; return the sha256.

    Raises:
        OSError: `source` cannot be read or `target` cannot be written.
    """
    digest = hashlib.sha256()
    with open(source, "rb") as read, atomic_write(target) as write:
        while block := read.read(BLOCK):
            digest.update(block)
            write.write(block)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); Windows cannot open a folder for fsync."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def holds_files(uri: str) -> bool:
    """Whether the local folder or object-store prefix `uri` holds any file (reads only)."""
    import pyarrow.fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(uri if "://" in uri else Path(uri).resolve().as_uri())
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    return any(info.type == pafs.FileType.File for info in filesystem.get_file_info(selector))

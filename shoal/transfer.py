"""One file over HTTP(S) in one GET: whole through `atomic_write`, or resumed from its `.part`.

The transport under `shoal.download`, which decides what to retry and reports: each function
makes one attempt and raises what went wrong (`BadStatus`, `Truncated`, `Restart`, `Busy`, or
httpx's and the OS's errors), and returns the file's sha256 and size, hashed on the way in.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING

from shoal.files import atomic_write, fsync_dir

if TYPE_CHECKING:
    import httpx

_BLOCK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+)")


def part_name(path: str | Path) -> Path:
    """Where a resumable download keeps the bytes of `path` until they are all there."""
    path = Path(path)
    return path.with_name(f"{path.name}.part")


class BadStatus(Exception):
    """The server answered with a status other than 200."""

    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status, self.retry_after = status, retry_after


class Truncated(Exception):
    """The body ended before the Content-Length the server announced."""

    def __init__(self, received: int, expected: int) -> None:
        super().__init__(f"truncated response: received {received} of {expected} bytes")


class Restart(Exception):
    """A resumed download cannot continue where its `.part` ends; the next attempt starts over."""


class Busy(Exception):
    """Another process holds the lock on the `.part` file."""


def get_whole(client: httpx.Client, url: str, dest: Path) -> tuple[str, int]:
    """One GET through `atomic_write`: `dest` appears only when every byte arrived."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()  # hashed on the way in: the file is not read twice
    size = 0
    with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise BadStatus(response.status_code, response.reason_phrase,
                             retry_after(response.headers.get("Retry-After")))
        length = response.headers.get("Content-Length")
        with atomic_write(dest) as f:
            for block in response.iter_bytes(_BLOCK):
                f.write(block)
                digest.update(block)
                size += len(block)
            # h11 raises on a connection closed early; this also catches a server that lies.
            # Raised inside the block, so the temporary file is dropped, never renamed.
            if length is not None and length.isdigit() and response.num_bytes_downloaded != int(length):
                raise Truncated(response.num_bytes_downloaded, int(length))
    return digest.hexdigest(), size


def get_resumed(client: httpx.Client, url: str, dest: Path) -> tuple[str, int]:
    """One GET that continues `dest.part` where it ends, then renames it to `dest`.

    The bytes already in `.part` stay there when this attempt fails, for the next one.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_name(dest)
    with open(part, "a+b") as f:
        _lock(f, part)
        try:
            digest, size = _continue(client, url, f)
        except BaseException:
            f.flush()
            if os.fstat(f.fileno()).st_size == 0:  # nothing to resume: leave nothing behind
                part.unlink(missing_ok=True)
            raise
        f.flush()
        os.fsync(f.fileno())
        os.replace(part, dest)  # still locked: no other process appends to the renamed file
    fsync_dir(dest.parent)
    return digest.hexdigest(), size


def _continue(client: httpx.Client, url: str, f: IO[bytes]) -> tuple[hashlib._Hash, int]:
    """Append the rest of the file to `f` (or all of it); its sha256 and size."""
    have = f.seek(0, os.SEEK_END)
    with client.stream("GET", url, headers={"Range": f"bytes={have}-"} if have else None) as response:
        start, total = _continue_at(response, have, f)
        digest = _sha256_prefix(f, start)
        size = start
        if response.status_code == 416:  # the .part was complete (killed before the rename)
            return digest, size
        for block in response.iter_bytes(_BLOCK):
            f.write(block)
            digest.update(block)
            size += len(block)
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and response.num_bytes_downloaded != int(length):
            raise Truncated(size, start + int(length))
        if total is not None and size != total:
            raise Truncated(size, total)
    return digest, size


def _continue_at(response: httpx.Response, have: int, f: IO[bytes]) -> tuple[int, int | None]:
    """Where the body continues the `.part` (0 or `have`, truncating it for 0), and the file's size when known."""
    found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    total = int(found.group(3)) if found else None
    if response.status_code == 206 and found and found.group(1) is not None and int(found.group(1)) == have:
        return have, total
    if response.status_code == 416 and have and total == have:
        return have, total
    if response.status_code in (206, 416) and have:  # not where the .part ends, or the file shrank
        f.truncate(0)
        raise Restart(f"the server cannot continue at byte {have} (HTTP {response.status_code}, "
                       f"Content-Range {response.headers.get('Content-Range')!r}); starting over")
    if response.status_code != 200:
        raise BadStatus(response.status_code, response.reason_phrase, retry_after(response.headers.get("Retry-After")))
    f.truncate(0)  # the server sends the whole file (it ignored the Range, or there was none)
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None and length.isdigit() else None


def _sha256_prefix(f: IO[bytes], size: int) -> hashlib._Hash:
    """A sha256 fed with the first `size` bytes of `f` (the part downloaded before)."""
    digest = hashlib.sha256()
    f.seek(0)
    left = size
    while left and (block := f.read(min(_BLOCK * 16, left))):
        digest.update(block)
        left -= len(block)
    if left:
        raise OSError(f"{getattr(f, 'name', 'the .part file')} shrank while being resumed")
    return digest


def _lock(f: IO[bytes], part: Path) -> None:
    """Lock the open `.part` for this process, and check it is still the file named `part`."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; one fetch per folder at a time
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Busy(f"{part} is locked by another process") from None
    try:
        same = os.path.samestat(os.fstat(f.fileno()), os.stat(part))
    except FileNotFoundError:
        same = False
    if not same:  # the lock holder finished and renamed it while we waited to open it
        raise Busy(f"{part} was completed by another process")


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` in seconds; an HTTP-date is ignored (the backoff applies)."""
    return float(value) if value is not None and value.strip().isdigit() else None

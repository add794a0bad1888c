"""The text of a HIGGS file, plain, gzip or zip, as blocks of whole lines, refused early when hostile.

`BlockReader` reads, inflates (ISA-L) and hashes a file in a thread, a few blocks of about
BLOCK bytes ahead of its caller, and stops at a line longer than `HiggsLimits.max_line_bytes`
or at text that outgrows `HiggsLimits.max_ratio` times the compressed bytes (a bomb), in
bounded memory. `check_lines` checks a plain file for long lines before polars reads it.
`shoal.datasets.higgs` parses and writes what these read.
"""

from __future__ import annotations

import queue
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shoal.errors import SchemaError, SourceError
from shoal.lineage import HashingReader, SourceFile

BLOCK = 32 << 20  # bytes of text parsed at once by the block-wise path (~43,000 rows)
GZIP, ZIP = b"\x1f\x8b", b"PK\x03\x04"  # the first bytes of a gzip and of a zip file
RATIO_FLOOR = 16 << 20  # text inflated before the ratio is judged: a small file of repeated rows may pack tighter


@dataclass(frozen=True)
class HiggsLimits:
    """What a HIGGS file may hold before it is refused as hostile (read so far, and no further).

    Attributes:
        max_line_bytes: the longest line. A UCI line is at most ~760 bytes (29 numbers as
            `%.18e`); 4 KiB leaves room for other number formats and refuses a file of one
            endless line after one block.
        max_ratio: the most bytes of text one compressed byte may inflate to, judged once
            RATIO_FLOOR bytes are inflated (and at once from a zip member's declared sizes).
            UCI's HIGGS.csv.gz inflates ~2.9 times; a gzip of zeros ~200-1000 times.
    """

    max_line_bytes: int = 4096
    max_ratio: float = 20.0


def long_line(text: bytes | bytearray, limit: int, end: int | None = None) -> int:
    """Where the first line longer than `limit` bytes starts in text[:end], or -1 (an unended last line counts so far).

    One `rfind` per `limit` bytes: the last newline of each window of limit + 1 bytes
    starts the next window, so the text is never scanned byte by byte in Python.
    """
    end = len(text) if end is None else end
    start = 0  # where the line being checked starts
    while end - start > limit:
        newline = text.rfind(b"\n", start, start + limit + 1)
        if newline < 0:
            return start
        start = newline + 1
    return -1


def line_too_long(path: Path, limits: HiggsLimits, line: int) -> SchemaError:
    return SchemaError(path, f"a line longer than {limits.max_line_bytes:,} bytes (a HIGGS line is under 1 KB)",
                       fix="expected the UCI HIGGS text; fetch the file again (`shoal fetch higgs`), or raise "
                           "HiggsLimits.max_line_bytes", line=line)


class LongLine(Exception):  # noqa: N818 (a signal between threads, never shown)
    """A line over the limit starts right after the blocks handed out so far: the reader of the blocks numbers it."""


def too_packed(path: Path, text: int, packed: int, limits: HiggsLimits) -> SourceError:
    return SourceError(path, f"{text:,} bytes of text from {packed:,} compressed bytes, more than "
                             f"{limits.max_ratio:g} times (HIGGS.csv.gz inflates ~3 times), as a decompression "
                             "bomb does",
                       fix="fetch the file again (`shoal fetch higgs`), or raise HiggsLimits.max_ratio")


class _Counted:
    """A binary stream read through this counts the bytes read (the compressed side of an inflater)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.size = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self.raw.readinto(buffer)
        self.size += count
        return count

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()


class _Inflated:
    """An inflating stream that stops once its text outgrows `limits.max_ratio` times the compressed bytes read."""

    def __init__(self, path: Path, stream: IO[bytes], packed: Callable[[], int], limits: HiggsLimits) -> None:
        self.path, self.stream, self.packed, self.limits, self.text = path, stream, packed, limits, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.text += len(data)
        if self.text > RATIO_FLOOR and self.text > self.limits.max_ratio * max(1, self.packed()):
            raise too_packed(self.path, self.text, self.packed(), self.limits)
        return data

    def close(self) -> None:
        self.stream.close()


def is_zip(raw: HashingReader) -> bool:
    return raw.raw.peek(4)[:4] == ZIP


def text_stream(path: Path, raw: HashingReader, limits: HiggsLimits) -> IO[bytes]:
    """The CSV text of a plain, gzip or zip file (`raw` reads the file itself), as a stream of bytes.

    Plain and gzip files are read through `raw` from start to end; a zip is opened by name
    (its directory is at the end). Inflating stops at a bomb (`limits.max_ratio`): a gzip
    stream as its text outgrows the compressed bytes read, a zip member at once from its
    declared sizes (zipfile inflates no more than the declared size).
    """
    from isal import igzip

    if raw.raw.peek(2)[:2] == GZIP:
        return _Inflated(path, igzip.IGzipFile(fileobj=raw, mode="rb"), lambda: raw.size, limits)
    if is_zip(raw):
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if m.lower().endswith((".csv", ".csv.gz"))]
        if not members:
            raise SourceError(path, f"the zip holds no .csv or .csv.gz member (it holds {archive.namelist()[:5]})",
                              fix="pass the HIGGS.csv.gz UCI publishes, or a zip that wraps it")
        info = archive.getinfo(members[0])
        if info.file_size > RATIO_FLOOR and info.file_size > limits.max_ratio * max(1, info.compress_size):
            raise too_packed(path, info.file_size, info.compress_size, limits)
        inner = archive.open(members[0])
        if members[0].lower().endswith(".gz"):
            counted = _Counted(inner)
            return _Inflated(path, igzip.IGzipFile(fileobj=counted, mode="rb"), lambda: counted.size, limits)
        return inner
    return raw  # type: ignore[return-value]


def blocks(stream: IO[bytes], limits: HiggsLimits) -> Iterator[bytes]:
    """Blocks of whole lines (each ends with a newline) of about BLOCK bytes.

    Raises:
        LongLine: after a last block of the lines before it, a line over `limits.max_line_bytes`
            (what is held of a line never exceeds the limit).
    """
    rest = b""
    while chunk := stream.read(BLOCK):
        data = rest + chunk
        if (long := long_line(data, limits.max_line_bytes)) >= 0:
            if long:
                yield data[:long]
            raise LongLine
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        rest = data[cut:]
    if rest.strip():
        yield rest + b"\n"


class BlockReader:
    """`blocks` of a file, read and inflated in a thread `depth` blocks ahead of the caller.

    The thread also hashes the file as it reads it (a zip, which is read out of order, is
    hashed at the end): `source` is the file's lineage entry once the blocks are all out.
    """

    def __init__(self, path: Path, limits: HiggsLimits, depth: int = 2) -> None:
        self.path, self.limits, self.depth, self.source = path, limits, depth, None

    def _read(self, handoff: queue.Queue, stop: threading.Event) -> None:
        try:
            with self.path.open("rb") as file:
                raw = HashingReader(file)
                zipped, stream = is_zip(raw), text_stream(self.path, raw, self.limits)
                try:
                    for block in blocks(stream, self.limits):
                        while not stop.is_set():
                            try:
                                handoff.put(block, timeout=0.1)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
                finally:
                    if stream is not raw:
                        stream.close()
                self.source = SourceFile.of(self.path) if zipped else raw.source(self.path)
            handoff.put(None)
        except BaseException as error:  # noqa: BLE001 (handed to the consumer, which raises it)
            handoff.put(error)

    def __iter__(self) -> Iterator[bytes]:
        handoff: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()
        reader = threading.Thread(target=self._read, args=(handoff, stop), name=f"read {self.path.name}", daemon=True)
        reader.start()
        try:
            while (item := handoff.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            reader.join()


def check_lines(path: Path, limits: HiggsLimits) -> None:
    """Read a plain file once, before polars does: a line longer than `limits.max_line_bytes` raises with its number.

    Polars holds a whole line in memory (and more: 2 GB for a 1 GB line), so it must never
    see one. One buffer, refilled (~0.2 s a GB here), and the page cache is warm for the query.
    """
    limit = limits.max_line_bytes
    buffer = bytearray(BLOCK + limit)
    kept = offset = 0  # the bytes of an unended line at the buffer's start; the file offset of the buffer's start
    with path.open("rb", buffering=0) as file:
        while count := file.readinto(memoryview(buffer)[kept:]):
            end = kept + count
            if (long := long_line(buffer, limit, end)) >= 0:
                raise line_too_long(path, limits, lines_before(path, offset + long) + 1)
            cut = buffer.rfind(b"\n", 0, end) + 1
            buffer[: end - cut] = buffer[cut:end]  # what follows the last newline: at most `limit` bytes
            kept, offset = end - cut, offset + cut


def lines_before(path: Path, offset: int) -> int:
    """The newlines in the first `offset` bytes of a file."""
    lines = 0
    with path.open("rb") as file:
        while offset > 0 and (piece := file.read(min(BLOCK, offset))):
            lines += piece.count(b"\n")
            offset -= len(piece)
    return lines

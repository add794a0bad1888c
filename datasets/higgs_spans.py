"""A plain HIGGS CSV parsed, checked and written by a Dask cluster's workers (`shoal ingest higgs --cluster`).

The file is cut into spans of whole lines; the workers count the lines of their spans (so every
row's id is known), then parse, check and write each span's rows as Parquet files with their
statistics, exactly as one process would (`shoal.datasets.higgs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from shoal.commit_stats import Columns, arrow_stats, merge_columns
from shoal.datasets.higgs import FILE_ROWS, parse_block, too_few
from shoal.lineage import SourceFile

if TYPE_CHECKING:
    from distributed import Client

SPAN_BYTES = 64 << 20  # the most text one Dask task parses and writes (~90,000 rows)


def _line_start(file: IO[bytes], offset: int) -> int:
    """Where the first line that starts at or after `offset` starts."""
    if offset == 0:
        return 0
    file.seek(offset - 1)
    file.readline()
    return file.tell()


def _spans(path: Path, parts: int) -> list[tuple[int, int]]:
    """Byte spans of whole lines that cover the file: `parts` of them, or more so that none exceeds ~SPAN_BYTES."""
    size = path.stat().st_size
    count = max(parts, -(-size // SPAN_BYTES))
    with path.open("rb") as file:
        starts = sorted({_line_start(file, size * i // count) for i in range(count)} | {size})
    return [(start, end) for start, end in zip(starts, starts[1:]) if end > start]


def _read_span(path: Path, span: tuple[int, int]) -> bytes:
    with path.open("rb") as file:
        file.seek(span[0])
        return file.read(span[1] - span[0])


def _count_lines(path: Path, span: tuple[int, int]) -> int:
    """On a worker: the lines of a span (a last line without its newline counts)."""
    text = _read_span(path, span)
    return text.count(b"\n") + (bool(text) and not text.endswith(b"\n"))


def _write_span(path: Path, span: tuple[int, int], first_row: int, folder: Path,
                number: int) -> tuple[list[str], Columns]:
    """On a worker: parse and check a span of lines, write its rows (row ids from `first_row`) as Parquet files.

    Returns:
        The files written, and the statistics of the span's rows (summarized while they are in memory).

    Raises:
        SchemaError: the span's first bad line, numbered in the whole file.
    """
    import polars as pl

    frame = parse_block(path, _read_span(path, span), first_row + 1)
    frame = (frame.with_columns(pl.col("label").cast(pl.Int8)).with_row_index("row_id", offset=first_row)
             .with_columns(pl.col("row_id").cast(pl.Int64)))
    written = []
    for part, start in enumerate(range(0, frame.height, FILE_ROWS)):
        target = folder / f"span-{number:05d}-{part:03d}.parquet"
        frame.slice(start, FILE_ROWS).write_parquet(target, compression="snappy")
        written.append(str(target))
    return written, arrow_stats(frame.to_arrow())


class Spread:
    """A plain CSV parsed, checked and written by a Dask cluster's workers, for `Catalog.write_files`.

    Two rounds over spans of whole lines: the workers count the lines of their spans (so
    every row's id is known), then parse, check and write them; the driver hashes
    the file meanwhile. A bad line fails the whole file, named as in one process: the
    earliest span's first bad line.
    """

    def __init__(self, path: Path, client: Client) -> None:
        self.path, self.client, self.rows, self.source = path, client, 0, None
        self.stats: Columns | None = None

    def write(self, folder: Path) -> list[Path]:
        """The checked files in row order; the file hashed meanwhile."""
        from concurrent.futures import ThreadPoolExecutor

        from distributed import wait

        from shoal.cluster import workers

        folder.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(1) as pool:
            hashed = pool.submit(SourceFile.of, self.path)
            spans = _spans(self.path, 4 * workers(self.client))
            counts = self.client.gather(self.client.map(_count_lines, [self.path] * len(spans), spans, pure=False))
            self.rows = sum(counts)
            if self.rows < 3:
                raise too_few(self.path, self.rows)
            firsts = np.cumsum([0, *counts[:-1]]).tolist()
            parts = [self.client.submit(_write_span, self.path, span, first, folder, number, pure=False)
                     for number, (span, first) in enumerate(zip(spans, firsts))]
            wait(parts)
            for part in parts:
                if part.status == "error":
                    raise part.exception()
            self.source = hashed.result()
        results = [part.result() for part in parts]
        self.stats = {}
        for _, stats in results:  # in span order: a rerun stores the same bytes
            self.stats = merge_columns(self.stats, stats)
        return [Path(file) for files, _ in results for file in files]

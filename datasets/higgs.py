"""The UCI HIGGS table (Baldi, Sadowski & Whiteson 2014) into the Delta table `higgs`.

The file as UCI publishes it: no header, 29 comma-separated numbers a line (`%.18e`), the
class (0 or 1) first, then the 28 features (21 low-level, 7 high-level); `HIGGS.csv`,
`HIGGS.csv.gz`, or the `.zip` that wraps the `.gz`. Compressed input is streamed, never
unpacked: a reader thread inflates (gzip with ISA-L, ~3x zlib) and cuts the text into blocks
of whole lines, while the main thread parses each block with polars (multi-threaded) into
float32 columns and checks it, and two threads encode the Parquet files
(`Catalog.write_streamed`). ONE Delta commit at the end; a bad line anywhere commits nothing.

Split (the paper's): test = the last 500,000 rows, valid = the 500,000 before, train = the
rest. A file under 2,000,000 rows: test = the last quarter, valid = the quarter before, train
= the first half (each at least one row). The split of the tail is known only at the end of
the stream, so the last 1,000,000 rows (~120 MB) are held back and written last.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shoal.errors import SchemaError, SourceError
from shoal.lineage import HashingReader, Provenance, SourceFile
from shoal.sources import FileDone, IngestReport, no_progress, register_source

if TYPE_CHECKING:
    import polars as pl

    from shoal.catalog import Catalog

log = logging.getLogger(__name__)

DATASET = "higgs"
# The 28 features in file order, under the analysis' names: 21 low-level, then 7 high-level.
FEATURES = (
    "lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
    "jet_1_pt", "jet_1_eta", "jet_1_phi", "jet_1_b_tag", "jet_2_pt", "jet_2_eta", "jet_2_phi", "jet_2_b_tag",
    "jet_3_pt", "jet_3_eta", "jet_3_phi", "jet_3_b_tag", "jet_4_pt", "jet_4_eta", "jet_4_phi", "jet_4_b_tag",
    "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb",
)
B_TAGS = tuple(name for name in FEATURES if name.endswith("_b_tag"))
COLUMNS = ("label", *FEATURES)
SPLITS = ("train", "valid", "test")
SCHEMA = pa.schema([("row_id", pa.int64()), ("label", pa.int8()), *[(name, pa.float32()) for name in FEATURES],
                    ("split", pa.string())])
HELD_OUT = 500_000  # rows of test, and of valid, in a full-size file (the paper's setup)
TAIL = 2 * HELD_OUT  # rows held back until the end of the stream
BLOCK = 32 << 20  # bytes of text parsed at once (~43,000 rows)
_FIX = ("expected the UCI HIGGS format: 29 comma-separated numbers a line, the class (0 or 1) first; "
        "fetch the file again (`shoal fetch higgs`) or fix the line")


def split_sizes(rows: int) -> tuple[int, int, int]:
    """(train, valid, test) row counts of a file of `rows` rows; train comes first, test last."""
    if rows >= 2 * TAIL:
        return rows - TAIL, HELD_OUT, HELD_OUT
    held = max(1, rows // 4)
    return rows - 2 * held, held, held


def _is_zip(raw: HashingReader) -> bool:
    return raw.raw.peek(4)[:4] == b"PK\x03\x04"


def _text_stream(path: Path, raw: HashingReader) -> IO[bytes]:
    """The CSV text of a plain, gzip or zip file (`raw` reads the file itself), as a stream of bytes.

    Plain and gzip files are read through `raw` from start to end; a zip is opened by name
    (its directory is at the end).
    """
    if raw.raw.peek(2)[:2] == b"\x1f\x8b":
        from isal import igzip

        return igzip.IGzipFile(fileobj=raw, mode="rb")
    if _is_zip(raw):
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if m.lower().endswith((".csv", ".csv.gz"))]
        if not members:
            raise SourceError(path, f"the zip holds no .csv or .csv.gz member (it holds {archive.namelist()[:5]})",
                              fix="pass the HIGGS.csv.gz UCI publishes, or a zip that wraps it")
        inner = archive.open(members[0])
        if members[0].lower().endswith(".gz"):
            from isal import igzip

            return igzip.IGzipFile(fileobj=inner, mode="rb")
        return inner
    return raw  # type: ignore[return-value]


def _blocks(stream: IO[bytes]) -> Iterator[bytes]:
    """Blocks of whole lines (each ends with a newline) of about BLOCK bytes."""
    rest = b""
    while chunk := stream.read(BLOCK):
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        rest = data[cut:]
    if rest.strip():
        yield rest + b"\n"


class _Reader:
    """`_blocks` of a file, read and inflated in a thread `depth` blocks ahead of the caller.

    The thread also hashes the file as it reads it (a zip, which is read out of order, is
    hashed at the end): `source` is the file's lineage entry once the blocks are all out.
    """

    def __init__(self, path: Path, depth: int = 2) -> None:
        self.path, self.depth, self.source = path, depth, None

    def _read(self, handoff: queue.Queue, stop: threading.Event) -> None:
        try:
            with self.path.open("rb") as file:
                raw = HashingReader(file)
                zipped, stream = _is_zip(raw), _text_stream(self.path, raw)
                try:
                    for block in _blocks(stream):
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


def _diagnose(path: Path, block: bytes, first_line: int) -> SchemaError:
    """The first bad line of a block that did not parse or check, with what is wrong with it."""
    for number, line in enumerate(block.split(b"\n")[:-1], start=first_line):
        fields = line.decode("utf-8", errors="replace").strip().split(",")
        if fields == [""]:
            return SchemaError(path, "an empty line", fix=_FIX, line=number)
        if len(fields) != len(COLUMNS):
            return SchemaError(path, f"expected {len(COLUMNS)} comma-separated values, found {len(fields)}",
                               fix=_FIX, line=number)
        for name, field in zip(COLUMNS, fields, strict=True):
            try:
                value = float(field)
            except ValueError:
                return SchemaError(path, f"column {name}: not a number: {field[:30]!r}", fix=_FIX, line=number)
            if not math.isfinite(value):
                return SchemaError(path, f"column {name}: {field!r} is not a finite number", fix=_FIX, line=number)
        if float(fields[0]) not in (0.0, 1.0):
            return SchemaError(path, f"label: expected 0 or 1, found {fields[0]!r}", fix=_FIX, line=number)
    return SchemaError(path, "a block of lines did not parse", fix=_FIX, line=first_line)


def _parse(path: Path, block: bytes, first_line: int) -> pl.DataFrame:
    """One block as label (float64) and 28 float32 columns, every value checked."""
    import polars as pl

    schema = {"label": pl.Float64, **dict.fromkeys(FEATURES, pl.Float32)}
    try:
        frame = pl.read_csv(block, has_header=False, new_columns=list(COLUMNS), schema=schema)
    except (pl.exceptions.PolarsError, ValueError):
        raise _diagnose(path, block, first_line) from None
    finite = pl.all_horizontal([pl.col(name).is_finite() for name in FEATURES])  # null -> null -> not good
    good = frame.select((finite & pl.col("label").is_in([0.0, 1.0])).fill_null(False)).to_series()
    if not good.all():  # a blank line parses as a row of nulls
        raise _diagnose(path, block, first_line)
    return frame


def _rows(path: Path, reader: _Reader) -> Iterator[pa.Table]:
    """The file's rows as Arrow tables of one block each, with row_id, without split."""
    import polars as pl

    row = 0
    for block in reader:
        frame = _parse(path, block, row + 1)
        frame = frame.with_columns(pl.col("label").cast(pl.Int8)).with_row_index("row_id", offset=row)
        row += frame.height
        yield frame.with_columns(pl.col("row_id").cast(pl.Int64)).to_arrow()


def _with_split(table: pa.Table, bounds: tuple[int, int]) -> pa.RecordBatch:
    """The table with its split column: train below bounds[0], valid below bounds[1], else test."""
    row_id = table.column("row_id").to_numpy()
    codes = (row_id >= bounds[0]).astype(np.int8) + (row_id >= bounds[1]).astype(np.int8)
    split = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(SPLITS)).cast(pa.string())
    return pa.Table.from_arrays([*table.columns, split], schema=SCHEMA).combine_chunks().to_batches()[0]


class _Stream:
    """Record batches with their split: every row but the tail is train; the tail waits for the end."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows, self.reader = path, 0, _Reader(path)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        held: deque[pa.Table] = deque()
        kept = 0
        for table in _rows(self.path, self.reader):
            held.append(table)
            kept += table.num_rows
            while held and kept - held[0].num_rows >= TAIL:
                oldest = held.popleft()
                kept -= oldest.num_rows
                yield _with_split(oldest, (np.iinfo(np.int64).max, np.iinfo(np.int64).max))
            self.rows += table.num_rows
        if self.rows < 3:
            raise SourceError(self.path, "the file is empty" if not self.rows else f"only {self.rows} row(s)",
                              fix="pass the HIGGS file: at least 3 rows, one for each of train, valid and test")
        train, valid, _ = split_sizes(self.rows)
        for table in held:
            yield _with_split(table, (train, train + valid))


def _unchanged(catalog: Catalog, path: Path) -> int | None:
    """The version of `higgs` made from a file with the same sha256, when the table is still it.

    The sizes are compared first: a file of another size is new, and is hashed as it streams.
    """
    if not catalog.exists(DATASET):
        return None
    latest = catalog.history(DATASET)[0]
    sources = latest.lineage.sources if latest.lineage else ()
    if len(sources) == 1 and sources[0].bytes == path.stat().st_size and SourceFile.of(path).sha256 == sources[0].sha256:
        return latest.version
    return None


@register_source("higgs", dataset=DATASET, description="UCI HIGGS CSV (.csv, .csv.gz or the UCI .zip), streamed")
def ingest(catalog: Catalog, paths: Sequence[Path], *, progress: FileDone | None = None) -> IngestReport:
    """Ingest one HIGGS file into `higgs`: the same sha256 again is a no-op; another file replaces the table.

    Args:
        catalog: the catalog.
        paths: exactly one file.
        progress: called with the file once it is committed or has failed.
    """
    done = progress or no_progress
    latest = catalog.latest_version(DATASET) if catalog.exists(DATASET) else None
    if len(paths) != 1:
        for path in paths:
            done(str(path))
        return IngestReport(DATASET, latest, failures=(f"higgs: expected exactly one file, got {len(paths)}",))
    path = Path(paths[0])
    try:
        if not path.is_file():
            raise SourceError(path, "no such file", fix="pass HIGGS.csv, HIGGS.csv.gz or the UCI zip")
        if (version := _unchanged(catalog, path)) is not None:
            return IngestReport(DATASET, version, unchanged=(str(path),))
        stream = _Stream(path)
        version = catalog.write_streamed(DATASET, stream, schema=SCHEMA, mode="overwrite", provenance=lambda: Provenance(
            sources=(stream.reader.source,), parameters={"source": "higgs", "rows": stream.rows,
                                           "split_rows": dict(zip(SPLITS, split_sizes(stream.rows), strict=True))},
            message=f"ingest {path.name}: {stream.rows} rows"))
    except (SourceError, EOFError, OSError, zipfile.BadZipFile) as error:
        log.debug("ingest of %s failed", path, exc_info=True)
        line = error if isinstance(error, SourceError) else SourceError(
            path, f"cannot read it: {error}", fix="the file is truncated or corrupt; fetch it again (`shoal fetch higgs`)")
        return IngestReport(DATASET, latest, failures=(str(line),))
    finally:
        done(str(path))
    return IngestReport(DATASET, version, committed=(str(path),))

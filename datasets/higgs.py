"""The UCI HIGGS table (Baldi, Sadowski & Whiteson 2014) into the Delta table `higgs`.

The file as UCI publishes it: no header, 29 comma-separated numbers a line (`%.18e`), the
class (0 or 1) first, then the 28 features (21 low-level, 7 high-level); `HIGGS.csv`,
`HIGGS.csv.gz`, or the `.zip` that wraps the `.gz`. Compressed input is streamed, never
unpacked to disk.

A plain file goes through ONE polars streaming query (`scan_csv` -> checks as expressions
-> `sink_parquet` into files of FILE_ROWS rows), which pipelines parsing and Parquet
encoding over every core, while a thread hashes the file. A bad value nulls the row's
label, so the files' own Parquet statistics tell whether any row was bad; then a second,
block-wise reading finds the first bad line to name it. Gzip and zip go block by block: a
reader thread inflates (ISA-L) and cuts the text into blocks of whole lines, polars parses
each, two threads encode the Parquet files. With a Dask client (`--cluster`), a plain file
is cut into spans of whole lines that the workers count, then parse, check and write (gzip
and zip are one stream each: read here). Every way: ONE Delta commit at the end; a bad line
anywhere commits nothing.

Hostile input is refused early, in bounded memory (`HiggsLimits`): a line longer than
`max_line_bytes` (a UCI line is ~700 bytes) is named by its number, and compressed input
that inflates more than `max_ratio` times (a gzip bomb) stops as soon as the stream says
so. A plain file is checked for long lines before polars reads it (polars holds a whole
line in memory: 2 GB for a 1 GB line); gzip goes block-wise rather than through polars'
own inflater for the same reason (a 5 MB bomb of zeros took polars to 2.6 GB).

Ingest records facts, not modelling choices: every row keeps its number in the file
(`row_id`, from 0), and the commit its row count. The split is the feature version's
(`shoal.features.higgs`); `official_split` is the paper's, a fact of the published file:
test = the last 500,000 rows, valid = the 500,000 before.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from shoal.commit_stats import Columns, columns_of_summary, polars_summary
from shoal.datasets.higgs_text import GZIP, ZIP, BlockReader, HiggsLimits, LongLine, check_lines, line_too_long
from shoal.errors import CatalogError, SchemaError, SourceError
from shoal.lineage import Provenance, SourceFile
from shoal.rules import Rules, out_of_range, range_checks
from shoal.splits import SPLITS
from shoal.sources import FileDone, IngestReport, check_path, no_progress, register_source

if TYPE_CHECKING:
    import polars as pl
    from distributed import Client

    from shoal.catalog import Catalog
    from shoal.datasets.higgs_spans import Spread

log = logging.getLogger(__name__)

DATASET = "higgs"
# `shoal fetch higgs`: UCI's zip (id 280, CC BY 4.0) of the one member HIGGS.csv.gz, about 2.6 GB.
HIGGS_URL = "https://archive.ics.uci.edu/static/public/280/higgs.zip"
# The 28 features in file order, under the analysis' names: 21 low-level, then 7 high-level.
FEATURES = (
    "lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
    "jet_1_pt", "jet_1_eta", "jet_1_phi", "jet_1_b_tag", "jet_2_pt", "jet_2_eta", "jet_2_phi", "jet_2_b_tag",
    "jet_3_pt", "jet_3_eta", "jet_3_phi", "jet_3_b_tag", "jet_4_pt", "jet_4_eta", "jet_4_phi", "jet_4_b_tag",
    "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb",
)
B_TAGS = tuple(name for name in FEATURES if name.endswith("_b_tag"))
COLUMNS = ("label", *FEATURES)
SCHEMA = pa.schema([("row_id", pa.int64()), ("label", pa.int8()), *[(name, pa.float32()) for name in FEATURES]])
HELD_OUT = 500_000  # rows of test, and of valid, in a full-size file (the paper's setup)
FILE_ROWS = 1 << 18  # rows of one Parquet file of the streaming query (~30 MB)
_FIX = ("expected the UCI HIGGS format: 29 comma-separated numbers a line, the class (0 or 1) first; "
        "fetch the file again (`shoal fetch higgs`) or fix the line")
_EXPECTED = "HIGGS.csv, HIGGS.csv.gz or the UCI zip"
# Physical bounds only where they are certain: momenta, the missing energy and invariant masses are magnitudes. The
# other features (pseudorapidities, angles in scaled units, b-tags) have no bound the file's format guarantees.
NON_NEGATIVE = ("lepton_pT", "missing_energy_magnitude", "jet_1_pt", "jet_2_pt", "jet_3_pt", "jet_4_pt",
                "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb")
# Checked on every row as it is parsed: the item is the whole file, and a bad row anywhere commits nothing.
RULES = Rules(ranges={"label": (0.0, 1.0), **dict.fromkeys(NON_NEGATIVE, (0.0, math.inf))},
              max_nan_fraction=dict.fromkeys(COLUMNS, 0.0), columns=COLUMNS, fix=_FIX)


def official_split(rows: int) -> tuple[int, int, int]:
    """(train, valid, test) row counts of the paper's split of a file of `rows` rows, in file order.

    The paper holds out the last 500,000 rows for test and the 500,000 before for
    validation. A file under 2,000,000 rows (a sample) keeps the proportions that leave most
    rows to train: test = the last quarter, valid = the quarter before (each at least one row).
    """
    if rows >= 4 * HELD_OUT:
        return rows - 2 * HELD_OUT, HELD_OUT, HELD_OUT
    held = max(1, rows // 4)
    return rows - 2 * held, held, held


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
        for name, field in zip(COLUMNS, fields, strict=True):
            if (problem := out_of_range(RULES, name, float(field))) is not None:
                return SchemaError(path, f"column {name}: {problem}", fix=RULES.fix, line=number)
    return SchemaError(path, "a block of lines did not parse", fix=_FIX, line=first_line)


def _good() -> pl.Expr:
    """True on a row that keeps RULES: a label of 0 or 1, every value finite (no NaN allowed) and within its range.

    A blank or short line parses as nulls: null is not good.
    """
    import polars as pl

    finite = [pl.col(name).is_finite() for name in FEATURES if RULES.max_nan_fraction[name] == 0]
    return pl.all_horizontal([*finite, pl.col("label").is_in([0.0, 1.0]), *range_checks(RULES, COLUMNS)]).fill_null(False)


def parse_block(path: Path, block: bytes, first_line: int) -> pl.DataFrame:
    """One block as label (float64) and 28 float32 columns, every value checked."""
    import polars as pl

    schema = {"label": pl.Float64, **dict.fromkeys(FEATURES, pl.Float32)}
    try:
        frame = pl.read_csv(block, has_header=False, new_columns=list(COLUMNS), schema=schema)
    except (pl.exceptions.PolarsError, ValueError):
        raise _diagnose(path, block, first_line) from None
    good = frame.select(_good()).to_series()
    if not good.all():  # a blank line parses as a row of nulls
        raise _diagnose(path, block, first_line)
    return frame


def _rows(path: Path, reader: BlockReader) -> Iterator[pa.Table]:
    """The file's rows as Arrow tables of one block each, with row_id, without split."""
    import polars as pl

    row = 0
    try:
        for block in reader:
            frame = parse_block(path, block, row + 1)
            frame = frame.with_columns(pl.col("label").cast(pl.Int8)).with_row_index("row_id", offset=row)
            row += frame.height
            yield frame.with_columns(pl.col("row_id").cast(pl.Int64)).to_arrow()
    except LongLine:
        raise line_too_long(path, reader.limits, row + 1) from None


def too_few(path: Path, rows: int) -> SourceError:
    return SourceError(path, "the file is empty" if not rows else f"only {rows} row(s)",
                       fix="pass the HIGGS file: at least 3 rows, one for each of train, valid and test")


class _Stream:
    """The record batches of a gzip or zip file, block by block; `rows` once read to the end."""

    def __init__(self, path: Path, limits: HiggsLimits) -> None:
        self.path, self.rows, self.reader = path, 0, BlockReader(path, limits)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for table in _rows(self.path, self.reader):
            self.rows += table.num_rows
            yield from table.cast(SCHEMA).combine_chunks().to_batches()
        if self.rows < 3:
            raise too_few(self.path, self.rows)


def _sink(path: Path, folder: Path) -> Columns:
    """Parse, check and number every row of a plain file into Parquet files in `folder`; return their statistics.

    A row that breaks RULES (`_good`) gets a null label (a count in the files' statistics); a
    line that does not parse at all stops the query. The statistics of every column are a
    second query over the same scan (`collect_all` shares it): the file is parsed once.
    """
    import polars as pl

    schema = {"label": pl.Float64, **dict.fromkeys(FEATURES, pl.Float32)}
    rows = (pl.scan_csv(path, has_header=False, new_columns=list(COLUMNS), schema=schema).with_row_index("row_id")
            .select(pl.col("row_id").cast(pl.Int64), pl.when(_good()).then(pl.col("label").cast(pl.Int8)).alias("label"),
                    *FEATURES))
    sink = rows.sink_parquet(pl.PartitionBy(folder, max_rows_per_file=FILE_ROWS), compression="snappy", mkdir=True,
                             lazy=True)
    _, summary = pl.collect_all([sink, polars_summary(rows, SCHEMA.names, finite=True)])  # NaN fails the file
    return columns_of_summary(summary)


def _first_bad(path: Path, found: str, limits: HiggsLimits) -> SourceError:
    """The first bad line of a file the streaming query refused, found by reading it block by block."""
    rows = 0
    for table in _rows(path, BlockReader(path, limits)):  # raises SchemaError at the first bad line
        rows += table.num_rows
    if rows < 3:
        return too_few(path, rows)
    return SchemaError(path, f"the file did not parse: {found}", fix=_FIX)


class _Query:
    """A plain file through `_sink`, for `Catalog.write_files`; `rows` and `source` once written."""

    def __init__(self, path: Path, limits: HiggsLimits) -> None:
        self.path, self.limits, self.rows, self.source = path, limits, 0, None
        self.stats: Columns | None = None

    def write(self, folder: Path) -> list[Path]:
        """The checked files in row order; the file hashed meanwhile."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            hashed = pool.submit(SourceFile.of, self.path)
            files = self._files(folder)
            self.source = hashed.result()
        return files

    def _files(self, folder: Path) -> list[Path]:
        import polars as pl
        import pyarrow.parquet as pq

        try:
            self.stats = _sink(self.path, folder)
        except pl.exceptions.PolarsError as error:
            raise _first_bad(self.path, str(error).splitlines()[0], self.limits) from None
        files = []
        for file in folder.glob("*.parquet"):
            meta = pq.read_metadata(file)
            groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
            if any(group.column(1).statistics.null_count for group in groups):
                raise _first_bad(self.path, "a row with a bad value", self.limits)
            if meta.num_rows:
                files.append((min(group.column(0).statistics.min for group in groups), meta.num_rows, file))
        files.sort()
        self.rows = sum(count for _, count, _ in files)
        if self.rows < 3:
            raise too_few(self.path, self.rows)
        return [file for _, _, file in files]


def _spread(path: Path, client: Client) -> Spread:
    """The cluster's `Catalog.write_files` writer (`higgs_spans`: imported only where a cluster is used)."""
    from shoal.datasets.higgs_spans import Spread

    return Spread(path, client)


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


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as file:
        return file.read(len(magic)) == magic


def _provenance(path: Path, source: SourceFile, rows: int) -> Provenance:
    return Provenance(sources=(source,), message=f"ingest {path.name}: {rows} rows", parameters={
        "source": "higgs", "rows": rows, "official_split": dict(zip(SPLITS, official_split(rows), strict=True))})


@register_source("higgs", dataset=DATASET, description="UCI HIGGS CSV (.csv, .csv.gz or the UCI .zip), streamed",
                 spreads=True)
def ingest(catalog: Catalog, paths: Sequence[Path], *, progress: FileDone | None = None,
           client: Client | None = None, follow_links: bool = False,  # noqa: ARG001 (one file, named by the user)
           limits: HiggsLimits = HiggsLimits()) -> IngestReport:
    """Ingest one HIGGS file into `higgs`: the same sha256 again is a no-op; another file replaces the table.

    Args:
        catalog: the catalog.
        paths: exactly one file.
        progress: called with the file once it is committed or has failed.
        client: a Dask client whose workers parse and write a plain CSV in spans of whole
            lines (the same rows as without one); a gzip or zip, one stream, is read here.
        follow_links: the registry's protocol; a file given by name is read wherever a link points.
        limits: the longest line and the highest compression ratio before the file is refused.
    """
    from isal import isal_zlib

    done = progress or no_progress
    latest = catalog.latest_version(DATASET) if catalog.exists(DATASET) else None
    if len(paths) != 1:
        for path in paths:
            done(str(path))
        return IngestReport(DATASET, latest, failures=(f"higgs: expected exactly one file, got {len(paths)}",))
    path = Path(paths[0])
    try:
        if (problem := check_path(path, folders=False, expected=_EXPECTED)) is not None:
            raise problem
        if (version := _unchanged(catalog, path)) is not None:
            return IngestReport(DATASET, version, unchanged=(str(path),))
        if _starts_with(path, ZIP) or _starts_with(path, GZIP):
            stream = _Stream(path, limits)
            version = catalog.write_streamed(DATASET, stream, schema=SCHEMA, mode="overwrite", provenance=lambda: (
                _provenance(path, stream.reader.source, stream.rows)))
        else:
            check_lines(path, limits)
            query = _spread(path, client) if client is not None else _Query(path, limits)
            version = catalog.write_files(DATASET, query.write, schema=SCHEMA, mode="overwrite", provenance=lambda: (
                _provenance(path, query.source, query.rows)), stats=lambda: query.stats)
    except CatalogError:  # the home's own failure (full disk, read-only): never this file's
        raise
    except (SourceError, EOFError, OSError, zipfile.BadZipFile, isal_zlib.error) as error:
        log.debug("ingest of %s failed", path, exc_info=True)
        line = error if isinstance(error, SourceError) else SourceError(
            path, f"cannot read it: {error}", fix="the file is truncated or corrupt; fetch it again (`shoal fetch higgs`)")
        return IngestReport(DATASET, latest, failures=(str(line),))
    finally:
        done(str(path))
    return IngestReport(DATASET, version, committed=(str(path),))

"""The Niño 3.4 / ONI monthly table (NOAA ERSSTv5, compiled by Brian McNoldy).

The file has free-text header lines, then the header row
`YEAR MON/MMM NINO34_MEAN NINO34_CLIM NINO34_ANOM ONI PHASE` and one whitespace-separated
row per month. `-99.99` marks a missing value and PHASE `M` a missing phase; both become
null. It is written whole to the Delta table `nino34`, one commit per changed file.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from shoal.errors import SchemaError, SourceError
from shoal.lineage import Provenance, SourceFile
from shoal.rules import Rules, out_of_range, outside
from shoal.sources import FileDone, IngestReport, check_path, no_progress, register_source

if TYPE_CHECKING:
    import pandas as pd

    from shoal.catalog import Catalog

log = logging.getLogger(__name__)

DATASET = "nino34"
COLUMNS = ("YEAR", "MON/MMM", "NINO34_MEAN", "NINO34_CLIM", "NINO34_ANOM", "ONI", "PHASE")
VALUES = {"NINO34_MEAN": "nino34_mean", "NINO34_CLIM": "nino34_clim", "NINO34_ANOM": "nino34_anom", "ONI": "oni"}
PHASES = {"E", "L", "N", "M"}
MISSING = -99.99
SCHEMA = pa.schema(
    [("month", pa.date32())]
    + [(name, pa.float64()) for name in VALUES.values()]
    + [("phase", pa.string())]
)
SAMPLE = Path(__file__).parent / "sample_data" / "ONI_NINO34_1854-2020.txt"
MAX_BYTES = 16 << 20  # the real table is ~100 KB: a larger file is refused after reading this much
_FIX = "expected the ONI table format (header row 'YEAR MON/MMM NINO34_MEAN ... PHASE', one row per month)"
# What every row must be. The file's dates by its own columns; the values by the stored columns, in °C (missing
# values aside): Niño 3.4 SST is tropical (23.6-29.4 in 1854-2020), its anomalies and ONI within a few degrees
# (-2.4 .. 3.2 in the record). Checked row by row, so that a message names the line.
RULES = Rules(ranges={"YEAR": (1800, 2200), "MON/MMM": (1, 12), "nino34_mean": (15.0, 35.0),
                      "nino34_clim": (15.0, 35.0), "nino34_anom": (-5.0, 5.0), "oni": (-5.0, 5.0)},
              columns=COLUMNS, fix="a value outside it is no Niño 3.4 measurement: correct the row, or fetch the table again")


def _text(path: Path) -> str:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise SourceError(path, f"cannot read the file ({error.strerror})", fix="check the path") from error
    if len(raw) > MAX_BYTES:
        raise SourceError(path, f"larger than {MAX_BYTES >> 20} MiB, far more than an ONI table (~100 KB)", fix=_FIX)
    if b"\0" in raw:
        raise SourceError(path, "not a text file (it contains NUL bytes)", fix=_FIX)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise SourceError(path, "not UTF-8 text", fix=_FIX, line=line) from error


def _header_index(path: Path, lines: list[str]) -> int:
    for index, line in enumerate(lines):
        tokens = line.split()
        if tokens[:1] == ["YEAR"]:
            missing = [c for c in RULES.columns if c not in tokens]
            if missing:
                raise SchemaError(path, f"header row lacks column(s) {', '.join(missing)}", fix=_FIX, line=index + 1)
            return index
    problem = "the file is empty" if not "".join(lines).strip() else "no header row starting with 'YEAR' found"
    raise SourceError(path, problem, fix=_FIX)


def _frame(path: Path, lines: list[str], header: int) -> tuple[pd.DataFrame, list[int]]:
    import pandas as pd

    # Count fields ourselves: pandas takes a first data row with one extra field as an
    # index column (shifting every value) and pads short rows with "".
    expected = len(lines[header].split())
    for number, text in enumerate(lines[header + 1 :], start=header + 2):
        if text.strip() and len(text.split()) != expected:
            problem = f"expected {expected} fields (as in the header row, line {header + 1}), found {len(text.split())}"
            raise SourceError(path, problem, fix=_FIX, line=number)
    frame = pd.read_csv(io.StringIO("\n".join(lines[header:])), sep=r"\s+", dtype=str, keep_default_na=False)
    # pandas skips blank lines: map each row back to its line number for error messages.
    line_numbers = [header + 1 + i for i, text in enumerate(lines[header:]) if text.strip()][1:]
    if frame.empty:
        raise SourceError(path, "the header row is not followed by any data row", fix=_FIX, line=header + 1)
    return frame, line_numbers


def _numbers(path: Path, frame: pd.DataFrame, column: str, lines: list[int]) -> pd.Series:
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | values.abs().eq(float("inf"))  # 'inf' parses, but is no measurement
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise SchemaError(
            path, f"column {column}: expected a number, found {frame[column].iloc[row]!r}", fix=_FIX, line=lines[row]
        )
    return values


def read_oni(path: str | Path) -> pa.Table:
    """Parse an ONI table into Arrow (`SCHEMA`), validating every row.

    Raises:
        SourceError: unreadable, empty, not text, or not the ONI layout.
        SchemaError: a missing column, a non-numeric value, a bad month or phase, a duplicate month, a value
            outside its range (`RULES`).
    """
    import pandas as pd

    path = Path(path)
    lines = _text(path).splitlines()
    header = _header_index(path, lines)
    frame, line_numbers = _frame(path, lines, header)
    year = _numbers(path, frame, "YEAR", line_numbers)
    month = _numbers(path, frame, "MON/MMM", line_numbers)
    bad_date = ~(month.between(*RULES.ranges["MON/MMM"]) & year.between(*RULES.ranges["YEAR"]) & (year % 1 == 0)
                 & (month % 1 == 0))
    if bad_date.any():
        row = int(bad_date.to_numpy().argmax())
        raise SchemaError(path, f"expected a year and a month 1-12, found {year.iloc[row]} {month.iloc[row]}", fix=_FIX, line=line_numbers[row])
    months = pd.to_datetime({"year": year, "month": month, "day": 1})
    duplicated = months.duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        raise SchemaError(path, f"month {months.iloc[row]:%Y-%m} appears twice", fix="keep one row per month", line=line_numbers[row])
    phase = frame["PHASE"]
    bad_phase = ~phase.isin(PHASES)
    if bad_phase.any():
        row = int(bad_phase.to_numpy().argmax())
        raise SchemaError(path, f"column PHASE: expected one of E, L, N, M, found {phase.iloc[row]!r}", fix=_FIX, line=line_numbers[row])
    columns = {"month": pa.array(months.dt.date, pa.date32())}
    for source, name in VALUES.items():
        values = _numbers(path, frame, source, line_numbers)
        values = values.where(values != MISSING)
        if (bad := outside(RULES, name, values.to_numpy())).any():
            row = int(bad.argmax())
            problem = out_of_range(RULES, name, float(values.iloc[row]))
            raise SchemaError(path, f"column {source}: {problem}", fix=RULES.fix, line=line_numbers[row])
        columns[name] = pa.array(values, pa.float64(), from_pandas=True)
    columns["phase"] = pa.array(phase.where(phase != "M"), pa.string(), from_pandas=True)
    return pa.table(columns, schema=SCHEMA).sort_by("month")


@register_source("oni", dataset=DATASET, description="Niño 3.4 / ONI monthly index table")
def ingest(catalog: Catalog, paths: Sequence[Path], *, progress: FileDone | None = None,
           follow_links: bool = False) -> IngestReport:  # noqa: ARG001 (one file, named by the user)
    """Ingest one ONI table file into `nino34`; the same file again is a no-op.

    A file that changed replaces the table in one new commit (mode overwrite).

    Args:
        catalog: the catalog.
        paths: exactly one table file.
        progress: called with the file once it is validated (or has failed); with a wrong
            number of files, once for each of them (all failed).
        follow_links: the registry's protocol; a file given by name is read wherever a link points.
    """
    done = progress or no_progress
    if len(paths) != 1:
        for path in paths:
            done(str(Path(path)))
        return IngestReport(DATASET, None, failures=(f"oni: expected exactly one table file, got {len(paths)}",))
    path = Path(paths[0])
    exists = catalog.exists(DATASET)
    try:
        if (problem := check_path(path, folders=False, expected="the ONI table file")) is not None:
            raise problem
        table = read_oni(path)
    except SourceError as error:
        log.debug("ingest of %s failed", path, exc_info=True)  # `shoal --debug` shows it
        return IngestReport(DATASET, catalog.latest_version(DATASET) if exists else None, failures=(str(error),))
    finally:  # validated or failed: either way the file is done
        done(str(path))
    source = SourceFile.of(path)
    latest = catalog.history(DATASET)[0] if exists else None  # one read: its lineage and its number agree
    if latest is not None and latest.lineage and [s.sha256 for s in latest.lineage.sources] == [source.sha256]:
        return IngestReport(DATASET, latest.version, unchanged=(str(path),))
    version = catalog.write_table(
        DATASET,
        table,
        mode="overwrite",
        provenance=Provenance(sources=(source,), parameters={"source": "oni"}, message=f"ingest {path.name}"),
    )
    return IngestReport(DATASET, version, committed=(str(path),))

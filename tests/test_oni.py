"""The ONI source: parse the real table, refuse bad files with one clear line, ingest with lineage."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import shoal
from shoal.catalog import Catalog
from shoal.datasets import oni
from shoal.errors import SchemaError, SourceError

NINO = Path(__file__).parent / "data" / "nino"
SMALL = NINO / "oni_small.txt"
CHANGED = NINO / "oni_small_changed.txt"
HEADER_ROW = 10  # 1-based line of 'YEAR MON/MMM ...' in the real file and in every fixture
VALUE_COLUMNS = dict(zip(oni.COLUMNS[2:6], oni.VALUES.values(), strict=True))  # raw name -> table name

# (fixture, error class, 1-based line or None, words the problem names)
BAD = [
    ("bad_missing_column.txt", SchemaError, 10, "lacks column(s) ONI"),
    ("bad_non_numeric.txt", SchemaError, 14, "column NINO34_MEAN: expected a number, found '26.x1'"),
    ("bad_field_count.txt", SourceError, 20, "found 8"),
    ("bad_phase.txt", SchemaError, 25, "found 'Q'"),
    ("bad_duplicate_month.txt", SchemaError, 16, "month 1950-05 appears twice"),
    ("empty.txt", SourceError, None, "the file is empty"),
    ("header_only.txt", SourceError, 10, "not followed by any data row"),
    ("not_text.bin", SourceError, None, "not a text file"),
    ("latin1.txt", SourceError, 3, "not UTF-8"),
]
FIXES = {"bad_duplicate_month.txt": "keep one row per month"}  # every other one names the format


def _raw_rows(path: Path) -> list[list[str]]:
    """The data rows of an ONI file, split on whitespace: the independent reference parse."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[HEADER_ROW - 1].split() == list(oni.COLUMNS)
    return [line.split() for line in lines[HEADER_ROW:] if line.strip()]


def _expected_months(first: tuple[int, int], last: tuple[int, int]) -> list[dt.date]:
    months, (year, month) = [], first
    while (year, month) <= last:
        months.append(dt.date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _value(table: pa.Table, month: dt.date, column: str) -> object:
    return table.filter(pc.equal(table["month"], pa.scalar(month, pa.date32())))[column][0].as_py()


# -- the fixtures are what the committed script makes from the real file ---------------------


def test_fixtures_on_disk_are_exactly_what_make_fixtures_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_fixtures", NINO / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.fixtures()
    assert {b[0] for b in BAD} | {SMALL.name, CHANGED.name} == set(made)
    for name, data in made.items():
        if name == "not_text.bin":  # deflate bytes may differ between zlib builds; the header may not
            on_disk = (NINO / name).read_bytes()
            assert len(on_disk) == 64 and on_disk[:8] == data[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
            continue
        assert (NINO / name).read_bytes() == data, f"{name} is stale: rerun tests/data/nino/make_fixtures.py"


def test_small_fixture_is_real_bytes_of_the_sample_file() -> None:
    real = oni.SAMPLE.read_bytes().splitlines(keepends=True)
    small = SMALL.read_bytes().splitlines(keepends=True)
    assert small[:HEADER_ROW] == real[:HEADER_ROW]
    start = real.index(small[HEADER_ROW])
    assert real[start : start + 24] == small[HEADER_ROW:]
    assert small[HEADER_ROW].startswith(b"1950       01") and small[-1].startswith(b"1951       12")


# -- the real file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full() -> pa.Table:
    return oni.read_oni(oni.SAMPLE)


def test_full_real_file_has_one_row_per_month_1854_to_2020_in_order(full: pa.Table) -> None:
    assert full.schema == oni.SCHEMA
    assert full.num_rows == 2004
    assert full["month"].to_pylist() == _expected_months((1854, 1), (2020, 12))


def test_full_real_file_turns_every_minus_99_99_and_phase_m_into_null(full: pa.Table) -> None:
    rows = _raw_rows(oni.SAMPLE)
    assert len(rows) == full.num_rows
    for position, (raw_name, name) in enumerate(VALUE_COLUMNS.items(), start=2):
        missing = sum(row[position] == "-99.99" for row in rows)
        assert full[name].null_count == missing, raw_name
    assert full["oni"].null_count == sum(row[5] == "-99.99" for row in rows) == 209  # ONI, in the text
    assert full["phase"].null_count == sum(row[6] == "M" for row in rows) == 209
    assert set(full["phase"].drop_null().to_pylist()) == {"E", "L", "N"}


def test_full_real_file_values_equal_the_text_row_by_row(full: pa.Table) -> None:
    rows = _raw_rows(oni.SAMPLE)
    for position, name in enumerate(VALUE_COLUMNS.values(), start=2):
        expected = [None if row[position] == "-99.99" else float(row[position]) for row in rows]
        assert full[name].to_pylist() == expected, name
    assert full["phase"].to_pylist() == [None if row[6] == "M" else row[6] for row in rows]


def test_full_real_file_spot_values_read_from_the_text(full: pa.Table) -> None:
    # Lines 1738 and 1953 of ONI_NINO34_1854-2020.txt: the 1997 and 2015 El Niño peaks.
    # 1997       12        28.89        26.56         2.32         2.39      E
    # 2015       11        29.41        26.75         2.66         2.52      E
    for month, values in [
        (dt.date(1997, 12, 1), (28.89, 26.56, 2.32, 2.39, "E")),
        (dt.date(2015, 11, 1), (29.41, 26.75, 2.66, 2.52, "E")),
        (dt.date(1854, 1, 1), (25.90, None, None, None, None)),
        (dt.date(2020, 12, 1), (None, 26.65, None, None, None)),
    ]:
        assert tuple(_value(full, month, c) for c in oni.SCHEMA.names[1:]) == values, month


# -- tolerated variations ------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["\n", "   \n", "\t\n"], ids=["empty", "spaces", "tab"])
def test_blank_lines_between_rows_are_skipped_and_error_lines_still_point_at_the_file_line(
    tmp_path: Path, blank: str
) -> None:
    def with_blanks(source: Path) -> Path:
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        # two blank lines after line 11 (1950-01) and one after line 20 (1950-10)
        target = tmp_path / source.name
        target.write_text("".join(lines[:11] + [blank, blank] + lines[11:20] + [blank] + lines[20:]), encoding="utf-8")
        return target

    assert oni.read_oni(with_blanks(SMALL)) == oni.read_oni(SMALL)
    with pytest.raises(SchemaError) as raised:
        oni.read_oni(with_blanks(NINO / "bad_non_numeric.txt"))  # '26.x1' on line 14 -> 16
    assert raised.value.line == 16
    assert str(raised.value).startswith(f"{tmp_path / 'bad_non_numeric.txt'}:16: ")
    assert "'26.x1'" in str(raised.value)
    with pytest.raises(SourceError) as raised:
        oni.read_oni(with_blanks(NINO / "bad_field_count.txt"))  # 8 fields on line 20 -> 22
    assert raised.value.line == 22
    lines = (tmp_path / "bad_field_count.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines[22 - 1].split()) == 8


def test_crlf_line_endings_parse_like_lf(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(SMALL.read_bytes().replace(b"\n", b"\r\n"))
    assert oni.read_oni(crlf) == oni.read_oni(SMALL)


def test_small_file_parses_to_its_24_real_rows() -> None:
    table = oni.read_oni(SMALL)
    assert table.schema == oni.SCHEMA
    assert table["month"].to_pylist() == _expected_months((1950, 1), (1951, 12))
    assert table["oni"].to_pylist() == [float(row[5]) for row in _raw_rows(SMALL)]
    assert _value(table, dt.date(1951, 12, 1), "oni") == 0.81
    assert _value(oni.read_oni(CHANGED), dt.date(1951, 12, 1), "oni") == 0.86


# -- bad files: one line naming the file, the line, the problem and the fix --------------------


def _check_message(error: SourceError, path: Path, line: int | None, problem: str, fix: str) -> None:
    message = str(error)
    assert "\n" not in message
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(where), message
    assert error.path == str(path)
    assert error.line == line
    assert problem in message
    assert f"; {fix}" in message, message


@pytest.mark.parametrize(("name", "kind", "line", "problem"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_raises_one_line_naming_file_line_problem_and_fix(
    name: str, kind: type[SourceError], line: int | None, problem: str
) -> None:
    path = NINO / name
    with pytest.raises(SourceError) as raised:
        oni.read_oni(path)
    assert type(raised.value) is kind
    _check_message(raised.value, path, line, problem, FIXES.get(name, "expected the ONI table format"))


def test_missing_file_raises_source_error_saying_check_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(SourceError) as raised:
        oni.read_oni(path)
    _check_message(raised.value, path, None, "cannot read the file (No such file or directory)", "check the path")


def _variant(tmp_path: Path, line: int, old: str, new: str) -> Path:
    lines = SMALL.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[line - 1].count(old) == 1
    lines[line - 1] = lines[line - 1].replace(old, new)
    path = tmp_path / "variant.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_extra_field_on_the_first_data_row_is_a_field_count_error_not_a_shifted_row(tmp_path: Path) -> None:
    # pandas alone would take the first column as an index and report "found 1 24.56".
    path = _variant(tmp_path, 11, "L\n", "L     9.99\n")
    with pytest.raises(SourceError) as raised:
        oni.read_oni(path)
    _check_message(raised.value, path, 11, "expected 7 fields", "expected the ONI table format")
    assert "found 8" in str(raised.value)


def test_short_row_is_a_field_count_error(tmp_path: Path) -> None:
    path = _variant(tmp_path, 17, "      N\n", "\n")  # 1950-07 loses its PHASE
    with pytest.raises(SourceError) as raised:
        oni.read_oni(path)
    _check_message(raised.value, path, 17, "found 6", "expected the ONI table format")


@pytest.mark.parametrize("token", ["  inf", " -inf", "  nan"])
def test_non_finite_value_is_refused(tmp_path: Path, token: str) -> None:
    path = _variant(tmp_path, 13, "25.88", token)  # 1950-03 NINO34_MEAN
    with pytest.raises(SchemaError) as raised:
        oni.read_oni(path)
    _check_message(raised.value, path, 13, f"found {token.strip()!r}", "expected the ONI table format")


@pytest.mark.parametrize(("line", "old", "new", "problem"), [
    (12, "1950       02", "1950       13", "a month 1-12, found 1950 13"),
    (12, "1950       02", "1950.5     02", "found 1950.5 2"),
])
def test_impossible_month_is_refused_on_its_line(tmp_path: Path, line: int, old: str, new: str, problem: str) -> None:
    path = _variant(tmp_path, line, old, new)
    with pytest.raises(SchemaError) as raised:
        oni.read_oni(path)
    _check_message(raised.value, path, line, problem, "expected the ONI table format")


@pytest.mark.parametrize(("line", "old", "new", "problem"), [
    (13, "-1.02", "-7.02", "column NINO34_ANOM: expected in -5 .. 5, found -7.02"),
    (14, "26.29", "62.90", "column NINO34_MEAN: expected in 15 .. 35, found 62.9"),
])
def test_a_value_outside_its_rules_range_is_refused_on_its_line(tmp_path: Path, line: int, old: str, new: str,
                                                                 problem: str) -> None:
    path = _variant(tmp_path, line, old, new)
    with pytest.raises(SchemaError) as raised:
        oni.read_oni(path)
    _check_message(raised.value, path, line, problem, oni.RULES.fix)


def test_the_rules_hold_for_every_row_of_the_full_real_table(full: pa.Table) -> None:
    from shoal.rules import outside

    for name in oni.VALUES.values():
        values = full.column(name).to_numpy(zero_copy_only=False).astype(float)
        assert not outside(oni.RULES, name, values).any(), name


# -- ingest into the catalog ---------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_ingest_commits_version_0_with_lineage(catalog: Catalog) -> None:
    report = oni.ingest(catalog, [SMALL])
    assert (report.dataset, report.version, report.committed, report.exit_code) == ("nino34", 0, (str(SMALL),), 0)
    assert report.unchanged == report.failures == ()
    # read_table goes through polars, which widens string to large_string: compare values
    assert catalog.read_table("nino34").cast(oni.SCHEMA) == oni.read_oni(SMALL)
    [entry] = catalog.history("nino34")
    lineage = entry.lineage
    assert entry.version == 0
    assert (lineage.dataset, lineage.kind, lineage.rows) == ("nino34", "table", 24)
    [source] = lineage.sources
    assert source.sha256 == _sha256(SMALL)
    assert source.bytes == len(SMALL.read_bytes()) == SMALL.stat().st_size
    assert source.path == str(SMALL.resolve())
    assert lineage.shoal_version == shoal.__version__ and lineage.shoal_version
    created = dt.datetime.fromisoformat(lineage.created_at)
    assert created.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(minutes=10)
    assert lineage.parameters == {"source": "oni"}
    assert catalog.lineage("nino34") == lineage


def test_reingesting_the_same_file_is_a_noop(catalog: Catalog) -> None:
    oni.ingest(catalog, [SMALL])
    report = oni.ingest(catalog, [SMALL])
    assert (report.version, report.unchanged, report.committed, report.exit_code) == (0, (str(SMALL),), (), 0)
    assert len(catalog.history("nino34")) == 1


def test_changed_file_commits_version_1_and_version_0_still_reads_the_old_value(catalog: Catalog) -> None:
    oni.ingest(catalog, [SMALL])
    report = oni.ingest(catalog, [CHANGED])
    assert (report.version, report.committed, report.exit_code) == (1, (str(CHANGED),), 0)
    december = dt.date(1951, 12, 1)
    assert _value(catalog.read_table("nino34"), december, "oni") == 0.86
    assert _value(catalog.read_table("nino34", version=0), december, "oni") == 0.81
    assert catalog.read_table("nino34").num_rows == 24  # replaced, not appended
    assert [v.version for v in catalog.history("nino34")] == [1, 0]
    assert catalog.lineage("nino34").sources[0].sha256 == _sha256(CHANGED)
    assert catalog.lineage("nino34", version=0).sources[0].sha256 == _sha256(SMALL)
    # and back: the original file is a change relative to version 1, so it commits again
    assert oni.ingest(catalog, [SMALL]).version == 2


def test_full_real_file_ingests_2004_rows(catalog: Catalog) -> None:
    assert oni.ingest(catalog, [oni.SAMPLE]).version == 0
    assert catalog.lineage("nino34").rows == 2004
    assert catalog.describe("nino34")["rows"] == 2004


@pytest.mark.parametrize("name", [b[0] for b in BAD])
def test_bad_input_into_an_empty_catalog_commits_nothing(catalog: Catalog, name: str) -> None:
    report = oni.ingest(catalog, [NINO / name])
    assert len(report.failures) == 1
    assert "\n" not in report.failures[0] and report.failures[0].startswith(str(NINO / name))
    assert (report.exit_code, report.version, report.committed, report.unchanged) == (2, None, (), ())
    assert not catalog.exists("nino34")
    assert catalog.list() == []


def test_bad_input_leaves_an_existing_version_and_its_data_unchanged(catalog: Catalog) -> None:
    oni.ingest(catalog, [SMALL])
    before = catalog.read_table("nino34")
    for name, _, line, _ in BAD:
        report = oni.ingest(catalog, [NINO / name])
        assert (report.exit_code, report.version, len(report.failures)) == (2, 0, 1), name
        if line is not None:
            assert report.failures[0].startswith(f"{NINO / name}:{line}: ")
    assert [v.version for v in catalog.history("nino34")] == [0]
    assert catalog.read_table("nino34") == before


@pytest.mark.parametrize("paths", [[], [SMALL, CHANGED]], ids=["none", "two"])
def test_ingest_wants_exactly_one_file(catalog: Catalog, paths: list[Path]) -> None:
    report = oni.ingest(catalog, paths)
    assert report.exit_code == 2 and len(report.failures) == 1
    assert f"got {len(paths)}" in report.failures[0]
    assert not catalog.exists("nino34")


def test_progress_is_called_once_per_file_committed_unchanged_failed_or_refused(catalog: Catalog) -> None:
    from shoal.sources import get_source

    source = get_source("oni")
    for paths in ([SMALL], [SMALL], [NINO / "empty.txt"], [SMALL, CHANGED], []):
        seen: list[str] = []
        source.ingest(catalog, paths, progress=seen.append)
        assert seen == [str(p) for p in source.expand(paths)] == [str(p) for p in paths]


# -- readable without shoal ------------------------------------------------------------------------


def test_table_reads_back_with_plain_polars_and_deltalake(catalog: Catalog) -> None:
    from deltalake import DeltaTable

    oni.ingest(catalog, [SMALL])
    oni.ingest(catalog, [CHANGED])
    uri = catalog.uri("table", "nino34")
    assert uri == str(Path(catalog.home, "tables", "nino34"))
    plain = pl.read_delta(uri).sort("month")
    assert plain.equals(pl.from_arrow(catalog.read_table("nino34")).sort("month"))
    assert plain.to_arrow().cast(oni.SCHEMA) == oni.read_oni(CHANGED)
    assert pl.read_delta(uri, version=0).sort("month").to_arrow().cast(oni.SCHEMA) == oni.read_oni(SMALL)

    history = DeltaTable(uri).history()
    stamps = {entry["version"]: json.loads(entry["shoal"]) for entry in history}
    assert set(stamps) == {0, 1}
    assert stamps[0]["dataset"] == "nino34" and stamps[0]["kind"] == "table"
    assert stamps[0]["sources"][0]["sha256"] == _sha256(SMALL)
    assert stamps[1]["sources"][0]["sha256"] == _sha256(CHANGED)
    assert stamps[1]["rows"] == 24

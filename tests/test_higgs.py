"""HIGGS ingest: real rows in the UCI format, plain, gzip and zip, row numbers, bad input."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shoal.datasets import higgs, higgs_text
from shoal.datasets.higgs import COLUMNS, DATASET, FEATURES, ingest, official_split
from shoal.lineage import SourceFile
from tests.test_cli import _one_error_line, shoal

FIRST5 = Path(__file__).parent / "data" / "higgs" / "higgs_first5.csv"


@pytest.fixture
def first5(tmp_path: Path) -> Path:
    """A copy of the first 5 real rows of HIGGS.csv in the exact UCI format."""
    copy = tmp_path / "HIGGS.csv"
    copy.write_bytes(FIRST5.read_bytes())
    return copy


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _table(catalog) -> pl.DataFrame:  # noqa: ANN001
    return pl.read_delta(catalog.uri("table", DATASET)).sort("row_id")


def test_the_real_rows_land_as_float32_columns_with_their_row_numbers_and_no_split(catalog, first5: Path) -> None:
    report = ingest(catalog, [first5])
    assert report.exit_code == 0 and report.version == 0
    rows = _table(catalog)
    assert rows.columns == ["row_id", "label", *FEATURES]  # the split is the feature version's, not a fact of the file
    assert rows.schema["label"] == pl.Int8 and rows.schema["lepton_pT"] == pl.Float32 and rows.schema["row_id"] == pl.Int64
    expected = np.loadtxt(first5, delimiter=",")
    np.testing.assert_array_equal(rows.select(FEATURES).to_numpy(), expected[:, 1:].astype(np.float32))
    assert rows["label"].to_list() == expected[:, 0].astype(int).tolist() == [1, 1, 1, 0, 1]
    assert rows["row_id"].to_list() == [0, 1, 2, 3, 4]
    lineage = catalog.lineage(DATASET)
    assert lineage.sources == (SourceFile.of(first5),) and lineage.rows == 5
    assert lineage.parameters["official_split"] == {"train": 3, "valid": 1, "test": 1}


@pytest.mark.parametrize(("rows", "sizes"), [
    (11_000_000, (10_000_000, 500_000, 500_000)), (2_000_000, (1_000_000, 500_000, 500_000)),
    (1_999_999, (1_000_001, 499_999, 499_999)), (200_000, (100_000, 50_000, 50_000)), (3, (1, 1, 1)),
])
def test_the_official_split_holds_out_the_paper_tail_or_quarters_of_a_small_file(rows: int,
                                                                                  sizes: tuple[int, int, int]) -> None:
    assert official_split(rows) == sizes and sum(sizes) == rows


@pytest.mark.parametrize("wrap", ["plain", "zip"])
def test_row_numbers_run_in_file_order_across_files_and_blocks(catalog, first5: Path, monkeypatch, wrap: str) -> None:  # noqa: ANN001
    monkeypatch.setattr(higgs, "FILE_ROWS", 7)  # the streaming query writes many files
    monkeypatch.setattr(higgs_text, "BLOCK", 3000)  # ~5 rows a block: the block-wise path reads many blocks
    path = _write(first5.parent / "many.csv", _lines(first5) * 30)
    if wrap == "zip":
        wrapped = first5.parent / "many.zip"
        with zipfile.ZipFile(wrapped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, "HIGGS.csv")
        path = wrapped
    assert ingest(catalog, [path]).exit_code == 0
    rows = _table(catalog)
    assert rows["row_id"].to_list() == list(range(150))
    np.testing.assert_array_equal(rows["label"].to_numpy(), np.tile([1, 1, 1, 0, 1], 30))
    assert catalog.lineage(DATASET).rows == 150


def test_gzip_and_zip_stream_to_the_rows_of_the_plain_file(catalog, first5: Path, tmp_path: Path) -> None:
    from shoal.catalog import Catalog

    ingest(catalog, [first5])
    gz = tmp_path / "HIGGS.csv.gz"
    gz.write_bytes(gzip.compress(first5.read_bytes()))
    wrapped, plain_zip = tmp_path / "higgs.zip", tmp_path / "plain.zip"
    with zipfile.ZipFile(wrapped, "w") as archive:
        archive.write(gz, "HIGGS.csv.gz")
    with zipfile.ZipFile(plain_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(first5, "HIGGS.csv")
    for path in (gz, wrapped, plain_zip):
        other = Catalog(tmp_path / path.name.replace(".", "_"))
        assert ingest(other, [path]).exit_code == 0
        assert _table(other).equals(_table(catalog))
        assert other.lineage(DATASET).sources == (SourceFile.of(path),)


def test_the_same_file_again_is_a_no_op_and_another_file_replaces_the_table(catalog, first5: Path) -> None:
    ingest(catalog, [first5])
    again = ingest(catalog, [first5])
    assert again.unchanged == (str(first5),) and again.version == 0 and not again.committed
    shorter = _write(first5.parent / "other.csv", _lines(first5)[:3])
    replaced = ingest(catalog, [shorter])
    assert replaced.version == 1 and len(_table(catalog)) == 3
    assert pl.read_delta(catalog.uri("table", DATASET), version=0).height == 5  # time travel keeps the old one


def _bad(first5: Path, line: int, text: str) -> Path:
    lines = _lines(first5)
    lines[line - 1] = text
    return _write(first5.parent / "bad.csv", lines)


@pytest.mark.parametrize(("line", "edit", "problem"), [
    (3, lambda fields: fields[:-1], "expected 29 comma-separated values, found 28"),
    (2, lambda fields: [*fields, "1.0"], "expected 29 comma-separated values, found 30"),
    (4, lambda fields: [fields[0], "abc", *fields[2:]], "column lepton_pT: not a number: 'abc'"),
    (5, lambda fields: ["2.0", *fields[1:]], "label: expected 0 or 1, found '2.0'"),
    (2, lambda fields: [*fields[:5], "nan", *fields[6:]], "column missing_energy_phi: 'nan' is not a finite number"),
    (1, lambda fields: [*fields[:-1], "inf"], "column m_wwbb: 'inf' is not a finite number"),
    (3, lambda fields: [""], "an empty line"),
    (4, lambda fields: [fields[0], "-5e-01", *fields[2:]], "column lepton_pT: expected in 0 .. inf, found -0.5"),
    (2, lambda fields: [*fields[:26], "-1.0", *fields[27:]], "column m_bb: expected in 0 .. inf, found -1"),
])
def test_a_bad_line_is_named_with_its_number_and_nothing_is_committed(catalog, first5: Path, line: int, edit,  # noqa: ANN001
                                                                      problem: str) -> None:
    good = ingest(catalog, [first5])
    path = _bad(first5, line, ",".join(edit(_lines(first5)[line - 1].split(","))))
    report = ingest(catalog, [path])
    assert report.exit_code == 2 and report.version == good.version == 0
    (failure,) = report.failures
    assert failure.startswith(f"{path}:{line}: {problem}; expected the UCI HIGGS format")
    assert catalog.latest_version(DATASET) == 0 and len(_table(catalog)) == 5
    assert len(list(Path(catalog.uri("table", DATASET)).rglob("*.parquet"))) == 1  # the failed stream's files are gone


@pytest.mark.parametrize(("name", "make", "problem"), [
    ("empty.csv", lambda p: p.write_bytes(b""), "the file is empty"),
    ("cut.csv.gz", lambda p: p.write_bytes(gzip.compress(FIRST5.read_bytes())[:-40]), "cannot read it"),
    ("nocsv.zip", lambda p: zipfile.ZipFile(p, "w").writestr("README.txt", "no data"), "the zip holds no .csv or .csv.gz member"),
])
def test_an_empty_truncated_or_wrong_file_fails_with_one_line_and_creates_no_table(catalog, tmp_path: Path, name: str,  # noqa: ANN001
                                                                                  make, problem: str) -> None:
    path = tmp_path / name
    make(path)
    report = ingest(catalog, [path])
    assert report.exit_code == 2 and len(report.failures) == 1 and problem in report.failures[0]
    assert report.failures[0].startswith(str(path)) and not catalog.exists(DATASET)


def test_the_cli_exits_2_with_one_line_on_a_bad_file(tmp_path: Path, first5: Path) -> None:
    path = _bad(first5, 2, "1.0,2.0")
    result = shoal("ingest", "higgs", path, home=tmp_path / "home")
    assert result.returncode == 2
    assert _one_error_line(result).startswith(f"error: {path}:2: expected 29 comma-separated values, found 2")


def test_columns_are_the_label_then_the_analysis_feature_names() -> None:
    assert len(FEATURES) == 28 and COLUMNS[0] == "label"
    assert FEATURES[:5] == ("lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi")
    assert FEATURES[-7:] == ("m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb")

"""Validation rules, declared as data per source: one line per violation, and the good items still land."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, cobe_sst_grib, higgs
from shoal.datasets.cobe_sst_sample import sample_fields, write_grib
from shoal.rules import Rules, out_of_range, outside, range_checks, violations
from shoal.stats import RunningStats

HIGGS20 = Path(__file__).parent / "data" / "higgs" / "higgs_20.csv"
RULES = Rules(ranges={"x": (0.0, 10.0)}, max_nan_fraction={"x": 0.25}, columns=("x", "y"), grid=(2, 3),
              sample_rate=16000, fix="fetch it again")


def test_an_item_within_every_rule_has_no_violation() -> None:
    stats = {"x": RunningStats.from_values(np.array([0.0, 5.0, 10.0, np.nan]), axis=None)}
    assert violations(RULES, "a.csv", stats=stats, columns=["x", "y"], grid=(2, 3), sample_rate=16000) == []


def test_each_broken_rule_is_one_line_naming_the_item_what_was_expected_what_was_found_and_the_fix() -> None:
    stats = {"x": RunningStats.from_values(np.array([-1.0, 11.0, np.nan, np.nan]), axis=None)}
    lines = violations(RULES, "a.wav", stats=stats, columns=["y", "x"], grid=(3, 2), sample_rate=8000)
    assert lines == [
        "a.wav: columns expected ['x', 'y'], found ['y', 'x']; fetch it again",
        "a.wav: grid expected (2, 3), found (3, 2); fetch it again",
        "a.wav: sample rate expected 16000 Hz, found 8000 Hz; fetch it again",
        "a.wav: x expected in 0 .. 10, found -1 .. 11; fetch it again",
        "a.wav: x expected at most 25% NaN, found 50.0%; fetch it again",
    ]


def test_an_sst_month_that_is_mostly_missing_is_one_failure_line_and_the_other_months_land(catalog: Catalog,
                                                                                            tmp_path: Path) -> None:
    months = np.array(["1990-01", "1990-02", "1990-03"], dtype="datetime64[M]")
    fields = sample_fields(months)
    fields[1, 60:] = np.nan  # 1990-02 keeps sea only south of 30.5°S
    missing = np.isnan(fields[1]).mean()
    assert 0.6 < missing < 1
    paths = [write_grib(tmp_path / f"sst{str(m).replace('-', '')}.grb", f, m) for m, f in zip(months, fields)]
    report = cobe_sst.ingest(catalog, paths)
    assert report.failures == (f"{paths[1]}:1: sst expected at most 60% NaN, found {missing:.1%}; {cobe_sst_grib.RULES.fix}",)
    assert report.committed == (str(paths[0]), str(paths[2]))
    stored = catalog.open_array("sst").sst.values
    np.testing.assert_array_equal(stored[[0, 2]], [cobe_sst.decode(paths[0]).values, cobe_sst.decode(paths[2]).values])
    assert np.isnan(stored[1]).all()  # the slot between two months stays empty
    assert catalog.stats("sst")["sst"] == cobe_sst.decode(paths[0]).stats.merge(cobe_sst.decode(paths[2]).stats)


def test_a_value_is_out_of_range_beyond_either_bound_and_nan_never_is() -> None:
    assert [out_of_range(RULES, "x", v) for v in (0.0, 10.0, np.nan)] == [None, None, None]
    assert out_of_range(RULES, "x", -0.5) == "expected in 0 .. 10, found -0.5"
    assert out_of_range(RULES, "y", 1e9) is None  # no range declared
    values = np.array([0.0, 11.0, np.nan, -1.0, 10.0])
    np.testing.assert_array_equal(outside(RULES, "x", values), [False, True, False, True, False])
    assert not outside(RULES, "y", values).any()


def test_range_checks_are_false_exactly_on_the_rows_outside_a_declared_range() -> None:
    import polars as pl

    frame = pl.DataFrame({"x": [0.0, 10.5, -1.0, 3.0], "y": [1e9, 0.0, 0.0, -1e9]})
    (check,) = range_checks(RULES, ["x", "y"])  # y has no range: no check
    assert frame.select(check).to_series().to_list() == [True, False, False, True]


def test_a_higgs_row_outside_its_range_is_named_by_line_in_a_gzip_stream_and_nothing_is_committed(
        catalog: Catalog, tmp_path: Path) -> None:
    lines = HIGGS20.read_text().splitlines(keepends=True)
    fields = lines[16].split(",")
    fields[higgs.COLUMNS.index("m_jj")] = "-2.5e-01"
    lines[16] = ",".join(fields)
    path = tmp_path / "HIGGS.csv.gz"
    path.write_bytes(gzip.compress("".join(lines).encode()))
    report = higgs.ingest(catalog, [path])
    assert report.failures == (f"{path}:17: column m_jj: expected in 0 .. inf, found -0.25; {higgs.RULES.fix}",)
    assert not catalog.exists("higgs")


def test_the_higgs_rules_declare_the_29_columns_in_file_order_and_no_nan() -> None:
    assert higgs.RULES.columns == ("label", *higgs.FEATURES) and len(higgs.RULES.columns) == 29
    assert set(higgs.RULES.max_nan_fraction) == set(higgs.COLUMNS) and not any(higgs.RULES.max_nan_fraction.values())
    assert higgs.RULES.ranges["label"] == (0.0, 1.0)

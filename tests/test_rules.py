"""Validation rules, declared as data per source: one line per violation, and the good items still land."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst
from shoal.datasets.cobe_sst_sample import sample_fields, write_grib
from shoal.rules import Rules, violations
from shoal.stats import RunningStats

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
    assert report.failures == (f"{paths[1]}:1: sst expected at most 60% NaN, found {missing:.1%}; {cobe_sst.RULES.fix}",)
    assert report.committed == (str(paths[0]), str(paths[2]))
    stored = catalog.open_array("sst").sst.values
    np.testing.assert_array_equal(stored[[0, 2]], [cobe_sst.decode(paths[0]).values, cobe_sst.decode(paths[2]).values])
    assert np.isnan(stored[1]).all()  # the slot between two months stays empty
    assert catalog.stats("sst")["sst"] == cobe_sst.decode(paths[0]).stats.merge(cobe_sst.decode(paths[2]).stats)

"""COBE-SST GRIB ingest: decoding, units, scanning, bad files, backfills into the array `sst`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.commit_stats import CommitStats
from shoal.datasets import cobe_sst
from shoal.datasets.cobe_sst import LAT, LON, decode
from shoal.datasets.cobe_sst_sample import (box_mask, land_mask, months_between, nino34_mean, sample_fields, write_grib,
                                           write_sample)
from shoal.errors import SourceError

DATA = Path(__file__).parent / "data" / "cobe_sst"
GOOD = sorted((DATA / "good").glob("*.grb"))
PACKING = 35.0 / 2**10  # 10-bit fixtures: one packing step of a ~35 °C range


def _ingest(catalog: Catalog, *paths: Path):  # noqa: ANN202
    return cobe_sst.ingest(catalog, list(paths))


def _month(dataset, month: str) -> np.ndarray:  # noqa: ANN001
    return dataset.sst.sel(time=np.datetime64(month, "ns")).values


# -- decoding --------------------------------------------------------------------------------


def test_decode_gives_celsius_south_to_north_with_nan_on_land() -> None:
    month = decode(GOOD[0])
    expected = sample_fields(months_between("1982-01", "1982-01"))[0]
    assert month.month == np.datetime64("1982-01") and month.unit == "°C"
    assert month.values.shape == (180, 360) and month.values.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(month.values), land_mask())
    np.testing.assert_allclose(month.values, expected, atol=PACKING)  # row 0 is 89.5°S
    assert land_mask()[LAT > 75].mean() > 0.9 and not land_mask()[box_mask()].any()


@pytest.mark.parametrize(
    ("name", "unit", "month"),
    [("sst198204.grb", "K", "1982-04"), ("sst198205.grb", "°C", "1982-05"), ("sst198206.grb", "GDAL-shifted °C", "1982-06")],
)
def test_kelvin_gdal_shifted_and_south_to_north_files_decode_to_the_same_celsius_grid(name: str, unit: str, month: str) -> None:
    decoded = decode(DATA / "units" / name)
    expected = sample_fields(months_between("1982-01", "1982-06"))[int(month[-2:]) - 1]
    assert decoded.unit == unit
    np.testing.assert_allclose(decoded.values, expected, atol=PACKING + 1e-4)


def test_months_with_different_land_masks_each_keep_their_own_missing_points(tmp_path: Path) -> None:
    field = sample_fields(months_between("1982-01", "1982-01"))[0]
    ice = field.copy()
    ice[LAT > 60] = np.nan  # a winter's sea ice: another bitmap than the land's
    plain = write_grib(tmp_path / "sst198201.grb", field, np.datetime64("1982-01"))
    frozen = write_grib(tmp_path / "sst198202.grb", ice, np.datetime64("1982-02"))
    for path, expected in [(plain, field), (frozen, ice), (plain, field)]:  # each bitmap read once, then reused
        month = decode(path)
        np.testing.assert_array_equal(np.isnan(month.values), np.isnan(expected))
        assert int(month.stats.nan_count) == np.isnan(expected).sum() and int(month.stats.count) == (~np.isnan(expected)).sum()
        np.testing.assert_allclose(month.values, expected, atol=PACKING)


def test_a_field_coded_without_a_bitmap_decodes_every_point(tmp_path: Path) -> None:
    field = np.nan_to_num(sample_fields(months_between("1982-01", "1982-01"))[0], nan=10.0)
    path = write_grib(tmp_path / "sst198201.grb", field, np.datetime64("1982-01"), bitmap=False)
    month = decode(path)
    assert not np.isnan(month.values).any() and int(month.stats.nan_count) == 0
    np.testing.assert_allclose(month.values, field, atol=PACKING)


def test_a_bitmap_that_marks_more_points_than_the_file_holds_values_is_one_line(tmp_path: Path) -> None:
    import eccodes

    path = write_grib(tmp_path / "sst198201.grb", sample_fields(months_between("1982-01", "1982-01"))[0],
                      np.datetime64("1982-01"))
    with path.open("rb") as f:
        handle = eccodes.codes_grib_new_from_file(f)
        start, land = eccodes.codes_get_long(handle, "offsetSection3") + 6, eccodes.codes_get_array(handle, "bitmap")
        eccodes.codes_release(handle)
    data = bytearray(path.read_bytes())
    point = int(np.flatnonzero(land == 0)[0])
    data[start + point // 8] |= 0x80 >> (point % 8)  # one land point marked as holding a value
    path.write_bytes(data)
    with pytest.raises(SourceError, match=r"sst198201.grb:1: its bitmap marks (\d+) points .* but (\d+) values .*download"):
        decode(path)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("sst199001.grb", "not a GRIB file"),
        ("sst199002.grb", r":1: unreadable GRIB message .*truncated or corrupt; download the file again"),
        ("sst199003.grb", r":1: 40 bytes precede the GRIB message .*bulletin.*tail -c \+41"),
        ("sst199004.grb", r"grid is regular_ll 180 x 90, increments 2.0°.*expected a COBE-SST field"),
        ("sst199005.grb", r"parameter is '2t', not 'sst'"),
        ("sst199006.grb", r"GRIB date 19900701 is month 1990-07, the file name says 1990-06; rename"),
        ("sst199007.grb", r"values range 300.00 .. 330.00 fit neither °C"),
        ("sst199008.grb", r":2: more than one GRIB message"),
        ("sst199009.grb", r":1: parameter is '2t', not 'sst'; expected sea-surface temperature \(GRIB1"),
    ],
)
def test_each_bad_file_gets_one_line_naming_the_file_the_problem_and_the_fix(name: str, problem: str) -> None:
    with pytest.raises(SourceError, match=problem) as caught:
        decode(DATA / "bad" / name)
    message = str(caught.value)
    assert message.startswith(str(DATA / "bad" / name)) and "\n" not in message and "; " in message


def test_a_file_not_named_for_its_month_is_refused(tmp_path: Path) -> None:
    odd = shutil.copy(GOOD[0], tmp_path / "january.grb")
    with pytest.raises(SourceError, match="named sstYYYYMM.grb"):
        decode(odd)


# -- ingest ----------------------------------------------------------------------------------


def test_ingest_writes_one_commit_with_every_sha256(catalog: Catalog) -> None:
    report = _ingest(catalog, DATA / "good")
    assert report.exit_code == 0 and len(report.committed) == 3
    ds = catalog.open_array("sst")
    assert ds.sst.dims == ("time", "lat", "lon") and ds.sst.dtype == np.float32
    np.testing.assert_array_equal(ds.lat.values, LAT.astype(np.float32))
    np.testing.assert_array_equal(ds.lon.values, LON.astype(np.float32))
    assert list(ds.time.values.astype("datetime64[M]").astype(str)) == ["1982-01", "1982-02", "1982-03"]
    np.testing.assert_array_equal(_month(ds, "1982-02"), decode(GOOD[1]).values)
    lineage = catalog.lineage("sst")
    assert sorted(Path(s.path).name for s in lineage.sources) == [p.name for p in GOOD]
    assert lineage.shape["time"] == 3 and len(catalog.history("sst")) == 1
    assert bytes(ds.source_sha256.values[0]).hex() == lineage.sources[0].sha256


def test_reingesting_the_same_files_is_a_no_op(catalog: Catalog) -> None:
    _ingest(catalog, DATA / "good")
    again = _ingest(catalog, *GOOD)
    assert again.committed == () and len(again.unchanged) == 3 and again.exit_code == 0
    assert len(catalog.history("sst")) == 1


def test_a_changed_file_replaces_its_month_and_the_commit_says_so(catalog: Catalog) -> None:
    _ingest(catalog, DATA / "good")
    report = _ingest(catalog, DATA / "revised" / "sst198202.grb", GOOD[0])
    assert len(report.committed) == 1 and len(report.unchanged) == 1
    latest = catalog.history("sst")[0]
    assert "replacing 1982-02" in latest.message
    assert set(latest.lineage.parameters["replaced"]) == {"1982-02"}
    np.testing.assert_array_equal(_month(catalog.open_array("sst"), "1982-02"), decode(DATA / "revised" / "sst198202.grb").values)
    np.testing.assert_array_equal(_month(catalog.open_array("sst", version=0), "1982-02"), decode(GOOD[1]).values)


def test_months_in_any_order_land_in_their_slots_and_the_axis_grows_both_ways(catalog: Catalog) -> None:
    _ingest(catalog, GOOD[1])
    _ingest(catalog, DATA / "units" / "sst198205.grb")  # grows the end, leaving 03-04 empty
    _ingest(catalog, GOOD[0])  # precedes the axis: rebuilt in the same commit
    ds = catalog.open_array("sst")
    assert list(ds.time.values.astype("datetime64[M]").astype(str)) == [f"1982-0{m}" for m in range(1, 6)]
    np.testing.assert_array_equal(_month(ds, "1982-01"), decode(GOOD[0]).values)
    np.testing.assert_array_equal(_month(ds, "1982-02"), decode(GOOD[1]).values)
    assert np.isnan(_month(ds, "1982-03")).all() and not ds.source_sha256.values[2].any()
    _ingest(catalog, GOOD[2])  # backfill a gap
    np.testing.assert_array_equal(_month(catalog.open_array("sst"), "1982-03"), decode(GOOD[2]).values)
    assert len(catalog.history("sst")) == 4


def test_each_months_stored_statistics_equal_numpys_float64_two_pass_over_the_month_as_stored(
        catalog: Catalog) -> None:
    # The Kelvin and GDAL-shifted files are summarized after their conversion, over the float32 °C values stored.
    _ingest(catalog, DATA / "good", DATA / "units")
    parts = CommitStats.from_dict(catalog.lineage("sst").stats).parts
    ds = catalog.open_array("sst")
    assert sorted(parts) == [f"1982-0{m}" for m in range(1, 7)]
    for month, variables in parts.items():
        stored = _month(ds, month).astype(np.float64)
        sea = stored[~np.isnan(stored)]
        summary = variables["sst"]
        assert (int(summary.count), int(summary.nan_count)) == (sea.size, stored.size - sea.size)
        assert (float(summary.min), float(summary.max)) == (sea.min(), sea.max())
        np.testing.assert_allclose(summary.mean, sea.mean(), rtol=1e-12, err_msg=month)
        np.testing.assert_allclose(summary.m2, ((sea - sea.mean()) ** 2).sum(), rtol=1e-12, err_msg=month)


def test_good_files_are_committed_and_each_bad_file_reported_with_exit_code_1(catalog: Catalog) -> None:
    report = _ingest(catalog, DATA / "good", DATA / "bad")
    assert len(report.committed) == 3 and len(report.failures) == len(list((DATA / "bad").glob("*.grb")))
    assert report.exit_code == 1
    for failure, bad in zip(sorted(report.failures), sorted((DATA / "bad").glob("*.grb")), strict=True):
        assert failure.startswith(str(bad))
    assert catalog.open_array("sst").sizes["time"] == 3


def test_only_bad_files_commit_nothing_with_exit_code_2(catalog: Catalog) -> None:
    report = _ingest(catalog, DATA / "bad")
    assert report.exit_code == 2 and report.committed == ()
    assert catalog.list() == [] or catalog.history("sst") == []


def test_two_files_for_one_month_are_both_refused_and_the_rest_committed(catalog: Catalog, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(DATA / "revised" / "sst198202.grb", other)
    report = _ingest(catalog, DATA / "good", other / "sst198202.grb")
    assert sorted(Path(p).name for p in report.committed) == ["sst198201.grb", "sst198203.grb"]
    assert len(report.failures) == 2 and all("month 1982-02 is also given by" in f for f in report.failures)
    assert np.isnan(_month(catalog.open_array("sst"), "1982-02")).all()


def test_progress_sees_every_file_once_whatever_became_of_it(catalog: Catalog, tmp_path: Path) -> None:
    from shoal.sources import get_source

    source = get_source("sst")
    source.ingest(catalog, [GOOD[0]])  # unchanged below
    misnamed = shutil.copy(GOOD[1], tmp_path / "january.grb")
    twice = tmp_path / "other" / "sst198202.grb"  # 1982-02 twice: both refused
    twice.parent.mkdir()
    shutil.copy(DATA / "revised" / "sst198202.grb", twice)
    paths = [DATA / "good", DATA / "bad", Path(misnamed), twice, tmp_path / "empty"]
    (tmp_path / "empty").mkdir()  # a failure, but no file: nothing to count
    expected = [str(p) for p in source.expand(paths)]
    assert len(expected) == 3 + 9 + 2
    seen: list[str] = []
    report = source.ingest(catalog, paths, progress=seen.append)
    assert sorted(seen) == sorted(expected)
    assert (len(report.committed), len(report.unchanged), len(report.failures)) == (1, 1, 9 + 1 + 2 + 1)


def test_the_report_gives_the_version_of_its_own_commit_when_another_lands_right_after(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.arrays import ArraySession

    real = ArraySession.commit
    others: list[str] = []

    def then_another_writer(self: ArraySession, provenance, *, stats=None) -> str:  # noqa: ANN001
        snapshot = real(self, provenance, stats=stats)
        if not others:  # once: the other writer's own commit goes through this wrapper too
            others.append("running")
            assert _ingest(catalog, GOOD[2]).version == 1
        return snapshot

    monkeypatch.setattr(ArraySession, "commit", then_another_writer)
    report = _ingest(catalog, GOOD[0], GOOD[1])
    assert report.version == 0 and len(report.committed) == 2
    assert [v.version for v in catalog.history("sst")] == [1, 0]


def test_sample_files_follow_the_real_nino34_series_in_the_box(tmp_path: Path) -> None:
    files = write_sample(tmp_path, start="1997-06", end="1998-01", bits=16)
    real = nino34_mean(months_between("1997-06", "1998-01"))
    box = [np.nanmean(decode(f).values[box_mask()]) for f in files]
    np.testing.assert_allclose(box, real, atol=0.01)
    assert write_sample(tmp_path / "again", start="1997-06", end="1997-06")[0].read_bytes() == files[0].read_bytes()


def test_the_cli_commits_good_files_prints_one_line_per_bad_file_and_exits_1(home: Path) -> None:
    from typer.testing import CliRunner

    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), "ingest", "sst", str(DATA / "good"), str(DATA / "bad")])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 9 and all("/bad/sst1990" in line for line in errors)
    assert "sst: version 0; 3 committed, 0 unchanged, 9 failed" in result.stdout
    again = CliRunner().invoke(app, ["--home", str(home), "ingest", "sst", str(DATA / "bad")])
    assert again.exit_code == 2


def test_a_folder_without_sst_files_is_a_failure_not_a_silent_success(catalog: Catalog, tmp_path: Path) -> None:
    report = _ingest(catalog, tmp_path)
    assert report.exit_code == 2 and "no sstYYYYMM.grb file in this folder" in report.failures[0]


# -- CF attributes ---------------------------------------------------------------------------


def test_the_sst_array_has_cf_units_and_standard_names_that_round_trip_through_icechunk(catalog: Catalog) -> None:
    _ingest(catalog, DATA / "good")
    ds = catalog.open_array("sst")
    assert (ds.lat.attrs["units"], ds.lat.attrs["standard_name"]) == ("degrees_north", "latitude")
    assert (ds.lon.attrs["units"], ds.lon.attrs["standard_name"]) == ("degrees_east", "longitude")
    assert ds.time.attrs["standard_name"] == "time" and ds.time.encoding["units"] == "days since 1850-01-01"
    assert (ds.sst.attrs["units"], ds.sst.attrs["standard_name"]) == ("degC", "sea_surface_temperature")
    assert ds.sst.attrs["long_name"] == "sea surface temperature"


def test_a_home_written_before_the_cf_attributes_reads_and_takes_new_months(catalog: Catalog,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as old:  # the shoal that wrote this home set no CF attributes
        for name in ("LAT_ATTRS", "LON_ATTRS", "TIME_ATTRS"):
            old.setattr(cobe_sst, name, {})
        _ingest(catalog, *GOOD[:2])
    assert "units" not in catalog.open_array("sst").lat.attrs
    assert _ingest(catalog, GOOD[2]).exit_code == 0
    ds = catalog.open_array("sst")
    assert list(ds.time.values.astype("datetime64[M]").astype(str)) == ["1982-01", "1982-02", "1982-03"]
    np.testing.assert_array_equal(_month(ds, "1982-03"), decode(GOOD[2]).values)

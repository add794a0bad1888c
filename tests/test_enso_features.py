"""ENSO features: crop, training-only statistics, land mask, targets, windows, content addressing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, oni
from shoal.datasets.cobe_sst_sample import land_mask, write_sample
from shoal.features.enso import EnsoFeatureConfig, EnsoFeatures, build, compute

START, END, VALID, TEST = "1988-01", "1991-06", "1990-01", "1991-01"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_sample(tmp_path_factory.mktemp("sst"), start=START, end=END)[0]).parent


@pytest.fixture
def ingested(catalog: Catalog, samples: Path) -> Catalog:
    assert cobe_sst.ingest(catalog, [samples]).exit_code == 0
    assert oni.ingest(catalog, [oni.SAMPLE]).exit_code == 0
    return catalog


def test_full_resolution_crop_is_115_by_360_and_statistics_come_from_training_months_only(ingested: Catalog) -> None:
    build(ingested, config=EnsoFeatureConfig(valid_start=VALID, test_start=TEST))
    features = ingested.open_array("enso_features")
    assert (features.sizes["lat"], features.sizes["lon"]) == (115, 360)
    assert float(features.lat[0]) == -54.5 and float(features.lat[-1]) == 59.5
    raw = ingested.open_array("sst").sst.sel(lat=slice(-55, 60))
    train = raw.sel(time=slice(None, "1989-12")).values.astype(np.float64)
    mean, std = np.nanmean(train), np.nanstd(train)
    stats = ingested.lineage("enso_features").parameters["statistics"]["sst"]
    assert stats["mean"][0] == pytest.approx(mean, rel=1e-12) and stats["count"][0] == np.isfinite(train).sum()
    sea = ~features.land.values
    expected = (raw.sel(time="1990-03").values[0] - mean) / std
    np.testing.assert_allclose(features.sst.sel(time="1990-03").values[0][sea], expected[sea], rtol=1e-5, atol=1e-5)
    assert (features.sst.values[:, ~sea] == 0).all() and not np.isnan(features.sst.values).any()
    np.testing.assert_array_equal(features.land.values, land_mask()[35:150])


def test_targets_are_the_real_anomaly_normalized_with_training_statistics_and_phase_codes(ingested: Catalog) -> None:
    build(ingested, config=EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=4))
    features = ingested.open_array("enso_features")
    real = ingested.read_table("nino34").to_pandas().set_index("month")
    months = [np.datetime64(m, "D").astype(object) for m in features.time.values.astype("datetime64[M]")]
    anomaly = real.loc[months, "nino34_anom"].to_numpy()
    train = anomaly[: 24]
    normalized = (anomaly - train.mean()) / train.std()
    np.testing.assert_allclose(features["index"].values, normalized, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features.nino34_anom.values, anomaly, rtol=1e-6)
    assert list(features.split.values) == [0] * 24 + [1] * 12 + [2] * 6
    codes = {"E": 0, "L": 1, "N": 2}
    assert list(features.phase.values) == [codes[p] for p in real.loc[months, "phase"]]


def test_windows_share_one_grid_series_skip_gaps_and_belong_to_the_period_of_their_last_target(
    ingested: Catalog, samples: Path, tmp_path: Path
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(samples, partial)
    (partial / "sst198806.grb").unlink()
    catalog = Catalog(tmp_path / "gap")
    cobe_sst.ingest(catalog, [partial])
    oni.ingest(catalog, [oni.SAMPLE])
    build(catalog, config=EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=4))
    features = EnsoFeatures(catalog)
    months = features.months
    leads = (1, 3)
    train, valid, test = (features.windows(split, leads) for split in ("train", "valid", "test"))
    for t in train.origins:  # no window touches the missing 1988-06
        assert not (months[t - 6] <= np.datetime64("1988-06") <= months[t - 1 + 3])
    assert all(months[t - 1 + 3] < np.datetime64(VALID) for t in train.origins)
    assert all(np.datetime64(VALID) <= months[t - 1 + 3] < np.datetime64(TEST) for t in valid.origins)
    assert all(months[t - 1 + 3] >= np.datetime64(TEST) for t in test.origins)
    # last targets 1989-03 .. 1989-12 (after the gap), 1990-01 .. 1990-12, 1991-01 .. 1991-06
    assert (len(train), len(valid), len(test)) == (10, 12, 6)
    sample = valid[0]
    assert sample["x"].shape == (6, 1, 28, 90) and sample["grid"].shape == (1, 28, 90)
    assert sample["index"].shape == (2,) and sample["phase"].shape == (2,)
    assert sample["x"].untyped_storage().data_ptr() == features.sst.untyped_storage().data_ptr()
    t = int(valid.origins[0])
    assert torch.equal(sample["index"], features.index[[t, t + 2]]) and torch.equal(sample["grid"], features.sst[t])


def test_gather_builds_the_same_batch_as_collating_items(ingested: Catalog) -> None:
    from torch.utils.data import default_collate

    build(ingested, config=EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=4))
    windows = EnsoFeatures(ingested).windows("valid", (1, 2, 6))
    items = torch.tensor([5, 0, 3])
    expected = default_collate([windows[int(i)] for i in items])
    gathered = windows.to(torch.device("cpu")).gather(items)
    assert gathered.keys() == expected.keys()
    for key in expected:
        assert torch.equal(gathered[key], expected[key]), key


def _history(values: np.ndarray, months: np.ndarray) -> xr.Dataset:
    return xr.Dataset(
        {"sst": (("time", "lat", "lon"), values), "source_sha256": (("time", "sha256_byte"), np.ones((len(months), 32), np.uint8))},
        coords={"time": months.astype("datetime64[ns]"), "lat": np.arange(-10.5, 10.0, 1.0), "lon": np.arange(0.5, 30.0, 1.0)},
    )


def test_what_happens_after_valid_start_never_changes_the_normalized_training_months() -> None:
    from shoal.features.enso import compute

    months = np.arange(np.datetime64("1985-01"), np.datetime64("1995-01"))
    rng = np.random.default_rng(0)
    before = rng.normal(20.0, 3.0, (len(months), 21, 30)).astype(np.float32)
    after = before.copy()
    later = months >= np.datetime64(VALID)
    after[later] += 5.0  # a warmer future
    after[later, 3, 4] = np.nan  # and a cell that turns to land (sea ice, a bad month)
    nino34 = {"month": months, "nino34_anom": rng.normal(0, 1, len(months)), "phase": np.array(["N"] * len(months), dtype=object)}
    config = EnsoFeatureConfig(valid_start=VALID, test_start="1992-01", lat_min=-90, lat_max=90)
    a, stats_a = compute(_history(before, months), nino34, config)
    b, stats_b = compute(_history(after, months), nino34, config)
    train = ~later
    assert a.sst.values[train].tobytes() == b.sst.values[train].tobytes()
    assert a.land.values.tobytes() == b.land.values.tobytes() and not b.land.values.any()
    assert stats_a == stats_b
    assert a.sst.values[later].tobytes() != b.sst.values[later].tobytes()


def test_same_inputs_and_parameters_reuse_the_version_and_new_inputs_make_a_new_one(ingested: Catalog, samples: Path) -> None:
    config = EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=4)
    first = build(ingested, config=config)
    assert not first.reused and build(ingested, config=config) == first.__class__(first.version, first.snapshot, True)
    assert first.snapshot == ingested.history("enso_features")[0].snapshot
    other = build(ingested, config=EnsoFeatureConfig(valid_start="1989-06", test_start=TEST, coarsen=4))
    assert not other.reused and other.version == first.version + 1
    write_sample(samples.parent / "later", start="1991-07", end="1991-08")
    cobe_sst.ingest(ingested, [samples.parent / "later"])
    assert not build(ingested, config=config).reused


def test_the_same_inputs_give_the_same_feature_bytes(ingested: Catalog, samples: Path, tmp_path: Path) -> None:
    build(ingested, config=EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=4))
    again = Catalog(tmp_path / "again")
    cobe_sst.ingest(again, [samples])
    oni.ingest(again, [oni.SAMPLE])
    build(again, config=EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=4))
    a, b = ingested.open_array("enso_features").load(), again.open_array("enso_features").load()
    for name in ("sst", "index", "land", "phase"):
        assert a[name].values.tobytes() == b[name].values.tobytes()


def test_features_need_their_inputs(catalog: Catalog) -> None:
    from shoal.errors import CatalogError

    with pytest.raises(CatalogError, match="need 'sst'"):
        build(catalog, config=EnsoFeatureConfig())


def test_the_content_key_changes_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.features import enso
    from shoal.lineage import InputVersion

    inputs = (InputVersion("sst", "array", "S"), InputVersion("nino34", "table", 0))
    before = enso.content_key(EnsoFeatureConfig(), *inputs)
    assert enso.content_key(EnsoFeatureConfig(), *inputs) == before
    monkeypatch.setattr(enso, "code_fingerprint", lambda: "an edited feature module")
    assert enso.content_key(EnsoFeatureConfig(), *inputs) != before


def _build_in_a_process(home: str, coarsen: int, start: str) -> tuple[int, str]:
    import time

    from shoal.features.enso import build as build_features

    time.sleep(max(0.0, float(start) - time.time()))  # start both builds together
    built = build_features(Catalog(home), config=EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=coarsen))
    return built.version, built.snapshot


@pytest.mark.slow
def test_two_concurrent_builds_with_other_configurations_both_land_and_each_gets_its_own_version(ingested: Catalog) -> None:
    import multiprocessing
    import time

    start = str(time.time() + 3.0)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_build_in_a_process, [(ingested.home, 4, start), (ingested.home, 6, start)])
    history = {entry.snapshot: entry for entry in ingested.history("enso_features")}
    assert len(history) == 2 and {snapshot for _, snapshot in results} == set(history)
    for (version, snapshot), coarsen in zip(results, (4, 6), strict=True):
        assert history[snapshot].version == version
        assert history[snapshot].lineage.parameters["config"]["coarsen"] == coarsen


def test_a_validation_start_after_the_test_start_is_named_by_its_flags() -> None:
    from shoal.errors import CatalogError
    from shoal.features.enso import EnsoFeatureConfig

    with pytest.raises(CatalogError, match=r"^--valid-start 2099-01 must come before --test-start 2005-01$"):
        EnsoFeatureConfig(valid_start="2099-01")


def test_features_keep_the_sst_cf_coordinates_and_say_their_units_without_changing_a_byte(ingested: Catalog) -> None:
    config = EnsoFeatureConfig(valid_start=VALID, test_start=TEST, coarsen=4)
    table = ingested.read_table("nino34")
    nino34 = {"month": np.array(table.column("month").to_pylist(), dtype="datetime64[M]"),
              "nino34_anom": table.column("nino34_anom").to_numpy(), "phase": np.array(table.column("phase").to_pylist())}
    sst = ingested.open_array("sst")
    features, _ = compute(sst, nino34, config)
    assert (features.lat.attrs["units"], features.lat.attrs["standard_name"]) == ("degrees_north", "latitude")
    assert (features.lon.attrs["units"], features.lon.attrs["standard_name"]) == ("degrees_east", "longitude")
    assert features.time.attrs["standard_name"] == "time"
    assert features.sst.attrs["units"] == "1" and features["index"].attrs["units"] == "1"
    assert features.nino34_anom.attrs["units"] == "degC" and "long_name" in features.sst.attrs
    bare, _ = compute(sst.drop_attrs(), nino34, config)  # as from a home written before the attributes
    for name in features.variables:
        assert features[name].values.tobytes() == bare[name].values.tobytes(), name
    assert build(ingested, config=config).version == 0
    stored = ingested.open_array("enso_features")
    assert stored.lat.attrs["units"] == "degrees_north" and stored.time.encoding["units"].startswith("days since")

"""ENSO features: crop, training-only statistics, land mask, targets, windows, content addressing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, oni
from shoal.datasets.cobe_sst_sample import land_mask, write_sample
from shoal.features.enso import EnsoFeatureConfig, EnsoFeatures, build

START, END, TRAIN_END = "1988-01", "1991-06", "1990-01"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_sample(tmp_path_factory.mktemp("sst"), start=START, end=END)[0]).parent


@pytest.fixture
def ingested(catalog: Catalog, samples: Path) -> Catalog:
    assert cobe_sst.ingest(catalog, [samples]).exit_code == 0
    assert oni.ingest(catalog, [oni.SAMPLE]).exit_code == 0
    return catalog


def test_full_resolution_crop_is_115_by_360_and_statistics_come_from_training_months_only(ingested: Catalog) -> None:
    build(ingested, config=EnsoFeatureConfig(train_end=TRAIN_END))
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


def test_targets_are_the_real_index_normalized_with_training_statistics_and_phase_codes(ingested: Catalog) -> None:
    build(ingested, config=EnsoFeatureConfig(train_end=TRAIN_END, coarsen=4))
    features = ingested.open_array("enso_features")
    real = ingested.read_table("nino34").to_pandas().set_index("month")
    months = [np.datetime64(m, "D").astype(object) for m in features.time.values.astype("datetime64[M]")]
    index_c = real.loc[months, "nino34_mean"].to_numpy()
    train = index_c[: 24]
    normalized = (index_c - train.mean()) / train.std()
    np.testing.assert_allclose(features["index"].values, normalized, rtol=1e-5)
    np.testing.assert_allclose(features.nino34_mean.values, index_c, rtol=1e-6)
    codes = {"E": 0, "L": 1, "N": 2}
    assert list(features.phase.values) == [codes[p] for p in real.loc[months, "phase"]]


def test_windows_share_one_grid_series_and_skip_incomplete_windows(ingested: Catalog, samples: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(samples, partial)
    (partial / "sst198806.grb").unlink()
    catalog = Catalog(tmp_path / "gap")
    cobe_sst.ingest(catalog, [partial])
    oni.ingest(catalog, [oni.SAMPLE])
    build(catalog, config=EnsoFeatureConfig(train_end=TRAIN_END, coarsen=4))
    features = EnsoFeatures(catalog)
    train, valid = features.windows("train"), features.windows("valid")
    months = features.months
    for t in train.targets:  # no window touches the missing 1988-06
        assert not (months[t - 6] <= np.datetime64("1988-06") <= months[t])
    assert all(months[t] < np.datetime64(TRAIN_END) for t in train.targets)
    assert all(months[t] >= np.datetime64(TRAIN_END) for t in valid.targets)
    assert len(valid) == 18 and len(train) == 12  # targets 1989-01 .. 1989-12: windows after the gap
    sample = valid[0]
    assert sample["x"].shape == (6, 1, 28, 90) and sample["grid"].shape == (1, 28, 90)
    assert sample["x"].untyped_storage().data_ptr() == features.sst.untyped_storage().data_ptr()
    assert int(sample["month"]) == months[valid.targets[0]].astype(np.int64)


def test_same_inputs_and_parameters_reuse_the_version_and_new_inputs_make_a_new_one(ingested: Catalog, samples: Path) -> None:
    config = EnsoFeatureConfig(train_end=TRAIN_END, coarsen=4)
    first = build(ingested, config=config)
    assert not first.reused and build(ingested, config=config) == first.__class__(first.version, first.snapshot, True)
    other = build(ingested, config=EnsoFeatureConfig(train_end="1989-06", coarsen=4))
    assert not other.reused and other.version == first.version + 1
    write_sample(samples.parent / "later", start="1991-07", end="1991-08")
    cobe_sst.ingest(ingested, [samples.parent / "later"])
    assert not build(ingested, config=config).reused


def test_the_same_inputs_give_the_same_feature_bytes(ingested: Catalog, samples: Path, tmp_path: Path) -> None:
    build(ingested, config=EnsoFeatureConfig(train_end=TRAIN_END, coarsen=4))
    again = Catalog(tmp_path / "again")
    cobe_sst.ingest(again, [samples])
    oni.ingest(again, [oni.SAMPLE])
    build(again, config=EnsoFeatureConfig(train_end=TRAIN_END, coarsen=4))
    a, b = ingested.open_array("enso_features").load(), again.open_array("enso_features").load()
    for name in ("sst", "index", "land", "phase"):
        assert a[name].values.tobytes() == b[name].values.tobytes()


def test_features_need_their_inputs(catalog: Catalog) -> None:
    from shoal.errors import CatalogError

    with pytest.raises(CatalogError, match="need 'sst'"):
        build(catalog, config=EnsoFeatureConfig())

"""HIGGS features: the version's split, standardized on its train rows only, content-addressed, zero-copy
arrays, bounded batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shoal.catalog import Catalog
from shoal.datasets import higgs
from shoal.errors import CatalogError
from shoal.features.higgs import HiggsFeatures, HiggsSplit, build

FIRST5 = Path(__file__).parent / "data" / "higgs" / "higgs_first5.csv"


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    """40 rows: the 5 real ones, each repeated with a small deterministic change."""
    lines = FIRST5.read_text().splitlines()
    out = []
    for k in range(8):
        for line in lines:
            label, *values = line.split(",")
            out.append(",".join([label, *(f"{float(v) + 0.01 * k:.18e}" for v in values)]))
    path = tmp_path / "HIGGS.csv"
    path.write_text("".join(f"{line}\n" for line in out))
    return path


@pytest.fixture
def built(catalog: Catalog, rows_file: Path) -> Catalog:
    assert higgs.ingest(catalog, [rows_file]).exit_code == 0
    build(catalog)
    return catalog


def _raw(catalog: Catalog, row_ids: np.ndarray) -> np.ndarray:
    import polars as pl

    frame = catalog.scan_table("higgs").filter(pl.col("row_id").is_in(row_ids.tolist())).sort("row_id").collect()
    return frame.select(higgs.FEATURES).to_numpy().astype(np.float64)


def test_the_official_split_is_the_paper_tail_of_the_file(built: Catalog) -> None:
    features = HiggsFeatures(built)  # 40 rows: a small file's quarters
    assert [features.arrays(name).row_id.tolist() for name in ("train", "valid", "test")] == [
        list(range(20)), list(range(20, 30)), list(range(30, 40))]
    assert features.split.rule == "official" and features.split.counts == {"train": 20, "valid": 10, "test": 10}


def test_a_random_split_is_seeded_by_row_and_fits_its_statistics_on_its_own_train_rows(built: Catalog) -> None:
    first = build(built, split=HiggsSplit("random", seed=1, valid_fraction=0.25, test_fraction=0.25))
    again = build(built, split=HiggsSplit("random", seed=1, valid_fraction=0.25, test_fraction=0.25))
    other = build(built, split=HiggsSplit("random", seed=2, valid_fraction=0.25, test_fraction=0.25))
    assert not first.reused and again.reused and again.version == first.version and other.version != first.version
    one, two = HiggsFeatures(built, version=first.version), HiggsFeatures(built, version=other.version)
    train = one.arrays("train").row_id
    assert one.split.rule == "random" and one.split.parameters["seed"] == 1 and sum(one.split.counts.values()) == 40
    assert not np.array_equal(train, two.arrays("train").row_id)  # another seed, other rows
    assert sorted(np.concatenate([one.arrays(name).row_id for name in ("train", "valid", "test")])) == list(range(40))
    assert not np.array_equal(train, np.arange(len(train)))  # not the head of the file
    np.testing.assert_allclose(one.stats.mean, _raw(built, train).mean(axis=0), rtol=1e-12)


def test_a_row_keeps_its_random_split_when_the_table_grows(built: Catalog, rows_file: Path) -> None:
    rule = HiggsSplit("random", seed=4)
    small = HiggsFeatures(built, version=build(built, split=rule).version)
    longer = rows_file.parent / "longer.csv"
    longer.write_text(rows_file.read_text() * 3)
    higgs.ingest(built, [longer])
    large = HiggsFeatures(built, version=build(built, split=rule).version)
    for name in ("train", "valid", "test"):
        assert set(small.arrays(name).row_id) == set(large.arrays(name).row_id) & set(range(40))


def test_statistics_come_from_the_training_rows_only_and_standardize_every_split(built: Catalog) -> None:
    features = HiggsFeatures(built)
    train = _raw(built, np.arange(20))
    np.testing.assert_allclose(features.stats.mean, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(features.stats.std, train.std(axis=0), rtol=1e-9)
    for split in ("train", "valid", "test"):
        arrays = features.arrays(split)
        expected = ((_raw(built, arrays.row_id) - train.mean(axis=0)) / train.std(axis=0)).astype(np.float32)
        np.testing.assert_allclose(arrays.x, expected, atol=1e-5)
        assert arrays.x.dtype == np.float32 and arrays.x.shape[1] == 28
    train_x = features.arrays("train").x.astype(np.float64)
    np.testing.assert_allclose(train_x.mean(axis=0), 0.0, atol=1e-5)


def test_arrays_are_views_of_the_arrow_buffer_and_rows_share_them(built: Catalog) -> None:
    features = HiggsFeatures(built)
    arrays = features.arrays("train")
    assert arrays.x.base is not None and not arrays.x.flags["OWNDATA"]  # no copy out of Arrow
    from shoal.features.higgs import HiggsRows

    rows = HiggsRows(arrays)
    assert np.shares_memory(rows.x.numpy(), arrays.x)  # the tensor is the same memory
    batch = rows.gather(torch.tensor([2, 0]))
    torch.testing.assert_close(batch["x"], torch.stack([rows[2]["x"], rows[0]["x"]]))
    assert batch["label"].dtype == torch.float32


def test_a_second_build_reuses_the_version_and_a_new_higgs_version_makes_a_new_one(built: Catalog, rows_file: Path) -> None:
    again = build(built)
    assert again.reused and again.version == 0
    shorter = rows_file.parent / "short.csv"
    shorter.write_text("".join(f"{line}\n" for line in rows_file.read_text().splitlines()[:20]))
    higgs.ingest(built, [shorter])
    fresh = build(built)
    assert not fresh.reused and fresh.version == 1 and len(HiggsFeatures(built).arrays("train").x) == 10
    assert len(HiggsFeatures(built, version=0).arrays("train").x) == 20  # the old version by time travel


def test_the_same_inputs_give_the_same_feature_bytes(catalog: Catalog, rows_file: Path, tmp_path: Path) -> None:
    other = Catalog(tmp_path / "other")
    for home in (catalog, other):
        higgs.ingest(home, [rows_file])
        build(home)
    assert HiggsFeatures(catalog).arrays("test").x.tobytes() == HiggsFeatures(other).arrays("test").x.tobytes()


def test_streamed_batches_cover_the_split_once_seeded_and_shuffled(built: Catalog) -> None:
    features = HiggsFeatures(built)
    whole = features.arrays("train")
    first = list(features.batches("train", 7, shuffle=True, seed=3))
    second = list(features.batches("train", 7, shuffle=True, seed=3))
    ids = np.concatenate([b.row_id for b in first])
    assert sorted(ids) == sorted(whole.row_id) and not np.array_equal(ids, whole.row_id)
    assert all(np.array_equal(a.row_id, b.row_id) for a, b in zip(first, second, strict=True))
    assert max(len(b.x) for b in first) == 7
    plain = np.concatenate([b.row_id for b in features.batches("train", 7)])
    assert np.array_equal(plain, whole.row_id)


def test_building_without_the_table_or_reading_without_features_says_what_to_run(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="run `shoal ingest higgs FILE` first"):
        build(catalog)
    with pytest.raises(CatalogError, match="run `shoal features higgs` first"):
        HiggsFeatures(catalog)

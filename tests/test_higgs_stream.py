"""The streaming HIGGS loader: every row once per epoch, the stored bytes, seeded orders, bounded rows held."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from shoal.catalog import Catalog
from shoal.errors import CatalogError
from shoal.features.higgs import DATASET, SCHEMA, HiggsFeatures
from shoal.features.higgs_stream import HiggsStream
from shoal.lineage import InputVersion, Provenance
from shoal.splits import SplitRecord
from shoal.stats import RunningStats

# One data file per entry: the splits of its rows. A train-only file, files that mix splits, a test-only one.
FILES = (("train",) * 700, ("train",) * 500 + ("valid",) * 100, ("test",) * 300, ("train", "valid", "test") * 150,
         ("train",) * 650)


def _file(splits: tuple[str, ...], start: int, rng: np.random.Generator) -> pa.Table:
    x = rng.standard_normal((len(splits), 28)).astype(np.float32)
    values = pa.ListArray.from_arrays(pa.array(np.arange(0, x.size + 1, 28, dtype=np.int32)), pa.array(x.reshape(-1)))
    return pa.Table.from_arrays([pa.array(np.arange(start, start + len(splits))),
                                 pa.array(rng.integers(0, 2, len(splits)).astype(np.int8)), pa.array(splits), values],
                                schema=SCHEMA)


@pytest.fixture
def features(catalog: Catalog) -> HiggsFeatures:
    """A `higgs_features` version of five data files (one commit each), written in the table's own layout."""
    rng, start = np.random.default_rng(0), 0
    codes = np.concatenate([[("train", "valid", "test").index(s) for s in splits] for splits in FILES])
    record = SplitRecord.of("random", {"seed": 0}, codes)
    for splits in FILES:
        table = _file(splits, start, rng)
        stats = RunningStats.from_values(np.asarray(table.column("x").combine_chunks().values).reshape(-1, 28), axis=0)
        catalog.write_table(DATASET, table, mode="append", provenance=Provenance(
            inputs=(InputVersion("higgs", "table", 0),), parameters={"statistics": stats.to_dict(),
                                                                      "split": record.to_dict()}, message="a test file"))
        start += len(splits)
    return HiggsFeatures(catalog)


def _rows(x: np.ndarray, label: np.ndarray) -> list[bytes]:
    """Each row's 28 values and label as bytes, sorted: equal lists are the same rows, each as often."""
    return sorted(row.tobytes() + bytes([int(value)]) for row, value in zip(x, label, strict=True))


def _epoch(batches: object) -> tuple[np.ndarray, np.ndarray]:
    found = list(batches)
    return (np.concatenate([b["x"].numpy() for b in found]), np.concatenate([b["label"].numpy() for b in found]))


def _same(ours: list[dict[str, torch.Tensor]], theirs: list[dict[str, torch.Tensor]]) -> bool:
    return len(ours) == len(theirs) and all(torch.equal(a["x"], b["x"]) and torch.equal(a["label"], b["label"])
                                            for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_an_epoch_gives_every_row_of_the_split_once_with_the_bytes_of_the_in_memory_arrays(
        features: HiggsFeatures, split: str, shuffle: bool) -> None:
    stream = features.stream(split, batch_size=64, shuffle=shuffle, seed=1, buffer_rows=200)
    stream.read_rows = 100
    arrays = features.arrays(split)
    for _ in range(2):  # a second epoch too
        x, label = _epoch(stream)
        assert x.dtype == np.float32 and label.dtype == np.float32 and x.shape == arrays.x.shape
        assert _rows(x, label) == _rows(arrays.x, arrays.label)


def test_row_groups_without_rows_of_the_split_are_never_read(features: HiggsFeatures) -> None:
    units = features.stream("test", batch_size=8).units
    assert sorted(unit.mixed for unit in units) == [False, True]  # the test-only file and the mixed one
    assert len(features.stream("train", batch_size=8).units) == 4


def test_unshuffled_the_stream_gives_the_in_memory_loaders_batches(features: HiggsFeatures) -> None:
    rows = features.rows("train")
    every = torch.arange(len(rows))
    expected = [rows.gather(every[i : i + 64]) for i in range(0, len(rows), 64)]
    assert _same(list(features.stream("train", batch_size=64)), expected)


def test_two_workers_share_the_row_groups_and_give_every_row_once(features: HiggsFeatures) -> None:
    stream = features.stream("train", batch_size=50, shuffle=True, seed=2, buffer_rows=300)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2, persistent_workers=True)
    arrays = features.arrays("train")
    first, second = _epoch(loader), _epoch(loader)
    assert _rows(*first) == _rows(*second) == _rows(arrays.x, arrays.label)
    assert not np.array_equal(first[0], second[0])  # each epoch draws another order in the workers
    shares = [stream.order(0, worker, 2) for worker in (0, 1)]
    assert sorted(shares[0] + shares[1], key=stream.units.index) == list(stream.units) and all(shares)


def test_the_same_seed_gives_the_same_batches_and_another_seed_or_epoch_another_order(features: HiggsFeatures) -> None:
    def epochs(seed: int) -> list[list[dict[str, torch.Tensor]]]:
        stream = features.stream("train", batch_size=64, shuffle=True, seed=seed, buffer_rows=200)
        return [list(stream), list(stream)]

    first, again, other = epochs(3), epochs(3), epochs(4)
    assert _same(first[0], again[0]) and _same(first[1], again[1])
    assert not _same(first[0], first[1]) and not _same(first[0], other[0])
    x = _epoch(first[0])[0]
    assert not np.array_equal(x, features.arrays("train").x)  # shuffled: not the stored order


def test_the_rows_held_at_once_stay_within_a_bound_that_the_split_size_is_no_part_of(features: HiggsFeatures) -> None:
    for shuffle in (False, True):
        stream = features.stream("train", batch_size=32, shuffle=shuffle, buffer_rows=200)
        stream.read_rows = 64
        rows = sum(len(batch["x"]) for batch in stream)
        assert stream.bound < rows / 2  # the split is never held
        assert stream.peak_rows <= stream.bound
        assert stream.peak_rows > (200 if shuffle else 32)  # the accounting counts the buffer and the blocks


def test_drop_last_drops_only_the_last_shorter_batch(features: HiggsFeatures) -> None:
    sizes = [len(batch["x"]) for batch in features.stream("train", batch_size=64, shuffle=True, drop_last=True)]
    assert set(sizes) == {64} and len(sizes) == features.split.counts["train"] // 64


def test_the_dataset_pickles_as_plain_data_and_reads_the_files_again(features: HiggsFeatures) -> None:
    stream = features.stream("valid", batch_size=16, shuffle=True, seed=5, buffer_rows=50)
    buffer = io.BytesIO()
    pickle.Pickler(buffer).dump(stream)
    assert len(buffer.getvalue()) < 4096  # the table's location, its row groups and the settings: no rows
    assert _same(list(pickle.loads(buffer.getvalue())), list(stream))


def test_bad_sizes_and_splits_are_refused_in_one_line(features: HiggsFeatures) -> None:
    with pytest.raises(CatalogError, match="batch_size, buffer_rows and read_rows must be at least 1"):
        features.stream("train", batch_size=0)
    with pytest.raises(CatalogError, match="split must be one of train, valid, test"):
        features.stream("holdout", batch_size=8)
    assert isinstance(features.stream("train", batch_size=8), HiggsStream)

"""`shoal.open_features`: any feature version of any task, for training elsewhere, without a pipeline."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import shoal
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, higgs, oni, speech_commands
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.errors import CatalogError
from shoal.progress import NULL
from shoal.stats import RunningStats
from shoal.contract import get_task

DATA = Path(__file__).parent / "data"
SETTINGS = {"enso": {"valid_start": "1990-01", "test_start": "1991-01", "coarsen": 10}, "speech": {}, "higgs": {}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One home with the features of all three tasks, built from tiny real-format inputs."""
    root = tmp_path_factory.mktemp("consumers")
    catalog = Catalog(root / "home")
    write_sample(root / "sst", start="1988-01", end="1991-06")
    for source, paths in ((cobe_sst, [root / "sst"]), (oni, [oni.SAMPLE]), (speech_commands, [DATA / "speech_commands" / "v0.01"]),
                          (higgs, [DATA / "higgs" / "higgs_real_test.csv"])):
        assert source.ingest(catalog, paths).exit_code == 0
    for name, settings in SETTINGS.items():
        task = get_task(name)
        task.build_features(catalog, task.parse(settings), NULL)
    return catalog.home


@pytest.mark.parametrize("task", sorted(SETTINGS))
def test_every_task_opens_its_splits_as_arrays_datasets_and_seeded_loaders_with_its_statistics(home: str,
                                                                                              task: str) -> None:
    features = shoal.open_features(task, home=home)
    assert features.task == task and features.splits == ("train", "valid", "test") and features.version == 0
    assert features.statistics and all(isinstance(s, RunningStats) for s in features.statistics.values())
    assert features.split.rule == {"enso": "by_time", "speech": "official", "higgs": "official"}[task]
    for split in features.splits:
        arrays = features.arrays(split)
        assert all(len(a) == len(next(iter(arrays.values()))) > 0 for a in arrays.values())
        assert features.split.counts[split] == len(next(iter(arrays.values())))  # the version reports its split
        dataset = features.torch_dataset(split)
        assert len(dataset) > 0
        batch = next(iter(features.loader(split, batch_size=2)))
        assert "x" in batch and len(batch["x"]) == min(2, len(dataset))  # and the targets: label, or grid + index + phase
    first, again = (next(iter(features.loader("train", batch_size=4, shuffle=True, seed=3))) for _ in range(2))
    assert torch.equal(first["x"], again["x"])


def test_higgs_arrays_and_dataset_are_views_of_one_arrow_buffer_standardized_with_train_statistics(home: str) -> None:
    features = shoal.open_features("higgs", home=home)
    arrays, dataset = features.arrays("train"), features.torch_dataset("train")
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape[1] == 28 and not arrays["x"].flags.owndata
    assert np.shares_memory(dataset.x.numpy(), arrays["x"])
    stats = features.statistics["features"]
    lineage = Catalog(home).lineage("higgs_features").parameters["statistics"]
    assert RunningStats.from_dict(lineage).mean.tolist() == stats.mean.tolist()
    np.testing.assert_allclose(arrays["x"].mean(axis=0), 0, atol=1e-4)  # standardized on these very rows


def test_a_version_and_a_split_that_do_not_exist_are_refused(home: str) -> None:
    with pytest.raises(CatalogError, match="split must be one of train, valid, test"):
        shoal.open_features("higgs", home=home).arrays("holdout")
    with pytest.raises(CatalogError):
        shoal.open_features("enso", version=7, home=home)


def _same_batches(ours: list[dict[str, torch.Tensor]], theirs: list[dict[str, torch.Tensor]]) -> bool:
    return len(ours) == len(theirs) and all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                                            for a, b in zip(ours, theirs, strict=True))


class _Crossing(pickle.Pickler):
    """A pickler that records every tensor and array that crosses the pickle boundary."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.tensors, self.array_bytes = 0, 0

    def persistent_id(self, obj: object) -> None:
        self.tensors += isinstance(obj, torch.Tensor)
        self.array_bytes += obj.nbytes if isinstance(obj, np.ndarray) else 0


@pytest.mark.parametrize("task", sorted(SETTINGS))
def test_the_loader_gathers_the_batches_of_an_item_by_item_dataloader_with_the_same_seed(home: str,
                                                                                               task: str) -> None:
    features = shoal.open_features(task, home=home)
    dataset = features.torch_dataset("train")
    for shuffle, drop_last in ((False, False), (True, False), (True, True)):
        loader = features.loader("train", batch_size=3, shuffle=shuffle, seed=5, drop_last=drop_last)
        items = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=shuffle, drop_last=drop_last,
                                            generator=torch.Generator().manual_seed(5))
        assert len(loader) == len(items) and _same_batches(list(loader), list(items))


@pytest.mark.parametrize("task", ["enso", "higgs"])  # the speech fixture's 3 training clips make too few orders
def test_each_epoch_of_a_shuffled_loader_is_a_new_permutation_and_the_sequence_repeats_for_a_seed(home: str,
                                                                                                   task: str) -> None:
    features = shoal.open_features(task, home=home)
    loader = features.loader("train", batch_size=3, shuffle=True, seed=5)
    first, second = list(loader), list(loader)
    assert not _same_batches(first, second)
    again = features.loader("train", batch_size=3, shuffle=True, seed=5)
    assert _same_batches(list(again), first) and _same_batches(list(again), second)


@pytest.mark.parametrize("task", ["enso", "higgs"])
def test_without_workers_the_loader_gives_every_epoch_of_torchs_own_iterator(home: str, task: str) -> None:
    features = shoal.open_features(task, home=home)
    ours = features.loader("train", batch_size=3, shuffle=True, seed=5)
    torchs = features.loader("train", batch_size=3, shuffle=True, seed=5)
    assert isinstance(ours, torch.utils.data.DataLoader)
    for _ in range(3):
        plain = list(ours)
        assert _same_batches(plain, list(torch.utils.data.DataLoader.__iter__(torchs)))


@pytest.mark.parametrize("task", sorted(SETTINGS))
def test_a_dataset_pickles_as_a_reference_to_its_feature_version_and_reopens_the_store(home: str, task: str) -> None:
    dataset = shoal.open_features(task, home=home).torch_dataset("train")
    buffer = io.BytesIO()
    crossing = _Crossing(buffer)
    crossing.dump(dataset)
    assert crossing.tensors == 0  # no data crosses: only the home, the version and at most the item indices
    assert crossing.array_bytes <= 8 * len(dataset)
    again = pickle.loads(buffer.getvalue())
    every = torch.arange(len(dataset))
    assert _same_batches([again.gather(every)], [dataset.gather(every)])


@pytest.mark.parametrize("task", sorted(SETTINGS))
def test_two_workers_give_the_batches_of_one_process_forked_or_spawned(home: str, task: str) -> None:
    features = shoal.open_features(task, home=home)
    alone = list(features.loader("train", batch_size=2, shuffle=True, seed=1))
    forked = features.loader("train", batch_size=2, shuffle=True, seed=1, num_workers=2)
    assert len(alone) >= 2 and _same_batches(list(forked), alone)
    # A spawned worker (macOS' and Windows' default) gets the dataset through pickle and opens the store itself.
    fresh = features.loader("train", batch_size=2, shuffle=True, seed=1)
    spawned = torch.utils.data.DataLoader(fresh.dataset, batch_size=None, sampler=fresh.sampler, num_workers=2,
                                          multiprocessing_context="spawn", generator=fresh.generator)
    assert _same_batches(list(spawned), alone)


def test_a_streaming_loader_gives_the_higgs_split_with_workers_and_other_tasks_refuse_it(home: str) -> None:
    features = shoal.open_features("higgs", home=home)
    expected = sorted(row.tobytes() for row in features.arrays("train")["x"])
    for workers in (0, 2):
        loader = features.loader("train", batch_size=2, shuffle=True, seed=1, num_workers=workers, stream=True,
                                 shuffle_buffer=3)
        assert sorted(row.tobytes() for batch in loader for row in batch["x"].numpy()) == expected
    with pytest.raises(CatalogError, match="task 'enso' has no streaming loader"):
        shoal.open_features("enso", home=home).loader("train", stream=True)

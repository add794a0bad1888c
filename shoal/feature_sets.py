"""A feature version opened for consumers (`shoal.open_features`): arrays, torch Datasets and loaders.

Torch is imported only when a loader is built (`shoal.loaders`), so opening a version's arrays
costs no torch import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal.errors import CatalogError

if TYPE_CHECKING:
    from shoal.splits import SplitRecord


@dataclass(frozen=True)
class FeatureSet:
    """A feature version opened for training elsewhere (`shoal.open_features`).

    Attributes:
        task, dataset, version: whose features, the feature dataset, and its version.
        statistics: what the features were normalized with (fitted on train only), by name.
        split: how the version was split (`shoal.splits.SplitRecord`: rule, parameters, items per split).
        splits: the split names.
        arrays_of: split -> its arrays, by name (views of the stored data where it can).
        dataset_of: split -> a torch Dataset of its items: {"x": ..., and the targets ("label"; for
            ENSO "grid", "index", "phase")}.
        stream_of: split and the loader's keywords (batch_size, shuffle, seed, drop_last, buffer_rows) ->
            a torch IterableDataset of whole batches read from the stored files, for `loader(stream=True)`;
            None where the task has no streaming loader.
    """

    task: str
    dataset: str
    version: int
    statistics: Mapping[str, Any]
    split: SplitRecord
    splits: tuple[str, ...]
    arrays_of: Callable[[str], Mapping[str, Any]]
    dataset_of: Callable[[str], Any]
    stream_of: Callable[..., Any] | None = None

    def _check(self, split: str) -> str:
        if split not in self.splits:
            raise CatalogError(f"split must be one of {', '.join(self.splits)}, got {split!r}")
        return split

    def arrays(self, split: str) -> Mapping[str, Any]:
        """The split's arrays by name (numpy)."""
        return self.arrays_of(self._check(split))

    def torch_dataset(self, split: str) -> Any:
        """The split as a torch Dataset."""
        return self.dataset_of(self._check(split))

    def loader(self, split: str, *, batch_size: int = 256, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
               pin_memory: bool = False, drop_last: bool = False, stream: bool = False,
               shuffle_buffer: int | None = None) -> Any:
        """A torch DataLoader over the split, built a whole batch at a time.

        The batches are those of `DataLoader(torch_dataset(split), batch_size, shuffle, generator)`
        — the same items in the first epoch's seeded order, collated the same way — but each is
        gathered in one indexing operation (the dataset's `gather`), not item by item in Python.

        Args:
            split: train, valid or test.
            batch_size: items per batch; the last batch is shorter unless `drop_last`.
            shuffle: a new seeded permutation each epoch (the order repeats for the same seed).
            seed: the shuffle's seed.
            num_workers: worker processes; each opens the store itself (the dataset pickles as
                a reference to its feature version, never as its data) and keeps it open
                across epochs.
            pin_memory: batches in page-locked memory, for faster copies to a GPU (ignored
                where torch finds no accelerator).
            drop_last: drop the last, shorter batch.
            stream: read the split from the stored files while iterating, so memory holds a bounded
                number of rows, not the split (HIGGS only): the files' row groups in a seeded order per
                epoch, rows through a shuffle buffer — not a global permutation; with workers, each
                reads its share of the row groups and its last batch may be shorter.
            shuffle_buffer: rows of the streaming loader's shuffle buffer (default: the task's).
        """
        from shoal.loaders import loader

        return loader(self, self._check(split), batch_size=batch_size, shuffle=shuffle, seed=seed,
                      num_workers=num_workers, pin_memory=pin_memory, drop_last=drop_last, stream=stream,
                      shuffle_buffer=shuffle_buffer)


def take(values: Any, indices: Any) -> Any:
    """`values[indices]` along the first dimension (torch tensors; `indices` int64 of any shape).

    On the CPU through numpy's `take`, which copies whole rows: 4-7x faster here than torch's
    advanced indexing of the same rows (1,024 HIGGS rows: 38 against 250 us; 32 ENSO windows:
    5 against 21 ms), and the same values.
    """
    if values.device.type != "cpu":
        return values[indices]
    import numpy as np
    import torch

    return torch.from_numpy(np.take(values.numpy(), indices.numpy(), axis=0))

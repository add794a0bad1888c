"""The torch loaders of a feature version: `FeatureSet.loader` builds them here.

A batch is gathered in one indexing operation (the dataset's `gather` over a `BatchOrder`
of index tensors), never item by item. Without workers and pinning, `Loader` runs the steps
of torch's single-process iterator in a plain generator: the same batches in the same
seeded order, without its ~0.1 ms a batch of bookkeeping (at a batch of 1,024 HIGGS rows
that was about as long as copying the rows: BENCHMARKS.md, loaders).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from shoal.errors import CatalogError

if TYPE_CHECKING:
    from shoal.feature_sets import FeatureSet


def loader(features: FeatureSet, split: str, *, batch_size: int, shuffle: bool, seed: int, num_workers: int,
           pin_memory: bool, drop_last: bool, stream: bool, shuffle_buffer: int | None) -> Loader:
    """The loader `FeatureSet.loader` documents, over a checked `split`."""
    # No accelerator: torch would warn on every iteration that pinning does nothing.
    pin = pin_memory and torch.accelerator.is_available()
    if stream:
        if features.stream_of is None:
            raise CatalogError(f"task {features.task!r} has no streaming loader; call loader(...) without "
                               "stream=True (its splits are read into memory)")
        batches = features.stream_of(split, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                                     buffer_rows=shuffle_buffer)
        return Loader(batches, batch_size=None, num_workers=num_workers, pin_memory=pin, collate_fn=as_is,
                      persistent_workers=num_workers > 0)
    generator = torch.Generator().manual_seed(seed)
    dataset = features.torch_dataset(split)
    return Loader(WholeBatches(dataset), batch_size=None, num_workers=num_workers, pin_memory=pin,
                  sampler=BatchOrder(len(dataset), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                     generator=generator),
                  collate_fn=as_is, generator=generator, persistent_workers=num_workers > 0)


class Loader(DataLoader):
    """torch's DataLoader; without workers or pinning, iterated by a plain generator (see the module docstring)."""

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers > 0 or self.pin_memory:
            return super().__iter__()
        # torch's iterator draws a base seed from the generator before the first order: so do we, so that the
        # orders of every epoch are the ones a DataLoader gives.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return self._in_process()

    def _in_process(self) -> Iterator[Any]:
        if isinstance(self.dataset, IterableDataset):
            batches = iter(self.dataset)
        else:
            batches = (self.dataset[indices] for indices in self.sampler)
        for batch in batches:
            yield self.collate_fn(batch)


def as_is(batch: Any) -> Any:
    """A gathered batch is already tensors: torch's `default_convert` would only walk it again (~30 us a batch)."""
    return batch


class BatchOrder:
    """The index batches (int64 tensors) of one epoch: `DataLoader(shuffle=...)`'s order, cut into batches.

    With `shuffle`, each epoch is `torch.randperm(items, generator=generator)`, as torch's
    `RandomSampler` draws it: a seeded loader's first epoch is an item-by-item one's. (torch
    then draws an unused permutation at each epoch's end, so later epochs differ from its own,
    while they still repeat for a seed.)
    """

    def __init__(self, items: int, *, batch_size: int, shuffle: bool, drop_last: bool, generator: Any) -> None:
        if batch_size < 1:
            raise CatalogError(f"batch_size must be at least 1, got {batch_size}")
        self.items, self.batch_size, self.shuffle, self.drop_last = items, batch_size, shuffle, drop_last
        self.generator = generator

    def __len__(self) -> int:
        whole, rest = divmod(self.items, self.batch_size)
        return whole + (rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[Any]:
        order = torch.randperm(self.items, generator=self.generator) if self.shuffle else torch.arange(self.items)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]


class WholeBatches:
    """A map-style dataset whose items are whole batches: `batches[indices]` is `dataset.gather(indices)`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Any) -> Mapping[str, Any]:
        return self.dataset.gather(indices)

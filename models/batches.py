"""Batches on the device for the train, evaluate and predict loops: the device, the order, staging.

`batches` gives the same items in the same order whichever way they come: through a
DataLoader, or gathered on the device from a dataset staged there once (one that offers
`to(device)` and `gather(indices)`), or as this rank's share of each batch under DDP
(`shoal.models.distributed`). A shuffled order is the permutation a shuffling DataLoader draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from shoal.errors import TrainingError


def pick_device(preference: str | torch.device = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; otherwise the device named, which must be available."""
    if str(preference) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as error:
        raise TrainingError(f"unknown device {preference!r}: expected auto, cpu, cuda, cuda:N or mps") from error
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    present = available.get(device.type, False)
    if present and device.type == "cuda" and device.index is not None:
        present = device.index < torch.cuda.device_count()
    if not present:
        raise TrainingError(f"device {preference!r} is not available on this machine; use --device auto or cpu")
    return device


def accumulator(device: torch.device) -> torch.Tensor:
    """A zero on the device to sum losses into without a sync per step (MPS has no float64)."""
    return torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items() if isinstance(value, torch.Tensor)}


def stageable(data: Dataset) -> bool:
    return callable(getattr(data, "to", None)) and callable(getattr(data, "gather", None))


def order_of(size: int, generator: torch.Generator | None) -> torch.Tensor:
    """The items' order: as stored without a generator, else the permutation a shuffling DataLoader draws."""
    if generator is None:
        return torch.arange(size)
    # A DataLoader draws its base seed from the generator before its sampler's permutation:
    # draw it too, so that every path shuffles identically.
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(size, generator=generator)


def batches(
    data: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    staged: Any = None,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches on the device, shuffled by `generator` when one is given, else in order.

    From `staged` (the dataset already moved to the device) by gathering, else through a
    DataLoader. Both see the same items in the same order. With `shard` = (rank, N), N > 1:
    this rank's batch_size / N items of each of those batches.
    """
    rank, world_size = shard
    if staged is None and world_size == 1:
        loader = DataLoader(
            data, batch_size=batch_size, shuffle=generator is not None, generator=generator, drop_last=drop_last,
            num_workers=num_workers, pin_memory=device.type == "cuda",
        )
        return (to_device(batch, device) for batch in loader)
    size = len(data)  # type: ignore[arg-type]
    order = order_of(size, generator)
    stop = size - size % batch_size if drop_last else size
    if world_size > 1:
        # Every N-th item from the rank's own: the k-th batches of the N ranks together are
        # exactly the single process's k-th batch.
        order, batch_size = order[:stop][rank::world_size], batch_size // world_size
        stop = len(order)
        if staged is None:
            loader = DataLoader(data, batch_size=batch_size, sampler=order.tolist(), generator=generator,
                                num_workers=num_workers, pin_memory=device.type == "cuda")
            return (to_device(batch, device) for batch in loader)
    order = order.to(device)
    return (staged.gather(order[i : i + batch_size]) for i in range(0, stop, batch_size))


def stage(data: Dataset, device: torch.device, enabled: bool) -> Any:
    return data.to(device) if enabled and stageable(data) else None  # type: ignore[attr-defined]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool, dtype: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=getattr(torch, dtype), enabled=amp and device.type == "cuda")

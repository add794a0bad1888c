"""A trained model over a dataset: its mean loss (`evaluate`) and its outputs (`predict`), in eval mode."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from shoal.errors import TrainingError
from shoal.models.batches import accumulator, autocast, batches, pick_device, stage

LossFn = Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor]


def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    loss_fn: LossFn,
    batch_size: int,
    device: str | torch.device = "auto",
    amp: bool = False,
    amp_dtype: str = "float16",
    num_workers: int = 0,
    staged: Any = None,
) -> float:
    """The mean loss per sample of `model` over `data` (eval mode, no gradients).

    Args:
        model: the model; moved to `device`, its train/eval mode restored afterwards.
        data: items as in the module contract.
        loss_fn: `loss_fn(output, batch) -> scalar`, a mean over the batch.
        batch_size: samples per batch.
        device: "auto", a device name or a `torch.device`.
        amp: autocast (cuda only) with `amp_dtype`.
        amp_dtype: "float16" or "bfloat16".
        num_workers: DataLoader worker processes.
        staged: `data` already moved to the device (see the module docstring), or None.

    Returns:
        The sample-weighted mean of the batch losses.
    """
    total, count = loss_sum(model, data, loss_fn=loss_fn, batch_size=batch_size, device=pick_device(device), amp=amp,
                             amp_dtype=amp_dtype, num_workers=num_workers, staged=staged)
    if count == 0:
        raise TrainingError("evaluate: the dataset is empty; nothing to compute a loss on")
    return float(total) / count


def loss_sum(
    model: nn.Module, data: Dataset, *, loss_fn: LossFn, batch_size: int, device: torch.device, amp: bool, amp_dtype: str,
    num_workers: int, staged: Any, shard: tuple[int, int] = (0, 1),
) -> tuple[torch.Tensor, int]:
    """The sum of the per-sample losses (on the device) and the sample count, over this rank's shard of `data`."""
    mode = model.training
    model.to(device).eval()
    total, count = accumulator(device), 0
    try:
        with torch.no_grad(), autocast(device, amp, amp_dtype):
            for batch in batches(data, batch_size=batch_size, device=device, num_workers=num_workers, staged=staged,
                                  shard=shard):
                size = len(batch["x"])
                total += loss_fn(model(batch["x"]), batch).detach().to(total.dtype) * size
                count += size
    finally:
        model.train(mode)
    return total, count


def _concat(parts: list[Any]) -> Any:
    """Concatenate per-batch outputs along dim 0, keeping their structure."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts) if first.dim() > 0 else torch.stack(parts)
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # a NamedTuple
        return type(first)(*(_concat(list(column)) for column in zip(*parts, strict=True)))
    if isinstance(first, tuple | list):
        return type(first)(_concat(list(column)) for column in zip(*parts, strict=True))
    if isinstance(first, Mapping):
        return {key: _concat([part[key] for part in parts]) for key in first}
    raise TrainingError(f"predict: cannot concatenate model outputs of type {type(first).__name__}")


def _to_cpu(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu() if output.is_floating_point() else output.detach().cpu()
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return type(output)(*(_to_cpu(item) for item in output))
    if isinstance(output, tuple | list):
        return type(output)(_to_cpu(item) for item in output)
    if isinstance(output, Mapping):
        return {key: _to_cpu(value) for key, value in output.items()}
    return output


def predict(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int,
    device: str | torch.device = "auto",
    num_workers: int = 0,
) -> Any:
    """The model's outputs for every item of `data`, in order, on the CPU.

    Args:
        model: the model; moved to `device`, its train/eval mode restored afterwards.
        data: items as in the module contract (only "x" is used).
        batch_size: samples per batch.
        device: "auto", a device name or a `torch.device`.
        num_workers: DataLoader worker processes.

    Returns:
        The outputs concatenated along dim 0, in the model's own structure: a tensor, or a
        NamedTuple / tuple / dict of tensors (e.g. `EnsoOutput` with grid (N, 1, H, W)).
        Floating-point outputs come back as float32.
    """
    chosen = pick_device(device)
    mode = model.training
    model.to(chosen).eval()
    parts = []
    try:
        with torch.no_grad():
            for batch in batches(data, batch_size=batch_size, device=chosen, num_workers=num_workers,
                                  staged=stage(data, chosen, True)):
                parts.append(_to_cpu(model(batch["x"])))
    finally:
        model.train(mode)
    if not parts:
        raise TrainingError("predict: the dataset is empty")
    return _concat(parts)

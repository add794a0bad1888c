"""One generic train / evaluate loop for every model: seeded, checkpointed, resumable.

Device auto (cuda > mps > cpu), AMP on cuda, a checkpoint each epoch (`last.pt`, written
atomically) that a rerun resumes from, and the best epoch by validation loss (`best.pt`).
The data loader's shuffle is seeded per epoch, so a resumed run sees the same order as an
uninterrupted one and ends with bit-identical weights on the CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

LossFn = Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over the training data.
        batch_size: samples per step.
        lr: Adam's learning rate.
        seed: seeds the weights' initialization (set before the model is built by the
            caller, see `seeded`) and the shuffle of every epoch.
        device: "auto" (cuda > mps > cpu), "cpu", "cuda" or "mps".
        amp: mixed precision, used on cuda only.
        max_batches_per_epoch: stop an epoch early (demos and benchmarks).
    """

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    max_batches_per_epoch: int | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    best_epoch: int
    best_val_loss: float
    history: tuple[tuple[float, float], ...]  # (train loss, validation loss) per epoch
    best_checkpoint: Path
    device: str
    seconds: float
    windows_per_second: float


def pick_device(preference: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; otherwise the device named."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with its initial weights drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _save(state: dict[str, Any], path: Path) -> None:
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    os.replace(partial, path)  # a crash never leaves a half-written checkpoint


def _epoch_loss(model: nn.Module, loader: DataLoader, loss_fn: LossFn, device: torch.device, amp: bool) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, enabled=amp):
        for batch in loader:
            batch = _to(batch, device)
            size = len(next(iter(batch.values())))
            total += float(loss_fn(model(batch["x"]), batch)) * size
            count += size
    return total / max(count, 1)


def train(
    model: nn.Module,
    *,
    loss_fn: LossFn,
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig,
    checkpoint_dir: Path,
    resume: bool = True,
) -> TrainResult:
    """Train `model` with Adam; a checkpoint each epoch; keep the best by validation loss.

    Batches are dicts of tensors with the input under "x"; `loss_fn(output, batch)` gets the
    batch on the device. With `resume`, a `last.pt` in `checkpoint_dir` is continued.
    """
    device = pick_device(config.device)
    amp = config.amp and device.type == "cuda"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last, best = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history: list[tuple[float, float]] = []
    best_epoch, best_loss, start = -1, float("inf"), 0
    if resume and last.exists():
        state = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history = [tuple(epoch) for epoch in state["history"]]
        best_epoch, best_loss, start = state["best_epoch"], state["best_val_loss"], state["epoch"] + 1
    validation = DataLoader(val_data, batch_size=config.batch_size)
    began, seen = time.perf_counter(), 0
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for epoch in range(start, config.epochs):
            order = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, generator=order, drop_last=len(train_data) > config.batch_size)
            model.train()
            total, count = 0.0, 0
            for step, batch in enumerate(loader):
                if config.max_batches_per_epoch is not None and step >= config.max_batches_per_epoch:
                    break
                batch = _to(batch, device)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, enabled=amp):
                    loss = loss_fn(model(batch["x"]), batch)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                size = len(batch["x"])
                total, count, seen = total + loss.item() * size, count + size, seen + size
            val_loss = _epoch_loss(model, validation, loss_fn, device, amp)
            history.append((total / max(count, 1), val_loss))
            if val_loss < best_loss:
                best_epoch, best_loss = epoch, val_loss
                _save({"model": model.state_dict(), "epoch": epoch, "val_loss": val_loss}, best)
            _save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "epoch": epoch, "history": history, "best_epoch": best_epoch, "best_val_loss": best_loss,
                 "config": asdict(config)},
                last,
            )
    finally:
        torch.use_deterministic_algorithms(deterministic)
    seconds = time.perf_counter() - began
    return TrainResult(
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        history=tuple(history),
        best_checkpoint=best,
        device=str(device),
        seconds=seconds,
        windows_per_second=seen / seconds if seconds > 0 else 0.0,
    )

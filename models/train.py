"""One generic train loop for every model: seeded, checkpointed, resumable (evaluate and predict: `inference`).

Contract: a dataset item is a dict of tensors with the model's input under "x"; batches are
the default-collated dicts, moved to the device (non-tensor values are dropped), and
`loss_fn(model(batch["x"]), batch)` returns a scalar tensor.

Device auto (cuda > mps > cpu), AMP on cuda (autocast float16 + GradScaler, or bfloat16
without a scaler), a checkpoint
each epoch (`last.pt`: model, optimizer, scaler, epoch, history, best so far; written
atomically) that a rerun resumes from, and the best epoch by validation loss (`best.pt`).
Everything random in an epoch (the shuffle, dropout) is seeded from (seed, epoch), so a
resumed run sees what an uninterrupted one saw and, on the CPU, ends with bit-identical
weights. Checkpoints hold tensors and plain types only: `torch.load(path, weights_only=True)`.

Epochs are numbered from 1 wherever a person reads one (the bar, the epoch lines, the registry's
`best_epoch_number`); `TrainResult.best_epoch` and the checkpoints' `epoch` and `best_epoch` are
the loop's index, from 0, which resuming counts with.

Staging: a dataset that offers `to(device)` and `gather(indices) -> batch` (e.g. the ENSO
windows, whose items are views into one series) is moved to the device once, and each batch
is gathered there from a shuffled index tensor, with the same permutation a DataLoader would
draw: no per-batch host copies, no collation, and on the CPU the same weights as the
DataLoader path. No step synchronizes the host with the device: losses are summed on the
device and read once per epoch.

Distributed (DDP, see `shoal.models.distributed`): in an initialized process group of N ranks,
each step's batch is the single process's batch of the same step split N ways (batch_size / N
per rank, gradients averaged), validation is sharded and its sums all-reduced, so every rank
keeps the same best epoch and the same weights; rank 0 alone writes the checkpoints and reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from shoal.errors import TrainingError
from shoal.files import atomic_write
from shoal.models import distributed
from shoal.models.batches import accumulator, autocast, batches, pick_device, stage, sync
from shoal.models.inference import LossFn, loss_sum
from shoal.progress import NULL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shoal.progress import Reporter

# A resumed run must draw the same batches as an uninterrupted one: these must not change.
RESUME_KEYS = ("seed", "batch_size", "lr", "max_batches_per_epoch", "optimizer")
PRECISE_BN_SAMPLES = 2_048  # training samples whose batch statistics become the running ones (`_precise_batch_norm`)
Optimizer = Literal["adam", "adadelta"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over the training data (a resumed run trains up to this many in all).
        batch_size: samples per step; a last partial batch is dropped (BatchNorm cannot train
            on one sample, and equal batches weigh every sample alike).
        lr: the optimizer's learning rate.
        optimizer: "adam", or "adadelta" (rho 0.95, eps 1e-7: Keras' defaults, the speech analysis').
        seed: seeds the shuffle and the randomness of every epoch. The initial weights are
            the caller's: build the model under `seeded(seed, ...)`.
        device: "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N" or "mps".
        amp: mixed precision, used on cuda only.
        amp_dtype: "float16" (autocast + GradScaler) or "bfloat16" (autocast, no scaler: no
            per-step check for inf gradients, hence no host synchronization).
        num_workers: DataLoader worker processes.
        max_batches_per_epoch: stop each training epoch after this many batches (demos and
            benchmarks); validation always covers the whole validation set.
        deterministic: `torch.use_deterministic_algorithms(True, warn_only=True)` while
            training. CPU runs are then bit-identical; on cuda also set
            CUBLAS_WORKSPACE_CONFIG=:4096:8 before the process starts.
        stage: move a stageable dataset (see the module docstring) to the device once.
        compile: run the model through `torch.compile` (faster steps on a GPU after a
            compilation of tens of seconds; the weights are the uncompiled module's).
        patience: stop once this many epochs in a row gave no lower validation loss (early
            stopping; `epochs` stays the most); None trains every epoch.
    """

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    max_batches_per_epoch: int | None = None
    deterministic: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    stage: bool = True
    compile: bool = False
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 0 or not self.lr > 0:
            raise TrainingError(
                f"expected epochs >= 1, batch_size >= 1, lr > 0, num_workers >= 0; got epochs={self.epochs}, "
                f"batch_size={self.batch_size}, lr={self.lr}, num_workers={self.num_workers}"
            )
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"patience must be None or >= 1, got {self.patience}")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            raise TrainingError(f"max_batches_per_epoch must be None or >= 1, got {self.max_batches_per_epoch}")
        if self.optimizer not in ("adam", "adadelta"):
            raise TrainingError(f"optimizer must be adam or adadelta, got {self.optimizer!r}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise TrainingError(f"amp_dtype must be float16 or bfloat16, got {self.amp_dtype!r}")


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        best_epoch: the epoch (0-based) with the lowest validation loss.
        best_val_loss: its validation loss.
        history: (train loss, validation loss) per epoch, resumed epochs included.
        best_checkpoint: `best.pt`: {"model": state dict, "epoch", "val_loss"}.
        device: where this call trained.
        seconds: wall time of this call.
        windows_per_second: training samples per second of training steps in this call
            (validation and checkpoints excluded); 0.0 when no epoch was left to train.
        samples: training samples processed by this call (by all ranks).
        world_size: the processes that trained (1 alone).
    """

    best_epoch: int
    best_val_loss: float
    history: tuple[tuple[float, float], ...]
    best_checkpoint: Path
    device: str
    seconds: float
    windows_per_second: float
    samples: int = 0
    world_size: int = 1


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with its initial weights drawn from `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _epoch_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """Distinct, reproducible seeds per (seed, epoch, stream, rank): stream 0 shuffles, 1 seeds the global RNG.

    Rank 0 gets the single process's seeds; each other rank its own dropout & co., since the
    same masks on every shard would correlate the halves of a batch.
    """
    return (seed * 1_000_003 + 2 * epoch + stream + rank * 2**32) % (2**61 - 1)


def _save(state: Mapping[str, Any], path: Path) -> None:
    """Atomically: a crash never leaves a half-written checkpoint."""
    with atomic_write(path) as f:
        torch.save(dict(state), f)


def _resume(
    path: Path, config: TrainConfig, device: torch.device, model: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler, world_size: int,
) -> dict[str, Any]:
    state = torch.load(path, map_location=device, weights_only=True)
    saved = state.get("config", {})
    changed = [f"{key}: {saved.get(key)!r} -> {getattr(config, key)!r}" for key in RESUME_KEYS if saved.get(key) != getattr(config, key)]
    restart = "start over (resume=False; `shoal train --restart`) or use another checkpoint folder (`--run-id`)"
    if changed:
        raise TrainingError(
            f"{path} was written with other settings ({'; '.join(changed)}), so resuming would not reproduce "
            f"an uninterrupted run; {restart}"
        )
    written = state.get("world_size", 1)
    if written != world_size:
        raise TrainingError(
            f"{path} was written by N={written} process(es) and this run has N={world_size}: its batches would "
            f"split otherwise, so resuming would not reproduce an uninterrupted run; resume with `--nproc {written}` "
            f"(torchrun --nproc-per-node {written}), or {restart}"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise TrainingError(f"{path} does not fit this model ({error}); {restart}") from error
    if state["scaler"]:  # empty when written without AMP; a disabled scaler ignores it anyway
        scaler.load_state_dict(state["scaler"])
    return state


@dataclass
class _Run:
    """What the epochs of one `train` call share: built by `_setup`; history, best and throughput updated each epoch."""

    model: nn.Module
    forward: nn.Module  # `model`, under DDP with several ranks and compiled when asked
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool
    rank: int
    world_size: int
    reporter: Reporter
    last: Path
    best: Path
    staged_train: Any
    staged_val: Any
    drop_last: bool
    steps: int  # training batches per epoch, for the progress bar
    start: int  # the first epoch this call trains (after a resumed checkpoint's)
    history: list[tuple[float, float]]
    best_epoch: int
    best_loss: float
    train_seconds: float = 0.0
    samples: int = 0


def train(
    model: nn.Module,
    *,
    loss_fn: LossFn,
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig,
    checkpoint_dir: Path,
    resume: bool = True,
    reporter: Reporter | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train `model` with Adam or Adadelta; a checkpoint each epoch; keep the best by validation loss.

    Model selection sees `val_data` only; a task's test data never comes here. The model is
    moved to the device and left with the LAST epoch's weights (load `best_checkpoint` for
    the best ones), in the train/eval mode it came in. The global RNG and the
    deterministic-algorithms setting are restored on return. Called on every rank of an
    initialized process group, it trains under DistributedDataParallel (module docstring).

    Args:
        model: the model, already initialized (see `seeded`).
        loss_fn: `loss_fn(output, batch) -> scalar`; the batch is on the device.
        train_data: training items (see the module contract).
        val_data: validation items; picks the best epoch.
        config: epochs, batch size, learning rate, seed, device, ...
        checkpoint_dir: where `last.pt` and `best.pt` go (created when missing).
        resume: continue from `checkpoint_dir/last.pt` when it exists.
        reporter: told of every batch (no synchronization) and every epoch's losses.
        on_epoch: called with (epoch, train loss, validation loss) after each epoch's
            checkpoint; what it raises (a tuner pruning the run) ends the training.

    Returns:
        The best epoch, the history and throughput.

    Raises:
        TrainingError: empty data, an incompatible checkpoint (other settings, another number
            of processes), a batch size the processes cannot split, or a non-finite loss.
    """
    began = time.perf_counter()
    run = _setup(model, train_data=train_data, val_data=val_data, config=config, checkpoint_dir=checkpoint_dir,
                 resume=resume, reporter=reporter)
    with _restored(model, run.device, deterministic=config.deterministic):
        for epoch in range(run.start, config.epochs):
            if config.patience is not None and len(run.history) - 1 - run.best_epoch >= config.patience:
                run.reporter.finish(f"early stop after epoch {epoch}: no lower validation loss in {config.patience} "
                                    f"epochs (the best: epoch {run.best_epoch + 1})")
                break
            train_loss, count, seconds = _epoch(run, epoch, loss_fn=loss_fn, data=train_data, config=config)
            run.reporter.advance(0, status="validating")  # the epoch's last phase, shown on its bar
            _precise_batch_norm(run, data=train_data, config=config)
            val_loss = _validate(run, loss_fn=loss_fn, data=val_data, config=config)
            _checkpoint(run, epoch, train_loss, val_loss, config=config)
            run.reporter.finish(f"epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.4f}, validation loss "
                                f"{val_loss:.4f}{' (best)' if run.best_epoch == epoch else ''}, "
                                f"{count / seconds if seconds > 0 else 0.0:.1f} samples/s")
            if on_epoch is not None:
                on_epoch(epoch, train_loss, val_loss)
    return TrainResult(
        best_epoch=run.best_epoch,
        best_val_loss=run.best_loss,
        history=tuple(run.history),
        best_checkpoint=run.best,
        device=str(run.device),
        seconds=time.perf_counter() - began,
        windows_per_second=run.samples / run.train_seconds if run.train_seconds > 0 else 0.0,
        samples=run.samples,
        world_size=run.world_size,
    )


def _setup(
    model: nn.Module, *, train_data: Dataset, val_data: Dataset, config: TrainConfig, checkpoint_dir: str | Path,
    resume: bool, reporter: Reporter | None,
) -> _Run:
    """Check the data, pick the device, build the optimizer, resume from `last.pt`, wrap and stage."""
    rank, world_size = distributed.world()
    reporter = (reporter or NULL) if rank == 0 else NULL  # rank 0 reports for all ranks
    if len(train_data) == 0 or len(val_data) == 0:  # type: ignore[arg-type]
        raise TrainingError(f"need training and validation samples; got {len(train_data)} and {len(val_data)}")  # type: ignore[arg-type]
    distributed.check_batch(config.batch_size, world_size)
    size = len(train_data)  # type: ignore[arg-type]
    if world_size > 1 and size < config.batch_size:
        raise TrainingError(f"{world_size} processes split whole batches of {config.batch_size}, but there are only "
                            f"{size} training samples; pass a smaller --batch-size (a multiple of {world_size})")
    device = distributed.rank_device(pick_device(config.device), world_size)
    amp = config.amp and device.type == "cuda"
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / "last.pt"
    model.to(device)
    optimizer = (torch.optim.Adadelta(model.parameters(), lr=config.lr, rho=0.95, eps=1e-7)
                 if config.optimizer == "adadelta" else torch.optim.Adam(model.parameters(), lr=config.lr))
    scaler = torch.amp.GradScaler("cuda", enabled=amp and config.amp_dtype == "float16")
    history: list[tuple[float, float]] = []
    best_epoch, best_loss, start = -1, math.inf, 0
    if resume and last.exists():
        state = _resume(last, config, device, model, optimizer, scaler, world_size)
        history = [(float(a), float(b)) for a, b in state["history"]]
        best_epoch, best_loss, start = state["best_epoch"], state["best_val_loss"], state["epoch"] + 1
        reporter.finish(f"resuming {last} after epoch {start}/{config.epochs}")
    forward = distributed.wrap(model, device)  # after the resume: DDP starts every rank from rank 0's weights
    forward = torch.compile(forward) if config.compile else forward
    staged_train, staged_val = stage(train_data, device, config.stage), stage(val_data, device, config.stage)
    drop_last = size > config.batch_size or world_size > 1
    steps = size // config.batch_size if drop_last else 1
    if config.max_batches_per_epoch is not None:
        steps = min(steps, config.max_batches_per_epoch)
    return _Run(model=model, forward=forward, optimizer=optimizer, scaler=scaler, device=device, amp=amp, rank=rank,
                world_size=world_size, reporter=reporter, last=last, best=checkpoint_dir / "best.pt",
                staged_train=staged_train, staged_val=staged_val, drop_last=drop_last, steps=steps, start=start,
                history=history, best_epoch=best_epoch, best_loss=best_loss)


@contextmanager
def _restored(model: nn.Module, device: torch.device, *, deterministic: bool) -> Iterator[None]:
    """Deterministic algorithms when asked, and a forked global RNG; on leaving, both as they were and `model`'s mode."""
    mode = model.training
    determinism = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            yield
    finally:
        torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])
        model.train(mode)


def _epoch(run: _Run, epoch: int, *, loss_fn: LossFn, data: Dataset, config: TrainConfig) -> tuple[float, int, float]:
    """One epoch of training steps, seeded by (seed, epoch): its mean loss, samples (all ranks) and seconds."""
    device = run.device
    torch.manual_seed(_epoch_seed(config.seed, epoch, 1, run.rank))  # dropout & co. of this epoch
    steps = batches(
        data, batch_size=config.batch_size, device=device, num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, 0)),
        drop_last=run.drop_last, staged=run.staged_train, shard=(run.rank, run.world_size),
    )
    run.reporter.start(f"epoch {epoch + 1}/{config.epochs}", total=run.steps)
    tick = time.perf_counter()
    run.model.train()
    total, count = accumulator(device), 0
    for batch in islice(steps, config.max_batches_per_epoch):
        run.optimizer.zero_grad(set_to_none=True)
        with autocast(device, run.amp, config.amp_dtype):
            loss = loss_fn(run.forward(batch["x"]), batch)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        batch_size = len(batch["x"])
        total += loss.detach().to(total.dtype) * batch_size  # stays on the device: no sync per step
        count += batch_size
        run.reporter.advance()
    train_total, count = distributed.all_sum(total, count)
    sync(device)
    seconds = time.perf_counter() - tick
    run.train_seconds += seconds
    run.samples += count
    return train_total / max(count, 1), count, seconds


def _precise_batch_norm(run: _Run, *, data: Dataset, config: TrainConfig) -> None:
    """Recompute every batch norm's running statistics with the epoch's final weights (Wu & Johnson 2021).

    A running average taken while the weights move lags behind them: in the ConvLSTM's trunk, at
    batches of 4, by tens of standard deviations, so that its eval-mode loss on its own training
    windows was 100 times its train-mode loss, and validation, the best epoch and every forecast
    used statistics of no network that ever existed. Here the statistics are the plain average
    over up to PRECISE_BN_SAMPLES training samples, in the epoch's first batches, without gradients.
    """
    norms = [m for m in run.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    warmup = batches(data, batch_size=config.batch_size, device=run.device, num_workers=config.num_workers,
                     drop_last=run.drop_last, staged=run.staged_train, shard=(run.rank, run.world_size))
    run.model.train()
    try:
        with torch.no_grad(), autocast(run.device, run.amp, config.amp_dtype):
            for batch in islice(warmup, max(1, PRECISE_BN_SAMPLES // config.batch_size)):
                run.model(batch["x"])
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum


def _validate(run: _Run, *, loss_fn: LossFn, data: Dataset, config: TrainConfig) -> float:
    """The mean validation loss over all ranks, with rank 0's buffers (BatchNorm statistics) on every rank."""
    distributed.sync_buffers(run.model)
    val_total, val_count = distributed.all_sum(*loss_sum(
        run.model, data, loss_fn=loss_fn, batch_size=config.batch_size, device=run.device, amp=run.amp,
        amp_dtype=config.amp_dtype, num_workers=config.num_workers, staged=run.staged_val,
        shard=(run.rank, run.world_size),
    ))
    return val_total / val_count


def _checkpoint(run: _Run, epoch: int, train_loss: float, val_loss: float, *, config: TrainConfig) -> None:
    """Record the epoch: refuse a diverged loss, update the history and the best, write `best.pt` and `last.pt`."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        raise TrainingError(
            f"epoch {epoch + 1}: the loss diverged (train {train_loss}, validation {val_loss}); "
            f"lower the learning rate (lr={config.lr}) or check the inputs for NaN"
        )
    run.history.append((train_loss, val_loss))
    improved = val_loss < run.best_loss
    if improved:
        run.best_epoch, run.best_loss = epoch, val_loss
    if run.rank == 0:  # the ranks hold the same model: one writer
        if improved:
            _save({"model": run.model.state_dict(), "epoch": epoch, "val_loss": val_loss}, run.best)
        _save(
            {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scaler": run.scaler.state_dict(), "epoch": epoch, "history": run.history, "best_epoch": run.best_epoch,
             "best_val_loss": run.best_loss, "config": asdict(config), "world_size": run.world_size},
            run.last,
        )
    distributed.barrier()  # no rank goes on before the epoch's checkpoints are complete

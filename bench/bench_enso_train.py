"""ConvLSTM training throughput at the analysis' configuration (115 x 360 grid, batch 4).

Windows come from real `enso_features` (sample COBE-SST 1980-01 .. 1982-12 ingested and
featurized at 1°). Ours: `shoal.models.train.train` for one epoch cut at `BATCHES` batches,
with everything it does per epoch (seeded shuffle, AMP where cuda, the validation pass over
one window, `last.pt` and `best.pt` checkpoints). Baseline: a bare PyTorch loop over the same
windows with the same model, loss and Adam (zero_grad, forward, loss, backward, step) and
nothing else — the ratio is what the generic loop costs. Throughput is training windows per
second; an epoch of the analysis (training 1891-1989, ~1,180 windows) takes
1,180 / (windows/s) seconds. On the device `auto` picks, after a warm-up step: three
interleaved runs (ours, bare, ours, bare, ...), each from the same seeded initial weights;
times are medians with their spread (min..max). The speed-up is the ratio of the medians;
when the ratios the spreads allow (bare min / ours max .. bare max / ours min) hold 1.0, the
notes say "no measurable difference".
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from bench.run import Result, interleaved
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, oni
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.features import enso
from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig, enso_loss
from shoal.models.batches import pick_device
from shoal.models.inference import LossFn
from shoal.models.train import TrainConfig, seeded, train

BATCHES, BATCH_SIZE, EPOCH_WINDOWS, REPEATS = 3, 4, 1180, 3


@dataclass(frozen=True)
class Task:
    """What both loops train: the training windows, the model and the loss."""

    windows: Dataset
    build: Callable[[], torch.nn.Module]
    loss_fn: LossFn


def enso_task(root: Path, device: torch.device) -> Task:
    """The ENSO features, ConvLSTM and its loss: the only code here that knows their API."""
    catalog = Catalog(root / "home")
    cobe_sst.ingest(catalog, [write_sample(root / "sst", start="1980-01", end="1982-12")[0].parent])
    oni.ingest(catalog, [oni.SAMPLE])
    enso.build(catalog, config=enso.EnsoFeatureConfig(valid_start="1990-01", test_start="2005-01"))
    features = enso.EnsoFeatures(catalog)
    config, land = ConvLSTMConfig(), features.land.to(device)
    return Task(windows=features.windows("train"), build=lambda: ConvLSTM(config),
                loss_fn=lambda output, batch: enso_loss(output, batch, land, config))


def bare(task: Task, data: Dataset, device: torch.device) -> float:
    """Seconds of the bare PyTorch loop over `data`, from the seeded initial weights."""
    model = seeded(0, task.build).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for batch in DataLoader(data, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(0)):
        batch = {k: v.to(device) for k, v in batch.items()}
        optimizer.zero_grad()
        loss = task.loss_fn(model(batch["x"]), batch)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def generic(task: Task, checkpoints: Path) -> float:
    """Seconds of one fresh `train` call (BATCHES batches, validation, checkpoints)."""
    result = train(
        seeded(0, task.build),
        loss_fn=task.loss_fn,
        train_data=task.windows,
        val_data=Subset(task.windows, range(1)),
        config=TrainConfig(epochs=1, batch_size=BATCH_SIZE, max_batches_per_epoch=BATCHES),
        checkpoint_dir=checkpoints,
        resume=False,
    )
    return result.seconds


def run() -> list[Result]:
    """Time the generic loop and the bare loop on the same windows, interleaved."""
    device = pick_device()
    windows_done = BATCHES * BATCH_SIZE
    with tempfile.TemporaryDirectory() as scratch:
        task = enso_task(Path(scratch), device)
        bare(task, Subset(task.windows, range(BATCH_SIZE)), device)  # warm-up: allocator, kernels
        subset = Subset(task.windows, range(windows_done))
        comparison = interleaved(lambda: generic(task, Path(scratch, "checkpoints")),
                                 lambda: bare(task, subset, device), repeats=REPEATS)
    ours_rate, bare_rate = windows_done / comparison.ours.median, windows_done / comparison.baseline.median
    return [
        Result(
            name=f"ConvLSTM training, 115 x 360, batch {BATCH_SIZE}, {device}",
            ours_label="shoal train() (checkpoints, validation)",
            ours_seconds=comparison.ours.median,
            ours_spread=comparison.ours.spread,
            baseline_label="bare PyTorch loop",
            baseline_seconds=comparison.baseline.median,
            baseline_spread=comparison.baseline.spread,
            target="report (>= 0.9x)",
            passed=comparison.ratio >= 0.9,
            notes=(f"{REPEATS} interleaved repeats: speed-up {comparison.summary}; medians: ours {ours_rate:.2f} "
                   f"windows/s, bare {bare_rate:.2f} windows/s over {windows_done} windows; an analysis epoch "
                   f"(~{EPOCH_WINDOWS} windows) ~ {EPOCH_WINDOWS / ours_rate / 60:.0f} min; "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads"),
        )
    ]

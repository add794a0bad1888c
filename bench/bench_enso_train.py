"""ConvLSTM training throughput at the analysis' configuration (115 x 360 grid, batch 4).

Windows come from real `enso_features` (sample COBE-SST 1980-01 .. 1982-12 ingested and
featurized at 1°). Ours: `shoal.models.train.train` for one epoch cut at `BATCHES` batches,
with everything it does per epoch (seeded shuffle, AMP where cuda, the validation pass over
one window, `last.pt` and `best.pt` checkpoints). Baseline: a bare PyTorch loop over the same
windows with the same model, loss and Adam (zero_grad, forward, loss, backward, step) and
nothing else — the ratio is what the generic loop costs. Throughput is training windows per
second; an epoch of the analysis (training 1891-1989, ~1,180 windows) takes
1,180 / (windows/s) seconds. One run each after a warm-up step, on the device `auto` picks.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from bench.run import Result
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, oni
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.features.enso import EnsoFeatureConfig, EnsoFeatures, build
from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig, enso_loss
from shoal.models.train import TrainConfig, pick_device, seeded, train

BATCHES, BATCH_SIZE, EPOCH_WINDOWS = 3, 4, 1180


def _features(root: Path) -> EnsoFeatures:
    catalog = Catalog(root / "home")
    cobe_sst.ingest(catalog, [Path(write_sample(root / "sst", start="1980-01", end="1982-12")[0]).parent])
    oni.ingest(catalog, [oni.SAMPLE])
    build(catalog, config=EnsoFeatureConfig(train_end="1990-01"))
    return EnsoFeatures(catalog)


def _bare(model: torch.nn.Module, data: Subset, land: torch.Tensor, device: torch.device) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.to(device).train()
    land = land.to(device)
    started = time.perf_counter()
    for batch in DataLoader(data, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(0)):
        batch = {k: v.to(device) for k, v in batch.items()}
        optimizer.zero_grad()
        loss = enso_loss(model(batch["x"]), batch, land, model.config)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def run() -> list[Result]:
    """Time the generic loop and the bare loop on the same windows."""
    device = pick_device()
    with tempfile.TemporaryDirectory() as scratch:
        features = _features(Path(scratch))
        windows = features.windows("train")
        subset = Subset(windows, range(BATCHES * BATCH_SIZE))
        config = ConvLSTMConfig()
        warm = seeded(0, lambda: ConvLSTM(config))
        _bare(warm, Subset(windows, range(BATCH_SIZE)), features.land, device)  # warm-up: allocator, kernels
        bare_s = _bare(seeded(0, lambda: ConvLSTM(config)), subset, features.land, device)
        model = seeded(0, lambda: ConvLSTM(config))
        result = train(
            model,
            loss_fn=lambda out, batch: enso_loss(out, batch, features.land.to(out.index.device), config),
            train_data=windows,
            val_data=Subset(features.windows("train"), range(1)),
            config=TrainConfig(epochs=1, batch_size=BATCH_SIZE, max_batches_per_epoch=BATCHES),
            checkpoint_dir=Path(scratch, "checkpoints"),
        )
    windows_done = BATCHES * BATCH_SIZE
    ours_rate, bare_rate = windows_done / result.seconds, windows_done / bare_s
    return [
        Result(
            name=f"ConvLSTM training, 115 x 360, batch {BATCH_SIZE}, {result.device}",
            ours_label="shoal train() (checkpoints, validation)",
            ours_seconds=result.seconds,
            baseline_label="bare PyTorch loop",
            baseline_seconds=bare_s,
            target="report (>= 0.9x)",
            passed=bare_s / result.seconds >= 0.9,
            notes=(f"ours {ours_rate:.2f} windows/s, bare {bare_rate:.2f} windows/s over {windows_done} windows; "
                   f"an analysis epoch (~{EPOCH_WINDOWS} windows) ~ {EPOCH_WINDOWS / ours_rate / 60:.0f} min; "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads"),
        )
    ]

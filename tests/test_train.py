"""The generic train loop: seeded, checkpointed, resumable, keeps the best epoch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig, enso_loss
from shoal.models.train import TrainConfig, pick_device, seeded, train

TINY = ConvLSTMConfig(height=24, width=40, hidden=(4, 4, 8), trunk_channels=4, fc=8, head_hidden=8)
LAND = torch.zeros(24, 40, dtype=torch.bool)


class Windows(Dataset):
    """Seeded synthetic samples in the ENSO window contract."""

    def __init__(self, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, 6, 1, 24, 40, generator=g)
        self.index = self.x[:, -1].mean(dim=(1, 2, 3))  # learnable: the last month's mean
        self.phase = (self.index > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "grid": self.x[i, -1], "index": self.index[i], "phase": self.phase[i]}


def _run(tmp: Path, *, epochs: int, seed: int = 0, resume: bool = True):  # noqa: ANN202
    model = seeded(seed, lambda: ConvLSTM(TINY))
    result = train(
        model,
        loss_fn=lambda out, batch: enso_loss(out, batch, LAND, TINY),
        train_data=Windows(24, 1),
        val_data=Windows(8, 2),
        config=TrainConfig(epochs=epochs, seed=seed, device="cpu"),
        checkpoint_dir=tmp,
        resume=resume,
    )
    return model, result


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_the_same_seed_gives_bit_identical_weights(tmp_path: Path) -> None:
    a, _ = _run(tmp_path / "a", epochs=2)
    b, _ = _run(tmp_path / "b", epochs=2)
    c, _ = _run(tmp_path / "c", epochs=2, seed=1)
    assert _same(a, b) and not _same(a, c)


def test_resuming_from_the_last_checkpoint_equals_training_straight_through(tmp_path: Path) -> None:
    straight, full = _run(tmp_path / "straight", epochs=3)
    _run(tmp_path / "resumed", epochs=1)
    resumed, result = _run(tmp_path / "resumed", epochs=3)
    assert _same(straight, resumed) and result.history == full.history and len(result.history) == 3


def test_best_checkpoint_holds_the_epoch_with_the_lowest_validation_loss(tmp_path: Path) -> None:
    _, result = _run(tmp_path, epochs=4)
    losses = [val for _, val in result.history]
    assert result.best_epoch == losses.index(min(losses)) and result.best_val_loss == min(losses)
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["epoch"] == result.best_epoch
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and not (tmp_path / "last.tmp").exists()


def test_training_lowers_the_loss(tmp_path: Path) -> None:
    _, result = _run(tmp_path, epochs=6)
    assert result.history[-1][0] < result.history[0][0]


def test_max_batches_per_epoch_limits_the_work(tmp_path: Path) -> None:
    model = seeded(0, lambda: ConvLSTM(TINY))
    result = train(model, loss_fn=lambda out, batch: enso_loss(out, batch, LAND, TINY), train_data=Windows(40, 1),
                   val_data=Windows(8, 2), config=TrainConfig(epochs=1, device="cpu", max_batches_per_epoch=2),
                   checkpoint_dir=tmp_path)
    assert round(result.windows_per_second * result.seconds) == 8  # 2 batches of 4


def test_device_is_cpu_here_unless_named() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")

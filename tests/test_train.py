"""The generic train loop: seeded, checkpointed, resumable, keeps the best epoch; evaluate, predict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig, EnsoOutput, enso_loss
from shoal.errors import TrainingError
from shoal.models.batches import pick_device
from shoal.models.inference import evaluate, predict
from shoal.models.train import TrainConfig, TrainResult, seeded, train

H, W = 16, 24
TINY = ConvLSTMConfig(height=H, width=W, hidden=(4, 4, 8), trunk_channels=4, fc=8, head_hidden=8)
LAND = torch.zeros(H, W, dtype=torch.bool)
LAND[:3] = True


class Windows(Dataset):
    """Seeded synthetic samples in the ENSO window contract (the real features come elsewhere)."""

    def __init__(self, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, 6, 1, H, W, generator=g)  # (N, T, C, H, W)
        self.index = self.x[:, -1].mean(dim=(1, 2, 3))  # learnable: the last month's mean
        self.phase = (self.index > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "grid": self.x[i, -1], "index": self.index[i : i + 1], "phase": self.phase[i : i + 1]}


class Staged(Windows):
    """The same samples, stageable: `to(device)` once, then `gather` whole batches there."""

    def to(self, device: torch.device) -> Staged:
        return self

    def gather(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": self.x[items], "grid": self.x[items, -1], "index": self.index[items, None],
                "phase": self.phase[items, None]}


def _loss(out: EnsoOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return enso_loss(out, batch, LAND, TINY)


def _run(
    folder: Path, *, epochs: int, seed: int = 0, resume: bool = True, lr: float = 1e-3, max_batches: int | None = None,
    data: type[Windows] = Windows, reporter: object = None,
) -> tuple[torch.nn.Module, TrainResult]:
    model = seeded(0, lambda: ConvLSTM(TINY))
    result = train(
        model, loss_fn=_loss, train_data=data(26, 1), val_data=data(8, 2),
        config=TrainConfig(epochs=epochs, seed=seed, lr=lr, device="cpu", max_batches_per_epoch=max_batches),
        checkpoint_dir=folder, resume=resume, reporter=reporter,
    )
    return model, result


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_the_same_seed_gives_bit_identical_weights_and_another_seed_does_not(tmp_path: Path) -> None:
    a, first = _run(tmp_path / "a", epochs=2)
    b, second = _run(tmp_path / "b", epochs=2)
    c, _ = _run(tmp_path / "c", epochs=2, seed=1)
    assert _same(a, b) and first.history == second.history
    assert not _same(a, c)


def test_two_epochs_straight_equal_one_epoch_then_a_resume_from_last_pt(tmp_path: Path) -> None:
    straight, full = _run(tmp_path / "straight", epochs=2)
    _, partial = _run(tmp_path / "resumed", epochs=1)
    assert len(partial.history) == 1 and torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["epoch"] == 0
    resumed, result = _run(tmp_path / "resumed", epochs=2)
    assert _same(straight, resumed)
    assert result.history == full.history and len(result.history) == 2 and result.samples == 24  # one epoch trained: 6 full batches of 4 of 26
    assert (result.best_epoch, result.best_val_loss) == (full.best_epoch, full.best_val_loss)


def test_resuming_with_other_settings_is_refused_and_resume_false_starts_over(tmp_path: Path) -> None:
    _run(tmp_path, epochs=1)
    with pytest.raises(TrainingError, match=r"seed: 0 -> 1.*--restart"):
        _run(tmp_path, epochs=2, seed=1)
    _, result = _run(tmp_path, epochs=1, seed=1, resume=False)
    assert len(result.history) == 1 and result.samples == 24


def test_best_pt_holds_the_epoch_with_the_lowest_validation_loss(tmp_path: Path) -> None:
    model, result = _run(tmp_path, epochs=4, lr=3e-3)
    losses = [val for _, val in result.history]
    assert result.best_epoch == losses.index(min(losses)) and result.best_val_loss == min(losses)
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["epoch"] == result.best_epoch and best["val_loss"] == result.best_val_loss
    model.load_state_dict(best["model"])
    assert evaluate(model, Windows(8, 2), loss_fn=_loss, batch_size=4, device="cpu") == pytest.approx(min(losses), rel=1e-12)


def test_checkpoints_load_with_weights_only_and_leave_no_temporary_files(tmp_path: Path) -> None:
    _run(tmp_path, epochs=2)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and len(last["history"]) == 2 and set(last) >= {"model", "optimizer", "scaler", "config"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_max_batches_per_epoch_limits_the_work(tmp_path: Path) -> None:
    _, result = _run(tmp_path, epochs=2, max_batches=2)
    assert result.samples == 2 * 2 * 4 and result.windows_per_second > 0  # 2 epochs x 2 batches of 4


def test_train_restores_the_global_rng_and_determinism_settings(tmp_path: Path) -> None:
    rng = torch.get_rng_state()
    assert not torch.are_deterministic_algorithms_enabled()
    model, _ = _run(tmp_path, epochs=1)
    assert torch.equal(torch.get_rng_state(), rng) and not torch.are_deterministic_algorithms_enabled()
    assert model.training  # the mode it came in


def test_a_diverging_loss_stops_training_with_the_fix(tmp_path: Path) -> None:
    model = seeded(0, lambda: ConvLSTM(TINY))
    with pytest.raises(TrainingError, match="diverged.*lower the learning rate"):
        train(model, loss_fn=lambda out, batch: _loss(out, batch) * float("nan"), train_data=Windows(8, 1),
              val_data=Windows(4, 2), config=TrainConfig(epochs=1, device="cpu"), checkpoint_dir=tmp_path)


def test_predict_concatenates_outputs_in_dataset_order(tmp_path: Path) -> None:
    model = seeded(0, lambda: ConvLSTM(TINY))
    data = Windows(10, 3)
    out = predict(model, data, batch_size=4, device="cpu")
    assert isinstance(out, EnsoOutput)
    assert out.grid.shape == (10, 1, H, W) and out.index.shape == (10, 1) and out.phase_logits.shape == (10, 1, 3)
    with torch.no_grad():
        direct = model.eval()(data.x[6:10])
    torch.testing.assert_close(out.index[6:], direct.index)
    torch.testing.assert_close(out.grid[6:], direct.grid)


def test_device_is_cpu_here_unless_named() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device().type == pick_device("auto").type == expected
    with pytest.raises(TrainingError, match="unknown device"):
        pick_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="not available"):
            pick_device("cuda")


class _Dropout(torch.nn.Module):
    """A non-ConvLSTM model with randomness in training: the loop is generic."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6 * H * W, 8), torch.nn.Dropout(0.5),
                                       torch.nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1)


def test_a_model_with_dropout_resumes_bit_identically_and_predicts_a_tensor(tmp_path: Path) -> None:
    def run(folder: Path, epochs: int) -> tuple[torch.nn.Module, TrainResult]:
        model = seeded(0, _Dropout)
        result = train(model, loss_fn=lambda out, batch: torch.nn.functional.mse_loss(out, batch["index"]),
                       train_data=Windows(16, 1), val_data=Windows(4, 2), config=TrainConfig(epochs=epochs, device="cpu"),
                       checkpoint_dir=folder)
        return model, result

    straight, full = run(tmp_path / "straight", 2)
    run(tmp_path / "resumed", 1)
    resumed, result = run(tmp_path / "resumed", 2)
    assert _same(straight, resumed) and result.history == full.history
    assert predict(straight, Windows(5, 3), batch_size=2, device="cpu").shape == (5, 1)


def test_the_staged_path_gives_the_same_weights_as_the_dataloader(tmp_path: Path) -> None:
    loader, first = _run(tmp_path / "loader", epochs=2)
    staged, second = _run(tmp_path / "staged", epochs=2, data=Staged)
    assert _same(loader, staged) and first.history == second.history and second.samples == first.samples == 48


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, description: str, total: int | None) -> None:
        self.calls.append(("start", description, total))

    def advance(self, steps: int = 1, status: str = "") -> None:
        self.calls.append(("advance", steps, status))

    def finish(self, message: str) -> None:
        self.calls.append(("finish", message))


def test_the_reporter_sees_every_batch_the_validation_phase_and_one_line_per_epoch(tmp_path: Path) -> None:
    recorder = _Recorder()
    _run(tmp_path, epochs=2, max_batches=3, reporter=recorder)
    assert [c[0] for c in recorder.calls] == ["start", "advance", "advance", "advance", "advance", "finish"] * 2
    assert recorder.calls[0] == ("start", "epoch 1/2", 3) and recorder.calls[4] == ("advance", 0, "validating")
    assert recorder.calls[5][1].startswith("epoch 1/2: train loss ") and "samples/s" in recorder.calls[5][1]


class Opposite(Dataset):
    """Items whose target is +1 for training and -1 for validation: the better the fit, the worse the validation."""

    def __init__(self, target: float) -> None:
        self.x, self.y = torch.ones(64, 1), torch.full((64,), target)

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class Drifting(Dataset):
    """Items whose input lies far from zero with a small spread: a batch norm's statistics move with every step."""

    def __init__(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = 5.0 + 0.01 * torch.randn(96, 3, generator=generator)
        self.y = self.x.sum(1) - 15.0

    def __len__(self) -> int:
        return 96

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def test_batch_norm_statistics_are_those_of_the_final_weights_so_eval_matches_training(tmp_path: Path) -> None:
    def build() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))

    model = seeded(0, build)
    data = Drifting(0)
    train(model, loss_fn=_mse, train_data=data, val_data=Drifting(1),
          config=TrainConfig(epochs=3, batch_size=4, lr=0.05, device="cpu"), checkpoint_dir=tmp_path)
    with torch.no_grad():
        hidden = model[0](data.x)  # (N, 8) with the final weights
    norm = model[1]
    assert torch.allclose(norm.running_mean, hidden.mean(0), rtol=1e-4, atol=1e-6)  # not a lagging average
    assert torch.allclose(norm.running_var, hidden.var(0), rtol=0.2)  # the mean of per-batch variances
    assert norm.momentum == 0.1  # left as it was


def _mse(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((output.squeeze(-1) - batch["y"]) ** 2).mean()


def _zero() -> torch.nn.Module:
    """A linear model that starts at 0: fitting +1 moves it away from the validation's -1 from the first step."""
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    return model


def test_early_stopping_ends_after_patience_epochs_without_a_better_validation_loss_and_a_rerun_trains_no_more(
        tmp_path: Path) -> None:
    config = TrainConfig(epochs=20, batch_size=8, lr=0.05, device="cpu", patience=2)

    def run() -> TrainResult:
        return train(seeded(0, _zero), loss_fn=_mse, train_data=Opposite(1.0),
                     val_data=Opposite(-1.0), config=config, checkpoint_dir=tmp_path)

    result = run()
    losses = [val for _, val in result.history]
    assert result.best_epoch == 0 and len(result.history) == 3  # epoch 0 best, then 2 worse: stop
    assert losses[1] > losses[0] and losses[2] > losses[0]
    assert len(run().history) == 3  # resumed from last.pt: already spent, nothing more is trained
    full = train(seeded(0, _zero), loss_fn=_mse, train_data=Opposite(1.0),
                 val_data=Opposite(-1.0), config=TrainConfig(epochs=6, batch_size=8, lr=0.05, device="cpu"),
                 checkpoint_dir=tmp_path / "every")
    assert len(full.history) == 6  # no patience: every epoch


def test_the_default_batch_is_sized_to_the_training_set_and_what_is_given_wins() -> None:
    from shoal.contract import get_task

    higgs = get_task("higgs")
    assert higgs.parse({}).batch_for(100_000) == 2_000  # 16,384 would give 6 steps an epoch
    assert higgs.parse({}).batch_for(50_000_000) == 16_384
    assert higgs.parse({"batch_size": 4096}).batch_for(100_000) == 4096
    assert higgs.parse({"preset": "paper"}).batch_for(100_000) == 16_384
    assert higgs.parse({}).batch_for(10) == 8 and get_task("enso").parse({}).batch_for(10) == 4  # its default
    assert higgs.parse({}).patience_for() == 10 and higgs.parse({"preset": "paper"}).patience_for() is None
    assert higgs.parse({"preset": "paper", "patience": 3}).patience_for() == 3
    assert higgs.parse({}).virtual_batch_for(200_000) == 128 and higgs.parse({}).virtual_batch_for(2_000_000) == 512
    assert higgs.parse({"virtual_batch_size": 256}).virtual_batch_for(200_000) == 256
    assert higgs.parse({"preset": "paper"}).virtual_batch_for(200_000) == 512


def test_a_capped_batch_gets_a_scaled_learning_rate_and_enough_epochs_and_what_is_given_wins() -> None:
    from shoal.contract import get_task

    higgs, speech = get_task("higgs"), get_task("speech")
    assert higgs.parse({}).lr_for(16_384) == 0.02 and higgs.parse({}).lr_for(4_096) == pytest.approx(0.01)  # sqrt
    assert higgs.parse({"lr": 0.05}).lr_for(4_096) == 0.05 and higgs.parse({"preset": "paper"}).lr_for(4_096) == 0.02
    assert speech.parse({}).lr_for(8) == 1.0  # Adadelta sizes its own steps
    assert higgs.parse({}).epochs_for(50) == 40  # TabNet's 2,000 updates at 50 steps an epoch
    assert higgs.parse({}).epochs_for(610) == 10 and higgs.parse({}).epochs_for(1) == 100  # the default; the cap
    assert higgs.parse({"epochs": 3}).epochs_for(50) == 3 and higgs.parse({"preset": "paper"}).epochs_for(50) == 10
    assert speech.parse({}).epochs_for(7) == 20  # the CNN needs no more updates than its default gives


def test_train_prints_each_setting_it_chose_for_the_data_beside_the_default() -> None:
    from types import SimpleNamespace

    from shoal.contract import get_task
    from shoal.models.runs import chosen, train_config

    settings = get_task("higgs").parse({})
    prepared = SimpleNamespace(train_data=range(12_800), model_config={"virtual_batch_size": 128, "n_d": 24},
                               chosen=("virtual_batch_size",))
    line = chosen(settings, train_config(settings, 12_800), prepared)
    assert line == ("training on 12,800 samples: batch 256 (the default 16,384 capped: 50 steps an epoch), learning "
                    "rate 0.0025 (the default 0.02 scaled by the square root of the batch), virtual batch size 128; "
                    "up to 40 epochs (the default 10 raised to give 2,000 steps), early stopping after 10 epochs "
                    "without a better validation loss")
    paper = get_task("higgs").parse({"preset": "paper"})
    as_given = SimpleNamespace(**vars(prepared) | {"chosen": ()})
    assert chosen(paper, train_config(paper, 12_800), as_given).endswith(
        "batch 16,384; up to 10 epochs, every epoch (no early stopping)")

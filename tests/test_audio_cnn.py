"""The spectrogram CNN: shapes, the derived flatten size, config round trip, one optimizer step."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from shoal.errors import ModelConfigError, ShoalError
from shoal.models.audio_cnn import AudioCNN, AudioCNNConfig, speech_loss
from shoal.models.train import seeded

SMALL = AudioCNNConfig(n_freq=64, n_frames=50, n_classes=5, channels=(8, 16, 16, 32), hidden=16)


def _batch(config: AudioCNNConfig, size: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(size, 1, config.n_freq, config.n_frames, generator=g),  # (B, 1, F, T)
        "label": torch.randint(0, config.n_classes, (size,), generator=g),  # (B,)
    }


def test_the_analysis_configuration_derives_the_flatten_size_14336_and_gives_30_logits() -> None:
    config = AudioCNNConfig()
    model = AudioCNN(config)
    assert config.flat == model.fc.in_features == 256 * 14 * 4 == 14336
    assert [conv.out_channels for conv in model.convs] == [32, 64, 128, 256]
    assert all(conv.padding == (0, 0) and conv.kernel_size == (3, 3) for conv in model.convs)
    with torch.no_grad():
        logits = model.eval()(torch.zeros(2, 1, 257, 101))
    assert logits.shape == (2, 30)


def test_other_spectrogram_sizes_work_without_code_changes() -> None:
    model = AudioCNN(SMALL)
    assert model(_batch(SMALL)["x"]).shape == (8, 5)
    assert SMALL.flat == 32 * 2 * 1  # 64 -> 31 -> 14 -> 6 -> 2; 50 -> 24 -> 11 -> 4 -> 1


def test_the_config_survives_a_json_round_trip() -> None:
    for config in (AudioCNNConfig(), SMALL):
        again = AudioCNNConfig.from_dict(json.loads(json.dumps(asdict(config))))
        assert again == config and isinstance(again.channels, tuple)


def test_an_input_too_small_for_four_stages_is_refused_with_the_fix() -> None:
    assert issubclass(ModelConfigError, ShoalError)
    AudioCNNConfig(n_freq=46, n_frames=46)  # the smallest that works
    with pytest.raises(ModelConfigError, match="n_frames=45 is too small for 4 conv\\+pool stages.*at least 46"):
        AudioCNNConfig(n_frames=45)
    with pytest.raises(ModelConfigError, match="n_freq=10"):
        AudioCNNConfig(n_freq=10)
    with pytest.raises(ModelConfigError, match=r"expected input \(B, 1, 64, 50\)"):
        AudioCNN(SMALL)(torch.zeros(1, 1, 64, 51))


def test_the_loss_is_cross_entropy_against_the_label() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    label = torch.tensor([0, 0])
    expected = torch.nn.functional.cross_entropy(logits, label)
    assert speech_loss(logits, {"label": label}) == expected


def test_one_adadelta_step_on_a_fixed_batch_lowers_the_loss() -> None:
    model = seeded(0, lambda: AudioCNN(SMALL)).eval()  # eval: no dropout, so both losses see the same network
    batch = _batch(SMALL)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)  # the analysis' optimizer
    before = speech_loss(model(batch["x"]), batch)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert speech_loss(model(batch["x"]), batch) < before


def test_gradients_reach_every_parameter() -> None:
    model = seeded(0, lambda: AudioCNN(SMALL))
    batch = _batch(SMALL)
    speech_loss(model(batch["x"]), batch).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []

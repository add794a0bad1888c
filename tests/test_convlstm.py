"""The ConvLSTM forecaster: shapes, derived sizes, loss, one optimizer step."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from shoal.errors import ShoalError
from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig, EnsoOutput, ModelConfigError, enso_loss
from shoal.models.train import seeded

SMALL = ConvLSTMConfig(height=28, width=90)


def _batch(config: ConvLSTMConfig, size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = config.height, config.width
    return {
        "x": torch.randn(size, 6, 1, h, w, generator=g),  # (B, T, C, H, W)
        "grid": torch.randn(size, 1, h, w, generator=g),
        "index": torch.randn(size, len(config.leads), generator=g),  # (B, L)
        "phase": torch.randint(0, 3, (size, len(config.leads)), generator=g),
    }


def test_the_analysis_configuration_derives_the_published_flatten_size_and_shapes() -> None:
    model = ConvLSTM(ConvLSTMConfig())
    assert model.flat == ConvLSTMConfig().flat == 32 * 18 * 58 == 33408
    assert model.fc.in_features == 33408
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 6, 1, 115, 360))  # (B, T, C, H, W)
    assert out.grid.shape == (2, 1, 115, 360) and out.index.shape == (2, 1) and out.phase_logits.shape == (2, 1, 3)


def test_a_coarse_grid_works_without_code_changes() -> None:
    model = ConvLSTM(SMALL)
    out = model(_batch(SMALL)["x"])
    assert out.grid.shape == (4, 1, 28, 90) and out.index.shape == (4, 1) and out.phase_logits.shape == (4, 1, 3)
    assert model.flat == 32 * 3 * 13


def test_several_leads_get_one_index_and_one_phase_output_each() -> None:
    config = ConvLSTMConfig(height=28, width=90, leads=(1, 3, 6))
    batch = _batch(config)
    out = ConvLSTM(config)(batch["x"])
    assert out.grid.shape == (4, 1, 28, 90) and out.index.shape == (4, 3) and out.phase_logits.shape == (4, 3, 3)
    assert enso_loss(out, batch, torch.zeros(28, 90, dtype=torch.bool), config).shape == ()
    with pytest.raises(ModelConfigError, match="same leads"):
        enso_loss(out, _batch(SMALL), torch.zeros(28, 90, dtype=torch.bool), config)
    for leads in ((), (3, 1), (0, 1), (1, 1)):
        with pytest.raises(ModelConfigError, match="leads"):
            ConvLSTMConfig(leads=leads)


def test_one_adam_step_on_a_fixed_batch_lowers_the_loss() -> None:
    model = seeded(0, lambda: ConvLSTM(SMALL))
    batch, land = _batch(SMALL), torch.zeros(28, 90, dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = enso_loss(model(batch["x"]), batch, land, SMALL)
    before.backward()
    optimizer.step()
    assert enso_loss(model(batch["x"]), batch, land, SMALL) < before


def test_gradients_reach_every_parameter() -> None:
    model = seeded(0, lambda: ConvLSTM(SMALL))
    batch, land = _batch(SMALL), torch.zeros(28, 90, dtype=torch.bool)
    enso_loss(model(batch["x"]), batch, land, SMALL).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_the_grid_loss_ignores_land_predictions_even_nan() -> None:
    model = seeded(0, lambda: ConvLSTM(SMALL)).eval()
    batch = _batch(SMALL)
    land = torch.zeros(28, 90, dtype=torch.bool)
    land[:10] = True
    with torch.no_grad():
        out = model(batch["x"])
        reference = enso_loss(out, batch, land, SMALL)
        changed = out._replace(grid=out.grid.clone())
        changed.grid[:, :, :10] += 100.0  # predictions on land only
        assert enso_loss(changed, batch, land, SMALL) == reference
        changed.grid[:, :, 0] = float("nan")
        assert enso_loss(changed, batch, land, SMALL) == reference
        changed.grid[:, :, 20] += 1.0  # one ocean row
        assert enso_loss(changed, batch, land, SMALL) > reference


def test_the_grid_loss_is_the_mean_over_ocean_cells_weighted_0_2() -> None:
    config = ConvLSTMConfig(height=16, width=16, index_weight=0.0, phase_weight=0.0)
    land = torch.zeros(16, 16, dtype=torch.bool)
    land[:, :8] = True
    grid = torch.zeros(2, 1, 16, 16)
    grid[..., 8:] = 3.0  # error 3 on every ocean cell
    out = EnsoOutput(grid=grid, index=torch.zeros(2, 1), phase_logits=torch.zeros(2, 1, 3))
    batch = {"grid": torch.zeros(2, 1, 16, 16), "index": torch.zeros(2, 1), "phase": torch.zeros(2, 1, dtype=torch.long)}
    assert enso_loss(out, batch, land, config).item() == pytest.approx(0.2 * 9.0)


def test_defaults_follow_the_analysis() -> None:
    config = ConvLSTMConfig()
    assert (config.grid_weight, config.index_weight, config.phase_weight) == (0.2, 0.4, 0.4)
    assert (config.hidden, config.kernels, config.fc, config.head_hidden, config.n_phases) == ((16, 16, 32), (3, 3, 5), 64, 128, 3)
    assert ConvLSTMConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config


def test_a_grid_too_small_for_the_trunk_or_a_mismatched_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ModelConfigError, match="at least 13 x 13"):
        ConvLSTMConfig(height=12, width=90)
    assert issubclass(ModelConfigError, ShoalError)
    with pytest.raises(ModelConfigError, match=r"expected input \(B, T, 1, 28, 90\)"):
        ConvLSTM(SMALL)(torch.zeros(1, 6, 1, 28, 91))

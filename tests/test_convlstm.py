"""The ConvLSTM forecaster: shapes, derived sizes, loss, one optimizer step."""

from __future__ import annotations

import torch

from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig, enso_loss
from shoal.models.train import seeded

SMALL = ConvLSTMConfig(height=28, width=90)


def _batch(config: ConvLSTMConfig, size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = config.height, config.width
    return {
        "x": torch.randn(size, 6, 1, h, w, generator=g),
        "grid": torch.randn(size, 1, h, w, generator=g),
        "index": torch.randn(size, generator=g),
        "phase": torch.randint(0, 3, (size,), generator=g),
    }


def test_the_analysis_configuration_derives_the_published_flatten_size_and_shapes() -> None:
    model = ConvLSTM(ConvLSTMConfig())
    assert model.flat == 32 * 18 * 58 == 33408
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 6, 1, 115, 360))  # (B, T, C, H, W)
    assert out.grid.shape == (2, 1, 115, 360) and out.index.shape == (2,) and out.phase_logits.shape == (2, 3)


def test_a_coarse_grid_works_without_code_changes() -> None:
    out = ConvLSTM(SMALL)(_batch(SMALL)["x"])
    assert out.grid.shape == (4, 1, 28, 90) and ConvLSTM(SMALL).flat == 32 * 3 * 13


def test_one_adam_step_lowers_the_loss_and_reaches_every_parameter() -> None:
    model = seeded(0, lambda: ConvLSTM(SMALL))
    batch, land = _batch(SMALL), torch.zeros(28, 90, dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = enso_loss(model(batch["x"]), batch, land, SMALL)
    before.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    optimizer.step()
    assert enso_loss(model(batch["x"]), batch, land, SMALL) < before


def test_the_grid_loss_ignores_land() -> None:
    model = seeded(0, lambda: ConvLSTM(SMALL)).eval()
    batch = _batch(SMALL)
    land = torch.zeros(28, 90, dtype=torch.bool)
    land[:10] = True
    with torch.no_grad():
        out = model(batch["x"])
        changed = out._replace(grid=out.grid.clone())
        changed.grid[:, :, :10] += 100.0  # predictions on land only
        assert enso_loss(out, batch, land, SMALL) == enso_loss(changed, batch, land, SMALL)
        changed.grid[:, :, 20] += 1.0
        assert enso_loss(out, batch, land, SMALL) != enso_loss(changed, batch, land, SMALL)


def test_loss_weights_are_0_2_grid_0_4_index_0_4_phase() -> None:
    config = ConvLSTMConfig()
    assert (config.grid_weight, config.index_weight, config.phase_weight) == (0.2, 0.4, 0.4)
    assert (config.hidden, config.kernels) == ((16, 16, 32), (3, 3, 5))

"""TabNet: sparsemax, ghost batch norm, shapes, masks, explanations, loss, one optimizer step."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import pytest
import torch

from shoal.errors import ModelConfigError, ShoalError
from shoal.models.tabnet import (
    GhostBatchNorm,
    TabNet,
    TabNetConfig,
    TabNetLoss,
    TabNetOutput,
    global_importances,
    sparsemax,
)
from shoal.models.train import seeded

SMALL = TabNetConfig(n_features=10, n_d=8, n_a=8, n_steps=3, virtual_batch_size=32)


def _batch(config: TabNetConfig, size: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    x = torch.randn(size, config.n_features, generator=torch.Generator().manual_seed(seed))  # (B, F)
    return {"x": x, "label": (x[:, 0] + x[:, 1] > 0).float()}  # (B,): learnable, so one step has a signal to follow


def test_sparsemax_matches_the_hand_computed_example_and_lies_on_the_simplex() -> None:
    # sorted 1, 0.5, -1: support k = 2 (1 + 2 * 0.5 > 1.5, 1 - 3 <= 0.5), tau = (1.5 - 1) / 2 = 0.25
    assert torch.allclose(sparsemax(torch.tensor([1.0, 0.5, -1.0])), torch.tensor([0.75, 0.25, 0.0]))
    z = torch.randn(64, 28, generator=torch.Generator().manual_seed(1)) * 3
    p = sparsemax(z)
    assert (p >= 0).all() and torch.allclose(p.sum(-1), torch.ones(64), atol=1e-6)
    assert (p == 0).any(dim=-1).float().mean() > 0.9  # sparse, unlike softmax
    assert torch.equal(p.argmax(-1), z.argmax(-1))


def test_sparsemax_limits_agree_with_softmax_where_they_should() -> None:
    assert torch.allclose(sparsemax(torch.full((3, 5), 2.0)), torch.full((3, 5), 0.2))  # ties: uniform, as softmax
    z = torch.tensor([[0.3, -1.2, 2.0, 0.5]])
    assert torch.allclose(sparsemax(z + 7.0), sparsemax(z))  # shift-invariant, as softmax
    assert torch.equal(sparsemax(100 * z), torch.softmax(100 * z, -1).round())  # low temperature: one-hot argmax
    t = torch.linspace(-3, 3, 13)
    two = sparsemax(torch.stack([t, torch.zeros_like(t)], dim=-1))  # two entries: the hard sigmoid of softmax's sigmoid
    assert torch.allclose(two[:, 0], ((t + 1) / 2).clamp(0, 1))


def test_sparsemax_gradient_is_the_closed_form_jacobian() -> None:
    z = torch.tensor([1.0, 0.5, -1.0, 0.8])
    jacobian = torch.autograd.functional.jacobian(sparsemax, z)
    support = (sparsemax(z) > 0).float()  # J = diag(s) - s s^T / |S|
    assert torch.allclose(jacobian, torch.diag(support) - torch.outer(support, support) / support.sum())


def _reference_loop(norm: GhostBatchNorm, chunks: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """pytorch-tabnet's loop, but each chunk on a fresh copy; the running statistics are the chunks' mean."""
    reference = torch.nn.BatchNorm1d(norm.weight.numel(), momentum=norm.momentum).train()
    reference.load_state_dict({**norm.state_dict(), "num_batches_tracked": torch.tensor(0)})
    copies = [copy.deepcopy(reference) for _ in chunks]
    out = torch.cat([bn(chunk) for bn, chunk in zip(copies, chunks, strict=True)])
    return out, torch.stack([bn.running_mean for bn in copies]).mean(0), torch.stack([bn.running_var for bn in copies]).mean(0)


@pytest.mark.parametrize(("rows", "vbs", "sizes", "strided"), [
    (256, 32, [32] * 8, True), (100, 32, [25] * 4, True), (101, 32, [26, 25, 25, 25], False)])
def test_ghost_batch_norm_as_one_reshaped_norm_equals_a_loop_over_chunks(rows: int, vbs: int, sizes: list[int],
                                                                         strided: bool) -> None:
    g = torch.Generator().manual_seed(2)
    norm = GhostBatchNorm(6, vbs, momentum=0.4).train()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(6, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(6, generator=g))
        norm.running_mean.copy_(torch.randn(6, generator=g))
    x = torch.randn(rows, 6, generator=g) * 3 + 1  # (B, F)
    n = len(sizes)  # equal chunks take every n-th row (a free view); unequal ones are contiguous
    order = torch.arange(rows).view(-1, n).T.reshape(-1) if strided else torch.arange(rows)
    chunks = torch.tensor_split(x[order], n)
    assert [len(c) for c in chunks] == sizes
    expected, running_mean, running_var = _reference_loop(norm, chunks)
    expected = torch.empty_like(expected).index_copy_(0, order, expected)  # back to the rows' order
    assert torch.allclose(norm(x), expected, atol=1e-6)
    assert torch.allclose(norm.running_mean, running_mean, atol=1e-6)  # one update, 0.6 old + 0.4 chunk mean
    assert torch.allclose(norm.running_var, running_var, atol=1e-6)


def test_ghost_batch_norm_in_eval_uses_the_running_statistics() -> None:
    norm = GhostBatchNorm(6, 32, momentum=0.4).train()
    x = torch.randn(96, 6) * 2 + 3
    norm(x)
    reference = torch.nn.BatchNorm1d(6).eval()
    reference.load_state_dict({**norm.state_dict(), "num_batches_tracked": torch.tensor(1)})
    norm.eval()
    assert torch.allclose(norm(x[:5]), reference(x[:5]), atol=1e-6)
    assert torch.allclose(norm(x[:5]), norm(x)[:5])  # rows do not see each other


def test_the_analysis_configuration_gives_logits_a_sparsity_term_and_masks() -> None:
    config = TabNetConfig()
    assert (config.n_d, config.n_a, config.n_steps, config.gamma, config.lambda_sparse) == (24, 26, 5, 1.5, 1e-6)
    assert (config.virtual_batch_size, config.momentum, config.torch_momentum) == (512, 0.6, pytest.approx(0.4))
    model = TabNet(config)
    norms = [m for m in model.modules() if isinstance(m, (GhostBatchNorm, torch.nn.BatchNorm1d))]
    assert [m.momentum for m in norms] == pytest.approx([0.4] * len(norms))
    out = model(torch.randn(1024, 28))
    assert isinstance(out, TabNetOutput)
    assert out.logits.shape == (1024,) and out.sparsity_loss.shape == () and out.masks.shape == (5, 1024, 28)
    assert TabNet(TabNetConfig(n_outputs=2))(torch.randn(8, 28)).logits.shape == (8, 2)


@pytest.mark.parametrize("train", [True, False])
def test_masks_are_non_negative_and_sum_to_one_per_row_and_step(train: bool) -> None:
    model = seeded(0, lambda: TabNet(SMALL)).train(train)
    masks = model(_batch(SMALL)["x"]).masks  # (n_steps, B, F)
    assert (masks >= 0).all() and torch.allclose(masks.sum(-1), torch.ones(3, 128), atol=1e-5)


def test_the_sparsity_term_is_the_mean_entropy_of_the_masks() -> None:
    out = seeded(0, lambda: TabNet(SMALL))(_batch(SMALL)["x"])
    m = out.masks
    assert torch.allclose(out.sparsity_loss, (-m * torch.log(m + 1e-15)).sum() / (3 * 128))


def test_explanations_sum_to_one_per_row_and_weight_the_masks_by_the_decisions() -> None:
    model = seeded(0, lambda: TabNet(SMALL)).eval()
    x = _batch(SMALL)["x"]
    m_explain, masks = model.explain(x)
    assert m_explain.shape == (128, 10) and (m_explain >= 0).all()
    assert torch.allclose(m_explain.sum(1), torch.ones(128), atol=1e-5)
    assert torch.equal(masks, model(x).masks)
    importances = global_importances(m_explain)
    assert importances.shape == (10,) and torch.isclose(importances.sum(), torch.tensor(1.0))


def test_the_loss_is_bce_plus_lambda_sparse_times_the_sparsity_term() -> None:
    config = TabNetConfig(lambda_sparse=0.5)
    out = TabNetOutput(logits=torch.tensor([2.0, -1.0]), sparsity_loss=torch.tensor(0.3), masks=torch.zeros(5, 2, 28))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])) + 0.15
    loss = TabNetLoss(config)
    assert torch.isclose(loss(out, {"label": torch.tensor([1.0, 0.0])}), expected)
    assert torch.isclose(loss(out, {"label": torch.tensor([1, 0], dtype=torch.int8)}), expected)
    with pytest.raises(ModelConfigError, match="one label per row"):
        loss(out, {"label": torch.zeros(4)})


def test_one_adam_step_on_a_fixed_batch_lowers_the_loss() -> None:
    model = seeded(0, lambda: TabNet(SMALL))
    batch, loss_fn = _batch(SMALL), TabNetLoss(SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)  # the analysis' learning rate
    before = loss_fn(model(batch["x"]), batch)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert loss_fn(model(batch["x"]), batch) < before


def test_gradients_reach_every_parameter() -> None:
    model = seeded(0, lambda: TabNet(SMALL))
    batch = _batch(SMALL)
    TabNetLoss(SMALL)(model(batch["x"]), batch).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_the_shared_linear_layers_are_shared_by_every_step() -> None:
    model = TabNet(SMALL)
    first = model.transformers[0]
    for transformer in model.transformers[1:]:
        assert all(transformer[i].fc is first[i].fc for i in range(2))  # shared
        assert all(transformer[i].fc is not first[i].fc for i in range(2, 4))  # step-specific
        assert transformer[0].norm is not first[0].norm  # each step has its own batch norms


def test_two_seeded_builds_give_identical_outputs() -> None:
    x = _batch(SMALL)["x"]
    a, b = (seeded(7, lambda: TabNet(SMALL))(x) for _ in range(2))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.masks, b.masks)


def test_the_config_survives_a_json_round_trip() -> None:
    for config in (TabNetConfig(), SMALL):
        assert TabNetConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(ModelConfigError, match="unknown TabNetConfig fields \\['n_step'\\]"):
        TabNetConfig.from_dict({"n_step": 5})


@pytest.mark.parametrize(("changes", "field"), [
    ({"n_steps": 0}, "n_steps=0"), ({"virtual_batch_size": 0}, "virtual_batch_size=0"), ({"momentum": 1.0}, "momentum"),
    ({"gamma": 0.5}, "gamma"), ({"n_shared": 0, "n_independent": 0}, "n_shared"), ({"n_d": 2.5}, "n_d"),
    ({"lambda_sparse": -1.0}, "lambda_sparse"),
])
def test_a_bad_config_is_refused_naming_the_field_and_the_fix(changes: dict[str, object], field: str) -> None:
    assert issubclass(ModelConfigError, ShoalError)
    with pytest.raises(ModelConfigError, match=f"{field}.*e\\.g\\."):
        TabNetConfig(**changes)  # type: ignore[arg-type]


def test_an_input_with_the_wrong_column_count_is_refused() -> None:
    with pytest.raises(ModelConfigError, match=r"expected input \(B, 10\), got \(4, 28\)"):
        TabNet(SMALL)(torch.zeros(4, 28))

"""TabNet (Arik & Pfister 2020, "TabNet: Attentive Interpretable Tabular Learning") for HIGGS.

Input batch norm, then `n_steps` decision steps. Each step's feature transformer is
`n_shared` GLU blocks whose linear layers are shared by every step, then `n_independent`
step-specific blocks (block = Linear without bias -> ghost batch norm -> GLU; every block
after the first is residual, scaled by sqrt(0.5)). A step's output splits into a decision
part d (n_d) and an attention part a (n_a). The attentive transformer turns the previous
step's a into the next mask: Linear -> ghost batch norm -> times the prior scales P ->
sparsemax; then P <- P * (gamma - M). Step 0 only gives the first a. The ReLU(d) of the
steps are summed and a linear layer without bias (the paper's W_final) gives the logits.
Weights start from torch's defaults, not the TensorFlow code's Glorot uniform.

Output: one logit per row (`n_outputs = 1`, for BCE with logits on HIGGS' 0/1 label);
`n_outputs > 1` gives (B, n_outputs) class logits for cross-entropy. `forward` also returns
the entropy sparsity term and the masks; `TabNetLoss(config)` adds lambda_sparse x sparsity.

Defaults are TabNet-S as the analysis ran it on HIGGS (the paper's appendix): n_d 24, n_a 26,
5 steps, gamma 1.5, lambda_sparse 1e-6, virtual batch 512, batch-norm momentum 0.6. The
training settings that go with it, batch 16,384 and Adam learning rate 0.02, belong to the
train config, not here.

Momentum: `momentum = 0.6` is stored as the paper wrote it, in the convention of the
paper's TensorFlow code (`tf.layers.batch_normalization(momentum=m)`): the weight of the OLD
running average, running = m * running + (1 - m) * batch. torch weighs the NEW batch, so every
batch norm here gets torch momentum `1 - config.momentum` = 0.4 (`TabNetConfig.torch_momentum`).
We assume the TF convention because the paper's hyperparameters, 0.6 among them, are those of
its TensorFlow code; read as a torch momentum, 0.6 would be the TF value 0.4. pytorch-tabnet's
default momentum=0.02 is in torch's convention (TF 0.98): not comparable with this field.

Ghost batch norm: the rows of a batch are shuffled, so any equal split of them is a valid set
of virtual batches; taking row i into chunk i mod chunks makes the (B, F) batch a
(B / chunks, chunks x F) matrix without a copy, and ONE `F.batch_norm` over it normalizes each
(chunk, feature) column over its rows, with ONE running-statistics update per batch, the
chunks' statistics averaged (as Keras' `virtual_batch_size` does) — not pytorch-tabnet's Python
loop over `torch.chunk` pieces that updates the running statistics once per chunk (and not
`F.instance_norm` over a transposed view, which copied the batch twice per norm: 23% of a CPU
step). The batch splits into ceil(B / vbs) near-equal chunks (1000 rows, vbs 512: 2 x 500);
when those are not all equal (B = 1001) it falls back to a loop over `torch.tensor_split`
chunks with the same single update. Eval mode is a plain batch norm with the running statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from shoal.errors import ModelConfigError


@dataclass(frozen=True)
class TabNetConfig:
    """Sizes of the network (TabNet-S on HIGGS by default).

    Attributes:
        n_features: input columns (28 standardized HIGGS features).
        n_outputs: 1 (one logit, binary BCE) or the number of classes.
        n_d, n_a: widths of the decision and attention parts of each step's output.
        n_steps: decision steps.
        gamma: prior relaxation; 1 uses each feature in at most one step.
        n_shared, n_independent: GLU blocks shared by all steps and specific to each step.
        virtual_batch_size: rows per ghost batch-norm chunk.
        momentum: batch-norm momentum in TensorFlow's convention (weight of the old average).
        lambda_sparse: weight of the entropy sparsity term in `TabNetLoss`.
        epsilon: inside the log of the sparsity term.
    """

    n_features: int = 28
    n_outputs: int = 1
    n_d: int = 24
    n_a: int = 26
    n_steps: int = 5
    gamma: float = 1.5
    n_shared: int = 2
    n_independent: int = 2
    virtual_batch_size: int = 512
    momentum: float = 0.6
    lambda_sparse: float = 1e-6
    epsilon: float = 1e-15

    def __post_init__(self) -> None:
        for name, least, example in (("n_features", 1, 28), ("n_outputs", 1, 1), ("n_d", 1, 24), ("n_a", 1, 26),
                                     ("n_steps", 1, 5), ("n_shared", 0, 2), ("n_independent", 0, 2),
                                     ("virtual_batch_size", 2, 512)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ModelConfigError(f"TabNetConfig.{name}={value!r} must be a whole number >= {least}, e.g. {example}")
        if self.n_shared + self.n_independent < 1:
            raise ModelConfigError("TabNetConfig.n_shared + n_independent is 0; each step needs a GLU block, e.g. 2 and 2")
        if not self.gamma >= 1:
            raise ModelConfigError(f"TabNetConfig.gamma={self.gamma} must be >= 1 (1: each feature used once), e.g. 1.5")
        if not 0 <= self.momentum < 1:
            raise ModelConfigError(f"TabNetConfig.momentum={self.momentum} must lie in [0, 1): the weight of the old "
                                   "running average (TensorFlow convention), e.g. 0.6")
        if not self.lambda_sparse >= 0 or not self.epsilon > 0:
            raise ModelConfigError(f"TabNetConfig.lambda_sparse={self.lambda_sparse} must be >= 0 and epsilon="
                                   f"{self.epsilon} > 0, e.g. 1e-6 and 1e-15")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TabNetConfig:
        """The inverse of `dataclasses.asdict`, also after a JSON round trip."""
        names = [field.name for field in fields(cls)]
        if unknown := sorted(set(data) - set(names)):
            raise ModelConfigError(f"unknown TabNetConfig fields {unknown}; the fields are {names}")
        return cls(**data)  # type: ignore[arg-type]

    @property
    def torch_momentum(self) -> float:
        """The `momentum` argument of torch's batch norm: the weight of the new batch, 1 - momentum."""
        return 1.0 - self.momentum


class TabNetOutput(NamedTuple):
    """What `TabNet.forward` returns."""

    logits: torch.Tensor  # (B,) for n_outputs 1, else (B, n_outputs)
    sparsity_loss: torch.Tensor  # () the paper's L_sparse, unweighted
    masks: torch.Tensor  # (n_steps, B, F) attention masks, rows sum to 1


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax over the last axis (Martins & Astudillo 2016): the Euclidean projection onto the simplex.

    Autograd through sort / gather / clamp gives the exact sparsemax Jacobian, so no custom backward.
    """
    z = z - z.amax(dim=-1, keepdim=True)  # shift-invariant; keeps the cumsum small
    sorted_z = z.sort(dim=-1, descending=True).values  # (..., n)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)  # (n,)
    cumsum = sorted_z.cumsum(dim=-1)  # (..., n)
    support = (1 + k * sorted_z > cumsum).sum(dim=-1, keepdim=True)  # (..., 1) support size, >= 1
    tau = (cumsum.gather(-1, support - 1) - 1) / support.to(z.dtype)  # (..., 1) threshold
    return (z - tau).clamp(min=0)


class GhostBatchNorm(nn.Module):
    """Batch norm over chunks of `virtual_batch_size` rows in training, running statistics in eval.

    Args:
        features: F, the normalized axis.
        virtual_batch_size: rows per chunk.
        momentum: torch's convention (weight of the new batch statistics).
    """

    def __init__(self, features: int, virtual_batch_size: int, momentum: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.virtual_batch_size, self.momentum, self.eps = virtual_batch_size, momentum, eps
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # (B, F), a plain batch norm with the running statistics
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        b, f = x.shape  # (B, F)
        chunks = math.ceil(b / self.virtual_batch_size)
        if b % chunks == 0:  # row i in chunk i % chunks: (B, F) is (B / chunks, chunks * F) without a copy
            view = x.reshape(b // chunks, chunks * f)  # (vbs, chunks * F): one batch-norm kernel normalizes each
            mean, var = self.running_mean.repeat(chunks), self.running_var.repeat(chunks)  # (chunk, feature) column
            out = F.batch_norm(view, mean, var, self.weight.repeat(chunks), self.bias.repeat(chunks), True,
                               self.momentum, self.eps)
            with torch.no_grad():  # one running update: the mean of the chunks' updates
                self.running_mean.copy_(mean.view(chunks, f).mean(0))
                self.running_var.copy_(var.view(chunks, f).mean(0))
            return out.view(b, f)  # (B, F)
        parts = torch.tensor_split(x, chunks)  # sizes differ by one row: the rare last batch of an epoch
        out = torch.cat([F.batch_norm(p, None, None, self.weight, self.bias, True, 0.0, self.eps) for p in parts])
        with torch.no_grad():  # the same single update as the fast path: the mean of the chunks' statistics
            self.running_mean.lerp_(torch.stack([p.mean(0) for p in parts]).mean(0), self.momentum)
            self.running_var.lerp_(torch.stack([p.var(0) for p in parts]).mean(0), self.momentum)
        return out


class GLUBlock(nn.Module):
    """Linear (no bias) -> ghost batch norm -> GLU; residual, scaled by sqrt(0.5), unless it changes the width."""

    def __init__(self, fc: nn.Linear, config: TabNetConfig) -> None:
        super().__init__()
        self.fc = fc  # may be shared with the other steps' blocks
        self.norm = GhostBatchNorm(fc.out_features, config.virtual_batch_size, config.torch_momentum)
        self.residual = fc.in_features * 2 == fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.glu(self.norm(self.fc(x)), dim=-1)  # (B, in) -> (B, 2 (n_d + n_a)) -> (B, n_d + n_a)
        return (x + out) * math.sqrt(0.5) if self.residual else out


class TabNet(nn.Module):
    """The network; `forward(x)` with x (B, F) returns a `TabNetOutput`.

    Args:
        config: sizes; `config.n_features` must match the input columns.
    """

    def __init__(self, config: TabNetConfig) -> None:
        super().__init__()
        self.config = config
        width = config.n_d + config.n_a
        inputs = [config.n_features] + [width] * (config.n_shared + config.n_independent - 1)
        shared = [nn.Linear(n_in, 2 * width, bias=False) for n_in in inputs[: config.n_shared]]

        def transformer() -> nn.Sequential:  # the shared linear layers with this step's own batch norms
            specific = [nn.Linear(n_in, 2 * width, bias=False) for n_in in inputs[config.n_shared:]]
            return nn.Sequential(*(GLUBlock(fc, config) for fc in shared + specific))

        self.input_norm = nn.BatchNorm1d(config.n_features, momentum=config.torch_momentum)
        self.transformers = nn.ModuleList(transformer() for _ in range(config.n_steps + 1))  # step 0 gives a only
        self.attentions = nn.ModuleList(
            nn.Sequential(nn.Linear(config.n_a, config.n_features, bias=False),
                          GhostBatchNorm(config.n_features, config.virtual_batch_size, config.torch_momentum))
            for _ in range(config.n_steps)
        )
        self.head = nn.Linear(config.n_d, config.n_outputs, bias=False)

    def _steps(self, x: torch.Tensor) -> tuple[TabNetOutput, torch.Tensor]:
        """The output and each step's decision contribution eta = sum_d ReLU(d), (n_steps, B)."""
        if x.dim() != 2 or x.shape[1] != self.config.n_features:
            raise ModelConfigError(f"expected input (B, {self.config.n_features}), got {tuple(x.shape)}; "
                                   "build the model with the features' column count")
        n_d, eps = self.config.n_d, self.config.epsilon
        x = self.input_norm(x)  # (B, F)
        a = self.transformers[0](x)[:, n_d:]  # (B, n_a)
        prior = torch.ones_like(x)  # (B, F)
        decision = x.new_zeros(x.shape[0], n_d)  # (B, n_d)
        masks, etas = [], []
        for transformer, attention in zip(self.transformers[1:], self.attentions, strict=True):
            mask = sparsemax(attention(a) * prior)  # (B, F)
            prior = prior * (self.config.gamma - mask)
            out = transformer(mask * x)  # (B, n_d + n_a)
            d, a = F.relu(out[:, :n_d]), out[:, n_d:]  # (B, n_d), (B, n_a)
            decision = decision + d
            masks.append(mask)
            etas.append(d.sum(dim=1))  # (B,)
        masks_t = torch.stack(masks)  # (n_steps, B, F)
        sparsity = (-masks_t * torch.log(masks_t + eps)).sum() / (self.config.n_steps * x.shape[0])
        logits = self.head(decision)  # (B, n_outputs)
        logits = logits.squeeze(1) if self.config.n_outputs == 1 else logits
        return TabNetOutput(logits=logits, sparsity_loss=sparsity, masks=masks_t), torch.stack(etas)

    def forward(self, x: torch.Tensor) -> TabNetOutput:
        return self._steps(x)[0]

    @torch.no_grad()
    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row feature importances as the paper aggregates them, and the per-step masks.

        M_explain[b, j] = sum_i eta_i[b] M_i[b, j] with eta_i = sum_d ReLU(d_i), normalized per row to
        sum 1 (a row whose steps all have eta 0 stays 0). Uses the model's mode: call `eval()` first
        for inference (running statistics).

        Returns:
            M_explain (B, F) and masks (n_steps, B, F).
        """
        output, etas = self._steps(x)
        weighted = (etas.unsqueeze(-1) * output.masks).sum(dim=0)  # (B, F)
        return weighted / weighted.sum(dim=1, keepdim=True).clamp(min=torch.finfo(weighted.dtype).tiny), output.masks


def global_importances(m_explain: torch.Tensor) -> torch.Tensor:
    """Global feature importances (F,): the mean of M_explain (B, F) over rows, normalized to sum 1."""
    mean = m_explain.mean(dim=0)  # (F,)
    return mean / mean.sum().clamp(min=torch.finfo(mean.dtype).tiny)


class TabNetLoss:
    """`loss(output, batch)`: the task loss plus lambda_sparse x the sparsity term, in float32.

    A callable built from the config (it needs lambda_sparse), with the train loop's
    `loss_fn(output, batch)` signature. n_outputs 1: BCE with logits against batch["label"]
    (B,) 0/1, float or int; more outputs: cross-entropy against int64 class labels.
    """

    def __init__(self, config: TabNetConfig) -> None:
        self.lambda_sparse, self.n_outputs = config.lambda_sparse, config.n_outputs

    def __call__(self, output: TabNetOutput, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        label, logits = batch["label"], output.logits.float()
        if label.numel() != logits.shape[0]:  # (B, 1) vs (B,) broadcasting would silently mix rows
            raise ModelConfigError(f"labels {tuple(label.shape)} do not match logits {tuple(logits.shape)}; "
                                   "give one label per row, shape (B,)")
        if self.n_outputs == 1:
            task = F.binary_cross_entropy_with_logits(logits, label.reshape(logits.shape).float())
        else:
            task = F.cross_entropy(logits, label.reshape(-1).long())
        return task + self.lambda_sparse * output.sparsity_loss.float()


class TabNetLogits(nn.Module):
    """A TabNet that returns only its logits: for inference over many rows (the masks of 11 M rows are 6 GB)."""

    def __init__(self, model: TabNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits  # (B,)

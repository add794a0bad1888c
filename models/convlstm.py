"""ConvLSTM ENSO forecaster (after Keydana 2021, "Convolutional LSTM for spatial forecasting").

Six monthly SST grids in; out: the SST grid at the first lead, and the Niño 3.4 anomaly and
ENSO phase at every requested lead (`leads`, months after the last input month; lead 1 is
the analysis' next month): one model, one index output and one phase head output per lead,
all read from the same shared trunk, so every lead costs one forward pass.
A 3-layer ConvLSTM (hidden 16, 16, 32; kernels 3, 3, 5) feeds a grid head (conv 5x5) and
a trunk (conv 5x5 stride 2, conv 5x5 stride 3, linear 64, batch norm, ReLU) shared by an
index head and a phase head. As published, the two trunk convolutions have no activation
between them; the published code calls an undeclared `b3`, the declared batch norm is used
here. Its running statistics are recomputed with each epoch's final weights by the train loop
(`shoal.models.train`, precise batch norm): over batches of 4 windows a running average lagged
its network by tens of standard deviations. The flatten size is derived from the grid size (33408 at 115 x 360), so any grid of
at least 13 x 13 cells works without code changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from shoal.errors import ModelConfigError

# The trunk's two convolutions: (kernel, stride), no padding, as published.
TRUNK = ((5, 2), (5, 3))


def conv_output_size(size: int, *, kernel: int, stride: int) -> int:
    """Cells along one axis after an unpadded convolution."""
    return (size - kernel) // stride + 1


def trunk_output_size(size: int) -> int:
    """Cells along one axis after the trunk's two convolutions (115 -> 18, 360 -> 58)."""
    for kernel, stride in TRUNK:
        size = conv_output_size(size, kernel=kernel, stride=stride)
    return size


@dataclass(frozen=True)
class ConvLSTMConfig:
    """Sizes and loss weights of the forecaster.

    Attributes:
        input_channels: variables per grid cell (1: SST).
        hidden: hidden channels of each ConvLSTM layer.
        kernels: kernel size of each ConvLSTM layer (odd: the padding keeps the grid size).
        height, width: the grid (115 x 360 at 1°, 55°S-60°N); at least 13 x 13.
        trunk_channels: channels of the trunk's two convolutions.
        fc: width of the shared linear layer.
        head_hidden: hidden width of the index and phase heads.
        n_phases: phase classes (E, L, N).
        leads: forecast leads in months, increasing (1 = the next month).
        grid_weight, index_weight, phase_weight: the loss mix.
    """

    input_channels: int = 1
    hidden: tuple[int, ...] = (16, 16, 32)
    kernels: tuple[int, ...] = (3, 3, 5)
    height: int = 115
    width: int = 360
    trunk_channels: int = 32
    fc: int = 64
    head_hidden: int = 128
    n_phases: int = 3
    leads: tuple[int, ...] = (1,)
    grid_weight: float = 0.2
    index_weight: float = 0.4
    phase_weight: float = 0.4

    def __post_init__(self) -> None:
        if len(self.hidden) != len(self.kernels) or not self.hidden:
            raise ModelConfigError(f"hidden {self.hidden} and kernels {self.kernels} need one entry per layer each")
        if any(k % 2 == 0 for k in self.kernels):
            raise ModelConfigError(f"kernels {self.kernels} must be odd so that padding k // 2 keeps the grid size")
        if not self.leads or list(self.leads) != sorted(set(self.leads)) or self.leads[0] < 1:
            raise ModelConfigError(f"leads {self.leads} must be distinct whole months >= 1, increasing, e.g. (1, 3, 6)")
        if min(trunk_output_size(self.height), trunk_output_size(self.width)) < 1:
            raise ModelConfigError(
                f"grid {self.height} x {self.width} is too small for the trunk (two 5x5 convolutions, "
                "strides 2 and 3): use at least 13 x 13 cells, e.g. a smaller coarsen factor"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ConvLSTMConfig:
        """The inverse of `dataclasses.asdict`, also after a JSON round trip (lists -> tuples)."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})  # type: ignore[arg-type]

    @property
    def flat(self) -> int:
        """Features entering the shared linear layer: 32 * 18 * 58 = 33408 at 115 x 360."""
        return self.trunk_channels * trunk_output_size(self.height) * trunk_output_size(self.width)


class EnsoOutput(NamedTuple):
    """What the model predicts: the grid at the first lead, index and phase at every lead."""

    grid: torch.Tensor  # (B, 1, H, W) normalized SST
    index: torch.Tensor  # (B, L) normalized Niño 3.4 anomaly
    phase_logits: torch.Tensor  # (B, L, n_phases) over E, L, N


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: a single convolution over [input, hidden] gives the four gates."""

    def __init__(self, input_channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(input_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state  # (B, hidden, H, W) each; x: (B, C_in, H, W)
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)  # (B, hidden, H, W) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """The forecaster; `forward(x)` with x (B, T, C, H, W) returns an `EnsoOutput`.

    Args:
        config: sizes; `config.height` x `config.width` must match the input grid.
    """

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__()
        self.config = config
        inputs = (config.input_channels, *config.hidden[:-1])
        self.cells = nn.ModuleList(
            ConvLSTMCell(c_in, c_hidden, k) for c_in, c_hidden, k in zip(inputs, config.hidden, config.kernels, strict=True)
        )
        last = config.hidden[-1]
        self.grid_head = nn.Conv2d(last, 1, 5, padding=2)
        (k2, s2), (k3, s3) = TRUNK
        self.conv2 = nn.Conv2d(last, config.trunk_channels, k2, stride=s2)
        self.conv3 = nn.Conv2d(config.trunk_channels, config.trunk_channels, k3, stride=s3)
        self.flat = config.flat
        self.fc = nn.Linear(self.flat, config.fc)
        self.norm = nn.BatchNorm1d(config.fc)
        leads = len(config.leads)
        self.index_head = nn.Sequential(nn.Linear(config.fc, config.head_hidden), nn.ReLU(), nn.Linear(config.head_hidden, leads))
        self.phase_head = nn.Sequential(
            nn.Linear(config.fc, config.head_hidden), nn.ReLU(), nn.Linear(config.head_hidden, leads * config.n_phases)
        )

    def forward(self, x: torch.Tensor) -> EnsoOutput:
        b, steps, channels, height, width = x.shape  # (B, T, C, H, W)
        if (channels, height, width) != (self.config.input_channels, self.config.height, self.config.width):
            raise ModelConfigError(
                f"expected input (B, T, {self.config.input_channels}, {self.config.height}, {self.config.width}), "
                f"got {tuple(x.shape)}; build the model with the features' grid size"
            )
        layer_input = x  # (B, T, C, H, W)
        for depth, cell in enumerate(self.cells):
            h = x.new_zeros(b, cell.hidden, height, width)  # (B, hidden, H, W)
            state = (h, h)
            outputs = []
            for t in range(steps):
                state = cell(layer_input[:, t], state)
                outputs.append(state[0])
            if depth < len(self.cells) - 1:  # the top layer's sequence is not needed, only its last state
                layer_input = torch.stack(outputs, dim=1)  # (B, T, hidden, H, W)
        last = state[0]  # (B, hidden[-1], H, W): the final hidden state of the top layer
        grid = self.grid_head(last)  # (B, 1, H, W)
        trunk = self.conv3(self.conv2(last))  # (B, 32, H', W'), no activation between, as published
        trunk = F.relu(self.norm(self.fc(trunk.flatten(1))))  # (B, fc)
        phase = self.phase_head(trunk).unflatten(1, (len(self.config.leads), self.config.n_phases))  # (B, L, P)
        return EnsoOutput(grid=grid, index=self.index_head(trunk), phase_logits=phase)


def enso_loss(
    output: EnsoOutput, batch: Mapping[str, torch.Tensor], land_mask: torch.Tensor, config: ConvLSTMConfig
) -> torch.Tensor:
    """grid_weight x MSE(SST grid, ocean only) + index_weight x MSE(index) + phase_weight x CE(phase).

    The index and phase terms are means over every lead.

    Computed in float32 (also under autocast). The ocean mean is a masked sum, not a boolean
    gather, so the loss has a static shape and does not synchronize a GPU.

    Args:
        output: the model's prediction.
        batch: "grid" (B, 1, H, W), "index" (B, L), "phase" (B, L) int64.
        land_mask: (H, W) bool, True on land; moved to the prediction's device.
        config: the loss weights.

    Returns:
        A scalar tensor.
    """
    if batch["index"].shape != output.index.shape:  # broadcasting would silently mix samples
        raise ModelConfigError(f"targets (B, leads) {tuple(batch['index'].shape)} do not match the model's "
                               f"{tuple(output.index.shape)}; build the windows and the model with the same leads")
    sea = ~land_mask.to(device=output.grid.device, dtype=torch.bool)  # (H, W)
    squared = (output.grid.float() - batch["grid"].float()) ** 2  # (B, 1, H, W)
    cells = sea.sum() * squared.shape[0] * squared.shape[1]
    grid = torch.where(sea, squared, 0.0).sum() / cells.clamp(min=1)  # where, not *: NaN on land stays out
    index = F.mse_loss(output.index.float(), batch["index"].float())
    phase = F.cross_entropy(output.phase_logits.float().flatten(0, 1), batch["phase"].flatten())
    return config.grid_weight * grid + config.index_weight * index + config.phase_weight * phase

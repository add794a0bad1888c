"""ConvLSTM ENSO forecaster (after Keydana 2021, "Convolutional LSTM for spatial forecasting").

Six monthly SST grids in; out: the next month's SST grid, Niño 3.4 index and ENSO phase.
A 3-layer ConvLSTM (hidden 16, 16, 32; kernels 3, 3, 5) feeds a grid head (conv 5x5) and
a trunk (conv 5x5 stride 2, conv 5x5 stride 3, linear 64, batch norm, ReLU) shared by an
index head and a phase head. The published code calls an undeclared `b3`; the declared
batch norm is used here. The flatten size is derived from the grid size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ConvLSTMConfig:
    """Sizes and loss weights; `height` x `width` is the grid (115 x 360 at 1°, 55°S-60°N)."""

    input_channels: int = 1
    hidden: tuple[int, ...] = (16, 16, 32)
    kernels: tuple[int, ...] = (3, 3, 5)
    height: int = 115
    width: int = 360
    trunk_channels: int = 32
    fc: int = 64
    head_hidden: int = 128
    n_phases: int = 3
    grid_weight: float = 0.2
    index_weight: float = 0.4
    phase_weight: float = 0.4


class EnsoOutput(NamedTuple):
    """What the model predicts for the next month."""

    grid: torch.Tensor  # (B, 1, H, W)
    index: torch.Tensor  # (B,)
    phase_logits: torch.Tensor  # (B, n_phases)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: a single convolution over [input, hidden] gives the four gates."""

    def __init__(self, input_channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(input_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state  # (B, hidden, H, W) each
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class ConvLSTM(nn.Module):
    """The forecaster; `forward(x)` with x (B, T, C, H, W) returns an `EnsoOutput`."""

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__()
        self.config = config
        inputs = (config.input_channels, *config.hidden[:-1])
        self.cells = nn.ModuleList(
            ConvLSTMCell(c_in, c_hidden, k) for c_in, c_hidden, k in zip(inputs, config.hidden, config.kernels, strict=True)
        )
        last = config.hidden[-1]
        self.grid_head = nn.Conv2d(last, 1, 5, padding=2)
        self.conv2 = nn.Conv2d(last, config.trunk_channels, 5, stride=2)
        self.conv3 = nn.Conv2d(config.trunk_channels, config.trunk_channels, 5, stride=3)
        self.flat = config.trunk_channels * _conv_out(_conv_out(config.height, 5, 2), 5, 3) * _conv_out(
            _conv_out(config.width, 5, 2), 5, 3
        )
        self.fc = nn.Linear(self.flat, config.fc)
        self.norm = nn.BatchNorm1d(config.fc)
        self.index_head = nn.Sequential(nn.Linear(config.fc, config.head_hidden), nn.ReLU(), nn.Linear(config.head_hidden, 1))
        self.phase_head = nn.Sequential(
            nn.Linear(config.fc, config.head_hidden), nn.ReLU(), nn.Linear(config.head_hidden, config.n_phases)
        )

    def forward(self, x: torch.Tensor) -> EnsoOutput:
        b, steps, _, height, width = x.shape  # (B, T, C, H, W)
        layer_input = x
        for cell in self.cells:
            h = x.new_zeros(b, cell.hidden, height, width)
            state = (h, h)
            outputs = []
            for t in range(steps):
                state = cell(layer_input[:, t], state)
                outputs.append(state[0])
            layer_input = torch.stack(outputs, dim=1)  # (B, T, hidden, H, W)
        last = state[0]  # (B, hidden[-1], H, W): the final hidden state of the top layer
        grid = self.grid_head(last)  # (B, 1, H, W)
        trunk = self.conv3(self.conv2(last))  # (B, 32, H', W'), no activation, as published
        trunk = F.relu(self.norm(self.fc(trunk.flatten(1))))  # (B, fc)
        return EnsoOutput(grid=grid, index=self.index_head(trunk).squeeze(1), phase_logits=self.phase_head(trunk))


def enso_loss(output: EnsoOutput, batch: dict[str, torch.Tensor], land: torch.Tensor, config: ConvLSTMConfig) -> torch.Tensor:
    """0.2 x MSE(SST grid, sea only) + 0.4 x MSE(index) + 0.4 x cross-entropy(phase)."""
    sea = ~land  # (H, W)
    grid = F.mse_loss(output.grid[:, 0][:, sea].float(), batch["grid"][:, 0][:, sea].float())
    index = F.mse_loss(output.index.float(), batch["index"].float())
    phase = F.cross_entropy(output.phase_logits.float(), batch["phase"])
    return config.grid_weight * grid + config.index_weight * index + config.phase_weight * phase

"""Spectrogram CNN for Speech Commands (the analysis' small Keras-style classifier).

Four stages of a 3x3 convolution without padding (Keras "valid"; 32, 64, 128, 256
channels), ReLU and 2x2 max-pooling; dropout 0.25; flatten; dense 128, ReLU, dropout 0.5;
dense to the word logits. The flatten size is derived from the input size
(256 x 14 x 4 = 14,336 at 257 x 101), so other spectrogram sizes work without code changes.
Weights start from torch's default initialization, not Keras' Glorot uniform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from shoal.errors import ModelConfigError

KERNEL, POOL = 3, 2


def stage_output_size(size: int) -> int:
    """Cells along one axis after a 3x3 valid convolution and a 2x2 max-pool (257 -> 127)."""
    return (size - KERNEL + 1) // POOL


@dataclass(frozen=True)
class AudioCNNConfig:
    """Sizes of the classifier.

    Attributes:
        n_freq, n_frames: the input spectrogram (frequency bins x frames).
        n_classes: words (30 in Speech Commands v0.01).
        channels: output channels of each conv stage.
        hidden: width of the dense layer.
        conv_dropout, dense_dropout: dropout after the conv stages and after the dense layer.
    """

    n_freq: int = 257
    n_frames: int = 101
    n_classes: int = 30
    channels: tuple[int, ...] = (32, 64, 128, 256)
    hidden: int = 128
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 1 or self.hidden < 1 or self.n_classes < 2:
            raise ModelConfigError(f"channels {self.channels}, hidden {self.hidden} and n_classes {self.n_classes} "
                                   "must be positive, with at least one conv stage and two classes")
        if not (0 <= self.conv_dropout < 1 and 0 <= self.dense_dropout < 1):
            raise ModelConfigError(f"dropouts must lie in [0, 1), got {self.conv_dropout} and {self.dense_dropout}")
        for axis, size in (("n_freq", self.n_freq), ("n_frames", self.n_frames)):
            for stage in range(len(self.channels)):
                if size - KERNEL + 1 < POOL:
                    raise ModelConfigError(
                        f"{axis}={getattr(self, axis)} is too small for {len(self.channels)} conv+pool stages "
                        f"(stage {stage + 1} gets {size}): use at least {self.min_size} frequency bins and frames"
                    )
                size = stage_output_size(size)

    @property
    def min_size(self) -> int:
        """The smallest input size along an axis that survives every stage (46 for four)."""
        size = 1
        for _ in self.channels:
            size = size * POOL + KERNEL - 1
        return size

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AudioCNNConfig:
        """The inverse of `dataclasses.asdict`, also after a JSON round trip (lists -> tuples)."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})  # type: ignore[arg-type]

    @property
    def flat(self) -> int:
        """Features entering the dense layer: 256 * 14 * 4 = 14336 at 257 x 101."""
        h, w = self.n_freq, self.n_frames
        for _ in self.channels:
            h, w = stage_output_size(h), stage_output_size(w)
        return self.channels[-1] * h * w


class AudioCNN(nn.Module):
    """The classifier; `forward(x)` with x (B, 1, F, T) returns logits (B, n_classes).

    Args:
        config: sizes; `config.n_freq` x `config.n_frames` must match the spectrograms.
    """

    def __init__(self, config: AudioCNNConfig) -> None:
        super().__init__()
        self.config = config
        inputs = (1, *config.channels[:-1])
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, KERNEL) for c_in, c_out in zip(inputs, config.channels, strict=True))
        self.conv_dropout = nn.Dropout(config.conv_dropout)
        self.flat = config.flat
        self.fc = nn.Linear(self.flat, config.hidden)
        self.dense_dropout = nn.Dropout(config.dense_dropout)
        self.head = nn.Linear(config.hidden, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (1, self.config.n_freq, self.config.n_frames):
            raise ModelConfigError(f"expected input (B, 1, {self.config.n_freq}, {self.config.n_frames}), got "
                                   f"{tuple(x.shape)}; build the model with the features' spectrogram size")
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), POOL)  # (B, C, 257, 101) -> (B, 32, 127, 49) -> ... -> (B, 256, 14, 4)
        x = self.conv_dropout(x).flatten(1)  # (B, flat)
        x = self.dense_dropout(F.relu(self.fc(x)))  # (B, hidden)
        return self.head(x)  # (B, n_classes)


def speech_loss(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the logits (B, n_classes) against batch["label"] (B,) int64, in float32."""
    return F.cross_entropy(logits.float(), batch["label"])

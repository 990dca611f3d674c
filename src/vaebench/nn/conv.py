"""Convolutional benchmark networks for 28 x 28 and 64 x 64 images.

Stride-2 4x4 convolutions halve the resolution at every layer, as in the dSprites
architecture of Burgess et al. 2018 ("Understanding disentangling in beta-VAE"), followed
by a linear head; the decoder mirrors the encoder with transposed convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Spatial plans: the resolution after each stride-2 layer, smallest last.
_PLANS = {28: (14, 7, 4), 64: (32, 16, 8, 4)}


def _plan(size: int) -> tuple[int, ...]:
    if size not in _PLANS:
        raise ValueError(
            f"the conv networks are made for 28 x 28 and 64 x 64 images, got {size} x {size}; "
            "use the 'mlp' networks or pass your own nn.Module"
        )
    return _PLANS[size]


def _check_square(input_dim: Sequence[int]) -> tuple[int, int]:
    if len(input_dim) != 3 or input_dim[1] != input_dim[2]:
        raise ValueError(f"conv networks need input_dim (C, S, S), got {tuple(input_dim)}")
    return input_dim[0], input_dim[1]


class ConvEncoder(nn.Module):
    """Images (B, C, S, S), S in {28, 64} -> (B, out_features)."""

    def __init__(self, input_dim: Sequence[int], out_features: int,
                 channels: Sequence[int] | None = None, hidden: int = 256):
        super().__init__()
        in_channels, size = _check_square(input_dim)
        plan = _plan(size)
        channels = tuple(channels or (32, 64, 128, 128)[: len(plan)])
        if len(channels) != len(plan):
            raise ValueError(f"channels needs {len(plan)} entries for {size} x {size} images")
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            # 28 -> 14 -> 7 -> 4 needs padding 1 with a 4x4 kernel except 7 -> 4 (3x3, pad 1).
            kernel = 3 if plan[i] == 4 and size == 28 else 4
            layers += [nn.Conv2d(in_channels, c, kernel, stride=2, padding=1), nn.ReLU()]
            in_channels = c
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = channels[-1] * plan[-1] ** 2
        self.head = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """z (B, latent_dim) -> (B, *output_shape), output_shape (C, S, S), S in {28, 64}."""

    def __init__(self, latent_dim: int, output_shape: Sequence[int],
                 channels: Sequence[int] | None = None, hidden: int = 256):
        super().__init__()
        out_channels, size = _check_square(output_shape)
        plan = _plan(size)
        channels = tuple(channels or (128, 128, 64, 32)[-len(plan):])
        if len(channels) != len(plan):
            raise ValueError(f"channels needs {len(plan)} entries for {size} x {size} images")
        self.start = (channels[0], plan[-1], plan[-1])
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, channels[0] * plan[-1] ** 2), nn.ReLU(),
        )
        layers: list[nn.Module] = []
        sizes = (*reversed(plan), size)  # e.g. 4, 7, 14, 28
        outs = (*channels[1:], out_channels)
        for i, (c_in, c_out) in enumerate(zip(channels, outs, strict=True)):
            # A transposed conv (k, s=2, p=1) maps n -> 2n - 4 + k; 4 -> 7 needs k = 3.
            kernel = sizes[i + 1] - 2 * sizes[i] + 4
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.ReLU())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.head(z).view(-1, *self.start))

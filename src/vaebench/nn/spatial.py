"""Convolutional networks with a spatial latent grid, for quantized models (VQ-VAE family).

The encoder maps images (B, C, H, W) to a grid of vectors (B, out_features, H / 2^k,
W / 2^k); the decoder maps a grid (B, latent_dim, h, w) back to (B, *output_shape). The
layout follows the VQ-VAE of van den Oord et al. 2017 (Sec. 4.1): k stride-2 4 x 4
convolutions, a 3 x 3 convolution, residual blocks (ReLU, 3 x 3 conv, ReLU, 1 x 1 conv),
and a 1 x 1 projection to the code dimension; the decoder mirrors it with transposed
convolutions. Defaults are light enough for a CPU: 28 x 28 -> 7 x 7 grid (k = 2),
64 x 64 -> 8 x 8 grid (k = 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SpatialDecoder", "SpatialEncoder", "default_downsamples", "spatial_grid"]


def default_downsamples(size: Sequence[int]) -> int:
    """Stride-2 layers by default: 3 for images of side 64 or more, else 2."""
    return 3 if min(size) >= 64 else 2


def spatial_grid(shape: Sequence[int], downsamples: int | None = None) -> tuple[int, int]:
    """The latent grid (h, w) of images of ``shape`` (C, H, W) after ``downsamples`` halvings.

    Raises a ValueError unless H and W are divisible by 2^downsamples.
    """
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"spatial networks need images (C, H, W), got shape {shape}")
    if downsamples is None:
        downsamples = default_downsamples(shape[1:])
    if not isinstance(downsamples, int) or downsamples < 1:
        raise ValueError(f"downsamples must be a positive integer, got {downsamples!r}")
    factor = 2**downsamples
    h, w = shape[1:]
    if h % factor or w % factor:
        raise ValueError(f"spatial networks with downsamples={downsamples} need H and W "
                         f"divisible by {factor}, got {h} x {w}")
    return h // factor, w // factor


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x))))."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stack(channels: int, residual_channels: int, blocks: int) -> list[nn.Module]:
    return [*(ResidualBlock(channels, residual_channels) for _ in range(blocks)), nn.ReLU()]


class SpatialEncoder(nn.Module):
    """Images (B, C, H, W) -> grid (B, out_features, H / 2^k, W / 2^k), k = ``downsamples``.

    ``out_features`` is the code dimension of each grid position (a quantized model's
    ``latent_dim``).
    """

    def __init__(self, input_dim: Sequence[int], out_features: int, hidden: int = 64,
                 residual_channels: int = 32, residual_blocks: int = 2,
                 downsamples: int | None = None):
        super().__init__()
        self.grid = spatial_grid(input_dim, downsamples)
        steps = downsamples or default_downsamples(tuple(input_dim)[1:])
        layers: list[nn.Module] = []
        c_in = input_dim[0]
        for i in range(steps):
            c_out = hidden // 2 if i < steps - 1 else hidden
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        layers.append(nn.Conv2d(hidden, hidden, 3, padding=1))
        layers += _stack(hidden, residual_channels, residual_blocks)
        layers.append(nn.Conv2d(hidden, out_features, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpatialDecoder(nn.Module):
    """Grid (B, latent_dim, h, w) -> (B, *output_shape), h = H / 2^k, w = W / 2^k."""

    def __init__(self, latent_dim: int, output_shape: Sequence[int], hidden: int = 64,
                 residual_channels: int = 32, residual_blocks: int = 2,
                 downsamples: int | None = None):
        super().__init__()
        self.grid = spatial_grid(output_shape, downsamples)
        steps = downsamples or default_downsamples(tuple(output_shape)[1:])
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, hidden, 3, padding=1)]
        layers += _stack(hidden, residual_channels, residual_blocks)
        c_in = hidden
        for i in range(steps):
            last = i == steps - 1
            c_out = output_shape[0] if last else hidden // 2
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

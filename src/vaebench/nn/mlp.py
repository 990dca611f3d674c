"""Fully connected encoder and decoder, the default networks for any input shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x of shape (B, *input_dim) -> (B, out_features)."""

    def __init__(self, input_dim: Sequence[int], out_features: int,
                 hidden: Sequence[int] = (512, 256)):
        super().__init__()
        self.net = _mlp([math.prod(input_dim), *hidden, out_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


#: What a decoder's last layer may pass through: nothing, or a sigmoid that keeps the output
#: in (0, 1) (a Gaussian mean for [0, 1] data, as pythae's default decoder does).
OUTPUT_ACTIVATIONS = {"identity": nn.Identity, "sigmoid": nn.Sigmoid}


class MLPDecoder(nn.Module):
    """z of shape (B, latent_dim) -> (B, *output_shape); ``output_activation`` is
    ``"identity"`` (logits, unbounded means) or ``"sigmoid"``."""

    def __init__(self, latent_dim: int, output_shape: Sequence[int],
                 hidden: Sequence[int] = (256, 512), output_activation: str = "identity"):
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of "
                             f"{', '.join(map(repr, OUTPUT_ACTIVATIONS))}, got "
                             f"{output_activation!r}")
        self.output_shape = tuple(output_shape)
        self.net = _mlp([latent_dim, *hidden, math.prod(output_shape)])
        if output_activation != "identity":
            self.net.append(OUTPUT_ACTIVATIONS[output_activation]())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)

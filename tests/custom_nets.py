"""User-style networks used by the tests (importable, so saved models can be loaded)."""

import torch
from torch import nn


class TinyEncoder(nn.Module):
    def __init__(self, features: int = 784, out: int = 8):
        super().__init__()
        self.linear = nn.Linear(features, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class TinyDecoder(nn.Module):
    def __init__(self, latent: int = 4, shape: tuple = (1, 28, 28)):
        super().__init__()
        self.shape = tuple(shape)
        self.linear = nn.Linear(latent, int(torch.tensor(shape).prod()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).view(-1, *self.shape)

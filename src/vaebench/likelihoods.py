"""Reconstruction terms: the decoder's distribution p(x | z) as a swappable object.

Every likelihood turns the decoder's output (its *parameters*) into a distribution over one
sample x and returns the per-sample negative log-likelihood in nats: summed over every
dimension of the sample (pixels, channels), normalizing constants included, never averaged
over pixels. The caller averages over the batch. See ``docs/`` and DESIGN.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from vaebench.data.sources import ArrayData

LOG_2PI = math.log(2 * math.pi)

_LIKELIHOODS: dict[str, type[Likelihood]] = {}


def _register(cls: type[Likelihood]) -> type[Likelihood]:
    _LIKELIHOODS[cls.name] = cls
    return cls


def list_likelihoods() -> list[str]:
    return sorted(_LIKELIHOODS)


def _sum_per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).sum(1)


class Likelihood(nn.Module):
    """Base class: a conditional distribution over one sample given decoder parameters."""

    name: ClassVar[str]

    def __init__(self, input_dim: tuple[int, ...]):
        super().__init__()
        self.input_dim = tuple(input_dim)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """Shape of the decoder output for one sample."""
        return self.input_dim

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample -log p(x | params) in nats, shape (B,)."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | params]: what reconstructions and samples show."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, data: ArrayData) -> None:
        """Hook to compute data statistics once from the training set."""

    def bits_per_dim(self, nll: torch.Tensor) -> torch.Tensor:
        """Convert per-sample nats to bits per dimension."""
        return nll / (math.prod(self.input_dim) * math.log(2))


@_register
class Gaussian(Likelihood):
    """N(x; mu, sigma^2 I) with a fixed sigma.

    -log p = 0.5 * sum (x - mu)^2 / sigma^2 + D log sigma + (D / 2) log 2 pi.
    sigma^2 scales the reconstruction against the other terms: a fixed sigma^2 acts like the
    KL weight beta of a beta-VAE (Higgins et al. 2017), up to a constant.
    """

    name = "gaussian"

    def __init__(self, input_dim: tuple[int, ...], sigma: float = 1.0):
        super().__init__(input_dim)
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.sigma = float(sigma)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = math.prod(self.input_dim)
        squared = _sum_per_sample((x - params) ** 2)
        return 0.5 * squared / self.sigma**2 + d * (math.log(self.sigma) + 0.5 * LOG_2PI)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return params + self.sigma * torch.randn_like(params)


@_register
class Bernoulli(Likelihood):
    """Bernoulli on logits, for binary data (or [0, 1] data read as probabilities).

    -log p = sum softplus(l) - x * l, computed stably. For non-binary x in [0, 1] this is
    a cross-entropy, not a normalized density: see ``continuous_bernoulli`` for that.
    """

    name = "bernoulli"

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _sum_per_sample(F.binary_cross_entropy_with_logits(params, x, reduction="none"))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params))


def build_likelihood(
    name: str, input_dim: tuple[int, ...], sigma: float | str = 1.0, sigma_per: str = "scalar"
) -> Likelihood:
    """Build the likelihood named in a model config."""
    if name not in _LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; known: {', '.join(list_likelihoods())}")
    cls = _LIKELIHOODS[name]
    if cls is Gaussian:
        if isinstance(sigma, str):
            raise ValueError(f"sigma={sigma!r} is not supported yet; give a positive number")
        return Gaussian(input_dim, sigma=sigma)
    return cls(input_dim)

"""Posteriors q(z | x) and priors p(z), in the style of ``torch.distributions``.

Log-densities are per sample, summed over latent dimensions: shape (B,) for a batch.
"""

from __future__ import annotations

import math

import torch

from vaebench.likelihoods import LOG_2PI


class DiagonalGaussian:
    """N(z; mean, diag(exp(log_var))), reparameterized (Kingma and Welling 2014)."""

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor):
        self.mean = mean
        self.log_var = log_var

    @classmethod
    def from_params(cls, params: torch.Tensor) -> DiagonalGaussian:
        """Split an encoder output of 2 * latent_dim features into mean and log-variance."""
        mean, log_var = params.chunk(2, dim=1)
        return cls(mean, log_var)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.log_var)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        eps = torch.randn(sample_shape + self.mean.shape, dtype=self.mean.dtype,
                          device=self.mean.device)
        return self.mean + eps * self.std

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        per_dim = -0.5 * ((z - self.mean) ** 2 / self.log_var.exp() + self.log_var + LOG_2PI)
        return per_dim.flatten(-self.mean.dim() + 1).sum(-1)

    def kl_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) = 0.5 * sum (mean^2 + var - 1 - log var), per sample."""
        per_dim = 0.5 * (self.mean**2 + self.log_var.exp() - 1.0 - self.log_var)
        return per_dim.flatten(1).sum(1)


class PointMass:
    """A deterministic code: the posterior of a plain autoencoder."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.mean.expand(sample_shape + self.mean.shape)


class StandardNormal:
    """The prior N(0, I) over a latent of shape ``event_shape``."""

    def __init__(self, event_shape: tuple[int, ...]):
        self.event_shape = tuple(event_shape)

    def sample(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn((n, *self.event_shape), device=device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        d = math.prod(self.event_shape)
        squared = (z**2).flatten(z.dim() - len(self.event_shape)).sum(-1)
        return -0.5 * squared - 0.5 * d * LOG_2PI

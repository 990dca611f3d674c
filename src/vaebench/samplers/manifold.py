"""Sampling along an RHVAE's learned metric: Hamiltonian Monte Carlo on the inverse of the
metric's volume element (Chadebec, Mantoux and Allassonnière 2020, "Geometry-Aware
Hamiltonian Variational Auto-Encoder"; Chadebec and Allassonnière 2022, "A Geometric
Perspective on Variational Autoencoders", NeurIPS).

The target. The RHVAE learns G^{-1}(z) = sum_i L_i L_i^T exp(-||z - c_i||^2 / T^2) + lambda I
(Eq. 9 of the 2020 paper, :func:`vaebench.models.rhvae.inverse_metric`), at least lambda I,
larger near the training codes c_i, exactly lambda I far from them. The chains target
p(z) proportional to sqrt(det G^{-1}(z)), the inverse of the volume element sqrt(det G(z)),
the sampling scheme of the RHVAE's authors (pythae's ``RHVAESampler``). It is the 2022
paper's Riemannian uniform law sqrt(det M(z)) for M = G^{-1}, which has the form of that
paper's metric (local matrices weighted by a kernel, plus a regularizer); sqrt(det G(z))
itself peaks away from the codes. On R^D the target is not normalizable (it tends to
lambda^(D/2)): the chains start at the training codes (or prior draws) and run
``mcmc_steps`` transitions.

Numerics: the chains run in float64; log p(z) = sum log diag chol(G^{-1}(z)) needs no
inverse, and where the factorization fails (a metric singular to float64 precision) it is
-inf; gradients are taken by autograd; a proposal is accepted only if it is a finite point
and its log-ratio is not NaN, so every state of a chain is a finite point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from vaebench.models.hvae import hamiltonian_flow, tempering_schedule
from vaebench.models.rhvae import RHVAE, InverseMetric, gradient, log_det
from vaebench.samplers.base import Sampler, SamplerConfig
from vaebench.samplers.registry import register_sampler

#: Bound on chains x centroids x latent_dim, the size of the metric kernel's differences:
#: chains run together in groups within it.
KERNEL_ELEMENTS = 2**24

LogDensity = Callable[[torch.Tensor], torch.Tensor]


class ManifoldSamplerConfig(SamplerConfig):
    """Options of :class:`ManifoldSampler`; the defaults are pythae's ``RHVAESampler``'s."""

    mcmc_steps: int = Field(100, gt=0, description="HMC transitions per chain")
    n_lf: int = Field(15, gt=0, description="leapfrog steps per transition")
    eps_lf: float = Field(0.03, gt=0, description="leapfrog step size")
    beta_zero: float = Field(1.0, gt=0, le=1, description="initial inverse temperature of "
                             "the momentum in a trajectory (1: plain HMC, which leaves the "
                             "target invariant; below 1 the momentum is tempered as in the "
                             "RHVAE and the chain is approximate)")
    start: Literal["centroids", "prior"] = Field(
        "centroids", description="where chains start: 'centroids', uniformly chosen recorded "
                                 "training codes, or 'prior', draws from N(0, I)")


def recorded_metric(model: RHVAE) -> tuple[torch.Tensor, torch.Tensor]:
    """The centroids (N, D) and matrices L L^T (N, D, D) recorded in training, which define
    the RHVAE's eval-mode metric, in float64."""
    filled = min(int(model.centroids_seen), model.config.max_centroids)
    return model.centroids[:filled].double(), model.centroid_matrices[:filled].double()


def log_volume_density(metric: InverseMetric) -> LogDensity:
    """z -> 1/2 log det G^{-1}(z) = sum log diag chol(G^{-1}(z)), the unnormalized log of
    the target; -inf where G^{-1}(z) is not positive definite in floating point."""
    def log_density(z: torch.Tensor) -> torch.Tensor:
        factor, failed = torch.linalg.cholesky_ex(metric(z))
        return torch.where(failed == 0, 0.5 * log_det(factor), -math.inf)

    return log_density


@torch.no_grad()
def hmc_transition(z: torch.Tensor, log_density: LogDensity, step_size: float,
                   sqrt_betas: list[float]) -> torch.Tensor:
    """One HMC transition per row (Neal 2011, "MCMC using Hamiltonian dynamics", Sec. 3.2):
    rho = gamma / sqrt(beta_0), gamma ~ N(0, I); leapfrog steps of H(z, rho) = -log p(z) +
    |rho|^2 / 2 with HVAE's tempering (:func:`hamiltonian_flow`); the proposal accepted with
    probability min(1, exp(H(z, rho) - H(z', rho'))) if it is a finite point, else z is kept
    (a NaN ratio rejects, a state of log-density -inf is left for any finite density)."""
    rho = torch.randn_like(z) / sqrt_betas[0]
    proposal, momentum, _ = hamiltonian_flow(
        z, rho, lambda y: (gradient(log_density, y), None), step_size, sqrt_betas)
    log_ratio = (log_density(proposal) - 0.5 * momentum.square().sum(-1)
                 - log_density(z) + 0.5 * rho.square().sum(-1))
    accept = (torch.log(torch.rand_like(log_ratio)) < log_ratio) \
        & torch.isfinite(proposal).all(-1)
    return torch.where(accept.unsqueeze(-1), proposal, z)


@register_sampler
class ManifoldSampler(Sampler):
    """HMC on p(z) proportional to sqrt(det G^{-1}(z)) with a trained RHVAE's stored metric
    (see the module's docstring): ``mcmc_steps`` transitions of ``n_lf`` leapfrog steps of
    size ``eps_lf`` per chain, one chain per code, started at uniformly chosen recorded
    training codes (the centroids) or at prior draws. Serves only trained RHVAEs."""

    name = "manifold"
    config_class = ManifoldSamplerConfig

    @classmethod
    def refusal(cls, model: nn.Module) -> str | None:
        if not isinstance(model, RHVAE):
            return "it has no learned Riemannian metric (the rhvae has)"
        if int(model.centroids_seen) == 0:
            return ("its metric has no centroids: the rhvae records them in training passes, "
                    "train it first")
        return None

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        centroids, matrices = recorded_metric(model)
        log_density = log_volume_density(model.metric(centroids, matrices))
        group = max(1, KERNEL_ELEMENTS // centroids[0].numel() // len(centroids))
        chains = [self._run_chains(z, log_density)
                  for z in self._starts(model, centroids, n).split(group)]
        return torch.cat(chains).to(model.centroids.dtype)

    def _run_chains(self, z: torch.Tensor, log_density: LogDensity) -> torch.Tensor:
        """``mcmc_steps`` transitions of the chains started at the rows of ``z``."""
        cfg = self.config
        sqrt_betas = tempering_schedule(math.sqrt(cfg.beta_zero), cfg.n_lf)
        for _ in range(cfg.mcmc_steps):
            z = hmc_transition(z, log_density, cfg.eps_lf, sqrt_betas)
        return z

    def _starts(self, model: RHVAE, centroids: torch.Tensor, n: int) -> torch.Tensor:
        """The chains' first states, in float64."""
        if self.config.start == "prior":
            return model.prior.sample(n, device=centroids.device).double()
        return centroids[torch.randint(len(centroids), (n,), device=centroids.device)]

"""The Hamiltonian VAE (Caterini, Doucet and Sejdinovic 2018, "Hamiltonian Variational
Auto-Encoder", NeurIPS): the posterior draw is moved by tempered leapfrog steps of the
Hamiltonian dynamics of p(x, z), a volume-preserving flow informed by the target."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from vaebench.distributions import StandardNormal
from vaebench.models.base import Objective
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig

#: z -> (grad_z log p(z), aux): the score of a target density and what its evaluation made.
Score = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]


class HVAEConfig(VAEConfig):
    """Config of :class:`HVAE`; the defaults are pythae's."""

    n_lf: int = Field(3, gt=0, description="number K of leapfrog steps")
    eps_lf: float = Field(0.001, gt=0, description="leapfrog step size (the initial one if "
                                                   "learned)")
    beta_zero: float = Field(0.3, gt=0, le=1, description="initial inverse temperature "
                                                          "beta_0 (1: no tempering)")
    learn_eps_lf: bool = Field(False, description="learn the step size, as exp(raw)")
    learn_beta_zero: bool = Field(False, description="learn beta_0, as sigmoid(raw)")

    @model_validator(mode="after")
    def _learnable_beta_zero(self) -> HVAEConfig:
        if self.learn_beta_zero and self.beta_zero == 1:
            raise ValueError("beta_zero must be below 1 with learn_beta_zero: it is learned "
                             "as sigmoid(raw), which never reaches 1")
        return self


def tempering_schedule(sqrt_beta_zero: Any, n_steps: int) -> list[Any]:
    """sqrt(beta_k) for k = 0, ..., K, the quadratic schedule of Caterini et al. (2018,
    Algorithm 1): 1 / sqrt(beta_k) = (1 - 1 / sqrt(beta_0)) k^2 / K^2 + 1 / sqrt(beta_0),
    from sqrt(beta_0) to 1. Takes floats or tensors."""
    inverse = 1 / sqrt_beta_zero
    return [1 / ((1 - inverse) * (k / n_steps) ** 2 + inverse) for k in range(n_steps + 1)]


def hamiltonian_flow(z: torch.Tensor, rho: torch.Tensor, score: Score, step_size: Any,
                     sqrt_betas: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """len(sqrt_betas) - 1 leapfrog steps of H(z, rho) = -log p(z) + rho^T rho / 2, each
    followed by the tempering rho <- sqrt(beta_{k-1} / beta_k) rho (Caterini et al. 2018,
    Algorithm 1): rho' = rho + eps/2 grad log p(z), z <- z + eps rho',
    rho <- rho' + eps/2 grad log p(z).

    The score at each z_k is evaluated once and serves two half steps. Returns z_K, rho_K and
    the aux of the score at z_K. A leapfrog step has Jacobian determinant 1, a tempering
    (beta_{k-1} / beta_k)^(D/2) for D-dimensional z, so the whole map has
    (beta_0 / beta_K)^(D/2).
    """
    grad, aux = score(z)
    for previous, current in pairwise(sqrt_betas):
        rho = rho + 0.5 * step_size * grad
        z = z + step_size * rho
        grad, aux = score(z)
        rho = (rho + 0.5 * step_size * grad) * (previous / current)
    return z, rho, aux


@register_model
class HVAE(VAE):
    """Hamiltonian VAE (Caterini, Doucet and Sejdinovic 2018), Algorithm 1 of the paper.

    z_0 ~ q(z | x) (the VAE's Gaussian, :meth:`posterior_draws`), gamma_0 ~ N(0, I),
    rho_0 = gamma_0 / sqrt(beta_0); then K = ``n_lf`` leapfrog steps of size ``eps_lf`` of
    H(z, rho) = -log p(x, z) + rho^T rho / 2, the momentum tempered after each
    (:func:`hamiltonian_flow`, :func:`tempering_schedule`). The map has Jacobian determinant
    beta_0^(D/2), so (z_K, rho_K) has the density
    q_K(z_K, rho_K | x) = q(z_0 | x) N(rho_0; 0, I / beta_0) beta_0^(-D/2)
    = q(z_0 | x) N(gamma_0; 0, I), and the ELBO on the extended space is

        L(x) = E[log p(x | z_K) + log p(z_K) + log N(rho_K; 0, I)
                 - log q(z_0 | x) - log N(rho_0; 0, I / beta_0) + (D/2) log beta_0].

    Terms at one draw: ``recon`` = -log p(x | z_K) and ``kl`` = log q_K(z_K, rho_K | x)
    - log p(z_K) - log N(rho_K; 0, I), the Monte Carlo KL from the extended prior
    p(z) N(rho; 0, I), under ``kl_schedule``. The importance weights
    w = p(x, z_K) N(rho_K; 0, I) / q_K(z_K, rho_K | x) have mean p(x), so the metrics'
    ELBO and importance-sampled log p(x) hold. ``encode`` and ``reconstruct`` use q(z_0 | x).

    Cost: the decoder runs forward and backward n_lf + 1 times per draw (the score at
    z_0, ..., z_K; the last also gives log p(x | z_K)), and training differentiates through
    those gradients (double backward). As in pythae, the step size is one scalar.
    """

    name = "hvae"
    config_class = HVAEConfig
    has_likelihood = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.momentum = StandardNormal(self.latent_shape)
        self.log_eps_lf = (nn.Parameter(torch.tensor(math.log(cfg.eps_lf)))
                           if cfg.learn_eps_lf else None)
        self.beta_zero_logit = (nn.Parameter(torch.logit(torch.tensor(cfg.beta_zero)))
                                if cfg.learn_beta_zero else None)

    @property
    def eps_lf(self) -> torch.Tensor | float:
        """The leapfrog step size: exp of its raw parameter if learned, else the config's."""
        return self.config.eps_lf if self.log_eps_lf is None else self.log_eps_lf.exp()

    @property
    def beta_zero(self) -> torch.Tensor | float:
        """beta_0: sigmoid of its raw parameter if learned, else the config's."""
        if self.beta_zero_logit is None:
            return self.config.beta_zero
        return torch.sigmoid(self.beta_zero_logit)

    def objective(self, x: torch.Tensor) -> Objective:
        return self.sampled_objective(x)  # recon and the Monte Carlo kl at one draw

    def joint_score(self, x: torch.Tensor) -> Score:
        """z -> (grad_z log p(x, z), (log p(x | z), decoder params)) for codes z of x's batch
        size; -grad is the potential's gradient U'(z). Computed by autograd even under
        no_grad (the metrics'), the outputs then detached; with gradients enabled the graph
        is kept (create_graph), so the ELBO differentiates through the leapfrog steps."""
        differentiable = torch.is_grad_enabled()

        def score(z: torch.Tensor) -> tuple[torch.Tensor, Any]:
            with torch.enable_grad():
                z = z if z.requires_grad else z.detach().requires_grad_()
                params = self.decode(z)
                log_px = -self.likelihood.nll(params, x)
                log_joint = (log_px + self.prior.log_prob(z)).sum()
                (grad,) = torch.autograd.grad(log_joint, z, create_graph=differentiable)
            if differentiable:
                return grad, (log_px, params)
            return grad, (log_px.detach(), params.detach())

        return score

    def importance_terms(self, x: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """For k runs of the flow: ``log_px`` = log p(x | z_K), ``log_pz`` = log p(z_K) +
        log N(rho_K; 0, I) and ``log_qz`` = log q_K(z_K, rho_K | x), each (k, B); ``z`` =
        z_K and its ``decoder_params``, (k, B, ...). All k * B flows run as one batch."""
        if k < 1:
            raise ValueError(f"k must be a positive number of draws, got {k}")
        z0, log_q0 = self.posterior_draws(x, k)
        gamma = torch.randn_like(z0)
        sqrt_beta_zero = self.beta_zero**0.5
        x_rep = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        z, rho, (log_px, params) = hamiltonian_flow(
            z0.flatten(0, 1), gamma.flatten(0, 1) / sqrt_beta_zero, self.joint_score(x_rep),
            self.eps_lf, tempering_schedule(sqrt_beta_zero, self.config.n_lf))
        z, rho, log_px, params = (t.unflatten(0, (k, x.shape[0]))
                                  for t in (z, rho, log_px, params))
        return {"log_px": log_px, "log_pz": self.prior.log_prob(z) + self.momentum.log_prob(rho),
                "log_qz": log_q0 + self.momentum.log_prob(gamma), "z": z,
                "decoder_params": params}

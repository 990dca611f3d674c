"""The Riemannian Hamiltonian VAE (Chadebec, Mantoux and Allassonnière 2020,
"Geometry-Aware Hamiltonian Variational Auto-Encoder", arXiv 2010.11518): the HVAE's flow
with a position-dependent metric learned from the training codes, integrated by the
generalized leapfrog.

Numerics. The paper parameterizes the *inverse* metric (Eq. 9),
G^{-1}(z) = sum_i L_i L_i^T exp(-||z - c_i||^2 / T^2) + lambda I, so G^{-1} >= lambda I
(lambda > 0 is validated). Everything is computed from G^{-1} and its Cholesky factor, in
float64: log det G = -2 sum log diag chol(G^{-1}); G itself is only needed to draw the
momentum, by a triangular solve. The kernel's exponent is the sum of squared differences, so
it is never positive and exp never overflows; the log-diagonal of L is bounded by
``max_log_diag`` through tanh (default 3, so diag L_psi lies in [0.05, 20]; at 10, one
training code whose L_psi reached diag 1300, a G^{-1} eigenvalue of 2e6, sent a gradient of
norm 7e5 through the flow, which stalled Adam). The implicit steps run a fixed number of
fixed-point iterations in which no iterate moves farther than the one before (:func:`fixed_point`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch
from pydantic import Field
from torch import nn

from vaebench.collectives import gathered_over_ranks
from vaebench.models.hvae import HVAE, HVAEConfig, Score, tempering_schedule
from vaebench.models.registry import register_model

#: z -> G^{-1}(z), (n, D) -> (n, D, D).
InverseMetric = Callable[[torch.Tensor], torch.Tensor]


class RHVAEConfig(HVAEConfig):
    """Config of :class:`RHVAE`; the defaults of pythae's fields are pythae's
    (``metric_hidden`` is its ``Metric_MLP`` width)."""

    temperature: float = Field(1.5, gt=0, description="metric temperature T")
    regularization: float = Field(0.01, gt=0, description="metric regularization lambda")
    metric_hidden: int = Field(400, gt=0, description="hidden width of the metric network")
    max_centroids: int = Field(5000, gt=0, description="training codes kept as centroids")
    n_fixed_point: int = Field(3, gt=0, description="fixed-point iterations per implicit step")
    max_log_diag: float = Field(3.0, gt=0, description="bound on |log diag L_psi|")


def inverse_metric(z: torch.Tensor, centroids: torch.Tensor, matrices: torch.Tensor,
                   temperature: float, regularization: float) -> torch.Tensor:
    """G^{-1}(z) = sum_i M_i exp(-||z - c_i||^2 / T^2) + lambda I (Eq. 9 of the paper,
    M_i = L_i L_i^T) for codes z (n, D), centroids (N, D), matrices (N, D, D)."""
    squared_distances = (z.unsqueeze(1) - centroids).square().sum(-1)
    weights = torch.exp(-squared_distances / temperature**2)
    eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
    return torch.einsum("bn,nij->bij", weights, matrices) + regularization * eye


def cholesky(matrix: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of symmetric positive definite matrices, computed in float64."""
    return torch.linalg.cholesky(matrix.double())


def log_det(factor: torch.Tensor) -> torch.Tensor:
    """log det A = 2 sum log diag chol(A), from the Cholesky factor of A."""
    return 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)


def inverse(factor: torch.Tensor) -> torch.Tensor:
    """A^{-1} from the Cholesky factor of A (so G(z) from chol(G^{-1}(z)))."""
    eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    return torch.cholesky_solve(eye.expand_as(factor), factor)


def quadratic(matrix: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v^T A v per row."""
    return torch.einsum("bi,bij,bj->b", v, matrix, v)


def fixed_point(update: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
                n_iterations: int) -> torch.Tensor:
    """``n_iterations`` iterations of y <- update(y) from ``start``, each move shortened (per
    row) to at most the length of the move before: a contraction check. Where the iteration
    contracts (small steps, mild curvature) nothing is shortened and this is the plain
    iteration of the paper; where it diverges (the momentum step is quadratic in the
    momentum), the iterates stay within n_iterations times the first move of ``start``
    instead of overflowing."""
    current = update(start)
    allowed = torch.linalg.vector_norm(current - start, dim=-1, keepdim=True)
    for _ in range(n_iterations - 1):
        move = update(current) - current
        length = torch.linalg.vector_norm(move, dim=-1, keepdim=True)
        shrink = torch.where(length > allowed, allowed / length.clamp_min(1e-30), 1.0)
        current = current + shrink * move
        allowed = shrink * length
    return current


def gradient(energy: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The partial gradient grad_z of energy(z).sum(), other inputs of ``energy`` (a momentum
    computed from z) held fixed: taken at a fresh copy of z. By autograd even under no_grad
    (then detached); with gradients enabled the graph is kept, so a loss can differentiate
    through it."""
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():
        z = z.clone() if z.requires_grad else z.detach().requires_grad_()
        value = energy(z).sum()
        if not value.requires_grad:  # a constant metric
            return torch.zeros_like(z)
        (grad,) = torch.autograd.grad(value, z, create_graph=differentiable,
                                      materialize_grads=True)
    return grad if differentiable else grad.detach()


def metric_energy(metric: InverseMetric, rho: torch.Tensor) -> Callable:
    """z -> 1/2 log det G(z) + 1/2 rho^T G^{-1}(z) rho, the metric's part of the
    Hamiltonian (Eq. 5 of the paper) at a fixed momentum."""
    def energy(z: torch.Tensor) -> torch.Tensor:
        matrix = metric(z)
        return 0.5 * (quadratic(matrix, rho) - log_det(cholesky(matrix)).to(z.dtype))

    return energy


def riemannian_flow(z: torch.Tensor, rho: torch.Tensor, score: Score, metric: InverseMetric,
                    step_size: Any, sqrt_betas: Sequence[Any],
                    n_iterations: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """len(sqrt_betas) - 1 generalized leapfrog steps (Eq. 6-8 of the paper; Girolami and
    Calderhead 2011) of H(z, rho) = -log p(z) + 1/2 log det G(z) + 1/2 rho^T G^{-1}(z) rho,
    each followed by HVAE's tempering rho <- sqrt(beta_{k-1} / beta_k) rho:

        rho' = rho - eps/2 grad_z H(z, rho')                          (implicit, Eq. 6)
        z'   = z + eps/2 [G^{-1}(z) + G^{-1}(z')] rho'                (implicit, Eq. 7)
        rho  = rho' - eps/2 grad_z H(z', rho')                        (Eq. 8)

    The implicit steps run ``n_iterations`` of :func:`fixed_point`. ``score`` (grad log p) is
    evaluated once per position; only the cheap metric enters the iterations. With a
    constant G = I this is :func:`vaebench.models.hvae.hamiltonian_flow`.
    """
    grad, aux = score(z)

    def momentum_step(position: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
        return 0.5 * step_size * (grad - gradient(metric_energy(metric, momentum), position))

    for previous, current in pairwise(sqrt_betas):
        start = rho
        rho = fixed_point(lambda r, z=z, start=start: start + momentum_step(z, r), rho,
                          n_iterations)
        velocity = torch.einsum("bij,bj->bi", metric(z), rho)
        z = fixed_point(lambda y, z=z, v=velocity, r=rho: z + 0.5 * step_size * (
            v + torch.einsum("bij,bj->bi", metric(y), r)), z, n_iterations)
        grad, aux = score(z)
        rho = (rho + momentum_step(z, rho)) * (previous / current)
    return z, rho, aux


class MetricNetwork(nn.Module):
    """x -> L_psi(x), lower triangular with a positive diagonal exp(b tanh(raw / b)) (the
    paper's exponentiated diagonal, its log bounded by b = ``max_log_diag``): a one hidden
    layer MLP, as pythae's ``Metric_MLP``."""

    def __init__(self, input_features: int, hidden: int, latent_dim: int, max_log_diag: float):
        super().__init__()
        self.latent_dim, self.max_log_diag = latent_dim, max_log_diag
        n_lower = latent_dim * (latent_dim - 1) // 2
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(input_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, latent_dim + n_lower))
        self.register_buffer("lower", torch.tril_indices(latent_dim, latent_dim, -1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.net(x)
        raw_diagonal, off_diagonal = raw[:, :self.latent_dim], raw[:, self.latent_dim:]
        bound = self.max_log_diag
        strictly_lower = raw.new_zeros(len(raw), self.latent_dim, self.latent_dim)
        strictly_lower[:, self.lower[0], self.lower[1]] = off_diagonal
        log_diagonal = bound * torch.tanh(raw_diagonal / bound)
        return strictly_lower + torch.diag_embed(log_diagonal.exp())


@register_model
class RHVAE(HVAE):
    """Riemannian Hamiltonian VAE (Chadebec, Mantoux and Allassonnière 2020).

    As :class:`HVAE`, with the momentum rho_0 = chol(G(z_0)) gamma / sqrt(beta_0) ~
    N(0, G(z_0) / beta_0) and the Riemannian Hamiltonian H = -log p(x, z) + 1/2 log det G(z)
    + 1/2 rho^T G^{-1}(z) rho integrated by :func:`riemannian_flow`. The generalized leapfrog
    is volume preserving and the tempering scales volumes by (beta_0 / beta_K)^(D/2), so the
    ELBO on the extended space (Eq. 10-11 of the paper) has the importance weights

        log w = log p(x | z_K) + log p(z_K) + log N(rho_K; 0, G(z_K))
                - log q(z_0 | x) - log N(gamma; 0, I) + 1/2 log det G(z_0),

    exact up to the fixed-point error of the implicit steps; ``recon`` and ``kl`` are the
    HVAE's at one draw.

    The metric (:func:`inverse_metric`): in training, the centroids c_i are the posterior
    means of the batch and the L_i its metric network's outputs (differentiable, so the
    terms of a sample depend on its batch, as in the paper and pythae); each training pass
    also records them, detached, in ring buffers of ``max_centroids`` rows (the most recent
    training codes), which define the metric in eval mode, saved with the model. Before
    any training G^{-1} = lambda I.
    """

    name = "rhvae"
    config_class = RHVAEConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.config
        dim, size = cfg.latent_dim, cfg.max_centroids
        self.metric_net = MetricNetwork(math.prod(cfg.input_dim), cfg.metric_hidden, dim,
                                        cfg.max_log_diag)
        self.register_buffer("centroids", torch.zeros(size, dim))
        self.register_buffer("centroid_matrices", torch.zeros(size, dim, dim))
        self.register_buffer("centroids_seen", torch.zeros((), dtype=torch.long))

    def metric(self, centroids: torch.Tensor, matrices: torch.Tensor) -> InverseMetric:
        """z -> G^{-1}(z) with these centroids and matrices L L^T."""
        cfg = self.config
        return lambda z: inverse_metric(z, centroids, matrices, cfg.temperature,
                                        cfg.regularization)

    def stored_metric(self) -> InverseMetric:
        """G^{-1} of the recorded training codes (eval mode)."""
        filled = min(int(self.centroids_seen), self.config.max_centroids)
        return self.metric(self.centroids[:filled], self.centroid_matrices[:filled])

    @torch.no_grad()
    def record(self, centroids: torch.Tensor, matrices: torch.Tensor) -> None:
        """Write a batch's centroids and matrices (the whole batch's when data-parallel)
        into the ring buffers."""
        size = self.config.max_centroids
        centroids, matrices = gathered_over_ranks(centroids), gathered_over_ranks(matrices)
        centroids, matrices = centroids[-size:], matrices[-size:]
        rows = (self.centroids_seen + torch.arange(len(centroids), device=self.device)) % size
        self.centroids[rows] = centroids
        self.centroid_matrices[rows] = matrices
        self.centroids_seen += len(centroids)

    def batch_metric(self, mean: torch.Tensor, x: torch.Tensor) -> InverseMetric:
        """The metric of this pass: the batch's in training (recorded), else the stored one."""
        if not self.training:
            return self.stored_metric()
        factors = self.metric_net(x)
        matrices = factors @ factors.transpose(-1, -2)
        self.record(mean.detach(), matrices.detach())
        return self.metric(mean, matrices)

    def importance_terms(self, x: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """For k runs of the flow: ``log_px`` = log p(x | z_K), ``log_pz`` = log p(z_K) +
        log N(rho_K; 0, G(z_K)), ``log_qz`` = log q(z_0 | x) + log N(gamma; 0, I)
        - 1/2 log det G(z_0), each (k, B); ``z`` = z_K and its ``decoder_params``."""
        if k < 1:
            raise ValueError(f"k must be a positive number of draws, got {k}")
        q = self.encode(x)
        z0 = q.rsample((k,))
        metric = self.batch_metric(q.mean, x)
        gamma = torch.randn_like(z0)
        sqrt_beta_zero = self.beta_zero**0.5
        start = z0.flatten(0, 1)
        factor0 = cholesky(metric(start))
        rho0 = torch.linalg.solve_triangular(
            factor0.mT, gamma.flatten(0, 1).double().unsqueeze(-1), upper=True).squeeze(-1)
        x_rep = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        z, rho, (log_px, params) = riemannian_flow(
            start, rho0.to(z0.dtype) / sqrt_beta_zero, self.joint_score(x_rep), metric,
            self.eps_lf, tempering_schedule(sqrt_beta_zero, self.config.n_lf),
            self.config.n_fixed_point)
        log_momentum = self.momentum_log_prob(metric(z), rho)
        log_qz = (q.log_prob(z0) + self.momentum.log_prob(gamma)
                  + 0.5 * log_det(factor0).to(z0.dtype).view(k, -1))
        z, log_px, params, log_momentum = (t.unflatten(0, (k, x.shape[0]))
                                           for t in (z, log_px, params, log_momentum))
        return {"log_px": log_px, "log_pz": self.prior.log_prob(z) + log_momentum,
                "log_qz": log_qz, "z": z, "decoder_params": params}

    @staticmethod
    def momentum_log_prob(matrix: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """log N(rho; 0, G) from G^{-1} = ``matrix``:
        -D/2 log 2 pi + 1/2 log det G^{-1} - 1/2 rho^T G^{-1} rho."""
        half_log_det = 0.5 * log_det(cholesky(matrix)).to(rho.dtype)
        return -0.5 * rho.shape[-1] * math.log(2 * math.pi) + half_log_det - 0.5 * quadratic(
            matrix, rho)

"""Positive-definite kernels and the maximum mean discrepancy (MMD) between two samples.

The MMD of Gretton, Borgwardt, Rasch, Schoelkopf and Smola ("A Kernel Two-Sample Test",
JMLR 2012) compares two distributions P and Q through a kernel k:

    MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y),   x, x' ~ P,  y, y' ~ Q.

:func:`mmd` is their unbiased U-statistic estimator MMD_u^2 from
samples x_1..x_n ~ P and y_1..y_m ~ Q:

    MMD_u^2 = 1 / (n (n - 1)) sum_{i != j} k(x_i, x_j)
            + 1 / (m (m - 1)) sum_{i != j} k(y_i, y_j)
            - 2 / (n m)       sum_{i, j}   k(x_i, y_j).

It is zero in expectation when P = Q (and can then be slightly negative), and is what the
Wasserstein autoencoder (Tolstikhin, Bousquet, Gelly and Schoelkopf, "Wasserstein
Auto-Encoders", ICLR 2018, Algorithm 2) and InfoVAE (Zhao, Song and Ermon, AAAI 2019)
minimize between the codes of a minibatch and draws from the prior.

**The MMD is a property of a minibatch as a whole, not of a sample**: the estimate couples
every pair of samples of the batch, and its variance (not its mean) depends on the batch
size. It is the one documented exception to the rule that no term of an objective may
change when only the batch size changes. The models expose it as a per-sample term with
:func:`mmd_term`, which gives each sample the batch estimate, so that the batch mean (what
the shared reduction computes) equals the estimate exactly.

Kernels (Tolstikhin et al. 2018, Sec. 4), for codes of dimension d and a prior
N(0, sigma^2 I):

* inverse multiquadratics (IMQ), k(x, y) = C / (C + ||x - y||^2), with C = 2 d sigma^2,
  the expected squared distance between two draws of the prior; the authors' code sums
  the kernel over the scales C x {0.1, 0.2, 0.5, 1, 2, 5, 10} (``multiscale=True``), which
  makes the estimator sensitive at several distances at once.
* radial basis function (RBF), k(x, y) = exp(-||x - y||^2 / C), with the same rule for C.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field

from vaebench.config import Config

#: The kernels :func:`mmd` knows.
KERNELS = ("imq", "rbf")
#: Multipliers of the base bandwidth C = 2 d sigma^2 summed over with ``multiscale=True``
#: (the scales of the WAE authors' code).
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def bandwidths(dim: int, scale: float = 1.0, multiscale: bool = False) -> tuple[float, ...]:
    """The kernel bandwidths C: 2 * dim * scale (Tolstikhin et al. 2018, Sec. 4; ``scale``
    is the variance sigma^2 of the prior), times each of :data:`WAE_SCALES` if
    ``multiscale``."""
    if dim < 1:
        raise ValueError(f"dim must be a positive number of dimensions, got {dim}")
    if not scale > 0:
        raise ValueError(f"scale (the prior variance sigma^2) must be positive, got {scale}")
    base = 2.0 * dim * scale
    return tuple(base * m for m in WAE_SCALES) if multiscale else (base,)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 for rows of x (n, d) and y (m, d): shape (n, m).

    Expanded as ||x||^2 + ||y||^2 - 2 x.y (memory O(n m), not O(n m d)) and clamped at 0
    against rounding; no square root, so the gradient is defined at distance 0.
    """
    xx = (x * x).sum(1, keepdim=True)
    yy = (y * y).sum(1, keepdim=True)
    return (xx + yy.T - 2.0 * (x @ y.T)).clamp_min(0.0)


def kernel_matrix(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq",
                  scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """K_ij = sum over C in ``scales`` of k_C(x_i, y_j), shape (n, m).

    ``"imq"``: k_C = C / (C + ||x - y||^2); ``"rbf"``: k_C = exp(-||x - y||^2 / C).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known kernels: {', '.join(KERNELS)}")
    if not scales or any(not c > 0 for c in scales):
        raise ValueError(f"kernel bandwidths must be positive, got {tuple(scales)}")
    d2 = squared_distances(x, y)
    total = torch.zeros_like(d2)
    for c in scales:
        total = total + (c / (c + d2) if kernel == "imq" else torch.exp(-d2 / c))
    return total


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", scale: float = 1.0,
        multiscale: bool = False, scales: Sequence[float] | None = None) -> torch.Tensor:
    """Unbiased estimate MMD_u^2 (a scalar tensor) between samples x (n, ...) and y (m, ...).

    Samples are flattened to vectors of d features. The bandwidths are ``scales`` if given,
    else :func:`bandwidths` (d, ``scale``, ``multiscale``): C = 2 d sigma^2 with the
    prior variance sigma^2 = ``scale``. The estimate is defined on the two samples as a
    whole (see the module docstring); it needs at least two rows in each (the within-sample
    averages run over pairs i != j).
    """
    x, y = x.flatten(1), y.flatten(1)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD estimator needs at least 2 samples from each "
                         f"distribution, got {n} and {m}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {x.shape[1]} "
                         f"and {y.shape[1]}")
    if scales is None:
        scales = bandwidths(x.shape[1], scale, multiscale)
    kxx = kernel_matrix(x, x, kernel, scales)
    kyy = kernel_matrix(y, y, kernel, scales)
    kxy = kernel_matrix(x, y, kernel, scales)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * kxy.mean()


def mmd_term(z: torch.Tensor, prior_z: torch.Tensor, kernel: str = "imq", scale: float = 1.0,
             multiscale: bool = True) -> torch.Tensor:
    """The MMD between a batch of codes and as many prior draws, as a per-sample term (B,).

    Every sample carries the batch estimate :func:`mmd` (a minibatch quantity, see the
    module docstring), so the mean over the batch, which the shared reduction takes, is the
    estimate itself, and its gradient is the estimate's. A batch of one sample has no
    unbiased estimate (no pairs): its term is 0, so it contributes no MMD gradient.
    """
    batch = z.shape[0]
    if batch < 2:
        return z.new_zeros(batch)
    return mmd(z, prior_z, kernel, scale, multiscale).expand(batch)


class MMDOptions(Config):
    """Config fields of a model with an MMD penalty against its prior (WAE, InfoVAE)."""

    kernel: Literal["imq", "rbf"] = Field(
        "imq", description="MMD kernel: 'imq' (inverse multiquadratics) or 'rbf'")
    kernel_scale: float = Field(
        1.0, gt=0, description="sigma^2 in the kernel bandwidth C = 2 * latent_dim * sigma^2 "
                               "(the prior's variance, 1 for N(0, I))")
    multiscale: bool = Field(
        True, description="sum the kernel over C x (0.1, 0.2, 0.5, 1, 2, 5, 10)")

    def mmd_options(self) -> dict[str, object]:
        """Keyword arguments of :func:`mmd_term`."""
        return {"kernel": self.kernel, "scale": self.kernel_scale,
                "multiscale": self.multiscale}


class PriorMMDPenalty:
    """Model mixin: adds the per-sample term ``mmd`` between the batch's codes and as many
    draws of the model's prior (:func:`mmd_term`); its config mixes in :class:`MMDOptions`."""

    def objective(self, x: torch.Tensor, **inputs: Any) -> Any:
        objective = super().objective(x, **inputs)
        prior_z = self.prior.sample(x.shape[0], device=x.device).to(objective.z.dtype)
        objective.terms["mmd"] = mmd_term(objective.z, prior_z, **self.config.mmd_options())
        return objective

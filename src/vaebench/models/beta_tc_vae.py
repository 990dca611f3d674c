"""beta-TCVAE (Chen et al. 2018): the KL split into index-code mutual information, total
correlation and dimension-wise KL, each with its own weight."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from vaebench.distributions import DiagonalGaussian
from vaebench.likelihoods import LOG_2PI
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig

#: Estimators of log q(z) from a minibatch (Chen et al. 2018, Appendix C).
ESTIMATORS = ("mws", "mss")


class BetaTCVAEConfig(VAEConfig):
    """Config of :class:`BetaTCVAE`."""

    alpha: float = Field(1.0, ge=0, description="weight of the index-code mutual information")
    beta: float = Field(6.0, ge=0, description="weight of the total correlation")
    gamma: float = Field(1.0, ge=0, description="weight of the dimension-wise KL")
    estimator: Literal["mws", "mss"] = Field(
        "mss", description="log q(z) from the minibatch: 'mws' (minibatch weighted) or 'mss' "
                           "(minibatch stratified)")
    dataset_size: int | None = Field(
        None, gt=0, description="N of the estimators; None: the size of the training data "
                                "given to prepare() (the trainer does so)")


def pairwise_log_density(q: DiagonalGaussian, z: torch.Tensor) -> torch.Tensor:
    """log q(z_ij | x_m) for every code i, sample m and dimension j: shape (B, B, D)."""
    mean, log_var = q.mean.unsqueeze(0), q.log_var.unsqueeze(0)
    diff = z.unsqueeze(1) - mean
    return -0.5 * (diff**2 * torch.exp(-log_var) + log_var + LOG_2PI)


def log_weight_matrix(batch: int, dataset_size: int, estimator: str,
                      dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """log w_im, shape (B, B): log q(z_i) is estimated as log sum_m w_im q(z_i | x_m).

    ``"mws"``, minibatch weighted sampling (Chen et al. 2018, Appendix C.1):
    w_im = 1 / (N M) for every pair, M = B the batch size, as in the paper.

    ``"mss"``, minibatch stratified sampling (Appendix C.2): z_i was drawn from q(z | x_i),
    whose weight in q(z) = (1/N) sum_n q(z | x_n) is 1/N; the other B - 1 samples stand for
    the remaining N - 1 data points. With M = B - 1 of them, one (the next in the batch,
    cyclically) gets (N - M) / (N M) and the other M - 1 get 1 / M; each row sums to 1. A
    batch of one keeps weight 1 on itself. N is taken to be at least B.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    n = max(dataset_size, batch)
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(n * batch), dtype=dtype, device=device)
    if batch == 1:
        return torch.zeros((1, 1), dtype=dtype, device=device)
    m = batch - 1
    weights = torch.full((batch, batch), 1.0 / m, dtype=torch.float64)
    rows = torch.arange(batch)
    weights[rows, (rows + 1) % batch] = (n - m) / (n * m)
    weights[rows, rows] = 1.0 / n
    return weights.log().to(dtype=dtype, device=device)


def minibatch_log_densities(q: DiagonalGaussian, z: torch.Tensor, dataset_size: int,
                            estimator: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-code (log q(z_i | x_i), log q(z_i), sum_j log q(z_ij)), each of shape (B,).

    log q(z_i) and the marginals log q(z_ij) are estimated from the minibatch with the
    weights of :func:`log_weight_matrix`: these estimates are defined on the minibatch as a
    whole (every code is scored under every sample's posterior), so they depend on the batch
    and its size; they are the exception to batch-size invariance and are tested against
    their formula.
    """
    pairwise = pairwise_log_density(q, z)  # (B, B, D)
    batch = z.shape[0]
    log_w = log_weight_matrix(batch, dataset_size, estimator, z.dtype, z.device)
    log_qz_x = pairwise.diagonal(dim1=0, dim2=1).sum(0)
    log_qz = torch.logsumexp(log_w + pairwise.sum(2), dim=1)
    log_prod_marginals = torch.logsumexp(log_w.unsqueeze(2) + pairwise, dim=1).sum(1)
    return log_qz_x, log_qz, log_prod_marginals


@register_model
class BetaTCVAE(VAE):
    """beta-TCVAE (Chen et al. 2018, "Isolating Sources of Disentanglement in Variational
    Autoencoders", Eq. 4): the KL split into three terms, each with its own weight.

    The KL term of the ELBO, averaged over the data, decomposes as

        E_p(x)[KL(q(z|x) || p(z))] = I_q(z; x) + KL(q(z) || prod_j q(z_j))
                                     + sum_j KL(q(z_j) || p(z_j)),

    the index-code mutual information ``mi``, the total correlation ``tc`` and the
    dimension-wise KL ``dim_kl``, weighted by ``alpha``, ``beta`` and ``gamma``. For each
    code z_i ~ q(z | x_i) (one reparameterized draw):

        mi_i     = log q(z_i | x_i) - log q(z_i)
        tc_i     = log q(z_i) - sum_j log q(z_ij)
        dim_kl_i = sum_j log q(z_ij) - log p(z_i)

    with the aggregate posterior q(z) and its marginals estimated from the minibatch
    (:func:`minibatch_log_densities`, ``estimator`` "mws" or "mss", N the training-set size
    from :meth:`prepare` or ``dataset_size``). These three terms are minibatch-level
    estimates: they change with the batch. Their sum telescopes to log q(z_i | x_i) -
    log p(z_i), the one-draw Monte Carlo KL, whatever the estimator; with MWS the weights
    sum to 1/N instead of 1, which shifts the three terms by constants (no effect on the
    gradients). With alpha = beta = gamma = 1 the loss is the VAE's negative ELBO with a
    Monte Carlo KL. ``kl_schedule`` multiplies all three weights. Defaults: alpha = gamma = 1
    as in the paper, which varies beta alone; beta = 6 is a starting point to tune.
    """

    name = "beta_tc_vae"
    config_class = BetaTCVAEConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # N, saved with the weights; the Python copy avoids a device sync per step.
        self._dataset_size = self.config.dataset_size or 0
        self.register_buffer("dataset_size", torch.tensor(self._dataset_size))
        self.register_load_state_dict_post_hook(_read_dataset_size)

    def prepare(self, data: Any) -> None:
        super().prepare(data)
        if self.config.dataset_size is None:
            self._dataset_size = len(data)
            self.dataset_size.fill_(self._dataset_size)

    def kl_terms(self, q: DiagonalGaussian, z: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._dataset_size < 1:
            raise ValueError("beta_tc_vae needs the dataset size N: train it with the Trainer "
                             "(which calls prepare(data)), call model.prepare(data), or set "
                             "the config field dataset_size")
        log_qz_x, log_qz, log_prod = minibatch_log_densities(q, z, self._dataset_size,
                                                             self.config.estimator)
        return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod,
                "dim_kl": log_prod - self.prior.log_prob(z)}

    def term_weights(self) -> dict[str, float]:
        cfg, anneal = self.config, self.kl_weight()
        return {"mi": cfg.alpha * anneal, "tc": cfg.beta * anneal, "dim_kl": cfg.gamma * anneal}


def _read_dataset_size(module: BetaTCVAE, incompatible_keys: Any) -> None:
    module._dataset_size = int(module.dataset_size)

"""InfoVAE with the MMD divergence (Zhao, Song and Ermon, AAAI 2019)."""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from vaebench.kernels import MMDOptions, mmd_term
from vaebench.models.base import Objective
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig


class InfoVAEConfig(VAEConfig, MMDOptions):
    """Config of :class:`InfoVAE`: ``alpha`` and ``lambda_`` (the paper's lambda; the
    underscore because ``lambda`` is a Python keyword), plus the MMD kernel fields.

    The KL term weighs 1 - alpha, the MMD term alpha + lambda_ - 1; both must be >= 0
    (alpha <= 1 and alpha + lambda_ >= 1), otherwise the objective would reward a posterior
    that is far from the prior. Defaults: alpha = 0 keeps the full KL (the loss is the
    negative ELBO plus a weighted MMD) and lambda_ = 1000. The paper asks for a large lambda
    (the MMD should be driven close to 0); 1000 is our choice for a reconstruction term
    summed over the pixels of an image: the MMD between a batch of codes and prior draws is
    of order 1e-3 to 1, and a weight of this order makes it matter next to hundreds of nats.
    A reconstruction averaged over the D pixels with weight 1 on the MMD is the same balance
    as weight D here.
    """

    alpha: float = Field(0.0, le=1.0, description="1 - alpha is the weight of the KL term")
    lambda_: float = Field(1000.0, gt=0.0,
                           description="alpha + lambda_ - 1 is the weight of the MMD term")

    @model_validator(mode="after")
    def _mmd_weight_not_negative(self) -> InfoVAEConfig:
        if self.alpha + self.lambda_ - 1.0 < 0.0:
            raise ValueError(
                f"alpha + lambda_ - 1, the weight of the MMD term, must not be negative; got "
                f"alpha={self.alpha}, lambda_={self.lambda_} (raise lambda_ to at least "
                f"{1.0 - self.alpha})")
        return self


@register_model
class InfoVAE(VAE):
    """InfoVAE (Zhao et al. 2019) with the MMD divergence: the VAE plus an MMD term.

    Eq. 6 of the paper with D = MMD (their MMD-VAE family), per sample:

        loss = -log p(x | z) + (1 - alpha) KL(q(z | x) || p(z)) + (alpha + lambda - 1) MMD

    where MMD is the unbiased estimate of MMD^2 between the batch's codes z ~ q(z | x) (draws
    of the aggregate posterior q(z)) and as many draws of the prior N(0, I)
    (:func:`vaebench.kernels.mmd`). The MMD is a minibatch quantity: each sample carries the
    batch estimate (:func:`vaebench.kernels.mmd_term`). Terms: ``recon``, ``kl``, ``mmd``.
    The ELBO and importance-sampled likelihood of the model stay those of its VAE.
    """

    name = "info_vae"
    config_class = InfoVAEConfig

    def objective(self, x: torch.Tensor) -> Objective:
        objective = super().objective(x)
        prior_z = self.prior.sample(x.shape[0], device=x.device).to(objective.z.dtype)
        objective.terms["mmd"] = mmd_term(objective.z, prior_z, **self.config.mmd_options())
        return objective

    def term_weights(self) -> dict[str, float]:
        weights = super().term_weights()
        alpha, lam = self.config.alpha, self.config.lambda_
        weights["kl"] = weights.get("kl", 1.0) * (1.0 - alpha)
        weights["mmd"] = alpha + lam - 1.0
        return weights

"""beta-VAE (Higgins et al. 2017) and its capacity-controlled form (Burgess et al. 2018)."""

from __future__ import annotations

import torch
from pydantic import Field

from vaebench import schedules
from vaebench.models.base import Objective
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig


class BetaVAEConfig(VAEConfig):
    """Config of :class:`BetaVAE`."""

    beta: float = Field(4.0, ge=0, description="weight of the KL term")


@register_model
class BetaVAE(VAE):
    """beta-VAE (Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts with a
    Constrained Variational Framework", Eq. 4): the VAE with the KL term weighted by beta.

    beta > 1 presses the posterior towards the factorized prior, trading reconstruction
    for disentanglement; beta = 4 is the value of the paper's dSprites experiments.
    """

    name = "beta_vae"
    config_class = BetaVAEConfig

    def term_weights(self) -> dict[str, float]:
        return {"kl": self.config.beta * self.kl_weight()}


class DisentangledBetaVAEConfig(VAEConfig):
    """Config of :class:`DisentangledBetaVAE` (defaults: the dSprites settings of Burgess et
    al. 2018, gamma = 1000 and C raised to 25 nats over 100,000 steps)."""

    gamma: float = Field(1000.0, ge=0, description="weight of |KL - C|")
    capacity_max: float = Field(25.0, ge=0, description="final capacity C_max, in nats")
    capacity_steps: int = Field(100_000, ge=0, description="steps over which C rises linearly "
                                                           "from 0 to capacity_max")


@register_model
class DisentangledBetaVAE(VAE):
    """beta-VAE with controlled capacity increase (Burgess et al. 2018, "Understanding
    disentangling in beta-VAE", Eq. 2): the KL term is replaced by gamma * |KL - C|, where the
    capacity C rises linearly from 0 to ``capacity_max`` over ``capacity_steps`` optimizer
    steps (:func:`vaebench.schedules.linear` on ``num_steps``, so it resumes correctly).

    The per-sample term ``kl_capacity`` is |KL(q(z | x_i) || p(z)) - C| for each sample: this
    is Eq. 2 of the paper, written for one data point x, averaged over the batch by the one
    shared reduction. (Common implementations apply |. - C| to the batch-mean KL; that
    value depends on which samples share a batch, is a lower bound on ours by Jensen's
    inequality, and lets samples above and below C offset each other. We keep the
    per-sample form so no term changes with the batch size.)

    C follows the step in eval mode too, so the eval loss is the objective being trained
    (it is part of the objective's definition; with C_max in eval, a short run would report
    mostly gamma * C_max). ``kl_schedule`` multiplies gamma (1 in eval mode).
    """

    name = "disentangled_beta_vae"
    config_class = DisentangledBetaVAEConfig

    def capacity(self) -> float:
        """The capacity C in nats at step ``num_steps``."""
        cfg = self.config
        return schedules.linear(int(self.num_steps), cfg.capacity_steps, 0.0, cfg.capacity_max)

    def objective(self, x: torch.Tensor) -> Objective:
        objective = super().objective(x)
        kl = objective.terms.pop("kl")
        objective.terms["kl_capacity"] = (kl - self.capacity()).abs()
        return objective

    def term_weights(self) -> dict[str, float]:
        return {"kl_capacity": self.config.gamma * self.kl_weight()}

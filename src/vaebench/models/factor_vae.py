"""FactorVAE (Kim and Mnih 2018): a total-correlation penalty estimated by a discriminator."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from vaebench.models.base import Objective
from vaebench.models.code_critic import CodeCritic
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig


class FactorVAEConfig(VAEConfig):
    """Config of :class:`FactorVAE`. The paper's discriminator has 6 hidden layers of 1000
    units; the defaults here are smaller, for CPU-sized runs. gamma is tuned per dataset in
    the paper; 10 is a starting point."""

    gamma: float = Field(10.0, ge=0, description="weight of the total-correlation term")
    discriminator_hidden: int = Field(256, gt=0, description="units per discriminator layer")
    discriminator_layers: int = Field(3, gt=0, description="hidden layers of the discriminator")


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle each latent dimension independently across the batch (Kim and Mnih 2018,
    Algorithm 1): a sample from the product of the marginals prod_j q(z_j) of the codes.
    Each column keeps its multiset of values."""
    order = torch.rand(z.shape, generator=generator, device=z.device).argsort(dim=0)
    return z.gather(0, order)


@register_model
class FactorVAE(CodeCritic, VAE):
    """FactorVAE (Kim and Mnih 2018, "Disentangling by Factorising", Eq. 2 and Algorithm 2):
    the VAE loss plus gamma times the total correlation KL(q(z) || prod_j q(z_j)).

    The total correlation is estimated by the density-ratio trick with a discriminator D
    trained to tell codes z ~ q(z) from codes with every dimension permuted across the
    batch; per sample, tc_i = log D(z_i) / (1 - D(z_i)), the difference of D's two logits.
    Terms: ``recon``, ``kl`` (closed form, under ``kl_schedule``) and ``tc`` (weight gamma),
    each per sample.

    The discriminator has its own parameter group ``"discriminator"`` and optimizer (Adam,
    lr 1e-4, betas (0.5, 0.9) as in the paper, via :meth:`optimizer_defaults`) and is updated
    in the same training step, after the model, on the step's codes detached. Its loss is a
    minibatch-level quantity: the cross-entropy of D on the batch's codes (class 0) and on
    a permutation of the same codes (class 1), each averaged over the batch. (Algorithm 2
    of the paper permutes a second, independent batch; permuting the same batch costs no
    second forward pass and, for batches of tens of samples or more, changes the mixing
    little.)
    """

    name = "factor_vae"
    config_class = FactorVAEConfig

    def objective(self, x: torch.Tensor) -> Objective:
        objective = super().objective(x)
        logits = self.discriminator(objective.z)
        objective.terms["tc"] = logits[:, 0] - logits[:, 1]
        return objective

    def term_weights(self) -> dict[str, float]:
        return {"kl": self.kl_weight(), "tc": self.config.gamma}

    def discriminator_loss(self, z: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Cross-entropy of D on codes ``z`` (class 0) and on their permutation (class 1);
        the codes are detached, so only D learns from it. Minibatch-level (see class doc)."""
        z = z.detach()
        joint = self.discriminator(z)
        product = self.discriminator(permute_dims(z, generator))
        zeros = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        return 0.5 * (F.cross_entropy(joint, zeros) + F.cross_entropy(product, zeros + 1))

    def optimizer_defaults(self) -> dict[str, dict[str, Any]]:
        return {"discriminator": {"optimizer": "adam", "learning_rate": 1e-4,
                                  "optimizer_kwargs": {"betas": (0.5, 0.9)}}}

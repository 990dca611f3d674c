"""The variational autoencoder (Kingma and Welling 2014)."""

from __future__ import annotations

import torch

from vaebench.config import ModelConfig
from vaebench.distributions import DiagonalGaussian
from vaebench.models.base import Autoencoder, Objective
from vaebench.models.registry import register_model


class VAEConfig(ModelConfig):
    """Config of :class:`VAE`."""


@register_model
class VAE(Autoencoder):
    """Variational autoencoder (Kingma and Welling 2014), Gaussian posterior, N(0, I) prior.

    The loss is the negative ELBO per sample, -E_q[log p(x | z)] + KL(q(z | x) || p(z))
    (Eq. 3 of the paper), with one reparameterized draw and the KL in closed form.
    """

    name = "vae"
    config_class = VAEConfig

    @property
    def encoder_features(self) -> int:
        return 2 * self.config.latent_dim

    def _encoder_output_meaning(self) -> str:
        return "mean and log-variance of a diagonal Gaussian, concatenated"

    def posterior(self, params: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian.from_params(params)

    def objective(self, x: torch.Tensor) -> Objective:
        q = self.encode(x)
        z = q.rsample()
        params = self.decode(z)
        terms = {"recon": self.likelihood.nll(params, x), "kl": q.kl_standard_normal()}
        return Objective(terms, z, params)

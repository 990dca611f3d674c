"""The deterministic autoencoder."""

from __future__ import annotations

import torch

from vaebench.config import ModelConfig
from vaebench.distributions import PointMass
from vaebench.models.base import Autoencoder, Objective
from vaebench.models.registry import register_model


class AEConfig(ModelConfig):
    """Config of :class:`AE`."""


@register_model
class AE(Autoencoder):
    """Deterministic autoencoder: the loss is -log p(x | z) at z = encoder(x).

    It has no prior; :meth:`generate` decodes N(0, I) draws only as a baseline.
    """

    name = "ae"
    config_class = AEConfig

    def posterior(self, params: torch.Tensor) -> PointMass:
        return PointMass(params)

    def objective(self, x: torch.Tensor) -> Objective:
        z = self.encode(x).mean
        params = self.decode(z)
        return Objective({"recon": self.reconstruction_term(params, x)}, z, params)

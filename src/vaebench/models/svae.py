"""The hyperspherical VAE, S-VAE (Davidson, Falorsi, De Cao, Kipf and Tomczak 2018)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from vaebench.distributions import HypersphericalUniform, VonMisesFisher
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig


class SVAEConfig(VAEConfig):
    """Config of :class:`SVAE`: ``latent_dim`` is the dimension m of the space whose unit
    sphere S^(m-1) holds the codes (pythae's SVAEConfig adds no other field)."""

    latent_dim: int = Field(16, ge=2, description="m: codes lie on the unit sphere S^(m-1) "
                                                  "of R^m")


@register_model
class SVAE(VAE):
    """S-VAE (Davidson et al. 2018): von Mises-Fisher posterior, uniform prior on S^(m-1).

    "Hyperspherical Variational Auto-Encoders" (UAI 2018). The encoder outputs a direction
    (``latent_dim`` features, normalized to mu) and one more feature for the concentration
    kappa = softplus(.) + 1, as in the authors' code. The loss is the negative ELBO: terms
    ``recon`` at one reparameterized draw and ``kl`` = KL(vMF(mu, kappa) || U(S^(m-1))) in
    closed form (Sec. 3.2, Appendix B), under ``kl_schedule``.
    """

    name = "svae"
    config_class = SVAEConfig
    has_likelihood = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prior = HypersphericalUniform(self.config.latent_dim)

    @property
    def encoder_features(self) -> int:
        return self.config.latent_dim + 1

    def _encoder_output_meaning(self) -> str:
        return "a mean direction and one raw concentration, concatenated"

    def posterior(self, params: torch.Tensor) -> VonMisesFisher:
        direction, raw_concentration = params[:, :-1], params[:, -1]
        return VonMisesFisher(F.normalize(direction, dim=1), F.softplus(raw_concentration) + 1)

    def kl_terms(self, q: VonMisesFisher, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """KL(q(z | x) || U(S^(m-1))) in closed form, per sample."""
        return {"kl": q.kl_uniform()}

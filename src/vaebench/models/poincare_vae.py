"""Poincaré VAE (Mathieu, Le Lan, Maddison, Tomioka and Teh 2019): a hyperbolic latent space."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vaebench.distributions import BallPrior, RiemannianNormal, WrappedNormal
from vaebench.manifolds import PoincareBall
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig
from vaebench.nn import build_network

BALL_NORMALS = {"wrapped_normal": WrappedNormal, "riemannian_normal": RiemannianNormal}
#: Added to the softplus of the encoder's scale output, so that the scale stays positive.
MIN_SCALE = 1e-5
#: The ball's computations (posterior, prior, gyroplanes) run in float64: a float32 point can
#: be at most about 6.2 / sqrt(c) from the origin, less than the typical distance sqrt(d) of a
#: unit-scale prior draw once d exceeds about 36 (pythae's MNIST setting has d = 50), and
#: clipped draws no longer follow the densities their weights are computed with. In float64
#: the limit is about 12.2 / sqrt(c).
BALL_DTYPE = torch.float64

BallNormalName = Literal["wrapped_normal", "riemannian_normal"]


class PoincareVAEConfig(VAEConfig):
    """Config of :class:`PoincareVAE`."""

    curvature: float = Field(1.0, gt=0, description="c: the latent ball has curvature -c")
    posterior: BallNormalName = Field("wrapped_normal", description="q(z | x): "
                                      "'wrapped_normal' or 'riemannian_normal'")
    prior: BallNormalName = Field("wrapped_normal", description="p(z), at the origin with unit "
                                  "scale: 'wrapped_normal' or 'riemannian_normal'")
    gyroplanes: int = Field(64, gt=0, description="width of the decoder's first layer, the "
                                                  "gyroplane layer")


class GyroplaneLayer(nn.Module):
    """z in the ball -> f_k(z) = sign(<(-p_k) (+)_c z, a_k>) |a_k|_{p_k} d_c(z, H_{a_k, p_k}),
    the signed distances to ``out_features`` learned gyroplanes, scaled by the Riemannian norm
    lambda_p |a| of their normals (Mathieu et al. 2019, Sec. 3.3; Ganea et al. 2018, Sec. 3.1).

    The offsets p_k = exp_0(b_k) and normals a_k = PT_{0->p_k}(w_k) come from Euclidean
    parameters b_k and w_k, so any value of them is valid.
    """

    def __init__(self, in_features: int, out_features: int, curvature: float):
        super().__init__()
        self.ball = PoincareBall(curvature)
        self.offsets = nn.Parameter(torch.zeros(out_features, in_features))
        bound = 1 / math.sqrt(in_features)
        self.normals = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Computed in z's dtype (the ball's), returned in the layer's (the network's)."""
        p = self.ball.expmap0(self.offsets.to(z.dtype))
        a = self.ball.transport_from_origin(p, self.normals.to(z.dtype))
        distance = self.ball.gyroplane_distances(z, p, a)
        features = self.ball.conformal_factor(p).squeeze(-1) * a.norm(dim=-1) * distance
        return features.to(self.normals.dtype)


@register_model
class PoincareVAE(VAE):
    """Poincaré VAE (Mathieu et al. 2019): codes in a Poincaré ball of curvature -c.

    From "Continuous Hierarchical Representations with Poincaré Variational Auto-Encoders";
    c is ``curvature``.

    What differs from the VAE: the encoder outputs a tangent vector u at the origin and a
    scale s (one per dimension for the wrapped normal, one for the isotropic Riemannian
    normal); q(z | x) is the ``posterior`` law at exp_0(u) with scale softplus(s) + 1e-5
    (:mod:`vaebench.distributions`); the prior is the ``prior`` law at the origin with unit
    scale; the decoder starts with a :class:`GyroplaneLayer` of ``gyroplanes`` units, followed
    by the configured network (a user decoder receives those features). The KL has no closed
    form: its per-sample term is the one-draw Monte Carlo estimate log q(z | x) - log p(z) at
    the decoded draw (Sec. 3.2 of the paper). Terms: ``recon`` and ``kl``.
    """

    name = "poincare_vae"
    config_class = PoincareVAEConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prior = BallPrior(BALL_NORMALS[self.config.prior], self.ball, self.config.latent_dim,
                               dtype=BALL_DTYPE)

    @property
    def ball(self) -> PoincareBall:
        return PoincareBall(self.config.curvature)

    @property
    def _scale_features(self) -> int:
        return self.config.latent_dim if self.config.posterior == "wrapped_normal" else 1

    @property
    def encoder_features(self) -> int:
        return self.config.latent_dim + self._scale_features

    def _encoder_output_meaning(self) -> str:
        return (f"a tangent vector at the origin and {self._scale_features} scale "
                "parameter(s), concatenated")

    def build_decoder(self, net: nn.Module | None) -> nn.Module:
        cfg = self.config
        if net is None:
            net = build_network("decoder", cfg.decoder, cfg.decoder_kwargs,
                                latent_dim=cfg.gyroplanes, output_shape=self.likelihood.param_shape)
        return nn.Sequential(GyroplaneLayer(cfg.latent_dim, cfg.gyroplanes, cfg.curvature), net)

    def posterior(self, params: torch.Tensor) -> WrappedNormal | RiemannianNormal:
        tangent, raw_scale = params.to(BALL_DTYPE).split(
            [self.config.latent_dim, self._scale_features], dim=1)
        scale = F.softplus(raw_scale) + MIN_SCALE
        return BALL_NORMALS[self.config.posterior](self.ball.expmap0(tangent), scale, self.ball)

    def kl_terms(self, q: Any, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """log q(z | x) - log p(z) at the draw, computed in the ball's dtype."""
        kl = q.log_prob(z) - self.prior.log_prob(z)
        return {"kl": kl.to(self.likelihood_dtype)}

    @property
    def likelihood_dtype(self) -> torch.dtype:
        """The dtype of the networks, in which the loss terms are returned."""
        return next(self.decoder.parameters()).dtype

"""Samplers that draw from the model's own prior p(z): ``normal`` for any model with one
(N(0, I) for most), and the explicit, model-specific ones: ``hypersphere`` (the SVAE's
uniform law on the sphere), ``poincare`` (the Poincaré VAE's normal at the ball's origin)
and ``vamp`` (the VampPrior's mixture of pseudo-input posteriors)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vaebench.distributions import BallPrior, HypersphericalUniform
from vaebench.models.vamp import VampPrior
from vaebench.samplers.base import Sampler
from vaebench.samplers.registry import register_sampler


@register_sampler
class PriorSampler(Sampler):
    """Draws from ``model.prior`` (pythae's ``NormalSampler``)."""

    name = "normal"
    serves_conditional = True  # prior draws, decoded with every label in turn
    #: The kind of prior a subclass serves, and the model that has it (None: any prior).
    prior_class: ClassVar[type | None] = None
    prior_owner: ClassVar[str] = ""

    @classmethod
    def refusal(cls, model: nn.Module) -> str | None:
        if cls.prior_class is not None:
            if not isinstance(model.prior, cls.prior_class):
                return f"its prior is not a {cls.prior_class.__name__} (the " \
                       f"{cls.prior_owner}'s is)"
        elif not callable(getattr(model.prior, "sample", None)):
            return ("it has no prior of its own to draw from (vaebench.samplers.samplers_for "
                    "lists those that serve it)")
        return None

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        return model.prior.sample(n, device=self._device(model))


@register_sampler
class HypersphereSampler(PriorSampler):
    """The uniform law on the unit sphere S^(d-1), the S-VAE's prior (Davidson et al. 2018,
    "Hyperspherical Variational Auto-Encoders", Sec. 3): normalized Gaussian vectors."""

    name = "hypersphere"
    serves_conditional = False
    prior_class = HypersphericalUniform
    prior_owner = "svae, whose codes lie on a unit sphere"


@register_sampler
class PoincareSampler(PriorSampler):
    """The Poincaré VAE's prior (Mathieu et al. 2019, "Continuous Hierarchical
    Representations with Poincaré Variational Auto-Encoders", Sec. 3.1): the wrapped or
    Riemannian normal with unit scale at the origin of the ball, in the ball's dtype."""

    name = "poincare"
    serves_conditional = False
    prior_class = BallPrior
    prior_owner = "poincare_vae, whose codes lie in a Poincaré ball"


@register_sampler
class VampSampler(PriorSampler):
    """The VampPrior p(z) = (1/K) sum_k q(z | u_k) (Tomczak and Welling 2018, "VAE with a
    VampPrior", Eq. 9): a pseudo-input u_k chosen uniformly, encoded through the model's
    current encoder, and a draw from its posterior."""

    name = "vamp"
    serves_conditional = False
    prior_class = VampPrior
    prior_owner = "vamp"

"""VAEs whose posterior is a Gaussian pushed through a normalizing flow: planar / radial
flows (Rezende and Mohamed 2015) and inverse autoregressive flow (Kingma et al. 2016)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt

from vaebench.distributions import DiagonalGaussian
from vaebench.flows import IAF, Flow, FlowDistribution, FlowSequence, PlanarFlow, RadialFlow
from vaebench.models.base import Objective
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig


class FlowPosteriorVAE(VAE):
    """A VAE with q_K(z | x): z_0 ~ N(mu(x), sigma(x)) pushed through ``self.flow``.

    ``posterior_draws(x, k)`` gives the draws z_K and log q_K(z_K | x) = log q_0(z_0 | x) -
    sum log |det| (Rezende and Mohamed 2015, Eq. 13), so the ELBO and importance-sampled
    likelihoods of :mod:`vaebench.metrics` use the flow posterior. The loss is the negative
    ELBO at one such draw (their Eq. 15): terms ``recon`` = -log p(x | z_K) and the Monte
    Carlo ``kl`` = log q_K(z_K | x) - log p(z_K), under ``kl_schedule``.

    ``encode(x).mean`` (and so ``reconstruct``) is the flow's image of the base mean,
    f(mu(x)): the decoder's code for x, not E[z_K], which has no closed form.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.flow = self.build_flow()

    def build_flow(self) -> Flow:
        raise NotImplementedError

    @property
    def context_features(self) -> int:
        """Width of the context the encoder gives the flow, after mu and log sigma^2."""
        return 0

    @property
    def encoder_features(self) -> int:
        return 2 * self.config.latent_dim + self.context_features

    def posterior(self, params: torch.Tensor) -> FlowDistribution:
        base, context = params.split([2 * self.config.latent_dim, self.context_features], 1)
        context = context if self.context_features else None
        return FlowDistribution(DiagonalGaussian.from_params(base), self.flow, context)

    def posterior_draws(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(x).rsample_with_log_prob((k,))

    def objective(self, x: torch.Tensor) -> Objective:
        return self.sampled_objective(x)


FLOWS: dict[str, type[Flow]] = {"planar": PlanarFlow, "radial": RadialFlow}


class VAELinNFConfig(VAEConfig):
    """Config of :class:`VAELinNF`."""

    flows: tuple[Literal["planar", "radial"], ...] = Field(
        ("planar", "planar"), min_length=1,
        description="the flows applied to z_0, in order: 'planar' or 'radial' each")


@register_model
class VAELinNF(FlowPosteriorVAE):
    """VAE with planar and radial flows (Rezende and Mohamed 2015, "Variational Inference
    with Normalizing Flows"): z_0 ~ N(mu(x), sigma(x)) goes through the ``flows`` in order
    (Eq. 10-12 and 14). As in pythae's VAE_LinNF, the flows' parameters are free parameters
    of the model, shared by every x (the paper amortizes them: the encoder outputs them).
    """

    name = "vae_linnf"
    config_class = VAELinNFConfig
    has_likelihood = True

    def build_flow(self) -> Flow:
        return FlowSequence(FLOWS[kind](self.config.latent_dim) for kind in self.config.flows)


class VAEIAFConfig(VAEConfig):
    """Config of :class:`VAEIAF`."""

    iaf_steps: int = Field(2, gt=0, description="number T of IAF steps")
    made_hidden: tuple[PositiveInt, ...] = Field(
        (128, 128), description="hidden widths of each step's MADE")
    context_dim: int = Field(16, ge=0, description="width of the context h the encoder "
                                                   "outputs for the flow (0: no context)")


@register_model
class VAEIAF(FlowPosteriorVAE):
    """VAE with inverse autoregressive flow (Kingma et al. 2016, "Improved Variational
    Inference with Inverse Autoregressive Flow", Eq. 10-14 and Algorithm 1): the encoder
    outputs mu, log sigma^2 and a context h; z_0 ~ N(mu, sigma) goes through ``iaf_steps``
    :class:`~vaebench.flows.IAFStep` s with MADE networks of hidden widths ``made_hidden``,
    each taking h, in alternating orders.
    """

    name = "vae_iaf"
    config_class = VAEIAFConfig
    has_likelihood = True

    @property
    def context_features(self) -> int:
        return self.config.context_dim

    def _encoder_output_meaning(self) -> str:
        return ("mean and log-variance of a diagonal Gaussian and a context of context_dim "
                "features, concatenated")

    def build_flow(self) -> Flow:
        cfg = self.config
        return IAF(cfg.latent_dim, cfg.iaf_steps, cfg.made_hidden, cfg.context_dim)

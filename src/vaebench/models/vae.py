"""The variational autoencoder (Kingma and Welling 2014)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator

from vaebench import schedules
from vaebench.config import ModelConfig
from vaebench.distributions import DiagonalGaussian
from vaebench.models.base import Autoencoder, Objective
from vaebench.models.registry import register_model


class VAEConfig(ModelConfig):
    """Config of :class:`VAE` and of every model with a KL term.

    ``kl_schedule`` anneals the weight of the KL term(s) over optimizer steps (see
    :mod:`vaebench.schedules`): ``"constant"`` (no annealing), ``"linear"`` warm-up from 0 to
    1 over ``kl_anneal_steps``, or ``"cyclical"`` (Fu et al. 2019) with cycles of
    ``kl_anneal_steps`` steps, each rising over a proportion ``kl_cycle_ratio`` then holding
    at 1, for ``kl_cycles`` cycles (None: forever).
    """

    kl_schedule: str = Field("constant", description="'constant', 'linear' or 'cyclical'")
    kl_anneal_steps: int = Field(0, ge=0, description="linear: warm-up steps; cyclical: "
                                                      "steps per cycle")
    kl_cycle_ratio: float = Field(0.5, gt=0, le=1, description="cyclical: proportion R of "
                                                               "each cycle spent rising")
    kl_cycles: int | None = Field(None, gt=0, description="cyclical: number of cycles, then "
                                                          "the weight stays at 1")

    @model_validator(mode="after")
    def _check_kl_schedule(self) -> VAEConfig:
        schedules.check_schedule(self.kl_schedule, self.kl_anneal_steps)
        return self


@register_model
class VAE(Autoencoder):
    """Variational autoencoder (Kingma and Welling 2014), Gaussian posterior, N(0, I) prior.

    The loss is the negative ELBO per sample, -E_q[log p(x | z)] + KL(q(z | x) || p(z))
    (Eq. 3 of the paper), with one reparameterized draw and the KL in closed form.
    """

    name = "vae"
    config_class = VAEConfig
    has_likelihood = True

    @property
    def encoder_features(self) -> int:
        return 2 * self.config.latent_dim

    def _encoder_output_meaning(self) -> str:
        return "mean and log-variance of a diagonal Gaussian, concatenated"

    def posterior(self, params: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian.from_params(params)

    def kl_weight(self) -> float:
        """Annealing factor of the KL term(s) at step ``num_steps`` (``kl_schedule``).

        1 in eval mode: evaluation reports the objective being annealed towards, so that
        losses of different epochs compare (and the best-model choice is not biased to
        early epochs with a small KL weight).
        """
        cfg = self.config
        if cfg.kl_schedule == "constant" or not self.training:
            return 1.0
        return schedules.schedule_value(cfg.kl_schedule, int(self.num_steps),
                                        cfg.kl_anneal_steps, cfg.kl_cycle_ratio, cfg.kl_cycles)

    def term_weights(self) -> dict[str, float]:
        return {"kl": self.kl_weight()}

    def objective(self, x: torch.Tensor, **inputs: Any) -> Objective:
        q = self.encode(x, **inputs)
        z = q.rsample()
        params = self.decode(z, **inputs)
        terms = {"recon": self.reconstruction_term(params, x), **self.kl_terms(q, z)}
        return Objective(terms, z, params)

    def kl_terms(self, q: DiagonalGaussian, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ELBO's regularizer per sample at the draw ``z``: KL(q(z | x) || N(0, I)) in
        closed form. Variants with another prior or a decomposed KL override this."""
        return {"kl": q.kl_standard_normal()}

    def sampled_objective(self, x: torch.Tensor, **inputs: Any) -> Objective:
        """The negative ELBO at one draw of :meth:`importance_terms`: ``recon`` = -log p(x | z)
        and the Monte Carlo ``kl`` = log q(z | x) - log p(z), for posteriors whose KL has no
        closed form (flows, Hamiltonian steps)."""
        draw = {name: value[0] for name, value in self.importance_terms(x, 1, **inputs).items()}
        terms = {"recon": -draw["log_px"], "kl": draw["log_qz"] - draw["log_pz"]}
        return Objective(terms, draw["z"], draw["decoder_params"])

    def posterior_draws(self, x: torch.Tensor, k: int,
                        **inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` reparameterized draws z ~ q(z | x), shape (k, B, ...), and log q(z | x) of
        each, shape (k, B). Models with another posterior (flows) override this."""
        q = self.encode(x, **inputs)
        z = q.rsample((k,))
        return z, q.log_prob(z)

    def importance_terms(self, x: torch.Tensor, k: int,
                         **inputs: Any) -> dict[str, torch.Tensor]:
        """For k draws z ~ q(z | x): ``log_px`` = log p(x | z), ``log_pz`` = log p(z) and
        ``log_qz`` = log q(z | x), each of shape (k, B); also the draws ``z`` and their
        ``decoder_params``, of shapes (k, B, ...).

        All k * B codes are decoded in one call. Gradients flow (the draws are
        reparameterized), so training objectives use it; the metrics call it under no_grad.
        ``inputs`` (e.g. labels) go to the encoder and, repeated k times, to the decoder.
        """
        if k < 1:
            raise ValueError(f"k must be a positive number of draws, got {k}")
        z, log_qz = self.posterior_draws(x, k, **inputs)
        repeated = {name: value.repeat(k, *(1,) * (value.dim() - 1))
                    for name, value in inputs.items()}
        params = self.decode(z.flatten(0, 1), **repeated)
        x_rep = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        log_px = -self.likelihood.nll(params, x_rep).view(k, x.shape[0])
        return {"log_px": log_px, "log_pz": self.prior.log_prob(z), "log_qz": log_qz,
                "z": z, "decoder_params": params.unflatten(0, (k, x.shape[0]))}

    def log_importance_weights(self, x: torch.Tensor, k: int, **inputs: Any) -> torch.Tensor:
        """log w = log p(x | z) + log p(z) - log q(z | x) for k draws z ~ q(z | x), shape (k, B).

        Their mean over draws estimates the ELBO; logsumexp - log k is the importance-weighted
        bound of Burda, Grosse and Salakhutdinov ("Importance Weighted Autoencoders", ICLR
        2016). See :meth:`importance_terms`.
        """
        terms = self.importance_terms(x, k, **inputs)
        return terms["log_px"] + terms["log_pz"] - terms["log_qz"]

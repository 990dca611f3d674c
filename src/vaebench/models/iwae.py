"""Importance-weighted bounds: IWAE (Burda, Grosse and Salakhutdinov 2016) and the MIWAE,
PIWAE and CIWAE estimators of Rainforth et al. ("Tighter Variational Bounds are Not
Necessarily Better", ICML 2018).

Every model here draws S codes z_s ~ q(z | x) per data point (one decoder call, through
:meth:`VAE.importance_terms`) and forms the log weights log w_s = log p(x | z_s) + log p(z_s)
- log q(z_s | x). Its per-sample terms sum to the negative bound:

* ``recon`` = -(1/S) sum_s log p(x | z_s);
* ``kl`` = (1/S) sum_s [log q(z_s | x) - log p(z_s)], a Monte Carlo KL; with ``recon`` the
  negative ELBO estimate -(1/S) sum_s log w_s;
* ``iw_gap`` = ELBO estimate - bound (<= 0 by Jensen's inequality): how much the importance
  weighting tightens the bound on these draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from vaebench.models.base import ModelOutput, Objective
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig


def importance_bound(log_w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """(1/M) sum_m log (1/K) sum_k w_mk per data point, from log weights of shape (M K, B)
    whose group m is rows m K .. m K + K - 1 (Rainforth et al. 2018, MIWAE); M = 1 is the
    IWAE bound log (1/K) sum_k w_k (Burda et al. 2016, Eq. 8)."""
    grouped = log_w.unflatten(0, (groups, -1))
    return (torch.logsumexp(grouped, dim=1) - math.log(grouped.shape[1])).mean(0)


class IWAEConfig(VAEConfig):
    """Config of :class:`IWAE`; ``k`` defaults to pythae's ``number_samples`` (10).

    KL annealing is refused: weighting the KL inside a bound does not give a bound."""

    k: int = Field(10, ge=1, description="importance samples K per data point (per group)")

    @model_validator(mode="after")
    def _no_kl_annealing(self) -> IWAEConfig:
        if self.kl_schedule != "constant":
            raise ValueError(f"kl_schedule must be 'constant' for an importance-weighted "
                             f"bound, got {self.kl_schedule!r}")
        return self


@register_model
class IWAE(VAE):
    """Importance weighted autoencoder (Burda, Grosse and Salakhutdinov, ICLR 2016, Eq. 8):
    per sample, loss = -log (1/K) sum_k w_k over K draws. Terms ``recon``, ``kl``,
    ``iw_gap`` (module docstring); z and the decoder output are those of the first draw."""

    name = "iwae"
    config_class = IWAEConfig

    def num_groups(self) -> int:
        """M, the number of groups of K draws averaged outside the log."""
        return 1

    def objective(self, x: torch.Tensor, **inputs: Any) -> Objective:
        draws = self.importance_terms(x, self.num_groups() * self.config.k, **inputs)
        log_w = draws["log_px"] + draws["log_pz"] - draws["log_qz"]
        terms = {"recon": -draws["log_px"].mean(0),
                 "kl": (draws["log_qz"] - draws["log_pz"]).mean(0),
                 **self.gap_terms(log_w)}
        return Objective(terms, draws["z"][0], draws["decoder_params"][0])

    def gap_terms(self, log_w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms that turn the ELBO estimate into the bound, from log weights (S, B)."""
        return {"iw_gap": log_w.mean(0) - importance_bound(log_w, self.num_groups())}


class MIWAEConfig(IWAEConfig):
    """Config of :class:`MIWAE`; defaults are pythae's ``number_gradient_estimates`` (5) and
    ``number_samples`` (10)."""

    m: int = Field(5, ge=1, description="groups M of K draws, averaged outside the log")


@register_model
class MIWAE(IWAE):
    """Multiply importance weighted autoencoder (Rainforth et al. 2018, "New estimators"):
    per sample, loss = -(1/M) sum_m log (1/K) sum_k w_mk over M groups of K draws. M = 1 is
    the IWAE, K = 1 the VAE with M draws."""

    name = "miwae"
    config_class = MIWAEConfig

    def num_groups(self) -> int:
        return self.config.m


class PIWAEConfig(MIWAEConfig):
    """Config of :class:`PIWAE` (the fields and defaults of :class:`MIWAEConfig`)."""


@register_model
class PIWAE(MIWAE):
    """Partially importance weighted autoencoder (Rainforth et al. 2018, "New estimators"):
    from the same M K draws, the generative network (decoder and likelihood parameters,
    e.g. a learned sigma) ascends the IWAE bound over all M K draws, the inference network
    (encoder) the MIWAE(M, K) bound.

    Parameter groups ``"decoder"`` (every parameter outside the encoder) and ``"encoder"``,
    both updated from one graph in one step. ``forward`` reports the IWAE(M K) bound: terms
    ``recon``, ``kl``, ``iw_gap`` and ``miwae_gap`` = IWAE - MIWAE (>= 0, weight 0 in the
    reported loss), so the encoder's loss is the loss plus ``miwae_gap``.
    """

    name = "piwae"
    config_class = PIWAEConfig

    def gap_terms(self, log_w: torch.Tensor) -> dict[str, torch.Tensor]:
        iwae = importance_bound(log_w)
        return {"iw_gap": log_w.mean(0) - iwae,
                "miwae_gap": iwae - importance_bound(log_w, self.num_groups())}

    def term_weights(self) -> dict[str, float]:
        return {**super().term_weights(), "miwae_gap": 0.0}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = set(self.encoder.parameters())
        return {"decoder": [p for p in self.parameters() if p not in encoder],
                "encoder": list(self.encoder.parameters())}

    def training_step(self, x: torch.Tensor, update: Callable[..., None],
                      **inputs: Any) -> ModelOutput:
        output = self(x, **inputs)
        miwae_loss = output.loss + output.terms["miwae_gap"].mean()
        update({"decoder": output.loss, "encoder": miwae_loss})
        return output


class CIWAEConfig(IWAEConfig):
    """Config of :class:`CIWAE`; ``beta`` defaults to pythae's 0.5."""

    beta: float = Field(0.5, ge=0, le=1, description="weight of the ELBO; 1 - beta: IWAE")


@register_model
class CIWAE(IWAE):
    """Combination importance weighted autoencoder (Rainforth et al. 2018, "New
    estimators"): per sample, loss = -(beta ELBO + (1 - beta) IWAE) over the same K draws,
    the ELBO estimated by (1/K) sum_k log w_k. The terms are the IWAE's, ``iw_gap`` weighted
    by 1 - beta."""

    name = "ciwae"
    config_class = CIWAEConfig

    def term_weights(self) -> dict[str, float]:
        return {**super().term_weights(), "iw_gap": 1.0 - self.config.beta}

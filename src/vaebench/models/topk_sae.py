"""The TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders"), for embeddings and activations: tabular data of shape (N, d)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from vaebench.collectives import summed_over_ranks
from vaebench.config import ModelConfig
from vaebench.data.sources import ArrayData
from vaebench.distributions import PointMass
from vaebench.models.base import Autoencoder, ModelOutput, Objective
from vaebench.models.registry import register_model

#: Rows of the training data the geometric median of b_pre's initialization is taken over.
MEDIAN_ROWS = 4096


class TopKSAEConfig(ModelConfig):
    """Config of :class:`TopKSAE`. ``latent_dim`` is the dictionary size n (required: the
    paper's dictionaries are many times wider than the data). Its networks are its own linear
    maps (``"linear"``, no options). Defaults are the paper's: k = 32, AuxK with alpha = 1/32
    on the top 512 latents dead for 10 million tokens (here: samples)."""

    latent_dim: int = Field(gt=0, description="n, the number of latents (dictionary size)")
    encoder: Literal["linear"] = Field(
        "linear", description="the SAE's encoder W_enc (x - b_pre) + b_enc (the only choice)")
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict, max_length=0)
    decoder: Literal["linear"] = Field(
        "linear", description="the SAE's dictionary W_dec with unit-norm columns")
    decoder_kwargs: dict[str, Any] = Field(default_factory=dict, max_length=0)
    k: int = Field(32, gt=0, description="active latents per sample")
    auxk_alpha: float = Field(1 / 32, ge=0, description="weight of the AuxK loss; 0: none")
    auxk_k: int = Field(512, gt=0, description="k_aux: dead latents the AuxK loss uses")
    dead_after_tokens: int = Field(10_000_000, gt=0, description="samples without firing "
                                                                 "after which a latent is dead")

    @model_validator(mode="after")
    def _check_sizes_and_likelihood(self) -> TopKSAEConfig:
        if self.k > self.latent_dim:
            raise ValueError(f"k={self.k} active latents must not exceed latent_dim="
                             f"{self.latent_dim}, the dictionary size")
        if self.likelihood != "gaussian":
            raise ValueError(f"likelihood must be 'gaussian' for topk_sae (its loss is a "
                             f"squared error; any sigma), got {self.likelihood!r}")
        return self


class SparseEncoder(nn.Linear):
    """Pre-activations W_enc x + b_enc of the flattened input: (B, *input_dim) -> (B, n)."""

    def __init__(self, input_dim: Sequence[int], latent_dim: int):
        super().__init__(math.prod(input_dim), latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class UnitNormDictionary(nn.Module):
    """W_dec z: (B, n) -> (B, *output_shape), the columns of W_dec (D, n) of unit norm,
    random directions at initialization (Gao et al. 2024, Sec. A.1)."""

    def __init__(self, latent_dim: int, output_shape: Sequence[int]):
        super().__init__()
        self.output_shape = tuple(output_shape)
        weight = torch.randn(math.prod(output_shape), latent_dim)
        self.weight = nn.Parameter(weight / weight.norm(dim=0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.weight.T).view(-1, *self.output_shape)

    @torch.no_grad()
    def normalize_columns(self) -> None:
        self.weight /= self.weight.norm(dim=0).clamp_min(1e-12)


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of the k largest entries of each row of ``pre``, zeros elsewhere: the TopK
    activation (Gao et al. 2024, Sec. 2.2; a row keeps at most k positive latents)."""
    values, indices = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, indices, values.relu())


def geometric_median(points: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """argmin_m sum_i ||x_i - m|| over the rows of ``points`` (N, D), by Weiszfeld's
    fixed-point iteration m <- sum_i w_i x_i / sum_i w_i, w_i = 1 / ||x_i - m||."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(1e-12)
        median = weights @ points / weights.sum()
    return median


@register_model
class TopKSAE(Autoencoder):
    """TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse
    autoencoders", Sec. 2.2-2.3 and A.1-A.2): a linear dictionary of n = ``latent_dim``
    directions, of which each sample uses at most k.

    The code and the reconstruction are

        z = ReLU(TopK_k(W_enc (x - b_pre) + b_enc)),      x_hat = W_dec z + b_pre,

    with the columns of W_dec renormalized to unit norm after every optimizer step (the
    paper's choice, Sec. A.1), W_enc initialized to W_dec^T and b_pre to the geometric
    median of (up to 4096) training rows when :meth:`prepare` sees the model untrained.

    Terms, per sample: ``recon`` = -log N(x; x_hat, sigma^2 I) = 0.5 ||x - x_hat||^2 /
    sigma^2 + const, the paper's squared error ||x - x_hat||^2 scaled by 1 / (2 sigma^2);
    with ``sigma="data"`` (sigma^2 the training data's variance) it is (D / 2) MSE / Var(x)
    + const, the paper's normalized MSE when the D features share one mean. ``auxk`` (if
    ``auxk_alpha`` > 0, Sec. A.2) = 0.5 ||e - e_hat||^2 / sigma^2, where e = x - x_hat is
    the main model's error (a constant) and e_hat = W_dec z_aux its reconstruction by the
    ReLU of the top ``auxk_k`` pre-activations among the dead latents (those that fired on
    none of the last ``dead_after_tokens`` training samples), 0 while no latent is dead.
    The loss is thus (||x - x_hat||^2 + alpha ||e - e_hat||^2) / (2 sigma^2) + const, the
    paper's L + alpha L_aux. Every term is a sample's own: nothing couples the samples of a
    batch.

    A deterministic autoencoder without a prior over its sparse codes: no likelihood, and
    :meth:`generate` refuses; its ``default_sampler`` is ``gmm``, a Gaussian mixture fitted
    on the codes (its draws are dense; through the linear dictionary they decode to a
    Gaussian mixture over x). :meth:`epoch_metrics` reports ``dead_latents``, the latents
    that fired on no training sample of the epoch.
    """

    name = "topk_sae"
    config_class = TopKSAEConfig
    no_likelihood_reason = ("a sparse autoencoder's code is a deterministic function of x and "
                            "it has no prior over codes: it defines no density of x")
    default_sampler = "gmm"

    def __init__(self, config: TopKSAEConfig | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.prior = None
        self.pre_bias = nn.Parameter(torch.zeros(self.config.input_dim))
        with torch.no_grad():
            self.encoder.weight.copy_(self.decoder.weight.T)
            self.encoder.bias.zero_()
        # Training samples since each latent last fired (drives AuxK; saved with the model).
        self.register_buffer("samples_since_fired",
                             torch.zeros(self.config.latent_dim, dtype=torch.long))
        self.register_buffer("fired_this_epoch", torch.zeros(self.config.latent_dim,
                                                             dtype=torch.bool),
                             persistent=False)

    def build_encoder(self, net: nn.Module | None) -> nn.Module:
        self._refuse_network(net)
        return SparseEncoder(self.config.input_dim, self.config.latent_dim)

    def build_decoder(self, net: nn.Module | None) -> nn.Module:
        self._refuse_network(net)
        return UnitNormDictionary(self.config.latent_dim, self.likelihood.param_shape)

    def _refuse_network(self, net: nn.Module | None) -> None:
        if net is not None:
            raise ValueError("topk_sae builds its own linear encoder and unit-norm dictionary; "
                             "it takes no encoder or decoder network")

    # --- the sparse code ------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc (x - b_pre) + b_enc, shape (B, n)."""
        return self.encoder(x - self.pre_bias)

    def posterior(self, params: torch.Tensor) -> PointMass:
        return PointMass(topk_relu(params, self.config.k))

    def encode(self, x: torch.Tensor) -> PointMass:
        return self.posterior(self.pre_activations(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) + self.pre_bias

    def objective(self, x: torch.Tensor) -> Objective:
        pre = self.pre_activations(x)
        z = self.posterior(pre).mean
        params = self.decode(z)
        terms = {"recon": self.reconstruction_term(params, x)}
        if self.config.auxk_alpha > 0:
            terms["auxk"] = self.auxk_term(pre, (x - params).detach())
        if self.training:
            self._record_firing(z)
        return Objective(terms, z, params)

    def term_weights(self) -> dict[str, float]:
        return {"auxk": self.config.auxk_alpha}

    # --- dead latents ---------------------------------------------------------------------
    def dead_latents(self) -> torch.Tensor:
        """Boolean mask (n,) of the latents that fired on none of the last
        ``dead_after_tokens`` training samples."""
        return self.samples_since_fired >= self.config.dead_after_tokens

    def auxk_term(self, pre: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        """0.5 ||e - W_dec z_aux||^2 / sigma^2 per sample (Sec. A.2), z_aux the ReLU of the
        top ``auxk_k`` pre-activations among the dead latents; 0 if none is dead."""
        dead = self.dead_latents()
        k_aux = min(self.config.auxk_k, self.config.latent_dim)
        z_aux = topk_relu(pre.masked_fill(~dead, -math.inf), k_aux)
        scaled = (error - self.decoder(z_aux)) / self.likelihood.sigma.to(error)
        return 0.5 * scaled.pow(2).flatten(1).sum(1) * dead.any()

    @torch.no_grad()
    def _record_firing(self, z: torch.Tensor) -> None:
        """Latents that fired in the batch (the whole batch when data-parallel)."""
        fired = summed_over_ranks((z > 0).any(0).long()) > 0
        samples = summed_over_ranks(torch.tensor(z.shape[0], device=z.device))
        self.samples_since_fired.add_(samples).masked_fill_(fired, 0)
        self.fired_this_epoch |= fired

    def on_epoch_start(self) -> None:
        self.fired_this_epoch.zero_()

    def epoch_metrics(self) -> dict[str, float]:
        """``dead_latents``: latents that fired on no training sample since the epoch began."""
        return {**super().epoch_metrics(),
                "dead_latents": float((~self.fired_this_epoch).sum())}

    # --- training -------------------------------------------------------------------------
    def training_step(self, x: torch.Tensor, update: Callable[..., None],
                      **inputs: Any) -> ModelOutput:
        """The shared step, then the dictionary's columns back to unit norm (Sec. A.1)."""
        output = super().training_step(x, update, **inputs)
        self.decoder.normalize_columns()
        return output

    @torch.no_grad()
    def prepare(self, data: ArrayData) -> None:
        """An untrained model starts b_pre at the geometric median of up to
        :data:`MEDIAN_ROWS` evenly spaced training rows (Sec. A.1)."""
        super().prepare(data)
        if int(self.num_steps) == 0:
            index = torch.linspace(0, len(data) - 1, min(len(data), MEDIAN_ROWS)).round()
            rows = data.take(index.long())
            median = geometric_median(rows.flatten(1).double())
            self.pre_bias.copy_(median.view_as(self.pre_bias))

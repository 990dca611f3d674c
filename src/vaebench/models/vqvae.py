"""Quantized autoencoders: VQ-VAE, its EMA variant, HRQ-VAE (residual), FSQ-VAE, LFQ-VAE
(lookup-free) and the Gumbel-softmax VQ-VAE.

Each is a short declaration on :class:`QuantizedAutoencoder`: its quantizer and the weights
of its terms. The objective of VQ-VAE is, per sample,

    {"recon": -log p(x | z_q),
     "codebook": sum ||sg[z_e] - e||^2,
     "commitment": sum ||z_e - sg[e]||^2}

(without "codebook" for the EMA codebook, without both for FSQ; LFQ adds its entropy terms,
the Gumbel model has "kl" instead), reduced over the batch by the base class; the commitment
term weighs ``beta``. The quantization terms are summed over every latent position and
embedding dimension, like the reconstruction term over pixels, so no term changes when only
the batch size changes (DESIGN.md, "VQ-VAE loss"); LFQ's batch entropy is the documented
minibatch exception.

The models have no prior of their own: after training, the ``pixelcnn`` sampler
(:class:`vaebench.samplers.PixelCNNSampler`, a gated PixelCNN) is fitted on the code indices
of the training set and saved beside the model (``vaebench train`` does both); generating
draws code grids from it and decodes them (:meth:`QuantizedAutoencoder.decode_indices`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from vaebench import schedules
from vaebench.config import ModelConfig
from vaebench.data.sources import as_data
from vaebench.evaluation import evaluating
from vaebench.models.base import Autoencoder, Objective
from vaebench.models.registry import register_model
from vaebench.nn.spatial import spatial_grid
from vaebench.quantizers import (
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    Quantization,
    Quantizer,
    ResidualQuantizer,
    VectorQuantizer,
    codebook_usage,
)

__all__ = ["FSQVAE", "HRQVAE", "LFQVAE", "VQVAE", "VQVAEEMA", "FSQVAEConfig", "GumbelVQVAE",
           "GumbelVQVAEConfig", "HRQVAEConfig", "LFQVAEConfig", "QuantizedAutoencoder",
           "QuantizedConfig", "VQVAEConfig", "VQVAEEMAConfig"]


_BUILT_IN = ("mlp", "conv", "spatial")


def _spatial_default(input_dim: Any) -> str:
    """"spatial" for images (C, H, W) whose sides the spatial networks can halve twice."""
    try:
        spatial_grid(tuple(input_dim))
    except (TypeError, ValueError):
        return "mlp"
    return "spatial"


class QuantizedConfig(ModelConfig):
    """What every quantized model shares: the latent grid.

    ``latent_dim`` is the code (embedding) dimension of one grid position. ``encoder`` and
    ``decoder`` default to ``"spatial"`` for images whose sides are divisible by 4 (a
    7 x 7 grid for 28 x 28, 8 x 8 for 64 x 64), else ``"mlp"`` (one code per sample).
    """

    grid_shape: tuple[int, ...] | None = Field(
        None, description="latent grid (h, w) of your own spatial networks; derived for the "
                          "built-in ones ('spatial': from input_dim, 'mlp'/'conv': one code)")

    @model_validator(mode="before")
    @classmethod
    def _default_networks(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "input_dim" not in data:
            return data
        default = _spatial_default(data["input_dim"])
        encoder, decoder = data.get("encoder"), data.get("decoder")
        if encoder is None:  # pair a built-in decoder with its own encoder
            encoder = decoder if decoder in _BUILT_IN else default
        if decoder is None:
            decoder = encoder if encoder in _BUILT_IN else default
        return {**data, "encoder": encoder, "decoder": decoder}

    @field_validator("grid_shape")
    @classmethod
    def _valid_grid(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (len(value) not in (0, 2) or any(s < 1 for s in value)):
            raise ValueError(f"grid_shape must be () or (h, w) with positive entries, got "
                             f"{value}")
        return value

    @model_validator(mode="after")
    def _fits_spatial_networks(self) -> QuantizedConfig:
        if self.encoder == "spatial" and self.grid_shape is None:
            try:
                spatial_grid(self.input_dim, self.encoder_kwargs.get("downsamples"))
            except ValueError as err:
                raise ValueError(f"input_dim {tuple(self.input_dim)} does not fit "
                                 f"encoder='spatial': {err}") from None
        return self


class VQVAEConfig(QuantizedConfig):
    """Config of :class:`VQVAE` (and of :class:`HRQVAE`'s levels)."""

    num_codes: int = Field(512, gt=1, description="codebook size K")
    beta: float = Field(0.25, ge=0, description="weight of the commitment term")
    ema: bool = Field(False, description="EMA codebook updates instead of the codebook term")
    decay: float = Field(0.99, gt=0, lt=1, description="EMA decay")
    epsilon: float = Field(1e-5, gt=0, description="Laplace smoothing of EMA cluster sizes")
    restart_dead_codes: bool = Field(False, description="move unused codes onto recent "
                                                        "encoder outputs")
    dead_after: int = Field(100, gt=0, description="training steps a code may go unused "
                                                   "before it is restarted")
    restart_buffer_size: int = Field(1024, gt=0, description="recent encoder outputs kept "
                                                             "for restarts")
    kmeans_init: bool = Field(False, description="set the codebook to the k-means centres of "
                                                 "the first training steps' encoder outputs")
    kmeans_iters: int = Field(10, gt=0, description="Lloyd iterations of the k-means "
                                                    "initialisation")
    rotation_trick: bool = Field(False, description="gradient through the rotation trick "
                                                    "instead of straight-through")
    cosine: bool = Field(False, description="l2-normalise encoder outputs and codes "
                                            "(cosine-similarity codebook)")


class VQVAEEMAConfig(VQVAEConfig):
    """Config of :class:`VQVAEEMA`: a :class:`VQVAEConfig` with ``ema=True``."""

    ema: bool = Field(True, description="EMA codebook updates instead of the codebook term")


class HRQVAEConfig(VQVAEConfig):
    """Config of :class:`HRQVAE`: ``depth`` codebooks of ``num_codes`` codes each."""

    num_codes: int = Field(64, gt=1, description="codes per level")
    depth: int = Field(3, gt=0, description="number of residual levels")

    @field_validator("cosine")
    @classmethod
    def _no_cosine(cls, value: bool) -> bool:
        if value:
            raise ValueError("cosine codebooks are for one codebook, not residual levels")
        return value


class FSQVAEConfig(QuantizedConfig):
    """Config of :class:`FSQVAE`: the number of values of each quantized channel."""

    levels: tuple[int, ...] = Field((8, 5, 5, 5), description="values per channel (>= 2 each)")

    @field_validator("levels")
    @classmethod
    def _valid_levels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(n < 2 for n in value):
            raise ValueError(f"levels needs at least one entry, each >= 2, got {value}")
        return value


class LFQVAEConfig(QuantizedConfig):
    """Config of :class:`LFQVAE`: ``latent_dim`` bits per position, 2^latent_dim codes.

    The default weights come from short mnist5k runs (docs/vq.md): with a batch entropy
    weight of 0.1, or a commitment weight of 0.25 (the terms are sums over the channels),
    every position of every image kept the one sign pattern the untrained encoder gives.
    """

    latent_dim: int = Field(10, gt=0, le=20, description="bits per grid position")
    commitment_weight: float = Field(0.025, ge=0, description="weight of the commitment term")
    entropy_weight: float = Field(0.1, ge=0, description="weight of the per-sample entropy "
                                                         "(minimised)")
    batch_entropy_weight: float = Field(1.0, ge=0, description="weight of the batch entropy "
                                                               "(maximised)")
    entropy_temperature: float = Field(1.0, gt=0, description="tau of the soft assignment "
                                                              "exp(-||z - c||^2 / tau)")


class GumbelVQVAEConfig(QuantizedConfig):
    """Config of :class:`GumbelVQVAE`: logits over ``num_codes`` codes of ``latent_dim``
    numbers, and the temperature's annealing.

    ``kl_weight`` 1 is the ELBO's; with the default Gaussian likelihood (sigma = 1) it let
    the posterior collapse to uniform codes in short mnist5k runs (docs/vq.md), hence 0.1.
    ``tau_end`` = 1/16 is DALL-E's final temperature (Ramesh et al. 2021, Sec. 2.1).
    """

    num_codes: int = Field(512, gt=1, description="codebook size K")
    kl_weight: float = Field(0.1, ge=0, description="weight of the KL to the uniform prior")
    tau_start: float = Field(1.0, gt=0, description="Gumbel-softmax temperature at step 0")
    tau_end: float = Field(1 / 16, gt=0, description="temperature after tau_anneal_steps")
    tau_anneal_steps: int = Field(1000, ge=0, description="optimizer steps of the geometric "
                                                          "annealing from tau_start to tau_end")


class QuantizedAutoencoder(Autoencoder):
    """Base of the quantized models: encoder -> quantizer -> decoder. They have no prior
    of their own: the ``pixelcnn`` sampler is fitted on their code grids after training.

    A subclass declares :meth:`build_quantizer` and :meth:`term_weights`. ``encode(x)``
    returns the :class:`~vaebench.quantizers.Quantization` (``.mean`` is the quantized
    grid, ``.indices`` the codes), so ``reconstruct`` is the base class's.
    """

    config_class = QuantizedConfig
    no_likelihood_reason = (
        "a quantized autoencoder's code is a deterministic function of x; a bound on log p(x) "
        "would be -recon - the PixelCNN's NLL of the codes, which is not reported yet")
    default_sampler = "pixelcnn"

    def __init__(self, config: QuantizedConfig | None = None, *,
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None,
                 **config_fields: Any):
        super().__init__(config, encoder=encoder, decoder=decoder, **config_fields)
        self.quantizer = self.build_quantizer()
        self.prior = None  # the pixelcnn sampler, fitted after training

    # --- what a subclass declares ---------------------------------------------------------
    def build_quantizer(self) -> Quantizer:
        raise NotImplementedError

    # --- shapes ---------------------------------------------------------------------------
    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Latent grid: the config's, else (h, w) of the spatial networks, else () (one
        code vector per sample)."""
        cfg = self.config
        if cfg.grid_shape is not None:
            return tuple(cfg.grid_shape)
        if cfg.encoder == "spatial":
            return spatial_grid(cfg.input_dim, cfg.encoder_kwargs.get("downsamples"))
        return ()

    @property
    def code_grid_shape(self) -> tuple[int, int]:
        """(h, w) of the code grid a sampler models: the latent grid, or (1, 1)."""
        return self.grid_shape if self.grid_shape else (1, 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim, *self.grid_shape)

    @property
    def encoder_output_shape(self) -> tuple[int, ...]:
        return self.latent_shape

    def _encoder_output_meaning(self) -> str:
        return (f"latent_dim={self.config.latent_dim} channels on the latent grid "
                f"{self.grid_shape}; set grid_shape for your own spatial networks")

    # --- objective ------------------------------------------------------------------------
    def posterior(self, params: torch.Tensor) -> Quantization:
        return self.quantizer(params)

    def objective(self, x: torch.Tensor) -> Objective:
        q = self.encode(x)
        params = self.decode(q.quantized)
        return Objective({"recon": self.reconstruction_term(params, x), **q.terms},
                         q.quantized, params)

    def on_epoch_start(self) -> None:
        self.quantizer.reset_usage()

    def epoch_metrics(self) -> dict[str, float]:
        """Codebook usage (fraction of codes selected) and perplexity over the epoch."""
        return {**super().epoch_metrics(), **self.quantizer.usage_metrics()}

    # --- codes ----------------------------------------------------------------------------
    @torch.no_grad()
    def code_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices of ``x`` as a sampler models them: (B, depth, h, w)."""
        indices = self.encode(x).indices
        return indices.reshape(x.shape[0], self.quantizer.depth, *self.code_grid_shape)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decoder output (the parameters of p(x | z)) for code grids (B, depth, h, w)."""
        indices = indices.reshape(indices.shape[0], self.quantizer.depth, *self.grid_shape)
        if self.quantizer.depth == 1:
            indices = indices[:, 0]
        return self.decode(self.quantizer.codes_from_indices(indices))

    @torch.no_grad()
    def code_usage(self, data: Any, batch_size: int = 512) -> dict[str, float]:
        """Usage and perplexity of the codes of ``data`` (e.g. a test set)."""
        data = as_data(data, name="data")
        counts = torch.zeros(self.quantizer.depth, self.quantizer.num_codes, dtype=torch.long)
        with evaluating(self):
            for x in data.batches(batch_size, device=self.device):
                for level, codes in enumerate(self.code_indices(x).transpose(0, 1)):
                    counts[level] += torch.bincount(codes.flatten(),
                                                    minlength=self.quantizer.num_codes).cpu()
        pairs = [codebook_usage(c) for c in counts]
        return {"usage": sum(p[0] for p in pairs) / len(pairs),
                "perplexity": sum(p[1] for p in pairs) / len(pairs)}


@register_model
class VQVAE(QuantizedAutoencoder):
    """VQ-VAE (van den Oord et al. 2017): nearest-code quantization, codebook + commitment.

    loss = -log p(x | z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 per sample (the
    squared errors summed over positions and embedding dimensions), straight-through
    gradient. ``ema=True`` gives the EMA codebook (no codebook term); ``restart_dead_codes``
    restarts unused codes; ``kmeans_init`` starts the codebook at k-means centres of the
    first encoder outputs; ``rotation_trick`` replaces the straight-through gradient by the
    rotation trick (Fifty et al. 2024); ``cosine`` quantizes l2-normalised vectors (Yu et
    al. 2022). See :class:`~vaebench.quantizers.VectorQuantizer`.
    """

    name = "vqvae"
    config_class = VQVAEConfig

    def _vq_options(self) -> dict[str, Any]:
        cfg = self.config
        return {"beta": cfg.beta, "ema": cfg.ema, "decay": cfg.decay, "epsilon": cfg.epsilon,
                "restart_dead_codes": cfg.restart_dead_codes, "dead_after": cfg.dead_after,
                "restart_buffer_size": cfg.restart_buffer_size, "kmeans_init": cfg.kmeans_init,
                "kmeans_iters": cfg.kmeans_iters, "rotation_trick": cfg.rotation_trick,
                "cosine": cfg.cosine}

    def build_quantizer(self) -> Quantizer:
        return VectorQuantizer(self.config.num_codes, self.config.latent_dim,
                               **self._vq_options())

    def term_weights(self) -> dict[str, float]:
        return {"commitment": self.config.beta}


@register_model
class VQVAEEMA(VQVAE):
    """VQ-VAE with an EMA codebook (van den Oord et al. 2017, App. A.1): no codebook term."""

    name = "vqvae_ema"
    config_class = VQVAEEMAConfig


@register_model
class HRQVAE(VQVAE):
    """HRQ-VAE (Hosking et al. 2022): a depth of codebooks quantizing successive residuals.

    Terms are those of VQ-VAE summed over levels; see
    :class:`~vaebench.quantizers.ResidualQuantizer`. The pixelcnn sampler models the levels
    of each position coarse to fine.
    """

    name = "hrqvae"
    config_class = HRQVAEConfig

    def build_quantizer(self) -> Quantizer:
        return ResidualQuantizer(self.config.depth, self.config.num_codes,
                                 self.config.latent_dim, **self._vq_options())


@register_model
class FSQVAE(QuantizedAutoencoder):
    """FSQ-VAE (Mentzer et al. 2023): finite scalar quantization, no codebook, no VQ loss.

    The only term is the reconstruction; ``levels`` sets the values per quantized channel
    (prod(levels) implicit codes). With ``latent_dim`` != len(levels), learned linear maps
    project to and from the quantized channels. See
    :class:`~vaebench.quantizers.FiniteScalarQuantizer`.
    """

    name = "fsq_vae"
    config_class = FSQVAEConfig

    def build_quantizer(self) -> Quantizer:
        return FiniteScalarQuantizer(self.config.levels, dim=self.config.latent_dim)


@register_model
class LFQVAE(QuantizedAutoencoder):
    """LFQ-VAE (Yu et al. 2024, MAGVIT-v2): lookup-free quantization of each channel to its sign.

    Terms per sample: ``recon``, ``commitment`` (weight ``commitment_weight``), ``entropy``
    (weight ``entropy_weight``) and ``batch_entropy``, the batch value carried by each sample
    (weight -``batch_entropy_weight``: maximised). ``latent_dim`` channels give
    2^latent_dim codes. See :class:`~vaebench.quantizers.LookupFreeQuantizer`.
    """

    name = "lfq_vae"
    config_class = LFQVAEConfig

    def build_quantizer(self) -> Quantizer:
        return LookupFreeQuantizer(self.config.latent_dim, self.config.entropy_temperature)

    def term_weights(self) -> dict[str, float]:
        cfg = self.config
        return {"commitment": cfg.commitment_weight, "entropy": cfg.entropy_weight,
                "batch_entropy": -cfg.batch_entropy_weight}


@register_model
class GumbelVQVAE(QuantizedAutoencoder):
    """Gumbel-softmax VQ-VAE (Jang et al. 2017; the discrete VAE of DALL-E, Ramesh et al. 2021).

    The encoder outputs logits over ``num_codes`` codes at each grid position; in training
    the decoder reads the relaxed one-hot sample times the codebook, in eval mode the code
    of the argmax. Terms per sample: ``recon`` and ``kl`` = KL(softmax(logits) || uniform)
    summed over positions (weight ``kl_weight``). The temperature falls geometrically from
    ``tau_start`` to ``tau_end`` over ``tau_anneal_steps`` optimizer steps
    (:meth:`temperature`). See :class:`~vaebench.quantizers.GumbelQuantizer`.
    """

    name = "gumbel_vqvae"
    config_class = GumbelVQVAEConfig

    @property
    def encoder_features(self) -> int:
        return self.config.num_codes

    @property
    def encoder_output_shape(self) -> tuple[int, ...]:
        return (self.config.num_codes, *self.grid_shape)

    def _encoder_output_meaning(self) -> str:
        return (f"logits over num_codes={self.config.num_codes} codes on the latent grid "
                f"{self.grid_shape}; set grid_shape for your own spatial networks")

    def build_quantizer(self) -> Quantizer:
        return GumbelQuantizer(self.config.num_codes, self.config.latent_dim)

    def temperature(self) -> float:
        """tau at step t = ``num_steps``: tau_start (tau_end / tau_start)^min(1, t / T), the
        linear schedule of log tau (an exponential decay, as Jang et al. 2017 anneal)."""
        cfg = self.config
        log_tau = schedules.linear(int(self.num_steps), cfg.tau_anneal_steps,
                                   math.log(cfg.tau_start), math.log(cfg.tau_end))
        return math.exp(log_tau)

    def posterior(self, params: torch.Tensor) -> Quantization:
        return self.quantizer(params, self.temperature())

    def term_weights(self) -> dict[str, float]:
        return {"kl": self.config.kl_weight}

"""A VAE with a multi-scale structural similarity reconstruction term (Snell, Ridgeway,
Liao, Roads, Mozer and Zemel, "Learning to Generate Images with Perceptual Similarity
Metrics", ICIP 2017)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, field_validator

from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig
from vaebench.ssim import ms_ssim, ms_ssim_plan


class MSSSIMVAEConfig(VAEConfig):
    """Config of :class:`MSSSIMVAE`: ``beta`` weighs the KL term, ``data_range`` is the range
    L of the pixel values in the SSIM constants (1 for images in [0, 1]). ``input_dim`` must
    be an image shape (C, H, W) of at least 3 x 3 pixels."""

    beta: float = Field(1.0, ge=0.0, description="weight of the KL term")
    data_range: float = Field(1.0, gt=0.0, description="range of pixel values, for SSIM")

    @field_validator("input_dim")
    @classmethod
    def _image_shape(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) != 3:
            raise ValueError(f"msssim_vae compares images: input_dim must be (C, H, W), got "
                             f"{value}")
        ms_ssim_plan(value[1], value[2])  # refuses images below 3 x 3
        return value


@register_model
class MSSSIMVAE(VAE):
    """VAE whose reconstruction term is D * (1 - MS-SSIM(x, x_hat)) (Snell et al. 2017 train
    with 1 - MS-SSIM as the reconstruction loss).

    Per sample,

        loss = D * (1 - MS-SSIM(x, E[x | z])) + beta * KL(q(z | x) || p(z)),   z ~ q(z | x)

    where E[x | z] is the mean of the configured likelihood (e.g. the sigmoid of a Bernoulli
    decoder's logits; the likelihood's scale, if any, is unused) and MS-SSIM is
    :func:`vaebench.ssim.ms_ssim` with its small-image rule (28 x 28 and 64 x 64 both work).

    Why the factor D (the number of pixels times channels): MS-SSIM is an average over local
    windows, like a mean over pixels; DESIGN.md keeps every reconstruction term on the
    sum-over-dimensions scale, because averaging over pixels silently multiplies the KL's
    weight by D. D * (1 - MS-SSIM) is the sum over dimensions of a per-pixel dissimilarity in
    [0, 1], on the scale of the other models' terms, and ``beta`` then has the usual meaning.

    **The reconstruction term is not a likelihood.** ``recon`` is a dissimilarity, not a
    negative log-likelihood: the model has no normalized p(x | z), so it has no ELBO and no
    log p(x); :meth:`log_importance_weights` raises, and its ``recon`` figures must not be
    read or reported as nats.
    """

    name = "msssim_vae"
    config_class = MSSSIMVAEConfig
    has_likelihood = False
    no_likelihood_reason = ("its reconstruction term D * (1 - MS-SSIM) is a perceptual "
                            "dissimilarity, not -log p(x | z)")

    def reconstruction_term(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """D * (1 - MS-SSIM(x, mean of p(x | params))), per sample (B,)."""
        similarity = ms_ssim(self.likelihood.mean(params), x, self.config.data_range)
        return self.likelihood.dim * (1.0 - similarity)

    def term_weights(self) -> dict[str, float]:
        weights = super().term_weights()
        weights["kl"] = weights.get("kl", 1.0) * self.config.beta
        return weights

    def log_importance_weights(self, x: torch.Tensor, k: int, **inputs: Any) -> torch.Tensor:
        raise TypeError(f"msssim_vae has no likelihood: {self.no_likelihood_reason}")

"""Models with a discriminator in the objective: the adversarial autoencoder (Makhzani et
al. 2016) and the VAE-GAN (Larsen et al. 2016). See docs/adversarial.md."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from vaebench.distributions import DiagonalGaussian, PointMass
from vaebench.likelihoods import LOG_2PI
from vaebench.models.ae import AE, AEConfig
from vaebench.models.base import ModelOutput, Objective
from vaebench.models.code_critic import CodeCritic
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig

#: Classes of the adversarial autoencoder's discriminator on latent codes.
PRIOR_DRAW, ENCODED = 0, 1
#: Classes of the VAE-GAN's discriminator on images.
REAL, GENERATED = 0, 1


def cross_entropy_per_sample(logits: torch.Tensor, label: int) -> torch.Tensor:
    """-log D_label of each row of two-class ``logits``, shape (B,)."""
    labels = torch.full((logits.shape[0],), label, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels, reduction="none")


class AdversarialAEConfig(AEConfig):
    """Config of :class:`AdversarialAE`. ``adversarial_weight`` defaults to pythae's
    ``adversarial_loss_scale`` (0.5) for the same summed reconstruction term. The paper's
    MNIST discriminator has two hidden layers of 1000 ReLUs; the defaults are narrower, for
    CPU-sized runs."""

    posterior: Literal["deterministic", "gaussian"] = Field(
        "deterministic", description="q(z|x): a point mass (the paper's experiments) or a "
                                     "diagonal Gaussian (reparameterized, no KL term)")
    adversarial_weight: float = Field(0.5, ge=0, description="weight of the encoder's "
                                                             "adversarial term")
    discriminator_hidden: int = Field(256, gt=0, description="units per discriminator layer")
    discriminator_layers: int = Field(2, gt=0, description="hidden layers of the discriminator")


@register_model
class AdversarialAE(CodeCritic, AE):
    """Adversarial autoencoder (Makhzani, Shlens, Jaitly, Goodfellow and Frey 2016,
    "Adversarial Autoencoders", Sec. 2): an autoencoder whose aggregate posterior q(z) is
    matched to the prior p(z) = N(0, I) by a GAN on the latent codes, the encoder playing
    the generator.

    Terms per sample: ``recon`` = -log p(x | z_i) and ``adversarial`` = -log D(z_i), the
    non-saturating generator loss (Goodfellow et al. 2014, Sec. 3), weighted by
    ``adversarial_weight``; D(z) is the discriminator's probability that z is a prior draw.
    The model group takes one step on their sum: the paper's reconstruction phase and its
    generator step together.

    The discriminator (FactorVAE's leaky-ReLU MLP, two logits) has its own parameter group
    ``"discriminator"`` and optimizer, and is stepped after the model on the step's codes
    detached: its loss, a minibatch quantity, is the cross-entropy of D on B prior draws
    (class "prior") and the B codes (class "encoded"), averaged over the 2B codes.
    """

    name = "adversarial_ae"
    config_class = AdversarialAEConfig
    no_likelihood_reason = ("its encoder is trained to match the aggregate posterior q(z) to "
                            "p(z), not as a posterior of p(z) p(x | z): no ELBO is optimized "
                            "and no importance-sampled log p(x) is offered")

    @property
    def encoder_features(self) -> int:
        gaussian = self.config.posterior == "gaussian"
        return 2 * self.config.latent_dim if gaussian else self.config.latent_dim

    def _encoder_output_meaning(self) -> str:
        if self.config.posterior == "gaussian":
            return "mean and log-variance of a diagonal Gaussian, concatenated"
        return super()._encoder_output_meaning()

    def posterior(self, params: torch.Tensor) -> DiagonalGaussian | PointMass:
        if self.config.posterior == "gaussian":
            return DiagonalGaussian.from_params(params)
        return PointMass(params)

    def objective(self, x: torch.Tensor) -> Objective:
        z = self.encode(x).rsample()
        params = self.decode(z)
        terms = {"recon": self.reconstruction_term(params, x),
                 "adversarial": cross_entropy_per_sample(self.discriminator(z), PRIOR_DRAW)}
        return Objective(terms, z, params)

    def term_weights(self) -> dict[str, float]:
        return {"adversarial": self.config.adversarial_weight}

    def discriminator_loss(self, codes: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of D on prior draws and on ``codes`` (detached: only D learns from
        it), averaged over the 2B codes; log 2 at chance. Minibatch-level (see class doc)."""
        draws = self.prior.sample(codes.shape[0], device=codes.device)
        logits = self.discriminator(torch.cat([draws, codes.detach()]))
        return 0.5 * (cross_entropy_per_sample(logits[:len(draws)], PRIOR_DRAW).mean()
                      + cross_entropy_per_sample(logits[len(draws):], ENCODED).mean())


class VAEGANConfig(VAEConfig):
    """Config of :class:`VAEGAN`. ``reconstruction_weight`` is the paper's gamma; 1 weighs
    reconstruction and GAN loss in the decoder's update as pythae's default
    (``adversarial_loss_scale`` 0.5: 0.5 recon - 0.5 GAN). The paper takes its features
    from a convolutional layer below the discriminator's fully connected hidden layer; the
    defaults likewise compare hidden layer 1 of 2. The width matters: features fewer than
    the pixels cannot pin a reconstruction down, and the KL then outweighs them (on MNIST,
    after 8 epochs on 10,000 images, test MSE 0.118 with 256 units, 0.053 with 512, 0.039
    with 1024, the default)."""

    reconstruction_weight: float = Field(1.0, ge=0, description="gamma: weight of the "
                                         "feature-space reconstruction in the decoder's loss")
    discriminator_hidden: int = Field(1024, gt=0, description="units per discriminator layer")
    discriminator_layers: int = Field(2, gt=0, description="hidden layers of the discriminator")
    feature_layer: int = Field(1, gt=0, description="hidden layer (1 = first) whose output "
                                                    "is the reconstruction's feature space")

    @model_validator(mode="after")
    def _feature_layer_exists(self) -> VAEGANConfig:
        if self.feature_layer > self.discriminator_layers:
            raise ValueError(f"feature_layer {self.feature_layer} is deeper than the "
                             f"discriminator_layers ({self.discriminator_layers})")
        return self


class ImageDiscriminator(nn.Module):
    """MLP on flattened images, hidden layers Linear - LayerNorm - leaky ReLU (slope 0.2),
    two logits (real, generated); it also returns the output of hidden layer
    ``feature_layer``. The paper's discriminator normalizes its hidden layers by batch
    normalization, which gives its features unit scale; LayerNorm (without affine
    parameters) does so per sample, so that no sample's terms depend on its batch."""

    def __init__(self, input_dim: tuple[int, ...], hidden: int, layers: int,
                 feature_layer: int):
        super().__init__()
        sizes = [math.prod(input_dim)] + [hidden] * layers
        blocks = [nn.Sequential(nn.Linear(fan_in, fan_out),
                                nn.LayerNorm(fan_out, elementwise_affine=False),
                                nn.LeakyReLU(0.2))
                  for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)]
        self.lower = nn.Sequential(*blocks[:feature_layer])
        self.upper = nn.Sequential(*blocks[feature_layer:], nn.Linear(hidden, 2))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.lower(images.flatten(1))
        return features, self.upper(features)


@register_model
class VAEGAN(VAE):
    """VAE-GAN (Larsen, Sønderby, Larochelle and Winther 2016, "Autoencoding beyond pixels
    using a learned similarity metric", Sec. 2 and Algorithm 1): a VAE whose reconstruction
    is measured in the features of a GAN discriminator Dis on images.

    Terms per sample, with x~ = mean of p(x | z), z ~ q(z | x), and x_p decoded from a
    prior draw z_p ~ N(0, I):

    - ``recon``: L_llike^Dis_l = -log N(Dis_l(x) | Dis_l(x~), I) over the F features of
      hidden layer l, 0.5 ||Dis_l(x) - Dis_l(x~)||^2 + (F / 2) log 2 pi;
    - ``kl``: KL(q(z | x) || N(0, I)) in closed form (L_prior), under ``kl_schedule``;
    - ``gan_real`` = -log Dis(x), ``gan_reconstruction`` = -log(1 - Dis(x~)) and
      ``gan_prior`` = -log(1 - Dis(x_p)): their sum is the discriminator's cross-entropy
      -(log Dis(x) + log(1 - Dis(x~)) + log(1 - Dis(x_p))).

    ``loss`` (what evaluation reports) is the encoder's objective L_prior + L_llike; the GAN
    terms weigh 0 there. Each step updates three parameter groups from one graph, each by
    its own loss, as in Algorithm 1 with L_GAN the cross-entropy above (the reading under
    which its signs make Dis a discriminator and Dec its opponent): ``"encoder"`` by
    L_prior + L_llike, ``"decoder"`` (with the likelihood's parameters) by
    gamma L_llike - L_GAN and ``"discriminator"`` by L_GAN, all batch means.

    **The reconstruction term is not a likelihood of x**: it is a density of features that
    the discriminator keeps changing, so the model has no ELBO and no log p(x).
    """

    name = "vaegan"
    config_class = VAEGANConfig
    has_likelihood = False
    no_likelihood_reason = ("its reconstruction term is a Gaussian density of discriminator "
                            "features, not -log p(x | z)")
    GAN_TERMS = ("gan_real", "gan_reconstruction", "gan_prior")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.discriminator = ImageDiscriminator(cfg.input_dim, cfg.discriminator_hidden,
                                                cfg.discriminator_layers, cfg.feature_layer)

    def objective(self, x: torch.Tensor) -> Objective:
        q = self.encode(x)
        z = q.rsample()
        params = self.decode(z)
        prior_draws = self.prior.sample(x.shape[0], device=x.device)
        images = torch.cat([x, self.likelihood.mean(params),
                            self.likelihood.mean(self.decode(prior_draws))])
        features, logits = self.discriminator(images)
        real, reconstructed, _ = features.chunk(3)
        real_logits, reconstructed_logits, prior_logits = logits.chunk(3)
        terms = {
            "recon": feature_nll(reconstructed, real),
            "kl": q.kl_standard_normal(),
            "gan_real": cross_entropy_per_sample(real_logits, REAL),
            "gan_reconstruction": cross_entropy_per_sample(reconstructed_logits, GENERATED),
            "gan_prior": cross_entropy_per_sample(prior_logits, GENERATED),
        }
        return Objective(terms, z, params)

    def term_weights(self) -> dict[str, float]:
        return {"kl": self.kl_weight(), **dict.fromkeys(self.GAN_TERMS, 0.0)}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder, critic = set(self.encoder.parameters()), set(self.discriminator.parameters())
        return {"encoder": list(self.encoder.parameters()),
                "decoder": [p for p in self.parameters() if p not in encoder | critic],
                "discriminator": list(self.discriminator.parameters())}

    def group_losses(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        """Each group's loss on a batch (Algorithm 1): the encoder's L_prior + L_llike, the
        decoder's gamma L_llike - L_GAN, the discriminator's L_GAN (its cross-entropy)."""
        gan = sum(output.terms[name] for name in self.GAN_TERMS).mean()
        decoder = self.config.reconstruction_weight * output.recon_loss - gan
        return {"encoder": output.loss, "decoder": decoder, "discriminator": gan}

    def training_step(self, x: torch.Tensor, update: Callable[..., None],
                      **inputs: Any) -> ModelOutput:
        output = self(x, **inputs)
        update(self.group_losses(output))
        return output

    def log_importance_weights(self, x: torch.Tensor, k: int, **inputs: Any) -> torch.Tensor:
        raise TypeError(f"vaegan has no likelihood: {self.no_likelihood_reason}")


def feature_nll(mean: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """-log N(features | mean, I) per sample, constant included: Larsen et al. (2016)'s
    L_llike^Dis_l with features = Dis_l(x) and mean = Dis_l(x~)."""
    squared = (features - mean).pow(2).sum(1)
    return 0.5 * squared + 0.5 * features.shape[1] * LOG_2PI

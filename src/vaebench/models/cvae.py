"""Conditional VAE (Sohn et al. 2015): encoder and decoder conditioned on a class label."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vaebench.distributions import DiagonalGaussian
from vaebench.models.base import ModelOutput, Objective
from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig
from vaebench.nn import MLPEncoder, build_network


class CVAEConfig(VAEConfig):
    """Config of :class:`CVAE`."""

    num_classes: int = Field(10, ge=2, description="number of label values 0 .. num_classes-1")


def conditioned_input_dim(input_dim: tuple[int, ...], num_classes: int,
                          flat: bool) -> tuple[int, ...]:
    """Shape of one encoder input once the one-hot label is attached: appended to the
    flattened sample (``flat``) or as ``num_classes`` constant channels (dimension 0)."""
    if flat or len(input_dim) == 1:
        return (math.prod(input_dim) + num_classes,)
    return (input_dim[0] + num_classes, *input_dim[1:])


class LabelConditionedEncoder(nn.Module):
    """Runs ``net`` on x with the one-hot label attached (see :func:`conditioned_input_dim`):
    flattened and concatenated for an MLP or 1-d data, as constant channels otherwise.
    Without labels (the construction-time shape check) the one-hot is all zeros."""

    def __init__(self, net: nn.Module, num_classes: int, flat: bool):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.flat = flat

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        onehot = _one_hot(labels, self.num_classes, x)
        if self.flat or x.dim() == 2:
            return self.net(torch.cat([x.flatten(1), onehot], dim=1))
        channels = onehot.view(*onehot.shape, *(1,) * (x.dim() - 2)).expand(
            -1, -1, *x.shape[2:])
        return self.net(torch.cat([x, channels], dim=1))


class LabelConditionedDecoder(nn.Module):
    """Runs ``net`` on the code z concatenated with the one-hot label."""

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net = net
        self.num_classes = num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(torch.cat([z, _one_hot(labels, self.num_classes, z)], dim=1))


def _one_hot(labels: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    if labels is None:
        return like.new_zeros(like.shape[0], num_classes)
    if labels.shape != (like.shape[0],):
        raise ValueError(f"labels must have shape ({like.shape[0]},), got {tuple(labels.shape)}")
    return F.one_hot(labels.long(), num_classes).to(like.dtype)


@register_model
class CVAE(VAE):
    """Conditional VAE (Sohn, Lee and Yan 2015, "Learning Structured Output Representation
    using Deep Conditional Generative Models"; the label-conditioned form of Kingma et al.
    2014): q(z | x, y), p(x | z, y) and the prior p(z) = N(0, I), independent of y.

    The per-sample terms are those of the VAE for the pair (x, y): ``recon`` =
    -log p(x | z, y) and ``kl`` = KL(q(z | x, y) || p(z)), the negative conditional ELBO of
    log p(x | y). The label y (integers 0 .. num_classes - 1) enters as a one-hot vector:
    the encoder built from the config receives it appended to the flattened sample (MLP
    encoders, 1-d data) or as ``num_classes`` constant channels (conv and user encoders on
    images), and the decoder receives it concatenated to z, so the built-in networks are
    made for ``input_dim`` plus the label and ``latent_dim + num_classes`` inputs. A user
    network (module or import path) must accept those inputs.

    ``generate(n, labels)`` draws z from the prior and decodes it with the given labels
    (default ``arange(n) % num_classes``). ``reconstruct(x, labels)`` uses the given labels;
    without labels it uses, for each sample, the label whose ELBO is highest (a Bayes
    classifier under the model).
    """

    name = "cvae"
    config_class = CVAEConfig
    needs_labels = True

    def build_encoder(self, net: nn.Module | None) -> nn.Module:
        cfg = self.config
        if net is None:
            net = build_network("encoder", cfg.encoder, cfg.encoder_kwargs,
                                input_dim=conditioned_input_dim(cfg.input_dim, cfg.num_classes,
                                                                cfg.encoder == "mlp"),
                                out_features=self.encoder_features)
        return LabelConditionedEncoder(net, cfg.num_classes, isinstance(net, MLPEncoder))

    def build_decoder(self, net: nn.Module | None) -> nn.Module:
        cfg = self.config
        if net is None:
            net = build_network("decoder", cfg.decoder, cfg.decoder_kwargs,
                                latent_dim=cfg.latent_dim + cfg.num_classes,
                                output_shape=self.likelihood.param_shape)
        return LabelConditionedDecoder(net, cfg.num_classes)

    def prepare(self, data: Any) -> None:
        """Also check, once, that the training labels lie in 0 .. num_classes - 1."""
        super().prepare(data)
        labels = getattr(data, "labels", None)
        if labels is not None and len(labels):
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.config.num_classes:
                raise ValueError(f"the training labels range over {low} .. {high}, but "
                                 f"num_classes is {self.config.num_classes} (labels must be "
                                 f"0 .. num_classes - 1)")

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> DiagonalGaussian:
        return self.posterior(self.encoder(x, labels))

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, labels)

    def objective(self, x: torch.Tensor, labels: torch.Tensor) -> Objective:
        q = self.encode(x, labels)
        z = q.rsample()
        params = self.decode(z, labels)
        terms = {"recon": self.likelihood.nll(params, x), "kl": q.kl_standard_normal()}
        return Objective(terms, z, params)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                **inputs: Any) -> ModelOutput:
        if labels is None:
            raise ValueError("cvae needs labels: call model(x, labels)")
        return super().forward(x, labels=labels, **inputs)

    @torch.no_grad()
    def generate(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``n`` prior draws, the i-th with label ``labels[i]`` (default i mod K)."""
        z = self.prior.sample(n, device=self.device)
        if labels is None:
            return self.likelihood.mean(self.decode_draws(z))
        return self.likelihood.mean(self.decode(z, torch.as_tensor(labels, device=self.device)))

    def decode_draws(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output for drawn codes, the i-th with label i mod K (every class)."""
        labels = torch.arange(len(z), device=z.device) % self.config.num_classes
        return self.decode(z, labels)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x | z, y) at the posterior mean of z; y = ``labels`` or, if not given,
        :meth:`classify`."""
        if labels is None:
            labels = self.classify(x)
        return self.likelihood.mean(self.decode(self.encode(x, labels).mean, labels))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The label y maximizing the ELBO of log p(x | y) evaluated at the posterior mean
        (deterministic: -log p(x | z = mean, y) - KL); all labels in one batched pass."""
        k, b = self.config.num_classes, x.shape[0]
        xs = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        ys = torch.arange(k, device=x.device).repeat_interleave(b)
        q = self.encode(xs, ys)
        neg_elbo = self.likelihood.nll(self.decode(q.mean, ys), xs) + q.kl_standard_normal()
        return neg_elbo.view(k, b).argmin(0)

    def log_importance_weights(self, x: torch.Tensor, k: int,
                               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Importance weights of the conditional likelihood log p(x | y), so labels are
        needed (see :meth:`VAE.log_importance_weights`)."""
        if labels is None:
            raise ValueError("the likelihood of a cvae is conditional, log p(x | y): pass "
                             "labels to log_importance_weights")
        return super().log_importance_weights(x, k, labels=labels)

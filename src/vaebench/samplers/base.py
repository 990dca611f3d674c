"""The sampler interface: how latent codes of a trained model are drawn for generation.

A sampler is fitted (where it needs fitting) on the codes of a trained model's training
data, draws codes of the model's latent shape, and is decoded by the model. It is built for
one model (``Sampler(model, **options)``), refuses models it does not serve with an error
that says why, and is saved beside the model (:mod:`vaebench.samplers.storage`).

Draws are seeded: ``sample(model, n, seed=s)`` gives the same codes for the same seed and
leaves the caller's random stream untouched.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import torch
from torch import nn

from vaebench.config import Config, resolve_config
from vaebench.data.sources import as_data
from vaebench.evaluation import evaluating


class SamplerConfig(Config):
    """Options of a sampler; a sampler with options subclasses it."""


class Sampler(nn.Module):
    """Base of every sampler.

    Subclasses set ``name`` (and ``config_class``), say which models they serve
    (:meth:`refusal`), build their modules for the model (:meth:`build`), fit them if
    ``needs_fitting`` (:meth:`fit_codes`, or :meth:`fit` for other data) and draw codes
    (:meth:`draw`).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[SamplerConfig]] = SamplerConfig
    needs_fitting: ClassVar[bool] = False
    #: Whether it serves models conditioned on labels (their codes are encoded with labels).
    serves_conditional: ClassVar[bool] = False

    def __init__(self, model: nn.Module, config: SamplerConfig | None = None,
                 **config_fields: Any):
        super().__init__()
        check_serves(type(self), model)
        self.config = resolve_config(self.config_class, config, config_fields,
                                     f"the {self.name} sampler")
        self.model_name = model.name
        self.latent_shape = tuple(model.latent_shape)
        #: Digest of the weights the sampler was fitted for ("" before fitting).
        self.model_fingerprint = "" if self.needs_fitting else fingerprint(model)
        self.build(model)

    # --- what a subclass declares -------------------------------------------------------
    @classmethod
    def refusal(cls, model: nn.Module) -> str | None:
        """Why this sampler cannot serve ``model``, or None if it can."""
        return None

    def build(self, model: nn.Module) -> None:
        """Create the sampler's modules and buffers, sized for ``model``."""

    def fit_codes(self, codes: torch.Tensor, seed: int, progress: bool) -> dict[str, float]:
        """Fit on the training codes (N, *latent_shape); return a summary of the fit."""
        raise NotImplementedError

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        """``n`` codes from the global random stream (seeded by :meth:`sample`)."""
        raise NotImplementedError

    def decode(self, model: nn.Module, codes: torch.Tensor) -> torch.Tensor:
        """The decoder's output (parameters of p(x | z)) for drawn codes."""
        return model.decode_draws(codes)

    def training_codes(self, model: nn.Module, data: Any) -> torch.Tensor:
        """What the sampler is fitted on: the posterior means of ``data`` by default."""
        return encode_codes(model, data)

    # --- shared mechanics ---------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return bool(self.model_fingerprint)

    def fit(self, model: nn.Module, data: Any, *, seed: int = 0,
            progress: bool = False) -> dict[str, float]:
        """Fit on ``model``'s codes of ``data`` (its training data); a no-op for samplers
        that need no fitting. Returns a summary of the fit (e.g. the final NLL)."""
        self._check_model(model)
        if not self.needs_fitting:
            return {}
        device = self._device(model)
        with evaluating(model, seed=seed):
            codes = self.training_codes(model, data).to(device)
        if len(codes) < 2:
            raise ValueError(f"the {self.name} sampler needs at least 2 training samples to "
                             f"fit, got {len(codes)}")
        if codes.is_floating_point() and not bool(torch.isfinite(codes).all()):
            raise ValueError(f"the model's codes of the data are not all finite: the "
                             f"{self.name} sampler cannot be fitted on them")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            self.build(model)  # fresh, seeded initial weights
            self.to(device)
            with torch.enable_grad():
                summary = self.fit_codes(codes, seed, progress)
        self.model_fingerprint = fingerprint(model)
        return summary

    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, *, seed: int | None = None) -> torch.Tensor:
        """``n`` latent codes for ``model``; the same ``seed`` gives the same codes."""
        self._check_ready(model)
        if n < 1:
            raise ValueError(f"the number of samples must be positive, got {n}")
        with evaluating(model, seed=seed), evaluating(self):
            return self.draw(model, n)

    @torch.no_grad()
    def generate(self, model: nn.Module, n: int, *, seed: int | None = None,
                 batch_size: int = 256) -> torch.Tensor:
        """Decode ``n`` drawn codes: the means of p(x | z), in batches of ``batch_size``."""
        codes = self.sample(model, n, seed=seed)
        with evaluating(model):
            return torch.cat([model.likelihood.mean(self.decode(model, part))
                              for part in codes.split(batch_size)])

    def _device(self, model: nn.Module) -> torch.device:
        return next(model.parameters()).device

    def _check_model(self, model: nn.Module) -> None:
        if model.name != self.model_name or tuple(model.latent_shape) != self.latent_shape:
            raise ValueError(f"this {self.name} sampler was built for a {self.model_name} "
                             f"with latent shape {self.latent_shape}, not a {model.name} with "
                             f"latent shape {tuple(model.latent_shape)}")

    def _check_ready(self, model: nn.Module) -> None:
        self._check_model(model)
        if not self.is_fitted:
            raise RuntimeError(f"the {self.name} sampler is not fitted: call "
                               f"sampler.fit(model, train_data) first (vaebench sample does)")
        self.to(self._device(model))


def refusal_of(cls: type[Sampler], model: nn.Module) -> str | None:
    """Why sampler class ``cls`` cannot serve ``model``, or None."""
    if getattr(model, "needs_labels", False) and not cls.serves_conditional:
        return ("its codes are encoded given labels: use the normal sampler, or "
                "model.generate(n, labels=...)")
    return cls.refusal(model)


def check_serves(cls: type[Sampler], model: nn.Module) -> None:
    """Raise ValueError naming the sampler, the model and the reason it is not served."""
    reason = refusal_of(cls, model)
    if reason:
        raise ValueError(f"the {cls.name} sampler does not serve the {model.name} model: "
                         f"{reason}")


@torch.no_grad()
def encode_codes(model: nn.Module, data: Any, batch_size: int = 512) -> torch.Tensor:
    """Posterior means ``model.encode(x).mean`` of every sample of ``data`` (eval mode)."""
    data = as_data(data, name="sampler data")
    device = next(model.parameters()).device
    with evaluating(model):
        return torch.cat([model.encode(x).mean.float()
                          for x in data.batches(batch_size, device=device)])


def fingerprint(model: nn.Module) -> str:
    """A digest of the model's name, parameters and buffers: samplers fitted for other
    weights are recognised."""
    digest = hashlib.sha256(model.name.encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]

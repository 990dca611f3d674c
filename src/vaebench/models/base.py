"""The shared autoencoder: networks, likelihood, prior, and the one place that reduces
per-sample loss terms over the batch.

A model declares its objective as a dictionary of named per-sample terms, each of shape
(B,), in :meth:`Autoencoder.objective`; :meth:`Autoencoder.forward` weights them, sums them
and averages over the batch. No model averages over the batch itself, so no term can change
when only the batch size changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vaebench.config import ModelConfig, resolve_config
from vaebench.data.sources import ArrayData
from vaebench.distributions import StandardNormal
from vaebench.likelihoods import Likelihood, build_likelihood
from vaebench.nn import build_network, network_name
from vaebench.precision import autocast_in_networks_only


@dataclass
class ModelOutput(Mapping):
    """What ``model(x)`` returns; readable as attributes or as a mapping.

    ``recon_x`` (the mean of p(x | z)) is computed on first access, so training steps that
    never read it do not pay for it.
    """

    loss: torch.Tensor
    recon_loss: torch.Tensor
    reg_loss: torch.Tensor
    z: torch.Tensor
    terms: dict[str, torch.Tensor]
    """The named per-sample terms of the objective, each of shape (B,)."""
    decoder_params: torch.Tensor
    likelihood: Likelihood = field(repr=False)

    KEYS: ClassVar[tuple[str, ...]] = ("loss", "recon_loss", "reg_loss", "recon_x", "z",
                                       "terms", "decoder_params")

    @cached_property
    def recon_x(self) -> torch.Tensor:
        return self.likelihood.mean(self.decoder_params)

    def __getitem__(self, key: str) -> Any:
        if key not in self.KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


@dataclass
class Objective:
    """A model's objective on one batch, before reduction."""

    terms: dict[str, torch.Tensor]
    z: torch.Tensor
    decoder_params: torch.Tensor


class Autoencoder(nn.Module):
    """Base of every model: encoder -> posterior -> z -> decoder -> likelihood.

    Subclasses set ``name`` and ``config_class`` and state what differs: the posterior
    (:meth:`posterior`, :attr:`encoder_output_shape`), the objective's terms
    (:meth:`objective`) and their weights (:meth:`term_weights`). A model that needs more
    than one optimizer declares :meth:`parameter_groups` and overrides
    :meth:`training_step`; a model conditioned on labels sets ``needs_labels`` and takes
    ``labels`` in :meth:`objective`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    needs_labels: ClassVar[bool] = False
    #: Whether the model defines log p(x) (an ELBO and importance weights); if not, why.
    has_likelihood: ClassVar[bool] = False
    no_likelihood_reason: ClassVar[str] = (
        "a deterministic autoencoder has no posterior q(z|x) and prior p(z) to integrate over")
    #: The sampler its paper generates with (see :mod:`vaebench.samplers`).
    default_sampler: ClassVar[str] = "normal"

    def __init__(self, config: ModelConfig | None = None, *, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, **config_fields: Any):
        super().__init__()
        config = resolve_config(self.config_class, config, config_fields, type(self).__name__)
        update = {role: network_name(type(net)) for role, net in
                  (("encoder", encoder), ("decoder", decoder)) if net is not None}
        self.config = config.model_copy(update=update)
        # Optimizer updates so far: drives schedules (annealing) and is saved with the model.
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self.likelihood = build_likelihood(config.likelihood, config.input_dim,
                                           sigma=config.sigma, sigma_per=config.sigma_per,
                                           **config.likelihood_kwargs)
        self.prior = StandardNormal(self.latent_shape)
        self.encoder = self.build_encoder(encoder)
        self.decoder = self.build_decoder(decoder)
        self._check_networks()

    def build_encoder(self, net: nn.Module | None) -> nn.Module:
        """The encoder: ``net`` if given, else the config's network from ``input_dim`` to
        the posterior's parameters."""
        cfg = self.config
        return net if net is not None else build_network(
            "encoder", cfg.encoder, cfg.encoder_kwargs,
            input_dim=cfg.input_dim, out_features=self.encoder_features)

    def build_decoder(self, net: nn.Module | None) -> nn.Module:
        """The decoder: ``net`` if given, else the config's network from ``latent_dim`` to
        the likelihood's parameters."""
        cfg = self.config
        return net if net is not None else build_network(
            "decoder", cfg.decoder, cfg.decoder_kwargs,
            latent_dim=cfg.latent_dim, output_shape=self.likelihood.param_shape)

    # --- what a subclass declares -------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    @property
    def encoder_features(self) -> int:
        """Width of the encoder output: the posterior's parameters."""
        return self.config.latent_dim

    @property
    def encoder_output_shape(self) -> tuple[int, ...]:
        """Shape of the encoder output for one sample."""
        return (self.encoder_features,)

    def posterior(self, params: torch.Tensor) -> Any:
        """Turn the encoder output into q(z | x)."""
        raise NotImplementedError

    def objective(self, x: torch.Tensor) -> Objective:
        """The named per-sample terms of the loss on batch ``x``."""
        raise NotImplementedError

    def reconstruction_term(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The per-sample ``recon`` term: -log p(x | z) under the likelihood."""
        return self.likelihood.nll(params, x)

    def term_weights(self) -> dict[str, float]:
        """Weight of each term in the loss; unlisted terms weigh 1."""
        return {}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each optimizer, by name; one group ``"model"`` by default."""
        return {"model": list(self.parameters())}

    def optimizer_defaults(self) -> dict[str, dict[str, Any]]:
        """Per-group optimizer settings a model recommends (e.g. a discriminator's)."""
        return {}

    def training_step(self, x: torch.Tensor, update: Callable[..., None],
                      **inputs: Any) -> ModelOutput:
        """One optimization step on batch ``x``: ``update(group, loss)`` back-propagates
        ``loss`` and steps the optimizer of ``group``; ``update({group: loss, ...})`` does
        it for several groups from one graph, all gradients before any step."""
        output = self(x, **inputs)
        update("model", output.loss)
        return output

    def on_epoch_start(self) -> None:
        """Reset statistics gathered over an epoch (e.g. codebook usage)."""
        self.likelihood.on_epoch_start()

    def epoch_metrics(self) -> dict[str, float]:
        """Statistics gathered since :meth:`on_epoch_start`, reported in the history (the
        likelihood's: a table's per-column NLL)."""
        return self.likelihood.epoch_metrics()

    # --- shared mechanics -----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> Any:
        return self.posterior(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: the parameters of p(x | z)."""
        return self.decoder(z)

    def decode_draws(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output for codes drawn by a sampler (a conditional model picks labels)."""
        return self.decode(z)

    def forward(self, x: torch.Tensor, **inputs: Any) -> ModelOutput:
        with autocast_in_networks_only(self, x.device.type):  # the terms in float32
            objective = self.objective(x, **inputs)
        weights = self.term_weights()
        weighted = {name: weights.get(name, 1.0) * term for name, term in objective.terms.items()}
        regularizer = sum(term for name, term in weighted.items() if name != "recon")
        reg_loss = torch.as_tensor(regularizer, dtype=x.dtype, device=x.device).mean()
        recon_loss = objective.terms["recon"].mean()
        return ModelOutput(
            loss=(weighted["recon"] + regularizer).mean(),
            recon_loss=recon_loss,
            reg_loss=reg_loss,
            z=objective.z,
            terms=objective.terms,
            decoder_params=objective.decoder_params,
            likelihood=self.likelihood,
        )

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z) at the posterior mean of z."""
        return self.likelihood.mean(self.decode(self.encode(x).mean))

    @torch.no_grad()
    def generate(self, n: int) -> Any:
        """Decode ``n`` draws from the prior (means of p(x | z); for a table, a DataFrame
        drawn from p(x | z)); other ways of drawing codes are the samplers of
        :mod:`vaebench.samplers`."""
        if self.prior is None:
            raise RuntimeError(
                f"{self.name} has no prior of its own: fit a sampler on its training data, "
                f"e.g. vaebench.samplers.create_sampler({self.default_sampler!r}, model)"
                ".fit(model, train_data), then sampler.generate(model, n)")
        z = self.prior.sample(n, device=self.device)
        return self.likelihood.generated(self.decode(z))

    def prepare(self, data: ArrayData) -> None:
        """Called once by the trainer with the training data, before the first step."""
        self.likelihood.prepare(data)

    def save(self, directory: str | Path, **options: Any) -> Path:
        """Save into ``directory`` (see :func:`vaebench.serialization.save_model`)."""
        from vaebench.serialization import save_model

        return save_model(self, directory, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload to the Hugging Face Hub; returns the commit's URL (see
        :func:`vaebench.integrations.hub.push_model`)."""
        from vaebench.integrations.hub import push_model

        return push_model(self, repo_id, **options)

    def _check_networks(self) -> None:
        """Run a dummy batch to catch shape mismatches now, not mid-epoch."""
        was_training = self.training
        self.eval()
        x = torch.zeros(2, *self.config.input_dim)
        try:
            with torch.no_grad():
                try:
                    h = self.encoder(x)
                except Exception as err:
                    raise ValueError(f"the encoder fails on a batch of shape {tuple(x.shape)}: "
                                     f"{err}") from err
                want = (2, *self.encoder_output_shape)
                if tuple(h.shape) != want:
                    raise ValueError(
                        f"the encoder outputs shape {tuple(h.shape)} for a batch of 2; "
                        f"{type(self).__name__} with latent_dim={self.config.latent_dim} needs "
                        f"{want} ({self._encoder_output_meaning()})")
                z = torch.zeros(2, *self.latent_shape)
                try:
                    out = self.decoder(z)
                except Exception as err:
                    raise ValueError(f"the decoder fails on latent codes of shape "
                                     f"{tuple(z.shape)}: {err}") from err
                want = (2, *self.likelihood.param_shape)
                if tuple(out.shape) != want:
                    raise ValueError(
                        f"the decoder outputs shape {tuple(out.shape)} for 2 latent codes; the "
                        f"{self.config.likelihood} likelihood of input_dim "
                        f"{self.config.input_dim} needs {want}")
        finally:
            self.train(was_training)

    def _encoder_output_meaning(self) -> str:
        return "the latent code"

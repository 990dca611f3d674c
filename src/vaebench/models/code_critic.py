"""A discriminator on latent codes trained beside the model: the mechanism FactorVAE (a
total-correlation critic) and the adversarial autoencoder (a prior-matching critic) share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vaebench.models.base import ModelOutput


class Discriminator(nn.Module):
    """MLP on latent codes with leaky ReLUs (slope 0.2) and two logits."""

    def __init__(self, latent_dim: int, hidden: int, layers: int):
        super().__init__()
        sizes = [latent_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            blocks += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class CodeCritic:
    """Mixin of a model with a :class:`Discriminator` on its codes (``config``'s
    ``discriminator_hidden`` and ``discriminator_layers``) in its own parameter group
    ``"discriminator"``, stepped in the same training step after the model, on the step's
    codes; its loss, averaged over each epoch, is the epoch metric ``discriminator_loss``.
    A subclass declares :meth:`discriminator_loss`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.discriminator = Discriminator(cfg.latent_dim, cfg.discriminator_hidden,
                                           cfg.discriminator_layers)
        self._discriminator_losses: list[torch.Tensor] = []

    def discriminator_loss(self, z: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss on the step's codes ``z`` (to be detached by it)."""
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        critic = set(self.discriminator.parameters())
        return {"model": [p for p in self.parameters() if p not in critic],
                "discriminator": list(self.discriminator.parameters())}

    def training_step(self, x: torch.Tensor, update: Callable[..., None],
                      **inputs: Any) -> ModelOutput:
        output = super().training_step(x, update, **inputs)
        loss = self.discriminator_loss(output.z)
        update("discriminator", loss)
        self._discriminator_losses.append(loss.detach())
        return output

    def on_epoch_start(self) -> None:
        super().on_epoch_start()
        self._discriminator_losses = []

    def epoch_metrics(self) -> dict[str, float]:
        metrics = super().epoch_metrics()
        if self._discriminator_losses:
            metrics["discriminator_loss"] = float(torch.stack(self._discriminator_losses).mean())
        return metrics

"""VAE with a VampPrior (Tomczak and Welling 2018): a mixture prior over learned
pseudo-inputs."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from vaebench.models.registry import register_model
from vaebench.models.vae import VAE, VAEConfig


class VampPriorConfig(VAEConfig):
    """Config of :class:`VampPriorVAE`."""

    num_pseudo_inputs: int = Field(50, gt=0, description="K, the number of mixture components "
                                                          "(the paper uses 500 on MNIST)")
    pseudo_inputs_init: Literal["uniform", "data"] = Field(
        "data", description="'uniform': U(0, 1) noise; 'data': K random training samples, "
                            "drawn by prepare() before the first step (U(0, 1) until then)")


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k): the encoder's posterior at K learned pseudo-inputs u_k
    (Tomczak and Welling 2018, "VAE with a VampPrior", Eq. 9).

    Holds the pseudo-inputs (a parameter of shape (K, *input_dim)) and scores or draws codes
    through the owning model's encoder, so it changes as the encoder learns. ``log_prob``
    takes codes of shape (..., latent_dim) and returns shape (...,).
    """

    def __init__(self, model: VAE, num_pseudo_inputs: int, input_dim: tuple[int, ...]):
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.rand(num_pseudo_inputs, *input_dim))
        # The encoder belongs to the model: keep a plain reference, not a second submodule.
        object.__setattr__(self, "_encode", model.encode)

    @property
    def num_components(self) -> int:
        return self.pseudo_inputs.shape[0]

    def components(self) -> Any:
        """The K posteriors q(z | u_k), batched: means and variances of shape (K, D)."""
        return self._encode(self.pseudo_inputs)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        per_component = self.components().log_prob(z.unsqueeze(-2))  # (..., K)
        return torch.logsumexp(per_component, dim=-1) - math.log(self.num_components)

    def sample(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """n codes: a uniformly chosen component each, then a draw from it."""
        q = self.components()
        k = torch.randint(self.num_components, (n,), device=q.mean.device)
        eps = torch.randn((n, *q.mean.shape[1:]), dtype=q.mean.dtype, device=q.mean.device)
        return (q.mean[k] + eps * q.std[k]).to(device)


@register_model
class VampPriorVAE(VAE):
    """VAE with the VampPrior (Tomczak and Welling 2018): the prior is a mixture of the
    encoder's posteriors at ``num_pseudo_inputs`` learned pseudo-inputs (:class:`VampPrior`,
    available as ``model.prior``, so generation and importance-sampled likelihoods use it).

    The KL has no closed form; its per-sample term is the one-draw Monte Carlo estimate
    log q(z | x) - log p(z) at the reparameterized code z that is also decoded (Eq. 10 of
    the paper). Terms: ``recon`` and ``kl`` (under ``kl_schedule``).
    """

    name = "vamp"
    config_class = VampPriorConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prior = VampPrior(self, self.config.num_pseudo_inputs, self.config.input_dim)

    def kl_terms(self, q: Any, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"kl": q.log_prob(z) - self.prior.log_prob(z)}

    @torch.no_grad()
    def prepare(self, data: Any) -> None:
        """With ``pseudo_inputs_init="data"``, a model not trained yet starts its pseudo-inputs
        at K random training samples (drawn with the global RNG, seeded by the trainer)."""
        super().prepare(data)
        if self.config.pseudo_inputs_init == "data" and int(self.num_steps) == 0:
            k, n = self.prior.num_components, len(data)
            index = torch.randperm(n)[:k] if k <= n else torch.randint(n, (k,))
            rows = data.take(index.sort().values)
            self.prior.pseudo_inputs.copy_(rows.to(self.prior.pseudo_inputs))

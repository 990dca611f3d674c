"""Normalizing flows fitted on the training codes by maximum likelihood (pythae's
``MAFSampler`` and ``IAFSampler``, whose default sizes these samplers take).

- ``maf``: a masked autoregressive flow (Papamakarios, Pavlakou and Murray 2017), which
  maps a code to noise in one pass (fast density, sequential sampling);
- ``iaf``: an inverse autoregressive flow (Kingma et al. 2016), which maps noise to a code
  in one pass (fast sampling); the density of a code needs the inverse pass, sequential in
  the dimension (d passes per step), and is exact.

Both model codes z through an elementwise affine map x = (z - m) / s, with m and s
initialized to the per-feature mean and standard deviation of the training codes
(Papamakarios et al. 2017 standardize their data too) and then trained with the flow, so
log p(z) = log p_flow(x) - sum_i log s_i. Training s matters for the IAF: its steps only
contract (sigma_t < 1), so over standardized codes alone it underestimates their spread.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt
from torch import nn

from vaebench.distributions import StandardNormal
from vaebench.flows import IAF, MAF, Flow
from vaebench.samplers.base import SamplerConfig
from vaebench.samplers.gmm import EuclideanSampler, held_out_split
from vaebench.samplers.registry import register_sampler

__all__ = ["FlowSampler", "FlowSamplerConfig", "IAFSampler", "MAFSampler",
           "fit_by_likelihood"]

#: Floor of the standard deviation of a feature, so that constant features stay finite.
MIN_STD = 1e-6


class FlowSamplerConfig(SamplerConfig):
    """Size and fitting budget of a flow sampler (sizes: pythae's defaults)."""

    layers: int = Field(2, gt=0, description="autoregressive layers (MADE blocks), each "
                                             "reversing the order of the previous one")
    hidden: tuple[PositiveInt, ...] = Field((128, 128, 128),
                                            description="hidden widths of each MADE")
    epochs: int = Field(100, gt=0, description="epochs of fitting")
    batch_size: int = Field(256, gt=0, description="codes per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")


class FlowSampler(EuclideanSampler):
    """Base of the flow samplers: the affine map (parameters ``code_shift`` m and
    ``code_log_scale`` log s) and a flow over its outputs. Subclasses say how to build the
    flow, evaluate its density and draw from it."""

    config_class = FlowSamplerConfig

    def build(self, model: nn.Module) -> None:
        self.flow = self.new_flow()
        self.code_shift = nn.Parameter(torch.zeros(self.dim))
        self.code_log_scale = nn.Parameter(torch.zeros(self.dim))

    def new_flow(self) -> Flow:
        raise NotImplementedError

    def standard_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_flow(x) of affinely mapped codes (B, d), shape (B,)."""
        raise NotImplementedError

    def standard_draw(self, n: int) -> torch.Tensor:
        """``n`` draws of x (n, d), codes before the affine map."""
        raise NotImplementedError

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(z) per code of ``codes`` (B, d), shape (B,) (change of variables)."""
        standard = (codes - self.code_shift) * torch.exp(-self.code_log_scale)
        return self.standard_log_prob(standard) - self.code_log_scale.sum()

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        return self.code_shift + self.code_log_scale.exp() * self.standard_draw(n)

    def fit_codes(self, codes: torch.Tensor, seed: int, progress: bool) -> dict[str, float]:
        """Start the affine map at the codes' standardization (the flow starts at the
        seeded weights of :meth:`build`), then fit both by :func:`fit_by_likelihood`."""
        with torch.no_grad():
            self.code_shift.copy_(codes.mean(0))
            self.code_log_scale.copy_(codes.std(0).clamp_min(MIN_STD).log())
        return fit_by_likelihood(self, codes, progress)


@register_sampler
class MAFSampler(FlowSampler):
    """A MAF over the codes (Papamakarios et al. 2017): log p(x) = log N(u; 0, I) +
    log |det du/dx| with u = f(x) in one pass (Sec. 3); draws invert f, one pass per
    feature."""

    name = "maf"

    def new_flow(self) -> MAF:
        return MAF(self.dim, self.config.layers, self.config.hidden)

    def standard_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x)

    def standard_draw(self, n: int) -> torch.Tensor:
        return self.flow.sample(n)


@register_sampler
class IAFSampler(FlowSampler):
    """An IAF over the codes (Kingma et al. 2016): x = f(u), u ~ N(0, I), in one pass
    (Eq. 10-14); log p(x) = log N(f^-1(x); 0, I) + log |det df^-1/dx|, with f^-1 exact after
    d passes of each step (its gradient too: each pass is a function of the features already
    recovered)."""

    name = "iaf"

    def build(self, model: nn.Module) -> None:
        super().build(model)
        self.base = StandardNormal((self.dim,))

    def new_flow(self) -> IAF:
        return IAF(self.dim, self.config.layers, self.config.hidden)

    def standard_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        u, log_det = self.flow.inverse(x)
        return self.base.log_prob(u) + log_det

    def standard_draw(self, n: int) -> torch.Tensor:
        return self.flow(self.base.sample(n, device=self.code_shift.device))[0]


def fit_by_likelihood(sampler: FlowSampler, codes: torch.Tensor,
                      progress: bool) -> dict[str, float]:
    """Maximize ``sampler.log_prob`` with Adam on shuffled minibatches of 90 % of ``codes``
    and keep the epoch whose NLL on the other 10 % is lowest. Returns both NLLs (nats per
    code) of the kept weights: ``train_nll`` and ``held_out_nll``."""
    config = sampler.config
    train, held_out = held_out_split(codes)
    optimizer = torch.optim.Adam(sampler.parameters(), lr=config.lr)
    best_nll, best_state = math.inf, None
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train)).to(train.device)
        for batch in train[order].split(config.batch_size):
            loss = -sampler.log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        held_out_nll = mean_nll(sampler, held_out)
        if not math.isfinite(held_out_nll):
            raise FloatingPointError(f"the {sampler.name} sampler's held-out NLL became "
                                     f"{held_out_nll} in epoch {epoch}; lower lr")
        if held_out_nll < best_nll:
            best_nll = held_out_nll
            best_state = {key: value.clone() for key, value in sampler.state_dict().items()}
        if progress:
            print(f"{sampler.name} epoch {epoch}/{config.epochs}: held-out NLL "
                  f"{held_out_nll:.4f} nats per code")
    sampler.load_state_dict(best_state)
    return {"train_nll": mean_nll(sampler, train), "held_out_nll": best_nll}


@torch.no_grad()
def mean_nll(sampler: FlowSampler, codes: torch.Tensor) -> float:
    """-mean log p of ``codes`` under ``sampler``, in nats per code."""
    return -float(sampler.log_prob(codes).mean())

"""Normalizing flows: invertible maps with a tractable log-determinant of their Jacobian.

Every flow is an ``nn.Module`` acting on codes of shape (..., D) (a batch (N, D), or draws
(k, N, D)), with an optional context of shape (..., C) that broadcasts against them:
``forward(z, context=None)`` returns ``(z_new, log_det)`` with log_det = log |det dz_new/dz|
per code, shape (...). Flows whose inverse is cheap give ``inverse(z_new, context=None)``,
returning ``(z, log_det)`` with the log-determinant of the inverse map. A flow that takes
no context ignores it, so flows of both kinds chain in a :class:`FlowSequence`.

- :class:`PlanarFlow`, :class:`RadialFlow` (Rezende and Mohamed 2015);
- :class:`MADE` (Germain et al. 2015), the masked network of the autoregressive flows;
- :class:`MAF` (Papamakarios et al. 2017): one pass in the density direction x -> u,
  ``log_prob`` and sequential ``sample``;
- :class:`IAF` (Kingma et al. 2016): one pass in the sampling direction, with a context h;
- :class:`FlowDistribution`: a base distribution pushed through a flow (a flow posterior).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaebench.distributions import StandardNormal

__all__ = ["IAF", "MADE", "MAF", "AffineAutoregressive", "Flow", "FlowDistribution",
           "FlowSequence", "IAFStep", "MAFLayer", "PlanarFlow", "RadialFlow"]

Transformed = tuple[torch.Tensor, torch.Tensor]


class Flow(nn.Module):
    """An invertible map z -> z_new; ``forward`` returns ``(z_new, log |det dz_new/dz|)``."""

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        raise NotImplementedError

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        """``(z_prev, log |det dz_prev/dz|)``: the inverse map, where it is cheap."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse in closed form")


class FlowSequence(Flow):
    """Flows applied in order: z_K = f_K o ... o f_1(z), log-determinants summed (Rezende
    and Mohamed 2015, Sec. 3.1). Every flow gets the same context."""

    def __init__(self, flows: Iterable[Flow]):
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        return _chain(self.flows, "forward", z, context)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        return _chain(reversed(self.flows), "inverse", z, context)


def _chain(flows: Iterable[Flow], method: str, z: torch.Tensor,
           context: torch.Tensor | None) -> Transformed:
    total = z.new_zeros(z.shape[:-1])
    for flow in flows:
        z, log_det = getattr(flow, method)(z, context)
        total = total + log_det
    return z, total


class PlanarFlow(Flow):
    """f(z) = z + u_hat tanh(w^T z + b) (Rezende and Mohamed 2015, Eq. 10), with
    log |det| = log |1 + u_hat^T psi(z)|, psi(z) = tanh'(w^T z + b) w (Eq. 11-12).

    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with m(a) = -1 + softplus(a) (Appendix A.1),
    so w^T u_hat > -1 and f is invertible (its inverse has no closed form). Free parameters
    u, w in R^D and b in R, so the flow ignores any context.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.u = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.w = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """u_hat and w^T u_hat = m(w^T u), the latter exact (not a rounded dot product)."""
        wu = self.w @ self.u
        wu_hat = F.softplus(wu) - 1
        return self.u + (wu_hat - wu) * self.w / (self.w @ self.w), wu_hat

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        u_hat, wu_hat = self.u_hat()
        activation = torch.tanh(z @ self.w + self.b)
        slope = 1 - activation**2  # tanh'
        z_new = z + u_hat * activation.unsqueeze(-1)
        return z_new, torch.log1p(slope * wu_hat)


class RadialFlow(Flow):
    """f(z) = z + beta h(alpha, r) (z - z0), h = 1 / (alpha + r), r = ||z - z0|| (Rezende
    and Mohamed 2015, Eq. 14), with
    log |det| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(alpha, r) r).

    alpha = softplus(a) > 0 and beta = -alpha + softplus(c) > -alpha (Appendix A.2), so f
    is invertible; the inverse solves a quadratic in r. Free parameters z0, a, c; starts as
    the identity (beta = 0). Ignores any context.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.z0 = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.alpha_raw = nn.Parameter(torch.zeros(()))
        self.beta_raw = nn.Parameter(torch.zeros(()))

    def alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = F.softplus(self.alpha_raw)
        return alpha, F.softplus(self.beta_raw) - alpha

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        alpha, beta = self.alpha_beta()
        offset = z - self.z0
        r = offset.norm(dim=-1)
        beta_h = beta / (alpha + r)
        log_det = ((z.shape[-1] - 1) * torch.log1p(beta_h)
                   + torch.log1p(beta_h - beta * r / (alpha + r) ** 2))
        return z + beta_h.unsqueeze(-1) * offset, log_det

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        """||f(z) - z0|| = r (alpha + beta + r) / (alpha + r): the positive root r of
        r^2 + (alpha + beta - r_new) r - alpha r_new = 0, then z - z0 = (f(z) - z0) / (1 +
        beta h(r))."""
        alpha, beta = self.alpha_beta()
        offset = z - self.z0
        r_new = offset.norm(dim=-1)
        half_b = 0.5 * (alpha + beta - r_new)
        r = torch.sqrt(half_b**2 + alpha * r_new) - half_b
        z_prev = self.z0 + offset * ((alpha + r) / (alpha + beta + r)).unsqueeze(-1)
        return z_prev, -self.forward(z_prev)[1]


class MaskedLinear(nn.Linear):
    """A linear layer whose unit k sees input d only where the mask allows it."""

    def __init__(self, in_degrees: torch.Tensor, out_degrees: torch.Tensor, strict: bool):
        super().__init__(len(in_degrees), len(out_degrees))
        out_degrees = out_degrees[:, None]
        allowed = out_degrees > in_degrees if strict else out_degrees >= in_degrees
        # Derived from the degrees (rebuilt from the config), so not saved with the weights.
        self.register_buffer("mask", allowed.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def hidden_degrees(width: int, dim: int, with_context: bool) -> torch.Tensor:
    """Degrees of ``width`` hidden units, assigned in turn: 1, 2, ..., D - 1, 1, 2, ...
    (Germain et al. 2015, Sec. 4, draw them in [1, D - 1]). With a context they start at 0:
    units of degree 0 see only the context and pass it to every output, including the first
    in the order, which sees no input."""
    low = 0 if with_context else 1
    return low + torch.arange(width) % max(dim - low, 1)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015, Sec. 4).

    Input d has degree ``order[d]`` (a permutation of 1..D; default 1..D), hidden units the
    degrees of :func:`hidden_degrees`. A hidden unit of degree m sees units of degree <= m,
    an output of degree m units of degree < m, so the outputs of dimension i depend only on
    the inputs j with order[j] < order[i]. An optional context of ``context_dim`` features
    enters every unit of the first layer, unmasked, and reaches every output.
    ``forward(x, context)`` returns ``num_params`` tensors shaped like x (e.g. a shift and
    a log-scale per dimension).
    """

    def __init__(self, dim: int, hidden: Sequence[int], num_params: int = 2,
                 context_dim: int = 0, order: Sequence[int] | None = None):
        super().__init__()
        order = torch.arange(1, dim + 1) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(1, dim + 1)):
            raise ValueError(f"order must be a permutation of 1..{dim}, got {order.tolist()}")
        degrees = [order, *(hidden_degrees(w, dim, context_dim > 0) for w in hidden)]
        self.hidden = nn.ModuleList(MaskedLinear(a, b, strict=False)
                                    for a, b in pairwise(degrees))
        self.output = MaskedLinear(degrees[-1], order.repeat(num_params), strict=True)
        first_width = hidden[0] if hidden else num_params * dim
        self.context = nn.Linear(context_dim, first_width) if context_dim else None
        self.dim, self.num_params, self.order = dim, num_params, order.tolist()

    def forward(self, x: torch.Tensor,
                context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        first, *rest = [*self.hidden, self.output]
        h = first(x) + self._context_term(context)
        for layer in rest:
            h = layer(torch.relu(h))
        return h.unflatten(-1, (self.num_params, self.dim)).unbind(-2)

    def _context_term(self, context: torch.Tensor | None) -> torch.Tensor | float:
        if (context is None) != (self.context is None):
            want = "no context" if self.context is None else \
                f"a context of {self.context.in_features} features"
            raise ValueError(f"this MADE takes {want}, got "
                             f"{'none' if context is None else tuple(context.shape)}")
        return 0.0 if self.context is None else self.context(context)


def alternating_orders(dim: int, count: int) -> list[list[int]]:
    """Orders 1..D, D..1, 1..D, ...: each autoregressive layer reverses the previous one."""
    natural = list(range(1, dim + 1))
    return [natural if i % 2 == 0 else natural[::-1] for i in range(count)]


class AffineAutoregressive(Flow):
    """y = x * exp(s(x)) + t(x), with s_i, t_i functions of the x_j before x_i in the order
    of :attr:`made`: one pass forward, log |det| = sum_i s_i (a triangular Jacobian). The
    inverse takes D passes: pass p recovers the p-th dimension in the order, since its
    parameters depend only on the ones before (as in Papamakarios et al. 2017)."""

    made: MADE

    def log_scale_and_shift(self, x: torch.Tensor,
                            context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        log_scale, shift = self.log_scale_and_shift(x, context)
        return x * log_scale.exp() + shift, log_scale.sum(-1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> Transformed:
        x = torch.zeros_like(y)
        for _ in range(self.made.dim):
            log_scale, shift = self.log_scale_and_shift(x, context)
            x = (y - shift) * torch.exp(-log_scale)
        # the last pass's parameters saw every dimension they depend on: they are exact
        return x, -log_scale.sum(-1)


class MAFLayer(AffineAutoregressive):
    """One MAF layer in the density direction x -> u: u_i = (x_i - mu_i) exp(-alpha_i),
    [mu, alpha] = MADE(x), log |det du/dx| = -sum_i alpha_i (Papamakarios et al. 2017,
    Sec. 3.1). Its inverse u -> x is the sequential sampler."""

    def __init__(self, dim: int, hidden: Sequence[int], context_dim: int = 0,
                 order: Sequence[int] | None = None):
        super().__init__()
        self.made = MADE(dim, hidden, 2, context_dim, order)

    def log_scale_and_shift(self, x: torch.Tensor,
                            context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, alpha = self.made(x, context)
        return -alpha, -mu * torch.exp(-alpha)


class IAFStep(AffineAutoregressive):
    """One IAF step: z_t = sigma_t z_{t-1} + (1 - sigma_t) m_t, sigma_t = sigmoid(s_t),
    [m_t, s_t] = MADE(z_{t-1}, h), log |det| = sum_i log sigma_t,i (Kingma et al. 2016,
    Eq. 10-14 and Algorithm 1).

    ``gate_bias`` is added to s_t, so sigma_t starts near 1 and each step near the
    identity, as the paper recommends (s_t "close to +1 or +2" before optimization).
    """

    def __init__(self, dim: int, hidden: Sequence[int], context_dim: int = 0,
                 order: Sequence[int] | None = None, gate_bias: float = 2.0):
        super().__init__()
        self.made = MADE(dim, hidden, 2, context_dim, order)
        self.gate_bias = gate_bias

    def log_scale_and_shift(self, z: torch.Tensor,
                            context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self.made(z, context)
        gate = s + self.gate_bias
        return F.logsigmoid(gate), torch.sigmoid(-gate) * m


class MAF(FlowSequence):
    """Masked autoregressive flow (Papamakarios et al. 2017): :class:`MAFLayer` s whose
    orders alternate, mapping data x to noise u in one pass. ``log_prob(x)`` is
    log N(u; 0, I) + log |det du/dx| (change of variables); ``sample(n)`` draws u and
    inverts the layers."""

    def __init__(self, dim: int, num_layers: int, hidden: Sequence[int], context_dim: int = 0):
        super().__init__(MAFLayer(dim, hidden, context_dim, order)
                         for order in alternating_orders(dim, num_layers))
        self.dim, self.base = dim, StandardNormal((dim,))

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        u, log_det = self(x, context)
        return self.base.log_prob(u) + log_det

    @torch.no_grad()
    def sample(self, n: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` draws (one per row of ``context`` if given), shape (n, D)."""
        weight = next(self.parameters())
        u = torch.randn(n, self.dim, dtype=weight.dtype, device=weight.device)
        return self.inverse(u, context)[0]


class IAF(FlowSequence):
    """Inverse autoregressive flow (Kingma et al. 2016): ``num_steps`` :class:`IAFStep` s
    whose orders alternate, all taking the context h."""

    def __init__(self, dim: int, num_steps: int, hidden: Sequence[int], context_dim: int = 0,
                 gate_bias: float = 2.0):
        super().__init__(IAFStep(dim, hidden, context_dim, order, gate_bias)
                         for order in alternating_orders(dim, num_steps))


class FlowDistribution:
    """z_K = f(z_0), z_0 ~ ``base``, with log q_K(z_K) = log q_0(z_0) - log |det dz_K/dz_0|
    (Rezende and Mohamed 2015, Sec. 3.1 and Eq. 13; Kingma et al. 2016, Eq. 10-12).

    ``base`` is reparameterized (``rsample``, ``log_prob``, ``mean``, e.g. a
    :class:`~vaebench.distributions.DiagonalGaussian`); ``context`` goes to the flow.
    """

    def __init__(self, base: Any, flow: Flow, context: torch.Tensor | None = None):
        self.base, self.flow, self.context = base, flow, context

    @property
    def mean(self) -> torch.Tensor:
        """f(E[z_0]): the flow's image of the base mean, a code of the posterior's bulk. (It
        is not E[z_K], which has no closed form.)"""
        return self.flow(self.base.mean, self.context)[0]

    def rsample_with_log_prob(self, sample_shape: tuple[int, ...] = ()) -> Transformed:
        """Reparameterized draws z_K, shape sample_shape + base shape, and log q_K(z_K)."""
        z0 = self.base.rsample(sample_shape)
        z, log_det = self.flow(z0, self.context)
        return z, self.base.log_prob(z0) - log_det

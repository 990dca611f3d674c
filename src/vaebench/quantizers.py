"""Quantizers of a latent grid: vector quantization (VQ-VAE), its EMA codebook, residual
(hierarchical) quantization and finite scalar quantization.

Every quantizer takes encoder outputs ``z_e`` of shape (B, D, *grid) -- D the code (embedding)
dimension, ``grid`` any number of spatial dimensions, possibly none -- and returns a
:class:`Quantization`: the quantized tensor with the straight-through gradient, the code
indices, and its loss terms **per sample**, each of shape (B,): squared errors summed over
every latent position and embedding dimension of one sample, never averaged, so that the
model's one reduction over the batch (``Autoencoder.forward``) treats them like the
reconstruction term and no term changes when only the batch size changes.

Terms are reported unweighted: the commitment weight beta is applied by the model's
``term_weights``, in one place.

State that changes during training (EMA averages, dead-code restarts, usage counts) changes
only in a training step: a forward pass in training mode with gradients enabled. Calls under
``torch.no_grad()`` (reconstructions, encoding a data set for the prior) or in eval mode
never touch it. A training step computes everything it returns (codes, residuals, terms,
straight-through output) with the codebooks as they were when it started; its updates are
made last and act from the next step on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FiniteScalarQuantizer", "Quantization", "Quantizer", "ResidualQuantizer",
           "VectorQuantizer", "codebook_usage"]


@dataclass
class Quantization:
    """What a quantizer returns for a batch."""

    quantized: torch.Tensor
    """The codes, shape (B, D, *grid), with the straight-through gradient to ``z_e``: its
    value is the selected codes, its gradient w.r.t. ``z_e`` the identity."""
    indices: torch.Tensor
    """Code indices: (B, *grid) for one codebook, (B, depth, *grid) for residual levels."""
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-sample loss terms, each of shape (B,), unweighted."""

    @property
    def mean(self) -> torch.Tensor:
        """The quantized codes, so that a :class:`Quantization` serves as a deterministic
        posterior (``model.encode(x).mean``)."""
        return self.quantized


def codebook_usage(counts: torch.Tensor) -> tuple[float, float]:
    """(usage, perplexity) of code counts: the fraction of codes selected at least once, and
    exp(H) with H = -sum_i p_i log p_i the entropy of the code frequencies p_i = n_i / n.

    Perplexity runs from 1 (one code always) to the number of codes (all equally often).
    Both are NaN when nothing was counted.
    """
    counts = counts.detach().double().cpu()
    total = counts.sum()
    if total <= 0:
        return math.nan, math.nan
    p = counts / total
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()  # 0 log 0 = 0
    return float((counts > 0).double().mean()), float(torch.exp(entropy))


def _vectors(z: torch.Tensor) -> torch.Tensor:
    """(B, D, *grid) -> (B * prod(grid), D), one row per latent position."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def _grid(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_vectors`: rows (B * prod(grid), D) -> (B, D, *grid) of ``like``."""
    return rows.view(like.shape[0], *like.shape[2:], rows.shape[-1]).movedim(-1, 1)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the batch: shape (B,)."""
    return values.flatten(1).sum(1)


def _training_step(module: nn.Module) -> bool:
    return module.training and torch.is_grad_enabled()


class Quantizer(nn.Module):
    """Base of the quantizers: forward, index -> code lookup, and usage over an epoch.

    ``num_codes`` is the number of distinct indices of one codebook (of one level for
    :class:`ResidualQuantizer`); ``depth`` the number of indices per latent position.
    """

    num_codes: int
    depth: int = 1

    def forward(self, z: torch.Tensor) -> Quantization:
        raise NotImplementedError

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (B, D, *grid) of indices as returned in :attr:`Quantization.indices`."""
        raise NotImplementedError

    def reset_usage(self) -> None:
        """Start counting code usage afresh (the model calls it at each epoch start)."""

    def usage_metrics(self) -> dict[str, float]:
        """Usage and perplexity of the codes selected in training steps since the last
        :meth:`reset_usage`."""
        return {}


class _UsageCounter(Quantizer):
    """Counts of selected codes over the training steps since :meth:`reset_usage`, kept in
    a non-persistent buffer (statistics of an epoch are not part of a saved model)."""

    def _init_counts(self, num_codes: int) -> None:
        self.register_buffer("code_counts", torch.zeros(num_codes, dtype=torch.long),
                             persistent=False)

    def reset_usage(self) -> None:
        self.code_counts.zero_()

    @torch.no_grad()
    def _count(self, flat_indices: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(flat_indices, minlength=self.code_counts.numel())
        self.code_counts += counts
        return counts

    def usage_metrics(self) -> dict[str, float]:
        usage, perplexity = codebook_usage(self.code_counts)
        return {"usage": usage, "perplexity": perplexity}


class VectorQuantizer(_UsageCounter):
    """Nearest-neighbour vector quantization (van den Oord, Vinyals and Kavukcuoglu, "Neural
    Discrete Representation Learning", NeurIPS 2017).

    Each position's vector z_e is replaced by its nearest code e_k, k = argmin_j
    ||z_e - e_j||^2, with the straight-through gradient (the decoder's gradient is copied to
    the encoder, Eq. 3 of the paper). Per-sample terms:

    * ``"codebook"``: sum || sg[z_e] - e ||^2 -- the only gradient the codebook receives;
      absent with ``ema=True``.
    * ``"commitment"``: sum || z_e - sg[e] ||^2 -- reaches the encoder only. Unweighted here;
      the model multiplies it by beta (:attr:`beta` is kept for reference).

    ``ema=True`` replaces the codebook term by exponential moving averages (Appendix A.1 of
    the paper; Razavi, van den Oord and Vinyals, "Generating Diverse High-Fidelity Images
    with VQ-VAE-2", 2019). For the n_i vectors assigned to code i in a batch::

        N_i <- decay N_i + (1 - decay) n_i
        m_i <- decay m_i + (1 - decay) sum_{z assigned to i} z
        N~_i = (N_i + epsilon) / (n + K epsilon) n,  n = sum_j N_j   (Laplace smoothing)
        e_i = m_i / N~_i

    The averages start as if every code had been assigned itself once (N_i = 1, m_i = e_i),
    so a code not yet used keeps its place instead of collapsing to 0. N and m are buffers,
    saved with the model; the codebook is then a buffer too, never an optimizer parameter.

    ``restart_dead_codes=True``: a code not selected in ``dead_after`` consecutive training
    steps is moved onto a random recent encoder output, drawn from a ring buffer of the last
    ``restart_buffer_size`` vectors seen (Dhariwal et al., "Jukebox", 2020, restart codes
    from the batch in the same spirit). With ``ema=True`` its averages restart at N_i = 1,
    m_i = e_i. The restart happens at the end of a training step, after its EMA update and
    from the statistics up to it, so that it acts from the next step on; it is sync-free
    (masked writes, no host round trip).
    """

    def __init__(self, num_codes: int, code_dim: int, *, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, epsilon: float = 1e-5, restart_dead_codes: bool = False,
                 dead_after: int = 100, restart_buffer_size: int = 1024):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be positive, got {num_codes}, "
                             f"{code_dim}")
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if dead_after < 1 or restart_buffer_size < 1:
            raise ValueError("dead_after and restart_buffer_size must be positive")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.beta, self.ema, self.decay, self.epsilon = beta, ema, decay, epsilon
        self.restart_dead_codes, self.dead_after = restart_dead_codes, dead_after
        # Uniform(-1/K, 1/K), the initialisation common to VQ-VAE implementations.
        init = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("embedding", init)
            self.register_buffer("ema_cluster_size", torch.ones(num_codes))
            self.register_buffer("ema_embed_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        if restart_dead_codes:
            self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))
            self.register_buffer("recent", torch.zeros(restart_buffer_size, code_dim))
            self.register_buffer("recent_filled", torch.zeros((), dtype=torch.long))
            self.register_buffer("recent_next", torch.zeros((), dtype=torch.long))
            self.register_buffer("restarts", torch.zeros((), dtype=torch.long),
                                 persistent=False)
        self._init_counts(num_codes)

    def extra_repr(self) -> str:
        text = f"num_codes={self.num_codes}, code_dim={self.code_dim}"
        if self.ema:
            text += f", ema=True, decay={self.decay}, epsilon={self.epsilon}"
        if self.restart_dead_codes:
            text += f", restart_dead_codes=True, dead_after={self.dead_after}"
        return text

    # --- lookup ---------------------------------------------------------------------------
    @torch.no_grad()
    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean) of each row of (N, D)."""
        e = self.embedding.detach()
        distances = ((rows**2).sum(1, keepdim=True) - 2.0 * rows @ e.t()
                     + (e**2).sum(1).unsqueeze(0))
        return distances.argmin(1)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.embedding).movedim(-1, 1)

    def forward(self, z: torch.Tensor) -> Quantization:
        return self.quantize(z)[0]

    def quantize(self, z: torch.Tensor) -> tuple[Quantization, torch.Tensor]:
        """The :class:`Quantization` of ``z`` and its selected codes (B, D, *grid) without
        gradient, both from the codebook as it is when called: a training step updates the
        codebook (EMA, restarts) only after computing them."""
        if z.dim() < 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"the quantizer needs (B, {self.code_dim}, *grid), got "
                             f"{tuple(z.shape)}")
        rows = _vectors(z)
        flat_indices = self.nearest(rows.detach())
        codes = _grid(F.embedding(flat_indices, self.embedding), z)
        terms = {}
        if not self.ema:
            terms["codebook"] = _per_sample((z.detach() - codes) ** 2)
        terms["commitment"] = _per_sample((z - codes.detach()) ** 2)
        quantized = z + (codes - z).detach()
        if _training_step(self):
            self._after_step(rows.detach(), flat_indices)
        indices = flat_indices.view(z.shape[0], *z.shape[2:])
        return Quantization(quantized, indices, terms), codes.detach()

    # --- training-step updates ------------------------------------------------------------
    @torch.no_grad()
    def _after_step(self, rows: torch.Tensor, flat_indices: torch.Tensor) -> None:
        counts = self._count(flat_indices)
        if self.ema:
            self.ema_update(rows, flat_indices, counts)
        if self.restart_dead_codes:
            self.unused_steps.copy_(torch.where(counts > 0, 0, self.unused_steps + 1))
            self._remember(rows)
            self._restart()

    @torch.no_grad()
    def ema_update(self, rows: torch.Tensor, flat_indices: torch.Tensor,
                   counts: torch.Tensor | None = None) -> None:
        """One EMA step of the codebook from ``rows`` (N, D) assigned to ``flat_indices``."""
        if counts is None:
            counts = torch.bincount(flat_indices, minlength=self.num_codes)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(
            0, flat_indices, rows.to(self.ema_embed_sum.dtype))
        self.ema_cluster_size.mul_(self.decay).add_(counts.to(self.ema_cluster_size.dtype),
                                                    alpha=1.0 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.ema_cluster_size.sum()
        smoothed = ((self.ema_cluster_size + self.epsilon)
                    / (total + self.num_codes * self.epsilon) * total)
        self.embedding.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _remember(self, rows: torch.Tensor) -> None:
        """Write a random subset of this step's encoder outputs into the ring buffer."""
        size = self.recent.shape[0]
        take = min(rows.shape[0], size)
        chosen = rows[torch.randperm(rows.shape[0], device=rows.device)[:take]]
        slots = (self.recent_next + torch.arange(take, device=rows.device)) % size
        self.recent[slots] = chosen.to(self.recent.dtype)
        self.recent_next.copy_((self.recent_next + take) % size)
        self.recent_filled.copy_((self.recent_filled + take).clamp_max(size))

    @torch.no_grad()
    def _restart(self) -> None:
        dead = (self.unused_steps >= self.dead_after) & (self.recent_filled > 0)
        pick = (torch.rand(self.num_codes, device=self.recent.device)
                * self.recent_filled).long().clamp_max(self.recent.shape[0] - 1)
        fresh = self.recent[pick]
        mask = dead.unsqueeze(1)
        self.embedding.copy_(torch.where(mask, fresh, self.embedding))
        if self.ema:
            self.ema_embed_sum.copy_(torch.where(mask, fresh, self.ema_embed_sum))
            self.ema_cluster_size.copy_(torch.where(dead, 1.0, self.ema_cluster_size))
        self.unused_steps.masked_fill_(dead, 0)
        self.restarts += dead.sum()

    def reset_usage(self) -> None:
        super().reset_usage()
        if self.restart_dead_codes:
            self.restarts.zero_()

    def usage_metrics(self) -> dict[str, float]:
        metrics = super().usage_metrics()
        if self.restart_dead_codes:
            metrics["restarts"] = float(self.restarts)
        return metrics


class ResidualQuantizer(Quantizer):
    """Residual quantization: a depth of codebooks, each quantizing what the previous ones
    left over (the hierarchy of HRQ-VAE, Hosking, Tang and Lapata, "Hierarchical Sketch
    Induction for Paraphrase Generation", ACL 2022; also RQ-VAE, Lee et al. 2022).

    r_1 = z_e; level l selects e_l = nearest code of r_l in codebook l; r_{l+1} = r_l -
    sg[e_l]; the output is sum_l e_l with the straight-through gradient. Each level is a
    :class:`VectorQuantizer` (all options apply per level, e.g. ``ema``); e_l is the code of
    codebook l as it was before the step, whose EMA update or restarts act from the next
    step on. The per-sample terms are summed over levels:

    * ``"codebook"``: sum_l || sg[r_l] - e_l ||^2 (codebook l gets gradient from level l only)
    * ``"commitment"``: sum_l || r_l - sg[e_l] ||^2 = sum_l || z_e - sg[e_1 + ... + e_l] ||^2,
      so the encoder is asked to commit to every partial sum, coarse to fine.

    Unlike Hosking et al. the codes are chosen by nearest neighbour and trained as in
    VQ-VAE (no Gumbel reparameterisation, no depth dropout). Indices have shape
    (B, depth, *grid); usage and perplexity are reported per level (``usage_1``, ...) and
    as their mean (``usage``, ``perplexity``).
    """

    def __init__(self, depth: int, num_codes: int, code_dim: int, **options):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be a positive number of levels, got {depth}")
        self.depth, self.num_codes, self.code_dim = depth, num_codes, code_dim
        self.levels = nn.ModuleList(VectorQuantizer(num_codes, code_dim, **options)
                                    for _ in range(depth))

    def forward(self, z: torch.Tensor) -> Quantization:
        residual = z
        total = torch.zeros_like(z)
        terms: dict[str, torch.Tensor] = {}
        indices = []
        for level in self.levels:
            q, codes = level.quantize(residual)
            total = total + codes
            residual = residual - codes
            indices.append(q.indices)
            for name, term in q.terms.items():
                terms[name] = terms[name] + term if name in terms else term
        quantized = z + (total - z).detach()
        return Quantization(quantized, torch.stack(indices, 1), terms)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return sum(level.codes_from_indices(indices[:, i])
                   for i, level in enumerate(self.levels))

    def reset_usage(self) -> None:
        for level in self.levels:
            level.reset_usage()

    def usage_metrics(self) -> dict[str, float]:
        per_level = [level.usage_metrics() for level in self.levels]
        metrics = {}
        for name in per_level[0]:
            values = [m[name] for m in per_level]
            reduce = sum if name == "restarts" else (lambda v: sum(v) / len(v))
            metrics[name] = float(reduce(values))
            metrics.update({f"{name}_{i + 1}": v for i, v in enumerate(values)})
        return metrics


class FiniteScalarQuantizer(_UsageCounter):
    """Finite scalar quantization (Mentzer, Minnen, Agustsson and Tschannen, "Finite Scalar
    Quantization: VQ-VAE Made Simple", 2023).

    Each of d = len(levels) channels is bounded to L_i values and rounded with the
    straight-through gradient: with h_i = (L_i - 1)(1 - eps) / 2, o_i = 1/2 for even L_i
    (else 0) and s_i = atanh(o_i / h_i),

        bound(z)_i = h_i tanh(z_i + s_i) - o_i,  code_i = round(bound(z)_i) / floor(L_i / 2),

    so channel i takes L_i evenly spaced values in [-1, 1] (0 maps to 0). The codebook is
    implicit: prod(L_i) codes, no parameters and no loss term. A code's index is the
    mixed-radix number of its digits round(bound(z)_i) + floor(L_i / 2) in 0..L_i - 1, the
    first channel least significant. With ``dim`` != d, learned linear maps project the
    encoder's ``dim`` channels to d before quantizing and back after (as in the paper).
    """

    def __init__(self, levels: Sequence[int] = (8, 5, 5, 5), dim: int | None = None,
                 eps: float = 1e-3):
        super().__init__()
        levels = tuple(int(n) for n in levels)
        if not levels or any(n < 2 for n in levels):
            raise ValueError(f"levels needs at least one entry, each >= 2, got {levels}")
        self.levels_tuple = levels
        self.num_codes = math.prod(levels)
        self.dim = dim if dim is not None else len(levels)
        self.eps = eps
        self.register_buffer("levels", torch.tensor(levels), persistent=False)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("basis", torch.tensor(basis), persistent=False)
        if self.dim != len(levels):
            self.project_in = nn.Linear(self.dim, len(levels))
            self.project_out = nn.Linear(len(levels), self.dim)
        else:
            self.project_in = self.project_out = nn.Identity()
        self._init_counts(self.num_codes)

    def extra_repr(self) -> str:
        return f"levels={self.levels_tuple}, dim={self.dim}"

    @property
    def _half_width(self) -> torch.Tensor:
        return self.levels // 2

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash channel-last ``z`` (..., d) so that rounding gives L_i values."""
        levels = self.levels.to(z.dtype)
        half = (levels - 1) * (1 - self.eps) / 2
        offset = (self.levels % 2 == 0).to(z.dtype) * 0.5
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, z: torch.Tensor) -> Quantization:
        if z.dim() < 2 or z.shape[1] != self.dim:
            raise ValueError(f"the quantizer needs (B, {self.dim}, *grid), got {tuple(z.shape)}")
        rows = self.project_in(_vectors(z))
        bounded = self.bound(rows)
        rounded = torch.round(bounded)
        half = self._half_width.to(z.dtype)
        codes = (bounded + (rounded - bounded).detach()) / half
        flat_indices = ((rounded.detach() + half).long() * self.basis).sum(-1)
        if _training_step(self):
            self._count(flat_indices)
        quantized = _grid(self.project_out(codes), z)
        return Quantization(quantized, flat_indices.view(z.shape[0], *z.shape[2:]), {})

    def digits_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Per-channel digits (..., d) in 0..L_i - 1 of mixed-radix indices (...)."""
        return torch.div(indices.unsqueeze(-1), self.basis, rounding_mode="floor") % self.levels

    def normalized_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """The d quantized values in [-1, 1] of each index, channel-last (..., d)."""
        half = self._half_width
        return (self.digits_from_indices(indices) - half).float() / half

    def indices_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalized_codes`: channel-last values (..., d) -> indices."""
        half = self._half_width
        digits = torch.round(codes * half).long() + half
        return (digits * self.basis).sum(-1)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.normalized_codes(indices)).movedim(-1, 1)

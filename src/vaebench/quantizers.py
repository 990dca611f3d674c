"""Quantizers of a latent grid: vector quantization (VQ-VAE) with its options (EMA codebook,
dead-code restarts, k-means initialisation, the rotation trick, cosine-similarity codes),
residual (hierarchical) quantization, finite scalar quantization, lookup-free quantization
and Gumbel-softmax codes.

Every quantizer takes encoder outputs ``z_e`` of shape (B, D, *grid) -- D the code (embedding)
dimension, ``grid`` any number of spatial dimensions, possibly none -- and returns a
:class:`Quantization`: the quantized tensor with its gradient path to ``z_e``
(straight-through unless an option says otherwise), the code indices, and its loss terms
**per sample**, each of shape (B,): summed over every latent position and embedding
dimension of one sample, never averaged, so that the model's one reduction over the batch
(``Autoencoder.forward``) treats them like the reconstruction term and no term changes when
only the batch size changes. The one exception is the batch entropy of
:class:`LookupFreeQuantizer`, a minibatch quantity that every sample carries (see there).

Terms are reported unweighted: the commitment weight beta is applied by the model's
``term_weights``, in one place.

State that changes during training (EMA averages, dead-code restarts, the k-means
initialisation, usage counts) changes only in a training step: a forward pass in training
mode with gradients enabled. Calls under ``torch.no_grad()`` (reconstructions, encoding a data
set for the prior) or in eval mode never touch it. A training step computes everything it
returns (codes, residuals, terms, output) with the codebooks as they were when it started;
its updates are made last and act from the next step on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vaebench.collectives import from_first_rank, gathered_over_ranks, summed_over_ranks
from vaebench.kernels import squared_distances

__all__ = ["FiniteScalarQuantizer", "GumbelQuantizer", "LookupFreeQuantizer", "Quantization",
           "Quantizer", "ResidualQuantizer", "VectorQuantizer", "codebook_usage", "kmeans",
           "rotate_onto", "straight_through"]


@dataclass
class Quantization:
    """What a quantizer returns for a batch."""

    quantized: torch.Tensor
    """The codes, shape (B, D, *grid), with the quantizer's gradient path to ``z_e``: by
    default straight-through, its value the selected codes and its gradient w.r.t. ``z_e``
    the identity (see :func:`straight_through`, :func:`rotate_onto`)."""
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


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner products along the code dimension 1, kept as a size-1 dimension."""
    return (a * b).sum(1, keepdim=True)


def straight_through(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """z + sg[codes - z]: the value of ``codes``, the gradient w.r.t. ``z`` the identity (van
    den Oord et al. 2017, Eq. 3; Bengio et al. 2013)."""
    return z + (codes - z).detach()


def rotate_onto(z: torch.Tensor, codes: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The rotation trick (Fifty et al., "Restructuring Vector Quantization with the Rotation
    Trick", 2024, Sec. 4): each code q is written as a rotation and rescaling of its encoder
    output e, along dimension 1,

        q~ = (||q|| / ||e||) R e,  R = I - 2 r r^T + 2 q^ e^^T,
        e^ = e / ||e||,  q^ = q / ||q||,  r = (e^ + q^) / ||e^ + q^||,

    R the Householder-based rotation with R e^ = q^, computed without forming the matrix.
    R and the scale are constants (detached), so the gradient w.r.t. e is
    (||q|| / ||e||) R^T g for an upstream gradient g. The value is that of ``codes``: a
    detached correction removes the rounding error of q~, as in :func:`straight_through`.
    """
    codes = codes.detach()
    z_norm = z.detach().norm(dim=1, keepdim=True).clamp_min(eps)
    code_norm = codes.norm(dim=1, keepdim=True)
    z_unit = z.detach() / z_norm
    code_unit = codes / code_norm.clamp_min(eps)
    r = F.normalize(z_unit + code_unit, dim=1, eps=eps)
    rotated = z - 2.0 * r * _dot(r, z) + 2.0 * code_unit * _dot(z_unit, z)
    scaled = (code_norm / z_norm) * rotated
    return scaled + (codes - scaled).detach()


@torch.no_grad()
def _kmeans_plus_plus(rows: torch.Tensor, num_centres: int) -> torch.Tensor:
    """k-means++ seeding (Arthur and Vassilvitskii, "k-means++: The Advantages of Careful
    Seeding", 2007): each next centre is a row drawn with probability proportional to its
    squared distance to the nearest centre chosen so far."""
    chosen = [int(torch.randint(rows.shape[0], ()))]
    nearest = squared_distances(rows, rows[chosen[0]].unsqueeze(0)).squeeze(1)
    for _ in range(num_centres - 1):
        weights = nearest.clamp_min(torch.finfo(rows.dtype).tiny)  # all 0: draw uniformly
        chosen.append(int(torch.multinomial(weights, 1)))
        distance = squared_distances(rows, rows[chosen[-1]].unsqueeze(0)).squeeze(1)
        nearest = torch.minimum(nearest, distance)
    return rows[chosen].clone()


@torch.no_grad()
def kmeans(rows: torch.Tensor, num_centres: int, iterations: int = 10,
           spherical: bool = False) -> torch.Tensor:
    """Centres (num_centres, D) of the rows (N, D): k-means++ seeding, then ``iterations``
    Lloyd steps (assign each row to its nearest centre, move each centre to the mean of its
    rows; a centre without rows stays). ``spherical``: the rows are taken as unit vectors and
    the centres renormalised after each step (spherical k-means, Dhillon and Modha 2001)."""
    if rows.shape[0] < num_centres:
        raise ValueError(f"k-means needs at least {num_centres} rows, got {rows.shape[0]}")
    centres = _kmeans_plus_plus(rows, num_centres)
    for _ in range(iterations):
        assignment = squared_distances(rows, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, rows)
        counts = torch.bincount(assignment, minlength=num_centres).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        if spherical:
            centres = F.normalize(centres, dim=1)
    return centres


def _sync_kmeans_flag(module: VectorQuantizer, incompatible_keys: object) -> None:
    """After a state dict is loaded: wait for a k-means initialisation only if the loaded
    state has none."""
    module.awaiting_kmeans = not bool(module.kmeans_done)


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
        """Count the step's codes (of the whole batch when data-parallel) and return them."""
        counts = summed_over_ranks(torch.bincount(flat_indices,
                                                  minlength=self.code_counts.numel()))
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

    ``kmeans_init=True``: the codebook is set to the :func:`kmeans` centres (``kmeans_iters``
    Lloyd steps) of the encoder outputs of the first training steps -- one step when it has
    at least ``num_codes`` latent positions, else as many as it takes to gather that many --
    at the end of the step that completes them (with EMA: m_i = e_i, N_i = 1). Until then a
    training step only counts usage: no EMA update, no restart. The buffer ``kmeans_done``
    records it, so a resumed or loaded model does not initialise again.

    ``rotation_trick=True``: the gradient reaches z_e through :func:`rotate_onto` (Fifty et
    al. 2024) instead of :func:`straight_through`; values and terms are unchanged.

    ``cosine=True``: z_e and the codes are l2-normalised before the search and everything
    after it (Yu et al., "Vector-quantized Image Modeling with Improved VQGAN", ICLR 2022,
    Sec. 3.2): the nearest code is the one of largest cosine similarity, the terms are the
    squared distances between unit vectors (still summed per sample), and the decoder reads
    unit vectors. EMA averages, restarts and k-means (spherical) work on the normalised z_e.
    """

    def __init__(self, num_codes: int, code_dim: int, *, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, epsilon: float = 1e-5, restart_dead_codes: bool = False,
                 dead_after: int = 100, restart_buffer_size: int = 1024,
                 kmeans_init: bool = False, kmeans_iters: int = 10,
                 rotation_trick: bool = False, cosine: bool = False):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be positive, got {num_codes}, "
                             f"{code_dim}")
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if dead_after < 1 or restart_buffer_size < 1 or kmeans_iters < 1:
            raise ValueError("dead_after, restart_buffer_size and kmeans_iters must be positive")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.beta, self.ema, self.decay, self.epsilon = beta, ema, decay, epsilon
        self.restart_dead_codes, self.dead_after = restart_dead_codes, dead_after
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.rotation_trick, self.cosine = rotation_trick, cosine
        self.pass_gradient = rotate_onto if rotation_trick else straight_through
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
        self.awaiting_kmeans = kmeans_init
        self._kmeans_rows: list[torch.Tensor] = []
        if kmeans_init:
            self.register_buffer("kmeans_done", torch.zeros((), dtype=torch.bool))
            self.register_load_state_dict_post_hook(_sync_kmeans_flag)
        self._init_counts(num_codes)

    def extra_repr(self) -> str:
        text = f"num_codes={self.num_codes}, code_dim={self.code_dim}"
        if self.ema:
            text += f", ema=True, decay={self.decay}, epsilon={self.epsilon}"
        if self.restart_dead_codes:
            text += f", restart_dead_codes=True, dead_after={self.dead_after}"
        if self.kmeans_init:
            text += f", kmeans_init=True, kmeans_iters={self.kmeans_iters}"
        text += ", rotation_trick=True" if self.rotation_trick else ""
        return text + (", cosine=True" if self.cosine else "")

    # --- lookup ---------------------------------------------------------------------------
    @property
    def codebook(self) -> torch.Tensor:
        """The codes (K, D) as the quantizer uses them: unit vectors with ``cosine``."""
        return F.normalize(self.embedding, dim=1) if self.cosine else self.embedding

    @torch.no_grad()
    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean) of each row of (N, D)."""
        return squared_distances(rows, self.codebook.detach()).argmin(1)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook).movedim(-1, 1)

    def forward(self, z: torch.Tensor) -> Quantization:
        return self.quantize(z)[0]

    def quantize(self, z: torch.Tensor, *,
                 seed_kmeans: bool = True) -> tuple[Quantization, torch.Tensor]:
        """The :class:`Quantization` of ``z`` and its selected codes (B, D, *grid) without
        gradient, both from the codebook as it is when called: a training step updates the
        codebook (EMA, restarts, k-means) only after computing them. ``seed_kmeans=False``
        keeps this step's vectors out of the k-means initialisation (a residual level waits
        for the levels before it)."""
        if z.dim() < 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"the quantizer needs (B, {self.code_dim}, *grid), got "
                             f"{tuple(z.shape)}")
        if self.cosine:
            z = F.normalize(z, dim=1)
        rows = _vectors(z)
        flat_indices = self.nearest(rows.detach())
        codes = _grid(F.embedding(flat_indices, self.codebook), z)
        terms = {}
        if not self.ema:
            terms["codebook"] = _per_sample((z.detach() - codes) ** 2)
        terms["commitment"] = _per_sample((z - codes.detach()) ** 2)
        quantized = self.pass_gradient(z, codes)
        if _training_step(self):
            self._after_step(rows.detach(), flat_indices, seed_kmeans)
        indices = flat_indices.view(z.shape[0], *z.shape[2:])
        return Quantization(quantized, indices, terms), codes.detach()

    # --- training-step updates ------------------------------------------------------------
    @torch.no_grad()
    def _after_step(self, rows: torch.Tensor, flat_indices: torch.Tensor,
                    seed_kmeans: bool) -> None:
        counts = self._count(flat_indices)
        if self.awaiting_kmeans:
            if seed_kmeans:
                self._gather_for_kmeans(rows)
            return
        if self.ema:
            self.ema_update(rows, flat_indices, counts)
        if self.restart_dead_codes:
            self.unused_steps.copy_(torch.where(counts > 0, 0, self.unused_steps + 1))
            self._remember(rows)
            self._restart()

    @torch.no_grad()
    def _gather_for_kmeans(self, rows: torch.Tensor) -> None:
        """Keep this step's vectors (the whole batch's when data-parallel); once there are
        ``num_codes`` of them, set the codebook to their k-means centres (rank 0's)."""
        self._kmeans_rows.append(gathered_over_ranks(rows))
        if sum(r.shape[0] for r in self._kmeans_rows) < self.num_codes:
            return
        gathered = torch.cat(self._kmeans_rows)
        centres = kmeans(gathered, self.num_codes, self.kmeans_iters, self.cosine)
        self.set_codebook(from_first_rank(centres))
        self.kmeans_done.fill_(True)
        self._kmeans_rows, self.awaiting_kmeans = [], False

    @torch.no_grad()
    def set_codebook(self, codes: torch.Tensor) -> None:
        """Replace the codes (K, D); EMA averages and restart counters start afresh from them
        (N_i = 1, m_i = e_i)."""
        self.embedding.copy_(codes)
        if self.ema:
            self.ema_embed_sum.copy_(codes)
            self.ema_cluster_size.fill_(1.0)
        if self.restart_dead_codes:
            self.unused_steps.zero_()

    @torch.no_grad()
    def ema_update(self, rows: torch.Tensor, flat_indices: torch.Tensor,
                   counts: torch.Tensor | None = None) -> None:
        """One EMA step of the codebook from ``rows`` (N, D) assigned to ``flat_indices``;
        ``counts``, if given, are those of the whole batch. Data-parallel, the counts and
        sums are those of the whole batch."""
        if counts is None:
            counts = summed_over_ranks(torch.bincount(flat_indices, minlength=self.num_codes))
        sums = summed_over_ranks(torch.zeros_like(self.ema_embed_sum).index_add_(
            0, flat_indices, rows.to(self.ema_embed_sum.dtype)))
        self.ema_cluster_size.mul_(self.decay).add_(counts.to(self.ema_cluster_size.dtype),
                                                    alpha=1.0 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.ema_cluster_size.sum()
        smoothed = ((self.ema_cluster_size + self.epsilon)
                    / (total + self.num_codes * self.epsilon) * total)
        self.embedding.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _remember(self, rows: torch.Tensor) -> None:
        """Write a random subset of this step's encoder outputs (the whole batch's when
        data-parallel, chosen by rank 0) into the ring buffer."""
        rows = gathered_over_ranks(rows)
        size = self.recent.shape[0]
        take = min(rows.shape[0], size)
        chosen = rows[from_first_rank(torch.randperm(rows.shape[0], device=rows.device))[:take]]
        slots = (self.recent_next + torch.arange(take, device=rows.device)) % size
        self.recent[slots] = chosen.to(self.recent.dtype)
        self.recent_next.copy_((self.recent_next + take) % size)
        self.recent_filled.copy_((self.recent_filled + take).clamp_max(size))

    @torch.no_grad()
    def _restart(self) -> None:
        dead = (self.unused_steps >= self.dead_after) & (self.recent_filled > 0)
        draws = from_first_rank(torch.rand(self.num_codes, device=self.recent.device))
        pick = (draws * self.recent_filled).long().clamp_max(self.recent.shape[0] - 1)
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

    With ``rotation_trick=True`` the output is :func:`rotate_onto` from z_e to sum_l e_l.
    With ``kmeans_init=True`` level l gathers its residuals only once the levels before it
    are initialised, so its centres are those of the residuals their codes leave.
    ``cosine`` is refused: a sum of unit codes does not quantize a unit vector's residuals.
    """

    def __init__(self, depth: int, num_codes: int, code_dim: int, **options):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be a positive number of levels, got {depth}")
        if options.get("cosine"):
            raise ValueError("cosine codebooks are for one codebook, not residual levels")
        self.depth, self.num_codes, self.code_dim = depth, num_codes, code_dim
        self.levels = nn.ModuleList(VectorQuantizer(num_codes, code_dim, **options)
                                    for _ in range(depth))

    def forward(self, z: torch.Tensor) -> Quantization:
        residual = z
        total = torch.zeros_like(z)
        terms: dict[str, torch.Tensor] = {}
        indices = []
        earlier_levels_ready = True
        for level in self.levels:
            ready = not level.awaiting_kmeans
            q, codes = level.quantize(residual, seed_kmeans=earlier_levels_ready)
            earlier_levels_ready = earlier_levels_ready and ready
            total = total + codes
            residual = residual - codes
            indices.append(q.indices)
            for name, term in q.terms.items():
                terms[name] = terms[name] + term if name in terms else term
        quantized = self.levels[0].pass_gradient(z, total)
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


def _binary_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of Bernoulli(sigmoid(a)), elementwise: softplus(a) - a sigmoid(a)."""
    return F.softplus(logits) - logits * torch.sigmoid(logits)


def _binary_entropy(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Entropy in nats of Bernoulli(p), elementwise; p is kept in [eps, 1 - eps]."""
    p = p.clamp(eps, 1.0 - eps)
    return torch.special.entr(p) + torch.special.entr(1.0 - p)


class LookupFreeQuantizer(_UsageCounter):
    """Lookup-free quantization (Yu et al., "Language Model Beats Diffusion: Tokenizer is Key
    to Visual Generation", ICLR 2024, MAGVIT-v2, Sec. 3.1).

    Each of the d channels becomes its sign, q(z)_i = +1 if z_i > 0 else -1, with the
    straight-through gradient; the implicit codebook is the 2^d corners of {-1, 1}^d and a
    code's index is the binary number sum_i 2^i [z_i > 0] (channel 0 least significant).

    Terms, per sample (unweighted; the model weighs them):

    * ``"commitment"``: sum || z - sg[q(z)] ||^2 over positions and channels.
    * ``"entropy"``: sum over positions of H(p(. | z)), the entropy of the soft assignment
      p(c | z) proportional to exp(-||z - c||^2 / tau) over the 2^d codes, which factorises
      over channels into Bernoulli(sigmoid(4 z_i / tau)): H = sum_i H_b(sigmoid(4 z_i / tau))
      exactly. Minimised: confident assignments.
    * ``"batch_entropy"``: P H(E[p]), P the positions per sample, the expectation over every
      position of the batch. Maximised (the model gives it a negative weight): all codes
      used. It is the entropy of the per-channel marginals, sum_i H_b(mean sigmoid(4 z_i /
      tau)), an upper bound of the entropy of the mean over the 2^d codes, which has no
      closed form. **It is a minibatch quantity** (the DESIGN rule's exception, like
      :func:`vaebench.kernels.mmd_term`): every sample carries the batch value, so the mean
      over the batch, which the model takes, is the estimate itself; it is the one term that
      depends on the batch.

    With equal weights w, entropy - batch_entropy is P times the penalty of MAGVIT-v2,
    E[H(q(z))] - H(E[q(z)]) (Eq. 5), as the other terms are sums over positions.
    """

    def __init__(self, dim: int, temperature: float = 1.0):
        super().__init__()
        if not 1 <= dim <= 20:
            raise ValueError(f"dim must be in 1..20 (2^dim codes), got {dim}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.dim, self.num_codes, self.temperature = dim, 2**dim, temperature
        self.register_buffer("bit_values", 2 ** torch.arange(dim), persistent=False)
        self._init_counts(self.num_codes)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, temperature={self.temperature}"

    def forward(self, z: torch.Tensor) -> Quantization:
        if z.dim() < 2 or z.shape[1] != self.dim:
            raise ValueError(f"the quantizer needs (B, {self.dim}, *grid), got {tuple(z.shape)}")
        signs = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        indices = ((z.detach() > 0).long().movedim(1, -1) * self.bit_values).sum(-1)
        if _training_step(self):
            self._count(indices.flatten())
        terms = {"commitment": _per_sample((z - signs) ** 2), **self.entropy_terms(z)}
        return Quantization(straight_through(z, signs), indices, terms)

    def entropy_terms(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``"entropy"`` per sample and ``"batch_entropy"`` (the batch value for each)."""
        logits = 4.0 * z / self.temperature  # log p(+1 | z_i) - log p(-1 | z_i)
        positions = math.prod(z.shape[2:])
        marginals = torch.sigmoid(logits).movedim(1, -1).reshape(-1, self.dim).mean(0)
        batch = positions * _binary_entropy(marginals).sum()
        return {"entropy": _per_sample(_binary_entropy_from_logits(logits)),
                "batch_entropy": batch.expand(z.shape[0])}

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        bits = torch.div(indices.unsqueeze(-1), self.bit_values, rounding_mode="floor") % 2
        return (2.0 * bits - 1.0).movedim(-1, 1)


class GumbelQuantizer(_UsageCounter):
    """Gumbel-softmax codes (Jang, Gu and Poole, "Categorical Reparameterization with
    Gumbel-Softmax", ICLR 2017; the discrete VAE of Ramesh et al., "Zero-Shot Text-to-Image
    Generation", 2021, DALL-E, Sec. 2.1).

    The input holds logits (B, K, *grid) over the K codes of a learned codebook E (K, D) at
    each position. In training the decoder reads y E with the relaxed one-hot sample

        y = softmax((logits + g) / tau),  g_k ~ Gumbel(0, 1)  (Jang et al., Eq. 2),

    whose argmax, the index, is a draw from softmax(logits) (the Gumbel-max trick, Eq. 1); in eval
    mode it reads the code of argmax logits. The temperature tau is given by the caller.
    Per-sample term ``"kl"``: the KL divergence of q = softmax(logits) from the uniform prior,
    KL(q || U(K)) = sum_k q_k log q_k + log K per position, summed over positions.
    """

    def __init__(self, num_codes: int, code_dim: int):
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise ValueError(f"num_codes must be >= 2 and code_dim positive, got {num_codes}, "
                             f"{code_dim}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.embedding = nn.Parameter(torch.randn(num_codes, code_dim))
        self._init_counts(num_codes)

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, code_dim={self.code_dim}"

    def forward(self, logits: torch.Tensor, temperature: float = 1.0) -> Quantization:
        if logits.dim() < 2 or logits.shape[1] != self.num_codes:
            raise ValueError(f"the quantizer needs logits (B, {self.num_codes}, *grid), got "
                             f"{tuple(logits.shape)}")
        log_q = logits.log_softmax(1)
        kl = _per_sample(log_q.exp() * (log_q + math.log(self.num_codes)))  # sum q log(K q)
        if self.training:
            relaxed = F.gumbel_softmax(logits, tau=temperature, dim=1)
            indices = relaxed.detach().argmax(1)
            quantized = torch.einsum("bk...,kd->bd...", relaxed, self.embedding)
        else:
            indices = logits.argmax(1)
            quantized = self.codes_from_indices(indices)
        if _training_step(self):
            self._count(indices.flatten())
        return Quantization(quantized, indices, {"kl": kl})

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.embedding).movedim(-1, 1)

"""The likelihood of a table row: one likelihood per column, their NLLs summed.

``mixed`` is built from a table's schema (:mod:`vaebench.data.tables`), given to a model as
``likelihood_kwargs={"table": schema, "column_sigma": ...}``
(:attr:`~vaebench.data.tables.TableData.likelihood_kwargs`). Each column is scored by the
distribution of its kind on its block of the encoded row, and the row's NLL is the sum over
its columns, every constant kept, so that the ELBO and the importance-sampled log p(x) are
those of the table in its own units:

* numeric and datetime columns: the existing ``gaussian`` likelihood with a sigma per
  column, on the standardized value, plus log(scale) (the Jacobian of the
  standardization): a density per unit of the column. With ``column_sigma="optimal"``
  sigma is the calibrated one of Rybkin et al. (2021), its maximum-likelihood value: the
  root of a running mean of the column's squared error over the training batches
  (:class:`~vaebench.likelihoods.Gaussian` with ``sigma="optimal"``, one sigma per
  dimension); ``"joint"`` trains the same way, while evaluation and generation score and
  draw the numbers without missing values together, with a full covariance at its
  maximum-likelihood value (:class:`JointGaussian`); ``"conditional"`` (what ``load_table``
  chooses) also shifts their mean by the row's categories;
  ``"learned"`` makes sigma a parameter trained with the others;
* categories: :class:`Categorical` on logits; booleans: the existing ``bernoulli``;
* counts: :class:`NegativeBinomial` (learned dispersion per column) or :class:`Poisson` on
  the log of the mean, scored at the count itself (the block holds it standardized), or a
  Gaussian as a number's on the count dequantized by uniform noise
  (``dequantized_gaussian``, :class:`ColumnLikelihood`), which may join the joint one;
* a column with missing values: its missingness flag is a Bernoulli, and its value term
  counts only where the value is present, so p(row) = prod_j p(flag_j) p(x_j)^(1 - flag_j).

This is the decoder of TVAE (Xu, Skoularidou, Cuesta-Infante and Veeramachaneni, "Modeling
Tabular Data using Conditional GAN", NeurIPS 2019, Sec. 4.3: a Gaussian per continuous
column with its own sigma, a softmax per discrete column), with counts and missing values
scored as what they are; TVAE's mode-specific normalization of continuous columns is an
option of the transform, scored by :class:`ModeSpecific`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from vaebench.data.tables import Column, TableSchema
from vaebench.likelihoods import (
    LOG_2PI,
    SIGMA_MIN,
    Bernoulli,
    Gaussian,
    Likelihood,
    _register,
    _sum_per_sample,
    update_running_mean,
)

if TYPE_CHECKING:
    import pandas as pd

    from vaebench.data.sources import ArrayData


class Categorical(Likelihood):
    """Categorical on logits l over a one-hot block x of K entries:
    -log p = -sum_k x_k log softmax(l)_k (0 for an all-zero block: a missing value)."""

    name = "categorical"

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -_sum_per_sample(x * F.log_softmax(params, dim=1))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.softmax(params, dim=1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        drawn = torch.multinomial(torch.softmax(params.flatten(1), 1), 1).squeeze(1)
        return F.one_hot(drawn, params.shape[1]).to(params.dtype)


class Poisson(Likelihood):
    """Poisson on the log-rate l: -log p(k) = e^l - k l + log k!."""

    name = "poisson"

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _sum_per_sample(params.exp() - x * params + torch.lgamma(x + 1))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params.exp()

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.poisson(params.exp())


class NegativeBinomial(Likelihood):
    """Negative binomial on the log-mean l (mean mu = e^l) with a learned dispersion r per
    dimension (variance mu + mu^2 / r; r -> infinity is the Poisson):

    log p(k) = lgamma(k + r) - lgamma(r) - log k! + r log(r / (r + mu)) + k log(mu / (r + mu)).

    r starts at ``dispersion`` (a column's starts at its marginal's, :func:`_moment_dispersion`).
    """

    name = "negative_binomial"

    def __init__(self, input_dim: tuple[int, ...], dispersion: float = 1.0):
        super().__init__(input_dim)
        self.log_dispersion = nn.Parameter(torch.full(self.input_dim, math.log(dispersion)))

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_r = self.log_dispersion
        r = log_r.exp()
        log_r_plus_mu = torch.logaddexp(log_r, params)
        log_p = (torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1)
                 + r * (log_r - log_r_plus_mu) + x * (params - log_r_plus_mu))
        return -_sum_per_sample(log_p)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params.exp()

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        r = self.log_dispersion.exp().expand_as(params)
        return torch.distributions.NegativeBinomial(r, logits=params - r.log()).sample()


class ModeSpecific(Likelihood):
    """A numeric column under TVAE's mode-specific normalization (Xu et al. 2019, Sec. 4.2):
    the block [alpha, one-hot mode k] stands for x = mean_k + 4 std_k alpha.

    -log p(x) = -log P(k) - log N(alpha; mu, sigma^2) + log(4 std_k): a categorical over the
    modes, the existing Gaussian on alpha (its sigma set as a number's), and the Jacobian of
    the mode's scaling. The mode of x is its most probable one, so pairs (k, alpha) whose x
    has another mode never occur in data: their mass is lost, and this density of x is a
    lower bound of the normalized one (reported likelihoods are conservative).
    """

    name = "mode_specific"

    def __init__(self, mode_stds: list[float], sigma: str = "optimal"):
        super().__init__((1 + len(mode_stds),))
        # alpha = (x - mean_k) / (4 std_k) has std 1/4 within its mode: sigma starts there,
        # as a standardized column's starts at its std, 1.
        self.alpha = _value_gaussian(sigma, start=0.25)
        self.mode = Categorical((len(mode_stds),))
        self.register_buffer("log_widths", torch.tensor(mode_stds).mul(4).log(),
                             persistent=False)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mode = x[:, 1:]
        return (self.alpha.nll(params[:, :1], x[:, :1]) + self.mode.nll(params[:, 1:], mode)
                + (mode * self.log_widths).sum(1))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.cat([params[:, :1], self.mode.mean(params[:, 1:])], dim=1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.alpha.sample(params[:, :1]), self.mode.sample(params[:, 1:])],
                         dim=1)


class JointGaussian(nn.Module):
    """The complete numbers of a table (numeric and datetime columns without missing values,
    standardized) as one Gaussian N(x; mu(z), Sigma) with a full covariance Sigma at its
    maximum-likelihood value, the covariance of the residuals r = x - mu(z): the
    calibrated decoder of Rybkin, Daniilidis and Levine (ICML 2021), whose optimal sigma^2
    is the mean squared error, with the cross terms kept. Sigma is a running estimate over
    the training batches (each batch scored at the estimate the batches before it left,
    then updating it, as a column's optimal sigma), floored at SIGMA_MIN^2 I.

    With ``conditions`` (the width of the row's complete one-hot categories), the mean is
    shifted by them, mu(z) + d B with d = [categories, 1]: B is the least-squares regression
    of the residuals on d and Sigma the covariance of what it leaves, both from the running
    second moments of [d, r] (a conditional Gaussian, Lauritzen and Wermuth, Ann. Statist.
    1989); draws then take the row's drawn categories.

    Evaluation and generation use the whole of Sigma. A row's NLL splits by the chain rule
    into one conditional per column: with Sigma = L L^T and w = L^{-1} r, column j's term
    0.5 w_j^2 + log L_jj + 0.5 log 2 pi is -log p(x_j | x_1..x_{j-1}, z); draws are
    mu + L eps, so generated rows keep the residuals' correlations, which independent sigmas
    would average away. Training scores each number alone, at sigma_j^2 = Sigma_jj (its
    optimal sigma): scored with the cross terms, the decoder's covariance would hold the
    correlations from the first steps and the latent code would not learn them, nor what
    ties the numbers to the other columns.
    """

    def __init__(self, size: int, momentum: float, conditions: int = 0):
        super().__init__()
        self.momentum = momentum
        #: Width of the design d = [the row's categories, 1] the mean is shifted by (0: none).
        self.design_width = conditions + 1 if conditions else 0
        self.register_buffer("running_moments", torch.eye(self.design_width + size))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def regression(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, Sigma): B (design width, size), the least-squares regression of the residuals
        on the design, E[d d^T]^-1 E[d r^T] (None without a design; a ridge of 1e-6 makes
        it unique where the one-hots and the constant are collinear), and Sigma, E[r r^T]
        less what the design explains, E[r d^T] B."""
        width, moments = self.design_width, self.running_moments
        covariance, coefficients = moments[width:, width:], None
        if width:
            gram = moments[:width, :width] + 1e-6 * torch.eye(width, device=moments.device,
                                                              dtype=moments.dtype)
            coefficients = torch.linalg.solve(gram, moments[:width, width:])
            covariance = covariance - moments[width:, :width] @ coefficients
        return coefficients, 0.5 * (covariance + covariance.T)

    @property
    def covariance(self) -> torch.Tensor:
        return self.regression()[1]

    def conditional_nlls(self, mean: torch.Tensor, x: torch.Tensor,
                         given: torch.Tensor | None = None) -> torch.Tensor:
        """(B, size): each column's -log p(x_j | x_<j, the row's categories ``given``, z);
        in training each column's -log N(x_j; mu_j, E[r_j^2]), then the running moments
        updated."""
        residual = (x - mean).to(self.running_moments.dtype)
        if self.training:
            width = self.design_width
            variance = self.running_moments.diagonal()[width:] + SIGMA_MIN**2
            self._track(residual.detach(), given)
            return 0.5 * (residual**2 / variance + variance.log() + LOG_2PI)
        coefficients, tril = self._factors()
        residual = residual - self._shift(given, residual, coefficients)
        whitened = torch.linalg.solve_triangular(tril, residual.T, upper=False).T
        return 0.5 * whitened**2 + tril.diagonal().log() + 0.5 * LOG_2PI

    def sample(self, mean: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        coefficients, tril = self._factors()
        noise = torch.randn(mean.shape, device=mean.device, dtype=tril.dtype) @ tril.T
        return mean + (self._shift(given, noise, coefficients) + noise).to(mean.dtype)

    @property
    def sigma(self) -> torch.Tensor:
        """Each column's sigma, sqrt(Sigma_jj)."""
        return self.covariance.diagonal().sqrt()

    def _factors(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """B and L, the Cholesky factor of Sigma (its floor included), solved once."""
        coefficients, covariance = self.regression()
        eye = torch.eye(len(covariance), device=covariance.device, dtype=covariance.dtype)
        return coefficients, torch.linalg.cholesky(covariance + SIGMA_MIN**2 * eye)

    def _design(self, given: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        return torch.cat([given.to(like.dtype), like.new_ones(len(like), 1)], dim=1)

    def _shift(self, given: torch.Tensor | None, like: torch.Tensor,
               coefficients: torch.Tensor | None) -> torch.Tensor:
        """d B, the mean's shift by the row's categories (0 without a design)."""
        if coefficients is None:
            return torch.zeros_like(like)
        return self._design(given, like) @ coefficients

    def _track(self, residual: torch.Tensor, given: torch.Tensor | None) -> None:
        """Blend the batch's mean of v v^T, v = [d, r], into the running second moments
        (:func:`~vaebench.likelihoods.update_running_mean`)."""
        rows = torch.cat([self._design(given, residual), residual], dim=1) \
            if self.design_width else residual
        update_running_mean(self.running_moments, self.num_updates, rows.T @ rows, len(rows),
                            self.momentum)


class JointMember(Likelihood):
    """A number scored within its table's :class:`JointGaussian`: the decoder outputs its
    mean; its NLL and its draws are the joint's (:class:`Mixed` takes them there)."""

    name = "joint_member"

    def __init__(self):
        super().__init__((1,))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


_DISTRIBUTIONS = {"categorical": Categorical, "poisson": Poisson, "bernoulli": Bernoulli}


class ColumnLikelihood(nn.Module):
    """p(x_j | z) of one column, on its value block of the encoded row.

    Counts are held standardized in the block, (k - center) / scale, so that the encoder
    sees well-scaled inputs; a Poisson or negative binomial count is scored at k, with the
    decoder's output offset by log(center) (the rate starts at the column's mean). A Gaussian
    column adds log(scale). A ``dequantized_gaussian`` count is a Gaussian on k + u, u drawn
    uniformly in (-1/2, 1/2) at each scoring: E_u[-log p(k + u)] >= -log P(k), with P(k)
    the density's mass on (k - 1/2, k + 1/2) (uniform dequantization, Theis, van den Oord and
    Bethge, "A note on the evaluation of generative models", ICLR 2016), so its terms bound
    the count's NLL from above. ``sigma``: how a Gaussian's sigma is set (see :class:`Mixed`).
    """

    def __init__(self, column: Column, sigma: str = "optimal"):
        super().__init__()
        self.distribution = _distribution(column, sigma)
        self.is_count = column.likelihood in ("poisson", "negative_binomial")
        self.center, self.scale = column.center, column.scale
        standardized = column.likelihood in GAUSSIANS and not column.mode_means
        self.log_jacobian = math.log(column.scale) if standardized else 0.0
        self.log_offset = math.log(column.center) if self.is_count else 0.0
        #: The width of one whole number in the block, for a dequantized count (else 0).
        self.bin_width = 1 / column.scale if column.likelihood == "dequantized_gaussian" \
            else 0.0

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.is_count:
            x = torch.round(x * self.scale + self.center).clamp_min(0)
        x = _dequantized(x, self.bin_width)
        return self.distribution.nll(params + self.log_offset, x) + self.log_jacobian

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._encoded(self.distribution.mean(params + self.log_offset))

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return self._encoded(self.distribution.sample(params + self.log_offset))

    def _encoded(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.center) / self.scale if self.is_count else values


def _distribution(column: Column, sigma: str) -> Likelihood:
    """The likelihood of a column's value block (``sigma="joint"``: a member of the table's
    :class:`JointGaussian`)."""
    if sigma == "joint":
        return JointMember()
    if column.mode_means:
        return ModeSpecific(column.mode_stds, sigma)
    if column.likelihood in GAUSSIANS:
        return _value_gaussian(sigma, start=1.0)
    if column.likelihood == "negative_binomial":
        return NegativeBinomial((1,), _moment_dispersion(column))
    return _DISTRIBUTIONS[column.likelihood]((column.value_width,))


#: The column likelihoods that are Gaussians on the block (numbers, dates, dequantized
#: counts).
GAUSSIANS = ("gaussian", "dequantized_gaussian")


def _dequantized(x: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """``x`` plus uniform noise on (-width / 2, width / 2) (nothing where width is 0)."""
    if isinstance(width, float) and width == 0.0:
        return x
    return x + (torch.rand_like(x) - 0.5) * width


#: How the sigma of a number's Gaussian is set: each number's own sigma at its
#: maximum-likelihood value, the complete numbers' joint covariance at its
#: maximum-likelihood value (both running estimates), or a parameter trained with the others.
COLUMN_SIGMAS = ("optimal", "joint", "conditional", "learned")
#: The column_sigma values that score the numbers together (:class:`JointGaussian`).
JOINT_SIGMAS = ("joint", "conditional")
#: The weight of each batch in the running estimate of an optimal sigma: a table may get
#: only a few hundred steps, so the estimate follows the last ten or so (the images'
#: Gaussian averages over a hundred).
COLUMN_MOMENTUM = 0.1


def _value_gaussian(sigma: str, start: float) -> Gaussian:
    """The Gaussian of one value, its sigma ``"optimal"`` or ``"learned"``, starting at
    ``start`` (the value's spread in the data) until the first batch."""
    if sigma == "learned":
        gaussian = Gaussian((1,), sigma="learned")
        nn.init.constant_(gaussian.log_scale_param, math.log(start))
    else:
        gaussian = Gaussian((1,), sigma="optimal", sigma_per="pixel", momentum=COLUMN_MOMENTUM)
        gaussian.running_mse.fill_(start**2)
    return gaussian


#: The dispersion of a count column whose variance does not exceed its mean (a Poisson's
#: would be infinite).
MAX_START_DISPERSION = 1e4


def _moment_dispersion(column: Column) -> float:
    """The dispersion r of the negative binomial with the column's mean and variance,
    mean^2 / (variance - mean): where p(x | z) starts, like a standardized column's sigma
    at its std (r = 1 would start with a variance of mean + mean^2, for a mean count of 700
    draws 2.4 times as spread as the data, which Adam's steps of about 1e-3 in log r take
    thousands of steps to undo)."""
    excess = column.scale**2 - column.center
    if excess <= 0:
        return MAX_START_DISPERSION
    return min(column.center**2 / excess, MAX_START_DISPERSION)


@_register
class Mixed(Likelihood):
    """One likelihood per column of a table, the row's NLL their sum (module docstring).

    ``table``: the table's schema (:class:`~vaebench.data.tables.TableSchema` or its
    dict). ``column_sigma``: how the sigma of a number's (or date's) Gaussian is set, one of
    :data:`COLUMN_SIGMAS`: ``"optimal"`` (default), its maximum-likelihood value, the root
    of a running mean of the column's squared error over the training batches, which each
    batch updates after its terms are computed (so no term depends on the other rows of its
    batch), used in evaluation and generation as it stands after training; ``"joint"``, as
    ``"optimal"`` in training, while evaluation and generation score and draw the numbers
    without missing values together, with the full covariance of their residuals estimated
    the same way (:class:`JointGaussian`); ``"conditional"``, as ``"joint"`` with their mean
    shifted by the row's complete categories and booleans; ``"learned"``, a
    parameter (log sigma) trained with the others, starting at the column's spread.
    ``parts(params, x)`` gives each column's per-sample NLL (and each missingness
    flag's, as ``"name:missing"``); in training mode their means over an epoch are reported
    in the history as ``train_nll_<column>``.
    """

    name = "mixed"
    builds_from_data = True

    def __init__(self, input_dim: tuple[int, ...], table: TableSchema | dict[str, Any],
                 column_sigma: str = "optimal"):
        super().__init__(input_dim)
        self.table = self.check_kwargs({"table": table, "column_sigma": column_sigma},
                                       input_dim)
        self.column_sigma = column_sigma
        self.blocks = self.table.blocks()
        together = column_sigma in JOINT_SIGMAS
        joint = [block.start for column, block, flag in self.blocks
                 if together and _can_join(column, flag)]
        given = [entry for column, block, flag in self.blocks
                 if column_sigma == "conditional" and flag is None
                 and column.kind in ("categorical", "boolean")
                 for entry in range(block.start, block.stop)]
        self.joint = JointGaussian(len(joint), COLUMN_MOMENTUM, len(given)) \
            if len(joint) > 1 else None
        self.register_buffer("joint_entries", torch.tensor(joint if self.joint else [],
                                                           dtype=torch.long), persistent=False)
        self.register_buffer("given_entries", torch.tensor(given if self.joint else [],
                                                           dtype=torch.long), persistent=False)
        members = set(joint) if self.joint else set()
        self.columns = nn.ModuleList(
            ColumnLikelihood(column, "joint" if block.start in members else
                             "optimal" if together else column_sigma)
            for column, block, _ in self.blocks)
        widths = [part.bin_width for part, (_, block, _) in zip(self.columns, self.blocks,
                                                                 strict=True)
                  if block.start in members]
        self.register_buffer("joint_bin_widths", torch.tensor(widths), persistent=False)
        self.joint_dequantizes = any(widths)
        self.flags = Bernoulli((1,))
        self.on_epoch_start()

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any],
                     input_dim: tuple[int, ...] | None = None) -> TableSchema:
        """The table of ``kwargs`` (``{"table": schema}``, optionally with
        ``"column_sigma"``), checked against ``input_dim``."""
        if "table" not in kwargs or not set(kwargs) <= {"table", "column_sigma"}:
            raise ValueError("likelihood 'mixed' is built from a table's schema: "
                             "likelihood_kwargs must be {'table': schema} (see "
                             "vaebench.data.load_table), and optionally 'column_sigma', got "
                             f"keys {sorted(kwargs)}")
        if kwargs.get("column_sigma", "optimal") not in COLUMN_SIGMAS:
            raise ValueError(f"likelihood 'mixed': column_sigma must be one of "
                             f"{', '.join(map(repr, COLUMN_SIGMAS))}, got "
                             f"{kwargs['column_sigma']!r}")
        table = kwargs["table"]
        table = table if isinstance(table, TableSchema) else TableSchema.model_validate(table)
        if input_dim is not None and tuple(input_dim) != (table.width,):
            raise ValueError(f"likelihood 'mixed': the table's encoded rows have width "
                             f"{table.width}, so input_dim must be ({table.width},), got "
                             f"{tuple(input_dim)}")
        return table

    def parts(self, params: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample NLL (B,) of each column, and of each missingness flag. A missing
        value's term is 0: its column's likelihood sees only the rows where it is present
        (an optimal sigma is estimated from those alone)."""
        parts = {}
        joint = iter(self._joint_parts(params, x))
        for (column, block, flag), likelihood in zip(self.blocks, self.columns, strict=True):
            if isinstance(likelihood.distribution, JointMember):
                parts[str(column.name)] = next(joint) + likelihood.log_jacobian
                continue
            if flag is None:
                parts[str(column.name)] = likelihood.nll(params[:, block], x[:, block])
                continue
            parts[f"{column.name}:missing"] = self.flags.nll(params[:, flag:flag + 1],
                                                             x[:, flag:flag + 1])
            present = x[:, flag] < 0.5
            value = params.new_zeros(len(x))
            value[present] = likelihood.nll(params[:, block][present], x[:, block][present])
            parts[str(column.name)] = value
        return parts

    def _joint_parts(self, params: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """The joint Gaussian's per-sample conditional NLL of each of its columns."""
        if self.joint is None:
            return []
        entries = self.joint_entries
        values = x[:, entries]
        if self.joint_dequantizes:
            values = _dequantized(values, self.joint_bin_widths.to(x.dtype))
        given = x[:, self.given_entries] if len(self.given_entries) else None
        return list(self.joint.conditional_nlls(params[:, entries], values, given).unbind(1))

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = self.parts(params, x)
        if self.training:
            self._track(parts)
        return torch.stack(list(parts.values())).sum(0)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The encoded row of the means: Gaussian means, category and flag probabilities,
        count means standardized like the counts."""
        return self._per_block(params, ColumnLikelihood.mean, torch.sigmoid)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """A drawn encoded row; a drawn missing value's block holds 0, as in the data."""
        rows = self._per_block(params, _draw, self.flags.sample)
        if self.joint is not None:  # after the categories, which may shift the numbers
            given = rows[:, self.given_entries] if len(self.given_entries) else None
            rows[:, self.joint_entries] = self.joint.sample(params[:, self.joint_entries],
                                                            given)
        for _, block, flag in self.blocks:
            if flag is not None:
                rows[:, block] = rows[:, block] * (1 - rows[:, flag:flag + 1])
        return rows

    def generated(self, params: torch.Tensor) -> pd.DataFrame:
        """What ``model.generate`` returns: a table drawn from p(x | z)."""
        return self.table.decode(self.sample(params))

    @property
    def dim(self) -> int:
        """D: the table's number of columns (not of entries of its encoded rows), so that
        bits per dimension are bits per column."""
        return len(self.table.columns)

    @torch.no_grad()
    def check_support(self, data: ArrayData, chunk: int = 8192) -> None:
        """Refuse rows that are not this table's encoding: flags, booleans and one-hot
        entries must be 0 or 1, and a category block one-hot unless the value is missing."""
        for start in range(0, len(data), chunk):
            rows = data.take(slice(start, start + chunk))
            for column, block, flag in self.blocks:
                problem = _encoding_problem(column, rows[:, block],
                                            None if flag is None else rows[:, flag])
                if problem is not None:
                    what, row = problem
                    raise ValueError(f"likelihood 'mixed' needs rows encoded by its table, "
                                     f"but {data.name} has {what} in column {column.name!r} "
                                     f"of row {start + row}")

    def on_epoch_start(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._rows = 0

    def epoch_metrics(self) -> dict[str, float]:
        """Mean NLL of each column over the training rows scored since the epoch began."""
        return {f"nll_{name}": float(total) / self._rows for name, total in self._sums.items()}

    def _track(self, parts: dict[str, torch.Tensor]) -> None:
        for name, part in parts.items():
            total = part.detach().sum()
            self._sums[name] = self._sums[name] + total if name in self._sums else total
        self._rows += len(next(iter(parts.values())))

    def _per_block(self, params: torch.Tensor, value_fn: Any, flag_fn: Any) -> torch.Tensor:
        """The encoded row built block by block: ``value_fn`` on each column's block,
        ``flag_fn`` on each missingness flag."""
        pieces = []
        for (_, block, flag), likelihood in zip(self.blocks, self.columns, strict=True):
            pieces.append(value_fn(likelihood, params[:, block]))
            if flag is not None:
                pieces.append(flag_fn(params[:, flag:flag + 1]))
        return torch.cat(pieces, dim=1)

    def extra_repr(self) -> str:
        return (f"columns={len(self.table.columns)}, width={self.table.width}, "
                f"column_sigma={self.column_sigma!r}, joint={len(self.joint_entries)}")


def _can_join(column: Column, flag: int | None) -> bool:
    """Whether a column joins the table's :class:`JointGaussian`: a standardized number (or
    date, or dequantized count) without missing values."""
    return column.likelihood in GAUSSIANS and not column.mode_means and flag is None


def _draw(likelihood: ColumnLikelihood, params: torch.Tensor) -> torch.Tensor:
    """A column's draw; a joint member's mean, which the joint's draw then replaces."""
    if isinstance(likelihood.distribution, JointMember):
        return likelihood.mean(params)
    return likelihood.sample(params)


def _encoding_problem(column: Column, block: torch.Tensor,
                      flag: torch.Tensor | None) -> tuple[str, int] | None:
    """What is wrong with a column's encoded values (and at which row), or None."""
    checks = []
    if flag is not None:
        checks.append(("a missingness flag other than 0 or 1", (flag != 0) & (flag != 1)))
    if column.kind in ("categorical", "boolean"):
        checks.append(("an entry other than 0 or 1", ((block != 0) & (block != 1)).any(1)))
    if column.kind == "categorical":
        present = torch.ones(len(block), dtype=torch.bool, device=block.device) \
            if flag is None else flag == 0
        checks.append(("a category block that is not one-hot",
                       present & (block.sum(1) != 1)))
    for what, bad in checks:
        if bool(bad.any()):
            return what, int(bad.nonzero()[0])
    return None


def is_tabular(model: nn.Module) -> bool:
    """Whether ``model`` models a table (its likelihood is ``mixed``)."""
    return isinstance(getattr(model, "likelihood", None), Mixed)


@torch.no_grad()
def generate_table(model: nn.Module, n: int, *, sampler: Any = None, seed: int | None = None,
                   batch_size: int = 1024) -> pd.DataFrame:
    """``n`` rows drawn from a tabular model: codes from ``sampler`` (default: the model's
    prior), then each row from p(x | z), decoded to the table's columns, dtypes and labels.
    ``seed`` fixes the draws without touching the caller's random stream."""
    import pandas as pd

    from vaebench.evaluation import evaluating
    from vaebench.samplers import create_sampler

    if not is_tabular(model):
        raise ValueError(f"the {model.name} model does not model a table (its likelihood is "
                         f"{model.config.likelihood!r}, not 'mixed')")
    sampler = sampler or create_sampler("normal", model)
    codes = sampler.sample(model, n, seed=seed)
    with evaluating(model, seed=seed):
        params = torch.cat([sampler.decode(model, part) for part in codes.split(batch_size)])
        frame = model.likelihood.generated(params)
    return pd.DataFrame(frame)


@torch.no_grad()
def column_nll(model: nn.Module, data: ArrayData, batch_size: int = 512) -> dict[str, float]:
    """Mean NLL in nats of each column of ``data`` (and of each missingness flag) under
    p(x | z) at the posterior mean of z: which columns the model reconstructs worst."""
    from vaebench.evaluation import evaluating

    if not is_tabular(model):
        raise ValueError(f"the {model.name} model does not model a table")
    totals: dict[str, float] = {}
    with evaluating(model):
        for x in data.batches(batch_size, device=model.device):
            params = model.decode(model.encode(x).mean)
            for name, part in model.likelihood.parts(params, x).items():
                totals[name] = totals.get(name, 0.0) + float(part.sum())
    return {name: total / len(data) for name, total in totals.items()}

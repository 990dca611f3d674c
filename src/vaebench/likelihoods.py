"""Reconstruction terms: the decoder's distribution p(x | z) as a swappable object.

Every likelihood turns the decoder's output (its *parameters*) into a distribution over one
sample x and returns the per-sample negative log-likelihood in nats: summed over every
dimension of the sample (pixels, channels), normalizing constants included, never averaged
over pixels. The caller averages over the batch. See ``docs/likelihoods.md`` and DESIGN.md.

=========================  =================================  ===========================
name                       decoder output per sample          scale (``sigma``)
=========================  =================================  ===========================
``gaussian``               mean, shape ``input_dim``          number, ``"learned"``,
                                                              ``"optimal"``, ``"data"``
``laplace``                location, shape ``input_dim``      number, ``"learned"``
``bernoulli``              logits, shape ``input_dim``        none
``continuous_bernoulli``   logits, shape ``input_dim``        none
``discretized_logistic``   mean and log-scale, ``(2C, ...)``  from the decoder
=========================  =================================  ===========================
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vaebench.collectives import summed_over_ranks

if TYPE_CHECKING:
    from vaebench.data.sources import ArrayData

LOG_2PI = math.log(2 * math.pi)
LOG_2 = math.log(2.0)

#: Named values of ``sigma`` (any positive number is a fixed scale).
SIGMA_MODES = ("learned", "optimal", "data")
#: Shapes of a learned scale (or of the data variance).
SIGMA_PER = ("scalar", "channel", "pixel")
#: Soft lower bound on a learned Gaussian / Laplace scale (and the floor of an optimal or
#: data-variance scale), so that a scale cannot collapse to 0 on constant pixels.
SIGMA_MIN = 1e-3
_LOG_SIGMA_MIN = math.log(SIGMA_MIN)
#: How far (in levels) a value may sit from a level k / (levels - 1) and still count as on it:
#: float32 data k / 255 are within 2e-5 levels.
LEVEL_TOLERANCE = 1e-3

_LIKELIHOODS: dict[str, type[Likelihood]] = {}


def _register(cls: type[Likelihood]) -> type[Likelihood]:
    _LIKELIHOODS[cls.name] = cls
    return cls


def list_likelihoods(*, data_built: bool = False) -> list[str]:
    """Names of the likelihoods built from a sample shape alone; with ``data_built`` also
    those built from a description of the data (``mixed``, from a table's schema)."""
    return sorted(name for name, cls in _LIKELIHOODS.items()
                  if data_built or not cls.builds_from_data)


def check_likelihood_kwargs(name: str, kwargs: dict[str, Any],
                            input_dim: tuple[int, ...] | None = None) -> None:
    """``kwargs`` (a model's ``likelihood_kwargs``) must fit likelihood ``name``."""
    if name in _LIKELIHOODS:
        _LIKELIHOODS[name].check_kwargs(kwargs, input_dim)


def _sum_per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).sum(1)


@torch.no_grad()
def update_running_mean(running: torch.Tensor, num_updates: torch.Tensor, sums: torch.Tensor,
                        count: int, momentum: float) -> None:
    """Blend a batch's mean, its ``sums`` over ``count`` values each (summed over the
    data-parallel processes: the whole batch's), into ``running``: a cumulative mean for the
    first 1 / momentum batches, then an exponential moving average of weight ``momentum``
    (no host synchronization). A batch without values changes nothing; ``num_updates``
    counts the others."""
    totals = summed_over_ranks(torch.cat([sums.reshape(-1), sums.new_tensor([count])]))
    total = totals[-1]
    mean = (totals[:-1] / total.clamp_min(1)).view_as(running)
    weight = (1.0 / (num_updates + 1.0)).clamp_min(momentum) * (total > 0)
    running.lerp_(mean.to(running.dtype), weight.to(running.dtype))
    num_updates += (total > 0).long()


def _soft_floor(log_scale: torch.Tensor, floor: float = _LOG_SIGMA_MIN) -> torch.Tensor:
    """``floor + softplus(log_scale - floor)``: equal to ``log_scale`` well above ``floor``,
    never below it, with a gradient everywhere (the "softclip" of Rybkin et al. 2021)."""
    return floor + F.softplus(log_scale - floor)


def _first_off_level(block: torch.Tensor, levels: int,
                     start: int) -> tuple[float, int] | None:
    """The first value of ``block`` off the levels k / (levels - 1), and its sample index
    (``start`` is the index of the block's first sample); None if every value is on them."""
    rows = block.flatten(1)
    scaled = rows * (levels - 1)
    off = (scaled - scaled.round()).abs() > LEVEL_TOLERANCE
    if not bool(off.any()):
        return None
    row = int(off.any(1).nonzero()[0])
    column = int(off[row].nonzero()[0])
    return float(rows[row, column]), start + row


def _scale_shape(input_dim: tuple[int, ...], per: str) -> tuple[int, ...]:
    """Shape of a scale that broadcasts against one sample of shape ``input_dim``."""
    if per == "scalar":
        return ()
    if per == "channel":
        return (input_dim[0],) + (1,) * (len(input_dim) - 1)
    return tuple(input_dim)


def check_likelihood_options(likelihood: str, sigma: Any = 1.0,
                             sigma_per: str = "scalar") -> float | str:
    """Validate a (likelihood, sigma, sigma_per) combination; return sigma normalized.

    Raises a ValueError whose message names the offending field. Used by the model configs
    at construction and by :func:`build_likelihood`.
    """
    sigma = check_sigma(likelihood, sigma)
    check_sigma_per(likelihood, sigma, sigma_per)
    return sigma


#: The likelihood chosen from the data by :func:`likelihood_for_data` (commands, benchmarks).
AUTO = "auto"


def likelihood_for_data(data: Any, chunk: int = 8192) -> tuple[str, float | str]:
    """The default likelihood and sigma of ``data``, chosen by measurement (the VAE on the
    bundled datasets, docs/likelihoods.md): ``("bernoulli", 1.0)`` when every value is 0 or 1
    (the exact likelihood of binary data), else ``("gaussian", "data")``, a density for any
    real values whose scale is fixed from the data's variance before training. Read in chunks
    of ``chunk`` samples."""
    from vaebench.data import as_data

    for x in as_data(data).batches(chunk):
        if not bool(((x == 0) | (x == 1)).all()):
            return "gaussian", "data"
    return "bernoulli", 1.0


def check_sigma(likelihood: str, sigma: Any) -> float | str:
    """``sigma`` must be valid for ``likelihood``; returns it normalized."""
    if likelihood == AUTO:
        if normalize_sigma(sigma) != 1.0:
            raise ValueError(f"likelihood={AUTO!r} chooses sigma with the likelihood "
                             "(bernoulli for 0/1 data, else gaussian with sigma='data'): name "
                             f"a likelihood to set sigma={sigma!r}")
        return 1.0
    if likelihood not in _LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; known: "
                         f"{', '.join(list_likelihoods())}")
    sigma = normalize_sigma(sigma)
    cls = _LIKELIHOODS[likelihood]
    mode = "fixed" if isinstance(sigma, float) else sigma
    if not cls.scale_modes:
        if sigma != 1.0:
            raise ValueError(f"likelihood={likelihood!r} has no scale, so sigma={sigma!r} would "
                             "be ignored; leave sigma at its default 1.0")
    elif mode not in cls.scale_modes:
        users = [n for n, c in sorted(_LIKELIHOODS.items()) if mode in c.scale_modes]
        takes = " or ".join(["a positive number"] + [repr(m) for m in cls.scale_modes
                                                     if m != "fixed"])
        raise ValueError(f"sigma={sigma!r} is not available for likelihood={likelihood!r}, "
                         f"whose sigma is {takes}; sigma={sigma!r} is for "
                         f"likelihood={' or '.join(map(repr, users))}")
    return sigma


def check_sigma_per(likelihood: str, sigma: float | str, sigma_per: str) -> None:
    """``sigma_per`` must be known and fit ``sigma`` (already checked by check_sigma)."""
    if sigma_per not in SIGMA_PER:
        raise ValueError(f"sigma_per must be one of {', '.join(map(repr, SIGMA_PER))}, "
                         f"got {sigma_per!r}")
    if sigma_per == "scalar":
        return
    if sigma not in ("learned", "optimal", "data"):
        raise ValueError(f"sigma_per={sigma_per!r} applies only to sigma='learned' (and "
                         f"sigma='optimal' or 'data'); with likelihood={likelihood!r} and "
                         f"sigma={sigma!r} leave sigma_per at 'scalar'")
    if sigma == "data" and sigma_per == "pixel":
        raise ValueError("sigma_per='pixel' with sigma='data' would divide by per-pixel "
                         "variances that are zero on constant pixels (e.g. MNIST borders); "
                         "use sigma_per='scalar' or 'channel'")


def normalize_sigma(sigma: Any) -> float | str:
    """A positive finite number (numeric strings accepted) or one of :data:`SIGMA_MODES`."""
    if isinstance(sigma, str):
        if sigma in SIGMA_MODES:
            return sigma
        try:
            sigma = float(sigma)
        except ValueError:
            raise ValueError(f"sigma must be a positive number or one of "
                             f"{', '.join(map(repr, SIGMA_MODES))}, got {sigma!r}") from None
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise ValueError(f"sigma must be a positive number or one of "
                         f"{', '.join(map(repr, SIGMA_MODES))}, got {sigma!r}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive, finite number, got {sigma}")
    return sigma


class Likelihood(nn.Module):
    """Base class: a conditional distribution over one sample given decoder parameters.

    A likelihood may hold parameters (a learned scale) and buffers (data statistics); they
    belong to the model's ``state_dict`` and are saved and loaded with it.
    """

    name: ClassVar[str]
    #: Which kinds of ``sigma`` this likelihood takes ("fixed" is a positive number).
    scale_modes: ClassVar[tuple[str, ...]] = ()
    #: The interval [low, high] data must lie in; None: any finite real.
    support: ClassVar[tuple[float, float] | None] = None
    #: Data must lie on the levels k / (levels - 1) of [0, 1]; None: any value.
    levels: ClassVar[int | None] = None
    #: Built from a description of the data (``likelihood_kwargs``), not from its shape
    #: alone: left out of :func:`list_likelihoods` unless asked for.
    builds_from_data: ClassVar[bool] = False

    def __init__(self, input_dim: tuple[int, ...]):
        super().__init__()
        self.input_dim = tuple(input_dim)

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any],
                     input_dim: tuple[int, ...] | None = None) -> Any:
        """Validate ``likelihood_kwargs``: none, unless the likelihood builds from data."""
        if kwargs:
            raise ValueError(f"likelihood {cls.name!r} takes no likelihood_kwargs, got "
                             f"{sorted(kwargs)}")

    def generated(self, params: torch.Tensor) -> Any:
        """What ``model.generate`` returns for decoder output ``params``: the mean."""
        return self.mean(params)

    def on_epoch_start(self) -> None:
        """Reset statistics gathered over a training epoch."""

    def epoch_metrics(self) -> dict[str, float]:
        """Statistics gathered since :meth:`on_epoch_start`, for the history."""
        return {}

    @property
    def dim(self) -> int:
        """D: the number of dimensions of one sample."""
        return math.prod(self.input_dim)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """Shape of the decoder output for one sample."""
        return self.input_dim

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample -log p(x | params) in nats, summed over dimensions, shape (B,)."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | params]: what reconstructions and samples show."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """One draw of x from p(x | params)."""
        raise NotImplementedError

    def prepare(self, data: ArrayData) -> None:
        """Hook to compute data statistics once from the training set."""

    @torch.no_grad()
    def check_support(self, data: ArrayData, chunk: int = 8192) -> None:
        """Raise a ValueError if ``data`` fall outside :attr:`support` (naming the range
        found) or off the :attr:`levels` (naming the first such value and its sample).

        Read ``chunk`` samples at a time, so memory-mapped data are never loaded whole.
        """
        if self.support is None and self.levels is None:
            return
        low, high = torch.tensor(math.inf), torch.tensor(-math.inf)
        off_level = None
        for start in range(0, len(data), chunk):
            block = data.take(slice(start, start + chunk)).float()
            low = torch.minimum(low, block.min().cpu())  # NaN propagates, and is refused
            high = torch.maximum(high, block.max().cpu())
            if off_level is None and self.levels is not None:
                off_level = _first_off_level(block, self.levels, start)
        if self.support is not None and not (self.support[0] <= low and high <= self.support[1]):
            raise ValueError(f"likelihood {self.name!r} needs data in [{self.support[0]:g}, "
                             f"{self.support[1]:g}], but {data.name} has values in "
                             f"[{float(low):g}, {float(high):g}]")
        if off_level is not None:
            value, sample = off_level
            raise ValueError(f"likelihood {self.name!r} needs data on the {self.levels} levels "
                             f"k / {self.levels - 1} of [0, 1], but {data.name} has the value "
                             f"{value:.7g} in sample {sample}")

    def bits_per_dim(self, nll: torch.Tensor) -> torch.Tensor:
        """Convert per-sample nats to bits per dimension: nll / (D log 2)."""
        return nll / (self.dim * LOG_2)


class _ScaledLikelihood(Likelihood):
    """Shared machinery of a location-scale likelihood whose scale is fixed or learned."""

    scale_modes: ClassVar[tuple[str, ...]] = ("fixed", "learned")

    def __init__(self, input_dim: tuple[int, ...], sigma: float | str = 1.0,
                 sigma_per: str = "scalar"):
        super().__init__(input_dim)
        sigma = check_likelihood_options(self.name, sigma, sigma_per)
        self.mode = "fixed" if isinstance(sigma, float) else sigma
        self.sigma_per = sigma_per
        self.fixed_scale = sigma if isinstance(sigma, float) else None
        if self.mode == "learned":
            # log of the scale, so that the scale stays positive; starts at scale 1.
            self.log_scale_param = nn.Parameter(torch.zeros(_scale_shape(self.input_dim,
                                                                         sigma_per)))

    def extra_repr(self) -> str:
        scale = self.fixed_scale if self.mode == "fixed" else repr(self.mode)
        per = f", sigma_per={self.sigma_per!r}" if self.sigma_per != "scalar" else ""
        return f"input_dim={self.input_dim}, sigma={scale}{per}"

    def log_scale(self) -> torch.Tensor:
        """Log of the scale, broadcastable to one sample (shape (), (C, 1, ...) or input_dim)."""
        if self.mode == "learned":
            return _soft_floor(self.log_scale_param)
        return torch.tensor(math.log(self.fixed_scale), dtype=torch.float64)

    @property
    def sigma(self) -> torch.Tensor:
        """The scale in use (detached), broadcastable to one sample."""
        return self.log_scale().detach().exp()

    def _sum_log_scale(self, log_scale: torch.Tensor) -> torch.Tensor:
        """sum over the D dimensions of log scale_d (a scalar tensor)."""
        if log_scale.dim() == 0:
            return log_scale * self.dim
        return log_scale.expand(self.input_dim).sum()

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


@_register
class Gaussian(_ScaledLikelihood):
    """N(x; mu, sigma^2 I): the decoder outputs mu.

    -log p = 0.5 * sum_d (x_d - mu_d)^2 / sigma_d^2 + sum_d log sigma_d + (D / 2) log 2 pi.

    ``sigma`` may be

    * a positive number (default 1.0: half the sum of squared errors plus constants). A
      fixed sigma^2 plays the role of beta in a beta-VAE (Higgins et al. 2017): the loss
      0.5 * SSE / sigma^2 + KL is, times sigma^2, 0.5 * SSE + sigma^2 * KL, so sigma^2 = beta.
    * ``"learned"``: log sigma is a trained parameter, of shape () / (C, 1, ...) / input_dim
      for ``sigma_per`` = "scalar" / "channel" / "pixel", saved with the model. It is
      softly bounded below by :data:`SIGMA_MIN` (Rybkin et al. 2021 do the same), which
      keeps constant pixels from driving it to 0.
    * ``"optimal"``: the calibrated decoder of Rybkin, Daniilidis and Levine, "Simple and
      Effective VAE Training with Calibrated Decoders" (ICML 2021), where sigma^2 takes its
      maximum-likelihood value, the mean squared error, and the term becomes
      (D / 2) log MSE + (D / 2)(1 + log 2 pi): the "log MSE" loss. Rybkin et al. take the
      MSE over the batch; we take each sample's own optimum, sigma_i^2 = MSE_i =
      (1 / D) sum_d (x_d - mu_d)^2, so that a sample's term never depends on the other
      samples of its batch (no term may change when only the batch changes). MSE is floored
      at SIGMA_MIN^2. A density whose sigma depends on x is not normalized, so this form is
      used only in training mode; meanwhile a running average of the MSE (the
      dataset-level optimal sigma^2) is kept in the buffer ``running_mse``, and in eval mode
      (``not self.training``) sigma^2 is that fixed value: evaluation figures (ELBO,
      importance-sampled log p(x)) are then those of a proper density.
      With ``sigma_per="channel"`` or ``"pixel"`` there is one optimal sigma per channel or
      per dimension, sigma_d^2 = the mean squared error of dimension d over the training
      samples. A sample has no optimum of its own there (one value per dimension would set
      sigma_d = |x_d - mu_d|), so sigma_d^2 is ``running_mse``, the same running average
      of each training batch's mean squared error of d, in training and in eval mode
      alike: a batch's terms are computed at the estimate from the batches before it, which
      the batch then updates (``momentum`` as above). Each term is a proper density in
      training too and depends on no other sample of its batch; the estimate reaches the
      maximum-likelihood value of sigma whatever the learning rate (the mixed likelihood
      of tables uses it for its numbers).
    * ``"data"``: sigma^2 is the variance of the training data, computed once by
      :meth:`prepare` (the trainer calls it before training) and kept in the buffer
      ``data_variance``, saved with the model. The squared error is then divided by the
      data variance, as in DeepMind's VQ-VAE (van den Oord et al. 2017), whose
      mean((x - mu)^2) / var is this term times 2 / D up to a constant.
      ``sigma_per="channel"`` uses one variance per channel.
    """

    name = "gaussian"
    scale_modes = ("fixed", "learned", "optimal", "data")

    def __init__(self, input_dim: tuple[int, ...], sigma: float | str = 1.0,
                 sigma_per: str = "scalar", momentum: float = 0.01):
        super().__init__(input_dim, sigma, sigma_per)
        if self.mode == "optimal":
            if not 0 < momentum <= 1:
                raise ValueError(f"momentum must be in (0, 1], got {momentum}")
            self.momentum = momentum
            self.register_buffer("running_mse", torch.ones(_scale_shape(self.input_dim,
                                                                        sigma_per)))
            self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        elif self.mode == "data":
            shape = _scale_shape(self.input_dim, sigma_per)
            self.register_buffer("data_variance", torch.full(shape, math.nan))
            self._prepared = False
            self.register_load_state_dict_post_hook(_after_load)

    def log_scale(self) -> torch.Tensor:
        if self.mode == "optimal":
            return 0.5 * self.running_mse.clamp_min(SIGMA_MIN**2).log()
        if self.mode == "data":
            self._check_prepared()
            return 0.5 * self.data_variance.log()
        return super().log_scale()

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        squared = (x - params) ** 2
        if self.mode == "optimal" and self.training and self.sigma_per == "scalar":
            mse = _sum_per_sample(squared) / self.dim
            self._track(squared)
            var = mse.clamp_min(SIGMA_MIN**2)
            # the Gaussian NLL at sigma_i^2 = var_i: (D/2)(MSE_i/var_i + log var_i + log 2 pi)
            return 0.5 * self.dim * (mse / var + var.log() + LOG_2PI)
        if self.mode == "fixed":
            sigma = self.fixed_scale
            return (0.5 / sigma**2) * _sum_per_sample(squared) + self.dim * (
                math.log(sigma) + 0.5 * LOG_2PI)
        log_sigma = self.log_scale()
        weighted = _sum_per_sample(squared * torch.exp(-2.0 * log_sigma))
        if self.mode == "optimal" and self.training:  # one sigma per dimension: then update
            self._track(squared)
        return 0.5 * weighted + self._sum_log_scale(log_sigma) + 0.5 * self.dim * LOG_2PI

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        if self.mode == "fixed":
            return params + self.fixed_scale * torch.randn_like(params)
        return params + self.log_scale().exp() * torch.randn_like(params)

    def _track(self, squared: torch.Tensor) -> None:
        """Blend the batch's mean squared error into ``running_mse``
        (:func:`update_running_mean`): over everything, over samples and positions per
        channel, or over samples per dimension, as ``sigma_per`` says."""
        if self.sigma_per == "channel":
            dims = (0, *range(2, squared.dim()))
        else:
            dims = (0,) if self.sigma_per == "pixel" else tuple(range(squared.dim()))
        sums = squared.detach().sum(dims)
        update_running_mean(self.running_mse, self.num_updates, sums,
                            squared.numel() // sums.numel(), self.momentum)

    def _check_prepared(self) -> None:
        if not self._prepared:
            raise RuntimeError(
                "likelihood 'gaussian' with sigma='data' needs the variance of the training "
                "data: call model.prepare(train_data) first (Trainer.fit does it)")

    @torch.no_grad()
    def prepare(self, data: ArrayData, force: bool = False) -> None:
        """For sigma='data': compute the training-data variance (once; ``force`` redoes it).

        Two chunked passes (mean, then squared deviations), accumulated in float64; the
        population variance over all samples and dimensions (per channel with
        ``sigma_per="channel"``), floored at SIGMA_MIN^2.
        """
        if self.mode != "data" or (self._prepared and not force):
            return
        per_channel = self.sigma_per == "channel"
        dims = [0, *range(2, len(self.input_dim) + 1)] if per_channel else None
        count = len(data) * (self.dim // self.input_dim[0] if per_channel else self.dim)

        def batch_sum(values: torch.Tensor) -> torch.Tensor:
            acc = values.double() if values.device.type != "mps" else values
            return (acc.sum(dims) if dims is not None else acc.sum()).double().cpu()

        total = sum(batch_sum(x) for x in data.batches(4096))
        mean = total / count
        device = self.data_variance.device
        centre = (mean.float().view(-1, *[1] * (len(self.input_dim) - 1)) if per_channel
                  else mean.float()).to(device)
        squares = sum(batch_sum((x.to(device) - centre) ** 2) for x in data.batches(4096))
        variance = (squares / count).clamp_min(SIGMA_MIN**2)
        self.data_variance.copy_(variance.view(self.data_variance.shape))
        self._prepared = True

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (f", momentum={self.momentum}" if self.mode == "optimal" else "")


def _after_load(module: Gaussian, incompatible_keys: Any) -> None:
    """After load_state_dict: a model saved after ``prepare`` needs no ``prepare`` again."""
    module._prepared = bool(torch.isfinite(module.data_variance).all())


@_register
class Laplace(_ScaledLikelihood):
    """Laplace(x; mu, b), an L1 reconstruction: the decoder outputs mu.

    -log p = sum_d |x_d - mu_d| / b_d + sum_d log (2 b_d). ``sigma`` is the scale b: a
    positive number or ``"learned"`` (scalar, per channel or per pixel, like the Gaussian's).
    """

    name = "laplace"

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        absolute = (x - params).abs()
        if self.mode == "fixed":
            b = self.fixed_scale
            return _sum_per_sample(absolute) / b + self.dim * math.log(2 * b)
        log_b = self.log_scale()
        return (_sum_per_sample(absolute * torch.exp(-log_b)) + self._sum_log_scale(log_b)
                + self.dim * LOG_2)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        noise = torch.empty_like(params).exponential_() - torch.empty_like(params).exponential_()
        scale = self.fixed_scale if self.mode == "fixed" else self.log_scale().exp()
        return params + scale * noise


@_register
class Bernoulli(Likelihood):
    """Bernoulli on logits l, for binary data (or [0, 1] data read as probabilities).

    -log p = sum_d softplus(l_d) - x_d l_d, computed stably. For non-binary x in [0, 1] this
    is a cross-entropy, not a normalized density on [0, 1] (its "likelihood" is not
    comparable with a density's): see ``continuous_bernoulli`` for that.
    """

    name = "bernoulli"
    support = (0.0, 1.0)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _sum_per_sample(F.binary_cross_entropy_with_logits(params, x, reduction="none"))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params))


def _log_cb_normalizer(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(l).

    C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) (2 at lambda = 1/2). With
    1 - 2 lambda = -tanh(l / 2) and atanh(1 - 2 lambda) = -l / 2 this is C = 2u / tanh(u),
    u = l / 2, which has no cancellation; near u = 0 (0 / 0) we use the series
    log(u / tanh u) = u^2 / 3 - 7 u^4 / 90 + O(u^6).
    """
    u = 0.5 * logits
    small = u.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(u), u)
    direct = torch.log(safe / torch.tanh(safe))
    u2 = u * u
    series = u2 / 3.0 - 7.0 * u2 * u2 / 90.0
    return LOG_2 + torch.where(small, series, direct)


def _langevin(u: torch.Tensor) -> torch.Tensor:
    """coth(u) - 1 / u, with its series u/3 - u^3/45 + 2u^5/945 - u^7/4725 + 2u^9/93555
    for |u| < 0.5 (where the difference of two large numbers loses precision)."""
    small = u.abs() < 0.5
    safe = torch.where(small, torch.ones_like(u), u)
    direct = 1.0 / torch.tanh(safe) - 1.0 / safe
    u2 = u * u
    series = u * (1 / 3 + u2 * (-1 / 45 + u2 * (2 / 945 + u2 * (-1 / 4725 + u2 * 2 / 93555))))
    return torch.where(small, series, direct)


@_register
class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli on logits (Loaiza-Ganem and Cunningham, "The continuous
    Bernoulli: fixing a pervasive error in variational autoencoders", NeurIPS 2019).

    p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x) on [0, 1]: the Bernoulli
    cross-entropy plus the normalizing constant, so it is a proper density for x in [0, 1].
    -log p = sum_d [softplus(l_d) - x_d l_d - log C(lambda_d)]. The mean returned for
    reconstructions is E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)) (1/2 at
    lambda = 1/2), not lambda: with u = l / 2, E[x] = 1/2 + (coth u - 1/u) / 2.
    """

    name = "continuous_bernoulli"
    support = (0.0, 1.0)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        cross_entropy = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return _sum_per_sample(cross_entropy - _log_cb_normalizer(params))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.5 * _langevin(0.5 * params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """Inverse CDF: F(x) = expm1(l x) / expm1(l), so x = log1p(u expm1(l)) / l. It is
        evaluated at -|l| (no overflow) and mirrored, since 1 - X ~ CB(-l) when X ~ CB(l)."""
        u = torch.rand_like(params)
        a = -params.abs()
        tiny = a > -1e-4
        safe = torch.where(tiny, -torch.ones_like(a), a)
        y = torch.where(tiny, u, torch.log1p(u * torch.expm1(safe)) / safe)
        return torch.where(params > 0, 1.0 - y, y).clamp(0.0, 1.0)


@_register
class DiscretizedLogistic(Likelihood):
    """Discretized logistic over the 256 levels k / 255 of 8-bit data in [0, 1] (Salimans,
    Karpathy, Chen and Kingma, "PixelCNN++", ICLR 2017; one component).

    The decoder outputs, per dimension, a mean mu and a log-scale (``param_shape`` is
    (2C, ...) for input_dim (C, ...): the first C channels are the means). Level k gets the
    probability of the logistic on its bin [(k - 1/2) / 255, (k + 1/2) / 255]; the edge
    levels 0 and 255 also take the tails, so the 256 probabilities sum to one and the NLL is
    a true discrete log-probability (bits/dim comparable with the literature). With
    a, b the standardized upper and lower bin edges,
    log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(-expm1(b - a)),
    an exact identity with no cancellation in either tail, so the interior bins need no
    fallback to the density at the bin centre. Data are read as the nearest level
    round(255 x); data on other levels (e.g. scikit-learn's 17-level digits) are refused by
    :meth:`check_support` before training.
    The log-scale is softly bounded below at -7 - log 2 (Salimans et al. clamp it at -7 on
    their [-1, 1] scale).
    """

    name = "discretized_logistic"
    support = (0.0, 1.0)
    levels: ClassVar[int] = 256
    log_scale_min: ClassVar[float] = -7.0 - LOG_2

    @property
    def param_shape(self) -> tuple[int, ...]:
        return (2 * self.input_dim[0], *self.input_dim[1:])

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = params.chunk(2, dim=1)
        return mu, _soft_floor(raw, self.log_scale_min)

    def log_probs(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log P(level of x_d) per dimension, shape of x."""
        mu, log_s = self._split(params)
        top = self.levels - 1
        k = torch.round(x * top).clamp(0, top)
        inv_s = torch.exp(-log_s)
        centred = k / top - mu
        half = 0.5 / top
        upper = (centred + half) * inv_s
        lower = (centred - half) * inv_s
        log_cdf_upper = F.logsigmoid(upper)
        log_sf_lower = F.logsigmoid(-lower)
        interior = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(lower - upper))
        return torch.where(k <= 0, log_cdf_upper, torch.where(k >= top, log_sf_lower, interior))

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -_sum_per_sample(self.log_probs(params, x))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[clamp(Y, 0, 1)] for Y ~ Logistic(mu, s), in closed form:
        s (softplus(mu / s) - softplus((mu - 1) / s)). The 256-level variable is
        round(255 clamp(Y, 0, 1)) / 255, so this differs from its mean by at most half a
        level (1 / 510)."""
        mu, log_s = self._split(params)
        s = log_s.exp()
        return s * (F.softplus(mu / s) - F.softplus((mu - 1.0) / s))

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        mu, log_s = self._split(params)
        u = torch.rand_like(mu).clamp(1e-6, 1 - 1e-6)
        y = mu + log_s.exp() * (torch.log(u) - torch.log1p(-u))
        top = self.levels - 1
        return torch.round(y.clamp(0.0, 1.0) * top) / top


def build_likelihood(
    name: str, input_dim: tuple[int, ...], sigma: float | str = 1.0, sigma_per: str = "scalar",
    **kwargs: Any,
) -> Likelihood:
    """Build the likelihood named in a model config (validating sigma and sigma_per);
    ``kwargs``: what a likelihood built from the data needs (``mixed``: ``table``)."""
    sigma = check_likelihood_options(name, sigma, sigma_per)
    cls = _LIKELIHOODS[name]
    if not cls.builds_from_data:
        cls.check_kwargs(kwargs)
    if cls.scale_modes:
        return cls(input_dim, sigma=sigma, sigma_per=sigma_per)
    return cls(input_dim, **kwargs)


# The likelihoods built from a description of the data register themselves on import.
from vaebench import tabular_likelihood  # noqa: E402, F401

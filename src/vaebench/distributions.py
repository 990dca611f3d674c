"""Posteriors q(z | x) and priors p(z), in the style of ``torch.distributions``.

Log-densities are per sample, summed over latent dimensions: shape (B,) for a batch.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from numpy.polynomial import Polynomial
from numpy.polynomial.legendre import leggauss

from vaebench.likelihoods import LOG_2PI
from vaebench.manifolds import MIN_NORM, PoincareBall, log_sinhc


class Located:
    """A law about a location ``loc`` (..., m): ``mean`` is ``loc`` (the mean direction of a
    vMF, the Fréchet mean of a normal law on the ball), ``dim`` is m."""

    loc: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def dim(self) -> int:
        return self.loc.shape[-1]


class DiagonalGaussian:
    """N(z; mean, diag(exp(log_var))), reparameterized (Kingma and Welling 2014)."""

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor):
        self.mean = mean
        self.log_var = log_var

    @classmethod
    def from_params(cls, params: torch.Tensor) -> DiagonalGaussian:
        """Split an encoder output of 2 * latent_dim features into mean and log-variance."""
        mean, log_var = params.chunk(2, dim=1)
        return cls(mean, log_var)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.log_var)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        eps = torch.randn(sample_shape + self.mean.shape, dtype=self.mean.dtype,
                          device=self.mean.device)
        return self.mean + eps * self.std

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        per_dim = -0.5 * ((z - self.mean) ** 2 / self.log_var.exp() + self.log_var + LOG_2PI)
        return per_dim.flatten(-self.mean.dim() + 1).sum(-1)

    def kl_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) = 0.5 * sum (mean^2 + var - 1 - log var), per sample."""
        per_dim = 0.5 * (self.mean**2 + self.log_var.exp() - 1.0 - self.log_var)
        return per_dim.flatten(1).sum(1)


class PointMass:
    """A deterministic code: the posterior of a plain autoencoder."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.mean.expand(sample_shape + self.mean.shape)


class StandardNormal:
    """The prior N(0, I) over a latent of shape ``event_shape``."""

    def __init__(self, event_shape: tuple[int, ...]):
        self.event_shape = tuple(event_shape)

    def sample(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn((n, *self.event_shape), device=device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        d = math.prod(self.event_shape)
        squared = (z**2).flatten(z.dim() - len(self.event_shape)).sum(-1)
        return -0.5 * squared - 0.5 * d * LOG_2PI


# --- The hypersphere: von Mises-Fisher posterior, uniform prior (Davidson et al. 2018) ------

#: Orders from which the uniform asymptotic expansion is used; lower orders are reached by
#: the backward recurrence of the ratio. At v >= 50 the first omitted term, U_7(p) / v^7, is
#: below 1e-13 (max |U_7| on [0, 1] is 0.065).
_DEBYE_MIN_ORDER = 50
_DEBYE_TERMS = 7


def _debye_polynomials(count: int) -> list[Polynomial]:
    """U_0..U_{count-1} of the uniform asymptotic expansion, by the recursion
    U_{k+1}(p) = p^2 (1 - p^2) U_k'(p) / 2 + (1/8) int_0^p (1 - 5 t^2) U_k(t) dt (DLMF 10.41.9)."""
    p = Polynomial([0.0, 1.0])
    polys = [Polynomial([1.0])]
    for _ in range(count - 1):
        u = polys[-1]
        polys.append(0.5 * p**2 * (1 - p**2) * u.deriv() + ((1 - 5 * p**2) * u).integ() / 8)
    return polys


_DEBYE_POLYNOMIALS = _debye_polynomials(_DEBYE_TERMS)


def _debye_log_series(v: float, p: torch.Tensor) -> torch.Tensor:
    """log sum_k U_k(p) / v^k, the correction factor of DLMF 10.41.3, by Horner's rule."""
    poly = sum((u / v**k for k, u in enumerate(_DEBYE_POLYNOMIALS)), Polynomial([0.0]))
    total = torch.zeros_like(p)
    for coefficient in poly.coef[::-1]:
        total = total * p + float(coefficient)
    return torch.log(total)


def _debye_log_iv(v: float, x: torch.Tensor) -> torch.Tensor:
    """log I_v(x) for large v by DLMF 10.41.3 with z = x / v, written with R = sqrt(v^2 + x^2):
    R + v log(x / (v + R)) - log(2 pi R) / 2 + log sum_k U_k(v / R) / v^k."""
    root = torch.sqrt(x * x + v * v)
    return (root + v * torch.log(x / (v + root)) - 0.5 * torch.log(2 * math.pi * root)
            + _debye_log_series(v, v / root))


def _debye_log_ratio(v: float, x: torch.Tensor) -> torch.Tensor:
    """log I_{v+1}(x) - log I_v(x) from the terms of :func:`_debye_log_iv`, differenced in
    closed form: a plain difference loses ~x * 1e-16, which matters in 1 - A_v(x) at large x."""
    root, next_root = torch.sqrt(x * x + v * v), torch.sqrt(x * x + (v + 1) ** 2)
    root_step = (2 * v + 1) / (root + next_root)
    return (root_step + torch.log(x / (v + 1 + next_root))
            - v * torch.log1p((1 + root_step) / (v + root)) - 0.5 * torch.log1p(root_step / root)
            + _debye_log_series(v + 1, (v + 1) / next_root) - _debye_log_series(v, v / root))


def _log_iv_and_ratio(v: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log I_v(x), I_{v+1}(x) / I_v(x)) for float64 x: the expansion at order v + n >= 50,
    then n steps of the backward recurrence r_{v-1} = 1 / (2v / x + r_v) (DLMF 10.29.1,
    stable downwards), with log I_v = log I_{v+n} - sum_j log r_{v+j}."""
    steps = max(0, math.ceil(_DEBYE_MIN_ORDER - v))
    top = v + steps
    log_iv, ratio = _debye_log_iv(top, x), torch.exp(_debye_log_ratio(top, x))
    for j in reversed(range(steps)):
        ratio = 1 / (2 * (v + j + 1) / x + ratio)
        log_iv = log_iv - torch.log(ratio)
    return log_iv, ratio


class _BesselLogAndRatio(torch.autograd.Function):
    """(log I_v(x), A_v(x)), computed in float64, with the derivatives (DLMF 10.29.2)
    d/dx log I_v = A_v + v / x and dA_v/dx = 1 - A_v^2 - (2v + 1) A_v / x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, v: float) -> tuple[torch.Tensor, torch.Tensor]:
        log_iv, ratio = _log_iv_and_ratio(v, x.double())
        ctx.v = v
        ctx.save_for_backward(x, ratio)
        return log_iv.to(x.dtype), ratio.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_log: torch.Tensor,
                 grad_ratio: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, ratio = ctx.saved_tensors
        v, x64 = ctx.v, x.double()
        d_log = ratio + v / x64
        d_ratio = 1 - ratio**2 - (2 * v + 1) * ratio / x64
        return (grad_log * d_log + grad_ratio * d_ratio).to(x.dtype), None


def _bessel_log_and_ratio(v: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log I_v(x), A_v(x)) for an order v >= 0, differentiable in x."""
    if v < 0:
        raise ValueError(f"the order v of the Bessel function must be >= 0, got {v}")
    return _BesselLogAndRatio.apply(x, float(v))


def log_bessel_iv(v: float, x: torch.Tensor) -> torch.Tensor:
    """log I_v(x), the modified Bessel function of the first kind, elementwise for an order
    v >= 0 and x > 0, differentiable in x. Computed in float64 without overflow or underflow:
    for v up to 600 and x from 1e-6 to 1e5 its error is below 1e-12 relative (absolute where
    |log I_v(x)| < 1), i.e. I_v(x) itself to 1e-12 relative."""
    return _bessel_log_and_ratio(v, x)[0]


def bessel_ratio(v: float, x: torch.Tensor) -> torch.Tensor:
    """A_v(x) = I_{v+1}(x) / I_v(x) for v >= 0 and x > 0 (relative error below 1e-13);
    differentiable in x. See :func:`log_bessel_iv`."""
    return _bessel_log_and_ratio(v, x)[1]


def log_sphere_area(dim: int) -> float:
    """log of the area of the unit sphere S^(dim-1) in R^dim, log(2 pi^(dim/2) / Gamma(dim/2))."""
    return math.log(2) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


class HypersphericalUniform:
    """The uniform prior on the unit sphere S^(dim-1) of R^dim (Davidson et al. 2018, Sec. 3)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.event_shape = (dim,)

    def sample(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """n points: normalized standard Gaussian vectors, uniform by rotational symmetry."""
        return F.normalize(torch.randn(n, self.dim, device=device), dim=-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """-log area(S^(dim-1)) for each point, shape z.shape[:-1]."""
        return torch.full(z.shape[:-1], -log_sphere_area(self.dim), dtype=z.dtype,
                          device=z.device)


#: Wood's test accepts at least 65% of proposals for any m and kappa: 8 per round leave a
#: draw unaccepted with probability below 3e-4 per round, and 30 rounds never.
_WOOD_PROPOSALS = 8
_WOOD_MAX_ROUNDS = 30


def _reflect_e1_onto(z: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """Apply the Householder reflection H = I - 2 u u^T / (u^T u), u = e_1 - mu, which maps
    e_1 onto mu (Davidson et al. 2018, Algorithm 3), to z of shape (..., m)."""
    u = -loc.clone()
    u[..., 0] += 1
    squared_norm = (u * u).sum(-1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
    return z - 2 * u * (u * z).sum(-1, keepdim=True) / squared_norm


class VonMisesFisher(Located):
    """vMF(z; mu, kappa) = C_m(kappa) exp(kappa mu^T z) on S^(m-1), with
    log C_m(kappa) = (m/2 - 1) log kappa - (m/2) log 2 pi - log I_{m/2-1}(kappa)
    (Davidson et al. 2018, "Hyperspherical Variational Auto-Encoders", Eq. 3-4).

    ``loc``: unit mean directions, shape (..., m); ``concentration``: kappa > 0, shape (...)
    or (..., 1). ``mean`` is the mean direction mu (the mode), the natural code of x; the
    expectation E[z] = A(kappa) mu, A = I_{m/2} / I_{m/2-1}, is shorter. Normalizers and
    Bessel functions are computed in float64, results returned in ``loc``'s dtype.
    """

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor):
        if concentration.dim() == loc.dim():
            concentration = concentration.squeeze(-1)
        self.loc = loc
        self.concentration = concentration

    @property
    def _order(self) -> float:
        """v = m/2 - 1, the order of the Bessel function in C_m."""
        return self.dim / 2 - 1

    def _log_density_at_mode(self, log_iv: torch.Tensor) -> torch.Tensor:
        """log C_m(kappa) + kappa in float64, from log I_{m/2-1}(kappa) in float64; with
        log I_v(kappa) - kappa it stays of the order of log kappa."""
        kappa = self.concentration.double()
        return self._order * torch.log(kappa) - 0.5 * self.dim * LOG_2PI - (log_iv - kappa)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log C_m(kappa) + kappa mu^T z for unit z (..., m), shape z.shape[:-1]; written with
        1 - mu^T z = |z - mu|^2 / 2, which keeps its precision near the mode."""
        log_iv = log_bessel_iv(self._order, self.concentration.double())
        half_gap = 0.5 * ((z - self.loc) ** 2).sum(-1)
        return self._log_density_at_mode(log_iv).to(z.dtype) - self.concentration * half_gap

    def _entropy64(self) -> torch.Tensor:
        """H = -log C_m(kappa) - kappa A(kappa), in float64 (Davidson et al. 2018, App. B),
        as kappa (1 - A(kappa)) - (log C_m(kappa) + kappa)."""
        kappa = self.concentration.double()
        log_iv, ratio = _bessel_log_and_ratio(self._order, kappa)
        return kappa * (1 - ratio) - self._log_density_at_mode(log_iv)  # E[1 - mu^T z] = 1 - A

    def entropy(self) -> torch.Tensor:
        return self._entropy64().to(self.loc.dtype)

    def kl_uniform(self) -> torch.Tensor:
        """KL(q || U(S^(m-1))) = kappa A(kappa) + log C_m(kappa) + log area(S^(m-1)) =
        log area - H(q), per sample (Davidson et al. 2018, Sec. 3.2 and Appendix B)."""
        return (log_sphere_area(self.dim) - self._entropy64()).to(self.loc.dtype)

    def _wood_b(self) -> torch.Tensor:
        """b = (-2 kappa + sqrt(4 kappa^2 + (m-1)^2)) / (m-1) of Wood (1994) (Davidson et al.
        2018, Algorithm 2), as (m-1) / (2 kappa + sqrt(...)) to avoid cancellation."""
        kappa, m1 = self.concentration.double(), self.dim - 1
        return m1 / (2 * kappa + torch.sqrt(4 * kappa**2 + m1**2))

    def _accepted_proposals(self, shape: torch.Size, b: torch.Tensor) -> torch.Tensor:
        """Proposals eps ~ Beta((m-1)/2, (m-1)/2) accepted by Wood's test
        (m-1) log t - t + d >= log u, t = 2ab / (1 - (1-b) eps) (Algorithm 2): the first
        accepted of each draw's proposals, drawn in rounds (one host sync per round)."""
        m1 = self.dim - 1
        ab = m1 * (1 + b) / 4  # a b, as a = (m-1 + 2 kappa + sqrt(4 kappa^2 + (m-1)^2)) / 4
        d = 4 * ab / (1 + b) - m1 * math.log(m1)
        half = torch.tensor(m1 / 2, dtype=torch.float64, device=b.device)
        proposal = torch.distributions.Beta(half, half)
        eps = torch.zeros(shape, dtype=torch.float64, device=b.device)
        done = torch.zeros(shape, dtype=torch.bool, device=b.device)
        for _ in range(_WOOD_MAX_ROUNDS):
            draws = proposal.sample((_WOOD_PROPOSALS, *shape))
            t = 2 * ab / (1 - (1 - b) * draws)
            accept = m1 * torch.log(t) - t + d >= torch.log(torch.rand_like(draws))
            first = draws.gather(0, accept.byte().argmax(0, keepdim=True)).squeeze(0)
            eps = torch.where(done, eps, first)
            done = done | accept.any(0)
            if bool(done.all()):
                return eps
        raise RuntimeError("Wood's rejection sampler accepted no proposal in "
                           f"{_WOOD_MAX_ROUNDS * _WOOD_PROPOSALS} tries")

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Draws of shape sample_shape + loc.shape (Davidson et al. 2018, Algorithm 1):
        w = mu^T z = 1 - 2 b eps / (1 - (1-b) eps) from an accepted proposal eps, a uniform
        direction v on S^(m-2), and the reflection of (w, sqrt(1 - w^2) v) onto mu. Gradients
        reach kappa through w's transformation of eps (the paper's reparameterization term
        g_rep, after Naesseth et al. 2017) and mu through the reflection."""
        shape = torch.Size(sample_shape) + self.concentration.shape
        b = self._wood_b()
        eps = self._accepted_proposals(shape, b.detach())
        denom = 1 - (1 - b) * eps
        w = 1 - 2 * b * eps / denom
        radius = 2 * torch.sqrt(b * eps * (1 - eps)) / denom  # sqrt(1 - w^2), no cancellation
        noise = torch.randn(*shape, self.dim - 1, dtype=torch.float64, device=b.device)
        z = torch.cat([w.unsqueeze(-1), radius.unsqueeze(-1) * F.normalize(noise, dim=-1)], -1)
        return _reflect_e1_onto(z, self.loc.double()).to(self.loc.dtype)


# --- The Poincaré ball: wrapped and Riemannian normals (Mathieu et al. 2019) ----------------

#: Gauss-Legendre rule for the radial CDF of the Riemannian normal, on a window of at most
#: about 17 scales around the mode, where the integrand is smooth and log-concave.
_GAUSS_LEGENDRE = tuple(torch.from_numpy(a) for a in leggauss(64))
_MODE_NEWTON_STEPS = 30
#: The Gaussian envelope of the radius accepts half of the proposals in d = 1 and from 65%
#: (small scales) to 100% (large) for d >= 2, so 100 rounds leave a draw unaccepted with
#: probability below 1e-30.
_RADIUS_MAX_ROUNDS = 100


@functools.cache
def _log_sinhc_power_series(n: int, terms: int) -> torch.Tensor:
    """log of the first ``terms`` coefficients of (sinh(x) / x)^n in powers of x^2 (float64).
    The coefficients are positive, so they are raised to the n-th power in log space by
    repeated squaring, with neither cancellation nor underflow."""
    j = torch.arange(terms, dtype=torch.float64)
    base = -torch.lgamma(2 * j + 2)  # sinh(x) / x = sum_j x^(2j) / (2j + 1)!
    power = torch.full((terms,), -math.inf, dtype=torch.float64)
    power[0] = 0.0
    while n:
        if n & 1:
            power = _log_convolve(power, base)
        n >>= 1
        if n:
            base = _log_convolve(base, base)
    return power


def _log_convolve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log of the first len(a) coefficients of the product of two series, from the logs of
    their coefficients."""
    index = torch.arange(len(a))
    lag = index[:, None] - index[None, :]
    pairs = (a[None, :] + b[lag.clamp_min(0)]).masked_fill(lag < 0, -math.inf)
    return torch.logsumexp(pairs, dim=1)


class HyperbolicRadius:
    """The law of r = d_c(loc, z) when z follows a Riemannian normal of scale sigma on the
    d-dimensional ball of curvature -c: density exp(-r^2 / (2 sigma^2)) sinh(sqrt(c) r)^(d-1)
    / I(sigma) on r > 0 (Mathieu et al. 2019, Appendix). Computed in float64; ``sigma`` and
    ``r`` are tensors that broadcast."""

    def __init__(self, dim: int, c: float):
        self.n = dim - 1
        self.sqrt_c = math.sqrt(c)

    def log_density(self, r: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """-r^2 / (2 sigma^2) + (d - 1) log sinh(sqrt(c) r), unnormalized, for r > 0."""
        quadratic = -0.5 * (r / sigma) ** 2
        if not self.n:
            return quadratic
        x = self.sqrt_c * r
        return quadratic + self.n * (log_sinhc(x) + torch.log(x))

    def log_mass(self, sigma: torch.Tensor) -> torch.Tensor:
        """log I(sigma), I = int_0^inf exp(-r^2 / (2 sigma^2)) sinh(sqrt(c) r)^(d-1) dr, exact in
        every dimension: the paper's alternating sum of erfc terms where
        (d - 1) sqrt(c) sigma >= 2 sqrt(d - 1) + 4, and below, where that sum cancels
        catastrophically, the series of :meth:`_log_mass_series`, whose terms are positive."""
        limit = 2 * math.sqrt(self.n) + 4
        sigma_at_limit = limit / (max(self.n, 1) * self.sqrt_c)
        small = self.n * self.sqrt_c * sigma < limit
        series = self._log_mass_series(torch.where(small, sigma, sigma_at_limit))
        alternating = self._log_mass_erfc(torch.where(small, sigma_at_limit, sigma))
        return torch.where(small, series, alternating)

    def _log_mass_erfc(self, sigma: torch.Tensor) -> torch.Tensor:
        """sinh^n expanded binomially: I = 2^-n sqrt(2 pi) sigma sum_k (-1)^k C(n, k)
        exp(b_k^2 sigma^2 / 2) Phi(b_k sigma), b_k = (n - 2k) sqrt(c) (Mathieu et al. 2019,
        Appendix; Phi(x) = erfc(-x / sqrt(2)) / 2), summed with signs in log space."""
        k = torch.arange(self.n + 1, dtype=torch.float64, device=sigma.device)
        b = (self.n - 2 * k) * self.sqrt_c
        log_binomial = math.lgamma(self.n + 1) - torch.lgamma(k + 1) - torch.lgamma(self.n - k + 1)
        scaled = b * sigma.unsqueeze(-1)
        log_terms = log_binomial + 0.5 * scaled**2 + torch.special.log_ndtr(scaled)
        top = log_terms.max(-1, keepdim=True).values.detach()
        total = ((-1.0) ** k * torch.exp(log_terms - top)).sum(-1)
        return (top.squeeze(-1) + torch.log(total) + torch.log(sigma) + 0.5 * LOG_2PI
                - self.n * math.log(2))

    def _log_mass_series(self, sigma: torch.Tensor) -> torch.Tensor:
        """sinh(x)^n = sum_m s_m x^(n + 2m) with s_m > 0 (:func:`_log_sinhc_power_series`), and
        int_0^inf exp(-r^2 / (2 sigma^2)) (sqrt(c) r)^p dr = sigma a^p 2^((p-1)/2)
        Gamma((p+1)/2), a = sqrt(c) sigma. Used for n a below 2 sqrt(n) + 4, where the terms
        beyond m = 1.5 (2 sqrt(n) + 4)^2 + n + 60 are negligible."""
        terms = int(1.5 * (2 * math.sqrt(self.n) + 4) ** 2) + self.n + 60
        log_s = _log_sinhc_power_series(self.n, terms).to(sigma.device)
        p = self.n + 2 * torch.arange(terms, dtype=torch.float64, device=sigma.device)
        log_a = torch.log(self.sqrt_c * sigma).unsqueeze(-1)
        log_terms = log_s + p * log_a + 0.5 * (p - 1) * math.log(2) + torch.lgamma((p + 1) / 2)
        return torch.log(sigma) + torch.logsumexp(log_terms, -1)

    @torch.no_grad()
    def mode(self, sigma: torch.Tensor) -> torch.Tensor:
        """The mode m: the root of h(r) = r / sigma^2 - n sqrt(c) coth(sqrt(c) r), by Newton's
        method from the lower bound max(sigma sqrt(n), n sigma^2 sqrt(c)). h is increasing
        and concave, so the iterates rise monotonically to m (less than twice the bound)."""
        if not self.n:
            return torch.zeros_like(sigma)
        r = torch.maximum(sigma * math.sqrt(self.n), self.n * self.sqrt_c * sigma**2)
        for _ in range(_MODE_NEWTON_STEPS):
            x = self.sqrt_c * r
            h = r / sigma**2 - self.n * self.sqrt_c / torch.tanh(x)
            slope = 1 / sigma**2 + self.n * self.sqrt_c**2 / torch.sinh(x) ** 2
            r = r - h / slope
        return r

    def rsample(self, sigma: torch.Tensor) -> torch.Tensor:
        """One radius per entry of ``sigma`` (:meth:`draw`), with the implicit
        reparameterization gradient dr/dsigma = -(dF(r; sigma)/dsigma) / p(r; sigma), F the
        CDF (Figurnov, Mohamed and Mnih 2018, "Implicit Reparameterization Gradients",
        Eq. 5)."""
        r = self.draw(sigma.detach())
        if not sigma.requires_grad:
            return r
        log_mass = self.log_mass(sigma)
        cdf = torch.exp(self._log_partial_mass(r, sigma) - log_mass)
        density = torch.exp(self.log_density(r, sigma) - log_mass).detach()
        return r + (cdf.detach() - cdf) / density

    @torch.no_grad()
    def draw(self, sigma: torch.Tensor) -> torch.Tensor:
        """Rejection sampling under the envelope exp(log p(m) - (r - m)^2 / (2 sigma^2)) at the
        mode m: the log-density's second derivative is -1/sigma^2 - n c / sinh^2(sqrt(c) r)
        <= -1/sigma^2, so the envelope lies above the density everywhere."""
        mode = self.mode(sigma)
        peak = self.log_density(mode.clamp_min(MIN_NORM), sigma)
        radius = torch.zeros_like(sigma)
        pending = torch.ones_like(sigma, dtype=torch.bool)
        for _ in range(_RADIUS_MAX_ROUNDS):
            proposal = mode + sigma * torch.randn_like(sigma)
            gap = self.log_density(proposal.clamp_min(MIN_NORM), sigma) - peak \
                + 0.5 * ((proposal - mode) / sigma) ** 2
            accept = pending & (proposal > 0) & (torch.log(torch.rand_like(sigma)) < gap)
            radius = torch.where(accept, proposal, radius)
            pending &= ~accept
            if not pending.any():
                return radius
        raise RuntimeError(f"the radius sampler accepted no proposal in {_RADIUS_MAX_ROUNDS} "
                           "rounds")

    def _log_partial_mass(self, r: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log int_lo^r of the unnormalized density by Gauss-Legendre, lo = max(m - 10 sigma, 0)
        (or r / 2 if smaller): by the envelope of :meth:`draw`, the mass below m - 10 sigma
        is under 1e-22 of the total."""
        lo = torch.minimum((self.mode(sigma) - 10 * sigma).clamp_min(0), r / 2)
        nodes, weights = (t.to(r.device) for t in _GAUSS_LEGENDRE)
        half = ((r - lo) / 2).unsqueeze(-1)
        points = lo.unsqueeze(-1) + half * (nodes + 1)
        log_values = self.log_density(points, sigma.unsqueeze(-1)) + torch.log(weights)
        return torch.log(half.squeeze(-1)) + torch.logsumexp(log_values, -1)


class _BallNormal(Located):
    """A normal law on the ball in the normal coordinates of ``loc``: z = exp_loc(PT_{0->loc}(
    v / lambda_0)) for v in an orthonormal frame of the tangent space at 0 (lambda_0 = 2, so
    v / 2 has Riemannian norm |v|) transported to loc; then |v| = d_c(loc, z)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, ball: PoincareBall):
        self.loc = loc
        self.scale = scale
        self.ball = ball

    def _wrap(self, v: torch.Tensor) -> torch.Tensor:
        return self.ball.expmap(self.loc, self.ball.transport_from_origin(self.loc, v / 2))

    def _unwrap(self, z: torch.Tensor) -> torch.Tensor:
        """v of the point z: 2 PT_{loc->0}(log_loc(z)) = lambda_loc log_loc(z)."""
        return 2 * self.ball.transport_to_origin(self.loc, self.ball.logmap(self.loc, z))


class WrappedNormal(_BallNormal):
    """The wrapped normal on the Poincaré ball (Mathieu et al. 2019, Sec. 3.1; Nagano et al.
    2019): v ~ N(0, diag(scale^2)) in the tangent space at 0, transported to ``loc`` and
    mapped by exp_loc (see :class:`_BallNormal`).

    ``loc``: points of shape (..., d); ``scale``: shape (..., d) or (..., 1). Densities are
    with respect to the ball's Riemannian volume. By the change of variables v -> z, whose
    volume factor in normal coordinates is (sinh(sqrt(c) r) / (sqrt(c) r))^(d-1),
    log p(z) = log N(lambda_loc log_loc(z); 0, diag(scale^2))
    - (d - 1) log(sinh(sqrt(c) r) / (sqrt(c) r)), r = d_c(loc, z).
    """

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Reparameterized draws of shape sample_shape + loc.shape."""
        noise = torch.randn(tuple(sample_shape) + self.loc.shape, dtype=self.loc.dtype,
                            device=self.loc.device)
        return self._wrap(self.scale * noise)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for z of shape (..., d), shape (...,)."""
        v = self._unwrap(z)
        log_scale = torch.broadcast_to(torch.log(self.scale), v.shape)
        log_normal = -0.5 * ((v / self.scale) ** 2 + 2 * log_scale + LOG_2PI).sum(-1)
        radius = v.norm(dim=-1)
        return log_normal - (self.dim - 1) * log_sinhc(self.ball.sqrt_c * radius)


class RiemannianNormal(_BallNormal):
    """The Riemannian normal on the Poincaré ball, the maximum-entropy law of given Fréchet
    mean and dispersion (Mathieu et al. 2019, Sec. 3.1 and Appendix):
    p(z) = exp(-d_c(loc, z)^2 / (2 scale^2)) / Z(scale), with
    Z = area(S^(d-1)) c^(-(d-1)/2) I(scale) (:class:`HyperbolicRadius`).

    ``loc``: points of shape (..., d); ``scale``: isotropic, shape (..., 1). A draw is
    v = r u with u uniform on the unit sphere and r from the radial law by rejection, mapped
    as in :class:`_BallNormal`; gradients reach ``scale`` by implicit reparameterization of r.
    """

    @property
    def radius_law(self) -> HyperbolicRadius:
        return HyperbolicRadius(self.dim, self.ball.c)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Draws of shape sample_shape + loc.shape."""
        shape = tuple(sample_shape) + self.loc.shape
        direction = F.normalize(torch.randn(shape, dtype=self.loc.dtype,
                                            device=self.loc.device), dim=-1)
        sigma = self.scale.double().expand(*shape[:-1], 1)
        radius = self.radius_law.rsample(sigma).to(self.loc.dtype)
        return self._wrap(radius * direction)

    def log_normalizer(self) -> torch.Tensor:
        """log Z(scale), shape scale.shape[:-1]."""
        sigma = self.scale.squeeze(-1).double()
        log_z = log_sphere_area(self.dim) - 0.5 * (self.dim - 1) * math.log(self.ball.c) \
            + self.radius_law.log_mass(sigma)
        return log_z.to(self.scale.dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for z of shape (..., d), shape (...,)."""
        distance = self.ball.distance(self.loc, z)
        return -0.5 * (distance / self.scale.squeeze(-1)) ** 2 - self.log_normalizer()


class BallPrior:
    """p(z): a wrapped or Riemannian normal (``family``) at the origin of ``ball`` with unit
    scale (Mathieu et al. 2019, Sec. 3.1)."""

    def __init__(self, family: type[_BallNormal], ball: PoincareBall, dim: int,
                 dtype: torch.dtype | None = None):
        self.family = family
        self.ball = ball
        self.event_shape = (dim,)
        self.dtype = dtype  # of its samples; None: torch's default

    def _at_origin(self, device: torch.device | str, dtype: torch.dtype) -> _BallNormal:
        return self.family(torch.zeros(self.event_shape, dtype=dtype, device=device),
                           torch.ones(1, dtype=dtype, device=device), self.ball)

    def sample(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return self._at_origin(device, self.dtype or torch.get_default_dtype()).rsample((n,))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for z of shape (..., d), shape (...,)."""
        return self._at_origin(z.device, z.dtype).log_prob(z)

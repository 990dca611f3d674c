"""Riemannian manifolds for latent codes: the Poincaré ball.

Formulas from Ganea, Bécigneul and Hofmann 2018, "Hyperbolic Neural Networks" (Sec. 2 and
3), and Mathieu, Le Lan, Maddison, Tomioka and Teh 2019, "Continuous Hierarchical
Representations with Poincaré Variational Auto-Encoders" (Sec. 2, 3.3 and the Appendix).

Every map is safe in float32: results are projected strictly inside the ball (norm at most
(1 - eps) / sqrt(c), eps per dtype), artanh arguments are clamped below 1 and norms above a
tiny value, so no value or gradient is NaN or infinite, even for huge tangent vectors or
points on the boundary.
"""

from __future__ import annotations

import math

import torch

#: Relative margin kept from the boundary. At norm (1 - 4e-3) / sqrt(c) the conformal factor
#: is about 125; closer in float32, 1 - c |x|^2 loses its digits.
BOUNDARY_MARGIN = {torch.float32: 4e-3, torch.float64: 1e-5}
MIN_NORM = 1e-15


def artanh(x: torch.Tensor) -> torch.Tensor:
    """artanh with its argument clamped to |x| <= 1 - machine epsilon (finite, finite slope)."""
    bound = 1.0 - torch.finfo(x.dtype).eps
    return torch.atanh(x.clamp(-bound, bound))


def norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dimension, kept, clamped above ``MIN_NORM``."""
    return x.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)


def log_sinhc(x: torch.Tensor) -> torch.Tensor:
    """log(sinh(x) / x) for x >= 0: its Taylor series x^2/6 - x^4/180 + x^6/2835 below 0.1
    (where the closed form cancels), x + log(1 - exp(-2x)) - log(2x) above."""
    small = x < 0.1
    safe = torch.where(small, torch.ones_like(x), x)
    large = safe + torch.log(-torch.expm1(-2 * safe)) - torch.log(2 * safe)
    x2 = x * x
    return torch.where(small, x2 / 6 - x2 * x2 / 180 + x2**3 / 2835, large)


class PoincareBall:
    """The Poincaré ball B^d_c = {x : c |x|^2 < 1} of constant curvature -c, with the metric
    lambda_x^2 times the Euclidean one (Ganea et al. 2018, Sec. 2).

    Points and tangent vectors are tensors of shape (..., d); methods broadcast over the
    leading dimensions. Tangent vectors are Euclidean coordinates: the Riemannian norm of v
    at x is lambda_x |v|.
    """

    def __init__(self, c: float = 1.0):
        if not c > 0:
            raise ValueError(f"the curvature c of a Poincaré ball must be positive, got {c}")
        self.c = float(c)
        self.sqrt_c = math.sqrt(self.c)

    def __repr__(self) -> str:
        return f"PoincareBall(c={self.c})"

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x, or x rescaled to norm (1 - eps) / sqrt(c) if it lies farther out."""
        max_norm = (1.0 - BOUNDARY_MARGIN.get(x.dtype, 4e-3)) / self.sqrt_c
        size = norm(x)
        return torch.where(size > max_norm, x / size * max_norm, x)

    def conformal_factor(self, x: torch.Tensor) -> torch.Tensor:
        """lambda_x^c = 2 / (1 - c |x|^2), shape (..., 1) (Ganea et al. 2018, Sec. 2.1)."""
        return 2.0 / (1.0 - self.c * x.pow(2).sum(-1, keepdim=True)).clamp_min(MIN_NORM)

    def mobius_add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Möbius addition x (+)_c y (Ganea et al. 2018, Sec. 2.2)."""
        xy = (x * y).sum(-1, keepdim=True)
        x2, y2 = x.pow(2).sum(-1, keepdim=True), y.pow(2).sum(-1, keepdim=True)
        numerator = (1 + 2 * self.c * xy + self.c * y2) * x + (1 - self.c * x2) * y
        denominator = 1 + 2 * self.c * xy + self.c**2 * x2 * y2
        return self.project(numerator / denominator.clamp_min(MIN_NORM))

    def mobius_scalar(self, r: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """Möbius scalar multiplication r (x)_c x (Ganea et al. 2018, Sec. 2.2)."""
        size = norm(x)
        scaled = torch.tanh(r * artanh(self.sqrt_c * size)) * x / (self.sqrt_c * size)
        return self.project(scaled)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d_c(x, y) = (2 / sqrt(c)) artanh(sqrt(c) |(-x) (+)_c y|), shape (...,)
        (Ganea et al. 2018, Sec. 2.2)."""
        gap = norm(self.mobius_add(-x, y)).squeeze(-1)
        return 2.0 / self.sqrt_c * artanh(self.sqrt_c * gap)

    def expmap(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """exp_x(v) = x (+)_c tanh(sqrt(c) lambda_x |v| / 2) v / (sqrt(c) |v|)
        (Ganea et al. 2018, Lemma 2)."""
        size = norm(v)
        step = torch.tanh(self.sqrt_c * self.conformal_factor(x) * size / 2) * v \
            / (self.sqrt_c * size)
        return self.mobius_add(x, self.project(step))

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log_x(y) = 2 / (sqrt(c) lambda_x) artanh(sqrt(c) |w|) w / |w|, w = (-x) (+)_c y,
        the inverse of :meth:`expmap` (Ganea et al. 2018, Lemma 2)."""
        w = self.mobius_add(-x, y)
        size = norm(w)
        scale = 2.0 / (self.sqrt_c * self.conformal_factor(x))
        return scale * artanh(self.sqrt_c * size) * w / size

    def expmap0(self, v: torch.Tensor) -> torch.Tensor:
        """exp_0(v) = tanh(sqrt(c) |v|) v / (sqrt(c) |v|) (Ganea et al. 2018, Lemma 2 at x = 0)."""
        size = norm(v)
        return self.project(torch.tanh(self.sqrt_c * size) * v / (self.sqrt_c * size))

    def logmap0(self, y: torch.Tensor) -> torch.Tensor:
        """log_0(y) = artanh(sqrt(c) |y|) y / (sqrt(c) |y|), the inverse of :meth:`expmap0`."""
        size = norm(y)
        return artanh(self.sqrt_c * size) * y / (self.sqrt_c * size)

    def transport_from_origin(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Parallel transport of v from 0 to x: (lambda_0 / lambda_x) v
        (Ganea et al. 2018, Sec. 2.3; the gyration gyr[x, 0] is the identity)."""
        return 2.0 / self.conformal_factor(x) * v

    def transport_to_origin(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Parallel transport of u from x to 0, the inverse of :meth:`transport_from_origin`."""
        return self.conformal_factor(x) / 2.0 * u

    def signed_gyroplane_distance(self, z: torch.Tensor, p: torch.Tensor,
                                  a: torch.Tensor) -> torch.Tensor:
        """Signed distance from z to the gyroplane H_{a,p} = {x : <(-p) (+)_c x, a> = 0}
        through p with normal a (Ganea et al. 2018, Sec. 3.1; Mathieu et al. 2019, Sec. 3.3):
        sign(<w, a>) arsinh(2 sqrt(c) |<w, a>| / ((1 - c |w|^2) |a|)) / sqrt(c),
        w = (-p) (+)_c z. Shapes broadcast: z (..., d), p and a (..., d) -> (...,).
        """
        def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return (u * v).sum(-1)

        return self._gyroplane_distance(dot(p, z), dot(a, z), dot(p, a), dot(p, p), dot(z, z),
                                        norm(a).squeeze(-1))

    def gyroplane_distances(self, z: torch.Tensor, p: torch.Tensor,
                            a: torch.Tensor) -> torch.Tensor:
        """Signed distances from every z (..., d) to every gyroplane (p_k, a_k), p and a of
        shape (K, d): (..., K), :meth:`signed_gyroplane_distance` computed from inner
        products by matrix products, without forming (..., K, d) tensors."""
        return self._gyroplane_distance(z @ p.T, z @ a.T, (p * a).sum(-1), p.pow(2).sum(-1),
                                        z.pow(2).sum(-1, keepdim=True), norm(a).squeeze(-1))

    def _gyroplane_distance(self, pz, az, pa, p2, z2, a_norm) -> torch.Tensor:
        """The gyroplane distance from inner products: w = (-p) (+)_c z = (A (-p) + B z) / D
        with A = 1 - 2c <p,z> + c |z|^2, B = 1 - c |p|^2, D = 1 - 2c <p,z> + c^2 |p|^2 |z|^2
        (Möbius addition, Ganea et al. 2018, Sec. 2.2), so <w, a> and |w|^2 follow; w is
        projected into the ball as :meth:`mobius_add` does."""
        c = self.c
        first = 1 - 2 * c * pz + c * z2
        second = 1 - c * p2
        denominator = (1 - 2 * c * pz + c**2 * p2 * z2).clamp_min(MIN_NORM)
        inner = (second * az - first * pa) / denominator
        w2 = ((first**2 * p2 - 2 * first * second * pz + second**2 * z2)
              / denominator**2).clamp_min(0)
        max_norm = (1.0 - BOUNDARY_MARGIN.get(inner.dtype, 4e-3)) / self.sqrt_c
        shrink = (max_norm / w2.sqrt().clamp_min(MIN_NORM)).clamp_max(1.0)
        inner, w2 = inner * shrink, w2 * shrink**2
        squeeze = (1 - c * w2).clamp_min(MIN_NORM)
        return torch.asinh(2 * self.sqrt_c * inner / (squeeze * a_norm)) / self.sqrt_c

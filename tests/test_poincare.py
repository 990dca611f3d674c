"""poincare_vae: the Poincaré ball, the wrapped and Riemannian normals on it, and the model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_checks import assert_likelihood_bounds, assert_round_trip, assert_trains_from_the_cli
from references import bernoulli_nll
from scipy import integrate, optimize, stats
from torch.distributions import Normal

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import as_data, load_dataset
from vaebench.distributions import (
    BallPrior,
    HyperbolicRadius,
    RiemannianNormal,
    WrappedNormal,
)
from vaebench.manifolds import PoincareBall, log_sinhc
from vaebench.metrics import log_likelihood
from vaebench.models.poincare_vae import GyroplaneLayer
from vaebench.training import evaluate

CURVATURES = [0.5, 1.0, 2.0]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


def _inside(ball, n, d, dtype=torch.float64, reach=0.9):
    """n random points of the ball, at Euclidean norm up to reach / sqrt(c)."""
    direction = F.normalize(torch.randn(n, d, dtype=dtype), dim=-1)
    return direction * torch.rand(n, 1, dtype=dtype) * reach / ball.sqrt_c


def _closed_form_distance(c, x, y):
    """arcosh(1 + 2c |x - y|^2 / ((1 - c|x|^2)(1 - c|y|^2))) / sqrt(c), the ball's distance."""
    gap = 2 * c * ((x - y) ** 2).sum(-1)
    squeeze = (1 - c * (x**2).sum(-1)) * (1 - c * (y**2).sum(-1))
    return torch.acosh(1 + gap / squeeze) / math.sqrt(c)


def _distance_from_origin(c, z):
    return 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * z.norm(dim=-1))


def _log_radial_integral(sigma, d, c):
    """log int_0^inf exp(-r^2 / (2 sigma^2)) sinh(sqrt(c) r)^(d-1) dr by scipy quadrature,
    scaled by the integrand at its numerically located peak."""
    n = d - 1

    def log_f(r):
        return -0.5 * (r / sigma) ** 2 + (n * np.log(np.sinh(math.sqrt(c) * r)) if n else 0.0)

    upper = 50 * sigma + n * sigma**2 * math.sqrt(c) + 1
    peak = optimize.minimize_scalar(lambda r: -log_f(r), bounds=(1e-12, upper), method="bounded",
                                    options={"xatol": 1e-12}).x
    top = log_f(peak)
    value, _ = integrate.quad(lambda r: math.exp(log_f(r) - top), 0, peak + 40 * sigma,
                              points=[peak], limit=500, epsabs=0, epsrel=1e-12)
    return math.log(value) + top


def _log_riemannian_normalizer(sigma, d, c):
    log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
    return log_area - (d - 1) / 2 * math.log(c) + _log_radial_integral(sigma, d, c)


# --- the ball ----------------------------------------------------------------------------------

@pytest.mark.parametrize("c", CURVATURES)
def test_exp_and_log_maps_are_inverses(c):
    ball = PoincareBall(c)
    x, y = _inside(ball, 50, 4), _inside(ball, 50, 4)
    lam = 2 / (1 - c * (x**2).sum(-1))
    v = torch.randn(50, 4, dtype=torch.float64) / lam.unsqueeze(1)  # a Riemannian length ~ 2
    torch.testing.assert_close(ball.logmap(x, ball.expmap(x, v)), v)
    torch.testing.assert_close(ball.expmap(x, ball.logmap(x, y)), y)
    torch.testing.assert_close(ball.logmap0(ball.expmap0(v)), v)
    torch.testing.assert_close(ball.expmap0(ball.logmap0(y)), y)
    torch.testing.assert_close(ball.expmap(torch.zeros_like(v), v), ball.expmap0(v))
    # exp_0 in closed form, and a geodesic of Riemannian length lambda_x |v|
    size = v.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(ball.expmap0(v), torch.tanh(math.sqrt(c) * size) * v
                               / (math.sqrt(c) * size))
    torch.testing.assert_close(_closed_form_distance(c, x, ball.expmap(x, v)), lam * v.norm(dim=-1))


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_addition_and_scalar_identities(c):
    ball = PoincareBall(c)
    x, y = _inside(ball, 50, 3), _inside(ball, 50, 3)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(ball.mobius_add(zero, x), x)
    torch.testing.assert_close(ball.mobius_add(x, zero), x)
    torch.testing.assert_close(ball.mobius_add(-x, x), zero)
    torch.testing.assert_close(ball.mobius_add(-x, ball.mobius_add(x, y)), y)  # left cancellation
    torch.testing.assert_close(ball.mobius_scalar(1.0, x), x)
    torch.testing.assert_close(ball.mobius_scalar(2.0, x), ball.mobius_add(x, x))
    torch.testing.assert_close(ball.mobius_scalar(0.7 + 1.6, x),
                               ball.mobius_add(ball.mobius_scalar(0.7, x),
                                               ball.mobius_scalar(1.6, x)))


@pytest.mark.parametrize("c", CURVATURES)
def test_distance_is_symmetric_and_matches_the_closed_form(c):
    ball = PoincareBall(c)
    x, y, w = _inside(ball, 60, 5), _inside(ball, 60, 5), _inside(ball, 60, 5)
    torch.testing.assert_close(ball.distance(x, y), _closed_form_distance(c, x, y))
    torch.testing.assert_close(ball.distance(x, y), ball.distance(y, x))
    torch.testing.assert_close(ball.distance(x, x), torch.zeros(60, dtype=torch.float64),
                               atol=1e-7, rtol=0)
    assert (ball.distance(x, y) <= ball.distance(x, w) + ball.distance(w, y) + 1e-12).all()
    torch.testing.assert_close(ball.distance(torch.zeros_like(y), y), _distance_from_origin(c, y))


@pytest.mark.parametrize("c", CURVATURES)
def test_transport_from_the_origin_keeps_riemannian_norms(c):
    ball = PoincareBall(c)
    x = _inside(ball, 40, 3)
    v = torch.randn(40, 3, dtype=torch.float64)
    moved = ball.transport_from_origin(x, v)
    lam = 2 / (1 - c * (x**2).sum(-1, keepdim=True))
    torch.testing.assert_close(lam * moved.norm(dim=-1, keepdim=True), 2 * v.norm(dim=-1,
                                                                                keepdim=True))
    torch.testing.assert_close(ball.transport_to_origin(x, moved), v)


def test_log_sinhc_matches_its_definition():
    x = torch.cat([torch.logspace(-6, 1.8, 400, dtype=torch.float64), torch.tensor([0.1])])
    torch.testing.assert_close(log_sinhc(x), torch.log(torch.sinh(x) / x), rtol=1e-9, atol=1e-15)
    assert log_sinhc(torch.zeros(1)).item() == 0.0


@pytest.mark.parametrize("c", [1.0, 4.0])
def test_float32_points_stay_inside_and_gradients_stay_finite_near_the_boundary(c):
    ball = PoincareBall(c)
    direction = F.normalize(torch.randn(64, 3), dim=-1)
    x = (direction * (1 - 1e-7) / ball.sqrt_c).requires_grad_()
    y = (-direction.roll(1, 0) * (1 - 1e-6) / ball.sqrt_c).requires_grad_()
    v = (torch.randn(64, 3) * torch.logspace(0, 8, 64).unsqueeze(1)).requires_grad_()
    zero = torch.zeros(64, 3, requires_grad=True)
    scale = torch.full((64, 1), 0.5, requires_grad=True)
    far, far0 = ball.expmap(x, v), ball.expmap0(v)
    for z in (far, far0, ball.mobius_add(x, y), ball.mobius_scalar(50.0, x)):
        assert torch.isfinite(z).all() and (z.norm(dim=-1) < 1 / ball.sqrt_c).all()
    outputs = [ball.distance(far, y), ball.logmap(x, y), ball.logmap0(far0), ball.expmap0(zero),
               ball.mobius_scalar(3.0, x), ball.signed_gyroplane_distance(y, x, v),
               WrappedNormal(ball.project(x), scale, ball).log_prob(far),
               RiemannianNormal(ball.project(x), scale, ball).log_prob(far)]
    assert all(torch.isfinite(t).all() for t in outputs)
    sum(t.sum() for t in outputs).backward()
    for leaf in (x, y, v, zero, scale):
        assert torch.isfinite(leaf.grad).all()


def test_gyroplane_distance_is_the_distance_to_the_gyroplane():
    """In the disk the gyroplane through p with normal a is the geodesic p (+) {t a_perp}; the
    distance to it is found by minimizing over t."""
    torch.manual_seed(3)
    c = 1.5
    ball = PoincareBall(c)
    layer = GyroplaneLayer(2, 5, c).double()
    with torch.no_grad():
        layer.offsets.normal_(0, 0.5)
    p = ball.expmap0(layer.offsets.detach())
    a = ball.transport_from_origin(p, layer.normals.detach())
    z = _inside(ball, 6, 2)
    features = layer(z).detach()
    limit = (1 - 1e-9) / ball.sqrt_c
    grid = torch.linspace(-limit, limit, 4001, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    for k in range(5):
        perp = torch.stack([-a[k, 1], a[k, 0]]) / a[k].norm()

        def distance(t, k=k, perp=perp):  # (T,) -> (T, len(z))
            return ball.distance(z, ball.mobius_add(p[k], t[:, None] * perp)[:, None])

        lam_p = 2 / (1 - c * (p[k] ** 2).sum())
        for i, best in enumerate(grid[distance(grid).argmin(0)].tolist()):
            nearest = optimize.minimize_scalar(
                lambda t, i=i, distance=distance: distance(torch.tensor([t]))[0, i].item(),
                bounds=(max(best - step, -limit), min(best + step, limit)), method="bounded",
                options={"xatol": 1e-13}).fun
            side = torch.sign((ball.mobius_add(-p[k], z[i]) * a[k]).sum())
            assert features[i, k].item() == pytest.approx(
                float(side * lam_p * a[k].norm() * nearest), rel=1e-6, abs=1e-9)
    on_plane = ball.mobius_add(p[0], 0.3 * torch.stack([-a[0, 1], a[0, 0]]) / a[0].norm())
    assert abs(layer(on_plane.unsqueeze(0))[0, 0].item()) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pairwise_gyroplane_distances_equal_the_definition(dtype):
    """The matrix-product form equals the definition through an explicit Möbius addition,
    also for points near the boundary."""
    ball = PoincareBall(0.8)
    z = torch.cat([_inside(ball, 30, 6, dtype), _inside(ball, 10, 6, dtype, reach=0.999)])
    p, a = _inside(ball, 7, 6, dtype), torch.randn(7, 6, dtype=dtype)
    w = ball.mobius_add(-p, z[:, None])  # (30 + 10, 7, 6)
    squeeze = 1 - ball.c * w.pow(2).sum(-1)
    reference = torch.asinh(2 * ball.sqrt_c * (w * a).sum(-1) / (squeeze * a.norm(dim=-1)))
    tolerance = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else \
        {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(ball.gyroplane_distances(z, p, a), reference / ball.sqrt_c,
                               **tolerance)
    torch.testing.assert_close(ball.signed_gyroplane_distance(z[:, None], p, a),
                               ball.gyroplane_distances(z, p, a), **tolerance)


# --- the distributions ----------------------------------------------------------------------

@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("c", [0.7, 1.5])
def test_wrapped_normal_density_is_the_change_of_variables(d, c):
    """log p(z) w.r.t. the Riemannian volume = log N(v) - log |det dz/dv| - d log lambda_z
    (the volume is lambda_z^d times Lebesgue's), with z = exp_loc(PT_{0->loc}(v / 2))."""
    torch.manual_seed(d)
    ball = PoincareBall(c)
    loc = _inside(ball, 1, d, reach=0.7)[0]
    scale = torch.rand(d, dtype=torch.float64) + 0.3
    q = WrappedNormal(loc, scale, ball)
    lam_loc = 2 / (1 - c * (loc**2).sum())

    def wrap(v):
        return ball.expmap(loc, v / lam_loc)

    for _ in range(5):
        v = torch.randn(d, dtype=torch.float64) * scale
        z = wrap(v)
        jacobian = torch.autograd.functional.jacobian(wrap, v)
        lam_z = 2 / (1 - c * (z**2).sum())
        expected = (Normal(0.0, scale).log_prob(v).sum() - torch.linalg.slogdet(jacobian)[1]
                    - d * torch.log(lam_z))
        torch.testing.assert_close(q.log_prob(z), expected)


def _disk_integral(q, c, s_max=12.0):
    """int over the disk of p(z) lambda_z^2 dz (Lebesgue), in polar coordinates with the
    Euclidean radius rho = tanh(sqrt(c) s / 2) / sqrt(c) of a uniform grid in s."""
    s = torch.linspace(0, s_max, 2401, dtype=torch.float64)
    theta = torch.linspace(0, 2 * math.pi, 257, dtype=torch.float64)[:-1]
    rho = torch.tanh(math.sqrt(c) * s / 2) / math.sqrt(c)
    z = rho[:, None, None] * torch.stack([theta.cos(), theta.sin()], -1)
    lam = 2 / (1 - c * rho**2)
    drho_ds = 0.5 / torch.cosh(math.sqrt(c) * s / 2) ** 2
    radial = q.log_prob(z).exp().mean(1) * 2 * math.pi * lam**2 * rho * drho_ds
    return torch.trapezoid(radial, s).item()


@pytest.mark.parametrize("c", [0.6, 1.0, 1.8])
def test_densities_integrate_to_one_on_the_disk(c):
    ball = PoincareBall(c)
    loc = ball.expmap0(torch.tensor([0.3, -0.25], dtype=torch.float64))
    for q in (WrappedNormal(loc, torch.tensor([0.4, 0.9], dtype=torch.float64), ball),
              RiemannianNormal(loc, torch.tensor([0.15], dtype=torch.float64), ball),
              RiemannianNormal(loc, torch.tensor([0.9], dtype=torch.float64), ball)):
        assert _disk_integral(q, c) == pytest.approx(1.0, abs=2e-4)


@pytest.mark.parametrize("d", [1, 2, 3, 6, 16, 40])
@pytest.mark.parametrize("c", [0.3, 1.0])
def test_riemannian_normalizer_matches_quadrature(d, c):
    """Both evaluations, the erfc sum (large (d-1) sqrt(c) sigma) and the positive series
    (small), against scipy quadrature of the defining integral."""
    sigmas = [0.01, 0.1, 0.4, 1.0, 3.0]
    ball = PoincareBall(c)
    q = RiemannianNormal(torch.zeros(len(sigmas), d, dtype=torch.float64),
                         torch.tensor(sigmas, dtype=torch.float64).unsqueeze(1), ball)
    expected = [_log_riemannian_normalizer(s, d, c) for s in sigmas]
    torch.testing.assert_close(q.log_normalizer(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=1e-9)


def _radial_cdf(law, sigma, r):
    log_mass = law.log_mass(torch.tensor(sigma, dtype=torch.float64)).item()
    n, sqrt_c = law.n, law.sqrt_c

    def density(t):
        return math.exp(-0.5 * (t / sigma) ** 2 + (n * math.log(math.sinh(sqrt_c * t)) if n
                                                   else 0.0) - log_mass)

    return integrate.quad(density, 0, r, limit=200, epsabs=1e-13)[0]


def _radial_cdfs(law, sigma):
    return lambda radii: np.array([_radial_cdf(law, sigma, r) for r in radii])


@pytest.mark.parametrize("d,sigma", [(2, 0.1), (2, 1.5), (5, 0.3), (12, 1.0)])
def test_riemannian_radius_sampler_follows_the_radial_law(d, sigma):
    law = HyperbolicRadius(d, 1.3)
    radius = law.draw(torch.full((1500,), sigma, dtype=torch.float64))
    assert stats.kstest(radius.numpy(), _radial_cdfs(law, sigma)).pvalue > 1e-3


@pytest.mark.parametrize("d,sigma", [(2, 0.3), (4, 1.2), (10, 0.2)])
def test_radius_gradient_is_the_derivative_of_the_quantile(d, sigma):
    """dr/dsigma at a drawn r equals d/dsigma F^-1(u; sigma) at u = F(r; sigma), by finite
    differences of the quantile function found with scipy."""
    law = HyperbolicRadius(d, 0.8)
    scale = torch.full((3,), sigma, dtype=torch.float64, requires_grad=True)
    radius = law.rsample(scale)
    (gradient,) = torch.autograd.grad(radius.sum(), scale)
    for r, g in zip(radius.tolist(), gradient.tolist(), strict=True):
        u = _radial_cdf(law, sigma, r)

        def quantile(s, u=u):
            return optimize.brentq(lambda t: _radial_cdf(law, s, t) - u, 1e-9, 60 * s + 20,
                                   xtol=1e-14)

        step = 1e-5
        fd = (quantile(sigma + step) - quantile(sigma - step)) / (2 * step)
        assert g == pytest.approx(fd, rel=1e-6)


def test_wrapped_normal_prior_has_standard_normal_tangent_coordinates():
    c = 0.8
    ball = PoincareBall(c)
    prior = BallPrior(WrappedNormal, ball, 3)
    z = prior.sample(20000)
    assert z.shape == (20000, 3) and (z.norm(dim=-1) < 1 / ball.sqrt_c).all()
    v = 2 * ball.logmap0(z.double())  # orthonormal coordinates at the origin (lambda_0 = 2)
    torch.testing.assert_close(v.mean(0), torch.zeros(3, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(v.T), torch.eye(3, dtype=torch.float64), atol=0.04,
                               rtol=0)
    squared = (_distance_from_origin(c, z.double()) ** 2).numpy()
    assert stats.kstest(squared, stats.chi2(3).cdf).pvalue > 1e-3


def test_riemannian_normal_prior_samples_and_density():
    c = 1.2
    ball = PoincareBall(c)
    prior = BallPrior(RiemannianNormal, ball, 2)
    z = prior.sample(3000).double()
    radius = _distance_from_origin(c, z).numpy()
    law = HyperbolicRadius(2, c)
    assert stats.kstest(radius, _radial_cdfs(law, 1.0)).pvalue > 1e-3
    angle = torch.atan2(z[:, 1], z[:, 0]).numpy()
    assert stats.kstest(angle, stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3
    expected = -0.5 * _distance_from_origin(c, z) ** 2 - _log_riemannian_normalizer(1.0, 2, c)
    torch.testing.assert_close(prior.log_prob(z), expected)


# --- the model ----------------------------------------------------------------------------------

def _model(**fields):
    options = {"input_dim": (1, 8, 8), "latent_dim": 3, "likelihood": "bernoulli",
               "encoder_kwargs": {"hidden": [32]}, "decoder_kwargs": {"hidden": [32]},
               "gyroplanes": 16} | fields
    return create_model("poincare_vae", **options)


def test_wrapped_objective_equals_an_independent_computation():
    c, d = 0.7, 3
    model = _model(curvature=c)
    x = torch.rand(9, 1, 8, 8)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    tangent, raw_scale = model.encoder(x).double().split([d, d], dim=1)  # the ball: float64
    size = tangent.norm(dim=1, keepdim=True)
    loc = torch.tanh(math.sqrt(c) * size) * tangent / (math.sqrt(c) * size)
    scale = F.softplus(raw_scale) + 1e-5
    v = scale * torch.randn(9, d, dtype=torch.float64)
    z = model.ball.expmap(loc, (1 - c * (loc**2).sum(1, keepdim=True)) / 2 * v)
    r, r0 = v.norm(dim=1), _distance_from_origin(c, z)
    log_q = Normal(0.0, scale).log_prob(v).sum(1) \
        - (d - 1) * torch.log(torch.sinh(math.sqrt(c) * r) / (math.sqrt(c) * r))
    log_p = -0.5 * r0**2 - 0.5 * d * math.log(2 * math.pi) \
        - (d - 1) * torch.log(torch.sinh(math.sqrt(c) * r0) / (math.sqrt(c) * r0))
    torch.testing.assert_close(out.z, z)
    torch.testing.assert_close(out.terms["kl"], (log_q - log_p).float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.terms["recon"], bernoulli_nll(model.decoder(z), x))
    torch.testing.assert_close(out.loss, (out.terms["recon"] + out.terms["kl"]).mean())
    assert set(out.terms) == {"recon", "kl"}


def test_riemannian_objective_equals_an_independent_computation():
    c, d = 1.3, 2
    model = _model(curvature=c, latent_dim=d, posterior="riemannian_normal",
                   prior="riemannian_normal")
    x = torch.rand(6, 1, 8, 8)
    out = model(x)
    tangent, raw_scale = model.encoder(x).double().split([d, 1], dim=1)
    size = tangent.norm(dim=1, keepdim=True)
    loc = torch.tanh(math.sqrt(c) * size) * tangent / (math.sqrt(c) * size)
    sigma = (F.softplus(raw_scale) + 1e-5).squeeze(1)
    z = out.z.double()
    log_q = -0.5 * (_closed_form_distance(c, loc, z) / sigma) ** 2 \
        - torch.tensor([_log_riemannian_normalizer(s, d, c) for s in sigma.tolist()])
    log_p = -0.5 * _distance_from_origin(c, z) ** 2 - _log_riemannian_normalizer(1.0, d, c)
    torch.testing.assert_close(out.terms["kl"].double(), log_q - log_p, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.terms["recon"], bernoulli_nll(model.decoder(out.z), x))


@pytest.mark.parametrize("posterior", ["wrapped_normal", "riemannian_normal"])
def test_per_sample_terms_do_not_change_with_batch_size(posterior, monkeypatch):
    for family in (WrappedNormal, RiemannianNormal):
        monkeypatch.setattr(family, "rsample", lambda self, sample_shape=(): self.loc.expand(
            tuple(sample_shape) + self.loc.shape))
    model = _model(posterior=posterior, prior="riemannian_normal")
    x = torch.rand(64, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:8])


def test_save_and_load_round_trip(tmp_path):
    model = _model(curvature=0.5, posterior="riemannian_normal", prior="wrapped_normal")
    assert_round_trip(model, tmp_path / "m", torch.rand(7, 1, 8, 8))


@pytest.mark.parametrize("posterior", ["wrapped_normal", "riemannian_normal"])
def test_likelihood_report_is_finite_and_iwae_bounds_the_elbo(posterior):
    model = _model(posterior=posterior, prior=posterior)
    x = (torch.rand(20, 1, 8, 8) > 0.5).float()
    assert_likelihood_bounds(model, x, k=8)


@pytest.mark.parametrize("posterior", ["wrapped_normal", "riemannian_normal"])
def test_training_lowers_the_eval_loss(posterior, digits):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = _model(latent_dim=2, posterior=posterior, prior=posterior,
                   encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]})
    model.prepare(as_data(x_train))
    torch.manual_seed(1)
    before = evaluate(model, x_test)["loss"]
    history = Trainer(model, TrainerConfig(epochs=3, batch_size=64, progress=False)).fit(
        x_train, x_test)
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["eval_loss"])
               for r in history)
    losses = [before] + [r["eval_loss"] for r in history]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))


def test_trains_from_the_command_line(tmp_path):
    assert_trains_from_the_cli("poincare_vae", tmp_path, "--latent-dim", "2")


@pytest.mark.parametrize("fields,field", [
    ({"posterior": "normal"}, "posterior"),
    ({"prior": "wrapped"}, "prior"),
    ({"curvature": 0.0}, "curvature"),
    ({"gyroplanes": 0}, "gyroplanes"),
])
def test_invalid_config_names_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        create_model("poincare_vae", input_dim=(1, 8, 8), **fields)


def test_ball_refuses_a_nonpositive_curvature():
    with pytest.raises(ValueError, match="curvature"):
        PoincareBall(-1.0)


def test_prior_draws_in_50_dimensions_are_not_clipped():
    """pythae's MNIST setting (d = 50): the prior's draws lie at distance ~ chi_50 from the
    origin (mean 7.04), beyond what a float32 ball holds (about 6.2); the ball runs in
    float64, so they keep their law and the importance weights stay those of a density."""
    d = 50
    model = _model(latent_dim=d)
    torch.manual_seed(0)
    z = model.prior.sample(4000)
    distance = _distance_from_origin(1.0, z)
    chi_mean = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    assert abs(float(distance.mean()) - chi_mean) < 0.05
    assert float(distance.max()) < 12.0
    x = (torch.rand(16, 1, 8, 8) > 0.5).float()
    log_px = log_likelihood(model, x, k=64, seed=0)
    assert bool((log_px < 0).all())  # a probability of binary data

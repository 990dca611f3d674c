"""svae: the von Mises-Fisher posterior, the uniform prior on the sphere, the Bessel
functions they need, and the model."""

import math

import numpy as np
import pytest
import torch
from model_checks import (
    assert_likelihood_bounds,
    assert_round_trip,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
)
from references import bernoulli_nll
from scipy import special

from vaebench import create_model
from vaebench.data import load_dataset
from vaebench.distributions import (
    HypersphericalUniform,
    VonMisesFisher,
    bessel_ratio,
    log_bessel_iv,
    log_sphere_area,
)

ORDERS = np.arange(0.0, 501.0, 0.5)
ARGS = np.logspace(-4, 4, 81)


def _ours(function, orders, args):
    x = torch.tensor(args, dtype=torch.float64)
    return np.stack([function(float(v), x).numpy() for v in orders])


def _scipy_grid():
    """log I_v(x) and I_{v+1}(x) / I_v(x) from scipy's exponentially scaled ive, and where
    scipy does not underflow."""
    v, x = np.meshgrid(ORDERS, ARGS, indexing="ij")
    ive, ive_next = special.ive(v, x), special.ive(v + 1, x)
    accurate = (ive > 1e-290) & (ive_next > 1e-290)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(ive) + x, ive_next / ive, accurate


def _log_iv_power_series(v, x, terms=2000):
    """log I_v(x) = log sum_k (x/2)^(2k+v) / (k! Gamma(v+k+1)) (DLMF 10.25.2), in log space."""
    k = np.arange(terms)
    log_terms = (2 * k + v) * np.log(x / 2) - special.gammaln(k + 1) - special.gammaln(v + k + 1)
    return special.logsumexp(log_terms)


def _vmf_kl_scipy(m, kappa):
    """KL(vMF(kappa) || U(S^(m-1))) = kappa A + log C_m(kappa) + log area, with scipy."""
    v = m / 2 - 1
    log_iv = np.log(special.ive(v, kappa)) + kappa
    log_c = v * np.log(kappa) - m / 2 * np.log(2 * np.pi) - log_iv
    area = np.log(2) + m / 2 * np.log(np.pi) - special.gammaln(m / 2)
    return kappa * special.ive(v + 1, kappa) / special.ive(v, kappa) + log_c + area


def _random_directions(n, m, dtype=torch.float32):
    return torch.nn.functional.normalize(torch.randn(n, m, dtype=dtype), dim=-1)


# --- Bessel functions -----------------------------------------------------------------------
def test_log_bessel_iv_matches_scipy():
    ref, _, accurate = _scipy_grid()
    ours = _ours(log_bessel_iv, ORDERS, ARGS)
    error = np.abs(ours - ref)[accurate] / np.maximum(1.0, np.abs(ref[accurate]))
    assert accurate.mean() > 0.4 and error.max() < 1e-10


def test_bessel_ratio_matches_scipy():
    _, ref, accurate = _scipy_grid()
    ours = _ours(bessel_ratio, ORDERS, ARGS)
    assert (np.abs(ours - ref)[accurate] / ref[accurate]).max() < 1e-10


def test_log_bessel_iv_matches_the_power_series_where_scipy_underflows():
    orders, args = np.array([0.0, 1.5, 99.0, 255.5, 500.0, 700.0]), np.logspace(-6, 3, 28)
    ours = _ours(log_bessel_iv, orders, args)
    ref = np.array([[_log_iv_power_series(v, x) for x in args] for v in orders])
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)
    assert ours.min() < -14000  # I_700(1e-6) = e^-14046, far below the smallest float64


def test_bessel_functions_are_finite_on_a_wide_range():
    x = torch.logspace(-6, 5, 200, dtype=torch.float64)
    for v in (0.0, 0.5, 7.0, 127.0, 500.0):
        log_iv, ratio = log_bessel_iv(v, x), bessel_ratio(v, x)
        assert torch.isfinite(log_iv).all() and torch.isfinite(ratio).all()
        assert ((ratio > 0) & (ratio < 1)).all() and (ratio.diff() > 0).all()
    assert log_bessel_iv(3.0, x.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="order"):
        log_bessel_iv(-1.0, x)


@pytest.mark.parametrize("v", [0.0, 0.5, 4.0, 127.0])
def test_bessel_gradients_match_finite_differences(v):
    x = torch.tensor([1e-2, 0.3, 1.0, 7.0, 60.0, 1e3, 1e4], dtype=torch.float64,
                     requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_bessel_iv(v, t), (x,))
    assert torch.autograd.gradcheck(lambda t: bessel_ratio(v, t), (x,))
    wide = torch.logspace(-6, 5, 50, requires_grad=True)  # float32, as a model gives kappa
    (log_bessel_iv(v, wide) + bessel_ratio(v, wide)).sum().backward()
    assert torch.isfinite(wide.grad).all()


# --- uniform prior --------------------------------------------------------------------------
@pytest.mark.parametrize("m", [2, 3, 7, 64])
def test_uniform_prior_density_and_samples(m):
    prior = HypersphericalUniform(m)
    area = 2 * math.pi ** (m / 2) / math.gamma(m / 2)
    z = prior.sample(20000)
    assert z.shape == (20000, m)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(20000))
    torch.testing.assert_close(prior.log_prob(z), torch.full((20000,), -math.log(area)))
    assert log_sphere_area(m) == pytest.approx(math.log(area))
    # uniform: mean 0, second moment I / m
    assert z.mean(0).abs().max() < 0.04
    torch.testing.assert_close(z.T @ z / 20000, torch.eye(m) / m, atol=0.03, rtol=0)
    assert prior.log_prob(z.view(4, 5000, m)).shape == (4, 5000)


def test_uniform_prior_areas_of_the_circle_and_sphere():
    assert HypersphericalUniform(2).log_prob(torch.zeros(1, 2)).item() == pytest.approx(
        -math.log(2 * math.pi))
    assert HypersphericalUniform(3).log_prob(torch.zeros(1, 3)).item() == pytest.approx(
        -math.log(4 * math.pi))


# --- von Mises-Fisher -----------------------------------------------------------------------
@pytest.mark.parametrize("kappa", [0.1, 5.0, 50.0])
def test_vmf_density_integrates_to_one_on_the_circle(kappa):
    loc = _random_directions(1, 2, torch.float64)
    q = VonMisesFisher(loc, torch.tensor([kappa], dtype=torch.float64))
    angle = torch.linspace(0, 2 * math.pi, 2049, dtype=torch.float64)[:-1]
    z = torch.stack([angle.cos(), angle.sin()], -1).unsqueeze(1)  # (2048, 1, 2)
    integral = q.log_prob(z).exp().mean() * 2 * math.pi  # periodic trapezoid rule
    assert integral.item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kappa", [0.1, 5.0, 50.0])
def test_vmf_density_integrates_to_one_on_the_sphere(kappa):
    loc = _random_directions(1, 3, torch.float64)
    q = VonMisesFisher(loc, torch.tensor([kappa], dtype=torch.float64))
    nodes, weights = np.polynomial.legendre.leggauss(300)  # polar angle on [0, pi]
    polar, polar_w = torch.tensor((nodes + 1) * math.pi / 2), torch.tensor(weights * math.pi / 2)
    azimuth = torch.linspace(0, 2 * math.pi, 601, dtype=torch.float64)[:-1]
    t, p = torch.meshgrid(polar, azimuth, indexing="ij")
    z = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).unsqueeze(-2)
    density = q.log_prob(z).squeeze(-1).exp()
    integral = (density * t.sin() * polar_w[:, None]).sum() * 2 * math.pi / 600
    assert integral.item() == pytest.approx(1.0, abs=1e-10)
    # and the closed form on S^2: C_3(kappa) = kappa / (4 pi sinh kappa)
    points = _random_directions(50, 3, torch.float64)
    expected = (math.log(kappa / (2 * math.pi * (1 - math.exp(-2 * kappa))))
                + kappa * (points @ loc.T - 1)).squeeze(-1)
    torch.testing.assert_close(q.log_prob(points), expected)


@pytest.mark.parametrize("m", [2, 3, 10, 64])
def test_vmf_samples_have_the_mean_resultant_length_and_direction(m):
    kappas = torch.tensor([0.5, 5.0, 50.0, 500.0], dtype=torch.float64)
    loc = _random_directions(4, m)
    n = 20000
    z = VonMisesFisher(loc, kappas.float()).rsample((n,))
    assert z.shape == (n, 4, m)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(n, 4))
    mean = z.double().mean(0)
    a = special.ive(m / 2, kappas.numpy()) / special.ive(m / 2 - 1, kappas.numpy())
    # E[z] = A mu: |E[z] - A mu|^2 = tr Cov(z) / n <= 1 / n
    np.testing.assert_allclose(mean.norm(dim=1).numpy(), a, atol=4 / math.sqrt(n))
    deviation = mean - torch.as_tensor(a)[:, None] * loc.double()
    assert deviation.norm(dim=1).max() < 4 / math.sqrt(n)
    # so the mean direction is mu, to an angle of about |E[z] - A mu| / A
    cosine = (torch.nn.functional.normalize(mean, dim=1) * loc.double()).sum(1).clamp(max=1)
    assert (cosine.arccos() < torch.as_tensor(4 / (math.sqrt(n) * a))).all()


def test_vmf_sampler_is_finite_for_extreme_concentrations_and_dimensions():
    kappas = torch.logspace(-3, 5, 17)
    for m in (2, 3, 5, 64, 256):
        q = VonMisesFisher(_random_directions(17, m), kappas)
        z = q.rsample((64,))
        assert torch.isfinite(z).all()
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(64, 17))
        assert torch.isfinite(q.log_prob(z)).all() and torch.isfinite(q.kl_uniform()).all()
        assert (q.kl_uniform() >= -1e-6).all()


def test_vmf_rsample_gradients_are_finite():
    loc = _random_directions(6, 5).requires_grad_()
    kappa = torch.tensor([1e-3, 0.5, 3.0, 40.0, 1e3, 1e5], requires_grad=True)
    z = VonMisesFisher(torch.nn.functional.normalize(loc, dim=1), kappa).rsample((16,))
    (z * torch.randn(6, 5)).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(kappa.grad).all()
    assert (loc.grad != 0).any() and (kappa.grad != 0).any()


def test_vmf_rsample_differentiates_the_accepted_draws_transformation():
    """With the draws replayed by seed, autograd equals a central difference in kappa and in
    mu: the gradient of the transformation of the accepted proposal (Sec. 3.3)."""
    loc = _random_directions(3, 4, torch.float64)
    kappa = torch.tensor([0.7, 6.0, 80.0], dtype=torch.float64)
    weights = torch.randn(5, 3, 4, dtype=torch.float64)

    def draw(loc, kappa):
        torch.manual_seed(11)
        z = VonMisesFisher(torch.nn.functional.normalize(loc, dim=1), kappa).rsample((5,))
        return (z * weights).sum()

    assert torch.autograd.gradcheck(draw, (loc.requires_grad_(), kappa.requires_grad_()))


@pytest.mark.parametrize("m", [3, 10])
def test_vmf_kl_and_entropy_match_monte_carlo_and_scipy(m):
    kappas = torch.tensor([0.5, 5.0, 50.0], dtype=torch.float64)
    q = VonMisesFisher(_random_directions(3, m, torch.float64), kappas)
    z = q.rsample((100000,))
    log_ratio = q.log_prob(z) - HypersphericalUniform(m).log_prob(z)
    standard_error = log_ratio.std(0) / math.sqrt(len(z))
    kl = q.kl_uniform()
    assert ((log_ratio.mean(0) - kl).abs() < 5 * standard_error + 1e-6).all()
    torch.testing.assert_close(kl, torch.as_tensor(_vmf_kl_scipy(m, kappas.numpy())))
    torch.testing.assert_close(q.entropy(), log_sphere_area(m) - kl)


def test_vmf_accepts_a_column_of_concentrations_and_keeps_the_dtype():
    loc = _random_directions(5, 4)
    q = VonMisesFisher(loc, torch.full((5, 1), 2.0))
    assert q.concentration.shape == (5,) and torch.equal(q.mean, loc)
    assert q.rsample().shape == (5, 4) and q.rsample((3, 2)).shape == (3, 2, 5, 4)
    assert q.rsample().dtype == q.kl_uniform().dtype == q.log_prob(loc).dtype == torch.float32


# --- the model ------------------------------------------------------------------------------
def _model(**fields):
    options = {"input_dim": (1, 8, 8), "latent_dim": 4, "likelihood": "bernoulli",
               "encoder_kwargs": {"hidden": [64]}, "decoder_kwargs": {"hidden": [64]}}
    return create_model("svae", **{**options, **fields})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


def test_objective_equals_an_independent_computation():
    model = _model()
    x = torch.rand(9, 1, 8, 8)
    torch.manual_seed(3)
    out = model(x)
    torch.manual_seed(3)
    params = model.encoder(x)
    loc = params[:, :4] / params[:, :4].norm(dim=1, keepdim=True)
    kappa = torch.log1p(params[:, 4].exp()) + 1
    z = VonMisesFisher(loc, kappa).rsample()
    recon = bernoulli_nll(model.decoder(z), x)
    kl = torch.as_tensor(_vmf_kl_scipy(4, kappa.double().detach().numpy()), dtype=torch.float32)
    assert set(out.terms) == {"recon", "kl"}
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + kl).mean())
    torch.testing.assert_close(out.z, z)
    torch.testing.assert_close(out.z.norm(dim=1), torch.ones(9))


def test_model_declares_sphere_posterior_and_prior():
    model = _model(latent_dim=6)
    assert model.encoder_features == 7 and isinstance(model.prior, HypersphericalUniform)
    q = model.encode(torch.rand(5, 1, 8, 8))
    assert isinstance(q, VonMisesFisher) and (q.concentration > 1).all()
    torch.testing.assert_close(q.mean.norm(dim=1), torch.ones(5))
    assert model.generate(3).shape == (3, 1, 8, 8)
    assert model.reconstruct(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="latent_dim"):
        _model(latent_dim=1)


def test_terms_are_batch_size_invariant():
    model = _model()
    model.eval()
    x = torch.rand(64, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    torch.testing.assert_close(small["kl"], large["kl"][:8])
    q_small, q_large = model.encode(x[:8]), model.encode(x)
    recon_small = model.likelihood.nll(model.decode(q_small.mean), x[:8])
    torch.testing.assert_close(recon_small, model.likelihood.nll(model.decode(q_large.mean), x)[:8])


def test_likelihood_report_bounds(digits):
    model = _model()
    assert_likelihood_bounds(model, digits[1][:40], k=8)


def test_training_lowers_the_loss_and_save_load(digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = _model()
    assert_training_lowers_the_loss(model, x_train, x_test)
    assert_round_trip(model, tmp_path / "m", x_test[:32])


def test_trains_from_the_command_line(tmp_path):
    assert_trains_from_the_cli("svae", tmp_path / "svae", "--latent-dim", "4")

"""Samplers that serve particular models: hypersphere (svae), poincare (poincare_vae), vamp
(vamp) and manifold (rhvae)."""

import math

import numpy as np
import pytest
import torch
from custom_nets import TinyEncoder

from vaebench import create_model, load_model
from vaebench.samplers import HypersphereSampler, PoincareSampler, VampSampler
from vaebench.samplers.base import fingerprint
from vaebench.samplers.manifold import ManifoldSampler, hmc_transition
from vaebench.samplers.registry import create_sampler, samplers_for
from vaebench.samplers.storage import load_sampler, save_sampler

SMALL_NETS = {"encoder_kwargs": {"hidden": [16]}, "decoder_kwargs": {"hidden": [16]}}
F64 = torch.float64


def ks_distance(draws: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov distance between the draws' empirical CDF and ``cdf``."""
    values = cdf(draws.double().sort().values)
    n = len(values)
    above = torch.arange(1, n + 1, dtype=F64) / n - values
    below = values - torch.arange(n, dtype=F64) / n
    return float(torch.maximum(above, below).max())


def ks_bound(n: int) -> float:
    """The KS distance that n independent draws exceed with probability about 1e-4."""
    return math.sqrt(-0.5 * math.log(0.5e-4) / n)


def rhvae_with_metric(centroids, matrices, **fields) -> torch.nn.Module:
    """An RHVAE whose recorded centroids and matrices L L^T are set by hand."""
    centroids = torch.as_tensor(centroids, dtype=torch.float32)
    model = create_model("rhvae", input_dim=(4,), latent_dim=centroids.shape[1],
                         max_centroids=len(centroids), metric_hidden=8, **SMALL_NETS,
                         **fields)
    with torch.no_grad():
        model.centroids.copy_(centroids)
        model.centroid_matrices.copy_(torch.as_tensor(matrices, dtype=torch.float32))
        model.centroids_seen.fill_(len(centroids))
    return model


def hand_set_rhvae() -> torch.nn.Module:
    scales = torch.tensor([2.0, 1.0, 0.5]).view(3, 1, 1)
    return rhvae_with_metric([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]], scales * torch.eye(2))


#: name -> (a small model it serves, small options)
SERVED = {
    "hypersphere": (lambda: create_model("svae", input_dim=(4,), latent_dim=3, **SMALL_NETS),
                    {}),
    "poincare": (lambda: create_model("poincare_vae", input_dim=(1, 8, 8), latent_dim=2,
                                      gyroplanes=8, **SMALL_NETS), {}),
    "vamp": (lambda: create_model("vamp", input_dim=(1, 8, 8), latent_dim=2,
                                  num_pseudo_inputs=5, **SMALL_NETS), {}),
    "manifold": (hand_set_rhvae, {"mcmc_steps": 4, "n_lf": 3}),
}
CLASSES = {"hypersphere": HypersphereSampler, "poincare": PoincareSampler,
           "vamp": VampSampler, "manifold": ManifoldSampler}


# --- what every sampler shares -------------------------------------------------------------
@pytest.mark.parametrize("name", SERVED)
def test_draws_have_the_latent_shape_are_finite_and_repeat_with_the_seed(name):
    build, options = SERVED[name]
    model = build()
    sampler = create_sampler(name, model, **options)
    assert isinstance(sampler, CLASSES[name])
    assert name in samplers_for(model)
    first = sampler.sample(model, 7, seed=3)
    assert first.shape == (7, *model.latent_shape)
    assert first.device == model.device
    assert torch.isfinite(first).all()
    assert torch.equal(first, sampler.sample(model, 7, seed=3))
    assert not torch.equal(first, sampler.sample(model, 7, seed=4))


@pytest.mark.parametrize("name", SERVED)
def test_saved_and_loaded_sampler_draws_the_same_codes(name, tmp_path):
    build, options = SERVED[name]
    model = build()
    sampler = create_sampler(name, model, **options)
    model.save(tmp_path / "model")
    save_sampler(sampler, tmp_path / "model")
    loaded_model = load_model(tmp_path / "model")
    loaded = load_sampler(tmp_path / "model", name, loaded_model)
    assert type(loaded) is CLASSES[name] and loaded.config == sampler.config
    assert loaded.model_fingerprint == fingerprint(model)
    assert torch.equal(loaded.sample(loaded_model, 6, seed=11), sampler.sample(model, 6, seed=11))


@pytest.mark.parametrize("name", SERVED)
def test_a_plain_vae_is_refused_with_the_reason(name):
    vae = create_model("vae", input_dim=(4,), latent_dim=3, **SMALL_NETS)
    assert name not in samplers_for(vae)
    reasons = {"hypersphere": "codes lie on a unit sphere", "poincare": "Poincaré ball",
               "vamp": "not a VampPrior", "manifold": "no learned Riemannian metric"}
    with pytest.raises(ValueError, match=f"the {name} sampler does not serve the vae model: "
                                         f".*{reasons[name]}"):
        create_sampler(name, vae)


def test_each_sampler_serves_only_its_model():
    for name, (build, _) in SERVED.items():
        served = samplers_for(build())
        assert [other for other in CLASSES if other in served] == [name]


# --- hypersphere ---------------------------------------------------------------------------
def test_hypersphere_draws_are_uniform_on_the_sphere():
    model = create_model("svae", input_dim=(4,), latent_dim=3, **SMALL_NETS)
    z = create_sampler("hypersphere", model).sample(model, 20000, seed=0).double()
    torch.testing.assert_close(z.norm(dim=1), torch.ones(len(z), dtype=F64))
    assert z.mean(0).abs().max() < 0.03  # standard error 1 / sqrt(3 n) = 0.004
    second_moment = z.T @ z / len(z)
    torch.testing.assert_close(second_moment, torch.eye(3, dtype=F64) / 3, rtol=0, atol=0.015)
    # Archimedes: on S^2 each coordinate is uniform on [-1, 1]
    for coordinate in z.T:
        assert ks_distance(coordinate, lambda t: (t + 1) / 2) < ks_bound(len(z))


# --- poincare ------------------------------------------------------------------------------
def chi3_cdf(r: torch.Tensor) -> torch.Tensor:
    """CDF of the norm of a standard normal vector of R^3."""
    return torch.erf(r / math.sqrt(2)) - math.sqrt(2 / math.pi) * r * torch.exp(-r**2 / 2)


def riemannian_radius_cdf(c: float, dim: int):
    """CDF of d_c(0, z) under the unit-scale Riemannian normal at 0 (Mathieu et al. 2019):
    density proportional to exp(-r^2 / 2) sinh(sqrt(c) r)^(dim - 1), on a grid."""
    grid = torch.linspace(0, 12, 200001, dtype=F64)
    density = torch.exp(-grid**2 / 2) * torch.sinh(math.sqrt(c) * grid) ** (dim - 1)
    cumulative = torch.cumsum(density, 0)
    cumulative = cumulative / cumulative[-1]
    return lambda r: torch.from_numpy(np.interp(r.numpy(), grid.numpy(), cumulative.numpy()))


@pytest.mark.parametrize("prior", ["wrapped_normal", "riemannian_normal"])
def test_poincare_draws_follow_the_prior_in_the_ball_of_the_curvature(prior):
    c, n = 2.0, 4000
    model = create_model("poincare_vae", input_dim=(4,), latent_dim=3, curvature=c,
                         prior=prior, gyroplanes=8, **SMALL_NETS)
    z = create_sampler("poincare", model).sample(model, n, seed=0)
    assert (z.norm(dim=1) < 1 / math.sqrt(c)).all()
    radius = model.ball.distance(torch.zeros_like(z), z)
    cdf = chi3_cdf if prior == "wrapped_normal" else riemannian_radius_cdf(c, 3)
    assert ks_distance(radius, cdf) < ks_bound(n)
    # isotropic about the origin, as a direct draw from the model's prior
    assert (z / z.norm(dim=1, keepdim=True)).mean(0).abs().max() < 0.05
    direct = model.prior.sample(n)
    for statistic in (lambda w: w.norm(dim=1), model.prior.log_prob):
        assert abs(float(statistic(z).mean() - statistic(direct).mean())) \
            < 5 * float(statistic(direct).std()) / math.sqrt(n)


# --- vamp ----------------------------------------------------------------------------------
def test_vamp_draws_follow_the_mixture_of_pseudo_input_posteriors():
    """A linear encoder maps pseudo-input u_k = (m_k, 0, 0) to q(z | u_k) = N(m_k, e^-4 I):
    the draws must form the uniform mixture of these three components."""
    encoder = TinyEncoder(features=4, out=4)
    model = create_model("vamp", input_dim=(4,), latent_dim=2, num_pseudo_inputs=3,
                         encoder=encoder, decoder_kwargs={"hidden": [8]})
    means = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    with torch.no_grad():
        encoder.linear.weight.zero_()
        encoder.linear.weight[:2, :2] = torch.eye(2)
        encoder.linear.bias.copy_(torch.tensor([0.0, 0.0, -4.0, -4.0]))
        model.prior.pseudo_inputs.copy_(torch.cat([means, torch.zeros(3, 2)], 1))
    n, std = 6000, math.exp(-2.0)
    z = create_sampler("vamp", model).sample(model, n, seed=0)
    assert z.shape == (n, 2)
    gaps = torch.cdist(z, means)
    component = gaps.argmin(1)
    assert (gaps.min(1).values < 6 * std).all()
    frequencies = torch.bincount(component, minlength=3) / n
    torch.testing.assert_close(frequencies, torch.full((3,), 1 / 3), rtol=0, atol=0.03)
    torch.testing.assert_close(z.mean(0), means.mean(0), rtol=0, atol=0.1)
    for k in range(3):
        deviations = z[component == k] - means[k]
        torch.testing.assert_close(deviations.std(0), torch.full((2,), std), rtol=0.1, atol=0)


# --- manifold ------------------------------------------------------------------------------
def test_hmc_transition_leaves_a_known_target_invariant():
    """From exact draws of N(0, diag(1, 4)), transitions with a step size at which a good
    share of proposals is rejected keep the law; a wrong acceptance step would not."""
    scales = torch.tensor([1.0, 2.0], dtype=F64)

    def log_density(z):
        return -0.5 * ((z / scales) ** 2).sum(-1)

    n = 6000
    z = torch.randn(n, 2, dtype=F64) * scales
    accepted = 0.0
    for _ in range(10):
        previous, z = z, hmc_transition(z, log_density, 1.2, [1.0] * 4)
        accepted += float((z != previous).any(1).double().mean()) / 10
    assert 0.3 < accepted < 0.9
    for coordinate, scale in zip(z.T, scales, strict=True):
        assert ks_distance(coordinate / scale, torch.special.ndtr) < ks_bound(n)


def test_hmc_transition_keeps_the_state_when_the_target_is_not_finite():
    z = torch.randn(50, 3, dtype=F64)

    def undefined(y):
        return (y * math.nan).sum(-1)

    assert torch.equal(hmc_transition(z, undefined, 0.1, [1.0, 1.0]), z)


def test_hmc_transition_never_moves_to_a_point_that_is_not_finite():
    """On a flat target every finite proposal is accepted; steps of 1e308 overflow to inf
    where |rho| > 1.8, and those proposals are refused."""
    def flat(y):
        return 0 * y.clamp(-1, 1).sum(-1)  # 0 also at inf

    z = torch.zeros(400, 2, dtype=F64)
    moved = hmc_transition(z, flat, 1e308, [1.0, 1.0])
    assert torch.isfinite(moved).all()
    kept = (moved == 0).all(1).double().mean()
    assert 0.05 < kept < 0.4  # P(|rho_1| > 1.8 or |rho_2| > 1.8) = 0.14


def test_hmc_transition_leaves_states_of_zero_density_and_never_enters_them():
    def uniform_in_unit_ball(y):  # log-density -inf outside
        return torch.where(y.norm(dim=-1) < 1, 0.0, -math.inf) + 0 * y.sum(-1)

    directions = torch.nn.functional.normalize(torch.randn(400, 3, dtype=F64), dim=1)
    z = torch.cat([0.5 * directions[:200], 1.2 * directions[200:]])
    for _ in range(20):
        z = hmc_transition(z, uniform_in_unit_ball, 0.2, [1.0, 1.0])
    inside = z.norm(dim=1) < 1
    assert inside[:200].all()
    assert inside[200:].double().mean() > 0.5


def test_manifold_draws_follow_sqrt_det_inverse_metric():
    """Two centroids (-1, 0), (1, 0) with matrices 3 I and I, T = 1, tiny lambda: in 2-D,
    sqrt(det G^{-1}(z)) = 3 exp(-|z - c_1|^2) + exp(-|z - c_2|^2) + lambda, a mixture of
    N(c_i, I / 2) with weights 3/4, 1/4. Chains start at the centroids half and half."""
    model = rhvae_with_metric([[-1.0, 0.0], [1.0, 0.0]],
                              torch.stack([3 * torch.eye(2), torch.eye(2)]),
                              temperature=1.0, regularization=1e-8)
    n, sigma = 3000, math.sqrt(0.5)
    z = create_sampler("manifold", model).sample(model, n, seed=0).double()

    def first_coordinate_cdf(t):
        return 0.75 * torch.special.ndtr((t + 1) / sigma) + 0.25 * torch.special.ndtr(
            (t - 1) / sigma)

    assert ks_distance(z[:, 0], first_coordinate_cdf) < ks_bound(n)
    assert ks_distance(z[:, 1] / sigma, torch.special.ndtr) < ks_bound(n)


@pytest.mark.parametrize("start", ["centroids", "prior"])
def test_manifold_draws_stay_finite_under_an_extreme_metric(start):
    """A rank-one matrix of size 1e8 with lambda = 1e-12: G^{-1} is singular to float64
    precision near the centroids, its factorization fails or is meaningless there."""
    direction = torch.tensor([1.0, 1.0])
    model = rhvae_with_metric([[0.0, 0.0], [0.5, 0.5]],
                              (1e8 * torch.outer(direction, direction)).expand(2, 2, 2),
                              temperature=0.5, regularization=1e-12)
    sampler = create_sampler("manifold", model, mcmc_steps=10, start=start, beta_zero=0.5)
    z = sampler.sample(model, 200, seed=0)
    assert z.shape == (200, 2) and torch.isfinite(z).all()


def test_an_untrained_rhvae_is_refused():
    model = create_model("rhvae", input_dim=(4,), latent_dim=2, metric_hidden=8, **SMALL_NETS)
    assert "manifold" not in samplers_for(model)
    with pytest.raises(ValueError, match="the manifold sampler does not serve the rhvae model: "
                                         "its metric has no centroids.*train it first"):
        create_sampler("manifold", model)

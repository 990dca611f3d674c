"""rhvae: the Riemannian Hamiltonian VAE (Chadebec, Mantoux and Allassonnière 2020)."""

import json
import math

import pytest
import torch
from model_checks import assert_likelihood_bounds, assert_training_lowers_the_loss, fix_the_noise

from vaebench import create_model, load_model
from vaebench.cli import main
from vaebench.data import load_dataset
from vaebench.models import RHVAE, RHVAEConfig, get_model_class
from vaebench.models.hvae import hamiltonian_flow
from vaebench.models.rhvae import (
    cholesky,
    fixed_point,
    inverse,
    inverse_metric,
    log_det,
    riemannian_flow,
)

LATENT = 4
SMALL = {"input_dim": (1, 8, 8), "latent_dim": LATENT, "likelihood": "bernoulli",
         "encoder_kwargs": {"hidden": [64]}, "decoder_kwargs": {"hidden": [64]},
         "metric_hidden": 32}
F64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


def _small(**fields):
    return create_model("rhvae", **SMALL, **fields)


def _random_metric(n_centroids=6, dim=3, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.randn(n_centroids, dim, generator=generator, dtype=F64)
    factors = scale * torch.randn(n_centroids, dim, dim, generator=generator, dtype=F64).tril()
    return centroids, factors @ factors.mT


def _quadratic_target(z):
    """grad log N(z; 0, diag(1, 4, 1/4)), the score of a fixed target."""
    return -torch.tensor([1.0, 4.0, 0.25], dtype=z.dtype) * z, None


@pytest.mark.parametrize("scale,shift", [(1.0, 0.0), (1.0, 1e3), (1e3, 0.0), (1e3, 0.5)])
def test_inverse_metric_is_spd_with_eigenvalues_above_lambda(scale, shift):
    centroids, matrices = _random_metric(scale=scale)
    z = shift + torch.randn(20, 3, dtype=F64)
    matrix = inverse_metric(z, centroids, matrices, temperature=1.5, regularization=0.01)
    torch.testing.assert_close(matrix, matrix.mT, rtol=0, atol=0)
    assert torch.linalg.eigvalsh(matrix).min() >= 0.01 * (1 - 1e-6)
    # the kernel by its formula, term by term
    expected = 0.01 * torch.eye(3, dtype=F64) + sum(
        m * torch.exp(-((z - c) ** 2).sum(-1) / 1.5**2)[:, None, None]
        for c, m in zip(centroids, matrices, strict=True))
    torch.testing.assert_close(matrix, expected)
    if shift > 100:  # far from every centroid: exactly lambda I
        torch.testing.assert_close(matrix, 0.01 * torch.eye(3, dtype=F64).expand(20, 3, 3))


def test_log_det_and_inverse_against_torch_linalg():
    centroids, matrices = _random_metric(scale=3.0)
    matrix = inverse_metric(torch.randn(10, 3, dtype=F64), centroids, matrices, 1.5, 0.01)
    factor = cholesky(matrix)
    torch.testing.assert_close(log_det(factor), torch.linalg.slogdet(matrix).logabsdet)
    torch.testing.assert_close(inverse(factor), torch.linalg.inv(matrix))


def _metric_fn(scale=1.0):
    centroids, matrices = _random_metric(scale=scale)
    return lambda z: inverse_metric(z, centroids, matrices, 1.5, 0.1)


def test_generalized_leapfrog_is_reversible_for_small_steps():
    metric = _metric_fn()
    z0 = torch.tensor([[0.3, -0.8, 0.5]], dtype=F64)
    rho0 = torch.tensor([[1.1, 0.4, -0.6]], dtype=F64)
    flow = {"score": _quadratic_target, "metric": metric, "step_size": 0.05,
            "sqrt_betas": [1.0] * 11, "n_iterations": 30}
    with torch.no_grad():
        z, rho, _ = riemannian_flow(z0, rho0, **flow)
        z_back, rho_back, _ = riemannian_flow(z, -rho, **flow)
    assert (z - z0).abs().max() > 0.05
    torch.testing.assert_close(z_back, z0, rtol=0, atol=1e-9)
    torch.testing.assert_close(-rho_back, rho0, rtol=0, atol=1e-9)


def test_with_the_identity_metric_it_is_the_hvae_leapfrog():
    z0, rho0 = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    sqrt_betas = [0.5, 0.7, 0.9, 1.0]
    identity = torch.eye(3, dtype=F64)
    z, rho, _ = riemannian_flow(z0, rho0, _quadratic_target, lambda z: identity.expand(
        len(z), 3, 3), 0.2, sqrt_betas, n_iterations=3)
    z_ref, rho_ref, _ = hamiltonian_flow(z0, rho0, _quadratic_target, 0.2, sqrt_betas)
    torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(rho, rho_ref, rtol=0, atol=1e-14)


def test_fixed_point_is_plain_when_contracting_and_bounded_when_diverging():
    start = torch.tensor([[1.0, 2.0]], dtype=F64)
    contracting = fixed_point(lambda y: 0.5 * y + 1.0, start, 40)
    torch.testing.assert_close(contracting, torch.full_like(start, 2.0))  # the fixed point
    plain = start
    for _ in range(3):
        plain = 0.5 * plain + 1.0
    torch.testing.assert_close(fixed_point(lambda y: 0.5 * y + 1.0, start, 3), plain)
    diverging = fixed_point(lambda y: y**2 + 1.0, start, 10)  # plain iteration overflows
    first_move = torch.linalg.vector_norm(start**2 + 1.0 - start)
    assert torch.isfinite(diverging).all()
    assert torch.linalg.vector_norm(diverging - start) <= 10 * first_move


def test_registered_with_pythae_defaults():
    model = _small()
    assert get_model_class("rhvae") is RHVAE and isinstance(model.config, RHVAEConfig)
    cfg = model.config
    assert (cfg.n_lf, cfg.eps_lf, cfg.beta_zero, cfg.temperature, cfg.regularization) == (
        3, 0.001, 0.3, 1.5, 0.01)
    assert RHVAEConfig(input_dim=(1, 8, 8)).metric_hidden == 400


def _draw_terms(model, x, k=1):
    """Importance terms with the draws of q and the momentum fixed by the seed."""
    torch.manual_seed(7)
    return model.importance_terms(x, k)


def test_before_training_the_metric_is_lambda_identity_and_weights_match_formula():
    model = _small(regularization=1.0, eps_lf=0.05).double().eval()
    x = torch.rand(6, 1, 8, 8, dtype=F64)
    with torch.no_grad():
        terms = _draw_terms(model, x, k=2)
        torch.manual_seed(7)
        q = model.encode(x)
        z0 = q.rsample((2,))
        gamma = torch.randn_like(z0)
        # G = I: the flow is HVAE's leapfrog, and log N(.; 0, G) is the standard normal's
        z, rho, _ = hamiltonian_flow(
            z0.flatten(0, 1), gamma.flatten(0, 1) / 0.3**0.5,
            model.joint_score(x.expand(2, *x.shape).flatten(0, 1)), 0.05,
            [1 / ((1 - 0.3**-0.5) * (k / 3) ** 2 + 0.3**-0.5) for k in range(4)])
    normal = torch.distributions.Normal(torch.zeros(()), torch.ones(()))
    torch.testing.assert_close(terms["z"], z.view(2, 6, LATENT))
    torch.testing.assert_close(terms["log_qz"],
                               q.log_prob(z0) + normal.log_prob(gamma).sum(-1))
    torch.testing.assert_close(terms["log_pz"], normal.log_prob(z).sum(-1).view(2, 6)
                               + normal.log_prob(rho).sum(-1).view(2, 6))


def test_metric_factors_diagonal_stays_within_the_log_bound():
    """diag L_psi = exp(b tanh(raw / b)) stays in [e^-b, e^b] (default b = 3) however large
    the network's raw output: the bound that keeps the metric's dynamic range finite."""
    model = _small()
    assert model.config.max_log_diag == 3.0
    with torch.no_grad():
        for parameter in model.metric_net.parameters():
            parameter.mul_(1e3)
        diagonal = torch.linalg.diagonal(model.metric_net(torch.rand(64, 1, 8, 8) * 10))
    assert diagonal.log().abs().max() <= 3.0
    assert diagonal.log().abs().max() > 2.9  # the raw outputs did reach the bound


def test_training_records_bounded_centroids_and_uses_them_in_eval():
    model = _small(max_centroids=10)
    x = torch.rand(8, 1, 8, 8)
    for _ in range(2):
        model(x)
    assert int(model.centroids_seen) == 16
    with torch.no_grad():
        means = model.encode(x).mean
        factors = model.metric_net(x)
    rows = [8, 9, 0, 1, 2, 3, 4, 5]  # the second batch, written after rows 0 to 7
    torch.testing.assert_close(model.centroids[rows], means)
    torch.testing.assert_close(model.centroid_matrices[rows], factors @ factors.mT)
    assert torch.all(torch.linalg.diagonal(factors) > 0)
    model.eval()
    z = torch.randn(3, LATENT)
    expected = inverse_metric(z, model.centroids, model.centroid_matrices, 1.5, 0.01)
    torch.testing.assert_close(model.stored_metric()(z), expected)


def test_terms_do_not_change_with_batch_size_in_eval(monkeypatch):
    fix_the_noise(monkeypatch)
    model = _small(eps_lf=0.05)
    x = torch.rand(64, 1, 8, 8)
    model(x)  # records centroids
    model.eval()
    small, large = model(x[:8]).terms, model(x).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:8])


def test_likelihood_metrics_are_finite_and_iwae_above_elbo(digits):
    model = _small(eps_lf=0.05)
    model(digits[0][:64])
    model.eval()
    assert_likelihood_bounds(model, digits[1][:40], k=4)


def test_training_lowers_the_loss_and_save_load(digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = _small(eps_lf=0.01)
    assert_training_lowers_the_loss(model, x_train, x_test)
    assert int(model.centroids_seen) > 0
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is RHVAE and loaded.config == model.config
    for name in ("centroids", "centroid_matrices", "centroids_seen"):
        assert torch.equal(getattr(loaded, name), getattr(model, name))
    model.eval()
    loaded.eval()
    weights = []
    for m in (model, loaded):
        torch.manual_seed(3)
        weights.append(m.log_importance_weights(x_test[:8], 4))
    assert torch.equal(weights[0], weights[1])


def test_stays_finite_where_pythae_diverges(digits):
    """Large steps, many leapfrog steps and a metric network with huge outputs: every term
    stays finite (huge). Their gradients are not checked: they overflow in float32 there."""
    torch.manual_seed(0)
    model = _small(eps_lf=1.0, n_lf=10, regularization=1e-6)
    with torch.no_grad():
        for parameter in model.metric_net.parameters():
            parameter.mul_(100.0)
    x = digits[0][:64]
    with torch.no_grad():
        terms = model(x).terms
    assert all(torch.isfinite(term).all() for term in terms.values())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.log_importance_weights(x[:16], 2)).all()


@pytest.mark.parametrize("field,value", [("regularization", 0.0), ("temperature", -1.0),
                                         ("n_fixed_point", 0), ("max_centroids", 0)])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        create_model("rhvae", input_dim=(1, 8, 8), **{field: value})


def test_trains_from_the_command_line(tmp_path):
    out = tmp_path / "rhvae"
    assert main(["train", "--model", "rhvae", "--dataset", "digits", "--epochs", "1",
                 "--latent-dim", "4", "--likelihood", "bernoulli", "--output", str(out),
                 "--no-progress", "--iwae-k", "8", "--train-size", "512",
                 "--option", "metric_hidden=32"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["eval_loss"])
    assert metrics["likelihood"]["log_likelihood"] >= metrics["likelihood"]["elbo"]
    assert load_model(out / "model").name == "rhvae"

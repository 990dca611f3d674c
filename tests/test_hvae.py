"""hvae: the Hamiltonian VAE (Caterini, Doucet and Sejdinovic 2018)."""


import pytest
import torch
from model_checks import (
    assert_likelihood_bounds,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
    fix_the_noise,
)
from references import bernoulli_nll
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal

from vaebench import create_model, load_model
from vaebench.data import load_dataset
from vaebench.metrics import elbo, log_likelihood
from vaebench.models import HVAE, HVAEConfig, get_model_class
from vaebench.models.hvae import hamiltonian_flow, tempering_schedule

LATENT = 4


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


SMALL = {"input_dim": (1, 8, 8), "latent_dim": LATENT, "likelihood": "bernoulli",
         "encoder_kwargs": {"hidden": [64]}, "decoder_kwargs": {"hidden": [64]}}


def _small(**fields):
    return create_model("hvae", **SMALL, **fields)


def _tiny_double():
    """A 2-dimensional latent on 4 binary pixels, in float64, and one data point."""
    model = create_model("hvae", input_dim=(4,), latent_dim=2, likelihood="bernoulli",
                         encoder_kwargs={"hidden": [8]}, decoder_kwargs={"hidden": [8]})
    return model.double(), torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)


def _flow_map(model, x, step, sqrt_betas):
    """(z, rho) -> (z_K, rho_K) of one sample, as a map of the concatenated state."""
    score = model.joint_score(x)

    def flow(state):
        z, rho = state.view(2, 1, -1)
        z_k, rho_k, _ = hamiltonian_flow(z, rho, score, step, sqrt_betas)
        return torch.cat([z_k[0], rho_k[0]])

    return flow


def _log_normal(v, scale=1.0):
    return Independent(Normal(torch.zeros_like(v), scale), 1).log_prob(v)


def _reference_terms(model, x, noise, gamma, step, beta_zero):
    """recon and kl of Algorithm 1 of the paper, from torch.distributions, recomputing the
    gradient of log p(x, z) at every half step and the tempering by its formula."""
    mean, log_var = model.encoder(x).chunk(2, dim=1)
    q0 = Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)
    z0 = mean + noise * torch.exp(0.5 * log_var)
    rho0 = gamma / beta_zero**0.5

    def grad_log_joint(z):
        log_joint = -bernoulli_nll(model.decoder(z), x) + _log_normal(z)
        return torch.autograd.grad(log_joint.sum(), z, create_graph=True)[0]

    n_lf = model.config.n_lf
    z, rho, sqrt_beta_before = z0, rho0, beta_zero**0.5
    for k in range(1, n_lf + 1):
        rho_half = rho + step / 2 * grad_log_joint(z)
        z = z + step * rho_half
        rho_full = rho_half + step / 2 * grad_log_joint(z)
        sqrt_beta = 1 / ((1 - beta_zero**-0.5) * k**2 / n_lf**2 + beta_zero**-0.5)
        rho, sqrt_beta_before = sqrt_beta_before / sqrt_beta * rho_full, sqrt_beta
    log_q = (q0.log_prob(z0) + _log_normal(rho0, beta_zero**-0.5)
             - LATENT / 2 * torch.log(torch.as_tensor(beta_zero)))
    return bernoulli_nll(model.decoder(z), x), log_q - _log_normal(z) - _log_normal(rho)


def test_registered_with_its_config():
    model = _small()
    assert get_model_class("hvae") is HVAE and isinstance(model.config, HVAEConfig)
    assert HVAE.has_likelihood
    cfg = model.config
    assert (cfg.n_lf, cfg.eps_lf, cfg.beta_zero) == (3, 0.001, 0.3)  # pythae's defaults
    assert not cfg.learn_eps_lf and not cfg.learn_beta_zero
    assert all(name.startswith(("encoder.", "decoder.")) for name, _ in model.named_parameters())


def test_leapfrog_is_volume_preserving_and_tempering_scales_by_beta_zero():
    model, x = _tiny_double()
    state = torch.tensor([0.3, -0.8, 1.1, 0.4], dtype=torch.float64)
    plain = jacobian(_flow_map(model, x, 0.3, [1.0] * 4), state)
    assert not torch.allclose(plain, torch.eye(4, dtype=torch.float64), atol=1e-2)
    torch.testing.assert_close(torch.linalg.det(plain), torch.tensor(1.0, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    beta_zero = 0.3
    tempered = jacobian(_flow_map(model, x, 0.3, tempering_schedule(beta_zero**0.5, 3)), state)
    latent_dim = 2
    expected = torch.tensor(beta_zero ** (latent_dim / 2), dtype=torch.float64)
    torch.testing.assert_close(torch.linalg.det(tempered), expected, rtol=1e-12, atol=0)


def test_leapfrog_is_reversible():
    model, x = _tiny_double()
    score = model.joint_score(x)
    z0 = torch.tensor([[0.3, -0.8]], dtype=torch.float64)
    rho0 = torch.tensor([[1.1, 0.4]], dtype=torch.float64)
    z, rho, _ = hamiltonian_flow(z0, rho0, score, 0.3, [1.0] * 6)
    assert (z - z0).abs().max() > 0.1
    z_back, rho_back, _ = hamiltonian_flow(z, -rho, score, 0.3, [1.0] * 6)
    torch.testing.assert_close(z_back, z0, rtol=0, atol=1e-12)
    torch.testing.assert_close(-rho_back, rho0, rtol=0, atol=1e-12)


def test_energy_is_conserved_to_second_order_on_a_quadratic_potential():
    precision = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    z0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    rho0 = torch.tensor([[1.0, 0.3, -0.7]], dtype=torch.float64)

    def energy(z, rho):
        return 0.5 * (precision * z**2).sum() + 0.5 * (rho**2).sum()

    def energy_error(step):  # integrate up to time 1
        n_steps = round(1 / step)
        z, rho, _ = hamiltonian_flow(z0, rho0, lambda z: (-precision * z, None), step,
                                     [1.0] * (n_steps + 1))
        return abs(float(energy(z, rho) - energy(z0, rho0)))

    coarse, fine = energy_error(0.01), energy_error(0.005)
    assert coarse < 1e-4 * float(energy(z0, rho0))
    assert 3.5 < coarse / fine < 4.5


def test_tempering_schedule():
    # sqrt(beta_0) = 1/2: 1 / sqrt(beta_k) = 2 - k^2 / K^2
    assert tempering_schedule(0.5, 2) == pytest.approx([0.5, 1 / 1.75, 1.0])
    assert tempering_schedule(0.5, 1) == pytest.approx([0.5, 1.0])
    assert tempering_schedule(1.0, 3) == pytest.approx([1.0] * 4)


def test_objective_equals_independent_computation():
    model = _small(n_lf=3, eps_lf=0.05, beta_zero=0.5, learn_eps_lf=True,
                   learn_beta_zero=True)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    noise, gamma = torch.randn(1, 6, LATENT)[0], torch.randn(1, 6, LATENT)[0]
    step, beta_zero = model.log_eps_lf.exp(), torch.sigmoid(model.beta_zero_logit)
    torch.testing.assert_close(step, torch.tensor(0.05))
    torch.testing.assert_close(beta_zero, torch.tensor(0.5))
    recon, kl = _reference_terms(model, x, noise, gamma, step, beta_zero)
    assert set(out.terms) == {"recon", "kl"}
    torch.testing.assert_close(out.terms["recon"], recon, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.terms["kl"], kl, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.loss, (recon + kl).mean(), rtol=1e-5, atol=1e-4)
    out.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_the_decoder_runs_once_per_leapfrog_point():
    model = _small(n_lf=4)
    calls = []
    model.decoder.register_forward_hook(lambda *args: calls.append(1))
    model(torch.rand(3, 1, 8, 8))
    assert len(calls) == 4 + 1


def test_without_tempering_and_with_tiny_steps_it_is_the_vae_elbo():
    model = _small(beta_zero=1.0, eps_lf=1e-7)
    vae = create_model("vae", **SMALL)
    vae.load_state_dict(model.state_dict())
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(3)
        hvae_weights = model.log_importance_weights(x, 4)
        torch.manual_seed(3)
        vae_weights = vae.log_importance_weights(x, 4)
    torch.testing.assert_close(hvae_weights, vae_weights, rtol=0, atol=1e-3)


def test_importance_weights_under_no_grad_equal_the_differentiable_ones():
    model = _small(eps_lf=0.05)
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(4)
    with_graph = model.log_importance_weights(x, 3)
    torch.manual_seed(4)
    with torch.no_grad():
        without = model.log_importance_weights(x, 3)
    assert with_graph.shape == (3, 5) and with_graph.requires_grad
    assert not without.requires_grad
    torch.testing.assert_close(without, with_graph.detach())
    torch.manual_seed(5)
    terms = model(x).terms
    torch.manual_seed(5)
    one_draw = model.log_importance_weights(x, 1)[0]
    torch.testing.assert_close(one_draw, -(terms["recon"] + terms["kl"]))


def test_terms_do_not_change_with_batch_size(monkeypatch):
    fix_the_noise(monkeypatch)
    model = _small(eps_lf=0.05)
    x = torch.rand(64, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:8])


def test_likelihood_metrics(digits):
    model = _small(eps_lf=0.05)
    test = digits[1][:40]
    assert_likelihood_bounds(model, test, k=8)
    torch.testing.assert_close(log_likelihood(model, test, k=1, seed=5),
                               elbo(model, test, n_samples=1, seed=5))


def test_training_lowers_the_loss_and_save_load(digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = _small(eps_lf=0.01, learn_eps_lf=True, learn_beta_zero=True)
    assert_training_lowers_the_loss(model, x_train, x_test)
    assert model.eps_lf.item() != pytest.approx(0.01, rel=1e-4)  # both were learned
    assert model.beta_zero.item() != pytest.approx(0.3, rel=1e-4)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is HVAE and loaded.config == model.config
    assert torch.equal(loaded.eps_lf, model.eps_lf)
    assert torch.equal(loaded.beta_zero, model.beta_zero)
    model.eval()
    outputs = []
    for m in (model, loaded):
        torch.manual_seed(3)
        outputs.append((m(x_test[:32]).terms, m.log_importance_weights(x_test[:8], 4)))
    for key in outputs[0][0]:
        assert torch.equal(outputs[0][0][key], outputs[1][0][key])
    assert torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize("fields,field", [
    ({"n_lf": 0}, "n_lf"),
    ({"eps_lf": 0.0}, "eps_lf"),
    ({"eps_lf": -0.1}, "eps_lf"),
    ({"beta_zero": 0.0}, "beta_zero"),
    ({"beta_zero": 1.5}, "beta_zero"),
    ({"beta_zero": 1.0, "learn_beta_zero": True}, "beta_zero"),
])
def test_invalid_config_names_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        create_model("hvae", input_dim=(1, 8, 8), **fields)


def test_trains_from_the_command_line(tmp_path):
    metrics = assert_trains_from_the_cli("hvae", tmp_path / "hvae", "--latent-dim", "4")
    assert metrics["likelihood"]["log_likelihood"] >= metrics["likelihood"]["elbo"]

"""vae_linnf (planar / radial flows) and vae_iaf (inverse autoregressive flow)."""

import math

import pytest
import torch
from model_checks import (
    assert_likelihood_bounds,
    assert_round_trip,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
)
from references import bernoulli_nll
from test_flows import jacobian_log_dets
from torch.distributions import Independent, Normal

from vaebench import create_model
from vaebench.data import load_dataset
from vaebench.distributions import DiagonalGaussian
from vaebench.flows import IAFStep, PlanarFlow, RadialFlow
from vaebench.metrics import elbo, log_likelihood

MODELS = ["vae_linnf", "vae_iaf"]
LATENT = 4
OPTIONS = {"vae_linnf": {"flows": ("planar", "radial", "planar")},
           "vae_iaf": {"iaf_steps": 2, "made_hidden": (32,), "context_dim": 8}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


@pytest.fixture
def mean_codes(monkeypatch):
    """Base draws z_0 at the posterior mean, so per-sample terms are deterministic."""
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, sample_shape=(): self.mean.expand(sample_shape
                                                                       + self.mean.shape))


def _small(name):
    return create_model(name, input_dim=(1, 8, 8), latent_dim=LATENT, likelihood="bernoulli",
                        encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]},
                        **OPTIONS[name])


def _encoder_split(model, x):
    """Base mean, standard deviation and context (None without one) from the encoder."""
    params = model.encoder(x)
    mean, log_var = params[:, :LATENT], params[:, LATENT:2 * LATENT]
    context = params[:, 2 * LATENT:]
    return mean, torch.exp(0.5 * log_var), context if context.shape[1] else None


def _reference_draw(model, x, eps):
    """z_K and log q_K(z_K | x) for base noise eps (B, D): q_0 from torch.distributions and
    the log-determinant from the flow's autograd Jacobian."""
    mean, std, context = _encoder_split(model, x)
    z0 = mean + eps * std
    z = model.flow(z0, context)[0]
    log_q = Independent(Normal(mean, std), 1).log_prob(z0) - jacobian_log_dets(
        model.flow, z0, context)
    return z, log_q


def _log_prior(z):
    return Independent(Normal(torch.zeros(LATENT), 1.0), 1).log_prob(z)


def test_the_flows_are_built_from_the_config():
    linnf, iaf = _small("vae_linnf"), _small("vae_iaf")
    assert [type(f) for f in linnf.flow.flows] == [PlanarFlow, RadialFlow, PlanarFlow]
    assert [type(f) for f in iaf.flow.flows] == [IAFStep, IAFStep]
    assert iaf.encoder(torch.rand(2, 1, 8, 8)).shape == (2, 2 * LATENT + 8)
    assert iaf.flow.flows[0].made.context.in_features == 8


@pytest.mark.parametrize("name", MODELS)
def test_objective_equals_independent_computation(name):
    model = _small(name)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    z, log_q = _reference_draw(model, x, torch.randn(6, LATENT))
    recon, kl = bernoulli_nll(model.decoder(z), x), log_q - _log_prior(z)
    assert set(out.terms) == {"recon", "kl"}
    torch.testing.assert_close(out.z, z)
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + kl).mean())
    out.loss.backward()  # the flow is trained (a radial centre only once beta leaves 0)
    grads = {key: p.grad for key, p in model.flow.named_parameters() if not key.endswith("z0")}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    if name == "vae_iaf":  # the context rows of the encoder's last layer
        assert model.encoder.net[-1].weight.grad[2 * LATENT:].abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_importance_weights_use_the_flow_posterior(name):
    model = _small(name)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(3)
        log_w = model.log_importance_weights(x, 3)
        torch.manual_seed(3)
        eps = torch.randn(3, 5, LATENT)
    for j in range(3):  # each draw on its own
        z, log_q = _reference_draw(model, x, eps[j])
        expected = -bernoulli_nll(model.decoder(z), x) + _log_prior(z) - log_q
        torch.testing.assert_close(log_w[j], expected.detach(), rtol=1e-5, atol=1e-4)
    torch.manual_seed(4)
    terms = model(x).terms
    torch.manual_seed(4)
    one_draw = model.log_importance_weights(x, 1)[0]
    torch.testing.assert_close(one_draw, -(terms["recon"] + terms["kl"]))  # the same machinery


@pytest.mark.parametrize("name", MODELS)
def test_likelihood_metrics(name, digits):
    model = _small(name)
    test = digits[1][:40]
    report = assert_likelihood_bounds(model, test, k=16)
    assert math.isfinite(report["elbo"])
    torch.testing.assert_close(log_likelihood(model, test, k=1, seed=5),
                               elbo(model, test, n_samples=1, seed=5))


@pytest.mark.parametrize("name", MODELS)
def test_terms_do_not_change_with_batch_size(name, mean_codes):
    model = _small(name)
    x = torch.rand(64, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:8])


@pytest.mark.parametrize("name", MODELS)
def test_posterior_mean_is_the_flow_of_the_base_mean(name):
    model = _small(name).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        mean, _, context = _encoder_split(model, x)
        code = model.flow(mean, context)[0]
        torch.testing.assert_close(model.encode(x).mean, code)
        torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(model.decoder(code)))


@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss_and_save_load(name, digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = _small(name)
    assert_training_lowers_the_loss(model, x_train, x_test)
    loaded = assert_round_trip(model, tmp_path / "m", x_test[:32])
    outputs = []
    for m in (model, loaded):
        torch.manual_seed(3)
        outputs.append((m.log_importance_weights(x_test[:8], 4), m.reconstruct(x_test[:8])))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


def test_iaf_without_context():
    model = create_model("vae_iaf", input_dim=(1, 8, 8), latent_dim=2, context_dim=0,
                         made_hidden=(8,))
    assert model.flow.flows[0].made.context is None
    assert model(torch.rand(3, 1, 8, 8)).terms["kl"].shape == (3,)


@pytest.mark.parametrize("name,fields,field", [
    ("vae_linnf", {"flows": ("planar", "sylvester")}, "flows"),
    ("vae_linnf", {"flows": ()}, "flows"),
    ("vae_iaf", {"iaf_steps": 0}, "iaf_steps"),
    ("vae_iaf", {"made_hidden": (16, 0)}, "made_hidden"),
    ("vae_iaf", {"context_dim": -1}, "context_dim"),
])
def test_invalid_config_names_the_field(name, fields, field):
    with pytest.raises(ValueError, match=field):
        create_model(name, input_dim=(1, 8, 8), **fields)


@pytest.mark.parametrize("name", MODELS)
def test_trains_from_the_command_line(name, tmp_path):
    metrics = assert_trains_from_the_cli(name, tmp_path / name, "--latent-dim", "4")
    assert metrics["likelihood"]["log_likelihood"] >= metrics["likelihood"]["elbo"]

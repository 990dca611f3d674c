"""iwae, miwae, piwae and ciwae: importance-weighted bounds."""

import copy
import io
import math

import pytest
import torch
from model_checks import (
    assert_round_trip,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
)
from references import reference_posterior
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

from vaebench import VAE, Trainer, TrainerConfig, VAEConfig, create_model
from vaebench.data import load_dataset
from vaebench.distributions import DiagonalGaussian

MODELS = ["iwae", "miwae", "piwae", "ciwae"]
# few draws, so every test stays fast; M != K so that a mix-up of the two shows
SMALL = {"iwae": {"k": 6}, "miwae": {"m": 3, "k": 4}, "piwae": {"m": 3, "k": 4},
         "ciwae": {"k": 6, "beta": 0.3}}
PRIOR = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


def _model(name, **fields):
    defaults = {"input_dim": (1, 8, 8), "latent_dim": 3, "likelihood": "bernoulli"}
    return create_model(name, **{**defaults, **SMALL[name], **fields})


def _binary(n):
    return (torch.rand(n, 1, 8, 8) > 0.5).float()


def _num_draws(model):
    return model.config.k * getattr(model.config, "m", 1)


def _bernoulli_draws(model, x, draws):
    """log p(x | z), log p(z), log q(z | x), each (draws, B), the draws z and the decoder's
    logits, with torch.distributions."""
    q = reference_posterior(model, x)
    z = q.rsample((draws,))
    logits = model.decoder(z.flatten(0, 1)).unflatten(0, (draws, x.shape[0]))
    log_px = Independent(Bernoulli(logits=logits), 3).log_prob(x)
    return log_px, PRIOR.log_prob(z), q.log_prob(z), z, logits


def _bound(log_w, groups):
    """(1/M) sum_m log (1/K) sum_k w_mk, one group of consecutive draws at a time."""
    k = log_w.shape[0] // groups
    per_group = [torch.logsumexp(log_w[m * k:(m + 1) * k], 0) - math.log(k)
                 for m in range(groups)]
    return torch.stack(per_group).mean(0)


def _negative_objective(model, log_w):
    """Per sample, the negative bound each model reports (PIWAE: the IWAE over all draws)."""
    if model.name == "miwae":
        return -_bound(log_w, model.config.m)
    if model.name == "ciwae":
        beta = model.config.beta
        return -(beta * log_w.mean(0) + (1 - beta) * _bound(log_w, 1))
    return -_bound(log_w, 1)


def _shift_posterior(model):
    """Move q(z | x) away from the prior (mean about 1, log-variance about -1): a poor
    proposal, on which the KL and the importance weighting are far from 0."""
    last = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.copy_(torch.tensor([1.0] * 3 + [-1.0] * 3))


def _weighted_sum(model, terms):
    weights = model.term_weights()
    return sum(weights.get(name, 1.0) * term for name, term in terms.items())


@pytest.mark.parametrize("name", MODELS)
def test_objective_equals_independent_computation(name):
    model = _model(name)
    x = _binary(7)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    log_px, log_pz, log_qz, z, logits = _bernoulli_draws(model, x, _num_draws(model))
    log_w = log_px + log_pz - log_qz
    expected = _negative_objective(model, log_w)
    assert all(term.shape == (7,) for term in out.terms.values())
    torch.testing.assert_close(out.terms["recon"], -log_px.mean(0))
    torch.testing.assert_close(out.terms["kl"], (log_qz - log_pz).mean(0))
    torch.testing.assert_close(_weighted_sum(model, out.terms), expected)
    torch.testing.assert_close(out.loss, expected.mean())
    torch.testing.assert_close(out.recon_loss, -log_px.mean())
    torch.testing.assert_close(out.z, z[0])
    torch.testing.assert_close(out.recon_x, torch.sigmoid(logits[0]))
    if name == "piwae":
        torch.testing.assert_close(out.terms["miwae_gap"], _bound(log_w, 1) - _bound(log_w, 3))
    assert model.has_likelihood


def test_k1_iwae_is_the_vae_elbo_estimate():
    iwae = _model("iwae", k=1)
    vae = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=3, likelihood="bernoulli"))
    vae.load_state_dict(iwae.state_dict())
    x = _binary(9)
    torch.manual_seed(4)
    out = iwae(x)
    torch.manual_seed(4)
    vae_out = vae(x)
    torch.manual_seed(4)
    log_w = vae.log_importance_weights(x, 1)[0]
    torch.testing.assert_close(out.terms["iw_gap"], torch.zeros(9))
    torch.testing.assert_close(out.terms["recon"], vae_out.terms["recon"])
    torch.testing.assert_close(_weighted_sum(iwae, out.terms), -log_w)
    torch.testing.assert_close(out.z, vae_out.z)


def test_kl_term_is_an_unbiased_estimate_of_the_closed_form_kl():
    model = _model("iwae", k=4000)
    _shift_posterior(model)
    x = _binary(5)
    closed_form = model.encode(x).kl_standard_normal()
    assert (closed_form > 1).all()
    torch.testing.assert_close(model(x).terms["kl"], closed_form, atol=0.15, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_terms_are_per_sample(name, monkeypatch):
    model = _model(name)
    x = _binary(8)
    other = torch.cat([x[:4], _binary(4)])
    torch.manual_seed(5)
    terms = model(x).terms
    torch.manual_seed(5)
    changed = model(other).terms
    for key in terms:  # same noise: the other samples of the batch do not matter
        torch.testing.assert_close(terms[key][:4], changed[key][:4])
    noise = torch.randn(_num_draws(model), 1, 3)  # draw s has the same noise in any batch
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, shape=(): self.mean + noise[:shape[0]] * self.std)
    small, large = model(x[:3]).terms, model(x).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:3])


def test_bound_is_at_least_the_elbo_and_grows_with_k(digits):
    x = digits[1][:200]
    base = _model("iwae", k=1)
    _shift_posterior(base)
    bounds = []
    for k in (1, 5, 50):
        model = _model("iwae", k=k)
        model.load_state_dict(base.state_dict())
        torch.manual_seed(k)
        with torch.no_grad():
            out = model(x)
        assert (out.terms["iw_gap"] <= 0).all()  # per sample, on the same draws
        bounds.append(-float(out.loss))
    assert bounds[0] < bounds[1] < bounds[2]  # Burda et al. 2016, Theorem 1, on average


def test_ciwae_interpolates_between_the_elbo_and_the_iwae():
    iwae = _model("iwae")
    x = _binary(8)
    torch.manual_seed(6)
    log_w = iwae.log_importance_weights(x, 6)
    torch.manual_seed(6)
    iwae_loss = _weighted_sum(iwae, iwae(x).terms)
    for beta, expected in ((1.0, -log_w.mean(0)), (0.0, iwae_loss)):
        ciwae = _model("ciwae", beta=beta)
        ciwae.load_state_dict(iwae.state_dict())
        torch.manual_seed(6)
        out = ciwae(x)
        torch.testing.assert_close(_weighted_sum(ciwae, out.terms), expected)
        torch.testing.assert_close(out.loss, expected.mean())


@pytest.mark.parametrize("name,fields,field", [
    ("ciwae", {"beta": -0.1}, "beta"),
    ("ciwae", {"beta": 1.5}, "beta"),
    ("iwae", {"k": 0}, "k"),
    ("miwae", {"m": 0}, "m"),
    ("piwae", {"k": 0}, "k"),
    ("iwae", {"kl_schedule": "linear", "kl_anneal_steps": 10}, "kl_schedule"),
])
def test_invalid_config_names_the_field(name, fields, field):
    with pytest.raises(ValueError, match=rf"(?m)^{field}$|{field} must"):
        _model(name, **fields)


def test_piwae_groups_partition_the_parameters():
    model = create_model("piwae", input_dim=(1, 8, 8), latent_dim=3, sigma="learned")
    groups = model.parameter_groups()
    assert set(groups) == {"decoder", "encoder"}
    ids = {name: [id(p) for p in params] for name, params in groups.items()}
    assert set(ids["encoder"]) == {id(p) for p in model.encoder.parameters()}
    assert id(model.likelihood.log_scale_param) in ids["decoder"]
    assert {id(p) for p in model.decoder.parameters()} < set(ids["decoder"])
    assert not set(ids["encoder"]) & set(ids["decoder"])
    assert len(ids["encoder"]) + len(ids["decoder"]) == len(list(model.parameters()))


def test_piwae_step_follows_iwae_for_the_decoder_and_miwae_for_the_encoder():
    model = create_model("piwae", input_dim=(1, 8, 8), latent_dim=3, m=3, k=4,
                         sigma="learned", encoder_kwargs={"hidden": [16]},
                         decoder_kwargs={"hidden": [16]})
    before = copy.deepcopy(model)
    seen = {}

    def recording_step(x, update, **inputs):
        seen["x"], seen["rng"] = x.clone(), torch.get_rng_state()
        return type(model).training_step(model, x, update, **inputs)

    model.training_step = recording_step
    Trainer(model, TrainerConfig(epochs=1, batch_size=6, optimizer="sgd", learning_rate=1.0,
                                 device="cpu", progress=False)).fit(torch.rand(6, 1, 8, 8))
    # replay the step's draws on the weights before it, with torch.distributions
    torch.set_rng_state(seen["rng"])
    x = seen["x"]
    q = reference_posterior(before, x)
    z = q.rsample((12,))
    mean = before.decoder(z.flatten(0, 1)).unflatten(0, (12, 6))
    sigma = before.likelihood.log_scale().exp().expand_as(mean)
    log_w = Independent(Normal(mean, sigma), 3).log_prob(x) + PRIOR.log_prob(z) - q.log_prob(z)
    iwae_loss, miwae_loss = -_bound(log_w, 1).mean(), -_bound(log_w, 3).mean()
    old, new = before.parameter_groups(), model.parameter_groups()
    for group, loss, other in (("decoder", iwae_loss, miwae_loss),
                               ("encoder", miwae_loss, iwae_loss)):
        grads = torch.autograd.grad(loss, old[group], retain_graph=True)
        wrong = torch.autograd.grad(other, old[group], retain_graph=True)
        changes = [(p0 - p1).detach() for p0, p1 in zip(old[group], new[group], strict=True)]
        for change, grad in zip(changes, grads, strict=True):  # SGD, lr 1: change = grad
            torch.testing.assert_close(change, grad, atol=1e-5, rtol=1e-4)
        assert not all(torch.allclose(c, g, atol=1e-5, rtol=1e-4)
                       for c, g in zip(changes, wrong, strict=True))


@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss_and_save_load(name, digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = _model(name, latent_dim=4, encoder_kwargs={"hidden": [64]},
                   decoder_kwargs={"hidden": [64]})
    assert_training_lowers_the_loss(model, x_train, x_test)
    assert_round_trip(model, tmp_path / "m", x_test[:32])


def test_trains_from_the_command_line(tmp_path):
    for name in MODELS:
        metrics = assert_trains_from_the_cli(name, tmp_path / name, "--latent-dim", "4")
        assert {"recon", "kl", "iw_gap"} <= set(metrics["eval_terms"])
        assert math.isfinite(metrics["test_elbo"])


def test_piwae_resumes_exactly_with_both_optimizers(digits, tmp_path):
    x_train, x_test = digits[0][:256], digits[1][:64]
    config = {"epochs": 3, "batch_size": 64, "progress": False}
    torch.manual_seed(0)
    full = _model("piwae")
    Trainer(full, TrainerConfig(**config)).fit(x_train, x_test)
    torch.manual_seed(0)
    first = _model("piwae")
    Trainer(first, TrainerConfig(**config, checkpoint_every=1, output_dir=str(tmp_path))).fit(
        x_train, x_test)
    torch.manual_seed(5)
    resumed = _model("piwae")
    Trainer(resumed, TrainerConfig(**config)).fit(
        x_train, x_test, resume_from=tmp_path / "checkpoints" / "epoch_0001")
    checkpoint = tmp_path / "checkpoints" / "epoch_0001"
    assert sorted(p.name for p in checkpoint.glob("optimizer_*")) == [
        "optimizer_decoder.safetensors", "optimizer_encoder.safetensors"]
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


def test_new_models_run_in_the_benchmark(tmp_path):
    from vaebench.benchmark import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig(models=["iwae", "piwae", "vae_iaf"], datasets=["digits"], seeds=1,
                             epochs=1, latent_dim=3, likelihood="bernoulli", iwae_k=4,
                             metrics=["loss", "likelihood"], train_size=256,
                             output=str(tmp_path))
    results = run_benchmark(config, stream=io.StringIO())
    for result in results:
        assert result["status"] == "ok", result["error"]
        likelihood = result["metrics"]["likelihood"]
        assert math.isfinite(likelihood["log_likelihood"])
        assert likelihood["log_likelihood"] >= likelihood["elbo"] - 1e-6

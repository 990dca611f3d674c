"""The adversarial autoencoder and the VAE-GAN: their terms against computations by hand
from the networks, each group's update against an SGD step on its own loss, batch
invariance, save / load, training and the command line."""

import math

import pytest
import torch
from model_checks import (
    assert_round_trip,
    assert_terms_batch_invariant,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
)
from references import bernoulli_nll
from torch.distributions import Independent, Normal, kl_divergence

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_dataset
from vaebench.distributions import DiagonalGaussian, StandardNormal
from vaebench.metrics import has_likelihood, likelihood_report, reconstruction_mse
from vaebench.models.adversarial import VAEGAN, AdversarialAE  # registers both

SMALL = {"input_dim": (1, 8, 8), "latent_dim": 4, "likelihood": "bernoulli",
         "encoder_kwargs": {"hidden": [32]}, "decoder_kwargs": {"hidden": [32]},
         "discriminator_hidden": 32}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


def _aae(**fields):
    return create_model("adversarial_ae", **{**SMALL, **fields})


def _vaegan(**fields):
    return create_model("vaegan", **{**SMALL, **fields})


def _log_prob_prior_class(logits):
    """log of the first class's softmax probability, written out."""
    return logits[:, 0] - torch.logsumexp(logits, dim=1)


def _aae_codes_by_hand(model, x):
    """The code of each x: the encoder output, or a reparameterized Gaussian draw from it
    (mean, log-variance) made with torch.distributions."""
    out = model.encoder(x)
    if model.config.posterior == "deterministic":
        return out
    mean, log_var = out.chunk(2, dim=1)
    return Normal(mean, torch.exp(0.5 * log_var)).rsample()


def _mlp_by_hand(discriminator, images, feature_layer):
    """Features of hidden layer ``feature_layer`` and the logits of the VAE-GAN's
    discriminator, from its linear layers: each hidden layer is layer norm then leaky ReLU."""
    linears = [m for m in discriminator.modules() if isinstance(m, torch.nn.Linear)]
    h = images.flatten(1)
    for depth, linear in enumerate(linears[:-1], 1):
        h = linear(h)
        h = (h - h.mean(1, keepdim=True)) / torch.sqrt(h.var(1, unbiased=False, keepdim=True)
                                                         + 1e-5)
        h = torch.where(h > 0, h, 0.2 * h)
        if depth == feature_layer:
            features = h
    return features, linears[-1](h)


def _vaegan_terms_by_hand(model, x):
    """The VAE-GAN's per-sample terms from its networks; draws as the model makes them (the
    posterior draw, then the prior draw) from the current random state."""
    mean, log_var = model.encoder(x).chunk(2, dim=1)
    q = Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)
    z = q.rsample()
    z_prior = torch.randn(x.shape[0], model.config.latent_dim)
    reconstruction = torch.sigmoid(model.decoder(z))
    generated = torch.sigmoid(model.decoder(z_prior))
    layer = model.config.feature_layer
    real_features, real_logits = _mlp_by_hand(model.discriminator, x, layer)
    rec_features, rec_logits = _mlp_by_hand(model.discriminator, reconstruction, layer)
    _, gen_logits = _mlp_by_hand(model.discriminator, generated, layer)

    def dis(logits):  # Dis(.): the probability of "real"
        return torch.softmax(logits, dim=1)[:, 0]

    prior = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    return {
        "recon": -Normal(rec_features, 1.0).log_prob(real_features).sum(1),
        "kl": kl_divergence(q, prior),
        "gan_real": -torch.log(dis(real_logits)),
        "gan_reconstruction": -torch.log(1 - dis(rec_logits)),
        "gan_prior": -torch.log(1 - dis(gen_logits)),
    }


def _sgd_update(model, lr):
    """The trainer's ``update`` with plain SGD at rate ``lr`` for every group."""
    trainer = Trainer(model, TrainerConfig(optimizer="sgd", learning_rate=lr, progress=False))
    optimizers = trainer._build_optimizers()
    return trainer._update(optimizers, dict.fromkeys(optimizers))


def _assert_sgd_steps(model, before, group_grads, lr):
    """Each group's parameters moved by -lr times the gradient of that group's loss."""
    groups = model.parameter_groups()
    for name, grads in group_grads.items():
        for param, grad in zip(groups[name], grads, strict=True):
            expected = before[id(param)] - lr * (0 if grad is None else grad)
            torch.testing.assert_close(param.detach(), expected, rtol=1e-5, atol=1e-6)


# --- adversarial autoencoder ---------------------------------------------------------------

@pytest.mark.parametrize("posterior", ["deterministic", "gaussian"])
def test_aae_terms_equal_a_computation_by_hand(posterior):
    model = _aae(posterior=posterior, adversarial_weight=0.3)
    x = torch.rand(10, 1, 8, 8)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    z = _aae_codes_by_hand(model, x)
    recon = bernoulli_nll(model.decoder(z), x)
    adversarial = -_log_prob_prior_class(model.discriminator(z))  # -log D(z)
    assert set(out.terms) == {"recon", "adversarial"}
    torch.testing.assert_close(out.z, z)
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["adversarial"], adversarial)
    torch.testing.assert_close(out.loss, (recon + 0.3 * adversarial).mean())


def test_aae_discriminator_loss_formula():
    model = _aae()
    codes = torch.randn(16, 4, requires_grad=True)
    torch.manual_seed(2)
    loss = model.discriminator_loss(codes)
    torch.manual_seed(2)
    draws = torch.randn(16, 4)
    log_d_draws = _log_prob_prior_class(model.discriminator(draws))
    log_d_codes = _log_prob_prior_class(model.discriminator(codes.detach()))
    # Makhzani et al. 2016, Sec. 2: D tells prior draws (D = 1) from codes (D = 0)
    expected = -0.5 * (log_d_draws.mean() + torch.log1p(-log_d_codes.exp()).mean())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert codes.grad is None  # the codes are detached: only D learns from this loss


def test_aae_step_moves_each_group_by_its_own_loss():
    torch.manual_seed(0)
    model = _aae(posterior="gaussian")
    groups = model.parameter_groups()
    critic = {id(p) for p in model.discriminator.parameters()}
    assert {id(p) for p in groups["discriminator"]} == critic
    assert {id(p) for p in groups["model"]} == {id(p) for p in model.parameters()} - critic
    x = torch.rand(32, 1, 8, 8)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    torch.manual_seed(5)
    out = model(x)
    model_grads = torch.autograd.grad(out.loss, groups["model"], allow_unused=True)
    critic_loss = model.discriminator_loss(out.z)
    critic_grads = torch.autograd.grad(critic_loss, groups["discriminator"])
    assert all(g is not None for g in model_grads)  # the loss reaches the whole model
    torch.manual_seed(5)
    model.on_epoch_start()
    model.training_step(x, _sgd_update(model, lr=0.1))
    _assert_sgd_steps(model, before, {"model": model_grads, "discriminator": critic_grads},
                      lr=0.1)
    assert model.epoch_metrics() == {"discriminator_loss": pytest.approx(critic_loss.item())}


@pytest.mark.parametrize("posterior", ["deterministic", "gaussian"])
def test_aae_terms_do_not_change_with_batch_size(monkeypatch, posterior):
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, shape=(): self.mean.expand(shape + self.mean.shape))
    assert_terms_batch_invariant(_aae(posterior=posterior).eval(), torch.rand(64, 1, 8, 8))


def test_aae_trains_matches_codes_to_the_prior_and_round_trips(digits, tmp_path):
    """Training lowers the loss; the adversarial term brings the codes' distribution nearer
    N(0, I) than the same autoencoder without it (KL of the codes' fitted Gaussian)."""
    x_train, x_test = digits

    def fitted_kl(model):
        with torch.no_grad():
            z = model.encode(x_test).mean
        mean, cov = z.mean(0), torch.cov(z.T)
        return 0.5 * float(torch.trace(cov) + mean @ mean - len(mean) - torch.logdet(cov))

    kls = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = _aae(adversarial_weight=weight, discriminator_hidden=256)
        history = assert_training_lowers_the_loss(model, x_train, x_test, epochs=12)
        kls[weight] = fitted_kl(model)
    assert 0 < history[-1]["train_discriminator_loss"] < 1.0
    assert kls[0.5] < 0.5 * kls[0.0]
    assert_round_trip(model, tmp_path / "m", x_test[:32])


def test_aae_config_and_likelihood():
    assert not has_likelihood(_aae())
    assert _aae(posterior="gaussian").encoder(torch.rand(2, 1, 8, 8)).shape == (2, 8)
    for fields, field in (({"adversarial_weight": -1.0}, "adversarial_weight"),
                          ({"posterior": "flow"}, "posterior"),
                          ({"discriminator_layers": 0}, "discriminator_layers")):
        with pytest.raises(ValueError, match=field):
            _aae(**fields)


def test_aae_trains_from_the_cli(tmp_path):
    metrics = assert_trains_from_the_cli("adversarial_ae", tmp_path / "run")
    assert set(metrics["eval_terms"]) == {"recon", "adversarial"}


# --- VAE-GAN ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layers,feature_layer", [(2, 1), (3, 3)])
def test_vaegan_terms_equal_a_computation_by_hand(layers, feature_layer):
    model = _vaegan(discriminator_layers=layers, feature_layer=feature_layer)
    x = torch.rand(10, 1, 8, 8)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    expected = _vaegan_terms_by_hand(model, x)
    assert out.terms.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(out.terms[key], value, rtol=1e-4, atol=1e-4)
    # the reported loss is the encoder's: L_prior + L_llike
    torch.testing.assert_close(out.loss, (expected["recon"] + expected["kl"]).mean())


def test_vaegan_step_moves_each_group_by_its_own_loss():
    """Algorithm 1 of Larsen et al. 2016: the encoder descends L_prior + L_llike, the
    decoder gamma L_llike - L_GAN, the discriminator L_GAN (its cross-entropy)."""
    torch.manual_seed(0)
    model = _vaegan(reconstruction_weight=0.7)
    groups = model.parameter_groups()
    ids = {name: {id(p) for p in params} for name, params in groups.items()}
    assert ids["encoder"] == {id(p) for p in model.encoder.parameters()}
    assert ids["discriminator"] == {id(p) for p in model.discriminator.parameters()}
    assert ids["decoder"] == {id(p) for p in model.parameters()} - ids["encoder"] - \
        ids["discriminator"]
    x = torch.rand(32, 1, 8, 8)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    torch.manual_seed(5)
    terms = {k: v.mean() for k, v in _vaegan_terms_by_hand(model, x).items()}
    gan = terms["gan_real"] + terms["gan_reconstruction"] + terms["gan_prior"]
    losses = {"encoder": terms["kl"] + terms["recon"],
              "decoder": 0.7 * terms["recon"] - gan,
              "discriminator": gan}
    grads = {name: torch.autograd.grad(loss, groups[name], retain_graph=True)
             for name, loss in losses.items()}
    torch.manual_seed(5)
    model.training_step(x, _sgd_update(model, lr=0.05))
    _assert_sgd_steps(model, before, grads, lr=0.05)


def test_vaegan_terms_do_not_change_with_batch_size(monkeypatch):
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, shape=(): self.mean.expand(shape + self.mean.shape))
    monkeypatch.setattr(StandardNormal, "sample", lambda self, n, device="cpu": torch.sin(
        torch.arange(n * 4, dtype=torch.float32)).view(n, 4))
    assert_terms_batch_invariant(_vaegan().eval(), torch.rand(64, 1, 8, 8))


def test_vaegan_trains_reconstructs_and_round_trips(digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    # 256 features for 64 pixels: with a few dozen, the KL outweighs the reconstruction
    model = _vaegan(discriminator_hidden=256, encoder_kwargs={"hidden": [64]},
                    decoder_kwargs={"hidden": [64]})
    before = reconstruction_mse(model, x_test)
    # keep_best=False: the eval loss is measured in features that change with training
    config = TrainerConfig(epochs=12, batch_size=64, progress=False, keep_best=False)
    history = Trainer(model, config).fit(x_train, x_test)
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert reconstruction_mse(model, x_test) < 0.5 * before
    assert_round_trip(model, tmp_path / "m", x_test[:32])


def test_vaegan_has_no_likelihood_and_validates_its_config():
    model = _vaegan()
    assert isinstance(model, VAEGAN) and not isinstance(model, AdversarialAE)
    assert not has_likelihood(model)
    with pytest.raises(TypeError, match="discriminator features"):
        likelihood_report(model, torch.rand(4, 1, 8, 8), k=2)
    for fields, field in (({"feature_layer": 3}, "feature_layer"),
                          ({"reconstruction_weight": -1.0}, "reconstruction_weight"),
                          ({"discriminator_hidden": 0}, "discriminator_hidden")):
        with pytest.raises(ValueError, match=field):
            _vaegan(**fields)


def test_vaegan_trains_from_the_cli(tmp_path):
    metrics = assert_trains_from_the_cli("vaegan", tmp_path / "run")
    assert set(metrics["eval_terms"]) == {"recon", "kl", "gan_real", "gan_reconstruction",
                                          "gan_prior"}
    assert "test_elbo" not in metrics

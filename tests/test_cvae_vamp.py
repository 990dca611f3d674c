"""cvae (conditional VAE) and vamp (VampPrior)."""

import math

import pytest
import torch
import torch.nn.functional as F
from custom_nets import TinyDecoder, TinyEncoder
from model_checks import (
    assert_round_trip,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
)
from references import bernoulli_nll, reference_posterior
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import as_data, load_dataset
from vaebench.distributions import DiagonalGaussian
from vaebench.models.vamp import VampPrior
from vaebench.nn import ConvEncoder


@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), (x_test, y_test) = (load_dataset("digits", s) for s in ("train", "test"))
    return x_train, y_train, x_test, y_test


@pytest.fixture
def mean_codes(monkeypatch):
    """Codes at the posterior mean, so per-sample terms are deterministic."""
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, sample_shape=(): self.mean.expand(sample_shape
                                                                       + self.mean.shape))


def _small(name, **kw):
    return create_model(name, input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                        encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]}, **kw)


# --- VampPrior -----------------------------------------------------------------------------
def _reference_prior(model):
    mean, log_var = model.encoder(model.prior.pseudo_inputs).chunk(2, dim=1)
    k = mean.shape[0]
    return MixtureSameFamily(Categorical(logits=torch.zeros(k)),
                             Independent(Normal(mean, torch.exp(0.5 * log_var)), 1))


def test_vamp_log_prob_is_the_mixture_of_pseudo_input_posteriors():
    model = create_model("vamp", input_dim=(1, 8, 8), latent_dim=3, num_pseudo_inputs=7)
    assert isinstance(model.prior, VampPrior)
    assert model.prior.pseudo_inputs.shape == (7, 1, 8, 8)
    reference = _reference_prior(model)
    for shape in [(5, 3), (4, 5, 3)]:
        z = torch.randn(shape)
        torch.testing.assert_close(model.prior.log_prob(z), reference.log_prob(z))


def test_vamp_kl_is_the_monte_carlo_estimate():
    model = create_model("vamp", input_dim=(1, 8, 8), latent_dim=3, num_pseudo_inputs=5,
                         likelihood="bernoulli")
    x = torch.rand(9, 1, 8, 8)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    q = reference_posterior(model, x)
    z = q.rsample()
    kl = q.log_prob(z) - _reference_prior(model).log_prob(z)
    recon = bernoulli_nll(model.decoder(z), x)
    assert set(out.terms) == {"recon", "kl"}
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + kl).mean())
    out.loss.backward()  # the pseudo-inputs are learned
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0


def test_vamp_prior_samples_come_from_the_components():
    model = create_model("vamp", input_dim=(1, 8, 8), latent_dim=2, num_pseudo_inputs=1)
    with torch.no_grad():
        mean = model.encoder(model.prior.pseudo_inputs).chunk(2, dim=1)[0][0]
        z = model.prior.sample(4000)
    assert z.shape == (4000, 2)
    torch.testing.assert_close(z.mean(0), mean, atol=0.1, rtol=0)
    assert model.generate(6).shape == (6, 1, 8, 8)
    if hasattr(model, "log_importance_weights"):  # importance sampling through self.prior
        assert model.log_importance_weights(torch.rand(3, 1, 8, 8), 4).shape == (4, 3)


def test_vamp_pseudo_input_initialisation(digits):
    x_train = digits[0]
    model = create_model("vamp", input_dim=(1, 8, 8), latent_dim=2, num_pseudo_inputs=6)
    uniform = model.prior.pseudo_inputs.detach().clone()
    assert uniform.min() >= 0 and uniform.max() <= 1
    model.prepare(as_data(x_train))  # "data": six training samples
    rows = model.prior.pseudo_inputs.detach()
    assert all((x_train == row).flatten(1).all(1).any() for row in rows)
    model.num_steps.fill_(3)
    before = rows.clone()
    model.prepare(as_data(x_train))  # a trained model keeps its pseudo-inputs
    assert torch.equal(model.prior.pseudo_inputs.detach(), before)
    fixed = create_model("vamp", input_dim=(1, 8, 8), latent_dim=2,
                         pseudo_inputs_init="uniform")
    start = fixed.prior.pseudo_inputs.detach().clone()
    fixed.prepare(as_data(x_train))
    assert torch.equal(fixed.prior.pseudo_inputs.detach(), start)


def test_vamp_with_conv_networks():
    model = create_model("vamp", input_dim=(1, 28, 28), latent_dim=3, encoder="conv",
                         decoder="conv", num_pseudo_inputs=4)
    assert isinstance(model.encoder, ConvEncoder)
    out = model(torch.rand(2, 1, 28, 28))
    assert out.terms["kl"].shape == (2,) and torch.isfinite(out.loss)


# --- CVAE ----------------------------------------------------------------------------------
def test_cvae_loss_equals_independent_computation():
    model = create_model("cvae", input_dim=(1, 8, 8), latent_dim=3, num_classes=4)
    x, labels = torch.rand(7, 1, 8, 8), torch.tensor([0, 1, 2, 3, 3, 2, 0])
    torch.manual_seed(6)
    out = model(x, labels)
    torch.manual_seed(6)
    onehot = F.one_hot(labels, 4).float()
    # the built MLP networks take 64 + 4 inputs and 3 + 4 latent inputs
    mean, log_var = model.encoder.net(torch.cat([x.flatten(1), onehot], 1)).chunk(2, dim=1)
    q = Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)
    z = q.rsample()
    decoded = model.decoder.net(torch.cat([z, onehot], 1))
    recon = 0.5 * ((decoded - x) ** 2).flatten(1).sum(1) + 32 * math.log(2 * math.pi)
    kl = kl_divergence(q, Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
    assert set(out.terms) == {"recon", "kl"}
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + kl).mean())
    with pytest.raises(ValueError, match="needs labels"):
        model(x)


def test_cvae_conv_encoder_sees_labels_as_constant_channels():
    model = create_model("cvae", input_dim=(1, 28, 28), latent_dim=3, encoder="conv",
                         decoder="conv", num_classes=3)
    assert model.config.encoder == "conv" and model.config.decoder == "conv"
    seen = {}
    model.encoder.net.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    x, labels = torch.rand(2, 1, 28, 28), torch.tensor([2, 0])
    out = model(x, labels)
    assert out.recon_x.shape == x.shape
    assert seen["x"].shape == (2, 4, 28, 28)
    assert torch.equal(seen["x"][:, :1], x)
    assert torch.equal(seen["x"][0, 1:, 5, 7], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(seen["x"][1, 1:].amax((1, 2)), torch.tensor([1.0, 0.0, 0.0]))


def test_cvae_user_networks():
    model = create_model("cvae", input_dim=(1, 8, 8), latent_dim=4, num_classes=10,
                         encoder=TinyEncoder(11 * 64, 8), decoder=TinyDecoder(14, (1, 8, 8)))
    assert model.config.encoder == "custom_nets:TinyEncoder"
    assert model(torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 9])).terms["kl"].shape == (3,)
    with pytest.raises(ValueError, match="encoder fails"):
        create_model("cvae", input_dim=(1, 8, 8), latent_dim=4, encoder=TinyEncoder(64, 8))


def test_cvae_generation_given_labels():
    torch.manual_seed(0)
    model = _small("cvae")
    torch.manual_seed(1)
    default = model.generate(12)
    torch.manual_seed(1)
    explicit = model.generate(12, labels=torch.arange(12) % 10)
    assert default.shape == (12, 1, 8, 8) and torch.equal(default, explicit)
    torch.manual_seed(1)
    threes = model.generate(12, labels=torch.full((12,), 3))
    assert not torch.allclose(threes, default)  # the label changes the output
    torch.manual_seed(1)
    assert torch.equal(model.generate(12, labels=[3] * 12), threes)


def test_cvae_reconstruct_and_classify():
    model = _small("cvae", num_classes=3)
    x, labels = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    assert model.reconstruct(x, labels).shape == x.shape
    # without labels: the label of highest ELBO at the posterior mean
    scores = []
    for y in range(3):
        ys = torch.full((5,), y)
        q = model.encode(x, ys)
        scores.append(model.likelihood.nll(model.decode(q.mean, ys), x) + q.kl_standard_normal())
    best = torch.stack(scores).argmin(0)
    torch.testing.assert_close(model.classify(x), best)
    torch.testing.assert_close(model.reconstruct(x), model.reconstruct(x, best))
    with pytest.raises(ValueError, match="pass labels"):
        model.log_importance_weights(x, 2)
    assert model.log_importance_weights(x, 2, labels=labels).shape == (2, 5)
    with pytest.raises(ValueError, match="labels must have shape"):
        model(x, labels[:3])


def test_cvae_checks_the_label_range_of_the_training_data():
    model = _small("cvae", num_classes=3)
    with pytest.raises(ValueError, match="num_classes is 3"):
        Trainer(model, TrainerConfig(epochs=1, progress=False)).fit(
            (torch.rand(8, 1, 8, 8), torch.arange(8) % 4))


# --- shared ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vamp", "cvae"])
def test_terms_do_not_change_with_batch_size(name, mean_codes):
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=3)
    x, labels = torch.rand(64, 1, 8, 8), torch.arange(64) % 10
    inputs = (lambda n: {"labels": labels[:n]}) if name == "cvae" else (lambda n: {})
    small, large = model(x[:8], **inputs(8)).terms, model(x, **inputs(64)).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:8])


@pytest.mark.parametrize("name", ["vamp", "cvae"])
def test_training_lowers_the_loss_and_save_load(name, digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = _small(name)
    train, test = (x_train, y_train), (x_test, y_test)
    assert_training_lowers_the_loss(model, train, test)
    inputs = {"labels": y_test[:32]} if name == "cvae" else {}
    assert_round_trip(model, tmp_path / "m", x_test[:32], **inputs)


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace", "continuous_bernoulli",
                                        "discretized_logistic"])
def test_every_likelihood(likelihood):
    x, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    vamp = create_model("vamp", input_dim=(1, 8, 8), latent_dim=2, likelihood=likelihood)
    cvae = create_model("cvae", input_dim=(1, 8, 8), latent_dim=2, likelihood=likelihood)
    for out in (vamp(x), cvae(x, labels)):
        assert torch.isfinite(out.loss) and out.recon_x.shape == x.shape
    assert cvae.generate(3).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("name,fields,field", [
    ("vamp", {"num_pseudo_inputs": 0}, "num_pseudo_inputs"),
    ("vamp", {"pseudo_inputs_init": "zeros"}, "pseudo_inputs_init"),
    ("cvae", {"num_classes": 1}, "num_classes"),
    ("cvae", {"latent_dim": 0}, "latent_dim"),
])
def test_invalid_config_names_the_field(name, fields, field):
    with pytest.raises(ValueError, match=field):
        create_model(name, input_dim=(1, 8, 8), **fields)


@pytest.mark.parametrize("name", ["vamp", "cvae"])
def test_trains_from_the_command_line(name, tmp_path):
    assert_trains_from_the_cli(name, tmp_path / name, "--latent-dim", "3")
    assert (tmp_path / name / "samples.png").is_file()

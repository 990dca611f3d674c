import math

import pytest
import torch
import torch.nn.functional as F
from model_checks import assert_terms_batch_invariant, assert_trains_from_the_cli
from references import reference_posterior
from torch.distributions import Independent, Normal, kl_divergence

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.data import load_dataset
from vaebench.distributions import DiagonalGaussian
from vaebench.models.factor_vae import permute_dims
from vaebench.training import evaluate


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


def _model(**kw):
    return create_model("factor_vae", input_dim=(1, 8, 8), latent_dim=4, **kw)


def test_terms_and_tc_is_the_logit_difference():
    model = _model(gamma=7.0, likelihood="bernoulli")
    x = torch.rand(10, 1, 8, 8)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    q = reference_posterior(model, x)
    z = q.rsample()
    logits = model.discriminator(z)
    prob = logits.softmax(1)[:, 0]  # D(z): probability that z comes from q(z)
    tc = torch.log(prob / (1 - prob))
    kl = kl_divergence(q, Independent(Normal(torch.zeros(4), torch.ones(4)), 1))
    recon = F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none")
    recon = recon.flatten(1).sum(1)
    assert set(out.terms) == {"recon", "kl", "tc"}
    torch.testing.assert_close(out.terms["tc"], logits[:, 0] - logits[:, 1])
    torch.testing.assert_close(out.terms["tc"], tc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + kl + 7.0 * tc).mean(), rtol=1e-4, atol=1e-4)


def test_permutation_keeps_each_dimension_multiset():
    z = torch.randn(50, 6)
    permuted = permute_dims(z)
    for j in range(6):
        assert torch.equal(permuted[:, j].sort().values, z[:, j].sort().values)
    assert not torch.equal(permuted, z)
    # dimensions are shuffled independently: rows are broken apart
    rows = {tuple(r.tolist()) for r in z}
    assert sum(tuple(r.tolist()) in rows for r in permuted) < 10


def test_discriminator_loss_formula():
    model = _model()
    z = torch.randn(16, 4, requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    loss = model.discriminator_loss(z, generator=gen)
    permuted = permute_dims(z.detach(), torch.Generator().manual_seed(3))
    log_d = F.log_softmax(model.discriminator(z.detach()), dim=1)
    log_d_perm = F.log_softmax(model.discriminator(permuted), dim=1)
    # Kim and Mnih 2018, Algorithm 2: maximize 1/(2B) sum [log D(z) + log(1 - D(z_perm))]
    expected = -0.5 * (log_d[:, 0].mean() + log_d_perm[:, 1].mean())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert z.grad is None  # the codes are detached: only D learns from this loss


def test_parameter_groups_and_optimizer_defaults():
    model = _model()
    groups = model.parameter_groups()
    assert set(groups) == {"model", "discriminator"}
    disc = {id(p) for p in model.discriminator.parameters()}
    assert {id(p) for p in groups["discriminator"]} == disc
    assert not disc & {id(p) for p in groups["model"]}
    assert len(groups["model"]) + len(groups["discriminator"]) == len(list(model.parameters()))
    optimizers = Trainer(model, TrainerConfig(progress=False))._build_optimizers()
    settings = optimizers["discriminator"].param_groups[0]
    assert isinstance(optimizers["discriminator"], torch.optim.Adam)
    assert settings["lr"] == 1e-4 and tuple(settings["betas"]) == (0.5, 0.9)
    assert optimizers["model"].param_groups[0]["lr"] == 1e-3


def test_discriminator_width_and_depth_from_config():
    model = _model(discriminator_hidden=32, discriminator_layers=5)
    linears = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [32] * 5 + [2]


def test_terms_do_not_change_with_batch_size(monkeypatch):
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, sample_shape=(): self.mean.expand(sample_shape
                                                                       + self.mean.shape))
    assert_terms_batch_invariant(_model(), torch.rand(64, 1, 8, 8))


def test_training_updates_both_groups_lowers_loss_and_save_load(digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = _model(likelihood="bernoulli", gamma=5.0, discriminator_hidden=64,
                   encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]})
    disc_before = [p.detach().clone() for p in model.discriminator.parameters()]
    torch.manual_seed(1)
    before = evaluate(model, x_test)["loss"]
    history = Trainer(model, TrainerConfig(epochs=2, batch_size=64, progress=False)).fit(
        x_train, x_test)
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert history[-1]["eval_loss"] < before
    assert int(model.num_steps) == 2 * math.ceil(len(x_train) / 64)
    assert "train_discriminator_loss" in history[-1]
    assert 0 < history[-1]["train_discriminator_loss"] < 2.0  # chance level is log 2
    assert any(not torch.equal(a, b) for a, b in
               zip(disc_before, model.discriminator.parameters(), strict=True))
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    model.eval()
    outs = []
    for m in (model, loaded):
        torch.manual_seed(3)
        outs.append(m(x_test[:32]).terms)
    for key in outs[0]:
        assert torch.equal(outs[0][key], outs[1][key])


def test_checkpoint_resume_restores_both_optimizers(digits, tmp_path):
    x_train = digits[0][:256]

    def model(seed):
        torch.manual_seed(seed)
        return _model(likelihood="bernoulli", discriminator_hidden=16,
                      encoder_kwargs={"hidden": [16]}, decoder_kwargs={"hidden": [16]})

    def config(**kw):
        return TrainerConfig(epochs=2, batch_size=64, progress=False, keep_best=False, **kw)

    full = model(0)
    Trainer(full, config()).fit(x_train)
    Trainer(model(0), config(checkpoint_every=1, output_dir=str(tmp_path))).fit(x_train)
    assert (tmp_path / "checkpoints/epoch_0001/optimizer_discriminator.safetensors").is_file()
    resumed = model(7)
    Trainer(resumed, config()).fit(x_train, resume_from=tmp_path / "checkpoints/epoch_0001")
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


@pytest.mark.parametrize("fields,field", [
    ({"gamma": -1.0}, "gamma"),
    ({"discriminator_hidden": 0}, "discriminator_hidden"),
    ({"discriminator_layers": 0}, "discriminator_layers"),
])
def test_invalid_config_names_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        _model(**fields)


def test_trains_from_the_command_line(tmp_path):
    metrics = assert_trains_from_the_cli("factor_vae", tmp_path / "run", "--latent-dim", "3")
    assert set(metrics["eval_terms"]) == {"recon", "kl", "tc"}

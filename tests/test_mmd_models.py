"""MMD and the models built on it: InfoVAE (info_vae) and WAE-MMD (wae)."""

import json
import math

import pytest
import torch
from references import reference_posterior
from torch.distributions import Independent, Normal, kl_divergence

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.cli import main
from vaebench.data import load_dataset
from vaebench.kernels import WAE_SCALES, bandwidths, kernel_matrix, mmd, mmd_term
from vaebench.models import InfoVAE, InfoVAEConfig, WAEConfig
from vaebench.training import evaluate


def _kernel(a, b, kernel, scales):
    """k(a, b) for two vectors, summed over the bandwidths, from its definition."""
    d2 = sum((float(ai) - float(bi)) ** 2 for ai, bi in zip(a, b, strict=True))
    if kernel == "imq":
        return sum(c / (c + d2) for c in scales)
    return sum(math.exp(-d2 / c) for c in scales)


def _mmd_loops(x, y, kernel, scales):
    """Gretton et al. (2012) unbiased MMD^2, with explicit loops over pairs."""
    n, m = len(x), len(y)
    xx = sum(_kernel(x[i], x[j], kernel, scales) for i in range(n) for j in range(n) if i != j)
    yy = sum(_kernel(y[i], y[j], kernel, scales) for i in range(m) for j in range(m) if i != j)
    xy = sum(_kernel(x[i], y[j], kernel, scales) for i in range(n) for j in range(m))
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)


def _normal_nll(x, mean):
    return -Independent(Normal(mean, torch.ones_like(mean)), x.dim() - 1).log_prob(x)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("multiscale", [False, True])
def test_mmd_matches_explicit_loops(kernel, multiscale):
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64) + 0.5
    scales = bandwidths(3, scale=1.3, multiscale=multiscale)
    expected = _mmd_loops(x, y, kernel, scales)
    got = mmd(x, y, kernel=kernel, scale=1.3, multiscale=multiscale)
    assert float(got) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # kernel_matrix entry by entry
    k = kernel_matrix(x, y, kernel, scales)
    assert float(k[2, 1]) == pytest.approx(_kernel(x[2], y[1], kernel, scales), rel=1e-12)


def test_bandwidth_rule_of_the_wae_paper():
    assert bandwidths(8) == (16.0,)  # C = 2 d sigma^2
    assert bandwidths(8, scale=2.0) == (32.0,)
    assert bandwidths(4, multiscale=True) == pytest.approx(tuple(8.0 * s for s in WAE_SCALES))
    with pytest.raises(ValueError, match="scale"):
        bandwidths(4, scale=0.0)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_unbiased_for_identical_distributions_and_large_when_shifted(kernel):
    generator = torch.Generator().manual_seed(0)
    same, shifted = [], []
    for _ in range(300):
        x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
        y = torch.randn(32, 4, generator=generator, dtype=torch.float64)
        same.append(float(mmd(x, y, kernel, multiscale=True)))
        shifted.append(float(mmd(x, y + 1.5, kernel, multiscale=True)))
    same_t, shifted_t = torch.tensor(same), torch.tensor(shifted)
    std_error = float(same_t.std()) / math.sqrt(len(same))
    assert abs(float(same_t.mean())) < 4 * std_error  # zero in expectation
    assert (same_t < 0).any()  # unbiased, so not always positive
    assert float(shifted_t.min()) > float(same_t.max())
    assert float(shifted_t.mean()) > 20 * float(same_t.std())


def test_mmd_term_gives_every_sample_the_batch_estimate():
    z, p = torch.randn(6, 3), torch.randn(6, 3)
    term = mmd_term(z, p, kernel="rbf", scale=1.0, multiscale=True)
    estimate = mmd(z, p, kernel="rbf", multiscale=True)
    assert term.shape == (6,)
    torch.testing.assert_close(term, estimate.expand(6))
    torch.testing.assert_close(term.mean(), estimate)
    assert torch.equal(mmd_term(z[:1], p[:1]), torch.zeros(1))  # no pairs: no estimate
    with pytest.raises(ValueError, match="at least 2"):
        mmd(z[:1], p)


def test_info_vae_objective_equals_independent_computation():
    model = InfoVAE(InfoVAEConfig(input_dim=(1, 8, 8), latent_dim=3, alpha=0.3, lambda_=10.0,
                                  kernel="rbf", kernel_scale=2.0, multiscale=False))
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(5)
    out = model(x)
    torch.manual_seed(5)
    q = reference_posterior(model, x)
    z = q.rsample()
    prior_z = torch.randn(6, 3)
    recon = _normal_nll(x, model.decoder(z))
    kl = kl_divergence(q, Independent(Normal(torch.zeros_like(q.mean), 1.0), 1))
    scales = (2 * 3 * 2.0,)
    estimate = _mmd_loops(z.detach().double(), prior_z.double(), "rbf", scales)
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.terms["mmd"], torch.full((6,), estimate), check_dtype=False)
    expected = (recon + 0.7 * kl).mean() + 9.3 * estimate
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert model.term_weights() == pytest.approx({"kl": 0.7, "mmd": 9.3})


def test_wae_objective_equals_independent_computation():
    model = create_model("wae", input_dim=(1, 8, 8), latent_dim=2, lambda_=3.0)
    assert model.config.kernel == "imq" and model.config.multiscale
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    prior_z = torch.randn(5, 2)
    z = model.encoder(x)
    recon = _normal_nll(x, model.decoder(z))
    estimate = _mmd_loops(z.detach().double(), prior_z.double(), "imq", bandwidths(2, 1.0, True))
    assert set(out.terms) == {"recon", "mmd"}
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["mmd"], torch.full((5,), estimate), check_dtype=False)
    expected = recon.mean() + 3.0 * estimate
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert torch.equal(out.z, z)


@pytest.mark.parametrize("name", ["info_vae", "wae"])
def test_terms_other_than_mmd_are_batch_size_invariant(name):
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=3).eval()
    x = torch.rand(40, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    if name == "wae":
        torch.testing.assert_close(small["recon"], large["recon"][:8])
    else:
        torch.testing.assert_close(small["kl"], large["kl"][:8])
    # The MMD is the batch estimate, carried by every sample.
    for terms in (small, large):
        assert torch.all(terms["mmd"] == terms["mmd"][0])


def test_mmd_configs_validate_and_name_the_field():
    with pytest.raises(ValueError, match="alpha"):
        InfoVAEConfig(input_dim=(4,), alpha=1.5)
    with pytest.raises(ValueError, match="lambda_"):
        InfoVAEConfig(input_dim=(4,), alpha=0.0, lambda_=0.5)  # MMD weight would be < 0
    with pytest.raises(ValueError, match="kernel"):
        WAEConfig(input_dim=(4,), kernel="laplace")
    with pytest.raises(ValueError, match="kernel_scale"):
        WAEConfig(input_dim=(4,), kernel_scale=0)
    with pytest.raises(ValueError, match="lambda_"):
        WAEConfig(input_dim=(4,), lambda_=-1)
    config = InfoVAEConfig(input_dim=(4,), alpha=1.0, lambda_=1.0)  # the edge: MMD weight 0
    assert InfoVAEConfig(**config.to_dict()) == config


@pytest.mark.parametrize("name", ["info_vae", "wae"])
def test_training_lowers_the_loss_and_save_load_is_identical(name, tmp_path):
    x, _ = load_dataset("digits", "train")
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                         kernel="rbf" if name == "wae" else "imq")
    torch.manual_seed(0)
    before = evaluate(model, x)["loss"]
    history = Trainer(model, TrainerConfig(epochs=2, batch_size=64, progress=False,
                                           keep_best=False)).fit(x)  # 46 steps
    torch.manual_seed(0)
    after = evaluate(model, x)
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert after["loss"] < before and math.isfinite(after["mmd"])
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    model.eval(), loaded.eval()
    batch = x[:50]
    torch.manual_seed(1)
    a = model(batch)
    torch.manual_seed(1)
    b = loaded(batch)
    for key in a.terms:
        assert torch.equal(a.terms[key], b.terms[key]), key
    torch.manual_seed(3)
    samples = model.generate(4)
    torch.manual_seed(3)
    assert torch.equal(samples, loaded.generate(4))


def test_wae_trains_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "wae", "--dataset", "digits", "--latent-dim", "4",
                 "--epochs", "1", "--train-size", "300", "--likelihood", "bernoulli",
                 "--option", "lambda_=2.0", "--option", "kernel=rbf", "--output", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["eval_terms"]) == {"recon", "mmd"}
    model = load_model(out / "model")
    assert model.config.lambda_ == 2.0 and model.config.kernel == "rbf"


def test_info_vae_kl_weight_composes_with_kl_annealing():
    model = create_model("info_vae", input_dim=(4,), latent_dim=2, alpha=0.5, lambda_=2.0,
                         kl_schedule="linear", kl_anneal_steps=10)
    model.train()
    model.num_steps.fill_(5)
    weights = model.term_weights()
    assert weights["kl"] == pytest.approx(model.kl_weight() * 0.5)
    assert 0 < model.kl_weight() < 1 and weights["mmd"] == pytest.approx(1.5)
    model.eval()
    assert model.term_weights()["kl"] == pytest.approx(0.5)

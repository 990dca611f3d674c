"""Regularized autoencoders (rae_l2, rae_gp) and the ex-post Gaussian mixture prior."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.distributions import Independent, Normal

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.cli import main
from vaebench.data import load_dataset
from vaebench.models import RAEGP, RAEL2, RAEGPConfig, RAEL2Config
from vaebench.samplers import create_sampler, load_sampler, samplers_for, save_sampler
from vaebench.training import evaluate


class LinearDecoder(nn.Module):
    """D(z) = W z + b, reshaped to (1, 2, 2): its Jacobian is W for every z."""

    def __init__(self, latent_dim=3):
        super().__init__()
        self.linear = nn.Linear(latent_dim, 4)

    def forward(self, z):
        return self.linear(z).view(-1, 1, 2, 2)


class TanhDecoder(nn.Module):
    def __init__(self, latent_dim=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, 5), nn.Tanh(), nn.Linear(5, 4))

    def forward(self, z):
        return self.net(z).view(-1, 1, 2, 2)


def _normal_nll(x, mean):
    return -Independent(Normal(mean, torch.ones_like(mean)), x.dim() - 1).log_prob(x)


def test_rae_l2_objective_equals_hand_computation():
    model = RAEL2(RAEL2Config(input_dim=(1, 8, 8), latent_dim=3, beta=0.2, lambda_=0.01))
    x = torch.rand(6, 1, 8, 8)
    out = model(x)
    z = model.encoder(x)
    recon = _normal_nll(x, model.decoder(z))
    code = 0.5 * (z**2).sum(1)
    l2 = 0.0
    for param in model.decoder.parameters():
        for value in param.detach().flatten().tolist():
            l2 += value * value
    assert set(out.terms) == {"recon", "code", "decoder_l2"}
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["code"], code)
    torch.testing.assert_close(out.terms["decoder_l2"], torch.full((6,), l2))
    expected = (recon + 0.2 * code).mean() + 0.01 * l2
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # The parameter penalty's gradient reaches the decoder: d/dW of lambda ||W||^2 = 2 lambda W.
    weight = model.decoder.net[0].weight
    grad_with = torch.autograd.grad(out.loss, weight)[0]
    model.config.lambda_ = 0.0
    grad_without = torch.autograd.grad(model(x).loss, weight)[0]
    torch.testing.assert_close(grad_with - grad_without, 0.02 * weight.detach())


def test_gradient_penalty_of_a_linear_decoder():
    model = RAEGP(RAEGPConfig(input_dim=(1, 2, 2), latent_dim=3, gp_projection="ones",
                              lambda_=0.5, beta=0.0),
                  decoder=LinearDecoder())
    x = torch.rand(5, 1, 2, 2)
    out = model(x)
    w = model.decoder.linear.weight.detach()  # (4, 3): the Jacobian
    expected = (w.sum(0) ** 2).sum()  # ||J^T 1||^2
    torch.testing.assert_close(out.terms["decoder_gp"], expected.expand(5))
    # The gaussian projection estimates ||J||_F^2 without bias.
    model.config.gp_projection = "gaussian"
    draws = torch.stack([model(x).terms["decoder_gp"].detach() for _ in range(400)])
    frobenius = float((w**2).sum())
    assert float(draws.mean()) == pytest.approx(frobenius, rel=0.1)


@pytest.mark.parametrize("projection", ["ones", "gaussian"])
def test_gradient_penalty_matches_autograd_jacobian(projection):
    model = RAEGP(RAEGPConfig(input_dim=(1, 2, 2), latent_dim=3, gp_projection=projection),
                  decoder=TanhDecoder())
    x = torch.rand(4, 1, 2, 2)
    torch.manual_seed(7)
    out = model(x)
    torch.manual_seed(7)
    v = torch.randn(4, 1, 2, 2) if projection == "gaussian" else torch.ones(4, 1, 2, 2)
    z = model.encoder(x).detach()
    for i in range(4):
        jacobian = torch.autograd.functional.jacobian(model.decoder, z[i:i + 1])
        jacobian = jacobian.reshape(4, 3)  # outputs x latent
        expected = ((jacobian.T @ v[i].flatten()) ** 2).sum()
        torch.testing.assert_close(out.terms["decoder_gp"][i], expected)


def test_gradient_penalty_is_trained_and_works_under_no_grad():
    model = RAEGP(RAEGPConfig(input_dim=(1, 2, 2), latent_dim=3, gp_projection="ones",
                              lambda_=1.0), decoder=TanhDecoder())
    x = torch.rand(4, 1, 2, 2)
    out = model(x)
    gp_grad = torch.autograd.grad(out.terms["decoder_gp"].mean(), model.decoder.net[0].weight)
    assert gp_grad[0].abs().sum() > 0  # create_graph: the penalty reaches the decoder
    with torch.no_grad():
        evaluated = model(x).terms["decoder_gp"]
    assert not evaluated.requires_grad
    torch.testing.assert_close(evaluated, out.terms["decoder_gp"].detach())


@pytest.mark.parametrize("name", ["rae_l2", "rae_gp"])
def test_terms_are_batch_size_invariant(name):
    options = {"gp_projection": "ones"} if name == "rae_gp" else {}
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=3, **options).eval()
    x = torch.rand(40, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:8], rtol=1e-5, atol=1e-5)


def test_rae_configs_validate_and_name_the_field():
    with pytest.raises(ValueError, match="beta"):
        RAEL2Config(input_dim=(4,), beta=-1)
    with pytest.raises(ValueError, match="lambda_"):
        RAEGPConfig(input_dim=(4,), lambda_=-1)
    with pytest.raises(ValueError, match="gp_projection"):
        RAEGPConfig(input_dim=(4,), gp_projection="rademacher")


def test_the_gmm_sampler_fits_samples_and_scores_like_sklearn():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(-3, 0.5, (300, 2)), rng.normal(3, 1.0, (200, 2))])
    model = create_model("rae_l2", input_dim=(4,), latent_dim=2)
    sampler = create_sampler("gmm", model, n_components=2)
    sampler.fit_codes(torch.tensor(codes, dtype=torch.float32), seed=0, progress=False)
    reference = GaussianMixture(2, covariance_type="full", random_state=0).fit(codes)
    z = torch.randn(7, 2) * 3
    torch.testing.assert_close(sampler.log_prob(z).double(),
                               torch.from_numpy(reference.score_samples(z.double().numpy())),
                               rtol=1e-4, atol=1e-4)
    torch.manual_seed(0)
    draws = sampler.draw(model, 20000)
    assert draws.shape == (20000, 2)
    assert float((draws[:, 0] > 0).float().mean()) == pytest.approx(0.4, abs=0.02)
    torch.testing.assert_close(draws.mean(0), torch.tensor(codes.mean(0), dtype=torch.float32),
                               atol=0.1, rtol=0)


@pytest.mark.parametrize("name", ["rae_l2", "rae_gp"])
def test_training_then_the_gmm_sampler_and_save_load(name, tmp_path):
    x, _ = load_dataset("digits", "train")
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli")
    assert model.default_sampler == "gmm"
    torch.manual_seed(0)
    before = evaluate(model, x)["loss"]
    history = Trainer(model, TrainerConfig(epochs=2, batch_size=64, progress=False,
                                           keep_best=False)).fit(x)  # 46 steps
    torch.manual_seed(0)
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert evaluate(model, x)["loss"] < before

    standard = create_sampler("normal", model).generate(model, 5, seed=1)
    torch.manual_seed(1)
    assert torch.equal(standard, model.likelihood.mean(model.decode(torch.randn(5, 4))))
    sampler = create_sampler("gmm", model, n_components=3)
    sampler.fit(model, x)
    from_mixture = sampler.generate(model, 5, seed=1)
    assert from_mixture.shape == (5, 1, 8, 8) and not torch.equal(from_mixture, standard)

    model.save(tmp_path / "m")
    save_sampler(sampler, tmp_path / "m")
    tensors = load_file(tmp_path / "m" / "samplers" / "gmm" / "sampler.safetensors")
    assert tensors["means"].shape == (3, 4)
    loaded = load_model(tmp_path / "m")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    model.eval(), loaded.eval()
    torch.manual_seed(2)
    a = model(x[:20])
    torch.manual_seed(2)
    b = loaded(x[:20])
    for key in a.terms:
        assert torch.equal(a.terms[key], b.terms[key]), key
    loaded_sampler = load_sampler(tmp_path / "m", "gmm", loaded)
    assert torch.equal(sampler.generate(model, 6, seed=3), loaded_sampler.generate(loaded, 6,
                                                                                   seed=3))


def test_wae_generates_from_its_prior_and_can_use_the_mixture():
    x, _ = load_dataset("digits", "train")
    wae = create_model("wae", input_dim=(1, 8, 8), latent_dim=2)
    assert wae.default_sampler == "normal"  # the paper samples the N(0, I) prior
    assert {"normal", "gmm"} <= set(samplers_for(wae))
    sampler = create_sampler("gmm", wae, n_components=2)
    sampler.fit(wae, x[:200])
    assert sampler.generate(wae, 3).shape == (3, 1, 8, 8)


def test_rae_trains_from_the_command_line_with_its_mixture(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "rae_gp", "--dataset", "digits", "--latent-dim", "3",
                 "--epochs", "1", "--train-size", "300", "--sampler-option", "n_components=4",
                 "--output", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["eval_terms"]) == {"recon", "code", "decoder_gp"}
    assert metrics["sampler"]["sampler"] == "gmm"
    model = load_model(out / "model")
    assert load_sampler(out / "model", "gmm", model).means.shape == (4, 3)
    assert (out / "samples.png").is_file()


@pytest.mark.parametrize("name", ["rae_l2", "rae_gp", "wae", "info_vae", "msssim_vae"])
def test_every_likelihood_trains_and_evaluates(name):
    from vaebench.likelihoods import list_likelihoods

    x = torch.rand(6, 1, 8, 8)
    for likelihood in list_likelihoods():
        model = create_model(name, input_dim=(1, 8, 8), latent_dim=3, likelihood=likelihood)
        out = model(x)
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.isfinite(out.loss) and all(torch.isfinite(g).all() for g in grads)
        model.eval()
        with torch.no_grad():
            assert torch.isfinite(model(x).loss), likelihood
        assert model.generate(2).shape == (2, 1, 8, 8)

"""Tests of vaebench.likelihoods: every reconstruction term against torch.distributions, the
optimal, learned and data-variance scales, invariances, save/load and config validation."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import distributions as dist

import vaebench
from vaebench import VAE, AEConfig, Trainer, TrainerConfig, VAEConfig
from vaebench.data import ArrayData
from vaebench.likelihoods import (
    LOG_2PI,
    SIGMA_MIN,
    build_likelihood,
    check_likelihood_options,
    list_likelihoods,
)

SHAPE = (3, 4, 5)
D = math.prod(SHAPE)


def _inputs(batch=6, seed=0, dtype=torch.float64, shape=SHAPE):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=gen, dtype=dtype)
    params = 2.0 * torch.randn(batch, *shape, generator=gen, dtype=dtype)
    return x, params


def _sum(log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob.flatten(1).sum(1)


# --- each NLL equals the sum of torch.distributions log-probs ----------------------------

@pytest.mark.parametrize("sigma", [1.0, 0.1, 2.5])
def test_gaussian_fixed_matches_normal(sigma):
    x, mu = _inputs()
    lik = build_likelihood("gaussian", SHAPE, sigma=sigma)
    want = -_sum(dist.Normal(mu, sigma).log_prob(x))
    torch.testing.assert_close(lik.nll(mu, x), want, rtol=1e-12, atol=1e-10)


def test_gaussian_default_is_half_sse_plus_constants():
    x, mu = _inputs()
    lik = build_likelihood("gaussian", SHAPE)
    want = 0.5 * _sum((x - mu) ** 2) + 0.5 * D * LOG_2PI
    torch.testing.assert_close(lik.nll(mu, x), want)


@pytest.mark.parametrize("per", ["scalar", "channel", "pixel"])
def test_gaussian_learned_matches_normal(per):
    x, mu = _inputs()
    lik = build_likelihood("gaussian", SHAPE, sigma="learned", sigma_per=per).double()
    with torch.no_grad():
        lik.log_scale_param.copy_(torch.randn(lik.log_scale_param.shape) * 0.5)
    sigma = lik.sigma
    assert sigma.shape == {"scalar": (), "channel": (3, 1, 1), "pixel": SHAPE}[per]
    want = -_sum(dist.Normal(mu, sigma.expand(SHAPE)).log_prob(x))
    torch.testing.assert_close(lik.nll(mu, x), want, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("scale", [1.0, 0.05, "learned"])
def test_laplace_matches_torch(scale):
    x, mu = _inputs()
    lik = build_likelihood("laplace", SHAPE, sigma=scale).double()
    if scale == "learned":
        with torch.no_grad():
            lik.log_scale_param.fill_(-1.3)
    b = lik.sigma
    want = -_sum(dist.Laplace(mu, b.expand(SHAPE)).log_prob(x))
    torch.testing.assert_close(lik.nll(mu, x), want, rtol=1e-12, atol=1e-10)


def test_bernoulli_matches_torch_on_binary_and_extreme_logits():
    x, logits = _inputs()
    x = (x > 0.5).double()
    logits = logits * 20  # includes |l| of 100 and more: must stay finite
    lik = build_likelihood("bernoulli", SHAPE)
    want = -_sum(dist.Bernoulli(logits=logits).log_prob(x))
    got = lik.nll(logits, x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)


def test_continuous_bernoulli_matches_torch():
    x, logits = _inputs()
    lik = build_likelihood("continuous_bernoulli", SHAPE)
    want = -_sum(dist.ContinuousBernoulli(logits=logits).log_prob(x))
    torch.testing.assert_close(lik.nll(logits, x), want, rtol=1e-10, atol=1e-9)
    # float32, as in training
    got32 = lik.nll(logits.float(), x.float())
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-4)


def test_continuous_bernoulli_stable_near_one_half():
    # logits around 0 (lambda near 1/2), where the textbook constant is 0 / 0
    logits = torch.tensor([0.0, 1e-12, -1e-7, 3e-3, -0.0199, 0.0201, 0.1, -0.5],
                          dtype=torch.float64).view(-1, 1)
    x = torch.full_like(logits, 0.3)
    lik = build_likelihood("continuous_bernoulli", (1,))
    want = -dist.ContinuousBernoulli(logits=logits).log_prob(x)
    torch.testing.assert_close(lik.nll(logits, x).view(-1, 1), want, rtol=1e-9, atol=1e-9)
    # log C(1/2) = log 2 exactly, in float32 too, with a finite gradient
    l32 = torch.zeros(1, 1, requires_grad=True)
    nll = lik.nll(l32, torch.full((1, 1), 0.3))
    nll.sum().backward()
    assert torch.isfinite(l32.grad).all()
    assert nll.item() == pytest.approx(math.log(2) - math.log(2), abs=1e-6)


def test_continuous_bernoulli_mean_is_the_cb_mean_not_lambda():
    logits = torch.linspace(-12, 12, 97, dtype=torch.float64).view(-1, 1)
    lik = build_likelihood("continuous_bernoulli", (1,))
    want = dist.ContinuousBernoulli(logits=logits).mean
    torch.testing.assert_close(lik.mean(logits), want, rtol=1e-8, atol=1e-8)
    assert lik.mean(torch.zeros(1, 1)).item() == pytest.approx(0.5)
    # differs from lambda = sigmoid(l) away from 0
    assert (lik.mean(logits) - torch.sigmoid(logits)).abs().max() > 0.1


def test_continuous_bernoulli_sample_has_its_mean():
    torch.manual_seed(0)
    logits = torch.tensor([[-3.0, -0.4, 0.0, 1.5, 30.0]]).expand(40000, 5)
    lik = build_likelihood("continuous_bernoulli", (5,))
    draws = lik.sample(logits)
    assert draws.min() >= 0 and draws.max() <= 1
    torch.testing.assert_close(draws.mean(0), lik.mean(logits[:1])[0], atol=6e-3, rtol=0)


# --- discretized logistic ------------------------------------------------------------------

LEVELS = torch.arange(256, dtype=torch.float64) / 255


@pytest.mark.parametrize("mu,log_s", [(0.3, -3.0), (0.0, -7.0), (0.5, 2.0), (1.3, -5.0),
                                      (0.62, -9.0), (-0.4, -1.0), (0.5001, -20.0)])
def test_discretized_logistic_sums_to_one_over_levels(mu, log_s):
    lik = build_likelihood("discretized_logistic", (1,)).double()
    assert lik.param_shape == (2,)
    params = torch.tensor([[mu, log_s]], dtype=torch.float64).expand(256, 2)
    log_p = -lik.nll(params, LEVELS.view(256, 1))
    assert torch.isfinite(log_p).all()
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_logistic_matches_logistic_cdf_differences():
    """Interior levels: F(upper) - F(lower) of the logistic; edges take the tails."""
    torch.manual_seed(1)
    lik = build_likelihood("discretized_logistic", (2, 3)).double()
    assert lik.param_shape == (4, 3)
    mu = torch.rand(5, 2, 3, dtype=torch.float64)
    raw = torch.rand(5, 2, 3, dtype=torch.float64) * 3 - 4
    k = torch.randint(0, 256, (5, 2, 3)).double()
    k[0, 0, 0], k[1, 1, 2] = 0, 255
    x = k / 255
    s = lik._split(torch.cat([mu, raw], 1))[1].exp()
    a, b = (x + 0.5 / 255 - mu) / s, (x - 0.5 / 255 - mu) / s
    # sigmoid(a) - sigmoid(b), written as sigmoid(-b) - sigmoid(-a) in the upper tail
    interior = torch.where(b > 0, torch.sigmoid(-b) - torch.sigmoid(-a),
                           torch.sigmoid(a) - torch.sigmoid(b))
    upper_tail, lower_tail = torch.sigmoid(-b), torch.sigmoid(a)
    prob = torch.where(k == 255, upper_tail, torch.where(k == 0, lower_tail, interior))
    want = -_sum(torch.log(prob))
    torch.testing.assert_close(lik.nll(torch.cat([mu, raw], 1), x), want, rtol=1e-9, atol=1e-9)


def test_discretized_logistic_stable_in_the_tails_and_mean_within_half_a_level():
    lik = build_likelihood("discretized_logistic", (1,))
    # a level 100 scales away from the mean: finite, large, with finite gradients
    params = torch.tensor([[0.1, math.log(1e-3)]], requires_grad=True)
    nll = lik.nll(params, torch.tensor([[0.9]]))
    nll.backward()
    assert torch.isfinite(nll).all() and nll.item() > 100
    assert torch.isfinite(params.grad).all()
    grid = torch.stack(torch.meshgrid(torch.linspace(-0.2, 1.2, 15),
                                      torch.linspace(-8, 1, 10), indexing="ij"), -1).view(-1, 2)
    grid = grid.double()
    probs = (-torch.stack([lik.double().nll(grid, torch.full((len(grid), 1), v.item()))
                           for v in LEVELS])).exp()
    exact = (probs * LEVELS.view(-1, 1)).sum(0)
    assert (lik.mean(grid).view(-1) - exact).abs().max() <= 0.5 / 255 + 1e-9


def test_discretized_logistic_sample_on_levels():
    lik = build_likelihood("discretized_logistic", (1, 2, 2))
    draws = lik.sample(torch.randn(10, 2, 2, 2))
    assert draws.shape == (10, 1, 2, 2)
    assert torch.allclose(draws * 255, torch.round(draws * 255))
    assert draws.min() >= 0 and draws.max() <= 1


# --- optimal sigma ----------------------------------------------------------------------------

def test_optimal_sigma_is_log_mse_per_sample():
    x, mu = _inputs(batch=9)
    lik = build_likelihood("gaussian", SHAPE, sigma="optimal").double().train()
    mse = ((x - mu) ** 2).flatten(1).mean(1)
    want = 0.5 * D * torch.log(mse) + 0.5 * D * (1 + LOG_2PI)
    got = lik.nll(mu, x)
    torch.testing.assert_close(got, want)
    # it is the Gaussian NLL at sigma_i^2 = MSE_i, the minimum over sigma
    at_optimum = -_sum(dist.Normal(mu, mse.sqrt().view(-1, 1, 1, 1)).log_prob(x))
    torch.testing.assert_close(got, at_optimum)
    for factor in (0.8, 1.25):
        other = -_sum(dist.Normal(mu, factor * mse.sqrt().view(-1, 1, 1, 1)).log_prob(x))
        assert (other > got).all()


def test_optimal_sigma_floor_and_gradient():
    lik = build_likelihood("gaussian", (4,), sigma="optimal").train()
    mu = torch.zeros(1, 4, requires_grad=True)
    nll = lik.nll(mu, torch.zeros(1, 4))  # MSE = 0: floored, finite
    assert torch.isfinite(nll).all()
    assert nll.item() == pytest.approx(2 * math.log(SIGMA_MIN**2) + 2 * LOG_2PI, rel=1e-5)
    mu2 = torch.zeros(2, 4, requires_grad=True)
    lik.nll(mu2, torch.ones(2, 4)).sum().backward()
    # d/dmu of (D/2) log mean (x - mu)^2 = -(x - mu) / MSE
    torch.testing.assert_close(mu2.grad, -torch.ones(2, 4))


def test_optimal_sigma_eval_uses_running_dataset_sigma():
    torch.manual_seed(0)
    lik = build_likelihood("gaussian", SHAPE, sigma="optimal").double()
    x, mu = _inputs(batch=32)
    lik.train()
    for _ in range(5):
        lik.nll(mu, x)  # the same batch: running MSE -> its MSE
    batch_mse = ((x - mu) ** 2).mean()
    assert lik.running_mse.item() == pytest.approx(batch_mse.item(), rel=1e-6)
    assert lik.num_updates.item() == 5
    lik.eval()
    want = -_sum(dist.Normal(mu, batch_mse.sqrt()).log_prob(x))
    torch.testing.assert_close(lik.nll(mu, x), want)
    assert lik.num_updates.item() == 5  # eval never updates it
    # in eval mode a sample's term does not depend on the others' residuals
    changed = x.clone()
    changed[1:] += 5.0
    torch.testing.assert_close(lik.nll(mu[:1], changed[:1]), lik.nll(mu, x)[:1])


# --- learned sigma -----------------------------------------------------------------------------

def test_learned_sigma_gets_gradient_and_converges_to_residual_std():
    torch.manual_seed(0)
    lik = build_likelihood("gaussian", (3, 6, 6), sigma="learned", sigma_per="channel")
    mu = torch.rand(512, 3, 6, 6)
    stds = torch.tensor([0.05, 0.3, 1.7]).view(1, 3, 1, 1)
    x = mu + stds * torch.randn_like(mu)
    loss = lik.nll(mu, x).mean()
    loss.backward()
    assert lik.log_scale_param.grad is not None and (lik.log_scale_param.grad.abs() > 0).all()
    opt = torch.optim.Adam(lik.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        lik.nll(mu, x).mean().backward()
        opt.step()
    residual_std = (x - mu).pow(2).mean((0, 2, 3)).sqrt()
    torch.testing.assert_close(lik.sigma.view(3), residual_std, rtol=1e-2, atol=0)


def test_learned_sigma_is_trained_with_the_model_and_saved(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(256, 1, 6, 6)
    model = VAE(input_dim=(1, 6, 6), latent_dim=3, sigma="learned", sigma_per="pixel",
                encoder_kwargs={"hidden": [32]}, decoder_kwargs={"hidden": [32]})
    assert "likelihood.log_scale_param" in dict(model.named_parameters())
    Trainer(model, TrainerConfig(epochs=3, batch_size=64, progress=False, device="cpu",
                                 learning_rate=3e-2)).fit(x)
    sigma = model.likelihood.sigma
    assert sigma.shape == (1, 6, 6)
    assert (sigma < 0.9).all()  # moved from its start at 1
    model.save(tmp_path / "m")
    loaded = vaebench.load_model(tmp_path / "m")
    torch.testing.assert_close(loaded.likelihood.sigma, sigma)
    _assert_same_outputs(model, loaded, x[:16])


# --- data-variance scaling -------------------------------------------------------------------

def test_data_variance_is_computed_once_from_training_data(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(300, 2, 4, 4) * torch.tensor([1.0, 0.2]).view(1, 2, 1, 1)
    lik = build_likelihood("gaussian", (2, 4, 4), sigma="data", sigma_per="channel")
    with pytest.raises(RuntimeError, match="prepare"):
        lik.nll(torch.zeros(1, 2, 4, 4), x[:1])
    lik.prepare(ArrayData(x))
    want = x.double().transpose(0, 1).reshape(2, -1).var(1, unbiased=False)
    torch.testing.assert_close(lik.data_variance.view(2).double(), want, rtol=1e-5, atol=0)
    lik.prepare(ArrayData(x * 3))  # computed once: a second call keeps it
    torch.testing.assert_close(lik.data_variance.view(2).double(), want, rtol=1e-5, atol=0)
    mu = torch.rand(5, 2, 4, 4)
    got = lik.nll(mu, x[:5])
    sigma = lik.data_variance.sqrt().expand(2, 4, 4)
    torch.testing.assert_close(got, -_sum(dist.Normal(mu, sigma).log_prob(x[:5])))
    # scalar: one variance over all samples and pixels (as DeepMind's VQ-VAE)
    scalar = build_likelihood("gaussian", (2, 4, 4), sigma="data")
    scalar.prepare(ArrayData(x))
    assert scalar.data_variance.item() == pytest.approx(x.double().var(unbiased=False).item(),
                                                        rel=1e-5)


def test_data_variance_chunked_on_memory_mapped_data(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(5000, 1, 3, 3), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, array)
    data = vaebench.data.as_data(str(path))
    lik = build_likelihood("gaussian", (1, 3, 3), sigma="data")
    lik.prepare(data)
    want = (array.astype(np.float64) / 255).var()
    assert lik.data_variance.item() == pytest.approx(want, rel=1e-6)


def test_data_variance_prepared_by_trainer_and_saved(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(128, 1, 4, 4) * 0.5
    model = VAE(input_dim=(1, 4, 4), latent_dim=2, sigma="data",
                encoder_kwargs={"hidden": [16]}, decoder_kwargs={"hidden": [16]})
    Trainer(model, TrainerConfig(epochs=1, batch_size=32, progress=False,
                                 device="cpu")).fit(x)
    variance = model.likelihood.data_variance.clone()
    assert variance.item() == pytest.approx(x.double().var(unbiased=False).item(), rel=1e-5)
    model.save(tmp_path / "m")
    loaded = vaebench.load_model(tmp_path / "m")  # no prepare needed
    assert loaded.likelihood.data_variance.item() == variance.item()
    _assert_same_outputs(model, loaded, x[:8])


@pytest.mark.parametrize("per", ["channel", "pixel"])
def test_optimal_sigma_per_channel_or_pixel_is_a_running_mse(per):
    """One sigma per channel or dimension: the terms of a batch are those of a Gaussian at
    the estimate from the batches before it (in training and evaluation alike), and each
    training batch then updates it with its own mean squared error there (the cumulative
    mean of the first batches)."""
    lik = build_likelihood("gaussian", SHAPE, sigma="optimal", sigma_per=per).double().train()
    batches = [_inputs(batch=7, seed=seed) for seed in (1, 2)]
    dims = (0, 2, 3) if per == "channel" else (0,)
    mse = [((x - mu) ** 2).mean(dims, keepdim=True)[0] for x, mu in batches]
    x, mu = batches[0]
    torch.testing.assert_close(lik.nll(mu, x), -_sum(dist.Normal(mu, 1.0).log_prob(x)))
    torch.testing.assert_close(lik.running_mse.expand(SHAPE), mse[0].expand(SHAPE))
    x, mu = batches[1]
    sigma = mse[0].sqrt()
    torch.testing.assert_close(lik.nll(mu, x), -_sum(dist.Normal(mu, sigma).log_prob(x)))
    both = (mse[0] + mse[1]) / 2
    torch.testing.assert_close(lik.running_mse.expand(SHAPE), both.expand(SHAPE))
    lik.eval()
    torch.testing.assert_close(lik.nll(mu, x), -_sum(dist.Normal(mu, both.sqrt()).log_prob(x)))
    assert lik.num_updates.item() == 2
    lik.train().nll(mu[:0], x[:0])  # a batch without samples changes nothing
    assert lik.num_updates.item() == 2 and torch.isfinite(lik.running_mse).all()


def test_optimal_running_sigma_saved(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(128, 1, 4, 4)
    model = VAE(input_dim=(1, 4, 4), latent_dim=2, sigma="optimal",
                encoder_kwargs={"hidden": [16]}, decoder_kwargs={"hidden": [16]})
    Trainer(model, TrainerConfig(epochs=1, batch_size=32, progress=False,
                                 device="cpu")).fit(x)
    assert model.likelihood.num_updates.item() == 4
    model.save(tmp_path / "m")
    loaded = vaebench.load_model(tmp_path / "m")
    assert loaded.likelihood.running_mse.item() == model.likelihood.running_mse.item()
    _assert_same_outputs(model, loaded, x[:8])


def _assert_same_outputs(model, loaded, x):
    model.eval()
    loaded.eval()
    with torch.no_grad():
        params = model.decode(model.encode(x).mean)
        torch.testing.assert_close(loaded.decode(loaded.encode(x).mean), params)
        torch.testing.assert_close(loaded.likelihood.nll(params, x),
                                   model.likelihood.nll(params, x))


# --- invariances -------------------------------------------------------------------------------

def _all_likelihoods(shape):
    """One of each likelihood and scale kind, with non-trivial learned / data scales."""
    cases = {}
    for name, sigma in [("gaussian", 1.0), ("gaussian", 0.1), ("gaussian", "learned"),
                        ("gaussian", "optimal"), ("gaussian", "data"), ("laplace", 0.3),
                        ("laplace", "learned"), ("bernoulli", 1.0),
                        ("continuous_bernoulli", 1.0), ("discretized_logistic", 1.0)]:
        lik = build_likelihood(name, shape, sigma=sigma).double()
        if sigma == "learned":
            with torch.no_grad():
                lik.log_scale_param.fill_(-0.7)
        if sigma == "data":
            lik.prepare(ArrayData(torch.rand(50, *shape) * 0.5))
        cases[f"{name}-{sigma}"] = lik
    assert {lik.name for lik in cases.values()} == set(list_likelihoods())
    return cases


def _case_inputs(lik, batch, seed, shape):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, *shape), generator=gen).double() / 255
    if lik.name == "bernoulli":
        x = (x > 0.5).double()
    params = torch.randn(batch, *lik.param_shape, generator=gen, dtype=torch.float64)
    return params, x


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_no_term_changes_when_only_the_batch_changes(mode):
    for key, lik in _all_likelihoods((1, 4, 4)).items():
        lik.train(mode == "train")
        params, x = _case_inputs(lik, 12, 0, (1, 4, 4))
        full = lik.nll(params, x)
        assert full.shape == (12,), key
        for part in (slice(0, 1), slice(0, 5), slice(5, 12)):
            torch.testing.assert_close(lik.nll(params[part], x[part]), full[part], msg=key)
        # shuffling and padding the batch with other samples changes nothing either
        order = torch.randperm(12)
        torch.testing.assert_close(lik.nll(params[order], x[order]), full[order], msg=key)
        other_p, other_x = _case_inputs(lik, 20, 1, (1, 4, 4))
        bigger = lik.nll(torch.cat([params, other_p]), torch.cat([x, other_x]))
        torch.testing.assert_close(bigger[:12], full, msg=key)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_image_size_enters_only_through_d(mode):
    """Tiling every pixel 2 x 2 multiplies D, and every term, by exactly 4."""
    small, large = _all_likelihoods((1, 4, 4)), _all_likelihoods((1, 8, 8))
    for key, lik in small.items():
        big = large[key]
        if hasattr(lik, "data_variance"):
            big.data_variance.copy_(lik.data_variance)
        lik.train(mode == "train")
        big.train(mode == "train")
        params, x = _case_inputs(lik, 6, 2, (1, 4, 4))

        def tile(t):
            return t.repeat_interleave(2, -1).repeat_interleave(2, -2)

        ratio = big.nll(tile(params), tile(x)) / lik.nll(params, x)
        torch.testing.assert_close(ratio, torch.full_like(ratio, 4.0), msg=key)
        torch.testing.assert_close(big.bits_per_dim(big.nll(tile(params), tile(x))),
                                   lik.bits_per_dim(lik.nll(params, x)), msg=key)


def test_bits_per_dim():
    lik = build_likelihood("discretized_logistic", (3, 8, 8))
    nll = torch.tensor([192 * math.log(2), 0.0])
    torch.testing.assert_close(lik.bits_per_dim(nll), torch.tensor([1.0, 0.0]))
    # bits/dim divides by D of the data (3 x 8 x 8), not by the decoder's 6 x 8 x 8 outputs
    params = torch.randn(2, 6, 8, 8)
    x = torch.randint(0, 256, (2, 3, 8, 8)) / 255
    log2_p = lik.log_probs(params, x) / math.log(2)
    torch.testing.assert_close(lik.bits_per_dim(lik.nll(params, x)),
                               -log2_p.flatten(1).mean(1))


# --- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,field,words", [
    ({"sigma": -1.0}, "sigma", "positive"),
    ({"sigma": 0.0}, "sigma", "positive"),
    ({"sigma": "huge"}, "sigma", "learned"),
    ({"sigma": "optimal", "likelihood": "bernoulli"}, "sigma", "bernoulli"),
    ({"sigma": "data", "likelihood": "laplace"}, "sigma", "gaussian"),
    ({"sigma": 0.5, "likelihood": "discretized_logistic"}, "sigma", "no scale"),
    ({"sigma_per": "row"}, "sigma_per", "scalar"),
    ({"sigma_per": "channel"}, "sigma_per", "learned"),
    ({"sigma": "data", "sigma_per": "pixel"}, "sigma_per", "zero"),
    ({"likelihood": "poisson"}, "likelihood", "unknown"),
])
def test_config_validation_names_the_field(fields, field, words):
    with pytest.raises(pydantic.ValidationError) as info:
        VAEConfig(input_dim=(1, 8, 8), **fields)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(field,)]
    assert words in errors[0]["msg"] and field in str(info.value)


def test_config_assignment_refuses_bad_combinations():
    config = AEConfig(input_dim=(1, 8, 8), sigma="learned", sigma_per="channel")
    with pytest.raises(pydantic.ValidationError, match="likelihood"):
        config.likelihood = "bernoulli"
    with pytest.raises(pydantic.ValidationError, match="sigma_per"):
        config.sigma = 0.5
    assert (config.likelihood, config.sigma, config.sigma_per) == ("gaussian", "learned",
                                                                   "channel")


def test_good_configs_build_every_model_with_the_likelihood():
    for name, sigma, per in [("gaussian", "0.25", "scalar"), ("gaussian", "optimal", "scalar"),
                             ("laplace", "learned", "channel"), ("bernoulli", 1, "scalar"),
                             ("continuous_bernoulli", 1.0, "scalar"),
                             ("discretized_logistic", 1.0, "scalar")]:
        config = AEConfig(input_dim=(1, 8, 8), likelihood=name, sigma=sigma, sigma_per=per,
                          encoder_kwargs={"hidden": [8]}, decoder_kwargs={"hidden": [8]})
        model = vaebench.AE(config)
        assert model.likelihood.name == name
        out = model(torch.rand(3, 1, 8, 8))
        assert out.terms["recon"].shape == (3,) and out.recon_x.shape == (3, 1, 8, 8)
    assert VAEConfig(input_dim=(1, 8, 8), sigma="0.25").sigma == 0.25
    with pytest.raises(ValueError, match="sigma"):
        check_likelihood_options("gaussian", -2.0)
    with pytest.raises(ValueError, match="sigma"):
        build_likelihood("bernoulli", (4,), sigma="learned")

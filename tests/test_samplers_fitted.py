"""The fitted samplers of flat Euclidean codes: gmm, two_stage, maf and iaf."""

import pytest
import torch
from torch import distributions as D

import vaebench
from vaebench.samplers.registry import create_sampler, samplers_for
from vaebench.samplers.storage import load_sampler, save_sampler

NAMES = ["gmm", "two_stage", "maf", "iaf"]
#: Options that make each sampler quick to fit on a few hundred codes.
QUICK = {"gmm": {"n_components": 2}, "two_stage": {"hidden": (8,), "epochs": 2},
         "maf": {"hidden": (8,), "epochs": 2}, "iaf": {"hidden": (8,), "epochs": 2}}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))]


def small_vae():
    return vaebench.create_model("vae", input_dim=(4,), latent_dim=2)


def fit_on(name, model, codes, **options):
    """The sampler ``name`` fitted by ``fit`` on ``codes`` standing for the model's."""
    sampler = create_sampler(name, model, **options)
    sampler.training_codes = lambda model, data: codes.to(model.device)
    summary = sampler.fit(model, data=None, seed=0)
    return sampler, summary


def gaussian_codes(n, seed=0):
    """Codes of a correlated 2-D Gaussian with a nonzero mean."""
    scale_tril = torch.linalg.cholesky(torch.tensor([[1.0, 0.8], [0.8, 1.5]]))
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return torch.tensor([2.0, -1.0]) + noise @ scale_tril.T


def banana(n, seed):
    """x1 ~ N(1, 1), x2 | x1 ~ N(0.5 (x1 - 1)^2 - 2, 0.5^2): a curved 2-D density."""
    generator = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, generator=generator)
    x2 = 0.5 * x1**2 + 0.5 * torch.randn(n, generator=generator)
    return torch.stack([x1 + 1.0, x2 - 2.0], 1)


def banana_log_prob(codes):
    x1, x2 = codes[:, 0] - 1.0, codes[:, 1] + 2.0
    return D.Normal(0.0, 1.0).log_prob(x1) + D.Normal(0.5 * x1**2, 0.5).log_prob(x2)


def three_gaussians():
    means = torch.tensor([[-4.0, 0.0], [3.0, 3.0], [2.0, -4.0]])
    scale_tril = torch.tensor([[[1.0, 0.0], [0.5, 0.6]], [[0.7, 0.0], [0.0, 0.7]],
                               [[0.5, 0.0], [-0.3, 1.0]]])
    return D.MixtureSameFamily(D.Categorical(torch.tensor([0.5, 0.3, 0.2])),
                               D.MultivariateNormal(means, scale_tril=scale_tril))


def test_gmm_recovers_a_mixture():
    mixture = three_gaussians()
    sampler, summary = fit_on("gmm", small_vae(), mixture.sample((3000,)), n_components=3)
    fresh = mixture.sample((20000,))
    true_nll = -mixture.log_prob(fresh).mean()
    assert abs(-sampler.log_prob(fresh).mean() - true_nll) < 0.05
    assert abs(summary["train_nll"] - true_nll) < 0.1
    order = [int(torch.cdist(mean[None], sampler.means).argmin()) for mean in
             mixture.component_distribution.loc]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(sampler.means[order], mixture.component_distribution.loc,
                               atol=0.15, rtol=0)
    torch.testing.assert_close(sampler.weights[order], mixture.mixture_distribution.probs,
                               atol=0.03, rtol=0)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_flows_learn_a_banana(name):
    train, fresh = banana(3000, seed=1), banana(20000, seed=2)
    sampler, summary = fit_on(name, small_vae(), train, hidden=(64, 64), epochs=40,
                              lr=3e-3, batch_size=128)
    with torch.no_grad():
        nll = -sampler.log_prob(fresh).mean()
    true_nll = -banana_log_prob(fresh).mean()
    standard_normal_nll = -D.Normal(0.0, 1.0).log_prob(fresh).sum(1).mean()
    assert true_nll - 0.01 < nll < true_nll + 0.03
    assert nll < standard_normal_nll - 1.5
    assert abs(summary["train_nll"] - true_nll) < 0.1
    draws = sampler.sample(small_vae(), 20000, seed=0)
    torch.testing.assert_close(draws.mean(0), train.mean(0), atol=0.06, rtol=0)
    torch.testing.assert_close(draws.T.cov(), train.T.cov(), atol=0.1, rtol=0)


def test_two_stage_matches_a_correlated_gaussian():
    codes = gaussian_codes(2000)
    sampler, summary = fit_on("two_stage", small_vae(), codes, hidden=(32,), epochs=100,
                              lr=3e-3, batch_size=100)
    draws = sampler.sample(small_vae(), 20000, seed=0)
    torch.testing.assert_close(draws.mean(0), codes.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(draws.T.cov(), codes.T.cov(), atol=0.1, rtol=0)
    true_nll = -D.MultivariateNormal(torch.tensor([2.0, -1.0]), torch.tensor(
        [[1.0, 0.8], [0.8, 1.5]])).log_prob(codes).mean()
    assert true_nll - 0.01 < summary["train_neg_elbo"] < true_nll + 0.1  # a bound on the NLL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_draws_are_seeded_and_survive_saving(name, device, tmp_path):
    model = small_vae().to(device)
    sampler, summary = fit_on(name, model, gaussian_codes(200), **QUICK[name])
    assert summary and all(torch.isfinite(torch.tensor(list(summary.values()))))
    draws = sampler.sample(model, 50, seed=3)
    assert draws.shape == (50, *model.latent_shape) and draws.device == model.device
    assert torch.isfinite(draws).all()
    assert torch.equal(draws, sampler.sample(model, 50, seed=3))
    assert not torch.allclose(draws, sampler.sample(model, 50, seed=4))
    model.save(tmp_path / "model")
    save_sampler(sampler, tmp_path / "model")
    loaded_model = vaebench.load_model(tmp_path / "model").to(device)
    loaded = load_sampler(tmp_path / "model", name, loaded_model)
    assert torch.equal(loaded.sample(loaded_model, 50, seed=3), draws)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_before_fitting_is_refused(name):
    model = small_vae()
    with pytest.raises(RuntimeError, match=rf"the {name} sampler is not fitted: call "
                                           r"sampler.fit\(model, train_data\)"):
        create_sampler(name, model).sample(model, 4)


REFUSED = [
    ("svae", {"input_dim": (4,), "latent_dim": 3}, "lie on the unit hypersphere"),
    ("poincare_vae", {"input_dim": (4,), "latent_dim": 2}, "lie in the Poincaré ball"),
    ("vqvae", {"input_dim": (1, 8, 8), "latent_dim": 4, "encoder": "mlp", "decoder": "mlp"},
     r"are quantized \(discrete\)"),
]


@pytest.mark.parametrize(("model_name", "fields", "reason"), REFUSED)
@pytest.mark.parametrize("name", NAMES)
def test_non_euclidean_codes_are_refused(name, model_name, fields, reason):
    model = vaebench.create_model(model_name, **fields)
    with pytest.raises(ValueError, match=f"the {name} sampler does not serve the "
                                         f"{model_name} model: its codes {reason}"):
        create_sampler(name, model)
    assert name not in samplers_for(model)
    assert name in samplers_for(small_vae())


def test_gmm_needs_as_many_codes_as_components():
    with pytest.raises(ValueError, match="cannot fit n_components=10 Gaussians on 6 codes"):
        fit_on("gmm", small_vae(), gaussian_codes(6))


@pytest.fixture(scope="module")
def trained():
    """A small VAE trained on 4-D data, and the data."""
    torch.manual_seed(0)
    data = torch.randn(256, 4) @ torch.tensor([[1.0, 0.5, 0.0, 0.2], [0.0, 1.0, -0.4, 0.0],
                                               [0.0, 0.0, 0.3, 0.1], [0.0, 0.0, 0.0, 0.1]])
    model = small_vae()
    vaebench.Trainer(model, vaebench.TrainerConfig(epochs=3, batch_size=64, progress=False,
                                                   device="cpu")).fit(data)
    return model, data


@pytest.mark.parametrize("name", NAMES)
def test_fit_encodes_a_trained_models_data(name, trained):
    model, data = trained
    sampler = create_sampler(name, model, **QUICK[name])
    summary = sampler.fit(model, data, seed=0)
    assert sampler.is_fitted and summary
    samples = sampler.generate(model, 5, seed=0)
    assert samples.shape == (5, 4) and torch.isfinite(samples).all()

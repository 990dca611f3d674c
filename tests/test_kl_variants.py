"""beta_vae, disentangled_beta_vae and beta_tc_vae."""

import math

import pytest
import torch
from model_checks import (
    assert_round_trip,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
)
from references import bernoulli_nll, reference_posterior
from torch.distributions import Independent, Normal, kl_divergence

from vaebench import create_model, load_model
from vaebench.data import as_data, load_dataset
from vaebench.distributions import DiagonalGaussian
from vaebench.models.beta_tc_vae import log_weight_matrix, minibatch_log_densities

MODELS = ["beta_vae", "disentangled_beta_vae", "beta_tc_vae"]
# settings for short runs on the 8x8 digits
SHORT_RUN = {"beta_vae": {"beta": 2.0},
             "disentangled_beta_vae": {"gamma": 5.0, "capacity_max": 5.0, "capacity_steps": 40},
             "beta_tc_vae": {"beta": 2.0}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]




def test_beta_vae_loss_is_recon_plus_beta_kl():
    model = create_model("beta_vae", input_dim=(1, 8, 8), latent_dim=3, beta=3.5,
                         likelihood="bernoulli")
    x = torch.rand(9, 1, 8, 8)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    q = reference_posterior(model, x)
    z = q.rsample()
    recon = bernoulli_nll(model.decoder(z), x)
    kl = kl_divergence(q, Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.loss, (recon + 3.5 * kl).mean())
    assert set(out.terms) == {"recon", "kl"}


def test_disentangled_beta_vae_capacity_term():
    model = create_model("disentangled_beta_vae", input_dim=(1, 8, 8), latent_dim=3,
                         gamma=100.0, capacity_max=20.0, capacity_steps=1000)
    x = torch.rand(9, 1, 8, 8)
    for step, capacity in ((0, 0.0), (250, 5.0), (1000, 20.0), (5000, 20.0)):
        model.num_steps.fill_(step)
        assert model.capacity() == pytest.approx(capacity)
        torch.manual_seed(4)
        out = model(x)
        torch.manual_seed(4)
        q = reference_posterior(model, x)
        z = q.rsample()
        recon = 0.5 * ((model.decoder(z) - x) ** 2).flatten(1).sum(1) + 32 * math.log(2 * math.pi)
        kl = kl_divergence(q, Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
        assert set(out.terms) == {"recon", "kl_capacity"}
        torch.testing.assert_close(out.terms["kl_capacity"], (kl - capacity).abs())
        torch.testing.assert_close(out.loss, (recon + 100.0 * (kl - capacity).abs()).mean())


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_tc_decomposition_sums_to_the_monte_carlo_kl(estimator):
    model = create_model("beta_tc_vae", input_dim=(1, 8, 8), latent_dim=4, alpha=1.0,
                         beta=1.0, gamma=1.0, estimator=estimator, dataset_size=1000)
    x = torch.rand(12, 1, 8, 8)
    torch.manual_seed(5)
    out = model(x)
    torch.manual_seed(5)
    q = reference_posterior(model, x)
    z = q.rsample()
    mc_kl = q.log_prob(z) - Independent(Normal(torch.zeros(4), torch.ones(4)), 1).log_prob(z)
    terms = out.terms
    assert set(terms) == {"recon", "mi", "tc", "dim_kl"}
    torch.testing.assert_close(terms["mi"] + terms["tc"] + terms["dim_kl"], mc_kl)
    recon = 0.5 * ((model.decoder(z) - x) ** 2).flatten(1).sum(1) + 32 * math.log(2 * math.pi)
    torch.testing.assert_close(out.loss, (recon + mc_kl).mean())
    # other weights: the loss weighs each term on its own
    model.config.alpha, model.config.beta, model.config.gamma = 0.5, 7.0, 2.0
    torch.manual_seed(5)
    out = model(x)
    expected = out.terms["recon"] + 0.5 * out.terms["mi"] + 7.0 * out.terms["tc"] \
        + 2.0 * out.terms["dim_kl"]
    torch.testing.assert_close(out.loss, expected.mean())


def _reference_log_densities(mean, log_var, z, n, estimator):
    """log q(z_i | x_i), log q(z_i), sum_j log q(z_ij) with explicit loops (float64), from
    Chen et al. 2018, Appendix C: MWS weights 1/(NM); MSS weights 1/N for the code's own
    sample, (N - M)/(NM) for one other sample and 1/M for the remaining M - 1 (M = B - 1)."""
    b, d = z.shape
    mean, std, z = mean.double(), torch.exp(0.5 * log_var.double()), z.double()

    def weight(i, m):
        if estimator == "mws":
            return 1.0 / (n * b)
        if m == i:
            return 1.0 / n
        big_m = b - 1
        return (n - big_m) / (n * big_m) if m == (i + 1) % b else 1.0 / big_m

    own, joint, marginals = [], [], []
    for i in range(b):
        dens = [Normal(mean[m], std[m]).log_prob(z[i]) for m in range(b)]  # each (d,)
        own.append(dens[i].sum())
        joint.append(math.log(sum(weight(i, m) * math.exp(dens[m].sum()) for m in range(b))))
        marginals.append(sum(math.log(sum(weight(i, m) * math.exp(dens[m][j])
                                          for m in range(b))) for j in range(d)))
    return (torch.stack(own), torch.tensor(joint, dtype=torch.float64),
            torch.tensor(marginals, dtype=torch.float64))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
@pytest.mark.parametrize("batch", [2, 6])
def test_minibatch_estimators_match_their_formula(estimator, batch):
    torch.manual_seed(0)
    mean, log_var = 0.5 * torch.randn(batch, 3), 0.3 * torch.randn(batch, 3)
    q = DiagonalGaussian(mean, log_var)
    z = q.rsample()
    got = minibatch_log_densities(q, z, 50, estimator)
    want = _reference_log_densities(mean, log_var, z, 50, estimator)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5)


def test_mss_weights_sum_to_one_and_edge_cases():
    for batch in (2, 3, 10):
        w = log_weight_matrix(batch, 100, "mss", torch.float64).exp()
        torch.testing.assert_close(w.sum(1), torch.ones(batch, dtype=torch.float64))
        assert torch.allclose(w.diagonal(), torch.full((batch,), 0.01, dtype=torch.float64))
    assert log_weight_matrix(1, 100, "mss").exp().item() == pytest.approx(1.0)
    # MWS as in the paper: every weight 1 / (N M)
    assert torch.allclose(log_weight_matrix(4, 100, "mws").exp(), torch.full((4, 4), 1 / 400))
    # N below the batch size is read as N = B (weights stay positive)
    assert torch.isfinite(log_weight_matrix(8, 3, "mss")).all()


def test_tc_terms_depend_on_the_batch_but_their_sum_does_not(monkeypatch):
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, sample_shape=(): self.mean.expand(sample_shape
                                                                       + self.mean.shape))
    model = create_model("beta_tc_vae", input_dim=(1, 8, 8), latent_dim=3, dataset_size=500)
    x = torch.rand(40, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    total = {k: v["mi"] + v["tc"] + v["dim_kl"] for k, v in (("s", small), ("l", large))}
    torch.testing.assert_close(total["s"], total["l"][:8])
    torch.testing.assert_close(small["recon"], large["recon"][:8])
    assert not torch.allclose(small["mi"], large["mi"][:8])


def test_dataset_size_comes_from_the_data_and_is_saved(tmp_path, digits):
    x_train, _ = digits
    model = create_model("beta_tc_vae", input_dim=(1, 8, 8), latent_dim=3)
    with pytest.raises(ValueError, match="dataset size"):
        model(x_train[:4])
    model.prepare(as_data(x_train))
    assert int(model.dataset_size) == len(x_train)
    model.save(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded._dataset_size == len(x_train)
    loaded(x_train[:4])
    fixed = create_model("beta_tc_vae", input_dim=(1, 8, 8), latent_dim=3, dataset_size=77)
    fixed.prepare(as_data(x_train))  # an explicit dataset_size wins
    assert int(fixed.dataset_size) == 77


@pytest.mark.parametrize("name", ["beta_vae", "disentangled_beta_vae"])
def test_per_sample_terms_do_not_change_with_batch_size(name, monkeypatch):
    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, sample_shape=(): self.mean.expand(sample_shape
                                                                       + self.mean.shape))
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=3)
    x = torch.rand(64, 1, 8, 8)
    small, large = model(x[:8]).terms, model(x).terms
    for key in small:
        torch.testing.assert_close(small[key], large[key][:8])


@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss_and_save_load(name, digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                         encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]},
                         **SHORT_RUN[name])
    assert_training_lowers_the_loss(model, x_train, x_test)  # 46 steps
    assert_round_trip(model, tmp_path / "m", x_test[:32])


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace", "continuous_bernoulli",
                                        "discretized_logistic"])
def test_every_likelihood(likelihood):
    x = torch.rand(5, 1, 8, 8)
    for name in MODELS:
        model = create_model(name, input_dim=(1, 8, 8), latent_dim=2, likelihood=likelihood,
                             dataset_size=10) if name == "beta_tc_vae" else \
            create_model(name, input_dim=(1, 8, 8), latent_dim=2, likelihood=likelihood)
        out = model(x)
        assert torch.isfinite(out.loss) and out.recon_x.shape == x.shape


@pytest.mark.parametrize("name,fields,field", [
    ("beta_vae", {"beta": -1.0}, "beta"),
    ("disentangled_beta_vae", {"gamma": -1.0}, "gamma"),
    ("disentangled_beta_vae", {"capacity_max": -3.0}, "capacity_max"),
    ("disentangled_beta_vae", {"capacity_steps": -1}, "capacity_steps"),
    ("beta_tc_vae", {"alpha": -1.0}, "alpha"),
    ("beta_tc_vae", {"estimator": "iw"}, "estimator"),
    ("beta_tc_vae", {"dataset_size": 0}, "dataset_size"),
    ("beta_vae", {"betta": 2.0}, "betta"),
])
def test_invalid_config_names_the_field(name, fields, field):
    with pytest.raises(ValueError, match=field):
        create_model(name, input_dim=(1, 8, 8), **fields)


def test_trains_from_the_command_line(tmp_path):
    for name in MODELS:
        assert_trains_from_the_cli(name, tmp_path / name, "--latent-dim", "3")
        assert (tmp_path / name / "samples.png").is_file()

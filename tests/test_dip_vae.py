"""dip_vae: DIP-VAE I and II (Kumar, Sattigeri and Balakrishnan 2018)."""

import math

import pytest
import torch
from model_checks import (
    assert_round_trip,
    assert_terms_batch_invariant,
    assert_training_lowers_the_loss,
    assert_trains_from_the_cli,
    fix_the_noise,
)
from references import reference_posterior
from torch.distributions import Independent, Normal, kl_divergence

from vaebench import create_model
from vaebench.data import load_dataset
from vaebench.distributions import DiagonalGaussian
from vaebench.models.dip_vae import batch_covariance, dip_penalty


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


def _reference_penalty(mean, log_var, dip_type, lambda_od, lambda_d):
    """Eq. 6 / 7 with torch.cov over the batch (the 1 / B plug-in estimate)."""
    cov = torch.cov(mean.T, correction=0)
    if dip_type == "ii":
        cov = cov + torch.diag(log_var.exp().mean(0))
    off = cov[~torch.eye(cov.shape[0], dtype=torch.bool)]
    return lambda_od * (off**2).sum() + lambda_d * ((cov.diagonal() - 1) ** 2).sum()


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_objective_equals_an_independent_computation(dip_type):
    model = create_model("dip_vae", input_dim=(1, 8, 8), latent_dim=4, dip_type=dip_type,
                         lambda_od=3.0, lambda_d=7.0)
    x = torch.rand(12, 1, 8, 8)
    torch.manual_seed(2)
    out = model(x)
    torch.manual_seed(2)
    q = reference_posterior(model, x)
    z = q.rsample()
    mean, log_var = model.encoder(x).chunk(2, dim=1)
    penalty = _reference_penalty(mean, log_var, dip_type, 3.0, 7.0)
    recon = 0.5 * ((model.decoder(z) - x) ** 2).flatten(1).sum(1) + 32 * math.log(2 * math.pi)
    kl = kl_divergence(q, Independent(Normal(torch.zeros(4), torch.ones(4)), 1))
    assert set(out.terms) == {"recon", "kl", "dip"}
    torch.testing.assert_close(out.terms["dip"], penalty.expand(12))  # the batch estimate
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + kl).mean() + penalty)


def test_default_diagonal_weight_follows_the_paper():
    for dip_type, lambda_d in (("i", 50.0), ("ii", 5.0)):
        model = create_model("dip_vae", input_dim=(4,), latent_dim=2, dip_type=dip_type,
                             lambda_od=5.0)
        assert model.config.diagonal_weight() == lambda_d
    assert create_model("dip_vae", input_dim=(4,), latent_dim=2, lambda_od=5.0,
                        lambda_d=1.0).config.diagonal_weight() == 1.0


def test_penalty_vanishes_exactly_at_identity_covariance():
    batch, dim = 20, 3
    centered = torch.randn(batch, dim, dtype=torch.float64)
    centered -= centered.mean(0)
    mean = math.sqrt(batch) * torch.linalg.qr(centered).Q  # Cov[mu] = I, still centered
    variances = torch.full((batch, dim), 0.25, dtype=torch.float64)
    q_i = DiagonalGaussian(mean, torch.full_like(mean, -1e3))
    assert float(dip_penalty(batch_covariance(q_i, "i"), 10.0, 100.0)) < 1e-20
    # Cov[mu] = 0.75 I and E[Sigma] = 0.25 I: II sees I, I sees the diagonal 0.75
    q_ii = DiagonalGaussian(0.5 * math.sqrt(3) * mean, variances.log())
    assert float(dip_penalty(batch_covariance(q_ii, "ii"), 10.0, 100.0)) < 1e-20
    assert float(dip_penalty(batch_covariance(q_ii, "i"), 10.0, 100.0)) == pytest.approx(
        100.0 * 3 * 0.25**2)


def test_recon_and_kl_are_per_sample_the_penalty_is_the_batchs(monkeypatch):
    fix_the_noise(monkeypatch)
    model = create_model("dip_vae", input_dim=(1, 8, 8), latent_dim=3, dip_type="ii")
    small, large = assert_terms_batch_invariant(model, torch.rand(40, 1, 8, 8),
                                                terms=("recon", "kl"))
    assert not torch.allclose(small["dip"], large["dip"][:8])


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_training_lowers_the_loss_and_save_load(dip_type, digits, tmp_path):
    x_train, x_test = digits
    torch.manual_seed(0)
    model = create_model("dip_vae", input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                         dip_type=dip_type, encoder_kwargs={"hidden": [64]},
                         decoder_kwargs={"hidden": [64]})
    assert_training_lowers_the_loss(model, x_train, x_test)
    assert_round_trip(model, tmp_path / "m", x_test[:32])


@pytest.mark.parametrize("fields,field", [({"dip_type": "iii"}, "dip_type"),
                                          ({"lambda_od": -1.0}, "lambda_od"),
                                          ({"lambda_d": -1.0}, "lambda_d")])
def test_invalid_config_names_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        create_model("dip_vae", input_dim=(1, 8, 8), **fields)


def test_trains_from_the_command_line(tmp_path):
    metrics = assert_trains_from_the_cli("dip_vae", tmp_path / "dip", "--latent-dim", "3",
                                         "--option", "dip_type=\"ii\"")
    assert set(metrics["eval_terms"]) == {"recon", "kl", "dip"}

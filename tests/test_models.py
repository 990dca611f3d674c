import math

import pytest
import torch
from custom_nets import TinyDecoder, TinyEncoder
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

import vaebench
from vaebench import AE, VAE, AEConfig, VAEConfig, create_model, list_models
from vaebench.distributions import DiagonalGaussian, StandardNormal
from vaebench.nn import ConvDecoder, ConvEncoder


def _normal_nll(x, mean, sigma):
    return -Independent(Normal(mean, sigma), x.dim() - 1).log_prob(x)


def test_vae_loss_equals_independent_computation():
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=6))
    x = torch.rand(10, 1, 28, 28)
    torch.manual_seed(3)
    out = model(x)
    # Same reparameterized draw, recomputed with torch.distributions.
    torch.manual_seed(3)
    params = model.encoder(x)
    mean, log_var = params.chunk(2, dim=1)
    q = Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)
    z = q.rsample()
    recon = _normal_nll(x, model.decoder(z), torch.ones(()))
    kl = kl_divergence(q, Independent(Normal(torch.zeros_like(mean), 1.0), 1))
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + kl).mean())
    torch.testing.assert_close(out.recon_loss, recon.mean())
    torch.testing.assert_close(out.reg_loss, kl.mean())
    assert torch.equal(out.z, z)


def test_gaussian_reconstruction_is_summed_not_averaged():
    model = AE(AEConfig(input_dim=(1, 28, 28), latent_dim=4))
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    sq = ((out.recon_x - x) ** 2).flatten(1).sum(1)
    expected = 0.5 * sq + 0.5 * 784 * math.log(2 * math.pi)
    torch.testing.assert_close(out.terms["recon"], expected)


def test_bernoulli_option_matches_torch_distributions():
    model = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=3, likelihood="bernoulli"))
    x = (torch.rand(7, 1, 8, 8) > 0.5).float()
    logits = torch.randn(7, 1, 8, 8)
    nll = model.likelihood.nll(logits, x)
    torch.testing.assert_close(nll, -Independent(Bernoulli(logits=logits), 3).log_prob(x))
    assert torch.allclose(model.likelihood.mean(logits), torch.sigmoid(logits))


def test_diagonal_gaussian_matches_torch():
    mean, log_var = torch.randn(4, 5), torch.randn(4, 5)
    q = DiagonalGaussian(mean, log_var)
    ref = Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)
    z = torch.randn(3, 4, 5)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    std = Independent(Normal(torch.zeros(5), torch.ones(5)), 1)
    torch.testing.assert_close(StandardNormal((5,)).log_prob(z), std.log_prob(z))
    torch.testing.assert_close(q.kl_standard_normal(), kl_divergence(ref, Independent(
        Normal(torch.zeros_like(mean), torch.ones_like(mean)), 1)))
    assert q.rsample((7,)).shape == (7, 4, 5)


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_terms_are_batch_size_invariant(name):
    model = create_model(name, input_dim=(1, 28, 28), latent_dim=4)
    model.eval()
    x = torch.rand(64, 1, 28, 28)
    torch.manual_seed(1)
    small = model(x[:8]).terms
    torch.manual_seed(1)
    # The same eight samples first in a batch of 64 draw the same noise only for the AE;
    # for the VAE compare with the noise removed (posterior mean) through the likelihood.
    large = model(x).terms
    if name == "ae":
        for key in small:
            torch.testing.assert_close(small[key], large[key][:8])
    else:
        torch.testing.assert_close(small["kl"], large["kl"][:8])
        q_small, q_large = model.encode(x[:8]), model.encode(x)
        recon_small = model.likelihood.nll(model.decode(q_small.mean), x[:8])
        recon_large = model.likelihood.nll(model.decode(q_large.mean), x)[:8]
        torch.testing.assert_close(recon_small, recon_large)


def test_loss_is_mean_of_per_sample_terms_over_any_batch():
    model = create_model("vae", input_dim=(1, 8, 8), latent_dim=2)
    x = torch.rand(32, 1, 8, 8)
    out = model(x)
    per_sample = out.terms["recon"] + out.terms["kl"]
    torch.testing.assert_close(out.loss, per_sample.mean())
    assert all(t.shape == (32,) for t in out.terms.values())


def test_outputs_and_api_shapes():
    model = create_model("vae", input_dim=(1, 28, 28), latent_dim=5)
    x = torch.rand(3, 1, 28, 28)
    out = model(x)
    assert set(out) >= {"loss", "recon_loss", "reg_loss", "recon_x", "z"}
    assert out["recon_x"].shape == x.shape and out.z.shape == (3, 5)
    assert model.encode(x).mean.shape == (3, 5)
    assert model.decode(torch.zeros(2, 5)).shape == (2, 1, 28, 28)
    assert model.reconstruct(x).shape == x.shape
    assert model.generate(4).shape == (4, 1, 28, 28)


@pytest.mark.parametrize("size", [28, 64])
def test_conv_networks(size):
    model = create_model("vae", input_dim=(1, size, size), latent_dim=8, encoder="conv",
                         decoder="conv")
    assert isinstance(model.encoder, ConvEncoder) and isinstance(model.decoder, ConvDecoder)
    x = torch.rand(2, 1, size, size)
    assert model(x).recon_x.shape == x.shape


def test_conv_rejects_other_sizes():
    with pytest.raises(ValueError, match="28 x 28 and 64 x 64"):
        create_model("vae", input_dim=(1, 32, 32), encoder="conv")


def test_user_networks_are_checked_at_construction():
    with pytest.raises(ValueError, match=r"needs \(2, 8\).*mean and log-variance"):
        VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=4), encoder=TinyEncoder(784, 5))
    with pytest.raises(ValueError, match=r"decoder outputs shape \(2, 1, 14, 14\)"):
        VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=4),
            encoder=TinyEncoder(784, 8), decoder=TinyDecoder(4, (1, 14, 14)))
    with pytest.raises(ValueError, match="encoder fails on a batch"):
        VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=4), encoder=TinyEncoder(100, 8))
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=4),
                encoder=TinyEncoder(784, 8), decoder=TinyDecoder(4, (1, 28, 28)))
    assert model.config.encoder == "custom_nets:TinyEncoder"


def test_registry():
    assert {"ae", "vae"} <= set(list_models())
    assert isinstance(create_model("ae", input_dim=(3,)), AE)
    with pytest.raises(ValueError, match=r"unknown model 'vea'; known models: .*\bae, .*\bvae\b"):
        create_model("vea", input_dim=(1, 28, 28))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="latent_dim"):
        VAEConfig(input_dim=(1, 28, 28), latent_dim=0)
    with pytest.raises(ValueError, match="laten_dim"):
        VAEConfig(input_dim=(1, 28, 28), laten_dim=3)
    with pytest.raises(ValueError, match="likelihood"):
        VAEConfig(input_dim=(1, 28, 28), likelihood="poisson")
    with pytest.raises(ValueError, match="input_dim"):
        VAEConfig(input_dim=(1, 0, 28))


def test_unknown_network_name():
    with pytest.raises(ValueError, match="unknown encoder 'resnet'"):
        create_model("vae", input_dim=(1, 28, 28), encoder="resnet")


def test_public_api():
    assert vaebench.__version__
    for name in ("Trainer", "TrainerConfig", "load_model", "create_model", "list_models"):
        assert hasattr(vaebench, name)

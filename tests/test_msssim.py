"""SSIM / MS-SSIM (vaebench.ssim) and the MS-SSIM VAE (msssim_vae)."""

import math

import pytest
import torch
from references import reference_posterior
from torch.distributions import Independent, Normal, kl_divergence

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.data import load_dataset
from vaebench.metrics import has_likelihood, likelihood_report
from vaebench.models import MSSSIMVAE, MSSSIMVAEConfig
from vaebench.ssim import MS_SSIM_WEIGHTS, MSSSIMPlan, ms_ssim, ms_ssim_plan, ssim
from vaebench.training import evaluate

C1, C2 = 0.01**2, 0.03**2


def _window(size, sigma):
    g = [math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(size)]
    total = sum(g)
    return [[a * b / total**2 for b in g] for a in g]


def _maps_by_hand(x, y, size, sigma):
    """Lists of (l, cs) at every valid window position of 2-D images, from the formulas."""
    w = _window(size, sigma)
    rows, cols = len(x), len(x[0])
    out = []
    for r in range(rows - size + 1):
        for c in range(cols - size + 1):
            cells = [(w[i][j], x[r + i][c + j], y[r + i][c + j])
                     for i in range(size) for j in range(size)]
            mx = sum(k * a for k, a, _ in cells)
            my = sum(k * b for k, _, b in cells)
            vx = sum(k * a * a for k, a, _ in cells) - mx * mx
            vy = sum(k * b * b for k, _, b in cells) - my * my
            cov = sum(k * a * b for k, a, b in cells) - mx * my
            lum = (2 * mx * my + C1) / (mx * mx + my * my + C1)
            out.append((lum, (2 * cov + C2) / (vx + vy + C2)))
    return out


def _pool_by_hand(x):
    return [[(x[2 * r][2 * c] + x[2 * r][2 * c + 1] + x[2 * r + 1][2 * c]
              + x[2 * r + 1][2 * c + 1]) / 4 for c in range(len(x[0]) // 2)]
            for r in range(len(x) // 2)]


def test_ssim_matches_hand_computation():
    x = torch.rand(1, 1, 9, 8, dtype=torch.float64)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    maps = _maps_by_hand(x[0, 0].tolist(), y[0, 0].tolist(), 7, 1.1)
    expected = sum(lum * cs for lum, cs in maps) / len(maps)  # 3 x 2 positions
    assert float(ssim(x, y, window_size=7, sigma=1.1)) == pytest.approx(expected, rel=1e-10)


def test_ms_ssim_matches_hand_computation():
    x = torch.rand(1, 1, 14, 14, dtype=torch.float64)
    y = (0.7 * x + 0.3 * torch.rand_like(x))
    plan = MSSSIMPlan(window_size=7, sigma=1.0, weights=(0.4, 0.6))
    xs, ys = x[0, 0].tolist(), y[0, 0].tolist()
    fine = _maps_by_hand(xs, ys, 7, 1.0)  # 8 x 8 positions
    cs1 = sum(cs for _, cs in fine) / len(fine)
    (lum2, cs2), = _maps_by_hand(_pool_by_hand(xs), _pool_by_hand(ys), 7, 1.0)  # 7 x 7: one
    expected = cs1**0.4 * (lum2 * cs2) ** 0.6
    assert float(ms_ssim(x, y, plan=plan)) == pytest.approx(expected, rel=1e-10)


def test_scale_rule_for_small_and_large_images():
    assert ms_ssim_plan(28, 28).window_size == 7 and ms_ssim_plan(28, 28).scales == 3
    assert ms_ssim_plan(64, 64).window_size == 11 and ms_ssim_plan(64, 64).scales == 3
    assert ms_ssim_plan(8, 8).window_size == 3 and ms_ssim_plan(8, 8).scales == 2
    assert ms_ssim_plan(176, 200).scales == 5 and ms_ssim_plan(161, 161).scales == 4
    plan = ms_ssim_plan(28, 28)
    assert sum(plan.weights) == pytest.approx(1.0)  # renormalized below 5 scales
    assert plan.weights[0] / plan.weights[1] == pytest.approx(
        MS_SSIM_WEIGHTS[0] / MS_SSIM_WEIGHTS[1])
    assert plan.sigma == pytest.approx(1.5 * 7 / 11)
    assert ms_ssim_plan(256, 256) == MSSSIMPlan(11, 1.5, MS_SSIM_WEIGHTS)
    with pytest.raises(ValueError, match="3 x 3"):
        ms_ssim_plan(2, 10)
    with pytest.raises(ValueError, match="too small"):
        ms_ssim(torch.rand(1, 1, 20, 20), torch.rand(1, 1, 20, 20), plan=ms_ssim_plan(64, 64))


@pytest.mark.parametrize("size", [28, 64])
def test_ms_ssim_properties(size):
    x = torch.rand(4, 1, size, size)
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)  # some structure
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(4))
    values = [ms_ssim(x, (x + s * torch.randn_like(x)).clamp(0, 1)) for s in (0.02, 0.1, 0.3)]
    assert torch.all(values[0] > values[1]) and torch.all(values[1] > values[2])
    y = torch.rand_like(x)
    torch.testing.assert_close(ms_ssim(x, y), ms_ssim(y, x))
    for other in (y, 1 - x, torch.zeros_like(x), (x + 0.5 * torch.randn_like(x)).clamp(0, 1)):
        value = ms_ssim(x, other)
        assert torch.all(value >= 0) and torch.all(value <= 1)


def test_constant_images_have_only_luminance():
    a, b = 0.2, 0.6
    x, y = torch.full((1, 1, 28, 28), a), torch.full((1, 1, 28, 28), b)
    weight = ms_ssim_plan(28, 28).weights[-1]
    expected = ((2 * a * b + C1) / (a * a + b * b + C1)) ** weight
    assert float(ms_ssim(x, y)) == pytest.approx(expected, rel=1e-5)
    # a constant shift keeps contrast and structure: cs = 1 at every scale
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    _, cs = zip(*_maps_by_hand(x[0, 0, :11, :11].tolist(), (x[0, 0, :11, :11] + 0.1).tolist(),
                               11, 1.5), strict=True)
    assert cs[0] == pytest.approx(1.0, rel=1e-12)


def test_channels_are_averaged_and_gradients_are_finite():
    x = torch.rand(2, 3, 28, 28)
    y = torch.rand(2, 3, 28, 28)
    per_channel = torch.stack([ms_ssim(x[:, c:c + 1], y[:, c:c + 1]) for c in range(3)], 1)
    torch.testing.assert_close(ms_ssim(x, y), per_channel.mean(1))
    z = torch.rand(2, 1, 28, 28, requires_grad=True)
    value = ms_ssim(z, 1 - z.detach()).sum() + ms_ssim(z, z.detach() * 0.5).sum()
    (grad,) = torch.autograd.grad(value, z)
    assert torch.isfinite(grad).all()


def test_msssim_vae_objective_equals_independent_computation():
    model = MSSSIMVAE(MSSSIMVAEConfig(input_dim=(1, 28, 28), latent_dim=3, beta=0.5,
                                      likelihood="bernoulli"))
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(4)
    out = model(x)
    torch.manual_seed(4)
    q = reference_posterior(model, x)
    z = q.rsample()
    recon = 784 * (1 - ms_ssim(torch.sigmoid(model.decoder(z)), x))
    kl = kl_divergence(q, Independent(Normal(torch.zeros_like(q.mean), 1.0), 1))
    assert set(out.terms) == {"recon", "kl"}
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss, (recon + 0.5 * kl).mean())


def test_msssim_vae_has_no_likelihood():
    model = create_model("msssim_vae", input_dim=(1, 8, 8), latent_dim=2)
    with pytest.raises(TypeError, match="not -log p"):
        model.log_importance_weights(torch.rand(2, 1, 8, 8), 3)
    assert not has_likelihood(model)
    with pytest.raises(TypeError, match="undefined: its reconstruction term .* MS-SSIM"):
        likelihood_report(model, torch.rand(4, 1, 8, 8), k=2)


def test_msssim_vae_config_validates():
    with pytest.raises(ValueError, match="input_dim"):
        MSSSIMVAEConfig(input_dim=(64,))
    with pytest.raises(ValueError, match="input_dim"):
        MSSSIMVAEConfig(input_dim=(1, 2, 2))
    with pytest.raises(ValueError, match="beta"):
        MSSSIMVAEConfig(input_dim=(1, 28, 28), beta=-1)
    model = create_model("msssim_vae", input_dim=(1, 64, 64), latent_dim=4, encoder="conv",
                         decoder="conv")
    out = model(torch.rand(2, 1, 64, 64))
    out.loss.backward()
    assert out.terms["recon"].shape == (2,)


def test_msssim_vae_terms_are_batch_size_invariant():
    model = create_model("msssim_vae", input_dim=(1, 28, 28), latent_dim=3).eval()
    x = torch.rand(24, 1, 28, 28)
    q_small, q_large = model.encode(x[:6]), model.encode(x)
    small = model.reconstruction_term(model.decode(q_small.mean), x[:6])
    large = model.reconstruction_term(model.decode(q_large.mean), x)[:6]
    torch.testing.assert_close(small, large)
    torch.testing.assert_close(q_small.kl_standard_normal(), q_large.kl_standard_normal()[:6])


def test_msssim_vae_trains_on_mnist_and_save_load_is_identical(tmp_path):
    x, _ = load_dataset("mnist5k", "train")
    x = x[:256]
    model = create_model("msssim_vae", input_dim=(1, 28, 28), latent_dim=4,
                         likelihood="bernoulli", encoder_kwargs={"hidden": [64]},
                         decoder_kwargs={"hidden": [64]})
    torch.manual_seed(0)
    before = evaluate(model, x)
    history = Trainer(model, TrainerConfig(epochs=4, batch_size=32, progress=False,
                                           keep_best=False)).fit(x)  # 32 steps
    torch.manual_seed(0)
    after = evaluate(model, x)
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert after["loss"] < before["loss"] and after["recon"] < before["recon"]
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    model.eval(), loaded.eval()
    torch.manual_seed(1)
    a = model(x[:16])
    torch.manual_seed(1)
    b = loaded(x[:16])
    for key in a.terms:
        assert torch.equal(a.terms[key], b.terms[key]), key


def test_msssim_vae_beta_composes_with_kl_annealing():
    model = create_model("msssim_vae", input_dim=(1, 8, 8), latent_dim=2, beta=4.0,
                         kl_schedule="linear", kl_anneal_steps=10)
    model.train()
    model.num_steps.fill_(5)
    assert model.term_weights()["kl"] == pytest.approx(4.0 * model.kl_weight())
    model.eval()
    assert model.term_weights()["kl"] == pytest.approx(4.0)

"""topk_sae: the TopK sparse autoencoder (Gao et al. 2024)."""

import json
import math

import numpy as np
import pytest
import torch
from model_checks import assert_training_lowers_the_loss

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.cli import main
from vaebench.data import as_data
from vaebench.metrics import reconstruction_error
from vaebench.models.topk_sae import geometric_median, topk_relu
from vaebench.samplers import create_sampler


def sparse_data(n, dim=32, atoms=64, active=3, seed=0):
    """Rows that are sums of ``active`` random atoms of a fixed unit-norm dictionary, with
    coefficients in [1, 2]."""
    generator = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(dim, atoms, generator=generator)
    dictionary /= dictionary.norm(dim=0)
    chosen = torch.rand(n, atoms, generator=generator).argsort(1)[:, :active]
    weights = 1 + torch.rand(n, active, generator=generator)
    return torch.zeros(n, atoms).scatter(1, chosen, weights) @ dictionary.T


def _randomized(model):
    """Every parameter away from its initial value, so that each one shows in the output."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
        model.decoder.normalize_columns()
    return model


def test_topk_relu_keeps_the_k_largest_and_drops_negatives():
    pre = torch.tensor([[0.5, -1.0, 2.0, 1.0], [-3.0, -1.0, -2.0, 0.5]])
    expected = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, -0.0, 0.0, 0.5]])
    torch.testing.assert_close(topk_relu(pre, 2), expected)


def test_exactly_k_latents_are_active_the_largest_pre_activations():
    model = create_model("topk_sae", input_dim=(32,), latent_dim=64, k=5)
    x = torch.randn(50, 32)
    z = model.encode(x).mean
    pre = (x - model.pre_bias) @ model.encoder.weight.T + model.encoder.bias
    top = pre.topk(5, dim=1)
    assert bool((top.values > 0).all())  # so ReLU keeps all five
    assert ((z != 0).sum(1) == 5).all()
    torch.testing.assert_close(z.gather(1, top.indices), top.values)


@pytest.mark.parametrize("dead_count", [0, 10])
def test_objective_equals_an_independent_computation(dead_count):
    model = _randomized(create_model("topk_sae", input_dim=(32,), latent_dim=64, k=4,
                                     sigma=0.7, auxk_alpha=0.25, auxk_k=3,
                                     dead_after_tokens=100))
    model.samples_since_fired[:dead_count] = 100
    x = torch.randn(12, 32)
    out = model(x)
    w_enc, b_enc, w_dec, b_pre = (model.encoder.weight, model.encoder.bias,
                                  model.decoder.weight, model.pre_bias)
    pre = (x - b_pre) @ w_enc.T + b_enc
    top = pre.topk(4, dim=1)
    z = torch.zeros(12, 64).scatter(1, top.indices, top.values.clamp_min(0))
    x_hat = z @ w_dec.T + b_pre
    recon = 0.5 * ((x - x_hat) ** 2).sum(1) / 0.49 + 32 * (math.log(0.7) + 0.5 * math.log(
        2 * math.pi))
    auxk = torch.zeros(12)
    if dead_count:
        dead_top = pre[:, :dead_count].topk(3, dim=1)
        z_aux = torch.zeros(12, dead_count).scatter(1, dead_top.indices,
                                                    dead_top.values.clamp_min(0))
        auxk = 0.5 * ((x - x_hat - z_aux @ w_dec[:, :dead_count].T) ** 2).sum(1) / 0.49
        assert bool((auxk > 0).all())
    torch.testing.assert_close(out.z, z)
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.terms["auxk"], auxk)
    torch.testing.assert_close(out.loss, (recon + 0.25 * auxk).mean())


def test_auxk_trains_only_the_dead_latents():
    model = _randomized(create_model("topk_sae", input_dim=(32,), latent_dim=64, k=4,
                                     dead_after_tokens=100))
    model.samples_since_fired[:10] = 100
    model(torch.randn(12, 32)).terms["auxk"].sum().backward()
    assert bool(model.decoder.weight.grad[:, :10].any())
    assert not bool(model.decoder.weight.grad[:, 10:].any())
    assert not bool(model.encoder.weight.grad[10:].any())
    assert not bool(model.encoder.bias.grad[10:].any())  # e = x - x_hat is a constant


def test_terms_do_not_depend_on_the_batch():
    model = _randomized(create_model("topk_sae", input_dim=(32,), latent_dim=64, k=4,
                                     dead_after_tokens=100)).eval()
    model.samples_since_fired[:10] = 100
    x = torch.randn(40, 32)
    small, large = model(x[:8]).terms, model(x).terms
    for key in ("recon", "auxk"):
        torch.testing.assert_close(small[key], large[key][:8])


def test_dead_latents_are_counted_over_the_epoch():
    model = create_model("topk_sae", input_dim=(16,), latent_dim=48, k=2,
                         dead_after_tokens=25)
    with torch.no_grad():
        model.encoder.bias[:6] = -1e3  # these six can never fire
    x = torch.randn(70, 16)
    batches = x.split(20)  # 20, 20, 20, 10 samples
    model.train()
    model.on_epoch_start()
    for batch in batches:
        model(batch)
    fired_in = [(model.encode(b).mean > 0).any(0) for b in batches]
    fired = torch.stack(fired_in).any(0)
    assert not bool(fired[:6].any())
    assert model.epoch_metrics() == {"dead_latents": float(48 - int(fired.sum()))}
    since = torch.full((48,), 70)  # samples since the end of the last batch that fired
    for end, fired_here in zip((20, 40, 60, 70), fired_in, strict=True):
        since[fired_here] = 70 - end
    torch.testing.assert_close(model.samples_since_fired, since)
    torch.testing.assert_close(model.dead_latents(), since >= 25)
    model.on_epoch_start()
    model.eval()
    model(x)  # evaluation does not count
    assert model.epoch_metrics() == {"dead_latents": 48.0}


def test_b_pre_starts_at_the_geometric_median():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]],
                          dtype=torch.float64)
    median = geometric_median(points, iterations=500)
    gradient = ((median - points) / (median - points).norm(dim=1, keepdim=True)).sum(0)
    assert float(gradient.norm()) < 1e-6  # the sum of unit vectors vanishes at the median
    model = create_model("topk_sae", input_dim=(2,), latent_dim=4, k=1)
    model.prepare(as_data(points.float()))
    torch.testing.assert_close(model.pre_bias, geometric_median(points).float())
    model.num_steps.fill_(1)  # a trained model keeps its b_pre
    model.prepare(as_data(points.float() + 5))
    torch.testing.assert_close(model.pre_bias, geometric_median(points).float())


def test_training_recovers_a_sparse_dictionary_with_unit_norm_columns():
    x = sparse_data(2400)
    train, test = x[:2000], x[2000:]
    torch.manual_seed(0)
    model = create_model("topk_sae", input_dim=(32,), latent_dim=64, k=3)
    model.prepare(as_data(train))
    before = reconstruction_error(model, test)["mse"]
    assert_training_lowers_the_loss(model, train, test)
    history = Trainer(model, TrainerConfig(epochs=10, learning_rate=1e-2,
                                           progress=False)).fit(train, test)
    assert reconstruction_error(model, test)["mse"] < 0.25 * before
    assert reconstruction_error(model, test)["mse"] < 0.2 * float(test.var(0).mean())
    assert all("train_dead_latents" in record for record in history)
    torch.testing.assert_close(model.decoder.weight.norm(dim=0), torch.ones(64))


def test_round_trip_and_generation_through_the_mixture(tmp_path):
    x = sparse_data(300)
    model = _randomized(create_model("topk_sae", input_dim=(32,), latent_dim=64, k=3,
                                     dead_after_tokens=100))
    model.samples_since_fired[:10] = 100
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.testing.assert_close(loaded.samples_since_fired, model.samples_since_fired)
    model.eval()
    terms, loaded_terms = model(x).terms, loaded(x).terms
    assert all(torch.equal(terms[key], loaded_terms[key]) for key in terms)
    with pytest.raises(RuntimeError, match="gmm"):
        model.generate(4)
    sampler = create_sampler("gmm", model, n_components=2)
    sampler.fit(model, x)
    assert torch.equal(sampler.generate(model, 5, seed=1), sampler.generate(loaded, 5, seed=1))


@pytest.mark.parametrize("fields,field", [
    ({"k": 65}, "k"), ({"likelihood": "bernoulli"}, "likelihood"),
    ({"encoder": "mlp"}, "encoder"), ({"decoder_kwargs": {"hidden": [8]}}, "decoder_kwargs"),
    ({"auxk_alpha": -1.0}, "auxk_alpha"), ({"dead_after_tokens": 0}, "dead_after_tokens")])
def test_invalid_config_names_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        create_model("topk_sae", input_dim=(32,), latent_dim=64, **fields)


def test_refuses_a_network_of_the_users():
    with pytest.raises(ValueError, match="its own linear encoder"):
        create_model("topk_sae", input_dim=(32,), latent_dim=64,
                     encoder=torch.nn.Linear(32, 64))


def test_trains_from_the_command_line_on_a_table(tmp_path):
    table = tmp_path / "embeddings.npy"
    np.save(table, sparse_data(400, dim=16, atoms=24).numpy())
    out = tmp_path / "run"
    assert main(["train", "--model", "topk_sae", "--dataset", str(table), "--epochs", "2",
                 "--latent-dim", "24", "--option", "k=3", "--option", "dead_after_tokens=200",
                 "--output", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["eval_loss"]) and set(metrics["eval_terms"]) == {"recon",
                                                                                  "auxk"}
    history = json.loads((out / "history.json").read_text())
    assert all(0 <= record["train_dead_latents"] <= 24 for record in history)
    model = load_model(out / "model")
    assert model.name == "topk_sae" and model.config.likelihood == "gaussian"

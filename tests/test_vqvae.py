import copy
import json
import math

import pytest
import torch
from custom_nets import TinyDecoder, TinyEncoder
from torch.distributions import Independent, Normal

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.cli import main
from vaebench.data import load_dataset
from vaebench.metrics import reconstruction_mse
from vaebench.models.vqvae import (
    FSQVAE,
    HRQVAE,
    LFQVAE,
    VQVAE,
    VQVAEEMA,
    FSQVAEConfig,
    GumbelVQVAE,
    VQVAEConfig,
)
from vaebench.nn import SpatialDecoder, SpatialEncoder
from vaebench.samplers import create_sampler, load_sampler, samplers_for, save_sampler

#: The per-sample terms of each quantized model.
TERMS = {"vqvae": {"recon", "codebook", "commitment"}, "vqvae_ema": {"recon", "commitment"},
         "hrqvae": {"recon", "codebook", "commitment"}, "fsq_vae": {"recon"},
         "lfq_vae": {"recon", "commitment", "entropy", "batch_entropy"},
         "gumbel_vqvae": {"recon", "kl"}}
QUANTIZED = list(TERMS)
#: Models with a learned codebook of ``num_codes`` codes.
CODEBOOKS = ["vqvae", "vqvae_ema", "hrqvae", "gumbel_vqvae"]
#: Models with the VectorQuantizer options (restarts, k-means, ...).
NEAREST_CODE = ["vqvae", "vqvae_ema", "hrqvae"]


def _small(name, **options):
    """A quantized model on 8 x 8 images (a 2 x 2 grid), small enough for fast tests."""
    defaults = {"input_dim": (1, 8, 8), "latent_dim": 4}
    if name in CODEBOOKS:
        defaults["num_codes"] = 16
    return create_model(name, **{**defaults, **options})


@pytest.mark.parametrize("name", QUANTIZED)
def test_terms_are_batch_size_invariant(name):
    model = create_model(name, input_dim=(1, 28, 28))
    model.eval()
    x = torch.rand(64, 1, 28, 28)
    small, large = model(x[:8]), model(x)
    assert set(small.terms) == TERMS[name]
    for key, term in small.terms.items():
        assert term.shape == (8,)
        if key != "batch_entropy":  # LFQ's minibatch quantity, carried by each sample
            torch.testing.assert_close(term, large.terms[key][:8])


def test_vqvae_terms_equal_an_independent_computation():
    model = create_model("vqvae", input_dim=(1, 28, 28), latent_dim=8, num_codes=32, beta=0.4)
    torch.nn.init.normal_(model.quantizer.embedding)
    model.eval()
    x = torch.rand(6, 1, 28, 28)
    out = model(x)
    z_e = model.encoder(x)  # (6, 8, 7, 7)
    assert z_e.shape == (6, 8, 7, 7)
    rows = z_e.flatten(2).transpose(1, 2)  # (6, 49, 8)
    codebook = model.quantizer.embedding
    index = torch.cdist(rows, codebook.expand(6, -1, -1)).argmin(-1)
    codes = codebook[index]
    squared = ((rows - codes) ** 2).sum((1, 2))
    z_q = codes.transpose(1, 2).reshape(6, 8, 7, 7)
    recon = -Independent(Normal(model.decoder(z_q), 1.0), 3).log_prob(x)
    torch.testing.assert_close(out.terms["codebook"], squared)
    torch.testing.assert_close(out.terms["commitment"], squared)
    torch.testing.assert_close(out.terms["recon"], recon)
    torch.testing.assert_close(out.loss, (recon + squared + 0.4 * squared).mean())
    torch.testing.assert_close(out.reg_loss, (1.4 * squared).mean())
    torch.testing.assert_close(out.z, z_q)
    torch.testing.assert_close(model.reconstruct(x), out.recon_x)


def _grads(model, term):
    out = model(torch.rand(4, 1, 8, 8))
    named = list(model.named_parameters())
    grads = torch.autograd.grad(out.terms[term].sum(), [p for _, p in named],
                                allow_unused=True)
    return {n.split(".")[0] for (n, _), g in zip(named, grads, strict=True)
            if g is not None and g.abs().sum() > 0}


@pytest.mark.parametrize("name", ["vqvae", "hrqvae"])
def test_gradients_reach_exactly_the_listed_parameters(name):
    model = _small(name)
    codebooks = {n for n, _ in model.named_parameters() if "embedding" in n}
    assert len(codebooks) == (1 if name == "vqvae" else 3)
    # codebook term -> the codebook only; commitment -> the encoder only;
    # reconstruction -> decoder and, through the straight-through path, the encoder
    assert _grads(model, "codebook") == {"quantizer"}
    assert _grads(model, "commitment") == {"encoder"}
    assert _grads(model, "recon") == {"encoder", "decoder"}
    out = model(torch.rand(4, 1, 8, 8))
    for codebook in codebooks:
        param = model.get_parameter(codebook)
        assert torch.autograd.grad(out.terms["recon"].sum() + out.terms["commitment"].sum(),
                                   param, allow_unused=True)[0] is None


def test_ema_and_fsq_have_no_trained_codebook():
    ema = _small("vqvae_ema")
    assert ema.config.ema and isinstance(ema, VQVAEEMA)
    assert not any("quantizer" in n for n, _ in ema.named_parameters())
    assert {"quantizer.embedding", "quantizer.ema_cluster_size",
            "quantizer.ema_embed_sum"} <= set(ema.state_dict())
    assert _grads(ema, "commitment") == {"encoder"}
    assert _grads(ema, "recon") == {"encoder", "decoder"}
    fsq = _small("fsq_vae")
    assert set(fsq(torch.rand(2, 1, 8, 8)).terms) == {"recon"}
    assert not any("quantizer" in n for n, _ in fsq.named_parameters())  # d = latent_dim
    assert _grads(fsq, "recon") == {"encoder", "decoder"}
    projected = _small("fsq_vae", latent_dim=6)  # 6 channels projected to 4 and back
    assert _grads(projected, "recon") == {"encoder", "decoder", "quantizer"}


def test_commitment_weight_is_beta_in_one_place():
    model = _small("vqvae", beta=0.1)
    assert model.term_weights() == {"commitment": 0.1}
    assert _small("fsq_vae").term_weights() == {}
    model.eval()
    out = model(torch.rand(5, 1, 8, 8))
    t = out.terms
    torch.testing.assert_close(out.loss, (t["recon"] + t["codebook"] + 0.1 * t["commitment"])
                               .mean())


@pytest.mark.parametrize(("size", "grid"), [(28, (7, 7)), (64, (8, 8)), (8, (2, 2))])
def test_spatial_networks_and_default_choice(size, grid):
    model = create_model("vqvae", input_dim=(1, size, size), latent_dim=5)
    assert isinstance(model.encoder, SpatialEncoder)
    assert isinstance(model.decoder, SpatialDecoder)
    assert model.grid_shape == grid and model.latent_shape == (5, *grid)
    x = torch.rand(2, 1, size, size)
    q = model.encode(x)
    assert q.mean.shape == (2, 5, *grid) and q.indices.shape == (2, *grid)
    assert model(x).recon_x.shape == x.shape
    assert model.code_indices(x).shape == (2, 1, *grid)


def test_other_grids_and_networks():
    finer = create_model("vqvae", input_dim=(3, 64, 64), encoder_kwargs={"downsamples": 2},
                         decoder_kwargs={"downsamples": 2})
    assert finer.grid_shape == (16, 16)
    # vectors: MLP networks and one code per sample
    flat = create_model("vqvae", input_dim=(6,), latent_dim=3, num_codes=8)
    assert flat.config.encoder == "mlp" and flat.grid_shape == ()
    assert flat.code_indices(torch.rand(4, 6)).shape == (4, 1, 1, 1)
    # a built-in network given on one side pairs with the same on the other
    conv = create_model("vqvae", input_dim=(1, 28, 28), encoder="conv")
    assert conv.config.decoder == "conv" and conv.latent_shape == (16,)
    # own networks with a spatial latent say their grid
    model = VQVAE(VQVAEConfig(input_dim=(1, 28, 28), latent_dim=4, grid_shape=(7, 7)),
                  encoder=SpatialEncoder((1, 28, 28), 4), decoder=SpatialDecoder(4, (1, 28, 28)))
    assert model.latent_shape == (4, 7, 7)
    with pytest.raises(ValueError, match="grid_shape"):
        VQVAE(VQVAEConfig(input_dim=(1, 28, 28), latent_dim=4),
              encoder=TinyEncoder(784, 5), decoder=TinyDecoder(4, (1, 28, 28)))


def test_bad_options_name_the_field():
    for field, options in [("num_codes", {"num_codes": 0}), ("beta", {"beta": -1}),
                           ("decay", {"decay": 1.0}), ("epsilon", {"epsilon": 0}),
                           ("dead_after", {"dead_after": 0}), ("grid_shape", {"grid_shape": (3,)}),
                           ("input_dim", {"input_dim": (1, 30, 30), "encoder": "spatial"})]:
        with pytest.raises(ValueError, match=field):
            VQVAEConfig(**{"input_dim": (1, 28, 28), **options})
    with pytest.raises(ValueError, match="depth"):
        create_model("hrqvae", input_dim=(1, 28, 28), depth=0)
    with pytest.raises(ValueError, match="levels"):
        FSQVAEConfig(input_dim=(1, 28, 28), levels=(8, 1))
    for name, field, value in [("hrqvae", "cosine", True), ("vqvae", "kmeans_iters", 0),
                               ("lfq_vae", "latent_dim", 21),
                               ("lfq_vae", "entropy_temperature", 0),
                               ("lfq_vae", "batch_entropy_weight", -1),
                               ("gumbel_vqvae", "tau_end", 0),
                               ("gumbel_vqvae", "tau_anneal_steps", -1),
                               ("gumbel_vqvae", "kl_weight", -1)]:
        with pytest.raises(ValueError, match=field):
            create_model(name, input_dim=(1, 28, 28), **{field: value})
    with pytest.raises(ValueError, match="downsamples=2 need H and W divisible by 4"):
        create_model("ae", input_dim=(1, 30, 30), encoder="spatial", decoder="mlp")


def test_generate_points_to_the_pixelcnn_sampler():
    model = _small("vqvae")
    with pytest.raises(RuntimeError, match="create_sampler\\('pixelcnn', model\\)"):
        model.generate(2)
    assert samplers_for(model) == ["pixelcnn"]


def _train_steps(model, x, steps=3):
    optimizer = torch.optim.Adam(model.parameter_groups()["model"], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", QUANTIZED)
def test_save_load_round_trip_with_buffers_and_fitted_sampler(name, tmp_path):
    options = ({"restart_dead_codes": True, "dead_after": 1, "kmeans_init": True}
               if name in NEAREST_CODE else {})
    model = _small(name, **options)
    x = torch.rand(32, 1, 8, 8)
    _train_steps(model, x)
    sampler = create_sampler("pixelcnn", model, epochs=2, channels=8, layers=2, kernel_size=3)
    fit = sampler.fit(model, x)
    assert sampler.train_nll.item() == pytest.approx(fit["train_nll"])
    model.save(tmp_path / "m")
    save_sampler(sampler, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    loaded_sampler = load_sampler(tmp_path / "m", "pixelcnn", loaded)
    assert type(loaded) is type(model)
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    if name == "vqvae_ema":
        assert not torch.equal(saved["quantizer.ema_cluster_size"], torch.ones(16))
    model.eval()
    loaded.eval()
    for key, term in model(x).terms.items():
        torch.testing.assert_close(loaded(x).terms[key], term)
    codes = model.code_indices(x)
    torch.testing.assert_close(loaded_sampler.pixelcnn.log_prob(codes),
                               sampler.pixelcnn.log_prob(codes))
    first = sampler.generate(model, 3, seed=5)
    second = loaded_sampler.generate(loaded, 3, seed=5)
    assert first.shape == (3, 1, 8, 8)
    torch.testing.assert_close(first, second)


def test_short_training_reports_mse_usage_and_perplexity():
    x, _ = load_dataset("mnist5k", "train")
    test, _ = load_dataset("mnist5k", "test")
    x, test = x[:384], test[:200]
    light = {"hidden": 32, "residual_channels": 16, "residual_blocks": 1}
    options = {name: {"num_codes": 64, "restart_dead_codes": True, "dead_after": 5}
               for name in NEAREST_CODE}
    options["gumbel_vqvae"] = {"num_codes": 64, "kl_weight": 0.01, "tau_anneal_steps": 36}
    for name in QUANTIZED:
        torch.manual_seed(0)
        model = create_model(name, input_dim=(1, 28, 28), encoder_kwargs=light,
                             decoder_kwargs=light, **options.get(name, {}))
        untrained = reconstruction_mse(model, test)
        history = Trainer(model, TrainerConfig(epochs=3, batch_size=32, learning_rate=3e-3,
                                               progress=False, device="cpu")).fit(x)
        record = history[-1]
        codes = model.quantizer.num_codes
        assert 0 < record["train_usage"] <= 1
        assert 1 <= record["train_perplexity"] <= codes * record["train_usage"] + 1e-6
        assert reconstruction_mse(model, test) < 0.6 * untrained, name
        usage = model.code_usage(test)
        assert 0 < usage["usage"] <= 1 and usage["perplexity"] >= 1


def test_cli_trains_a_vqvae_and_samples_from_its_pixelcnn(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "vqvae", "--dataset", "digits", "--encoder", "spatial",
                 "--decoder", "spatial", "--latent-dim", "4", "--epochs", "2",
                 "--option", "num_codes=32", "--sampler-option", "epochs=2",
                 "--sampler-option", "channels=8", "--output", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    for name in ("metrics.json", "history.json", "reconstructions.png", "samples.png",
                 "loss_curve.png", "model/config.json", "model/model.safetensors"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert {"train_usage", "train_perplexity", "eval_codebook"} <= set(history[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["eval_mse_per_dim"])
    fit = metrics["sampler"]
    assert fit["sampler"] == "pixelcnn" and fit["options"]["epochs"] == 2
    loaded = load_model(out / "model")
    sampler = load_sampler(out / "model", "pixelcnn", loaded)
    assert isinstance(loaded, VQVAE) and sampler.config.channels == 8
    assert sampler.generate(loaded, 2).shape == (2, 1, 8, 8)


def test_registry_names():
    assert isinstance(_small("vqvae"), VQVAE)
    assert isinstance(_small("hrqvae"), HRQVAE) and _small("hrqvae").quantizer.depth == 3
    assert isinstance(_small("fsq_vae"), FSQVAE)
    assert isinstance(_small("lfq_vae"), LFQVAE) and _small("lfq_vae").quantizer.num_codes == 16
    assert isinstance(_small("gumbel_vqvae"), GumbelVQVAE)


def test_hrqvae_with_ema_codebooks_trains_on_the_codebooks_from_before_each_step():
    model = _small("hrqvae", depth=2, ema=True, decay=0.5, restart_dead_codes=True,
                   dead_after=1)
    assert not any("quantizer" in name for name, _ in model.named_parameters())
    x = torch.rand(16, 1, 8, 8)
    optimizer = torch.optim.Adam(model.parameter_groups()["model"], lr=1e-2)
    model.train()
    for _ in range(3):
        before = copy.deepcopy(model.quantizer).eval()  # eval: no updates of its own
        out = model(x)
        with torch.no_grad():
            expected = before(model.encoder(x))
            decoded = model.decoder(expected.quantized)
        assert set(out.terms) == {"recon", "commitment"} and torch.isfinite(out.loss)
        torch.testing.assert_close(out.z.detach(), expected.quantized)
        torch.testing.assert_close(out.terms["commitment"].detach(),
                                   expected.terms["commitment"])
        torch.testing.assert_close(out.decoder_params.detach(), decoded)
        assert any(not torch.equal(a.embedding, b.embedding)
                   for a, b in zip(model.quantizer.levels, before.levels, strict=True))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()

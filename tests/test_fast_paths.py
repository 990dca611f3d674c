"""Fast paths of the trainer: mixed precision, compiled networks, channels-last."""

import json

import pytest
import torch

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.cli import build_parser, main
from vaebench.distributions import DiagonalGaussian
from vaebench.serialization import load_tensors
from vaebench.training import evaluate, fast_paths
from vaebench.training.fast_paths import FastPaths, cpu_flags
from vaebench.training.trainer import read_checkpoint_state

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _mlp_vae(**fields):
    torch.manual_seed(0)
    return create_model("vae", input_dim=(1, 8, 8), latent_dim=3,
                        encoder_kwargs={"hidden": [16]}, decoder_kwargs={"hidden": [16]},
                        **fields)


def _conv_vae():
    torch.manual_seed(0)
    nets = {"channels": [4, 8, 8], "hidden": 16}
    return create_model("vae", input_dim=(3, 28, 28), latent_dim=3, encoder="conv",
                        decoder="conv", encoder_kwargs=nets, decoder_kwargs=nets)


def _data(n=64, shape=(1, 8, 8)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(1))


def _config(**fields):
    return TrainerConfig(**{"epochs": 2, "batch_size": 16, "progress": False,
                            "device": "cpu", **fields})


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Let fp16 run on the CPU (emulated, slow, fine for tiny tests of the loss scaler)."""
    monkeypatch.setattr(fast_paths, "precision_refusal", lambda precision, device: None)


# --- which precision may run where ----------------------------------------------------------
def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        Trainer(_mlp_vae(), _config(precision="fp16"))


def test_bf16_on_cpu_without_native_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(fast_paths, "cpu_flags", lambda: {"avx2", "avx512f"})
    with pytest.raises(ValueError, match="needs native bfloat16.*avx512_bf16"):
        Trainer(_mlp_vae(), _config(precision="bf16"))


def test_bf16_on_cpu_with_native_bf16_is_accepted(monkeypatch):
    monkeypatch.setattr(fast_paths, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert Trainer(_mlp_vae(), _config(precision="bf16")).fast_paths.dtype == torch.bfloat16


@pytest.mark.parametrize("line, native", [
    ("flags\t\t: fpu sse avx512f avx512_bf16", True),
    ("flags\t\t: fpu amx_tile amx_bf16", True),
    ("Features\t: fp asimd bf16 i8mm", True),
    ("flags\t\t: fpu sse avx2 avx512f", False),
])
def test_cpu_flags_name_native_bf16(tmp_path, line, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: bf16 in a name\n{line}\n")
    assert bool(fast_paths.CPU_BF16_FLAGS & cpu_flags(cpuinfo)) == native
    assert cpu_flags(tmp_path / "missing") == set()


def test_cli_refusal_is_one_error_line(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                 "--precision", "fp16", "--no-progress", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("vaebench: error: precision='fp16' needs a CUDA device")
    assert "\n" not in err


def test_cli_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--output", "out", "--precision", "bf16",
                                      "--compile", "--channels-last"])
    assert (args.precision, args.compile, args.channels_last) == ("bf16", True, True)


def test_config_names_a_bad_precision_or_backend():
    with pytest.raises(ValueError, match="precision"):
        TrainerConfig(precision="fp8")
    with pytest.raises(ValueError, match="compile_backend"):
        TrainerConfig(compile_backend="no-such-backend")


# --- the terms stay in float32 --------------------------------------------------------------
def test_terms_are_float32_under_autocast():
    model, x = _mlp_vae(), _data(8)
    seen = {}
    model.encoder.register_forward_hook(lambda net, inputs, out: seen.update(encoder=out))
    model.encoder.net[0].register_forward_hook(
        lambda net, inputs, out: seen.update(first_layer=out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(x)
    assert seen["first_layer"] == torch.bfloat16  # the network did run in bf16
    assert seen["encoder"].dtype == output.decoder_params.dtype == torch.float32
    assert {term.dtype for term in output.terms.values()} == {torch.float32}
    assert output.loss.dtype == torch.float32
    assert torch.equal(output.terms["recon"], model.likelihood.nll(output.decoder_params, x))
    kl = DiagonalGaussian.from_params(seen["encoder"]).kl_standard_normal()
    assert torch.equal(output.terms["kl"], kl)
    assert "forward" not in vars(model.encoder)  # the networks are plain again


def test_evaluation_is_float32_under_autocast():
    model, x = _mlp_vae(), _data(32)
    torch.manual_seed(2)
    plain = evaluate(model, x)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert evaluate(model, x) == plain


@pytest.mark.skipif(not fast_paths.cpu_has_native_bf16(), reason="no native bf16 on this CPU")
def test_bf16_training_on_cpu_lowers_the_loss():
    history = Trainer(_mlp_vae(), _config(precision="bf16", epochs=3)).fit(_data(128))
    assert history[-1]["train_loss"] < history[0]["train_loss"]


# --- fp16 loss scaling ----------------------------------------------------------------------
def test_clipping_sees_unscaled_gradients(fp16_on_cpu):
    weight = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    paths = FastPaths(_config(precision="fp16"), torch.device("cpu"))
    paths.backward((weight * 1000.0).sum())
    paths.step(optimizer, [weight], max_norm=1.0)
    paths.update_scale()
    assert float(weight.detach().norm()) == pytest.approx(1.0, rel=1e-4)


def test_loss_scale_is_checkpointed_and_resumed(fp16_on_cpu, tmp_path):
    x = _data(64)

    def trainer(output_dir, epochs):
        result = Trainer(_mlp_vae(), _config(precision="fp16", epochs=epochs,
                                             checkpoint_every=1, output_dir=str(output_dir)))
        result.fast_paths.scaler = torch.amp.GradScaler("cpu", init_scale=8.0,
                                                        growth_interval=3)
        return result

    whole = trainer(tmp_path / "whole", 3)
    whole.fit(x)
    state = read_checkpoint_state(tmp_path / "whole" / "checkpoints" / "epoch_0001")
    assert state["grad_scaler"] == {"scale": 16.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                    "growth_interval": 3, "_growth_tracker": 1}
    trainer(tmp_path / "part", 1).fit(x)
    resumed = Trainer(_mlp_vae(), _config(precision="fp16", epochs=3,
                                          output_dir=str(tmp_path / "part")))
    history = resumed.fit(x, resume_from=tmp_path / "part" / "checkpoints" / "epoch_0001")
    assert resumed.fast_paths.state_dict() == whole.fast_paths.state_dict()
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in whole.history]


def test_fp16_scaler_with_two_optimizers_and_clipping(fp16_on_cpu):
    torch.manual_seed(0)
    model = create_model("factor_vae", input_dim=(1, 8, 8), latent_dim=3,
                         encoder_kwargs={"hidden": [16]}, decoder_kwargs={"hidden": [16]})
    trainer = Trainer(model, _config(precision="fp16", grad_clip_norm=1.0, epochs=5,
                                     learning_rate=1e-2))
    history = trainer.fit(_data(64))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trainer.fast_paths.state_dict()["scale"] > 0


# --- compiled networks ----------------------------------------------------------------------
def test_compiled_networks_learn_and_save_plain_keys(tmp_path):
    model, x = _mlp_vae(), _data(64)
    keys = set(model.state_dict())
    history = Trainer(model, _config(compile=True, compile_backend="aot_eager", epochs=3,
                                     checkpoint_every=1, output_dir=str(tmp_path))).fit(x, x)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(model.state_dict()) == keys
    assert set(load_tensors(tmp_path / "checkpoints" / "epoch_0003" / "model.safetensors")) \
        == keys
    assert "forward" not in vars(model.encoder) and "forward" not in vars(model.decoder)
    loaded = load_model(tmp_path / "model")
    assert all(torch.equal(value, loaded.state_dict()[name])
               for name, value in model.state_dict().items())
    assert "_orig_mod" not in json.dumps(sorted(keys))


# --- channels-last --------------------------------------------------------------------------
def test_channels_last_matches_contiguous(tmp_path):
    x = _data(32, (3, 28, 28))
    formats = []

    def record_format(record):
        weight = model.encoder.features[2].weight
        formats.append(weight.is_contiguous(memory_format=torch.channels_last))

    model = _conv_vae()
    plain = Trainer(model, _config()).fit(x, x[:8])
    model = _conv_vae()
    last = Trainer(model, _config(channels_last=True, output_dir=str(tmp_path)),
                   callbacks=[record_format]).fit(x, x[:8])  # saves mid-fit
    assert formats == [True, True]
    assert all(p.is_contiguous() for p in model.parameters())  # plain again after the fit
    for a, b in zip(plain, last, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)
    loaded = load_model(tmp_path / "model")
    assert all(torch.equal(value, loaded.state_dict()[name])
               for name, value in model.state_dict().items())


# --- on a GPU -------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_lowers_the_loss(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bfloat16")
    trainer = Trainer(_mlp_vae(), _config(precision=precision, device="cuda", epochs=3))
    history = trainer.fit(_data(256))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (trainer.fast_paths.state_dict() != {}) == (precision == "fp16")

import json
import os
import re
import stat

import pytest
import torch
from custom_nets import TinyDecoder, TinyEncoder

import vaebench
from vaebench import VAE, VAEConfig, create_model, load_model


@pytest.mark.parametrize("name,nets", [("ae", "mlp"), ("vae", "mlp"), ("vae", "conv")])
def test_round_trip_gives_identical_outputs(tmp_path, name, nets):
    model = create_model(name, input_dim=(1, 28, 28), latent_dim=5, encoder=nets, decoder=nets)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model)
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    loaded.eval()
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(0)
    b = loaded(x)
    assert torch.equal(a.loss, b.loss)


def test_files_and_versions(tmp_path):
    model = create_model("vae", input_dim=(1, 8, 8), latent_dim=2, likelihood="bernoulli")
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    payload = json.loads((tmp_path / "config.json").read_text())
    assert payload["model"] == "vae"
    assert payload["config"]["likelihood"] == "bernoulli"
    assert payload["vaebench_version"] == vaebench.__version__
    assert payload["torch_version"] == torch.__version__
    # safetensors files start with an 8-byte header length followed by a JSON header.
    raw = (tmp_path / "model.safetensors").read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + header])["__metadata__"]["model"] == "vae"


def test_custom_networks_recorded_by_import_path(tmp_path):
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=3,
                       encoder_kwargs={"features": 784, "out": 6},
                       decoder_kwargs={"latent": 3, "shape": [1, 28, 28]})
    model = VAE(config, encoder=TinyEncoder(784, 6), decoder=TinyDecoder(3, (1, 28, 28)))
    model.save(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert saved["encoder"] == "custom_nets:TinyEncoder"
    loaded = load_model(tmp_path)
    assert isinstance(loaded.encoder, TinyEncoder)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))


def test_unimportable_network_gives_clear_error(tmp_path):
    model = create_model("ae", input_dim=(4,), latent_dim=2)
    model.save(tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    payload["config"]["encoder"] = "no_such_module_xyz:Net"
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        load_model(tmp_path, trust_code=True)


def test_truncated_weights(tmp_path):
    create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_model(tmp_path)


def test_garbage_weights(tmp_path):
    create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_model(tmp_path)


def test_corrupt_config(tmp_path):
    create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path)
    (tmp_path / "config.json").write_text('{"model": "vae", "config": {')
    with pytest.raises(ValueError, match="corrupt"):
        load_model(tmp_path)


def test_weights_that_do_not_match_config(tmp_path):
    create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    payload["config"]["latent_dim"] = 3
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved vaebench model"):
        load_model(tmp_path / "nothing")


def test_failed_save_keeps_previous_model(tmp_path, monkeypatch):
    model = create_model("vae", input_dim=(1, 8, 8), latent_dim=2)
    model.save(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("vaebench.serialization.save", broken)
    with pytest.raises(OSError, match="disk full"):
        create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    load_model(tmp_path)


def test_no_pickle_anywhere():
    import pathlib

    source = pathlib.Path(vaebench.__file__).parent
    for path in source.rglob("*.py"):
        text = path.read_text()
        assert "torch.save(" not in text, path
        # torch.load only as pythae's weights are read: tensors only, nothing unpickled
        for line in text.splitlines():
            assert "torch.load(" not in line or "weights_only=True" in line, (path, line)
        if path.name != "datasets.py":  # the restricted MNIST unpickler lives there
            assert not re.search(r"\bpickle\.(loads?|Unpickler)\b", text), path


def test_loaded_model_is_in_eval_mode(tmp_path):
    create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path)
    loaded = load_model(tmp_path)
    assert not loaded.training
    assert not any(module.training for module in loaded.modules())


@pytest.mark.parametrize("umask,file_mode,folder_mode", [(0o022, 0o644, 0o755),
                                                         (0o077, 0o600, 0o700)])
def test_saved_files_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path / "m")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == folder_mode
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == file_mode, name

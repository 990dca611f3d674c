"""A saved folder is data, never code: hostile configs are refused and provably ran nothing.

Each attack names, in a file, something that would leave a marker file behind if it were
imported or called; every test checks that the marker is absent afterwards.
"""

import json
import sys

import pytest
import torch
from torch import nn

import vaebench
from vaebench import create_model, load_model, register_network
from vaebench.cli import main
from vaebench.nn import UntrustedCodeError, registered_networks


def _saved_model(folder):
    create_model("ae", input_dim=(4,), latent_dim=2).save(folder)
    return folder


def _point_encoder_at(folder, encoder, kwargs):
    """Edit a saved model's config as an attacker would."""
    path = folder / "config.json"
    payload = json.loads(path.read_text())
    payload["config"]["encoder"] = encoder
    payload["config"]["encoder_kwargs"] = kwargs
    path.write_text(json.dumps(payload))


def _attacks(tmp_path):
    """(import path, kwargs, marker) of standard-library functions that run a shell command
    or a process, and of a process spawner class; each leaves ``marker`` if called."""
    marker = tmp_path / "pwned"
    shell = f"touch {marker}"
    return [
        ("os:system", {"command": shell}, marker),
        ("subprocess:run", {"args": ["touch", str(marker)]}, marker),
        ("subprocess.Popen", {"args": ["touch", str(marker)]}, marker),
    ]


@pytest.fixture
def side_effect_module(tmp_path, monkeypatch):
    """A module on sys.path whose import writes a marker and which defines an nn.Module."""
    marker = tmp_path / "imported"
    package = tmp_path / "site"
    package.mkdir()
    (package / "evil_nets_xyz.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran at import')\n"
        "import torch\n"
        "class Encoder(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.linear = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.linear(x)\n")
    monkeypatch.syspath_prepend(str(package))
    yield "evil_nets_xyz", marker
    sys.modules.pop("evil_nets_xyz", None)


def test_a_hostile_config_is_refused_and_runs_nothing(tmp_path):
    for index, (path, kwargs, marker) in enumerate(_attacks(tmp_path)):
        folder = _saved_model(tmp_path / f"m{index}")
        _point_encoder_at(folder, path, kwargs)
        with pytest.raises(UntrustedCodeError, match="trust_code=True") as err:
            load_model(folder)
        assert repr(path) in str(err.value)  # the message names what was found
        assert not marker.exists()


def test_even_with_trust_only_modules_are_built(tmp_path):
    for index, (path, kwargs, marker) in enumerate(_attacks(tmp_path)):
        folder = _saved_model(tmp_path / f"m{index}")
        _point_encoder_at(folder, path, kwargs)
        with pytest.raises(UntrustedCodeError, match="not an nn.Module subclass"):
            load_model(folder, trust_code=True)
        assert not marker.exists()


def test_a_module_with_an_import_side_effect_is_never_imported(tmp_path, side_effect_module):
    module, marker = side_effect_module
    folder = _saved_model(tmp_path / "m")
    _point_encoder_at(folder, f"{module}:Encoder", {})
    with pytest.raises(UntrustedCodeError, match=module):
        load_model(folder)
    assert not marker.exists()
    assert module not in sys.modules
    # The explicit opt-in imports it (that is what trusting means) and builds the module,
    # whose weights then differ from the saved MLP's.
    with pytest.raises(ValueError, match="encoder.linear.weight"):
        load_model(folder, trust_code=True)
    assert marker.exists()


def test_the_cli_refuses_a_hostile_network_and_names_the_flag(tmp_path, capsys):
    marker = tmp_path / "pwned"
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--no-progress",
                 "--encoder", "subprocess:Popen", "--option",
                 f'encoder_kwargs={{"args": ["touch", "{marker}"]}}',
                 "--output", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("vaebench: error:") and err.count("\n") == 1
    assert "'subprocess:Popen'" in err and "--trust-code" in err
    assert not marker.exists()
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--no-progress",
                 "--encoder", "subprocess:Popen", "--trust-code", "--option",
                 f'encoder_kwargs={{"args": ["touch", "{marker}"]}}',
                 "--output", str(tmp_path / "run")])
    assert code == 2
    assert "not an nn.Module subclass" in capsys.readouterr().err
    assert not marker.exists()


def test_a_benchmark_settings_file_is_refused_before_any_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    settings = tmp_path / "bench.json"
    settings.write_text(json.dumps({
        "models": ["ae"], "datasets": ["digits"], "seeds": 1, "epochs": 1,
        "encoder": "subprocess:Popen",
        "model_options": {"ae": {"encoder_kwargs": {"args": ["touch", str(marker)]}}}}))
    out = tmp_path / "bench"
    assert main(["benchmark", "--config", str(settings), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'subprocess:Popen'" in err and "--trust-code" in err
    assert not marker.exists()
    assert not (out / "runs").exists()


def test_a_checkpoint_with_a_hostile_config_cannot_be_resumed_into_code(tmp_path, capsys):
    """--resume rebuilds the model from the flags; a checkpoint whose config names other
    code is refused as a different model, and nothing it names runs."""
    out = tmp_path / "run"
    args = ["train", "--model", "ae", "--dataset", "digits", "--epochs", "2",
            "--train-size", "128", "--no-progress", "--checkpoint-every", "1",
            "--output", str(out)]
    assert main([*args, "--epochs", "1"]) == 0
    marker = tmp_path / "pwned"
    _point_encoder_at(out / "checkpoints" / "epoch_0001", "subprocess:Popen",
                      {"args": ["touch", str(marker)]})
    assert main([*args, "--resume"]) == 2
    assert "another ae config" in capsys.readouterr().err
    assert not marker.exists()


class RegisteredEncoder(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.linear = nn.Linear(width, 2)

    def forward(self, x):
        return self.linear(x)


def test_registered_networks_load_without_the_opt_in(tmp_path):
    register_network(RegisteredEncoder, name="test_registered_encoder")
    model = create_model("ae", input_dim=(4,), latent_dim=2, encoder="test_registered_encoder",
                         encoder_kwargs={"width": 4})
    model.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["encoder"] == \
        "test_registered_encoder"
    loaded = load_model(tmp_path)
    assert isinstance(loaded.encoder, RegisteredEncoder)
    x = torch.rand(3, 4)
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))


def test_a_network_instance_registers_its_class_for_this_process(tmp_path):
    class LocalEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            return self.linear(x)

    model = vaebench.AE(vaebench.AEConfig(input_dim=(4,), latent_dim=2),
                        encoder=LocalEncoder())
    name = model.config.encoder
    assert registered_networks()[name] is LocalEncoder
    model.save(tmp_path)
    assert isinstance(load_model(tmp_path).encoder, LocalEncoder)


def test_registering_checks_what_it_is_given():
    with pytest.raises(TypeError, match="nn.Module"):
        register_network(print)
    with pytest.raises(ValueError, match="built-in"):
        register_network(RegisteredEncoder, name="mlp")

    class Other(nn.Module):
        pass

    register_network(RegisteredEncoder, name="test_taken_name")
    with pytest.raises(ValueError, match="already registered"):
        register_network(Other, name="test_taken_name")


def test_decorator_forms():
    @register_network
    class Plain(nn.Module):
        pass

    @register_network(name="test_named_decorated")
    class Named(nn.Module):
        pass

    table = registered_networks()
    assert table["test_named_decorated"] is Named
    assert Plain in table.values()

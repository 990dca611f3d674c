"""Sharing on the Hugging Face Hub, tested without a network: an upload is captured by
replacing ``HfApi.create_repo`` / ``upload_folder``, and a download is served by
``huggingface_hub`` itself from a cache laid out as the Hub lays it out, in offline mode."""

import json
import pickle
import re
import shlex
import shutil
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import test_trust
import torch
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file
from test_trust import _attacks, _point_encoder_at

from vaebench import create_model, load_model
from vaebench.cli import main
from vaebench.integrations.hub import (
    HUB_FILES,
    HubLocation,
    model_folder,
    parse_location,
    push_folder,
)
from vaebench.nn import UntrustedCodeError
from vaebench.samplers import create_sampler, load_sampler

side_effect_module = test_trust.side_effect_module  # a fixture: a module that runs at import
TRAIN = ["--model", "beta_vae", "--dataset", "digits", "--train-size", "128", "--epochs", "1",
         "--latent-dim", "4", "--option", "beta=2", "--sampler", "gmm",
         "--sampler-option", "n_components=3", "--iwae-k", "5", "--no-progress",
         "--batch-size", "30", "--lr", "0.002", "--even-batches"]
PUSHED = {"config.json", "model.safetensors", "samplers/gmm/sampler.json",
          "samplers/gmm/sampler.safetensors", "metrics.json", "README.md"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The output folder of a short ``vaebench train`` run."""
    out = tmp_path_factory.mktemp("hub") / "run"
    assert main(["train", *TRAIN, "--output", str(out)]) == 0
    return out


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """Each upload's folder, copied aside, with the arguments of the calls that made it."""
    made = []

    def create_repo(self, repo_id, **options):
        made.append({"create_repo": (repo_id, options)})

    def upload_folder(self, *, repo_id, folder_path, **options):
        copy = tmp_path / f"upload{len(made)}"
        shutil.copytree(folder_path, copy)
        made[-1].update(repo_id=repo_id, folder=copy, options=options)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return made


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, used in offline mode."""
    cache = tmp_path / "hf-cache"
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True)):
        monkeypatch.setattr(constants, name, value)
        monkeypatch.setenv(name, str(value))
    return cache


def place_in_cache(cache: Path, repo_id: str, files: Path, commit: str,
                   refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``files`` in ``cache`` as the snapshot of ``commit``, the Hub's cache layout."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(files, snapshot)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k])
                                                 for k in first)


def pushed(run: Path | str, uploads: list, repo_id: str = "me/beta", **options) -> Path:
    """The folder uploaded by a push of ``run``."""
    assert push_folder(run, repo_id, **options) == f"https://huggingface.co/{repo_id}/commit/0"
    return uploads[-1]["folder"]


def test_a_push_uploads_the_model_samplers_metrics_and_card_and_nothing_else(run, uploads):
    folder = pushed(run, uploads, private=True)
    assert files_in(folder) == PUSHED
    assert uploads[-1]["create_repo"] == ("me/beta", {"private": True, "exist_ok": True})
    options = uploads[-1]["options"]
    assert options["allow_patterns"] == HUB_FILES and options["delete_patterns"] == HUB_FILES
    assert json.loads((folder / "metrics.json").read_text()) == \
        json.loads((run / "metrics.json").read_text())
    assert json.loads((folder / "config.json").read_text())["training_data"]["dataset"] == \
        "digits"
    # The run's model/ folder finds the run's metrics beside it: the same upload.
    again = pushed(run / "model", uploads)
    assert files_in(again) == PUSHED
    assert (again / "README.md").read_text() == (folder / "README.md").read_text()


def test_a_push_replaces_its_own_files_and_leaves_the_rest_alone():
    remote = ["config.json", "model.safetensors", "samplers/pixelcnn/sampler.json",
              "samplers/pixelcnn/sampler.safetensors", ".gitattributes", "notes.txt",
              "pytorch_model.bin"]
    deleted = set(filter_repo_objects(remote, allow_patterns=HUB_FILES))
    assert deleted == set(remote[:4])  # the samplers of earlier weights go with them


def test_the_card_holds_metadata_metrics_and_a_command_that_trains_the_same_model(
        run, uploads, tmp_path):
    card_path = pushed(run, uploads) / "README.md"
    card = ModelCard.load(card_path)
    assert card.data.library_name == "vaebench"
    assert {"vaebench", "beta_vae"} <= set(card.data.tags)
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("eval_loss", "test_elbo", "test_log_likelihood_k5"):
        assert f"| {name} | {metrics[name]:.6g} |" in card.text
    assert 'vaebench.load_model("hf://me/beta")' in card.text
    command = re.search(r"## Reproduce\n\n```bash\n(.*?)\n```", card.text, re.S).group(1)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["vaebench", "train"] and argv[-2:] == ["--output", "run"]
    # the trainer settings that differ from the defaults, as metrics.json records them
    assert shlex.join(["--batch-size", "30", "--lr", "0.002"]) in shlex.join(argv)
    assert "--even-batches" in argv
    again = tmp_path / "again"
    assert main([*argv[1:-2], "--no-progress", "--iwae-k", "5", "--output", str(again)]) == 0
    original = json.loads((run / "model" / "config.json").read_text())
    rebuilt = json.loads((again / "model" / "config.json").read_text())
    assert rebuilt["config"] == original["config"]
    assert rebuilt["training_data"] == original["training_data"]
    assert same_weights(load_model(again / "model"), load_model(run / "model"))


def test_a_pushed_model_loads_from_the_hub_cache_with_identical_outputs(run, uploads,
                                                                        hub_cache):
    place_in_cache(hub_cache, "me/beta", pushed(run, uploads), "a" * 40)
    local, remote = load_model(run / "model"), load_model("hf://me/beta")
    assert same_weights(local, remote)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(local.reconstruct(x), remote.reconstruct(x))
    sampler = load_sampler(model_folder("hf://me/beta"), "gmm", remote)
    assert torch.equal(sampler.generate(remote, 6, seed=1),
                       load_sampler(run / "model", "gmm", local).generate(local, 6, seed=1))
    # A model on the Hub is pushed on as it came, its metrics included.
    assert files_in(pushed("hf://me/beta", uploads, "me/copy")) == PUSHED


def test_the_cli_samples_and_evaluates_a_hub_model_without_writing_into_the_cache(
        run, uploads, hub_cache, tmp_path, monkeypatch):
    snapshot = place_in_cache(hub_cache, "me/beta", pushed(run, uploads), "a" * 40)
    before = files_in(snapshot)
    monkeypatch.chdir(tmp_path)
    sample = ["sample", "--sampler", "gmm", "-n", "4"]
    assert main([*sample, "--model", "hf://me/beta", "--npy", "hub.npy"]) == 0
    assert main([*sample, "--model", str(run / "model"), "--npy", "local.npy"]) == 0
    assert np.array_equal(np.load("hub.npy"), np.load("local.npy"))
    assert main([*sample, "--model", "hf://me/beta", "--refit", "--npy", "refit.npy"]) == 0
    assert main(["evaluate", "--model", "hf://me/beta", "--k", "2", "--no-sample-quality",
                 "--no-progress"]) == 0
    assert json.loads(Path("evaluation.json").read_text())["model"] == "beta_vae"
    assert files_in(snapshot) == before


def test_a_revision_selects_a_branch_tag_or_commit(hub_cache, tmp_path):
    models = {}
    for commit, refs in (("a" * 40, ("main",)), ("b" * 40, ("v1",))):
        torch.manual_seed(len(models))
        models[commit] = create_model("ae", input_dim=(4,), latent_dim=2)
        models[commit].save(tmp_path / commit)
        place_in_cache(hub_cache, "me/ae", tmp_path / commit, commit, refs)
    for location, commit in (("hf://me/ae", "a" * 40), ("hf://me/ae@main", "a" * 40),
                             ("hf://me/ae@v1", "b" * 40), (f"hf://me/ae@{'b' * 40}", "b" * 40)):
        assert same_weights(load_model(location), models[commit]), location
    with pytest.raises(OSError, match="snapshot"):
        load_model("hf://me/ae@v2")


@pytest.mark.parametrize(("text", "location"), [
    ("hf://owner/name", HubLocation("owner/name")),
    ("hf://owner/name@v1.0", HubLocation("owner/name", "v1.0")),
    ("hf://owner/name@refs/pr/3", HubLocation("owner/name", "refs/pr/3")),
    (f"hf://owner/name@{'c' * 40}", HubLocation("owner/name", "c" * 40)),
])
def test_locations_are_parsed(text, location):
    assert parse_location(text) == location


@pytest.mark.parametrize("text", ["hf://name", "hf://owner/name/sub", "hf:///name",
                                  "hf://owner/", "hf://owner/name@", "owner/name"])
def test_malformed_locations_are_refused(text):
    with pytest.raises(ValueError, match="owner/name|nothing follows|not a Hub location"):
        parse_location(text)


def test_a_hub_config_naming_code_is_refused_as_a_local_one_and_runs_nothing(
        tmp_path, hub_cache):
    for index, (path, kwargs, marker) in enumerate(_attacks(tmp_path)):
        folder = tmp_path / f"m{index}"
        create_model("ae", input_dim=(4,), latent_dim=2).save(folder)
        _point_encoder_at(folder, path, kwargs)
        place_in_cache(hub_cache, f"evil/m{index}", folder, "e" * 40)
        with pytest.raises(UntrustedCodeError) as local:
            load_model(folder)
        with pytest.raises(UntrustedCodeError) as remote:
            load_model(f"hf://evil/m{index}")
        assert str(remote.value) == str(local.value)
        assert not marker.exists()


def test_a_hub_network_class_with_import_side_effects_is_never_imported(
        tmp_path, hub_cache, side_effect_module):
    module, marker = side_effect_module
    folder = tmp_path / "m"
    create_model("ae", input_dim=(4,), latent_dim=2).save(folder)
    _point_encoder_at(folder, f"{module}:Encoder", {})
    place_in_cache(hub_cache, "evil/nets", folder, "e" * 40)
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        load_model("hf://evil/nets")
    assert not marker.exists() and module not in sys.modules


class _Payload:
    """Unpickling this runs a shell command that leaves a marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_in_a_hub_repository_is_never_downloaded_or_loaded(tmp_path, hub_cache,
                                                                     monkeypatch):
    marker = tmp_path / "unpickled"
    folder = tmp_path / "m"
    model = create_model("ae", input_dim=(4,), latent_dim=2)
    model.save(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    place_in_cache(hub_cache, "evil/pickle", folder, "f" * 40)

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for owner, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(owner, name, refuse)
    assert same_weights(load_model("hf://evil/pickle"), model)
    assert not marker.exists()
    repo = ["config.json", "model.safetensors", "pytorch_model.bin", "model.pkl", "net.pt",
            "modeling_evil.py", "samplers/gmm/sampler.json", "samplers/gmm/sampler.safetensors"]
    assert set(filter_repo_objects(repo, allow_patterns=HUB_FILES)) == \
        {"config.json", "model.safetensors", "samplers/gmm/sampler.json",
         "samplers/gmm/sampler.safetensors"}


def test_a_download_asks_only_for_vaebench_files(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, **options):
        calls.append((repo_id, options))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert model_folder("hf://me/beta@v2") == tmp_path
    assert calls[0][0] == "me/beta"
    assert calls[0][1]["revision"] == "v2" and calls[0][1]["allow_patterns"] == HUB_FILES


def test_a_model_pushes_itself_and_refuses_samplers_of_other_weights(uploads):
    model = create_model("vae", input_dim=(4,), latent_dim=2)
    sampler = create_sampler("normal", model)
    assert model.push_to_hub("me/vae", samplers=[sampler]) == \
        "https://huggingface.co/me/vae/commit/0"
    folder = uploads[-1]["folder"]
    assert files_in(folder) == {"config.json", "model.safetensors", "README.md",
                                "samplers/normal/sampler.json",
                                "samplers/normal/sampler.safetensors"}
    card = (folder / "README.md").read_text()
    assert "not recorded" in card and "No training metrics" in card
    assert same_weights(load_model(folder), model)
    assert load_file(folder / "model.safetensors").keys() == model.state_dict().keys()
    other = create_model("vae", input_dim=(4,), latent_dim=2)
    with pytest.raises(ValueError, match="not fitted for this model's weights"):
        other.push_to_hub("me/vae", samplers=[sampler])


def test_metrics_of_another_model_are_refused(run, uploads, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run / "model", copy / "model")
    metrics = json.loads((run / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**metrics, "model": "vqvae"}))
    with pytest.raises(ValueError, match="metrics of a 'vqvae' model"):
        push_folder(copy, "me/beta")
    assert not uploads


def test_without_huggingface_hub_the_error_says_what_to_install(monkeypatch, capsys, run):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    hint = re.escape("pip install 'vaebench[hub]'")
    with pytest.raises(ImportError, match=hint):
        load_model("hf://me/beta")
    with pytest.raises(ImportError, match=hint):
        create_model("ae", input_dim=(4,), latent_dim=2).push_to_hub("me/ae")
    assert main(["push", "--model", str(run), "--repo", "me/beta"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaebench: error:") and err.count("\n") == 1
    assert "pip install 'vaebench[hub]'" in err
    assert load_model(run / "model").name == "beta_vae"  # local folders need nothing more


def test_the_push_command_uploads_a_training_run(run, uploads, capsys):
    assert main(["push", "--model", str(run), "--repo", "me/beta", "--private",
                 "--message", "first"]) == 0
    assert "https://huggingface.co/me/beta/commit/0" in capsys.readouterr().out
    assert uploads[-1]["options"]["commit_message"] == "first"
    assert uploads[-1]["create_repo"][1]["private"] is True
    assert files_in(uploads[-1]["folder"]) == PUSHED

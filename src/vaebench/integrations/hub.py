"""Sharing models on the Hugging Face Hub.

:func:`push_model` (also ``model.push_to_hub``) and :func:`push_folder` upload a model
with its fitted samplers, its training metrics and a generated model card;
``load_model("hf://owner/name")`` (``@revision`` optional) loads one back.

A download fetches only the files vaebench writes (:data:`HUB_FILES`), so a repository's
pickles or code never reach the disk, and the snapshot is then loaded by the same code, under
the same trust rules, as a local folder: nothing its files name is imported or run without
``trust_code=True``. ``huggingface_hub`` is an optional dependency, imported only when the
Hub is used (``pip install 'vaebench[hub]'``).
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic_core import to_jsonable_python
from torch import nn

from vaebench.data import DATASETS
from vaebench.files import read_json_object, write_json
from vaebench.samplers import Sampler, load_sampler, save_sampler, saved_samplers
from vaebench.samplers.base import fingerprint
from vaebench.samplers.storage import CONFIG_FILE as SAMPLER_CONFIG_FILE
from vaebench.samplers.storage import SAMPLERS_FOLDER
from vaebench.samplers.storage import WEIGHTS_FILE as SAMPLER_WEIGHTS_FILE
from vaebench.serialization import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_model,
    read_training_data,
    save_model,
)

HUB_PREFIX = "hf://"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
#: The files a push writes and a download fetches; a repository's other files are left
#: alone by a push and never downloaded.
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, f"{SAMPLERS_FOLDER}/*/{SAMPLER_CONFIG_FILE}",
             f"{SAMPLERS_FOLDER}/*/{SAMPLER_WEIGHTS_FILE}", METRICS_FILE, CARD_FILE]
INSTALL_HINT = "pip install 'vaebench[hub]'"


def hub_library() -> ModuleType:
    """The ``huggingface_hub`` package, or an error saying how to install it."""
    try:
        import huggingface_hub
    except ImportError as err:
        raise ImportError("the Hugging Face Hub needs the huggingface_hub package: "
                          f"{INSTALL_HINT}") from err
    return huggingface_hub


@dataclass(frozen=True)
class HubLocation:
    """A model repository on the Hub and, optionally, a branch, tag or commit of it."""

    repo_id: str
    revision: str | None = None


def is_hub_location(location: object) -> bool:
    return isinstance(location, str) and location.startswith(HUB_PREFIX)


def parse_location(text: str) -> HubLocation:
    """``hf://owner/name`` or ``hf://owner/name@revision`` (the revision may hold slashes,
    as ``refs/pr/1`` does)."""
    if not is_hub_location(text):
        raise ValueError(f"{text!r} is not a Hub location: hf://owner/name[@revision]")
    repo_id, at, revision = text.removeprefix(HUB_PREFIX).partition("@")
    if at and not revision:
        raise ValueError(f"{text!r}: nothing follows '@' (give a branch, tag or commit)")
    return HubLocation(checked_repo_id(repo_id), revision or None)


def checked_repo_id(repo_id: str) -> str:
    """``repo_id`` if it has the form owner/name."""
    owner, slash, name = repo_id.partition("/")
    if not (owner and slash and name) or "/" in name:
        raise ValueError(f"a Hub model repository is named owner/name, got {repo_id!r}")
    return repo_id


def download(location: HubLocation) -> Path:
    """The snapshot of ``location``'s vaebench files in the Hugging Face cache (downloaded
    if missing; the cache alone when ``HF_HUB_OFFLINE=1``)."""
    import vaebench

    path = hub_library().snapshot_download(
        location.repo_id, revision=location.revision, allow_patterns=HUB_FILES,
        library_name="vaebench", library_version=vaebench.__version__)
    return Path(path)


def model_folder(location: str | Path) -> Path:
    """The local folder of a saved model: ``location``, or the snapshot of an ``hf://``
    location."""
    return download(parse_location(location)) if is_hub_location(location) else Path(location)


def push_model(model: nn.Module, repo_id: str, *, training_data: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, samplers: Iterable[Sampler] = (),
               private: bool = False, token: str | None = None,
               commit_message: str | None = None) -> str:
    """Upload ``model`` to the Hub repository ``repo_id`` (created if missing) and return
    the commit's URL.

    The upload is a model folder as :func:`vaebench.save_model` writes it (with
    ``training_data``), the fitted ``samplers``, ``metrics`` as ``metrics.json`` and a model
    card. It replaces the vaebench files of an earlier push as a whole (samplers and metrics
    of other weights included) and leaves the repository's other files alone. ``token``:
    else the one of ``hf auth login`` or ``HF_TOKEN``.
    """
    checked_repo_id(repo_id)
    hub = hub_library()
    with tempfile.TemporaryDirectory(prefix="vaebench-push-") as tmp:
        folder = stage(model, Path(tmp) / "model", repo_id, training_data=training_data,
                       metrics=metrics, samplers=samplers)
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, allow_patterns=HUB_FILES,
            delete_patterns=HUB_FILES,
            commit_message=commit_message or f"Upload a {model.name} model with vaebench")
    return commit.commit_url


def push_folder(folder: str | Path, repo_id: str, *, trust_code: bool = False,
                **upload_options: Any) -> str:
    """Upload a saved model (see :func:`push_model`) and return the commit's URL.

    ``folder``: a model folder, the output folder of ``vaebench train`` (its ``model/`` and
    ``metrics.json``) or an ``hf://`` location. The model goes with its saved samplers, the
    data it was trained on and the metrics of its training run: a ``metrics.json`` in the
    model folder, or beside it when it is a run's ``model/``. ``trust_code``: as for
    :func:`vaebench.load_model`, which reads the model first. ``upload_options``:
    ``private``, ``token``, ``commit_message``.
    """
    model_dir, metrics_file = model_and_metrics(model_folder(folder))
    model = load_model(model_dir, trust_code=trust_code)
    samplers = [load_sampler(model_dir, name, model) for name in saved_samplers(model_dir)]
    return push_model(model, repo_id, training_data=read_training_data(model_dir),
                      metrics=read_metrics(metrics_file, model.name), samplers=samplers,
                      **upload_options)


def model_and_metrics(folder: Path) -> tuple[Path, Path | None]:
    """The model folder of ``folder`` (itself, or the ``model/`` of a training run) and the
    ``metrics.json`` of its run, if there is one."""
    model_dir = folder / "model" if (folder / "model" / CONFIG_FILE).is_file() else folder
    places = [model_dir / METRICS_FILE]
    if model_dir.name == "model":
        places.append(model_dir.parent / METRICS_FILE)
    return model_dir, next((place for place in places if place.is_file()), None)


def read_metrics(path: Path | None, model_name: str) -> dict[str, Any] | None:
    """The metrics in ``path`` (none without a file), checked to be a ``model_name``'s."""
    if path is None:
        return None
    metrics = read_json_object(path, "vaebench metrics file", {})
    if metrics.get("model", model_name) != model_name:
        raise ValueError(f"{path} holds the metrics of a {metrics['model']!r} model, not of "
                         f"the {model_name!r} model beside it")
    return metrics


def stage(model: nn.Module, folder: Path, repo_id: str, *,
          training_data: dict[str, Any] | None, metrics: dict[str, Any] | None,
          samplers: Iterable[Sampler]) -> Path:
    """Write into ``folder`` what a push uploads."""
    save_model(model, folder, training_data=training_data)
    weights = fingerprint(model)
    names = []
    for sampler in samplers:
        if sampler.model_fingerprint != weights:
            raise ValueError(f"the {sampler.name} sampler was not fitted for this model's "
                             "weights: fit it again before pushing")
        names.append(save_sampler(sampler, folder).name)
    if metrics is not None:
        write_json(folder / METRICS_FILE, metrics)
    card = model_card(repo_id, model, training_data, metrics, names)
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return folder


# The model card ----------------------------------------------------------------------------

def model_card(repo_id: str, model: nn.Module, training_data: dict[str, Any] | None,
               metrics: dict[str, Any] | None, samplers: list[str]) -> str:
    """The README.md of a pushed model: Hub metadata, how to load it, its config, data,
    metrics and the command that trains it again."""
    metadata = hub_library().ModelCardData(
        library_name="vaebench", tags=["vaebench", "autoencoder", model.name]).to_yaml()
    sections = [f"---\n{metadata}\n---", f"# {repo_id}", _summary(model, samplers),
                _usage_section(repo_id), _config_section(model),
                _data_section(training_data), _metrics_section(metrics),
                _reproduce_section(model, training_data, metrics)]
    return "\n\n".join(sections) + "\n"


def _summary(model: nn.Module, samplers: list[str]) -> str:
    import torch

    import vaebench

    text = (f"A `{model.name}` generative autoencoder (latent size {model.config.latent_dim}, "
            f"input shape {tuple(model.config.input_dim)}) saved by vaebench "
            f"{vaebench.__version__} with torch {torch.__version__}.")
    if samplers:
        text += (f" Fitted samplers included: {', '.join(samplers)} (`vaebench sample` uses "
                 "them without fitting again).")
    return text


def _usage_section(repo_id: str) -> str:
    return (f"## Use it\n\n```python\nimport vaebench\n\n"
            f"model = vaebench.load_model(\"hf://{repo_id}\")  # add @revision to pin one\n"
            "reconstructions = model.reconstruct(x)\n```\n\n"
            f"```bash\nvaebench sample --model hf://{repo_id} --output samples.png\n"
            f"vaebench evaluate --model hf://{repo_id} --output evaluation.json\n```\n\n"
            "Loading downloads only `config.json`, the safetensors weights, fitted samplers "
            "and this card, and runs no code named by them: networks are built from "
            "vaebench's registries (a network given by import path needs `trust_code=True`).")


def _config_section(model: nn.Module) -> str:
    config = json.dumps(model.config.to_dict(), indent=2)
    return f"## Model\n\n`{model.name}` with this config:\n\n```json\n{config}\n```"


def _data_section(training_data: dict[str, Any] | None) -> str:
    if training_data is None:
        return "## Training data\n\nThe data this model was trained on is not recorded."
    rows = "\n".join(f"- {key}: `{value}`" for key, value in training_data.items()
                     if value is not None)
    text = f"## Training data\n\n{rows}"
    if training_data["dataset"] not in DATASETS:
        text += ("\n\nThis is a local dataset, not one bundled with vaebench: fitting a "
                 "sampler or evaluating needs the data (`--dataset`).")
    return text


def _metrics_section(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return "## Metrics\n\nNo training metrics were pushed with this model."
    rows = "\n".join(f"| {name} | {_number(value)} |" for name, value in numbers_in(metrics))
    return ("## Metrics\n\nFrom the training run's `metrics.json` (in this repository), on "
            f"the test split; losses in nats per sample.\n\n| metric | value |\n| --- | --- |\n"
            f"{rows}")


def numbers_in(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a nested JSON record, named by its dotted path."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from numbers_in(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _reproduce_section(model: nn.Module, training_data: dict[str, Any] | None,
                       metrics: dict[str, Any] | None) -> str:
    if training_data is None:
        return ("## Reproduce\n\nThe training data is not recorded, so the training command "
                "cannot be rebuilt.")
    return ("## Reproduce\n\n```bash\n" + train_command(model, training_data, metrics) +
            "\n```\n\nRebuilt from `config.json` and `metrics.json` (whose `trainer` "
            "records the batch size, learning rate, optimizer, schedule and clipping; "
            "settings it does not record are left at their defaults).")


# Config fields that `vaebench train` sets with flags of their own (input_dim: the data's).
_CONFIG_FLAGS = {"latent_dim": "--latent-dim", "likelihood": "--likelihood",
                 "sigma": "--sigma", "sigma_per": "--sigma-per", "encoder": "--encoder",
                 "decoder": "--decoder"}
_DATA_FLAGS = {"dataset": "--dataset", "data_root": "--data-root",
               "train_size": "--train-size", "seed": "--seed"}


def train_command(model: nn.Module, training_data: dict[str, Any],
                  metrics: dict[str, Any] | None) -> str:
    """The ``vaebench train`` command of a model, one flag a line."""
    config = model.config.to_dict()
    flags: list[list[str]] = [["--model", model.name]]
    flags += [[flag, str(training_data[key])] for key, flag in _DATA_FLAGS.items()
              if training_data.get(key) is not None]
    if training_data.get("skip_bad_images"):
        flags.append(["--skip-bad-images"])
    flags += [[flag, str(config[key])] for key, flag in _CONFIG_FLAGS.items()]
    flags += [["--option", f"{name}={json.dumps(value)}"]
              for name, value in changed_fields(model)]
    flags += _run_flags(metrics or {})
    flags.append(["--output", "run"])
    return " \\\n    ".join(["vaebench train", *map(shlex.join, flags)])


def changed_fields(model: nn.Module) -> Iterator[tuple[str, Any]]:
    """Config fields without a flag of their own that differ from their default."""
    config = model.config.to_dict()
    for name, field in type(model.config).model_fields.items():
        # the table's schema comes from the data itself (--dataset)
        if name in _CONFIG_FLAGS or name in ("input_dim", "likelihood_kwargs"):
            continue
        if field.is_required() or config[name] != to_jsonable_python(
                field.get_default(call_default_factory=True)):
            yield name, config[name]


# Trainer settings that `vaebench train` sets with flags of their own.
_TRAINER_FLAGS = {"batch_size": "--batch-size", "learning_rate": "--lr",
                  "optimizer": "--optimizer", "scheduler": "--scheduler",
                  "grad_clip_norm": "--grad-clip", "precision": "--precision"}


def _trainer_flags(trainer: dict[str, Any]) -> list[list[str]]:
    """The flags of the trainer settings that differ from their defaults."""
    from vaebench.training import TrainerConfig

    defaults = TrainerConfig().to_dict()
    flags = [[flag, str(trainer[key])] for key, flag in _TRAINER_FLAGS.items()
             if trainer.get(key, defaults[key]) != defaults[key]]
    switches = [["--keep", "last"]] if trainer.get("keep_best") is False else []
    return flags + switches + ([["--even-batches"]] if trainer.get("even_batches") else [])


def _run_flags(metrics: dict[str, Any]) -> list[list[str]]:
    """The flags of the training run that its metrics record: epochs, the trainer's
    settings and the sampler."""
    flags = [["--epochs", str(metrics["epochs"])]] if "epochs" in metrics else []
    flags += _trainer_flags(metrics.get("trainer", {}))
    sampler = metrics.get("sampler")
    if isinstance(sampler, dict) and "sampler" in sampler:
        flags.append(["--sampler", sampler["sampler"]])
        flags += [["--sampler-option", f"{key}={json.dumps(value)}"]
                  for key, value in sampler.get("options", {}).items()]
    return flags

"""Saving and loading models: weights in safetensors, the config in JSON. No pickle.

A model folder holds ``config.json`` (model name, config fields, library and torch
versions) and ``model.safetensors``. A save writes a new folder and swaps it with the old
one in one step, so after a kill at any moment the folder holds the complete old or the
complete new model.

Loading runs no code named by the files: the model class comes from the model registry and
the networks from the network registry (:mod:`vaebench.nn.registry`); a network class given
by import path is imported only with ``trust_code=True``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vaebench.files import (
    atomic_write,
    read_json_object,
    recover_folder,
    replacing_folder,
    write_json,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None):
    """Write tensors to safetensors; shared storage is cloned so each is saved on its own."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda handle: handle.write(save(flat, metadata=metadata)))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is truncated or corrupt and cannot be read: {err}") from err


def is_model_file(name: str) -> bool:
    """Entries a model save owns: its two files and the samplers fitted for its weights
    (which a new save of the model drops)."""
    return name in (CONFIG_FILE, WEIGHTS_FILE, "samplers")


def write_model_files(model: torch.nn.Module, directory: Path,
                      training_data: dict[str, Any] | None = None) -> None:
    """Write the model's two files into ``directory`` (no swapping: see :func:`save_model`)."""
    import vaebench

    payload = {
        "model": model.name,
        "config": model.config.to_dict(),
        "vaebench_version": vaebench.__version__,
        "torch_version": torch.__version__,
    }
    if training_data is not None:
        payload["training_data"] = training_data
    save_tensors(directory / WEIGHTS_FILE, model.state_dict(), metadata={"model": model.name})
    write_json(directory / CONFIG_FILE, payload)


def save_model(model: torch.nn.Module, directory: str | Path, *,
               training_data: dict[str, Any] | None = None) -> Path:
    """Save ``model`` into ``directory``, replacing a model saved there as a whole.

    ``training_data``: how to load the data it was trained on (the keyword arguments of
    :func:`vaebench.data.load_train_test`), so that samplers can be fitted on it later.
    """
    with replacing_folder(directory, owns=is_model_file) as folder:
        write_model_files(model, folder, training_data)
    return Path(directory)


def read_config(directory: str | Path) -> dict[str, Any]:
    """The checked contents of a model folder's ``config.json``."""
    return read_json_object(Path(directory) / CONFIG_FILE, "saved vaebench model", {
        "model": (str, "a model name (a string)"),
        "config": (dict, "a mapping of config fields"),
    })


def read_training_data(directory: str | Path) -> dict[str, Any] | None:
    """How to load the data a saved model was trained on, if its save recorded it."""
    record = read_config(directory).get("training_data")
    if record is not None and not (isinstance(record, dict) and
                                   isinstance(record.get("dataset"), str)):
        raise ValueError(f"{Path(directory) / CONFIG_FILE}: field 'training_data' must be a "
                         "mapping with a 'dataset' name")
    return record


def build_config(cls: type, fields: dict[str, Any], source: Path) -> Any:
    """``cls.config_class(**fields)``, its validation errors naming ``source`` and fields."""
    try:
        return cls.config_class(**fields)
    except ValidationError as err:
        problems = "; ".join(f"config.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in err.errors())
        raise ValueError(f"{source} has invalid values: {problems}") from None


def load_model(directory: str | Path, device: str | torch.device = "cpu", *,
               trust_code: bool = False) -> torch.nn.Module:
    """Rebuild a saved model of any registered kind with its weights, on ``device`` and in
    eval mode, ready for inference (call ``model.train()`` to train it further).

    ``directory``: a model folder, or ``"hf://owner/name[@revision]"`` for one on the
    Hugging Face Hub (:mod:`vaebench.integrations.hub`), downloaded and then loaded as a
    local folder.
    ``trust_code=True`` lets the folder's config import and build network classes by
    import path that this process has not registered: only for folders you trust.
    """
    from vaebench.integrations.hub import model_folder
    from vaebench.models import get_model_class
    from vaebench.nn import trusting_code

    directory = model_folder(directory)
    recover_folder(directory)
    payload = read_config(directory)
    cls = get_model_class(payload["model"])
    config = build_config(cls, payload["config"], directory / CONFIG_FILE)
    state = load_tensors(directory / WEIGHTS_FILE)
    with trusting_code(trust_code):
        model = cls(config)
    load_weights(model, state, directory)
    return model.to(device).eval()


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` into ``model``; warn if its parameters hold NaN or infinite values
    (buffers may hold NaN on purpose, as "not measured yet")."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in {source} do not match its config: {err}") from err
    bad = [name for name, tensor in model.named_parameters()
           if not bool(torch.isfinite(tensor).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        warnings.warn(f"the weights in {source} contain NaN or infinite values ({shown}); "
                      "the model's outputs will not be finite", stacklevel=3)

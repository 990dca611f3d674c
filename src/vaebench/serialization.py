"""Saving and loading models: weights in safetensors, the config in JSON. No pickle.

A model folder holds ``config.json`` (model name, config fields, library and torch
versions) and ``model.safetensors``. Files are written to temporary names and renamed into
place, so an interrupted save never destroys a model saved there before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vaebench.files import atomic_write, write_json

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


def save_model(model: torch.nn.Module, directory: str | Path) -> Path:
    """Save ``model`` into ``directory`` (created if needed); returns the directory."""
    import vaebench

    directory = Path(directory)
    payload = {
        "model": model.name,
        "config": model.config.to_dict(),
        "vaebench_version": vaebench.__version__,
        "torch_version": torch.__version__,
    }
    save_tensors(directory / WEIGHTS_FILE, model.state_dict(), metadata={"model": model.name})
    write_json(directory / CONFIG_FILE, payload)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not a saved vaebench model")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupt (not valid JSON): {err}") from err
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise ValueError(f"{path} is not a vaebench model config (needs 'model' and 'config')")
    return payload


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a saved model of any registered kind with its weights."""
    from vaebench.models import get_model_class

    payload = read_config(directory)
    cls = get_model_class(payload["model"])
    config = cls.config_class(**payload["config"])
    state = load_tensors(Path(directory) / WEIGHTS_FILE)
    model = cls(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in {directory} do not match its config: {err}") from err
    return model.to(device)

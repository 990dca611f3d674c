"""Saving fitted samplers beside their model, as safely as models: ``MODEL/samplers/NAME/``
holds ``sampler.json`` (name, options, the model and the digest of the weights it was
fitted for) and ``sampler.safetensors``. Loading builds only registered samplers and runs
no code named by the files. Saving a model replaces its folder as a whole, samplers
included, so a sampler never outlives the weights it was fitted for.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vaebench.files import read_json_object, recover_folder, replacing_folder, write_json
from vaebench.samplers.base import Sampler, fingerprint
from vaebench.samplers.registry import get_sampler_class
from vaebench.serialization import build_config, load_tensors, load_weights, save_tensors

SAMPLERS_FOLDER = "samplers"
CONFIG_FILE = "sampler.json"
WEIGHTS_FILE = "sampler.safetensors"


def sampler_folder(model_dir: str | Path, name: str) -> Path:
    get_sampler_class(name)  # an unknown name never becomes a path
    return Path(model_dir) / SAMPLERS_FOLDER / name


def save_sampler(sampler: Sampler, model_dir: str | Path) -> Path:
    """Save a fitted ``sampler`` into the folder of the model it was fitted for."""
    import vaebench

    if not sampler.is_fitted:
        raise ValueError(f"the {sampler.name} sampler is not fitted: nothing to save")
    folder = sampler_folder(model_dir, sampler.name)
    payload = {"sampler": sampler.name, "config": sampler.config.to_dict(),
               "model": sampler.model_name, "model_fingerprint": sampler.model_fingerprint,
               "vaebench_version": vaebench.__version__}
    with replacing_folder(folder, owns=lambda entry: entry in (CONFIG_FILE, WEIGHTS_FILE)) \
            as tmp:
        save_tensors(tmp / WEIGHTS_FILE, sampler.state_dict(), metadata={"sampler": sampler.name})
        write_json(tmp / CONFIG_FILE, payload)
    return folder


def saved_samplers(model_dir: str | Path) -> list[str]:
    """Names of the samplers saved in a model folder."""
    root = Path(model_dir) / SAMPLERS_FOLDER
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file()) \
        if root.is_dir() else []


def load_sampler(model_dir: str | Path, name: str, model: nn.Module) -> Sampler:
    """The sampler ``name`` saved in ``model_dir``, for ``model`` (the model loaded from that
    folder); refused if it was fitted for other weights."""
    folder = sampler_folder(model_dir, name)
    recover_folder(folder)
    payload = read_json_object(folder / CONFIG_FILE, "saved vaebench sampler", {
        "sampler": (str, "a sampler name (a string)"),
        "config": (dict, "a mapping of sampler options"),
        "model_fingerprint": (str, "the digest of the model's weights (a string)"),
    })
    if payload["sampler"] != name:
        raise ValueError(f"{folder / CONFIG_FILE} holds a {payload['sampler']!r} sampler, "
                         f"not {name!r}")
    if payload["model_fingerprint"] != fingerprint(model):
        raise ValueError(f"the {name} sampler in {folder} was fitted for other weights than "
                         "this model's: fit it again")
    cls = get_sampler_class(name)
    sampler = cls(model, build_config(cls, payload["config"], folder / CONFIG_FILE))
    load_weights(sampler, load_tensors(folder / WEIGHTS_FILE), folder)
    sampler.model_fingerprint = payload["model_fingerprint"]
    return sampler.to(next(model.parameters()).device)

"""Models by name: ``create_model("vae", input_dim=..., latent_dim=...)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaebench.models.base import Autoencoder

_MODELS: dict[str, type[Autoencoder]] = {}


def register_model(cls: type[Autoencoder]) -> type[Autoencoder]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _MODELS and _MODELS[cls.name] is not cls:
        raise ValueError(f"a model named {cls.name!r} is already registered")
    _MODELS[cls.name] = cls
    return cls


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type[Autoencoder]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, *, trust_code: bool = False, **options: Any) -> Autoencoder:
    """Build a registered model; ``options`` are its config fields, plus optional
    ``encoder`` / ``decoder`` modules. A network named by an unregistered import path
    (``"package.module:Class"``) is imported only with ``trust_code=True``."""
    from vaebench.nn import trusting_code

    cls = get_model_class(name)
    modules = {k: options.pop(k) for k in ("encoder", "decoder")
               if not isinstance(options.get(k, ""), str)}
    with trusting_code(trust_code):
        return cls(cls.config_class(**options), **modules)

"""Models by name: ``create_model("vae", input_dim=..., latent_dim=...)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaebench.registry import Registry

if TYPE_CHECKING:
    from vaebench.models.base import Autoencoder

_MODELS: Registry[Autoencoder] = Registry("model")
#: Class decorator: make a model class available under its ``name``.
register_model = _MODELS.register
list_models = _MODELS.names
get_model_class = _MODELS.get


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

"""Encoder and decoder networks: built-in ones by name, or a user's class by import path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from vaebench.nn.conv import ConvDecoder, ConvEncoder
from vaebench.nn.mlp import MLPDecoder, MLPEncoder
from vaebench.nn.spatial import SpatialDecoder, SpatialEncoder

ENCODERS: dict[str, Callable[..., nn.Module]] = {"mlp": MLPEncoder, "conv": ConvEncoder,
                                                 "spatial": SpatialEncoder}
DECODERS: dict[str, Callable[..., nn.Module]] = {"mlp": MLPDecoder, "conv": ConvDecoder,
                                                 "spatial": SpatialDecoder}

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "SpatialDecoder",
           "SpatialEncoder", "build_network", "import_path", "import_object"]


def import_path(obj: type) -> str:
    """The ``module:QualName`` path that :func:`import_object` resolves back to ``obj``."""
    return f"{obj.__module__}:{obj.__qualname__}"


def import_object(path: str) -> Any:
    """Resolve ``package.module:Name`` (or ``package.module.Name``) to the object."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import module {module_name!r} for {path!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError(f"module {module_name!r} has no attribute {attr!r} ({path!r})")
        obj = getattr(obj, part)
    return obj


def build_network(role: str, name: str, kwargs: dict[str, Any], **shapes: Any) -> nn.Module:
    """Build the encoder or decoder ``name``.

    Built-in networks receive the shapes they must produce (``input_dim`` and
    ``out_features`` for an encoder, ``latent_dim`` and ``output_shape`` for a decoder) plus
    ``kwargs``; a user class given by import path is built as ``Class(**kwargs)``.
    """
    table = ENCODERS if role == "encoder" else DECODERS
    if name in table:
        return table[name](**shapes, **kwargs)
    if ":" not in name and "." not in name:
        raise ValueError(
            f"unknown {role} {name!r}; built-in: {', '.join(sorted(table))}, "
            "or an import path 'package.module:Class'"
        )
    cls = import_object(name)
    return cls(**kwargs)

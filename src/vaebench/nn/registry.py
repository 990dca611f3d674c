"""Which networks a saved config may build: built-ins by name, classes the user registered.

A config names its encoder and decoder by string. The string never decides what code runs:
a built-in name picks a built-in class, a registered name picks the class the running
process registered (:func:`register_network`), and anything else is refused. Only inside
:func:`trusting_code` (``trust_code=True`` in the API, ``--trust-code`` on the command line)
is an unregistered ``package.module:Class`` path imported, and even then only an
``nn.Module`` subclass is built.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from vaebench.nn.conv import ConvDecoder, ConvEncoder
from vaebench.nn.mlp import MLPDecoder, MLPEncoder
from vaebench.nn.spatial import SpatialDecoder, SpatialEncoder

BUILTIN: dict[str, dict[str, type[nn.Module]]] = {
    "encoder": {"mlp": MLPEncoder, "conv": ConvEncoder, "spatial": SpatialEncoder},
    "decoder": {"mlp": MLPDecoder, "conv": ConvDecoder, "spatial": SpatialDecoder},
}
_REGISTERED: dict[str, type[nn.Module]] = {}
_TRUST_CODE = contextvars.ContextVar("vaebench_trust_code", default=False)


class UntrustedCodeError(ValueError):
    """A config names code that this process has not allowed to run."""


def import_path(cls: type) -> str:
    """The ``module:QualName`` path of ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_network(cls: type[nn.Module] | None = None, *, name: str | None = None) -> Any:
    """Allow saved configs to build ``cls``, named ``name`` or its import path.

    Use as ``register_network(MyEncoder)``, ``@register_network`` or
    ``@register_network(name="my_encoder")``. A model given a network instance registers
    its class the same way, so it can be saved and loaded again in the same process.
    """
    def add(klass: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(klass, type) and issubclass(klass, nn.Module)):
            raise TypeError(f"only nn.Module subclasses can be registered, got {klass!r}")
        key = name or import_path(klass)
        if any(key in table for table in BUILTIN.values()):
            raise ValueError(f"{key!r} is the name of a built-in network")
        if _REGISTERED.get(key, klass) is not klass:
            raise ValueError(f"another network is already registered as {key!r}")
        _REGISTERED[key] = klass
        return klass

    return add if cls is None else add(cls)


def network_name(cls: type[nn.Module]) -> str:
    """The name a config records for ``cls``, registering it if it is not yet."""
    for key, klass in _REGISTERED.items():
        if klass is cls:
            return key
    register_network(cls)
    return import_path(cls)


def registered_networks() -> dict[str, type[nn.Module]]:
    return dict(_REGISTERED)


@contextlib.contextmanager
def trusting_code(trust: bool = True) -> Iterator[None]:
    """Within the block, configs may import and build unregistered ``module:Class`` paths
    when ``trust`` is true. Trust only widens: ``trusting_code(False)`` inside a trusting
    block (a benchmark run with ``--trust-code`` building its models) keeps the trust."""
    token = _TRUST_CODE.set(bool(trust) or _TRUST_CODE.get())
    try:
        yield
    finally:
        _TRUST_CODE.reset(token)


def _canonical(name: str) -> str:
    """``package.module.Class`` spelled as ``package.module:Class``."""
    if ":" in name or "." not in name:
        return name
    module, _, attr = name.rpartition(".")
    return f"{module}:{attr}"


def network_class(role: str, name: str) -> type[nn.Module]:
    """The class a config's ``role`` network ``name`` builds; refuses what is not allowed."""
    if not isinstance(name, str):
        raise ValueError(f"{role} must be a network name (a string), got {name!r}")
    if name in BUILTIN[role]:
        return BUILTIN[role][name]
    for key in (name, _canonical(name)):
        if key in _REGISTERED:
            return _REGISTERED[key]
    if ":" not in name and "." not in name:
        raise ValueError(
            f"unknown {role} {name!r}; built-in: {', '.join(sorted(BUILTIN[role]))}; "
            f"registered: {', '.join(sorted(_REGISTERED)) or 'none'}")
    if not _TRUST_CODE.get():
        raise UntrustedCodeError(
            f"the config names the {role} {name!r}, a class that is not registered in this "
            "process; building it would import and run code named by the file. Register the "
            "class (vaebench.register_network) before loading, or pass trust_code=True "
            "(--trust-code on the command line) if you trust where the file comes from")
    return _import_module_class(name)


def _import_module_class(path: str) -> type[nn.Module]:
    """Import ``package.module:Class`` (trusted code only) and check it is an nn.Module."""
    module_name, _, attr = _canonical(path).partition(":")
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
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise UntrustedCodeError(f"{path!r} is {type(obj).__name__} {obj!r}, not an nn.Module "
                                 "subclass: refused")
    return obj


def build_network(role: str, name: str, kwargs: dict[str, Any], **shapes: Any) -> nn.Module:
    """Build the encoder or decoder ``name``.

    Built-in networks receive the shapes they must produce (``input_dim`` and
    ``out_features`` for an encoder, ``latent_dim`` and ``output_shape`` for a decoder) plus
    ``kwargs``; a registered (or trusted) class is built as ``Class(**kwargs)``.
    """
    if not isinstance(kwargs, dict):
        raise ValueError(f"{role}_kwargs must be a mapping, got {kwargs!r}")
    cls = network_class(role, name)
    if name in BUILTIN[role]:
        return cls(**shapes, **kwargs)
    return cls(**kwargs)


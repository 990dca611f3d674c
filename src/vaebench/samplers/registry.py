"""Samplers by name: ``create_sampler("gmm", model, n_components=10)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from vaebench.samplers.base import Sampler

_SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _SAMPLERS and _SAMPLERS[cls.name] is not cls:
        raise ValueError(f"a sampler named {cls.name!r} is already registered")
    _SAMPLERS[cls.name] = cls
    return cls


def list_samplers() -> list[str]:
    return sorted(_SAMPLERS)


def get_sampler_class(name: str) -> type[Sampler]:
    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: "
                         f"{', '.join(list_samplers())}")
    return _SAMPLERS[name]


def create_sampler(name: str, model: nn.Module, **options: Any) -> Sampler:
    """Build the sampler ``name`` for ``model``; ``options`` are its config fields."""
    cls = get_sampler_class(name)
    return cls(model, cls.config_class(**options))


def samplers_for(model: nn.Module) -> list[str]:
    """The registered samplers that serve ``model``."""
    from vaebench.samplers.base import refusal_of

    return [name for name, cls in sorted(_SAMPLERS.items()) if not refusal_of(cls, model)]

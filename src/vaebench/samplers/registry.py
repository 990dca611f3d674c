"""Samplers by name: ``create_sampler("gmm", model, n_components=10)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaebench.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from vaebench.samplers.base import Sampler

_SAMPLERS: Registry[Sampler] = Registry("sampler")
#: Class decorator: make a sampler class available under its ``name``.
register_sampler = _SAMPLERS.register
list_samplers = _SAMPLERS.names
get_sampler_class = _SAMPLERS.get


def create_sampler(name: str, model: nn.Module, **options: Any) -> Sampler:
    """Build the sampler ``name`` for ``model``; ``options`` are its config fields."""
    cls = get_sampler_class(name)
    return cls(model, cls.config_class(**options))


def samplers_for(model: nn.Module) -> list[str]:
    """The registered samplers that serve ``model``."""
    from vaebench.samplers.base import refusal_of

    return [name for name in list_samplers() if not refusal_of(get_sampler_class(name), model)]

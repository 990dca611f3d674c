"""Classes by name: the one mechanism behind the model and sampler registries (a config or
a saved file names a class; only registered classes are ever built from a name)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Registered classes of one ``kind`` ("model", "sampler"), keyed by their ``name``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available under ``cls.name``."""
        name = cls.name
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.kind}s: "
                             f"{', '.join(self.names())}")
        return self._classes[name]

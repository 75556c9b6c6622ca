"""Name → implementation registries for interchangeable strategies (scorers, fusion, indexes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes registered by name; an unknown name is an error listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorate(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._classes[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            valid = ", ".join(sorted(self._classes))
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._classes)

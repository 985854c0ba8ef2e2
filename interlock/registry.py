"""One registry for everything registered by name (models, heads): timm's ``register_model`` pattern.

A :class:`Registry` maps names to builders; ``@REG.register("name")`` adds one, ``REG.get(name)``
returns it or raises a ValueError listing the known names, ``REG.names()`` lists them sorted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind  # "model", "head": how errors name an entry
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``builder`` under ``name``; a second entry of one name is refused."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name; got {name!r}")

        def add(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice; pick another name")
            self._entries[name] = builder
            return builder

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

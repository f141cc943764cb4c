"""Name → object registries (optimizers, activations, readers), case-insensitive.

A misspelt name is an error that lists the closest registered name, e.g.
``unknown optimizer 'adma'; did you mean 'adam'? (known: adagrad, adam, adamw, sgd)``.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from recstack.config import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive mapping from names to objects of one kind.

    Args:
        kind: what is registered, used in error messages ("optimizer", "reader").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        def add(item: T) -> T:
            key = name.lower()
            if key in self._items and self._items[key] is not item:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered under ``name`` (case-insensitive).

        Raises:
            KeyError: unknown name; the message names the closest known one.
        """
        try:
            return self._items[name.lower()]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'{did_you_mean(name.lower(), self._items)}"
                           f" (known: {', '.join(sorted(self._items))})") from None

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._items

    def names(self) -> list[str]:
        return sorted(self._items)


OPTIMIZERS: Registry = Registry("optimizer")
ACTIVATIONS: Registry = Registry("activation")
READERS: Registry = Registry("reader")

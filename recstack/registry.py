"""Name → object registries: optimizers, activations, readers, losses, metrics.

A config names what it wants (``optimizer.class: adam``, a tower's ``loss_type: L2_LOSS`` and
``metrics_set: [auc]``); the implementation registers itself under that name where it is defined
(``recstack/optim.py``, ``recstack/layers/activation.py``, ``recstack/metrics.py``,
``recstack/easyrec/tasks.py``, the readers), so adding one is a ``register`` call, not an ``elif``.

A misspelt name is an error that lists the closest registered name, e.g.
``unknown optimizer 'adma'; did you mean 'adam'? (known: adagrad, adam, adamw, sgd)``; from a config,
:meth:`Registry.lookup` makes it one :class:`~recstack.config.ConfigError` line naming the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from recstack.config import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive mapping from names to objects of one kind.

    Args:
        kind: what is registered, used in error messages ("optimizer", "reader").
        case_sensitive: names match exactly (EasyRec's enum-like names: ``CLASSIFICATION``, ``auc``);
            by default they match in any case (PaddleRec writes ``Adam`` and ``adam``).
    """

    def __init__(self, kind: str, case_sensitive: bool = False) -> None:
        self.kind = kind
        self.case_sensitive = case_sensitive
        self._items: dict[str, T] = {}

    def _key(self, name: str) -> str:
        return name if self.case_sensitive else name.lower()

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        def add(item: T) -> T:
            key = self._key(name)
            if key in self._items and self._items[key] is not item:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered under ``name`` (case-insensitive unless ``case_sensitive``).

        Raises:
            KeyError: unknown name; the message names the closest known one.
        """
        try:
            return self._items[self._key(name)]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'{did_you_mean(self._key(name), self._items)}"
                           f" (known: {', '.join(sorted(self._items))})") from None

    def lookup(self, name: str, where: str) -> T:
        """:meth:`get` for a name read from a config: ``where`` is the key's location (``'...loss_type' in
        config.yaml``).

        Raises:
            ConfigError: ``<where>: unsupported <kind> 'name'; did you mean 'x'? (supported: ...)``.
        """
        if name not in self:
            folded = {key.lower(): key for key in self._items}  # 'classification' -> 'CLASSIFICATION'
            match = difflib.get_close_matches(name.lower(), folded, n=1, cutoff=0.5)
            hint = f"; did you mean '{folded[match[0]]}'?" if match else ""
            raise ConfigError(f"{where}: unsupported {self.kind} {name!r}{hint}"
                              f" (supported: {', '.join(sorted(self._items))})")
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and self._key(name) in self._items

    def names(self) -> list[str]:
        return sorted(self._items)


OPTIMIZERS: Registry = Registry("optimizer")
ACTIVATIONS: Registry = Registry("activation")
READERS: Registry = Registry("reader")
#: a task tower's ``loss_type`` -> :class:`recstack.easyrec.tasks.TaskLoss` (``CLASSIFICATION``, ``L2_LOSS``)
LOSSES: Registry = Registry("loss_type", case_sensitive=True)
#: a ``metrics_set`` name -> :class:`recstack.metrics.Metric` subclass (``auc``, ``mean_squared_error``, ...)
METRICS: Registry = Registry("metric", case_sensitive=True)

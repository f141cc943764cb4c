"""Typed reads of nested config mappings, with unknown-key errors at any depth.

:meth:`recstack.config.Config.get` checks the top level of ``hyper_parameters``;
EasyRec-style sections (``data_config``, ``feature_config``, ``model_config``)
nest mappings in lists in mappings. A :class:`Node` wraps one such mapping with
its dotted location (``hyper_parameters.feature_config.features[3]``) so that
readers and wrappers read it key by key, typed, and then call
:meth:`Node.finish`: a key nothing read is an error naming the closest known key::

    node = Node.at(config, "hyper_parameters.data_config")
    separator = node.get("separator", ",", type=str)
    for field in node.nodes("input_fields"):
        name = field.get("input_name", type=str)
        ...
        field.finish()
    node.finish()
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from recstack.config import Config, ConfigError, check_type, did_you_mean, is_finite, type_name

_MISSING = object()


def source(config: Config | None, key: str) -> str:
    """``'key' in /path/config.yaml`` or ``'key' (from -o)``, for a key at any depth."""
    if config is None:
        return f"'{key}'"
    for over in config.overridden:
        if key == over or key.startswith(over + ".") or key.startswith(over + "["):
            return f"'{key}' (from -o)"
    return f"'{key}' in {config.path}" if config.path else f"'{key}'"


class Node:
    """A mapping of the config at ``key``, read with typed :meth:`get` and closed with :meth:`finish`.

    Args:
        config: the run's config (for error locations); ``None`` for mappings built in code.
        key: dotted location of the mapping, e.g. ``hyper_parameters.model_config.dbmtl``.
        value: the mapping.
        hints: key -> advice for keys that are known but not accepted here
            (e.g. ``batch_size`` -> "use runner.train_batch_size").
    """

    def __init__(self, config: Config | None, key: str, value: Any, hints: Mapping[str, str] | None = None) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source(config, key)}: expected a mapping, got {value!r}")
        self.config, self.key, self.value = config, key, value
        self.hints = dict(hints or {})
        self.read: set[str] = set()

    @classmethod
    def at(cls, config: Config, key: str, default: Any = _MISSING, hints: Mapping[str, str] | None = None) -> Node:
        """The mapping at a dotted key of ``config`` (``config.get`` marks it as used)."""
        value = config.get(key) if default is _MISSING else config.get(key, default)
        return cls(config, key, value, hints)

    def where(self, name: str) -> str:
        return source(self.config, f"{self.key}.{name}")

    def __contains__(self, name: str) -> bool:
        return name in self.value

    def get(self, name: str, default: Any = _MISSING, type: type | tuple[type, ...] | None = None) -> Any:
        """The value of ``name``; ``default`` when absent (absent without a default is an error).

        An int is accepted where a float is expected; a bool never as an int.
        """
        self.read.add(name)
        if name not in self.value:
            if default is _MISSING:
                raise ConfigError(f"{source(self.config, self.key)}: missing key '{name}'")
            return default
        value = self.value[name]
        if type is not None:
            types = type if isinstance(type, tuple) else (type,)
            if float in types and int not in types:
                types = types + (int,)
            if not check_type(value, types):
                raise ConfigError(f"{self.where(name)}: expected {type_name(types)}, got {value!r}")
            if not is_finite(value):
                raise ConfigError(f"{self.where(name)}: expected a finite number, got {value!r}")
        return value

    def get_list(self, name: str, item_type: type | tuple[type, ...], default: Any = _MISSING,
                 scalar_ok: bool = False) -> list:
        """A list whose items all have ``item_type`` (a single item when ``scalar_ok``)."""
        value = self.get(name, default)
        if value is default and default is not _MISSING:
            return value
        if scalar_ok and not isinstance(value, list):
            value = [value]
        types = item_type if isinstance(item_type, tuple) else (item_type,)
        if float in types and int not in types:
            types = types + (int,)
        if not isinstance(value, list) or not all(check_type(v, types) and is_finite(v) for v in value):
            raise ConfigError(f"{self.where(name)}: expected a list of {type_name(types)}"
                              f"{' (finite)' if float in types else ''}, got {value!r}")
        return value

    def node(self, name: str, default: Any = _MISSING, hints: Mapping[str, str] | None = None) -> Node:
        """The mapping under ``name`` as a :class:`Node` (``default`` {} when absent)."""
        return Node(self.config, f"{self.key}.{name}", self.get(name, default), hints)

    def nodes(self, name: str, default: Any = _MISSING, hints: Mapping[str, str] | None = None) -> Iterator[Node]:
        """Each mapping of the list under ``name`` as a :class:`Node` (``key[i]``)."""
        items = self.get(name, default)
        if not isinstance(items, list):
            raise ConfigError(f"{self.where(name)}: expected a list of mappings, got {items!r}")
        for i, item in enumerate(items):
            yield Node(self.config, f"{self.key}.{name}[{i}]", item, hints)

    def finish(self) -> None:
        """Raise on the first key of the mapping that nothing read.

        Raises:
            ConfigError: ``unknown key '<key>.<name>' in <file>; did you mean '<key>.<closest>'?``,
                or the hint registered for that key.
        """
        for name in self.value:
            if name in self.read:
                continue
            full = f"{self.key}.{name}"
            if name in self.hints:
                raise ConfigError(f"{source(self.config, full)}: {self.hints[name]}")
            known = sorted(self.read)
            raise ConfigError(f"unknown key {source(self.config, full)}"
                              f"{did_you_mean(full, [f'{self.key}.{k}' for k in known])}"
                              f" (known here: {', '.join(known)})")

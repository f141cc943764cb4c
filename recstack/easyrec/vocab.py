"""Vocabularies of id features: read from a file, or fitted from the training data by ``tools/build_vocab.py``.

An ``IdFeature``, ``TagFeature`` or ``SequenceFeature`` of ids maps its values through a vocabulary with one of
(``doc/vocabulary.md``)::

    - {input_names: [city], feature_type: IdFeature, embedding_dim: 8, vocab_file: vocab/city.txt}
    - {input_names: [city], feature_type: IdFeature, embedding_dim: 8, vocab: {min_count: 2, max_size: 100000}}

* ``vocab_file``: one value a line (UTF-8, no empty line, no value twice); a relative path resolves against the
  config's folder, as the data folders do;
* ``vocab``: a vocabulary fitted from ``runner.train_data_dir`` by ``python tools/build_vocab.py -m <config>``:
  the values seen at least ``min_count`` times (default 1), the most frequent first (ties in the values' code
  point order), at most ``max_size`` (default 0: all), written to ``<runner.model_save_path>/vocab/<feature>.txt``
  beside the checkpoints, with ``manifest.json`` (the counts, the settings, the source files).

Entry ``i`` of the vocabulary gets id ``i``; a value it does not hold gets one of ``num_oov_buckets`` (default 1,
at least 1) out-of-vocabulary ids after the entries, picked by the value's CRC-32 as ``hash_bucket_size`` picks
buckets (:func:`recstack.easyrec.tabular.value_ids`). The embedding table has ``V + num_oov_buckets`` rows. The
empty value is never an entry (it goes to an OOV bucket).

The vocabulary is read when the feature config is parsed (:class:`recstack.easyrec.features.TabularSpec`), so the
reader, the embedding tables and every tool built on the spec use the same one. ``tools/to_static.py`` copies the
files into the export (``<prefix>.vocab/<feature>.txt``, named with their SHA-256 in the export's JSON) and every
loader of the export reads them from there (:func:`pin_vocabularies`): the service maps raw values exactly as
training did, wherever the export is moved.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recstack.config import Config, ConfigError
from recstack.easyrec.schema import Node

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

#: the folder of fitted vocabularies under ``runner.model_save_path``
VOCAB_DIR = "vocab"


# ---------------------------------------------------------------------- reading
def parse_fit(node: Node) -> tuple[int, int]:
    """``(min_count, max_size)`` of a feature's ``vocab: {min_count, max_size}`` (a fitted vocabulary)."""
    fit = node.node("vocab")
    min_count = fit.get("min_count", 1, type=int)
    max_size = fit.get("max_size", 0, type=int)
    if min_count < 1:
        raise ConfigError(f"{fit.where('min_count')}: must be >= 1 (keep the values seen that often), got {min_count}")
    if max_size < 0:
        raise ConfigError(f"{fit.where('max_size')}: must be >= 0 (0: no limit), got {max_size}")
    fit.finish()
    return min_count, max_size


def resolve_vocab_file(config: Config | None, text: str) -> Path:
    """A ``vocab_file`` path: relative ones resolve against the config's folder (as the data folders do)."""
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        base = Path(config.config_dir) if config is not None else Path.cwd()
        path = base / path
    return path.resolve()


def fitted_path(config: Config | None, name: str) -> Path:
    """The file of feature ``name``'s fitted vocabulary: ``<runner.model_save_path>/vocab/<name>.txt``."""
    return vocab_dir(config) / f"{name}.txt"


def vocab_dir(config: Config | None) -> Path:
    """``<runner.model_save_path>/vocab``: where ``tools/build_vocab.py`` writes, beside the checkpoints."""
    root = config.get("runner.model_save_path", "output_model") if config is not None else "output_model"
    return Path(root) / VOCAB_DIR


def build_command(config: Config | None) -> str:
    """The ``tools/build_vocab.py`` command for a config (with its ``-o`` of the output and data folders)."""
    if config is None:
        return "python tools/build_vocab.py -m <config.yaml>"
    command = f"python tools/build_vocab.py -m {config.path or '<config.yaml>'}"
    for key in ("runner.model_save_path", "runner.train_data_dir"):
        if key in config.overridden:
            command += f" -o {key}={config.get(key)}"
    return command


#: (path, size, mtime_ns, forbidden) -> entries: a config is parsed several times per run (reader, model, export)
_CACHE: dict[tuple[str, int, int, str], tuple[str, ...]] = {}


def read_vocab_file(path: str | os.PathLike, where: str, forbidden: str | None = None) -> tuple[str, ...]:
    """The entries of a vocabulary file, one a line, in order.

    Args:
        path: the file.
        where: the config key that names it (``'...features[0].vocab_file' in config.yaml``), for errors.
        forbidden: characters an entry cannot hold (a tag or sequence feature's separators).

    Raises:
        ConfigError: the file is missing or unreadable (naming ``where``), not UTF-8, empty, or holds an empty
            line, a value twice or a separator (naming ``<file>:<line>``).
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise ConfigError(f"{where}: vocabulary file '{path}' does not exist") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns, forbidden or "")
    if key in _CACHE:
        return _CACHE[key]
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{where}: vocabulary file '{path}' cannot be read ({err.strerror or err})") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last line
    entries: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        line = line[:-1] if line.endswith(b"\r") else line
        try:
            value = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}:{number}: not UTF-8 text (vocabulary of {where})") from None
        if not value:
            raise ConfigError(f"{path}:{number}: empty line; a vocabulary file holds one value a line (the empty "
                              f"value is never an entry: it goes to an out-of-vocabulary bucket) (vocabulary of "
                              f"{where})")
        if value in seen:
            raise ConfigError(f"{path}:{number}: {value[:60]!r} repeats line {seen[value]} (each value once; "
                              f"vocabulary of {where})")
        bad = [c for c in forbidden or "" if c in value]
        if bad:
            raise ConfigError(f"{path}:{number}: {value[:60]!r} holds the separator {bad[0]!r} of the feature's "
                              f"cells, so no value can ever match it (vocabulary of {where})")
        seen[value] = number
        entries.append(value)
    if not entries:
        raise ConfigError(f"{where}: vocabulary file '{path}' holds no entries (one value a line)")
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = out = tuple(entries)
    return out


def read_fitted(path: Path, node: Node, name: str, forbidden: str | None) -> tuple[str, ...]:
    """A fitted vocabulary's entries; a clear error with the command that builds it when it is missing."""
    if not path.is_file():
        config = node.config
        beside = Path(config.get("runner.infer_load_path", None) or path.parent.parent) / VOCAB_DIR / path.name \
            if config is not None else path
        hint = (f" (runner.infer_load_path holds '{beside}': the vocabularies are read from runner.model_save_path; "
                f"add -o runner.model_save_path={beside.parent.parent})") if beside != path and beside.is_file() else ""
        raise ConfigError(f"{node.where('vocab')}: feature '{name}' uses a vocabulary fitted from the training data, "
                          f"but '{path}' does not exist{hint}; {'or ' if hint else ''}build it first: "
                          f"{build_command(config)}")
    return read_vocab_file(path, node.where("vocab"), forbidden)


_VALUE_SETS: dict[int, tuple[tuple[str, ...], pa.Array]] = {}


def value_set(vocab: tuple[str, ...]) -> pa.Array:
    """The vocabulary as a pyarrow string array (built once per vocabulary)."""
    import pyarrow as pa  # (here: parsing a config needs no pyarrow)

    entry = _VALUE_SETS.get(id(vocab))
    if entry is None or entry[0] is not vocab:
        if len(_VALUE_SETS) > 64:
            _VALUE_SETS.clear()
        entry = _VALUE_SETS[id(vocab)] = (vocab, pa.array(list(vocab), pa.string()))
    return entry[1]


# ---------------------------------------------------------------------- counting (tools/build_vocab.py)
class VocabCounter:
    """Counts of one feature's values over the training data (thread-safe).

    Attributes:
        name, key: the feature and its config key.
        min_count, max_size, num_oov_buckets: its settings.
        counts: value -> occurrences.
        total: values counted (a tag's or sequence's each value).
    """

    def __init__(self, name: str, key: str, fit: tuple[int, int], num_oov_buckets: int) -> None:
        self.name, self.key = name, key
        self.min_count, self.max_size = fit
        self.num_oov_buckets = num_oov_buckets
        self.counts: dict[str, int] = {}
        self.total = 0
        self._lock = threading.Lock()

    def add(self, values: pa.Array | pa.ChunkedArray) -> None:
        """Count a string array's values (one ``value_counts`` per block)."""
        import pyarrow.compute as pc

        if len(values) == 0:
            return
        counted = pc.value_counts(values)
        keys = counted.field("values").to_pylist()
        numbers = counted.field("counts").to_pylist()
        with self._lock:
            for value, count in zip(keys, numbers):
                if value is not None:
                    self.counts[value] = self.counts.get(value, 0) + count
                    self.total += count

    def select(self) -> tuple[list[tuple[str, int]], dict[str, int]]:
        """The entries kept, ``(value, count)`` most frequent first (ties: by value), and how many were dropped
        (``below_min_count``, ``over_max_size``, ``unwritable``: the empty value, values holding a line break)."""
        unwritable = [v for v in self.counts if not v or "\n" in v or "\r" in v]
        ranked = sorted(((v, c) for v, c in self.counts.items() if v and "\n" not in v and "\r" not in v),
                        key=lambda vc: (-vc[1], vc[0]))
        kept = [vc for vc in ranked if vc[1] >= self.min_count]
        below = len(ranked) - len(kept)
        over = max(0, len(kept) - self.max_size) if self.max_size else 0
        if over:
            kept = kept[:self.max_size]
        return kept, {"below_min_count": below, "over_max_size": over, "unwritable": len(unwritable)}


_COUNTING: contextvars.ContextVar[dict[str, VocabCounter] | None] = contextvars.ContextVar("vocab_counting",
                                                                                           default=None)


@contextlib.contextmanager
def counting() -> Iterator[dict[str, VocabCounter]]:
    """Within the block, a feature config parsed with fitted vocabularies counts their values instead of mapping
    them (its ids are 0): a reader built inside it, iterated over the training data, fills the counters (feature
    name -> :class:`VocabCounter`) yielded here. ``tools/build_vocab.py``
    (:func:`recstack.easyrec.build_vocab.build_vocabularies`) reads the data so, with the config's own reader: the
    values counted are exactly the ones training maps."""
    counters: dict[str, VocabCounter] = {}
    token = _COUNTING.set(counters)
    try:
        yield counters
    finally:
        _COUNTING.reset(token)


def active_counter(name: str, key: str, fit: tuple[int, int], num_oov_buckets: int) -> VocabCounter | None:
    """The counter of a fitted feature inside :func:`counting` (one per feature name), else ``None``."""
    counters = _COUNTING.get()
    if counters is None:
        return None
    if name not in counters:
        counters[name] = VocabCounter(name, key, fit, num_oov_buckets)
    return counters[name]


# ---------------------------------------------------------------------- exports
def export_vocabularies(spec: Any) -> dict[str, dict[str, Any]]:
    """The vocabulary files a spec's features read (feature name -> ``source`` path, config ``key``,
    ``entries``, ``num_oov_buckets``, ``fitted``): what an export copies."""
    out = {}
    for feature in getattr(spec, "features", ()):
        if feature.vocab_file:
            out[feature.name] = {"source": feature.vocab_file, "key": feature.vocab_key,
                                 "entries": len(feature.vocab), "num_oov_buckets": feature.num_oov_buckets,
                                 "fitted": feature.vocab_fit is not None}
    return out


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _node_at(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for name, index in _STEP.findall(key):
        node = node[name] if name else node[int(index)]
    return node


def pin_vocabularies(resolved: Mapping[str, Any], directory: str | os.PathLike,
                     vocabularies: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """An export's resolved config with each vocabulary read from the export's copy: the feature at ``key`` gets
    ``vocab_file: <directory>/<file>`` (a fitted one loses its ``vocab`` block: the file is its fit)."""
    data = copy.deepcopy(dict(resolved))
    for name, entry in vocabularies.items():
        try:
            node = _node_at(data, entry["key"])
        except (KeyError, IndexError, TypeError):
            raise ConfigError(f"the export's vocabulary of feature '{name}' names config key {entry['key']!r}, which "
                              "its resolved config lacks (a damaged export?): re-run tools/to_static.py") from None
        node.pop("vocab", None)
        node["vocab_file"] = str(Path(directory) / entry["file"])
    return data

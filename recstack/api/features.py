"""Feature definitions in Python (torch-rechub's ``SparseFeature`` / ``DenseFeature`` / ``SequenceFeature``).

Each object maps onto the EasyRec-style feature interface the YAML path reads (:mod:`recstack.easyrec.features`):
:func:`tabular_hyper_parameters` writes the ``data_config`` / ``feature_config`` /
``model_config.feature_groups`` that a ``config_tabular.yaml`` holds, so the core tabular reader, the
in-memory reader (:mod:`recstack.api.data`) and the nets' :class:`~recstack.easyrec.tabular_fields.TabularFields`
all build their layout from the same :class:`~recstack.easyrec.features.TabularSpec`.

=====================================  ==========================================================
``SparseFeature(name, vocab_size)``    ``IdFeature``: integer ids in ``[0, vocab_size)`` (``num_buckets``),
                                       or with ``hashed=True`` any value hashed into ``vocab_size``
                                       buckets (``hash_bucket_size``, the readers' stable CRC-32)
``DenseFeature(name)``                 ``RawFeature``: a number (``min_val`` / ``max_val`` scaling); with
                                       ``embed_dim > 0`` a field ``x * v``; with ``boundaries`` bucketised
                                       into an id
``SequenceFeature(name, vocab_size)``  a variable-length id history (DIN), sharing the table of the
                                       target feature it names in ``shared_with``
=====================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SparseFeature:
    """A categorical feature: one embedding row per id.

    Args:
        name: the feature's name and (unless ``column``) the data column it reads.
        vocab_size: rows of its embedding table.
        embed_dim: embedding width.
        hashed: hash each value's text into ``vocab_size`` buckets (strings, or ids of any size); ``False``:
            the values are integer ids in ``[0, vocab_size)``.
        default: value of a missing entry (``None``/NaN; EasyRec's ``default_val``).
        column: the data column, when it differs from ``name``.
    """

    name: str
    vocab_size: int
    embed_dim: int = 8
    hashed: bool = False
    default: str | int | None = None
    column: str | None = None

    @property
    def input_name(self) -> str:
        return self.column or self.name

    def input_field(self) -> dict[str, Any]:
        field: dict[str, Any] = {"input_name": self.input_name, "input_type": "STRING" if self.hashed else "INT64"}
        if self.default is not None:
            field["default_val"] = self.default
        return field

    def feature_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"input_names": [self.input_name], "feature_type": "IdFeature",
                                  ("hash_bucket_size" if self.hashed else "num_buckets"): self.vocab_size,
                                  "embedding_dim": self.embed_dim}
        if self.name != self.input_name:
            config["feature_name"] = self.name
        return config


@dataclass(frozen=True)
class DenseFeature:
    """A numeric feature (EasyRec's ``RawFeature``).

    Args:
        name: the feature's name and (unless ``column``) the data column it reads.
        embed_dim: ``0``: the value itself (a dense input); ``> 0``: a field ``x * v`` of this width (the FM-style
            models need every feature as a field), or the bucket's embedding width with ``boundaries``.
        min_val, max_val: scale to ``(x - min_val) / (max_val - min_val)`` when ``max_val > min_val``.
        boundaries: bucket boundaries: the bucket index becomes an id (needs ``embed_dim > 0``).
        default: value of a missing entry.
        dtype: ``"FLOAT"`` (values rounded to float32 first, as the CSV reader parses them) or ``"DOUBLE"``.
        column: the data column, when it differs from ``name``.
    """

    name: str
    embed_dim: int = 0
    min_val: float = 0.0
    max_val: float = 0.0
    boundaries: Sequence[float] = ()
    default: float | None = None
    dtype: str = "FLOAT"
    column: str | None = None

    @property
    def input_name(self) -> str:
        return self.column or self.name

    def input_field(self) -> dict[str, Any]:
        field: dict[str, Any] = {"input_name": self.input_name, "input_type": self.dtype}
        if self.default is not None:
            field["default_val"] = self.default
        return field

    def feature_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"input_names": [self.input_name], "feature_type": "RawFeature",
                                  "embedding_dim": self.embed_dim}
        if self.boundaries:
            config["boundaries"] = [float(b) for b in self.boundaries]
        if self.max_val > self.min_val:
            config["min_val"], config["max_val"] = float(self.min_val), float(self.max_val)
        if self.name != self.input_name:
            config["feature_name"] = self.name
        return config


@dataclass(frozen=True)
class SequenceFeature:
    """A variable-length history of ids (DIN's behaviours): a column of sequences (lists, arrays, or strings of
    space-separated ids), padded per batch and masked in the model.

    Args:
        name: the data column.
        vocab_size: rows of the table (the shared one's).
        embed_dim: embedding width (the shared one's).
        pooling: how the history is pooled; DIN's is ``"attention"`` (the only one it takes).
        shared_with: the name of the target :class:`SparseFeature` whose table the history looks up.
    """

    name: str
    vocab_size: int
    embed_dim: int = 8
    pooling: str = "attention"
    shared_with: str | None = None

    @property
    def input_name(self) -> str:
        return self.name


Feature = SparseFeature | DenseFeature


def unique_features(*lists: Sequence[Feature]) -> list[Feature]:
    """The features of ``lists`` in first-appearance order, each name once.

    Raises:
        ValueError: two different definitions share a name.
    """
    seen: dict[str, Feature] = {}
    for features in lists:
        for f in features:
            if not isinstance(f, (SparseFeature, DenseFeature)):
                raise TypeError(f"expected SparseFeature or DenseFeature, got {type(f).__name__} ({f!r})")
            if f.name in seen and seen[f.name] != f:
                raise ValueError(f"feature '{f.name}' is defined twice differently: {seen[f.name]} and {f}")
            seen.setdefault(f.name, f)
    return list(seen.values())


def tabular_hyper_parameters(groups: Sequence[tuple[str, Sequence[Feature], str]], label: str, model_class: str,
                             columns: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``data_config`` / ``feature_config`` / ``model_config`` of a ``config_tabular.yaml`` for these features.

    Args:
        groups: ``(group_name, features, wide_deep)`` per feature group (``wide_deep``: ``DEEP`` or ``WIDE``).
        label: the label column (0/1).
        model_class: ``model_config.model_class`` (``DeepFM``).
        columns: the data files' columns in order (files only; columns no feature reads are read as
            STRING and ignored); ``None``: the label, then each feature's column (in-memory data).
    """
    features = unique_features(*(fs for _, fs, _ in groups))
    fields: dict[str, dict[str, Any]] = {label: {"input_name": label, "input_type": "INT32"}}
    for f in features:
        field = f.input_field()
        if field["input_name"] in fields and fields[field["input_name"]] != field:
            raise ValueError(f"column '{f.input_name}' is read as {fields[f.input_name]} and as {field}")
        fields.setdefault(field["input_name"], field)
    if columns is not None:
        missing = [c for c in fields if c not in columns]
        if missing:
            raise ValueError(f"columns {missing} are read by the label or a feature but not among the files' "
                             f"columns {list(columns)}")
        fields = {c: fields.get(c, {"input_name": c, "input_type": "STRING"}) for c in columns}
    return {
        "data_config": {"input_type": "CSVInput", "separator": ",", "label_fields": [label],
                        "input_fields": list(fields.values())},
        "feature_config": {"features": [f.feature_config() for f in features]},
        "model_config": {"model_class": model_class, "feature_groups": [
            {"group_name": name, "feature_names": [f.name for f in fs], **({"wide_deep": wd} if wd != "DEEP" else {})}
            for name, fs, wd in groups]},
    }

"""EasyRec-style data and feature configuration: input fields, features, feature groups.

EasyRec users describe tabular data once and build every model's input from it
(``data_config``, ``feature_config``, ``model_config.feature_groups``). recstack
reads the same keys, written in YAML under ``hyper_parameters``::

    hyper_parameters:
      data_config:
        separator: ","
        label_fields: [is_valid_play, play_time]
        input_fields:
          - {input_name: is_valid_play, input_type: INT32}
          - {input_name: play_time, input_type: FLOAT}
          - {input_name: city, input_type: STRING, default_val: "unknown"}
          - {input_name: fans_num, input_type: INT64}
      feature_config:
        features:
          - {input_names: [city], feature_type: IdFeature, hash_bucket_size: 1000, embedding_dim: 8}
          - {input_names: [fans_num], feature_type: RawFeature, boundaries: [10, 100, 1000], embedding_dim: 8}
      model_config:
        feature_groups:
          - {group_name: all, feature_names: [city, fans_num], wide_deep: DEEP}

The reader (:mod:`recstack.data.tabular`) and the embedding layer
(:class:`recstack.layers.feature_embedding.FeatureEmbedding`) both build their
layout from one :class:`TabularSpec`, so they always agree. This module has no
torch or pyarrow dependency.

Layout of a feature group ``g`` in a batch (see :meth:`TabularSpec.block_columns`):

* ``"<g>.ids"`` int64 ``(n, k)``: one column per *id-like* feature of the group, in
  the group's order: ``IdFeature`` (hashed into ``[0, hash_bucket_size)``, or an
  integer id in ``[0, num_buckets)``) and ``RawFeature`` with ``boundaries``
  (bucket index in ``[0, len(boundaries)]``);
* ``"<g>.values"`` float32 ``(n, m)``: one column per other ``RawFeature``
  (normalised with ``min_val`` / ``max_val`` when ``max_val > min_val``).

An array is present only when its width is positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from recstack.config import Config, ConfigError, did_you_mean
from recstack.schema import Node, source

#: EasyRec's input types accepted here and what they parse as.
INPUT_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE", "STRING")
NUMERIC_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE")
INT_RANGES = {"INT32": (-2**31, 2**31 - 1), "INT64": (-2**63, 2**63 - 1)}
FEATURE_TYPES = ("IdFeature", "RawFeature")

DATA_CONFIG = "hyper_parameters.data_config"
FEATURE_CONFIG = "hyper_parameters.feature_config"
FEATURE_GROUPS = "hyper_parameters.model_config.feature_groups"

_DATA_HINTS = {
    "batch_size": "recstack takes the batch size from runner.train_batch_size / runner.infer_batch_size",
    "shuffle": "recstack shuffles with runner.shuffle",
    "num_epochs": "recstack takes the number of epochs from runner.epochs",
    "with_header": "header lines are not supported; remove the header from the files",
    "sample_weight": "sample weights are not supported yet",
}
_FEATURE_HINTS = {
    "vocab_list": "vocabulary features are not supported yet; use hash_bucket_size",
    "vocab_file": "vocabulary features are not supported yet; use hash_bucket_size",
    "raw_input_dim": "multi-dimensional raw features are not supported yet (raw_input_dim is 1)",
    "embedding_name": "shared embeddings are not supported yet",
    "normalizer_fn": "normalizer_fn (a TensorFlow expression) is not supported; use min_val / max_val or boundaries",
}


@dataclass(frozen=True)
class InputField:
    """One column of the data files (EasyRec's ``data_config.input_fields``).

    Attributes:
        name: ``input_name``.
        type: ``input_type``: INT32, INT64, FLOAT, DOUBLE or STRING.
        default: value of an empty field (``default_val``; 0, 0.0 or "" when not set).
    """

    name: str
    type: str
    default: int | float | str


@dataclass(frozen=True)
class Feature:
    """One feature built from an input field (EasyRec's ``feature_config.features``).

    Attributes:
        name: ``feature_name`` (default: the input name); what feature groups list.
        input_name: the input field it reads (``input_names[0]``).
        feature_type: ``IdFeature`` or ``RawFeature``.
        embedding_dim: embedding width of an id-like feature; for a raw feature without
            boundaries, ``> 0`` multiplies the value with a learned vector of this width
            and ``0`` keeps the value itself.
        hash_bucket_size: ``IdFeature``: hash the value's text into this many buckets (0: not hashed).
        num_buckets: ``IdFeature`` without hashing: the value is an integer id below this.
        boundaries: ``RawFeature``: bucket boundaries (sorted); the bucket index is the id.
        min_val, max_val: ``RawFeature``: ``(x - min_val) / (max_val - min_val)`` when ``max_val > min_val``.
    """

    name: str
    input_name: str
    feature_type: str
    embedding_dim: int = 0
    hash_bucket_size: int = 0
    num_buckets: int = 0
    boundaries: tuple[float, ...] = ()
    min_val: float = 0.0
    max_val: float = 0.0

    @property
    def is_id(self) -> bool:
        """Whether the feature is an id into an embedding table (IdFeature, or bucketised RawFeature)."""
        return self.feature_type == "IdFeature" or bool(self.boundaries)

    @property
    def num_embeddings(self) -> int:
        """Rows of the feature's embedding table (id-like features)."""
        if self.boundaries:
            return len(self.boundaries) + 1
        return self.hash_bucket_size or self.num_buckets

    @property
    def normalized(self) -> bool:
        return self.max_val > self.min_val

    @property
    def output_dim(self) -> int:
        """Width of the feature in its group's tensor."""
        return self.embedding_dim if (self.is_id or self.embedding_dim > 0) else 1


@dataclass(frozen=True)
class FeatureGroup:
    """A named list of features whose outputs are concatenated (``model_config.feature_groups``)."""

    name: str
    feature_names: tuple[str, ...]
    wide_deep: str = "DEEP"


@dataclass(frozen=True)
class TabularSpec:
    """Everything the tabular reader and the feature-embedding layer need.

    Attributes:
        separator: field separator of the files (one character).
        input_fields: the columns, in file order.
        label_fields: names of the label columns.
        features: the features, in ``feature_config`` order.
        groups: the feature groups.
    """

    separator: str
    input_fields: tuple[InputField, ...]
    label_fields: tuple[str, ...]
    features: tuple[Feature, ...]
    groups: tuple[FeatureGroup, ...]
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({f.name: f for f in self.features})

    # ----------------------------------------------------------------- lookups
    def input_field(self, name: str) -> InputField:
        return next(f for f in self.input_fields if f.name == name)

    def feature(self, name: str) -> Feature:
        return self._by_name[name]

    def group(self, name: str) -> FeatureGroup:
        return next(g for g in self.groups if g.name == name)

    def id_features(self, group: str) -> list[Feature]:
        """Id-like features of a group, in group order: the columns of ``<group>.ids``."""
        return [self.feature(n) for n in self.group(group).feature_names if self.feature(n).is_id]

    def value_features(self, group: str) -> list[Feature]:
        """Raw features (no boundaries) of a group, in group order: the columns of ``<group>.values``."""
        return [self.feature(n) for n in self.group(group).feature_names if not self.feature(n).is_id]

    def group_inputs(self, group: str) -> list[str]:
        """Batch keys of a group, in the order the embedding layer takes them."""
        keys = []
        if self.id_features(group):
            keys.append(f"{group}.ids")
        if self.value_features(group):
            keys.append(f"{group}.values")
        return keys

    def block_columns(self) -> dict[str, tuple[str, int]]:
        """Arrays a reader yields: name -> (numpy dtype name, width)."""
        columns: dict[str, tuple[str, int]] = {name: ("float32", 1) for name in self.label_fields}
        for g in self.groups:
            ids, values = self.id_features(g.name), self.value_features(g.name)
            if ids:
                columns[f"{g.name}.ids"] = ("int64", len(ids))
            if values:
                columns[f"{g.name}.values"] = ("float32", len(values))
        return columns

    # ----------------------------------------------------------------- parsing
    @classmethod
    def from_config(cls, config: Config) -> "TabularSpec":
        """Read ``data_config``, ``feature_config`` and ``model_config.feature_groups`` of ``hyper_parameters``.

        Raises:
            ConfigError: a missing or unknown key, a wrong type, or an inconsistency
                (a feature on an unknown input field, a group naming an unknown feature, ...),
                each naming the key, the file and what was expected.
        """
        data = Node.at(config, DATA_CONFIG, hints=_DATA_HINTS)
        input_type = data.get("input_type", "CSVInput", type=str)
        if input_type != "CSVInput":
            raise ConfigError(f"{data.where('input_type')}: only CSVInput (text files) is supported, got {input_type!r}")
        separator = data.get("separator", ",", type=str)
        separator = separator.encode().decode("unicode_escape") if "\\" in separator else separator
        if len(separator) != 1 or separator in ("\n", "\r", '"'):
            raise ConfigError(f"{data.where('separator')}: expected one character (e.g. ',', '\\t', '\\x01'), "
                              f"got {separator!r}")
        fields = [_parse_field(node) for node in data.nodes("input_fields")]
        if not fields:
            raise ConfigError(f"{data.where('input_fields')}: expected at least one input field")
        names = [f.name for f in fields]
        _no_duplicates(names, data.where("input_fields"), "input field")
        labels = tuple(data.get_list("label_fields", str, scalar_ok=True))
        for i, label in enumerate(labels):
            _known(label, names, data.where(f"label_fields[{i}]"), "input field")
            if _field(fields, label).type == "STRING":
                raise ConfigError(f"{data.where(f'label_fields[{i}]')}: label '{label}' must be a numeric field "
                                  "(INT32, INT64, FLOAT, DOUBLE), not STRING")
        _no_duplicates(list(labels), data.where("label_fields"), "label field")
        data.finish()

        feature_node = Node.at(config, FEATURE_CONFIG)
        features = [_parse_feature(node, fields, labels) for node in feature_node.nodes("features")]
        feature_node.finish()
        _no_duplicates([f.name for f in features], feature_node.where("features"), "feature name")

        group_key = FEATURE_GROUPS
        raw_groups = config.get(group_key)
        if not isinstance(raw_groups, list) or not raw_groups:
            raise ConfigError(f"{source(config, group_key)}: expected a list of feature groups, got {raw_groups!r}")
        groups = []
        feature_names = [f.name for f in features]
        for i, item in enumerate(raw_groups):
            node = Node(config, f"{group_key}[{i}]", item)
            name = node.get("group_name", type=str)
            members = node.get_list("feature_names", str, scalar_ok=True)
            if not members:
                raise ConfigError(f"{node.where('feature_names')}: a feature group needs at least one feature")
            for j, member in enumerate(members):
                _known(member, feature_names, node.where(f"feature_names[{j}]"), "feature")
            _no_duplicates(members, node.where("feature_names"), "feature")
            wide_deep = node.get("wide_deep", "DEEP", type=str)
            if wide_deep != "DEEP":
                raise ConfigError(f"{node.where('wide_deep')}: only DEEP groups are supported, got {wide_deep!r}")
            if "." in name or not name:
                raise ConfigError(f"{node.where('group_name')}: expected a name without '.', got {name!r}")
            node.finish()
            groups.append(FeatureGroup(name, tuple(members), wide_deep))
        _no_duplicates([g.name for g in groups], source(config, group_key), "group name")
        spec = cls(separator, tuple(fields), labels, tuple(features), tuple(groups))
        clash = set(spec.label_fields) & {k for k in spec.block_columns() if k not in spec.label_fields}
        if clash:
            raise ConfigError(f"{source(config, DATA_CONFIG + '.label_fields')}: label {sorted(clash)[0]!r} clashes "
                              "with a feature group's batch key")
        return spec


# --------------------------------------------------------------------- helpers
def _field(fields: Sequence[InputField], name: str) -> InputField:
    return next(f for f in fields if f.name == name)


def _known(name: str, known: Sequence[str], where: str, what: str) -> None:
    if name not in known:
        raise ConfigError(f"{where}: unknown {what} '{name}'{did_you_mean(name, known)} "
                          f"(known: {', '.join(known)})")


def _no_duplicates(names: Sequence[str], where: str, what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{where}: {what} '{name}' appears twice")
        seen.add(name)


def convert_default(value: object, input_type: str, where: str) -> int | float | str:
    """An input field's ``default_val`` as a value of its type (EasyRec writes it as a string).

    Raises:
        ConfigError: the value does not parse as ``input_type``.
    """
    if input_type == "STRING":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    text = str(value).strip() if not isinstance(value, bool) else None
    if text == "":
        return 0 if input_type in INT_RANGES else 0.0
    try:
        if input_type in INT_RANGES:
            number: int | float = int(text)  # type: ignore[arg-type]
            low, high = INT_RANGES[input_type]
            if not low <= number <= high:
                raise ValueError
        else:
            number = float(text)  # type: ignore[arg-type]
            if not math.isfinite(number):
                raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a default value of type {input_type}, got {value!r}") from None
    return number


def _parse_field(node: Node) -> InputField:
    name = node.get("input_name", type=str)
    input_type = node.get("input_type", "STRING", type=str)
    if input_type not in INPUT_TYPES:
        raise ConfigError(f"{node.where('input_type')}: unknown input type {input_type!r}"
                          f"{did_you_mean(input_type, INPUT_TYPES)} (known: {', '.join(INPUT_TYPES)})")
    default = convert_default(node.get("default_val", ""), input_type, node.where("default_val"))
    if not name:
        raise ConfigError(f"{node.where('input_name')}: expected a name")
    node.finish()
    return InputField(name, input_type, default)


def _parse_feature(node: Node, fields: Sequence[InputField], labels: Sequence[str]) -> Feature:
    inputs = node.get_list("input_names", str, scalar_ok=True)
    if len(inputs) != 1:
        raise ConfigError(f"{node.where('input_names')}: expected one input field name, got {inputs!r}")
    input_name = inputs[0]
    _known(input_name, [f.name for f in fields], node.where("input_names[0]"), "input field")
    if input_name in labels:
        raise ConfigError(f"{node.where('input_names[0]')}: '{input_name}' is a label field (data_config.label_fields); "
                          "a feature built from the label leaks it")
    field_type = _field(fields, input_name).type
    name = node.get("feature_name", input_name, type=str)
    feature_type = node.get("feature_type", "IdFeature", type=str)
    if feature_type not in FEATURE_TYPES:
        raise ConfigError(f"{node.where('feature_type')}: unsupported feature type {feature_type!r}"
                          f"{did_you_mean(feature_type, FEATURE_TYPES)} (supported: {', '.join(FEATURE_TYPES)})")
    embedding_dim = node.get("embedding_dim", 0, type=int)
    if embedding_dim < 0:
        raise ConfigError(f"{node.where('embedding_dim')}: must be >= 0, got {embedding_dim}")
    if feature_type == "IdFeature":
        hash_size = node.get("hash_bucket_size", 0, type=int)
        num_buckets = node.get("num_buckets", 0, type=int)
        if (hash_size > 0) == (num_buckets > 0):
            raise ConfigError(f"{node.where('hash_bucket_size')}: an IdFeature needs exactly one of hash_bucket_size "
                              f"(hash the text) or num_buckets (integer ids) > 0, got {hash_size} and {num_buckets}")
        if num_buckets and field_type not in INT_RANGES:
            raise ConfigError(f"{node.where('num_buckets')}: integer ids need an INT32/INT64 input field; "
                              f"'{input_name}' is {field_type} (use hash_bucket_size)")
        if hash_size and field_type not in ("STRING", *INT_RANGES):
            raise ConfigError(f"{node.where('hash_bucket_size')}: hashing needs a STRING or INT input field; "
                              f"'{input_name}' is {field_type} (use a RawFeature with boundaries)")
        if embedding_dim < 1:
            raise ConfigError(f"{node.where('embedding_dim')}: an IdFeature needs embedding_dim >= 1")
        node.finish()
        return Feature(name, input_name, feature_type, embedding_dim, hash_size, num_buckets)
    if field_type not in NUMERIC_TYPES:
        raise ConfigError(f"{node.where('input_names[0]')}: a RawFeature needs a numeric input field; "
                          f"'{input_name}' is {field_type}")
    boundaries = tuple(float(b) for b in node.get_list("boundaries", (float, int), []))
    if list(boundaries) != sorted(set(boundaries)) or not all(math.isfinite(b) for b in boundaries):
        raise ConfigError(f"{node.where('boundaries')}: expected strictly increasing finite numbers, got {list(boundaries)}")
    if boundaries and embedding_dim < 1:
        raise ConfigError(f"{node.where('embedding_dim')}: a RawFeature with boundaries is embedded; "
                          "it needs embedding_dim >= 1")
    min_val = float(node.get("min_val", 0.0, type=float))
    max_val = float(node.get("max_val", 0.0, type=float))
    node.finish()
    return Feature(name, input_name, feature_type, embedding_dim, boundaries=boundaries,
                   min_val=min_val, max_val=max_val)


def easyrec_model_config(config: Config, model_class: str) -> tuple[TabularSpec, Node, float]:
    """The common part of an EasyRec-configured model folder's ``create_model``.

    Parses ``data_config`` / ``feature_config`` / ``model_config.feature_groups`` into a
    :class:`TabularSpec`, checks ``model_config.model_class`` (default ``model_class``) and that the
    one feature group is ``all`` (EasyRec's multi-task models read that group), and reads
    ``model_config.embedding_regularization`` (>= 0).

    Returns:
        ``(spec, model_config node, embedding_regularization)``; the caller reads its own
        sub-section (``dbmtl``, ``mmoe``) from the node and calls ``finish()`` on it.
    """
    spec = TabularSpec.from_config(config)
    model = Node.at(config, "hyper_parameters.model_config")
    model.get("feature_groups")  # parsed by TabularSpec
    name = model.get("model_class", model_class, type=str)
    if name != model_class:
        raise ConfigError(f"{model.where('model_class')}: this folder is {model_class}, got {name!r}")
    groups = [g.name for g in spec.groups]
    if groups != ["all"]:
        raise ConfigError(f"{model.where('feature_groups')}: {model_class} reads one feature group named 'all' "
                          f"(EasyRec's), got {groups}")
    embedding_regularization = float(model.get("embedding_regularization", 0.0, type=float))
    if embedding_regularization < 0:
        raise ConfigError(f"{model.where('embedding_regularization')}: must be >= 0, got {embedding_regularization}")
    return spec, model, embedding_regularization

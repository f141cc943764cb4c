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

The reader (:mod:`recstack.easyrec.tabular`) and the embedding layer
(:class:`recstack.easyrec.feature_embedding.FeatureEmbedding`) both build their
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

Grouped input (``data_config.input_type: GroupRTPInput``, EasyRec's end-to-end
multimodal DBMTL; read by :mod:`recstack.easyrec.group_rtp`): one line per item group,
``ImgFeature`` (the item image) and ``SampleNumFeature`` (the group size) in feature
groups named ``img`` and ``sample_num`` that hold only that feature; see
:class:`GroupInput` and ``doc/yaml.md``. A grouped batch adds ``img`` float32
``(n, H, W, C)``, ``sample_num`` int64 ``(N,)`` (each sample's group) and
``group_size`` int64 ``(n,)`` to the per-sample arrays above.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from recstack.config import Config, ConfigError, did_you_mean
from recstack.easyrec.schema import Node, source

#: EasyRec's input types accepted here and what they parse as.
INPUT_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE", "STRING")
NUMERIC_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE")
INT_RANGES = {"INT32": (-2**31, 2**31 - 1), "INT64": (-2**63, 2**63 - 1)}
FEATURE_TYPES = ("IdFeature", "RawFeature")
#: feature types of grouped input only (``input_type: GroupRTPInput``), each alone in its fixed-name group
GROUP_FEATURE_TYPES = {"ImgFeature": "img", "SampleNumFeature": "sample_num"}
INPUT_KINDS = ("CSVInput", "GroupRTPInput")

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
    img_shape: tuple[int, int, int] = ()  # ImgFeature: (width, height, channel), EasyRec's order

    @property
    def is_group_input(self) -> bool:
        """``ImgFeature`` or ``SampleNumFeature``: read by the grouped reader, not embedded."""
        return self.feature_type in GROUP_FEATURE_TYPES

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
class GroupInput:
    """``data_config`` of ``input_type: GroupRTPInput`` (one line per group of samples of one item).

    Attributes:
        rtp_separator: column separator of a line (``rtp_separator``, default ``;``).
        group_sample_separator: separates the samples' values inside a per-sample column (default ``,``).
        selected_cols: 0-based column indices: the labels (``label_fields`` order), the feature
            column, the image column, the group-size column.
        img_field: the image path field (second-last input field).
        size_field: the group-size field (last input field).
        max_group_size: a line with more samples is an error (0: no limit).
        image_root: folder relative image paths resolve against (``None``: the data file's folder).
    """

    rtp_separator: str
    group_sample_separator: str
    selected_cols: tuple[int, ...]
    img_field: str
    size_field: str
    max_group_size: int = 0
    image_root: str | None = None


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
    group_input: GroupInput | None = None
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
        return [self.feature(n) for n in self.group(group).feature_names
                if not self.feature(n).is_id and not self.feature(n).is_group_input]

    # ----------------------------------------------------------------- grouped input
    def _group_feature(self, feature_type: str) -> Feature | None:
        name = GROUP_FEATURE_TYPES[feature_type]
        if not any(g.name == name for g in self.groups):
            return None
        return self.feature(self.group(name).feature_names[0])

    @property
    def img_feature(self) -> Feature | None:
        """The ``ImgFeature`` of group ``img`` (``None`` without that group)."""
        return self._group_feature("ImgFeature")

    @property
    def has_img(self) -> bool:
        """Whether the batches hold ``img`` (a feature group ``img`` exists)."""
        return self.img_feature is not None

    @property
    def has_sample_num(self) -> bool:
        """Whether a feature group ``sample_num`` exists (the batches of grouped input always hold ``sample_num``)."""
        return self._group_feature("SampleNumFeature") is not None

    @property
    def img_shape(self) -> tuple[int, int, int] | None:
        """``(height, width, channel)`` of the ``img`` batch tensor ``(n, H, W, C)`` (``None`` without ``img``)."""
        feature = self.img_feature
        if feature is None:
            return None
        width, height, channel = feature.img_shape
        return height, width, channel

    @property
    def sample_groups(self) -> list[str]:
        """Feature groups of per-sample features (all but ``img`` and ``sample_num``)."""
        return [g.name for g in self.groups if g.name not in GROUP_FEATURE_TYPES.values()]

    def sample_spec(self) -> TabularSpec:
        """The per-sample part of a grouped spec as a plain spec (what :class:`recstack.easyrec.tabular.TabularReader`
        parses): the labels (``label_fields`` order) then the per-sample input fields, separated by ``separator``;
        the features and groups other than ``img`` / ``sample_num``."""
        grouped = self.group_input
        if grouped is None:
            return self
        labels = [self.input_field(name) for name in self.label_fields]
        rest = [f for f in self.input_fields if f.name not in self.label_fields
                and f.name not in (grouped.img_field, grouped.size_field)]
        return TabularSpec(self.separator, tuple(labels + rest), self.label_fields,
                           tuple(f for f in self.features if not f.is_group_input),
                           tuple(g for g in self.groups if g.name in self.sample_groups))

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
        if self.group_input is not None:  # grouped input: per-sample group index, per-group size and image
            columns["sample_num"] = ("int64", 1)
            columns["group_size"] = ("int64", 1)
            if self.img_shape is not None:
                columns["img"] = ("float32", math.prod(self.img_shape))
        return columns

    # ----------------------------------------------------------------- parsing
    @classmethod
    def from_config(cls, config: Config) -> TabularSpec:
        """Read ``data_config``, ``feature_config`` and ``model_config.feature_groups`` of ``hyper_parameters``.

        Raises:
            ConfigError: a missing or unknown key, a wrong type, or an inconsistency
                (a feature on an unknown input field, a group naming an unknown feature, ...),
                each naming the key, the file and what was expected.
        """
        data = Node.at(config, DATA_CONFIG, hints=_DATA_HINTS)
        input_type = data.get("input_type", "CSVInput", type=str)
        if input_type not in INPUT_KINDS:
            raise ConfigError(f"{data.where('input_type')}: supported input types are CSVInput (text files, one "
                              f"sample a line) and GroupRTPInput (one group a line), got {input_type!r}")
        separator = _separator(data, "separator", ",")
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
        group_input = _parse_group_input(data, fields, labels, separator) if input_type == "GroupRTPInput" else None
        data.finish()

        feature_node = Node.at(config, FEATURE_CONFIG)
        features = [_parse_feature(node, fields, labels, group_input) for node in feature_node.nodes("features")]
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
            if wide_deep not in ("DEEP", "WIDE"):  # WIDE: Wide&Deep's wide part (recstack.rank_inputs)
                raise ConfigError(f"{node.where('wide_deep')}: expected DEEP or WIDE, got {wide_deep!r}")
            if "." in name or not name:
                raise ConfigError(f"{node.where('group_name')}: expected a name without '.', got {name!r}")
            for j, member in enumerate(members):  # ImgFeature / SampleNumFeature: alone in their fixed-name group
                kind = next(f.feature_type for f in features if f.name == member)
                fixed = GROUP_FEATURE_TYPES.get(kind)
                if fixed is not None and (name != fixed or len(members) != 1):
                    raise ConfigError(f"{node.where(f'feature_names[{j}]')}: {'an' if kind[0] in 'AEIOU' else 'a'} "
                                      f"{kind} goes alone in the feature "
                                      f"group named '{fixed}', got it in group {name!r} with {members}")
                if fixed is None and name in GROUP_FEATURE_TYPES.values():
                    wanted = next(k for k, v in GROUP_FEATURE_TYPES.items() if v == name)
                    raise ConfigError(f"{node.where(f'feature_names[{j}]')}: group '{name}' holds only the "
                                      f"{wanted}; '{member}' is a {kind} (put it in group 'all')")
            node.finish()
            groups.append(FeatureGroup(name, tuple(members), wide_deep))
        _no_duplicates([g.name for g in groups], source(config, group_key), "group name")
        spec = cls(separator, tuple(fields), labels, tuple(features), tuple(groups), group_input)
        clash = set(spec.label_fields) & {k for k in spec.block_columns() if k not in spec.label_fields}
        if clash:
            raise ConfigError(f"{source(config, DATA_CONFIG + '.label_fields')}: label {sorted(clash)[0]!r} clashes "
                              "with a feature group's batch key")
        return spec


# --------------------------------------------------------------------- helpers
def _separator(node: Node, key: str, default: str) -> str:
    """A one-character separator key; ``\\x01``-style escapes are decoded."""
    value = node.get(key, default, type=str)
    value = value.encode().decode("unicode_escape") if "\\" in value else value
    if len(value) != 1 or value in ("\n", "\r", '"'):
        raise ConfigError(f"{node.where(key)}: expected one character (e.g. ',', '\\t', '\\x01'), got {value!r}")
    return value


def _parse_group_input(data: Node, fields: Sequence[InputField], labels: Sequence[str], separator: str) -> GroupInput:
    """The GroupRTPInput keys of ``data_config`` (see :class:`GroupInput`)."""
    rtp = _separator(data, "rtp_separator", ";")
    sample = _separator(data, "group_sample_separator", ",")
    seps = {"rtp_separator": rtp, "group_sample_separator": sample, "separator": separator}
    for a, b in (("rtp_separator", "group_sample_separator"), ("rtp_separator", "separator"),
                 ("group_sample_separator", "separator")):
        if seps[a] == seps[b]:
            raise ConfigError(f"{data.where(b)}: GroupRTPInput needs different column ({rtp!r}), sample and feature "
                              f"separators; {a} and {b} are both {seps[a]!r} (EasyRec's sample config uses "
                              "rtp_separator ';', group_sample_separator '\\x01', separator '\\x02')")
    if len(fields) < len(labels) + 3:
        raise ConfigError(f"{data.where('input_fields')}: GroupRTPInput needs the labels, at least one feature field, "
                          f"then the image path field and the group size field; got {[f.name for f in fields]}")
    img_field, size_field = fields[-2], fields[-1]
    if img_field.name in labels or size_field.name in labels:
        raise ConfigError(f"{data.where('input_fields')}: the last two input fields of GroupRTPInput are the image "
                          f"path and the group size, not labels; got {img_field.name!r}, {size_field.name!r}")
    if img_field.type != "STRING":
        raise ConfigError(f"{data.where('input_fields')}: the image path field '{img_field.name}' (second-last input "
                          f"field) must be STRING, got {img_field.type}")
    if size_field.type not in INT_RANGES:
        raise ConfigError(f"{data.where('input_fields')}: the group size field '{size_field.name}' (last input field) "
                          f"must be INT32 or INT64, got {size_field.type}")
    raw = data.get("selected_cols", type=(str, list))
    want = len(labels) + 3
    try:
        if isinstance(raw, list) and not all(type(c) is int for c in raw):
            raise ValueError
        cols = [int(c) for c in (raw.split(",") if isinstance(raw, str) else raw)]
    except (TypeError, ValueError):
        raise ConfigError(f"{data.where('selected_cols')}: expected 0-based column indices (a list or "
                          f"'0,1,2'), got {raw!r}") from None
    if len(cols) != want or min(cols) < 0 or len(set(cols)) != len(cols):
        raise ConfigError(f"{data.where('selected_cols')}: expected {want} distinct indices >= 0 (the {len(labels)} "
                          f"label column(s) {list(labels)}, the feature column, the image column, the group size "
                          f"column), got {raw!r}")
    max_group_size = data.get("max_group_size", 0, type=int)
    if max_group_size < 0:
        raise ConfigError(f"{data.where('max_group_size')}: must be >= 0 (0: no limit), got {max_group_size}")
    image_root = data.get("image_root", None, type=(str, type(None)))
    if image_root is not None and data.config is not None and getattr(data.config, "config_dir", None) is not None:
        image_root = os.path.join(str(data.config.config_dir), os.path.expanduser(image_root))
    return GroupInput(rtp, sample, tuple(cols), img_field.name, size_field.name, max_group_size, image_root)


def _parse_img_feature(node: Node, name: str, input_name: str, group_input: GroupInput | None,
                       feature_type: str) -> Feature:
    """``ImgFeature`` (``img_shape {width, height, channel}``) or ``SampleNumFeature`` of grouped input."""
    if group_input is None:
        raise ConfigError(f"{node.where('feature_type')}: a {feature_type} needs data_config.input_type "
                          "GroupRTPInput (one line per group of samples)")
    field_name = group_input.img_field if feature_type == "ImgFeature" else group_input.size_field
    if input_name != field_name:
        what = "image path" if feature_type == "ImgFeature" else "group size"
        raise ConfigError(f"{node.where('input_names[0]')}: a {feature_type} reads the {what} field '{field_name}' "
                          f"(GroupRTPInput's {'second-' if feature_type == 'ImgFeature' else ''}last input field), "
                          f"got '{input_name}'")
    shape: tuple[int, int, int] = ()
    if feature_type == "ImgFeature":
        dims = node.node("img_shape", {})
        shape = tuple(dims.get(k, d, type=int) for k, d in (("width", 224), ("height", 224), ("channel", 3)))
        dims.finish()
        if min(shape) < 1:
            raise ConfigError(f"{node.where('img_shape')}: width, height and channel must be >= 1, got {shape}")
        if shape[2] != 3:
            raise ConfigError(f"{node.where('img_shape.channel')}: images decode to 3 channels (BGR), got {shape[2]}")
    node.finish()
    return Feature(name, input_name, feature_type, img_shape=shape)


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


def _parse_feature(node: Node, fields: Sequence[InputField], labels: Sequence[str],
                   group_input: GroupInput | None = None) -> Feature:
    inputs = node.get_list("input_names", str, scalar_ok=True)
    if len(inputs) != 1:
        raise ConfigError(f"{node.where('input_names')}: expected one input field name, got {inputs!r}")
    input_name = inputs[0]
    _known(input_name, [f.name for f in fields], node.where("input_names[0]"), "input field")
    if input_name in labels:
        raise ConfigError(f"{node.where('input_names[0]')}: '{input_name}' is a label field "
                          "(data_config.label_fields); a feature built from the label leaks it")
    field_type = _field(fields, input_name).type
    name = node.get("feature_name", input_name, type=str)
    feature_type = node.get("feature_type", "IdFeature", type=str)
    if feature_type in GROUP_FEATURE_TYPES:
        return _parse_img_feature(node, name, input_name, group_input, feature_type)
    if feature_type not in FEATURE_TYPES:
        known = (*FEATURE_TYPES, *GROUP_FEATURE_TYPES)
        raise ConfigError(f"{node.where('feature_type')}: unsupported feature type {feature_type!r}"
                          f"{did_you_mean(feature_type, known)} (supported: {', '.join(known)})")
    if group_input is not None and input_name in (group_input.img_field, group_input.size_field):
        raise ConfigError(f"{node.where('input_names[0]')}: '{input_name}' is GroupRTPInput's "
                          f"{'image path' if input_name == group_input.img_field else 'group size'} field; only an "
                          f"{'ImgFeature' if input_name == group_input.img_field else 'SampleNumFeature'} reads it")
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
        raise ConfigError(f"{node.where('boundaries')}: expected strictly increasing finite numbers, "
                          f"got {list(boundaries)}")
    if boundaries and embedding_dim < 1:
        raise ConfigError(f"{node.where('embedding_dim')}: a RawFeature with boundaries is embedded; "
                          "it needs embedding_dim >= 1")
    min_val = float(node.get("min_val", 0.0, type=float))
    max_val = float(node.get("max_val", 0.0, type=float))
    node.finish()
    return Feature(name, input_name, feature_type, embedding_dim, boundaries=boundaries,
                   min_val=min_val, max_val=max_val)


def easyrec_model_config(config: Config, model_class: str,
                         optional_groups: Sequence[str] = ()) -> tuple[TabularSpec, Node, float]:
    """The common part of an EasyRec-configured model folder's ``create_model``.

    Parses ``data_config`` / ``feature_config`` / ``model_config.feature_groups`` into a
    :class:`TabularSpec`, checks ``model_config.model_class`` (default ``model_class``) and that the
    one feature group is ``all`` (EasyRec's multi-task models read that group; ``optional_groups``, e.g.
    ``("img", "sample_num")`` for E2E_MM_DBMTL, may also appear), and reads
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
    wide = [g.name for g in spec.groups if g.wide_deep == "WIDE"]
    if wide:
        raise ConfigError(f"{model.where('feature_groups')}: group '{wide[0]}' is wide_deep: WIDE; {model_class} reads "
                          "DEEP groups only")
    if "all" not in groups or any(g != "all" and g not in optional_groups for g in groups):
        extra = f" and optionally {list(optional_groups)}" if optional_groups else ""
        raise ConfigError(f"{model.where('feature_groups')}: {model_class} reads one feature group named 'all' "
                          f"(EasyRec's){extra}, got {groups}")
    embedding_regularization = float(model.get("embedding_regularization", 0.0, type=float))
    if embedding_regularization < 0:
        raise ConfigError(f"{model.where('embedding_regularization')}: must be >= 0, got {embedding_regularization}")
    return spec, model, embedding_regularization

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

* per ``TagFeature`` / ``SequenceFeature`` ``f`` of the group, in group order, keys of its own
  (:meth:`TabularSpec.ragged_keys`): ``"<g>.<f>.ids"`` int64 (``"<g>.<f>.values"`` float32 for a
  sequence of numbers) and, for a weighted tag, ``"<g>.<f>.weights"`` float32, all of variable length
  (:class:`recstack.data.base.RaggedArray`; a batch pads them with 0 to ``(B, L)``, ``L`` its longest
  row), and ``"<g>.<f>.lengths"`` int64 ``(n, 1)``, each row's number of values.

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

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from recstack.config import Config, ConfigError, did_you_mean
from recstack.easyrec.schema import Node, source

logger = logging.getLogger(__name__)

#: EasyRec's input types accepted here and what they parse as.
INPUT_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE", "STRING")
NUMERIC_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE")
INT_RANGES = {"INT32": (-2**31, 2**31 - 1), "INT64": (-2**63, 2**63 - 1)}
FEATURE_TYPES = ("IdFeature", "RawFeature", "TagFeature", "SequenceFeature")
#: feature types read as variable-length rows (:class:`recstack.data.base.RaggedArray` batch columns)
RAGGED_FEATURE_TYPES = ("TagFeature", "SequenceFeature")
#: how a TagFeature pools its embeddings (EasyRec's ``combiner``, TensorFlow's embedding_column combiners)
COMBINERS = ("sum", "mean", "sqrtn")
#: feature types of grouped input only (``input_type: GroupRTPInput``), each alone in its fixed-name group
GROUP_FEATURE_TYPES = {"ImgFeature": "img", "SampleNumFeature": "sample_num"}
INPUT_KINDS = ("CSVInput", "ParquetInput", "GroupRTPInput")

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
    "raw_input_dim": "multi-dimensional raw features are not supported yet (raw_input_dim is 1)",
    "normalizer_fn": "normalizer_fn (a TensorFlow expression) is not supported; use min_val / max_val or boundaries",
    "sequence_combiner": "sequence_combiner (attention / text_cnn pooling inside the feature) is not supported; read "
                         "sequence features with an input_layer's output_seq_and_normal_feature, or use a TagFeature",
    "seq_multi_sep": "seq_multi_sep (several values per sequence step) is not supported",
    "shared_names": "shared_names is not supported; write one feature per input field",
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
        feature_type: ``IdFeature``, ``RawFeature``, ``TagFeature`` or ``SequenceFeature`` (or a grouped-input type).
        embedding_dim: embedding width of an id-like feature; for a raw feature (or raw sequence) without
            boundaries, ``> 0`` multiplies the value with a learned vector of this width
            and ``0`` keeps the value itself.
        hash_bucket_size: hash the value's text into this many buckets (0: not hashed).
        num_buckets: without hashing: the value is an integer id below this.
        boundaries: ``RawFeature`` (and raw sequences): bucket boundaries (sorted); the bucket index is the id.
        min_val, max_val: raw values: ``(x - min_val) / (max_val - min_val)`` when ``max_val > min_val``.
        vocab: the vocabulary (``vocab_list``, ``vocab_file`` or one fitted by ``tools/build_vocab.py``): the value's
            index in it is its id. A value not in it gets id 0 with ``num_oov_buckets`` 0 (``vocab_list``'s default,
            EasyRec's ``default_value=0``: it shares the first entry's row), else an out-of-vocabulary id after the
            entries (:func:`recstack.easyrec.tabular.value_ids`).
        num_oov_buckets: out-of-vocabulary ids ``[len(vocab), len(vocab) + num_oov_buckets)``; with more than one, an
            unknown value's CRC-32 (as ``hash_bucket_size``) picks its bucket. Default 1 for ``vocab_file`` and
            fitted vocabularies (at least 1 there), 0 for ``vocab_list``.
        vocab_file: the vocabulary's file (resolved path; ``""`` for a ``vocab_list``).
        vocab_fit: a vocabulary fitted from the training data (``vocab: {min_count, max_size}``):
            ``(min_count, max_size)``; its file is ``<runner.model_save_path>/vocab/<feature name>.txt``
            (:mod:`recstack.easyrec.vocab`). ``None``: not fitted.
        vocab_key: the feature's config key (``hyper_parameters.feature_config.features[2]``), for exports that pin
            the vocabulary file.
        separator: ``TagFeature`` / ``SequenceFeature``: separates the values inside a cell (default ``|``).
        kv_separator: ``TagFeature``: each value is ``key<kv_separator>weight`` (a weighted tag); ``""``: unweighted.
        combiner: ``TagFeature``: how the values' embeddings pool: ``sum`` (EasyRec's default), ``mean``, ``sqrtn``.
        sequence_length: ``SequenceFeature``: values kept per cell, the first ones (the most recent: EasyRec's
            sequences are written newest first); 0 keeps all.
        sub_feature_type: ``SequenceFeature``: ``IdFeature`` (ids) or ``RawFeature`` (numbers) per value.
        embedding_name: features with the same ``embedding_name`` share one embedding table (EasyRec's); ``""``:
            the feature's own table.
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
    vocab: tuple[str, ...] = ()
    separator: str = ""
    kv_separator: str = ""
    combiner: str = "sum"
    sequence_length: int = 0
    sub_feature_type: str = ""
    embedding_name: str = ""
    num_oov_buckets: int = 0
    vocab_file: str = ""
    vocab_fit: tuple[int, int] | None = None
    vocab_key: str = field(default="", compare=False)
    #: build_vocab's counter of the values (:func:`recstack.easyrec.vocab.counting`); ``None`` outside it
    vocab_counter: object = field(default=None, compare=False, repr=False)

    @property
    def is_group_input(self) -> bool:
        """``ImgFeature`` or ``SampleNumFeature``: read by the grouped reader, not embedded."""
        return self.feature_type in GROUP_FEATURE_TYPES

    @property
    def is_tag(self) -> bool:
        return self.feature_type == "TagFeature"

    @property
    def is_sequence(self) -> bool:
        return self.feature_type == "SequenceFeature"

    @property
    def is_ragged(self) -> bool:
        """A variable number of values per sample (``TagFeature``, ``SequenceFeature``): its own batch keys."""
        return self.feature_type in RAGGED_FEATURE_TYPES

    @property
    def is_weighted(self) -> bool:
        """A ``TagFeature`` of ``key:weight`` values (``kv_separator`` set)."""
        return bool(self.kv_separator)

    @property
    def is_id(self) -> bool:
        """Whether the feature is a column of its group's ``<group>.ids`` (IdFeature, or bucketised RawFeature)."""
        return not self.is_ragged and (self.feature_type == "IdFeature" or bool(self.boundaries))

    @property
    def has_ids(self) -> bool:
        """Whether the feature's values are ids (one column of ``<group>.ids``, or a ragged id column)."""
        if self.is_ragged:
            return self.is_tag or self.sub_feature_type == "IdFeature" or bool(self.boundaries)
        return self.is_id

    @property
    def table(self) -> str:
        """Key of the embedding table the feature's ids index: shared by the features with the same
        ``embedding_name``, else the feature's own."""
        return f"embedding_name:{self.embedding_name}" if self.embedding_name else f"feature:{self.name}"

    @property
    def num_embeddings(self) -> int:
        """Rows of the feature's embedding table (id-like features)."""
        if self.boundaries:
            return len(self.boundaries) + 1
        if self.vocab or self.vocab_file:
            return len(self.vocab) + self.num_oov_buckets
        return self.hash_bucket_size or self.num_buckets

    @property
    def normalized(self) -> bool:
        return self.max_val > self.min_val

    @property
    def output_dim(self) -> int:
        """Width of the feature in its group's tensor (of each step, for a sequence)."""
        return self.embedding_dim if (self.has_ids or self.embedding_dim > 0) else 1


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
    #: ``data_config.input_type``: ``CSVInput`` (delimited text) or ``ParquetInput`` (Parquet files, the same
    #: columns by name); a grouped spec's is ``GroupRTPInput``
    input_type: str = "CSVInput"
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
                if not self.feature(n).is_id and not self.feature(n).is_group_input and not self.feature(n).is_ragged]

    def ragged_features(self, group: str) -> list[Feature]:
        """Tag and sequence features of a group, in group order: each has its own batch keys (:meth:`ragged_keys`)."""
        return [self.feature(n) for n in self.group(group).feature_names if self.feature(n).is_ragged]

    def sequence_features(self, group: str) -> list[Feature]:
        """Sequence features of a group, in group order."""
        return [f for f in self.ragged_features(group) if f.is_sequence]

    @staticmethod
    def ragged_keys(group: str, feature: Feature) -> dict[str, str]:
        """Batch keys of a tag or sequence feature in a group, by role, in batch order.

        ``"ids"`` (``<g>.<f>.ids``, int64, ragged) or ``"values"`` (``<g>.<f>.values``, float32, ragged: a raw
        sequence), ``"weights"`` (``<g>.<f>.weights``, float32, ragged: a weighted tag) and ``"lengths"``
        (``<g>.<f>.lengths``, int64 ``(n, 1)``: each row's number of values). Ragged columns are padded with 0
        per batch to the batch's longest row: ``(B, L)``; the lengths tell the values from the padding.
        """
        prefix = f"{group}.{feature.name}"
        keys = {"ids": f"{prefix}.ids"} if feature.has_ids else {"values": f"{prefix}.values"}
        if feature.is_weighted:
            keys["weights"] = f"{prefix}.weights"
        keys["lengths"] = f"{prefix}.lengths"
        return keys

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
        for feature in self.ragged_features(group):
            keys.extend(self.ragged_keys(group, feature).values())
        return keys

    def block_columns(self) -> dict[str, tuple[str, int]]:
        """Arrays a reader yields: name -> (numpy dtype name, width; 0 for a variable-length
        :class:`~recstack.data.base.RaggedArray` column)."""
        columns: dict[str, tuple[str, int]] = {name: ("float32", 1) for name in self.label_fields}
        for g in self.groups:
            ids, values = self.id_features(g.name), self.value_features(g.name)
            if ids:
                columns[f"{g.name}.ids"] = ("int64", len(ids))
            if values:
                columns[f"{g.name}.values"] = ("float32", len(values))
            for feature in self.ragged_features(g.name):
                for role, key in self.ragged_keys(g.name, feature).items():
                    columns[key] = ("int64", 1) if role == "lengths" else ("int64" if role == "ids" else "float32", 0)
        if self.group_input is not None:  # grouped input: per-sample group index, per-group size and image
            columns["sample_num"] = ("int64", 1)
            columns["group_size"] = ("int64", 1)
            if self.img_shape is not None:
                columns["img"] = ("float32", math.prod(self.img_shape))
        return columns

    # ----------------------------------------------------------------- parsing
    @classmethod
    def from_config(cls, config: Config, at: str | None = None) -> TabularSpec:
        """Read ``data_config``, ``feature_config`` and ``model_config.feature_groups`` of ``hyper_parameters``;
        with ``at`` (a mapping's key, e.g. ``hyper_parameters.item_config``: a second table, the retrieval
        stage's item corpus) its ``data_config``, ``feature_config`` and ``feature_groups``.

        Raises:
            ConfigError: a missing or unknown key, a wrong type, or an inconsistency
                (a feature on an unknown input field, a group naming an unknown feature, ...),
                each naming the key, the file and what was expected.
        """
        data_key, feature_key, group_key = (DATA_CONFIG, FEATURE_CONFIG, FEATURE_GROUPS) if at is None else \
            (f"{at}.data_config", f"{at}.feature_config", f"{at}.feature_groups")
        data = Node.at(config, data_key, hints=_DATA_HINTS)
        input_type = data.get("input_type", "CSVInput", type=str)
        if input_type not in INPUT_KINDS:
            hint = " (LibSVMInput is read by the core reader libsvm, configured by hyper_parameters.num_field, " \
                "feature_number; it has no feature_config)" if input_type == "LibSVMInput" else ""
            raise ConfigError(f"{data.where('input_type')}: supported input types are CSVInput (text files, one "
                              f"sample a line), ParquetInput (Parquet files, columns by name) and GroupRTPInput (one "
                              f"group a line), got {input_type!r}{hint}")
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

        feature_node = Node.at(config, feature_key)
        features = [_parse_feature(node, fields, labels, group_input, separator)
                    for node in feature_node.nodes("features", hints=_FEATURE_HINTS)]
        feature_node.finish()
        _no_duplicates([f.name for f in features], feature_node.where("features"), "feature name")
        _check_shared_tables(features, feature_node)

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
            sequences = [f for f in features if f.name in members and f.is_sequence]
            if len({f.sequence_length for f in sequences}) > 1:
                raise ConfigError(f"{node.where('feature_names')}: the sequence features of group {name!r} are read "
                                  "side by side (one step per behaviour) and need the same sequence_length; got "
                                  + ", ".join(f"{f.name}: {f.sequence_length}" for f in sequences))
            node.finish()
            groups.append(FeatureGroup(name, tuple(members), wide_deep))
        _no_duplicates([g.name for g in groups], source(config, group_key), "group name")
        spec = cls(separator, tuple(fields), labels, tuple(features), tuple(groups), group_input, input_type)
        clash = set(spec.label_fields) & {k for k in spec.block_columns() if k not in spec.label_fields}
        if clash:
            raise ConfigError(f"{source(config, data_key + '.label_fields')}: label {sorted(clash)[0]!r} clashes "
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
                   group_input: GroupInput | None = None, data_separator: str = ",") -> Feature:
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
    if feature_type in RAGGED_FEATURE_TYPES:
        if group_input is not None:
            raise ConfigError(f"{node.where('feature_type')}: a {feature_type} is not supported with "
                              "data_config.input_type GroupRTPInput")
        return _parse_ragged_feature(node, name, input_name, field_type, feature_type, embedding_dim, data_separator)
    if feature_type == "IdFeature":
        ids = _id_mapping(node, "an IdFeature", input_name, field_type, name=name)
        if embedding_dim < 1:
            raise ConfigError(f"{node.where('embedding_dim')}: an IdFeature needs embedding_dim >= 1")
        embedding_name = node.get("embedding_name", "", type=str)
        node.finish()
        return Feature(name, input_name, feature_type, embedding_dim, **ids, embedding_name=embedding_name)
    if field_type not in NUMERIC_TYPES:
        raise ConfigError(f"{node.where('input_names[0]')}: a RawFeature needs a numeric input field; "
                          f"'{input_name}' is {field_type}")
    boundaries, min_val, max_val = _raw_params(node, embedding_dim, "a RawFeature")
    embedding_name = node.get("embedding_name", "", type=str) if boundaries else ""
    node.finish()
    return Feature(name, input_name, feature_type, embedding_dim, boundaries=boundaries,
                   min_val=min_val, max_val=max_val, embedding_name=embedding_name)


def _raw_params(node: Node, embedding_dim: int, what: str) -> tuple[tuple[float, ...], float, float]:
    """``boundaries``, ``min_val``, ``max_val`` of a raw feature or raw sequence."""
    boundaries = tuple(float(b) for b in node.get_list("boundaries", (float, int), []))
    if list(boundaries) != sorted(set(boundaries)) or not all(math.isfinite(b) for b in boundaries):
        raise ConfigError(f"{node.where('boundaries')}: expected strictly increasing finite numbers, "
                          f"got {list(boundaries)}")
    if boundaries and embedding_dim < 1:
        raise ConfigError(f"{node.where('embedding_dim')}: {what} with boundaries is embedded; "
                          "it needs embedding_dim >= 1")
    min_val = float(node.get("min_val", 0.0, type=float))
    max_val = float(node.get("max_val", 0.0, type=float))
    return boundaries, min_val, max_val


def _id_mapping(node: Node, what: str, input_name: str, field_type: str,
                forbidden: str | None = None, name: str = "") -> dict:
    """The ids of an id feature, as :class:`Feature` keyword arguments: exactly one of ``hash_bucket_size``,
    ``num_buckets``, ``vocab_list``, ``vocab_file`` or ``vocab`` (a vocabulary fitted by ``tools/build_vocab.py``,
    ``{min_count, max_size}``), and ``num_oov_buckets`` with a vocabulary.

    ``forbidden``: for a tag / sequence (several values per STRING cell), the separators, which a vocabulary
    entry cannot hold; ``None`` for an ``IdFeature`` (one value, whose input field type is checked here).
    ``name``: the feature's name (a fitted vocabulary's file name).
    """
    from recstack.easyrec import vocab as vocabularies

    hash_size = node.get("hash_bucket_size", 0, type=int)
    num_buckets = node.get("num_buckets", 0, type=int)
    raw_vocab = node.get_list("vocab_list", (str, int), [])
    vocab = tuple(str(v) for v in raw_vocab)
    vocab_file = node.get("vocab_file", "", type=str)
    if "vocab_file" in node and not vocab_file.strip():
        raise ConfigError(f"{node.where('vocab_file')}: expected the path of a vocabulary file (one value a line)")
    fit = vocabularies.parse_fit(node) if "vocab" in node else None
    if hash_size < 0 or num_buckets < 0:
        key = "hash_bucket_size" if hash_size < 0 else "num_buckets"
        raise ConfigError(f"{node.where(key)}: must be >= 0, got {hash_size if hash_size < 0 else num_buckets}")
    chosen = [hash_size > 0, num_buckets > 0, bool(vocab), bool(vocab_file), fit is not None]
    if chosen.count(True) != 1:
        raise ConfigError(f"{node.where('hash_bucket_size')}: {what} needs exactly one of hash_bucket_size (hash the "
                          f"text), vocab_list (a list of values), vocab_file (a file of values, one a line), vocab "
                          f"(a vocabulary fitted from the training data by tools/build_vocab.py, e.g. "
                          f"{{min_count: 2}}) or num_buckets (integer ids) > 0, got {hash_size}, {list(vocab)}, "
                          f"{vocab_file!r}, {node.value.get('vocab')!r} and {num_buckets}")
    from_file = bool(vocab_file) or fit is not None
    num_oov = node.get("num_oov_buckets", 1 if from_file else 0, type=int)
    if "num_oov_buckets" in node and (hash_size or num_buckets):
        raise ConfigError(f"{node.where('num_oov_buckets')}: out-of-vocabulary buckets go with a vocabulary "
                          "(vocab_list, vocab_file or vocab); hashed and integer ids have none")
    if num_oov < (1 if from_file else 0):
        raise ConfigError(f"{node.where('num_oov_buckets')}: must be >= {1 if from_file else 0}"
                          f"{' (a value the vocabulary file does not hold needs a bucket)' if from_file else ''}, "
                          f"got {num_oov}")
    if vocab:
        _no_duplicates(list(vocab), node.where("vocab_list"), "vocabulary entry")
        bad = [v for v in vocab if not v or any(c in v for c in forbidden or "")]
        if bad:
            raise ConfigError(f"{node.where('vocab_list')}: entry {bad[0]!r} can never match a value (empty, or "
                              f"holds a separator {forbidden!r})")
    single = forbidden is None
    if num_buckets and single and field_type not in INT_RANGES:
        raise ConfigError(f"{node.where('num_buckets')}: integer ids need an INT32/INT64 input field; "
                          f"'{input_name}' is {field_type} (use hash_bucket_size)")
    if not num_buckets and single and field_type not in ("STRING", *INT_RANGES):
        key = next(k for k, on in zip(("hash_bucket_size", "", "vocab_list", "vocab_file", "vocab"), chosen) if on)
        raise ConfigError(f"{node.where(key)}: {'hashing' if hash_size else 'a vocabulary'} needs a STRING or INT "
                          f"input field; '{input_name}' is {field_type} (use a RawFeature with boundaries)")
    out = dict(hash_bucket_size=hash_size, num_buckets=num_buckets, vocab=vocab, num_oov_buckets=num_oov,
               vocab_key=node.key)
    if vocab_file:
        path = vocabularies.resolve_vocab_file(node.config, vocab_file)
        out.update(vocab=vocabularies.read_vocab_file(path, node.where("vocab_file"), forbidden), vocab_file=str(path))
    elif fit is not None:
        path = vocabularies.fitted_path(node.config, name)
        counter = vocabularies.active_counter(name, node.key, fit, num_oov)
        out.update(vocab_file=str(path), vocab_fit=fit)
        if counter is not None:  # tools/build_vocab.py: counting the values, the file is what it writes
            out.update(vocab_counter=counter)
        else:
            out.update(vocab=vocabularies.read_fitted(path, node, name, forbidden))
    return out


def _value_separator(node: Node, key: str, default: str, data_separator: str) -> str:
    """A separator inside a cell: one character, not the column separator."""
    value = _separator(node, key, default)
    if value == data_separator:
        raise ConfigError(f"{node.where(key)}: {value!r} is also data_config.separator (between the columns); "
                          "the values inside a cell need another one")
    return value


def _parse_ragged_feature(node: Node, name: str, input_name: str, field_type: str, feature_type: str,
                          embedding_dim: int, data_separator: str) -> Feature:
    """``TagFeature`` or ``SequenceFeature``: several values per cell (see :class:`Feature`)."""
    if field_type != "STRING":
        raise ConfigError(f"{node.where('input_names[0]')}: a {feature_type} reads a STRING input field (several "
                          f"values per cell, e.g. 'v1|v2|v3'); '{input_name}' is {field_type}")
    separator = _value_separator(node, "separator", "|", data_separator)
    embedding_name = node.get("embedding_name", "", type=str)
    if feature_type == "TagFeature":
        kv_separator = ""
        if "kv_separator" in node:
            kv_separator = _value_separator(node, "kv_separator", ":", data_separator)
            if kv_separator == separator:
                raise ConfigError(f"{node.where('kv_separator')}: must differ from separator {separator!r}")
        ids = _id_mapping(node, "a TagFeature", input_name, field_type, separator + kv_separator, name=name)
        if embedding_dim < 1:
            raise ConfigError(f"{node.where('embedding_dim')}: a TagFeature needs embedding_dim >= 1")
        combiner = node.get("combiner", "sum", type=str)
        if combiner not in COMBINERS:
            raise ConfigError(f"{node.where('combiner')}: expected one of {', '.join(COMBINERS)}, got {combiner!r}"
                              f"{did_you_mean(combiner, COMBINERS)}")
        node.finish()
        return Feature(name, input_name, feature_type, embedding_dim, **ids, separator=separator,
                       kv_separator=kv_separator, combiner=combiner, embedding_name=embedding_name)
    lengths = {key: node.get(key, 0, type=int) for key in ("sequence_length", "max_seq_len") if key in node}
    for key, value in lengths.items():
        if value < 0:
            raise ConfigError(f"{node.where(key)}: must be >= 0 (0: keep every value), got {value}")
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"{node.where('max_seq_len')}: sequence_length and max_seq_len (EasyRec's two names of the "
                          f"values kept) differ: {lengths}")
    sequence_length = next(iter(lengths.values()), 0)
    sub_type = node.get("sub_feature_type", "IdFeature", type=str)
    for key, hint in (("kv_separator", "sequence values carry no weights (a TagFeature does)"),
                      ("combiner", "a sequence is not pooled; an input_layer with output_seq_and_normal_feature "
                                   "reads it as (B, L, D)")):
        if key in node:
            raise ConfigError(f"{node.where(key)}: not a SequenceFeature key: {hint}")
    common = dict(separator=separator, sequence_length=sequence_length, sub_feature_type=sub_type)
    if sub_type == "IdFeature":
        ids = _id_mapping(node, "a SequenceFeature", input_name, field_type, separator, name=name)
        if embedding_dim < 1:
            raise ConfigError(f"{node.where('embedding_dim')}: a SequenceFeature of ids needs embedding_dim >= 1")
        node.finish()
        return Feature(name, input_name, feature_type, embedding_dim, **ids, embedding_name=embedding_name, **common)
    if sub_type != "RawFeature":
        raise ConfigError(f"{node.where('sub_feature_type')}: expected IdFeature or RawFeature, got {sub_type!r}")
    for key in ("hash_bucket_size", "num_buckets", "vocab_list", "vocab_file", "vocab", "num_oov_buckets"):
        if key in node:
            raise ConfigError(f"{node.where(key)}: a sequence of numbers (sub_feature_type: RawFeature) takes "
                              "boundaries, min_val, max_val and embedding_dim, not ids")
    boundaries, min_val, max_val = _raw_params(node, embedding_dim, "a raw SequenceFeature")
    if embedding_name and not boundaries:
        raise ConfigError(f"{node.where('embedding_name')}: only a sequence with ids (or boundaries) has an "
                          "embedding table to share")
    node.finish()
    return Feature(name, input_name, feature_type, embedding_dim, boundaries=boundaries, min_val=min_val,
                   max_val=max_val, embedding_name=embedding_name, **common)


def _check_shared_tables(features: Sequence[Feature], node: Node) -> None:
    """Features that share an ``embedding_name`` need the same width and number of rows (a name set on one feature
    only is a warning: only features that all set it share a table)."""
    first: dict[str, tuple[int, Feature]] = {}
    for i, f in enumerate(features):
        if not f.embedding_name:
            continue
        if not f.has_ids:
            raise ConfigError(f"{node.where(f'features[{i}].embedding_name')}: '{f.name}' has no embedding table "
                              "(a raw value); embedding_name shares the tables of id features")
        if f.embedding_name in first:
            j, other = first[f.embedding_name]
            if (f.embedding_dim, f.num_embeddings) != (other.embedding_dim, other.num_embeddings):
                raise ConfigError(
                    f"{node.where(f'features[{i}].embedding_name')}: '{f.name}' shares table '{f.embedding_name}' "
                    f"with '{other.name}' (features[{j}]), which needs the same embedding_dim and number of rows "
                    f"(hash_bucket_size / num_buckets / vocab_list / boundaries); got {f.embedding_dim} x "
                    f"{f.num_embeddings} and {other.embedding_dim} x {other.num_embeddings}")
        else:
            first[f.embedding_name] = (i, f)
    for name, (i, f) in first.items():
        if sum(g.embedding_name == name for g in features) == 1:
            logger.warning("%s: no other feature has embedding_name %r, so '%s' shares its table with none (only "
                           "features that all set the same embedding_name share one, as in EasyRec)",
                           node.where(f"features[{i}].embedding_name"), name, f.name)


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

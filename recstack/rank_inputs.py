"""The rank nets' input block built from a config: the slot keys or an EasyRec-style feature config.

A rank wrapper calls :func:`field_inputs` and hands the result to its net; the net reads
``(fields, dense)`` (:class:`recstack.layers.field_inputs.FieldInputs`) whatever the data format:

* **slot format** (``config.yaml``): ``sparse_feature_number``, ``sparse_feature_dim``,
  ``dense_input_dim``, ``sparse_inputs_slots`` (:func:`recstack.wrapper.slot_format_args`) ->
  :class:`SlotFields`, feeds ``sparse``, ``dense``;
* **id/value layout** (PaddleRec's AutoInt keys): ``num_field``, ``feature_number``, ``embedding_dim`` ->
  :class:`IndexValueFields`, feeds ``feat_idx``, ``feat_value`` (read by the ``index_value`` reader);
* **feature config** (``config_tabular.yaml``): ``data_config`` / ``feature_config`` /
  ``model_config.feature_groups`` (:mod:`recstack.easyrec.features`, read by the core ``tabular`` reader) ->
  :class:`TabularFields` over the ``DEEP`` groups (every group unless marked ``wide_deep: WIDE``), feeds
  ``<group>.ids`` / ``<group>.values``; Wide&Deep's wide part reads the ``WIDE`` groups
  (:func:`wide_inputs`). The slot keys are then not used (mixing the two is an error).
"""

from __future__ import annotations

from collections.abc import Sequence

from recstack.config import Config, ConfigError, PositiveInt, String, check_schema
from recstack.easyrec.features import DATA_CONFIG, FEATURE_CONFIG, FEATURE_GROUPS, TabularSpec
from recstack.easyrec.schema import Node, source
from recstack.easyrec.tabular_fields import TabularFields
from recstack.layers.field_inputs import FieldInputs, IndexValueFields, SlotFields
from recstack.wrapper import SLOT_FORMAT_SCHEMA, DygraphModel, slot_format_args

#: PaddleRec's slot keys, which a feature config replaces
_SLOT_KEYS = tuple(SLOT_FORMAT_SCHEMA)
#: the id/value layout's keys (PaddleRec's AutoInt names); ``num_field`` selects the layout
INDEX_VALUE_SCHEMA = {"num_field": PositiveInt, "feature_number": PositiveInt, "embedding_dim": PositiveInt,
                      "field_map": String}


def uses_index_value(config: Config) -> bool:
    """Whether the config describes the id/value layout (``hyper_parameters.num_field``, PaddleRec's AutoInt)."""
    return config.get("hyper_parameters.num_field", None) is not None


def _index_value_fields(config: Config, model: str, first_order: bool) -> IndexValueFields:
    hp = config.section("hyper_parameters")
    for key in _SLOT_KEYS:
        if key in hp:
            raise ConfigError(f"{config.source('hyper_parameters.' + key)}: a slot-format key cannot be mixed with "
                              f"num_field (the id/value layout: feature_number, embedding_dim); remove one of the two")
    check_schema(config, INDEX_VALUE_SCHEMA, model_name=model)
    return IndexValueFields(config.get("hyper_parameters.feature_number", type=int),
                            config.get("hyper_parameters.embedding_dim", type=int),
                            config.get("hyper_parameters.num_field", type=int), first_order=first_order)


def uses_feature_config(config: Config) -> bool:
    """Whether the config describes its data the EasyRec way (``hyper_parameters.feature_config``)."""
    return config.get(FEATURE_CONFIG, None) is not None


def _tabular_spec(config: Config, model: str) -> TabularSpec:
    hp = config.section("hyper_parameters")
    for key in _SLOT_KEYS:
        if key in hp:
            raise ConfigError(f"{config.source('hyper_parameters.' + key)}: a slot-format key cannot be mixed with "
                              f"feature_config (the features set {model}'s inputs); remove one of the two")
    spec = TabularSpec.from_config(config)
    node = Node.at(config, "hyper_parameters.model_config")
    node.get("feature_groups")  # parsed by TabularSpec
    name = node.get("model_class", model, type=str)
    if name != model:
        raise ConfigError(f"{node.where('model_class')}: this folder is {model}, got {name!r}")
    node.finish()
    return spec


def _feature_key(spec: TabularSpec, name: str, key: str) -> str:
    return f"{FEATURE_CONFIG}.features[{[f.name for f in spec.features].index(name)}].{key}"


def field_inputs(config: Config, model: str, first_order: bool = False, dense_fields: bool = False,
                 equal_width: bool = False, wide_groups: bool = False) -> FieldInputs:
    """The net's :class:`FieldInputs` from the config (slot keys or feature config).

    Args:
        config: the run's config.
        model: the model's name for messages and ``model_config.model_class`` (``DeepFM``).
        first_order: each field carries a first-order weight in column 0.
        dense_fields: dense values become fields (slot format: ``x_i * v_i``); from a feature config
            every feature must then be a field (id-like, or a RawFeature with ``embedding_dim``).
        equal_width: the model needs fields of one width (FM, CIN): every feature of its groups must
            have the same ``embedding_dim``.
        wide_groups: the model reads ``wide_deep: WIDE`` groups itself (:func:`wide_inputs`); for the
            others such a group is an error.

    Raises:
        ConfigError: one line naming the key (unequal ``embedding_dim``, a plain raw feature where fields
            are needed, a WIDE group the model does not read, slot keys mixed with a feature config).
    """
    if uses_index_value(config) and not uses_feature_config(config):
        return _index_value_fields(config, model, first_order)
    if not uses_feature_config(config):
        args = slot_format_args(config)
        return SlotFields(args["sparse_feature_number"], args["sparse_feature_dim"], args["num_sparse_fields"],
                          args["dense_feature_dim"], first_order=first_order, dense_fields=dense_fields)
    spec = _tabular_spec(config, model)
    deep = [g.name for g in spec.groups if g.wide_deep != "WIDE"]
    wide = [g.name for g in spec.groups if g.wide_deep == "WIDE"]
    if wide and not wide_groups:
        raise ConfigError(f"{source(config, FEATURE_GROUPS)}: group '{wide[0]}' is wide_deep: WIDE; {model} reads "
                          "only DEEP groups (WIDE groups are Wide&Deep's wide part)")
    if not deep:
        raise ConfigError(f"{source(config, FEATURE_GROUPS)}: {model} needs at least one DEEP feature group")
    features = list(dict.fromkeys(spec.feature(n) for g in deep for n in spec.group(g).feature_names))
    if dense_fields:
        for f in features:
            if not (f.is_id or f.embedding_dim > 0):
                raise ConfigError(f"{source(config, _feature_key(spec, f.name, 'embedding_dim'))}: {model} reads every "
                                  f"feature as a field; RawFeature '{f.name}' needs embedding_dim > 0 (or boundaries)")
    if equal_width:
        embedded = [f for f in features if f.is_id or f.embedding_dim > 0]
        for f in embedded[1:]:
            if f.embedding_dim != embedded[0].embedding_dim:
                raise ConfigError(f"{source(config, _feature_key(spec, f.name, 'embedding_dim'))}: {model} needs "
                                  f"every field at one embedding_dim ({embedded[0].embedding_dim}, as "
                                  f"'{embedded[0].name}'); '{f.name}' has {f.embedding_dim}")
    return TabularFields(spec, deep, first_order=first_order)


def wide_inputs(config: Config, model: str) -> FieldInputs | None:
    """Wide&Deep's wide part from a feature config: the ``wide_deep: WIDE`` groups, each id a learned weight
    (width 1) and each raw value a linear term; ``None`` in the slot format or without WIDE groups."""
    if not uses_feature_config(config):
        return None
    spec = _tabular_spec(config, model)
    wide = [g.name for g in spec.groups if g.wide_deep == "WIDE"]
    return TabularFields(spec, wide, width=1) if wide else None


def configure_feeds(wrapper: DygraphModel, config: Config, feed_names: Sequence[str]) -> None:
    """Set the wrapper's ``feed_names`` (the net's ``input_names``) and, from a feature config, its
    ``label_names`` (the one ``data_config.label_fields`` entry; the slot format's is ``label``).

    Raises:
        ConfigError: a feature config with other than one label field (the rank models have one task).
    """
    wrapper.feed_names = tuple(feed_names)
    if uses_feature_config(config):
        labels = TabularSpec.from_config(config).label_fields
        if len(labels) != 1:
            raise ConfigError(f"{source(config, DATA_CONFIG + '.label_fields')}: the rank models learn one click "
                              f"label, got {list(labels)}")
        wrapper.label_names = tuple(labels)

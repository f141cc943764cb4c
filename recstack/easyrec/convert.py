"""EasyRec ``pipeline.config`` (protobuf text) -> recstack YAML: the mapping behind ``tools/easyrec_config.py``.

:func:`convert` takes the parsed text (:func:`recstack.easyrec.pbtxt.parse`) and returns a
:class:`Conversion`: the YAML config as nested ``dict`` / ``list`` values, the fields it could not carry
over (by path, with the reason) and the ones it changed on the way (a file path that became its folder, a
TensorFlow lambda rewritten over torch). What goes where (doc/easyrec_config.md has the full table):

=====================================================  ==========================================================
EasyRec                                                recstack
=====================================================  ==========================================================
``train_input_path`` / ``eval_input_path``             ``runner.train_data_dir`` / ``test_data_dir`` (the folder)
``model_dir``                                          ``runner.model_save_path``, ``infer_load_path``
``data_config.batch_size`` / ``eval_batch_size``       ``runner.train_batch_size`` / ``infer_batch_size``
``data_config.num_epochs`` / ``shuffle``               ``runner.epochs`` / ``shuffle``
``data_config`` (``input_type: CSVInput``, fields,     ``hyper_parameters.data_config``; ``runner.*_reader_path:
labels, separator)                                     tabular``
``feature_config.features`` / ``feature_configs``      ``hyper_parameters.feature_config.features``
``model_config``                                       ``hyper_parameters.model_config`` (its messages as mappings)
``train_config.optimizer_config``                      ``hyper_parameters.optimizer`` (``class``, ``learning_rate``,
                                                       ``weight_decay``, ``lr_schedule``)
``train_config.gradient_clipping_by_norm``             ``hyper_parameters.clip_by_norm``
``train_config.log_step_count_steps``                  ``runner.print_interval``
``train_config.intra_op_parallelism_threads``          ``runner.cpu_threads``
=====================================================  ==========================================================

Protobuf text does not say which fields are repeated; :data:`REPEATED` (the repeated fields of EasyRec's
messages, by name) turns a repeated field written once into a one-item list. ``st_params``
(a ``google.protobuf.Struct``) becomes a plain mapping. Lambdas over ``tf.`` in the backbone
(``input_fn``, ``extra_input_fn``, ``lambda.expression``) are rewritten over torch on their syntax tree
(:func:`translate_lambda`).
"""

from __future__ import annotations

import ast
import math
import os
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from recstack.config import ConfigError
from recstack.easyrec.pbtxt import parse_file

__all__ = ["REPEATED", "Conversion", "Item", "convert", "convert_file", "translate_lambda"]

#: Fields declared ``repeated`` in EasyRec's protos (easy_rec/python/protos/*.proto), by name. Left out: names
#: that are singular elsewhere in the messages a config maps (``highway``: a KerasLayer parameter message).
REPEATED = frozenset("""
    attention_axes attr_fields aux_hist_seq blocks boundaries bst_towers carries combo_input_seps concat_blocks
    consts din_towers dropout_ratio experts extra_label_func extraction_networks feature_configs feature_fields
    feature_groups feature_names features filter_sizes freeze_gradient groups hidden_feature_sizes hidden_units
    hist_seq input_fields input_names inputs kd label_dim label_fields label_sep layers losses mask_blocks methods
    metrics_set num_filters optimizer_config output_blocks outputs packages relation_tower_names restore_filters
    schedule seq_att_groups seq_att_map sequence_features shared_names task_towers towers vocab_list
""".split())

#: EasyRec input types read by recstack's tabular reader (text files, one sample a line)
CSV_INPUTS = ("CSVInput", "CSVInputV2", "CSVInputEx")
#: recstack's input field types (recstack.easyrec.features.INPUT_TYPES)
FIELD_TYPES = ("INT32", "INT64", "FLOAT", "DOUBLE", "STRING")

_FEATURE_COMMON = frozenset({"feature_name", "input_names", "feature_type", "embedding_dim", "embedding_name"})
_IDS = frozenset({"hash_bucket_size", "num_buckets", "vocab_list", "vocab_file", "num_oov_buckets"})
_RAW = frozenset({"boundaries", "min_val", "max_val"})
#: the feature keys recstack reads, by feature type (recstack/easyrec/features.py); any other key of a feature is
#: listed as not carried over
FEATURE_KEYS: dict[str, frozenset[str]] = {
    "IdFeature": _FEATURE_COMMON | _IDS,
    "RawFeature": _FEATURE_COMMON | _RAW,
    "TagFeature": _FEATURE_COMMON | _IDS | {"separator", "kv_separator", "combiner"},
    "SequenceFeature": _FEATURE_COMMON | _IDS | _RAW | {"separator", "sequence_length", "max_seq_len",
                                                         "sub_feature_type"},
}
#: backbone input keys recstack reads (doc/backbone.md)
INPUT_KEYS = frozenset({"feature_group_name", "block_name", "package_name", "input_fn", "input_slice", "ignore_input"})
#: input_layer options recstack reads (doc/backbone.md)
INPUT_LAYER_KEYS = frozenset({"do_batch_norm", "do_layer_norm", "dropout_rate", "feature_dropout_rate",
                              "only_output_feature_list", "only_output_3d_tensor", "output_2d_tensor_and_feature_list",
                              "output_seq_and_normal_feature", "wide_output_dim"})

_CHECKPOINTS = "recstack saves one checkpoint per epoch, <model_save_path>/<epoch>/"
_DISTRIBUTED = "distribution: run recstack with runner.use_fleet under torchrun (doc/distributed.md)"
_REASONS = {
    "kafka_train_input": "streaming input is not supported: recstack reads CSV files",
    "datahub_train_input": "streaming input is not supported: recstack reads CSV files",
    "hive_train_input": "Hive tables are not supported: export them to CSV files",
    "binary_train_input": "binary input is not supported: recstack reads CSV files",
    "parquet_train_input": "Parquet input is not supported: export it to CSV files",
    "export_config": "recstack exports with tools/to_static.py (TorchScript + ONNX, doc/inference.md)",
    "fg_json_path": "feature generation (FG) is not supported",
    "train_config.num_steps": "recstack trains whole epochs (runner.epochs)",
    "train_config.save_checkpoints_steps": _CHECKPOINTS,
    "train_config.save_checkpoints_secs": _CHECKPOINTS,
    "train_config.keep_checkpoint_max": _CHECKPOINTS,
    "train_config.fine_tune_checkpoint": "a TensorFlow checkpoint; recstack warm-starts from its own checkpoints "
                                         "(runner.model_init_path)",
    "train_config.fine_tune_ckpt_var_map": "a TensorFlow checkpoint's variable map",
    "train_config.train_distribute": _DISTRIBUTED,
    "train_config.num_gpus_per_worker": _DISTRIBUTED,
    "train_config.sync_replicas": _DISTRIBUTED,
    "train_config.startup_delay_steps": _DISTRIBUTED,
    "train_config.save_summary_steps": "recstack writes TensorBoard scalars with runner.use_visual",
    "train_config.inter_op_parallelism_threads": "recstack sets torch's intra-op threads only (runner.cpu_threads)",
    "eval_config.num_examples": "recstack evaluates every file of test_data_dir",
    "eval_config.eval_interval_secs": "recstack evaluates after each epoch and per checkpoint (tools/infer.py)",
    "eval_config.max_evals": "recstack evaluates after each epoch and per checkpoint (tools/infer.py)",
    "data_config.shuffle_buffer_size": "recstack shuffles file order and the rows of each parsed block",
    "data_config.prefetch_size": "recstack parses ahead in runner.num_workers threads",
    "data_config.num_parallel_calls": "recstack parses ahead in runner.num_workers threads",
    "data_config.with_header": "header lines are not supported: remove them from the files",
    "data_config.sample_weight": "sample weights are not supported",
    "data_config.selected_cols": "recstack reads every column, in input_fields order",
    "data_config.drop_remainder": "recstack keeps the last, smaller batch",
    "data_config.negative_sampler": "negative sampling is not supported",
    "data_config.negative_sampler_v2": "negative sampling is not supported",
    "data_config.negative_sampler_in_memory": "negative sampling is not supported",
    "data_config.hard_negative_sampler": "negative sampling is not supported",
    "data_config.hard_negative_sampler_v2": "negative sampling is not supported",
    "data_config.extra_label_func": "label functions are not supported",
    "feature_config.embedding_on_cpu": "recstack places tables with the model (runner.use_gpu)",
    "model_config.model_name": "a display name; recstack names runs by model_save_path",
    "model_config.seq_att_groups": "DIN-style sequence groups: use a backbone with input_layer "
                                   "output_seq_and_normal_feature and a DIN block (doc/backbone.md)",
    "model_config.kd": "knowledge distillation is not supported",
    "model_config.restore_filters": "a TensorFlow checkpoint filter",
    "model_config.variational_dropout": "variational dropout is not supported",
    "model_config.losses": "multiple losses are not supported: use loss_type",
    "model_config.loss_weight_strategy": "loss weights are the towers' fixed weight",
    "model_config.ev_params": "TensorFlow EmbeddingVariable options",
    "model_config.num_class": "only num_class: 1 is supported",
}
_FEATURE_REASONS = {
    "initializer": "recstack initialises embedding tables its own way",
    "shared_names": "write one feature per input field",
    "max_partitions": "TensorFlow variable partitioning",
    "ev_params": "TensorFlow EmbeddingVariable options",
    "precision": "not supported",
    "normalizer_fn": "a TensorFlow expression: use min_val / max_val or boundaries",
    "raw_input_dim": "multi-dimensional raw features are not supported",
    "seq_multi_sep": "several values per sequence step are not supported",
    "sequence_combiner": "pooling inside the feature is not supported: read the sequence with an input_layer "
                         "(output_seq_and_normal_feature) and pool it in a backbone block",
}
#: EasyRec's multi-task model classes (their metrics are the towers')
MULTI_TASK_CLASSES = ("MultiTaskModel", "MMoE", "DBMTL", "PLE", "ESMM", "SimpleMultiTask")
_STREAM_INPUTS = ("kafka", "datahub", "hive", "binary", "parquet")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

Tree = dict[str, Any]


@dataclass(frozen=True)
class Item:
    """One line of the conversion report: a field ``path`` (EasyRec's, e.g. ``feature_config.features[3].
    initializer``, or the recstack key it became), its value where short, and why."""

    path: str
    reason: str
    value: Any = None

    def __str__(self) -> str:
        shown = "" if self.value is None else f" = {_show(self.value)}"
        return f"{self.path}{shown}: {self.reason}"


@dataclass
class Conversion:
    """The result of :func:`convert`.

    Attributes:
        config: the recstack config (``runner`` and ``hyper_parameters``), plain dicts and lists.
        dropped: fields not carried over, each with the reason.
        changed: fields carried over with a change worth knowing (a file path became its folder, a lambda was
            translated, a default of EasyRec's was written out).
        source: the file the config came from (for the YAML's header).
    """

    config: Tree
    dropped: list[Item] = field(default_factory=list)
    changed: list[Item] = field(default_factory=list)
    source: str = "pipeline.config"

    def report_lines(self) -> list[str]:
        """The report as text lines: the fields not carried over, then the changes."""
        lines = [f"Not carried over ({len(self.dropped)}):" if self.dropped else "Not carried over: nothing"]
        lines += [f"  - {item}" for item in self.dropped]
        if self.changed:
            lines.append(f"Changed on the way ({len(self.changed)}):")
            lines += [f"  - {item}" for item in self.changed]
        return lines

    def to_yaml(self) -> str:
        """The YAML text: a comment block with the report, then the config."""
        header = [f"Converted from {self.source} (EasyRec pipeline config) by tools/easyrec_config.py;",
                  "see doc/easyrec_config.md.", *self.report_lines()]
        comment = "".join(f"{part}\n" for line in header for part in _wrap(line, "# "))
        body = yaml.dump(self.config, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120,
                         allow_unicode=True)
        return comment + body


# ------------------------------------------------------------------------------------------------ YAML output
class _Flow(dict):
    """A mapping written in flow style (``{input_name: clk, input_type: INT32}``)."""


class _Dumper(yaml.SafeDumper):
    """Block style with indented lists; short lists of scalars and :class:`_Flow` mappings in flow style."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (dict, list)) or (isinstance(x, dict) and all(v == {} for v in x.values()))
               for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=not data)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(_Flow, _represent_flow)
_Dumper.add_representer(dict, _represent_dict)


def _wrap(line: str, prefix: str, width: int = 118) -> list[str]:
    """``line`` as comment lines of at most ``width`` characters, continuation lines indented under its text."""
    indent = " " * (len(line) - len(line.lstrip(" -")))
    return textwrap.wrap(line, width, initial_indent=prefix, subsequent_indent=prefix + indent + "  ",
                         break_long_words=False, break_on_hyphens=False) or [prefix.rstrip()]


def _article(word: str) -> str:
    return "an" if word[:1] in "AEIOU" else "a"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]" if len(value) <= 8 else f"[{len(value)} values]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


# ------------------------------------------------------------------------------------------------ the tree
def _plain(value: Any) -> Any:
    """Messages -> plain dicts, a repeated field written once -> a list, ``st_params`` Structs -> mappings."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: Tree = {}
    for key, item in value.items():
        if key == "st_params":
            out[key] = _struct(item)
            continue
        item = _plain(item)
        if key in REPEATED:
            out[key] = item if isinstance(item, list) else [item]
        elif isinstance(item, list) and item:  # a singular field written twice: merged, as protobuf's Merge does
            out[key] = _merge(item) if all(isinstance(x, dict) for x in item) else item[-1]
        else:
            out[key] = item
    return out


def _merge(parts: list[Tree]) -> Tree:
    """Messages of one singular field merged: repeated fields concatenate, messages merge, scalars: the last."""
    out: Tree = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = value
            elif key in REPEATED:
                out[key] = out[key] + value
            elif isinstance(out[key], dict) and isinstance(value, dict):
                out[key] = _merge([out[key], value])
            else:
                out[key] = value
    return out


def _struct(value: Any) -> Any:
    """A ``google.protobuf.Struct`` in text form (``fields { key: "units" value { number_value: 8 } }``) as a
    plain mapping (``{units: 8}``); anything else unchanged."""
    if not isinstance(value, dict) or set(value) - {"fields"}:
        return _plain(value)
    entries = value.get("fields", [])
    out: Tree = {}
    for entry in entries if isinstance(entries, list) else [entries]:
        if isinstance(entry, dict) and "key" in entry:
            out[str(entry["key"])] = _struct_value(entry.get("value", {}))
    return out


def _struct_value(value: Any) -> Any:
    if not isinstance(value, dict) or len(value) != 1:
        return _plain(value)
    kind, item = next(iter(value.items()))
    if kind == "struct_value":
        return _struct(item)
    if kind == "list_value":
        items = item.get("values", []) if isinstance(item, dict) else []
        return [_struct_value(v) for v in (items if isinstance(items, list) else [items])]
    if kind == "null_value":
        return None
    return item  # number_value, string_value, bool_value


class _Report:
    def __init__(self) -> None:
        self.dropped: list[Item] = []
        self.changed: list[Item] = []

    def drop(self, path: str, value: Any = None, reason: str | None = None) -> None:
        generic = re.sub(r"\[\d+\]", "", path)
        reason = reason or _REASONS.get(generic) or _REASONS.get(generic.split(".")[-1]) or "no recstack equivalent"
        self.dropped.append(Item(path, reason, None if isinstance(value, dict) else value))

    def change(self, path: str, reason: str, value: Any = None) -> None:
        self.changed.append(Item(path, reason, value))


# ------------------------------------------------------------------------------------------------ conversion
def convert(root: Mapping[str, Any], source: str = "pipeline.config", *, data_root: str | None = None,
            output_dir: str | None = None) -> Conversion:
    """Map a parsed EasyRec pipeline config to recstack's YAML config.

    Args:
        root: the parsed text (:func:`recstack.easyrec.pbtxt.parse`).
        source: the file name, for the YAML's header.
        data_root: the folder EasyRec's relative data paths are relative to (EasyRec: the working directory);
            with ``output_dir``, relative data paths are rewritten relative to ``output_dir`` (recstack resolves
            them against the YAML's folder). ``None``: data paths are kept as written.
        output_dir: the folder the YAML goes to.

    Returns:
        The :class:`Conversion` (config, fields not carried over, changes).

    Raises:
        ConfigError: the text is not an EasyRec pipeline config (no ``model_config``), or a field has the
            wrong kind of value (a message where a scalar belongs, or the reverse), naming the field.
    """
    tree = _plain(root)
    report = _Report()
    if not isinstance(tree.get("model_config"), dict):
        raise ConfigError(f"{source}: no model_config message: not an EasyRec pipeline config")
    runner: Tree = {}
    hp: Tree = {}
    paths = _Paths(data_root, output_dir)
    for key, value in tree.items():
        if key in ("train_input_path", "eval_input_path"):
            folder = _data_dir(key, value, paths, report)
            if folder is not None:
                runner["train_data_dir" if key == "train_input_path" else "test_data_dir"] = folder
        elif key == "model_dir":
            runner["model_save_path"] = runner["infer_load_path"] = _string(value, key)
        elif any(key.startswith(f"{kind}_") for kind in _STREAM_INPUTS):
            report.drop(key, value, _REASONS.get(key.replace("eval", "train")))
        elif key not in ("train_config", "eval_config", "data_config", "feature_config", "feature_configs",
                         "model_config"):
            report.drop(key, value, _REASONS.get(key, "not a field of EasyRec's pipeline config"))
    model = _model_config(_message(tree, "model_config"), report)
    data = _data_config(_message(tree, "data_config"), runner, report)
    features = _features(tree, report, paths)
    _prune_groups(model, features.pop("_dropped_names"), report)
    train = _message(tree, "train_config")
    optimizer = _train_config(train, runner, hp, report)
    _eval_config(_message(tree, "eval_config"), model, report)

    ordered_runner = {"train_data_dir": runner.get("train_data_dir"), "train_reader_path": "tabular"}
    for key in ("train_batch_size", "epochs", "shuffle", "print_interval", "cpu_threads", "model_save_path",
                "test_data_dir"):
        if key in runner:
            ordered_runner[key] = runner[key]
    ordered_runner["infer_reader_path"] = "tabular"
    for key in ("infer_batch_size", "infer_load_path"):
        if key in runner:
            ordered_runner[key] = runner[key]
    if ordered_runner["train_data_dir"] is None:
        del ordered_runner["train_data_dir"]
    elif ordered_runner["train_data_dir"] == ordered_runner.get("test_data_dir"):
        report.change("runner.test_data_dir", "the same folder as train_data_dir: recstack would train and evaluate "
                                              "on all of its files; move the test files to a folder of their own "
                                              "and set test_data_dir to it")
    config = {"runner": ordered_runner,
              "hyper_parameters": {"optimizer": optimizer, **hp, "data_config": data, "feature_config": features,
                                   "model_config": model}}
    order = {key: i for i, key in enumerate(tree)}  # the report in the order of the file's sections
    dropped = sorted(report.dropped, key=lambda item: order.get(re.split(r"[.\[]", item.path)[0], len(order)))
    return Conversion(config, dropped, report.changed, source)


def convert_file(path: str, output: str | None = None) -> Conversion:
    """Read ``path`` (protobuf text) and convert it; data paths are rewritten for a YAML written to ``output``
    (relative paths: EasyRec's are relative to the working directory, recstack's to the YAML's folder).

    Raises:
        FileNotFoundError: no such file.
        PbtxtError: a syntax error (``file:line:column: ...``).
        ConfigError: not an EasyRec pipeline config.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file" if not os.path.exists(path) else f"{path}: not a file")
    root = parse_file(path)
    output_dir = os.path.dirname(os.path.abspath(output)) if output else None
    return convert(root, os.path.basename(path), data_root=os.getcwd(), output_dir=output_dir)


def _message(tree: Tree, key: str, where: str | None = None) -> Tree:
    value = tree.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where or key}: expected a message ({key} {{ ... }}), got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    return value


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {_show(value)}")
    return value


def _last(value: Any) -> Any:
    """A singular scalar written twice: protobuf's text parser refuses it; keep the last as its merge does."""
    return value[-1] if isinstance(value, list) and value else value


# ------------------------------------------------------------------------------------------------ data paths
@dataclass(frozen=True)
class _Paths:
    data_root: str | None
    output_dir: str | None

    def rebase(self, folder: str) -> str:
        if self.output_dir is None or os.path.isabs(folder) or self.data_root is None:
            return folder
        return os.path.relpath(os.path.join(self.data_root, folder), self.output_dir)

    def is_dir(self, path: str) -> bool:
        if self.data_root is None:
            return False
        return os.path.isdir(path if os.path.isabs(path) else os.path.join(self.data_root, path))


def _data_dir(key: str, value: Any, paths: _Paths, report: _Report) -> str | None:
    """The folder recstack reads for EasyRec's input path (a file, a glob or a comma-separated list of them)."""
    target = "runner.train_data_dir" if key == "train_input_path" else "runner.test_data_dir"
    parts = [p.strip() for p in _string(_last(value), key).split(",") if p.strip()]
    if not parts:
        report.drop(key, value, "empty path")
        return None
    if any(_SCHEME.match(p) for p in parts):
        report.drop(key, value, "recstack reads local CSV files (odps://, hdfs://, oss:// ... are not supported)")
        return None
    folders: list[str] = []
    for part in parts:
        if paths.is_dir(part):
            folder = part.rstrip("/") or "/"
        else:
            folder = os.path.dirname(part.rstrip("/")) or "."
        if folder not in folders:
            folders.append(folder)
    if len(folders) > 1:
        report.drop(key, value, f"the files lie in {len(folders)} folders; recstack reads one folder: "
                                f"{target} is the first, {folders[0]!r}")
    folder = folders[0]
    if folder != parts[0] or len(parts) > 1:
        what = "pattern" if any(c in parts[0] for c in "*?[") else "files" if len(parts) > 1 else "file"
        report.change(target, f"EasyRec reads the {what} {value!r}; recstack reads every file in the folder "
                              f"{folder!r}: keep only these data files there")
    rebased = paths.rebase(folder)
    if rebased != folder:
        report.change(target, f"{folder!r} is relative to the working directory in EasyRec; written relative to "
                              f"the YAML's folder, as recstack reads it: {rebased!r}")
    return rebased


# ------------------------------------------------------------------------------------------------ data_config
def _data_config(data: Tree, runner: Tree, report: _Report) -> Tree:
    out: Tree = {}
    input_type = _last(data.get("input_type", "CSVInput"))
    if input_type not in CSV_INPUTS:
        report.drop("data_config.input_type", input_type,
                    "recstack reads CSV text files (CSVInput): export the data to CSV files")
    elif input_type != "CSVInput":
        report.change("data_config.input_type", f"{input_type} is read as CSVInput (text files, one sample a line)",
                      input_type)
    out["input_type"] = "CSVInput"
    for key, value in data.items():
        where = f"data_config.{key}"
        if key == "input_type":
            continue
        if key == "separator":
            out["separator"] = _string(_last(value), where)
        elif key == "input_fields":
            out["input_fields"] = [_input_field(f, f"{where}[{i}]", report) for i, f in enumerate(value)]
        elif key == "label_fields":
            out["label_fields"] = [_string(v, where) for v in value]
        elif key == "batch_size":
            runner["train_batch_size"] = int(_number(_last(value), where))
        elif key == "eval_batch_size":
            runner["infer_batch_size"] = int(_number(_last(value), where))
        elif key == "num_epochs":
            if int(_number(_last(value), where)) > 0:
                runner["epochs"] = int(_last(value))
        elif key == "shuffle":
            runner["shuffle"] = bool(_last(value))
        else:
            report.drop(where, value)
    runner.setdefault("train_batch_size", 32)  # EasyRec's default batch_size
    runner.setdefault("infer_batch_size", runner["train_batch_size"])
    if "shuffle" not in runner:
        runner["shuffle"] = True
        report.change("runner.shuffle", "EasyRec shuffles by default (data_config.shuffle: true)", True)
    if "epochs" not in runner:
        runner["epochs"] = 1
        report.change("runner.epochs", "data_config.num_epochs is 0 or absent (EasyRec repeats the data until "
                                       "train_config.num_steps); recstack trains whole epochs: 1", 1)
    if "input_fields" not in out:
        raise ConfigError("data_config.input_fields: the config names no input fields (CSV columns)")
    return out


def _input_field(value: Any, where: str, report: _Report) -> Tree:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a message (input_fields {{ input_name: ... }}), got {_show(value)}")
    out = _Flow()
    for key, item in value.items():
        if key == "input_name":
            out[key] = _string(_last(item), f"{where}.{key}")
        elif key == "input_type":
            item = _last(item)
            if item == "BOOL":
                report.change(f"{where}.input_type", "recstack has no BOOL fields: read as STRING", item)
                item = "STRING"
            elif item not in FIELD_TYPES:
                raise ConfigError(f"{where}.input_type: unknown field type {item!r} (EasyRec's: INT32, INT64, STRING, "
                                  "FLOAT, DOUBLE, BOOL)")
            out[key] = item
        elif key == "default_val":
            out[key] = _last(item)
        else:
            report.drop(f"{where}.{key}", item, "user-defined field functions and multi-dimensional fields are not "
                                                "supported" if key.startswith("user_define") or key.startswith("input_")
                        else None)
    return out


# ------------------------------------------------------------------------------------------------ features
def _features(tree: Tree, report: _Report, paths: _Paths | None = None) -> Tree:
    """``feature_config.features`` and the older top-level ``feature_configs`` -> ``{features: [...]}``; the
    names of the features left out go to ``_dropped_names`` (removed from the feature groups). A relative
    ``vocab_file`` (EasyRec's: relative to the working directory) is rewritten relative to the YAML's folder."""
    items: list[tuple[str, Any]] = []
    section = _message(tree, "feature_config")
    for key, value in section.items():
        if key == "features":
            items += [(f"feature_config.features[{i}]", f) for i, f in enumerate(value)]
        else:
            report.drop(f"feature_config.{key}", value)
    for i, value in enumerate(tree.get("feature_configs", [])):
        items.append((f"feature_configs[{i}]", value))
    features: list[Tree] = []
    dropped: list[str] = []
    for where, value in items:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a message (features {{ ... }}), got {_show(value)}")
        inputs = value.get("input_names", [])
        name = _last(value.get("feature_name", inputs[0] if inputs else None))
        kind = _last(value.get("feature_type", "IdFeature"))
        if kind not in FEATURE_KEYS:
            report.drop(where, value, f"{kind} {name!r} is not supported (recstack: {', '.join(FEATURE_KEYS)}); "
                                      "it is left out of the feature groups too")
            dropped.append(name)
            continue
        out = _Flow()
        for key, item in value.items():
            if key == "embedding_name" and kind == "RawFeature" and not value.get("boundaries"):
                report.drop(f"{where}.{key}", item, "a RawFeature without boundaries has no table to share")
            elif key == "combiner" and kind != "TagFeature":
                report.drop(f"{where}.{key}", item, "only a TagFeature is pooled (a SequenceFeature is read as "
                                                    "(B, L, D); a single value has nothing to combine)")
            elif key == "separator" and kind in ("IdFeature", "RawFeature"):
                report.drop(f"{where}.{key}", item, f"{_article(kind)} {kind} holds one value per cell (several: a "
                                                    "TagFeature)")
            elif key == "vocab_file" and _SCHEME.match(str(_last(item))):
                report.drop(f"{where}.{key}", item, "a remote vocabulary file: copy it to a local path")
            elif key == "vocab_file" and key in FEATURE_KEYS[kind]:
                out[key] = paths.rebase(str(_last(item))) if paths is not None else _last(item)
            elif key in FEATURE_KEYS[kind]:
                out[key] = item if key in REPEATED else _last(item)
            else:
                report.drop(f"{where}.{key}", item, _FEATURE_REASONS.get(key, f"not read for {_article(kind)} {kind}"))
        features.append(out)
    return {"features": features, "_dropped_names": dropped}


def _prune_groups(model: Tree, names: list[str], report: _Report) -> None:
    if not names:
        return
    kept = []
    for i, group in enumerate(model.get("feature_groups", [])):
        members = group.get("feature_names", [])
        gone = [n for n in members if n in names]
        if gone:
            group["feature_names"] = [n for n in members if n not in names]
            report.change(f"model_config.feature_groups[{i}].feature_names",
                          f"without the features left out: {', '.join(gone)}")
        if group.get("feature_names"):
            kept.append(group)
        else:
            report.drop(f"model_config.feature_groups[{i}]", None,
                        f"group {group.get('group_name')!r} holds no feature that carries over")
    model["feature_groups"] = kept


# ------------------------------------------------------------------------------------------------ model_config
def _model_config(model: Tree, report: _Report) -> Tree:
    out: Tree = {}
    for key, value in model.items():
        where = f"model_config.{key}"
        if key == "feature_groups":
            out[key] = [_feature_group(g, f"{where}[{i}]", report) for i, g in enumerate(value)]
        elif key == "backbone":
            out[key] = _backbone(_message(model, key, where), where, report)
        elif key == "num_class" and _last(value) == 1:
            continue  # EasyRec's default: one output, as recstack's
        elif key == "loss_weight_strategy" and _last(value) == "Fixed":
            continue
        elif key in ("model_name", "seq_att_groups", "kd", "restore_filters", "variational_dropout", "losses",
                     "loss_weight_strategy", "ev_params", "num_class"):
            report.drop(where, value)
        elif isinstance(value, dict):
            out[key] = _towers(value, where, report)
        else:
            out[key] = value
    return out


def _feature_group(group: Any, where: str, report: _Report) -> Tree:
    if not isinstance(group, dict):
        raise ConfigError(f"{where}: expected a message (feature_groups {{ group_name: ... }}), got {_show(group)}")
    out: Tree = {}
    for key, value in group.items():
        if key in ("group_name", "feature_names"):
            out[key] = value if key in REPEATED else _last(value)
        elif key == "wide_deep":
            value = _last(value)
            if value == "WIDE_AND_DEEP":
                report.change(f"{where}.wide_deep", "recstack's groups are DEEP or WIDE: written as DEEP", value)
                value = "DEEP"
            out[key] = value
        elif key == "sequence_features":
            report.drop(f"{where}.{key}", value, _REASONS["model_config.seq_att_groups"])
        else:
            report.drop(f"{where}.{key}", value)
    return out


def _towers(section: Tree, where: str, report: _Report) -> Tree:
    """The model's own message or ``model_params``: as written, less a tower's ``num_class: 1`` (the default)."""
    out = dict(section)
    towers = out.get("task_towers")
    if isinstance(towers, list):
        kept = []
        for i, tower in enumerate(towers):
            if isinstance(tower, dict) and "num_class" in tower:
                tower = dict(tower)
                value = _last(tower.pop("num_class"))
                if value != 1:
                    report.drop(f"{where}.task_towers[{i}].num_class", value, "only num_class: 1 is supported")
            kept.append(tower)
        out["task_towers"] = kept
    return out


# ------------------------------------------------------------------------------------------------ backbone
def _backbone(backbone: Tree, where: str, report: _Report) -> Tree:
    out = dict(backbone)
    for list_key in ("blocks", "packages"):
        if isinstance(out.get(list_key), list):
            out[list_key] = [_package(p, f"{where}.{list_key}[{i}]", report) if list_key == "packages"
                             else _block(p, f"{where}.{list_key}[{i}]", report)
                             for i, p in enumerate(out[list_key])]
    return out


def _package(package: Any, where: str, report: _Report) -> Any:
    if not isinstance(package, dict):
        return package
    out = dict(package)
    if isinstance(out.get("blocks"), list):
        out["blocks"] = [_block(b, f"{where}.blocks[{i}]", report) for i, b in enumerate(out["blocks"])]
    return out


def _block(block: Any, where: str, report: _Report) -> Any:
    if not isinstance(block, dict):
        return block
    out: Tree = {}
    for key, value in block.items():
        path = f"{where}.{key}"
        if key == "inputs":
            out[key] = [_block_input(x, f"{path}[{i}]", report) for i, x in enumerate(value)]
        elif key == "extra_input_fn":
            out[key] = _expression(_last(value), path, report)
        elif key == "input_layer" and isinstance(value, dict):
            layer = {}
            for option, item in value.items():
                if option in INPUT_LAYER_KEYS:
                    layer[option] = item
                else:
                    report.drop(f"{path}.{option}", item, "not an input_layer option of recstack's backbone")
            out[key] = layer
        elif key == "layers" and isinstance(value, list):
            out[key] = [_layer(x, f"{path}[{i}]", report) for i, x in enumerate(value)]
        else:
            out.update(_layer({key: value}, where, report))
    return out


def _layer(layer: Any, where: str, report: _Report) -> Any:
    """A ``lambda`` / ``repeat`` / ``recurrent`` / ``keras_layer`` entry with its expressions translated."""
    if not isinstance(layer, dict):
        return layer
    out = dict(layer)
    if isinstance(out.get("lambda"), dict) and "expression" in out["lambda"]:
        out["lambda"] = {**out["lambda"],
                         "expression": _expression(_last(out["lambda"]["expression"]), f"{where}.lambda.expression",
                                                   report)}
    if isinstance(out.get("repeat"), dict) and "input_fn" in out["repeat"]:
        out["repeat"] = {**out["repeat"],
                         "input_fn": _expression(_last(out["repeat"]["input_fn"]), f"{where}.repeat.input_fn", report)}
    return out


def _block_input(value: Any, where: str, report: _Report) -> Any:
    if not isinstance(value, dict):
        return value
    out: Tree = {}
    for key, item in value.items():
        if key not in INPUT_KEYS:
            report.drop(f"{where}.{key}", item, "not a block input key of recstack's backbone")
        elif key == "input_fn":
            out[key] = _expression(_last(item), f"{where}.{key}", report)
        else:
            out[key] = item
    return out


def _expression(text: Any, where: str, report: _Report) -> Any:
    if not isinstance(text, str):
        return text
    translated, problems = translate_lambda(text)
    if problems:
        report.drop(where, text, f"untranslatable: {'; '.join(problems)}; kept as written, rewrite it over torch")
        return text
    if translated != text:
        report.change(where, f"translated from TensorFlow: {text!r} -> {translated!r}")
    return translated


# ------------------------------------------------------------------------------------------------ optimizer
_ADAM_DEFAULTS = {"beta1": 0.9, "beta2": 0.999}
_OPTIMIZERS: dict[str, tuple[str | None, dict[str, float]]] = {
    # EasyRec message: (recstack class, the message's other fields and EasyRec's defaults for them)
    "adam_optimizer": ("Adam", _ADAM_DEFAULTS),
    "lazy_adam_optimizer": ("Adam", _ADAM_DEFAULTS),
    "adam_async_optimizer": ("Adam", _ADAM_DEFAULTS),
    "adamw_optimizer": ("AdamW", {**_ADAM_DEFAULTS, "weight_decay": 1e-6}),
    "adam_asyncw_optimizer": ("AdamW", {**_ADAM_DEFAULTS, "weight_decay": 1e-6}),
    "adagrad_optimizer": ("Adagrad", {"initial_accumulator_value": 0.1}),
    "momentum_optimizer": ("SGD", {"momentum_optimizer_value": 0.9}),
    "momentumw_optimizer": ("SGD", {"momentum_optimizer_value": 0.9, "weight_decay": 1e-6}),
    "rms_prop_optimizer": (None, {}),
    "ftrl_optimizer": (None, {}),
}
_MAX_PIECES = 1000


def _train_config(train: Tree, runner: Tree, hp: Tree, report: _Report) -> Tree:
    num_steps = int(_last(train.get("num_steps", 0)) or 0)
    optimizer: Tree = {"class": "Adam", "learning_rate": 0.002}
    configs = train.get("optimizer_config", [])
    for key, value in train.items():
        where = f"train_config.{key}"
        if key == "optimizer_config":
            if not configs:
                continue
            optimizer = _optimizer(configs[0], f"{where}[0]", num_steps, report)
            for i, extra in enumerate(configs[1:], 1):
                report.drop(f"{where}[{i}]", extra, "recstack has one optimizer for all parameters (sparse tables "
                                                    "row-wise, optimizer.sparse)")
        elif key == "gradient_clipping_by_norm":
            if float(_number(_last(value), where)) > 0:
                hp["clip_by_norm"] = _last(value)
        elif key == "log_step_count_steps":
            runner["print_interval"] = max(1, int(_number(_last(value), where)))
        elif key == "intra_op_parallelism_threads":
            if int(_number(_last(value), where)) > 0:
                runner["cpu_threads"] = int(_last(value))
        else:
            report.drop(where, value)
    if not configs:
        report.change("hyper_parameters.optimizer", "train_config names no optimizer_config: Adam at EasyRec's "
                                                    "default rate 0.002")
    return optimizer


def _optimizer(config: Any, where: str, num_steps: int, report: _Report) -> Tree:
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a message (optimizer_config {{ adam_optimizer {{ ... }} }})")
    out: Tree = {"class": "Adam", "learning_rate": 0.002}
    found = False
    for key, value in config.items():
        path = f"{where}.{key}"
        if key in _OPTIMIZERS and not found:
            found = True
            cls, defaults = _OPTIMIZERS[key]
            message = _message(config, key, path)
            if cls is None:
                report.drop(path, None, f"recstack has no {key.removesuffix('_optimizer')} optimizer: the YAML uses "
                                        "Adam with its learning rate")
            else:
                out["class"] = cls
                if key in ("lazy_adam_optimizer", "adam_async_optimizer", "adam_asyncw_optimizer"):
                    report.change("hyper_parameters.optimizer.class", f"{key} becomes {cls} (recstack's sparse "
                                                                      "tables take lazy, row-wise Adam steps)")
            rate = _learning_rate(message.get("learning_rate", {}), f"{path}.learning_rate", num_steps, report)
            out.pop("learning_rate")
            out.update(rate)
            for name, default in defaults.items():
                setting = float(_last(message.get(name, default)))
                if cls is None:
                    continue
                if cls == "AdamW" and name == "weight_decay":
                    out["weight_decay"] = _adamw_decay(setting, rate, report)
                elif name in ("beta1", "beta2"):
                    if not math.isclose(setting, default):
                        report.drop(f"{path}.{name}", setting, f"recstack's {cls} uses torch's default {default}")
                else:  # momentum, Adagrad's initial accumulator, SGD's weight decay: EasyRec's default applies too
                    report.drop(f"{path}.{name}", setting, f"recstack's {cls} has no {name} setting"
                                + ("" if name in message else " (EasyRec's default)"))
            for name, value in message.items():
                if name != "learning_rate" and name not in defaults and cls is not None:
                    report.drop(f"{path}.{name}", value)
        elif key == "use_moving_average" and not _last(value):
            continue
        else:
            report.drop(path, value)
    return out


def _adamw_decay(decay: float, rate: Tree, report: _Report) -> float:
    """torch's AdamW ``weight_decay`` for EasyRec's: TensorFlow's decoupled decay subtracts ``decay * w`` per
    step, torch's ``lr * weight_decay * w``, so ``weight_decay = decay / lr`` (the schedule's first rate)."""
    base = rate["learning_rate"] if "learning_rate" in rate else rate["lr_schedule"]["values"][0]
    report.change("hyper_parameters.optimizer.weight_decay",
                  f"EasyRec's weight_decay {decay:g} subtracts weight_decay * w per step, torch's AdamW "
                  f"lr * weight_decay * w: written as {decay:g} / {base:g}"
                  + (" (the schedule's first rate: later, smaller rates decay less than EasyRec)"
                     if "lr_schedule" in rate else ""), decay)
    return decay / base


def _learning_rate(config: Any, where: str, num_steps: int, report: _Report) -> Tree:
    if not isinstance(config, dict) or not config:
        report.change("hyper_parameters.optimizer.learning_rate", "no learning_rate message: EasyRec's default "
                                                                  "0.002")
        return {"learning_rate": 0.002}
    kind, message = next(iter(config.items()))
    message = message if isinstance(message, dict) else {}
    path = f"{where}.{kind}"

    def get(name: str, default: Any) -> Any:
        return _last(message.get(name, default))

    if kind == "constant_learning_rate":
        return {"learning_rate": float(get("learning_rate", 0.002))}
    if kind == "manual_step_learning_rate":
        base = float(get("initial_learning_rate", 0.002))
        schedule = message.get("schedule", [])
        steps = [int(s.get("step", 0)) for s in schedule]
        rates = [float(s.get("learning_rate", 0.002)) for s in schedule]
        if get("warmup", False):
            report.drop(f"{path}.warmup", True, "a linear warm-up between the steps is not supported: the YAML "
                                                f"uses the constant rate {base:g}")
            return {"learning_rate": base}
        if steps and steps[0] > 0 and all(b > a for a, b in zip(steps, steps[1:])):
            return {"lr_schedule": {"boundaries": steps, "values": [base, *rates]}}
        report.drop(path, None, f"the steps {steps} are not positive and increasing: the YAML uses the constant "
                                f"rate {base:g}")
        return {"learning_rate": base}
    if kind == "exponential_decay_learning_rate":
        return _exponential(message, path, num_steps, report)
    base = float(get("learning_rate_base", 0.002))
    report.drop(path, None, f"recstack's schedules are piecewise constant (optimizer.lr_schedule): the YAML uses "
                            f"the constant rate {base:g}")
    return {"learning_rate": base}


def _exponential(message: Tree, path: str, num_steps: int, report: _Report) -> Tree:
    """EasyRec's staircase exponential decay as piecewise-constant steps, when it has a finite number of them.

    The rate of step ``t`` is ``max(base * factor ** ((t - burnin) // decay_steps), min_rate)`` (``base``
    during ``burnin_steps``): constant between ``burnin + k * decay_steps``; the pieces end where the rate
    reaches ``min_learning_rate`` or at ``train_config.num_steps``.
    """
    def get(name: str, default: Any) -> Any:
        return _last(message.get(name, default))

    base = float(get("initial_learning_rate", 0.002))
    decay_steps = int(get("decay_steps", 4000000))
    factor = float(get("decay_factor", 0.95))
    burnin_steps = int(get("burnin_steps", 0))
    burnin_rate = float(get("burnin_learning_rate", 0.0))
    min_rate = float(get("min_learning_rate", 0.0))
    why = None
    if not get("staircase", True):
        why = "a continuous (staircase: false) decay"
    elif burnin_rate != 0 and burnin_steps > 0:
        why = "a linear burn-in"
    elif decay_steps < 1 or not 0 < factor < 1:
        why = f"decay_steps {decay_steps} / decay_factor {factor:g}"
    if why is None:
        boundaries: list[int] = []
        values = [base]
        while values[-1] > min_rate and len(boundaries) < _MAX_PIECES:
            step = burnin_steps + (len(boundaries) + 1) * decay_steps
            if num_steps and step >= num_steps:
                break
            boundaries.append(step)
            values.append(max(base * factor ** len(boundaries), min_rate))
        if values[-1] > min_rate and len(boundaries) >= _MAX_PIECES:
            why = (f"more than {_MAX_PIECES} steps before the rate reaches min_learning_rate {min_rate:g} "
                   "(set train_config.num_steps)")
        elif not boundaries:
            report.change("hyper_parameters.optimizer.learning_rate",
                          f"{path}: the rate does not decay within {num_steps} steps: the constant rate {base:g}")
            return {"learning_rate": base}
        else:
            report.change("hyper_parameters.optimizer.lr_schedule",
                          f"{path}: the staircase decay as {len(boundaries)} piecewise-constant steps"
                          + (f" up to train_config.num_steps {num_steps}" if num_steps else ""))
            return {"lr_schedule": {"boundaries": boundaries, "values": values}}
    report.drop(path, None, f"{why} is not piecewise constant: the YAML uses the constant rate {base:g}")
    return {"learning_rate": base}


# ------------------------------------------------------------------------------------------------ eval_config
def _eval_config(evaluation: Tree, model: Tree, report: _Report) -> None:
    """``metrics_set``: a single-task model's default metric carries over (recstack logs it); the rest is listed."""
    multi = model.get("model_class") in MULTI_TASK_CLASSES or any(
        isinstance(v, dict) and "task_towers" in v for v in model.values())
    default = "auc" if model.get("loss_type", "CLASSIFICATION") == "CLASSIFICATION" else "mean_squared_error"
    reason = ("a multi-task model logs each tower's metrics_set" if multi else
              "a RankModel logs auc (CLASSIFICATION) or mse (L2_LOSS)")
    for key, value in evaluation.items():
        where = f"eval_config.{key}"
        if key != "metrics_set":
            report.drop(where, value)
            continue
        for i, metric in enumerate(value):
            for name, params in (metric.items() if isinstance(metric, dict) else [(metric, {})]):
                path = f"{where}[{i}].{name}"
                if multi or name != default:
                    report.drop(path, None, reason)
                    continue
                for option, setting in (params if isinstance(params, dict) else {}).items():
                    report.drop(f"{path}.{option}", setting, "recstack computes the metric exactly")


# ------------------------------------------------------------------------------------------------ lambdas
#: tf function -> its parameters in order (for positional arguments)
_TF_SIGNATURES: dict[str, tuple[str, ...]] = {
    "add_n": ("inputs", "name"),
    "reduce_sum": ("input_tensor", "axis", "keepdims", "name"),
    "reduce_mean": ("input_tensor", "axis", "keepdims", "name"),
    "reduce_max": ("input_tensor", "axis", "keepdims", "name"),
    "reduce_min": ("input_tensor", "axis", "keepdims", "name"),
    "concat": ("values", "axis", "name"),
    "stack": ("values", "axis", "name"),
    "squeeze": ("input", "axis", "name"),
    "expand_dims": ("input", "axis", "name"),
    "reshape": ("tensor", "shape", "name"),
    "sigmoid": ("x", "name"),
    "tanh": ("x", "name"),
    "relu": ("features", "name"),
    "softmax": ("logits", "axis", "name"),
}
#: TensorFlow 1 keyword spellings
_TF_ALIASES = {"keep_dims": "keepdims", "reduction_indices": "axis", "squeeze_dims": "axis", "dim": "axis"}
_REDUCTIONS = {"reduce_sum": "sum", "reduce_mean": "mean", "reduce_max": "amax", "reduce_min": "amin"}
_PREFIXES = ("tf.", "tf.math.", "tf.nn.", "tf.compat.v1.")


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _torch(fn: str, args: list[ast.expr], keywords: dict[str, ast.expr] | None = None) -> ast.Call:
    return ast.Call(func=ast.Attribute(value=ast.Name("torch", ast.Load()), attr=fn, ctx=ast.Load()), args=args,
                    keywords=[ast.keyword(arg=k, value=v) for k, v in (keywords or {}).items()])


def _dims(node: ast.expr) -> ast.expr:
    """An axis list ``[1, 2]`` as the tuple torch takes."""
    return ast.Tuple(elts=node.elts, ctx=ast.Load()) if isinstance(node, ast.List) else node


class _TfToTorch(ast.NodeTransformer):
    def __init__(self) -> None:
        self.problems: list[str] = []

    def visit_Call(self, node: ast.Call) -> ast.expr:  # noqa: N802 (ast.NodeVisitor's naming)
        self.generic_visit(node)
        name = _dotted(node.func)
        if name is None or not name.startswith("tf."):
            return node
        op = next((name[len(p):] for p in sorted(_PREFIXES, key=len, reverse=True) if name.startswith(p)), name)
        if op not in _TF_SIGNATURES or "." in op:
            self.problems.append(f"{name} has no torch translation here")
            return node
        params = _TF_SIGNATURES[op]
        if len(node.args) > len(params) or any(isinstance(a, ast.Starred) for a in node.args) \
                or any(k.arg is None for k in node.keywords):
            self.problems.append(f"{name}: unexpected arguments")
            return node
        bound = dict(zip(params, node.args))
        for keyword in node.keywords:
            key = _TF_ALIASES.get(keyword.arg, keyword.arg)
            if key not in params or key in bound:
                self.problems.append(f"{name}: unexpected argument {keyword.arg!r}")
                return node
            bound[key] = keyword.value
        bound.pop("name", None)
        first = bound.get(params[0])
        if first is None:
            self.problems.append(f"{name}: missing its first argument")
            return node
        axis, keepdims = bound.get("axis"), bound.get("keepdims")
        if op == "add_n":
            stacked = _torch("stack", [first, ast.Constant(0)])
            return ast.Call(func=ast.Attribute(value=stacked, attr="sum", ctx=ast.Load()), args=[ast.Constant(0)],
                            keywords=[])
        if op in _REDUCTIONS:
            keywords = {}
            if axis is not None and not (isinstance(axis, ast.Constant) and axis.value is None):
                keywords["dim"] = _dims(axis)
                if keepdims is not None:
                    keywords["keepdim"] = keepdims
            elif keepdims is not None and not (isinstance(keepdims, ast.Constant) and keepdims.value is False):
                self.problems.append(f"{name}: keepdims over all axes")
                return node
            return _torch(_REDUCTIONS[op], [first], keywords)
        if op in ("concat", "expand_dims"):
            if axis is None:
                self.problems.append(f"{name}: missing axis")
                return node
            return _torch("cat" if op == "concat" else "unsqueeze", [first], {"dim": axis})
        if op in ("stack", "squeeze"):
            return _torch(op, [first], {"dim": _dims(axis)} if axis is not None else {})
        if op == "softmax":
            return _torch("softmax", [first], {"dim": axis if axis is not None else ast.Constant(-1)})
        if op == "reshape":
            if "shape" not in bound:
                self.problems.append(f"{name}: missing shape")
                return node
            return _torch("reshape", [first, bound["shape"]])
        return _torch(op, [first])  # sigmoid, tanh, relu


def _tf_names(tree: ast.AST) -> list[str]:
    """The full dotted names (``tf.keras.backend.sum``) of the ``tf`` references left in ``tree``."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "tf":
            top: ast.AST = node
            while isinstance(parents.get(top), ast.Attribute):
                top = parents[top]
            names.add(_dotted(top) or "tf")  # type: ignore[arg-type]
    return sorted(names)


def translate_lambda(text: str) -> tuple[str, list[str]]:
    """Rewrite an EasyRec lambda over TensorFlow as one over torch, on its syntax tree.

    ``tf.add_n(x)`` -> ``torch.stack(x, 0).sum(0)``; ``tf.reduce_sum / reduce_mean / reduce_max / reduce_min
    (x, axis, keepdims)`` -> ``torch.sum / mean / amax / amin(x, dim=..., keepdim=...)``; ``tf.concat(x, axis)``
    -> ``torch.cat(x, dim=axis)``; ``tf.stack``, ``tf.squeeze`` -> ``torch.stack``, ``torch.squeeze`` with
    ``dim``; ``tf.expand_dims(x, axis)`` -> ``torch.unsqueeze(x, dim=axis)``; ``tf.reshape``,
    ``tf.(nn.)sigmoid / tanh / relu / softmax`` -> torch's. Positional and keyword arguments (TF 1 spellings
    ``keep_dims``, ``reduction_indices`` too) are matched to the TensorFlow signature; ``name=`` is dropped.

    Returns:
        ``(text, problems)``: the translated text (the input unchanged when it names no ``tf.``), and what
        could not be translated (then the text is returned unchanged).
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        return text, ([f"not a Python expression ({err.msg})"] if "tf." in text else [])
    if not any(isinstance(n, ast.Name) and n.id == "tf" for n in ast.walk(tree)):
        return text, []
    transformer = _TfToTorch()
    new = transformer.visit(tree)
    problems = list(transformer.problems)
    problems += [f"{name} has no torch translation here" for name in _tf_names(new)
                 if not any(p.startswith(f"{name} ") or p.startswith(f"{name}:") for p in problems)]
    if problems:
        return text, problems
    return ast.unparse(ast.fix_missing_locations(new)), []


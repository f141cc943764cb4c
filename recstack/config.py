"""YAML configuration: load, override, validate, resolve paths, log.

A recstack config has PaddleRec's two sections::

    runner:            # how to run: data, batch sizes, epochs, checkpoints, devices
      train_data_dir: "data/sample_data/train"
      train_batch_size: 512
      ...
    hyper_parameters:  # what to run: optimizer and the model's own keys
      optimizer: {class: Adam, learning_rate: 0.001}
      sparse_feature_number: 1000001
      ...

``runner`` keys are fixed by :data:`RUNNER_KEYS` (every key, its type, default and
meaning; ``doc/yaml.md`` lists the same table). ``hyper_parameters`` keys are
read by the model's wrapper and reader with :meth:`Config.get`; once those are
built, a key nothing read is reported by :func:`check_hyper_parameters`.

Overrides use dotted keys with YAML-typed values, as on the command line
``-o runner.epochs=2 hyper_parameters.fc_sizes=[64,32] runner.model_init_path=null``.
Data paths (``train_data_dir``, ``test_data_dir``, ``cache_dir``) resolve against
the YAML's folder, as in PaddleRec; output paths (``model_save_path`` ...) against
the working directory.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

_MISSING = object()


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file/key."""


@dataclass(frozen=True)
class Key:
    """Schema entry of one ``runner`` key."""

    types: tuple[type, ...]
    default: Any
    help: str
    data_path: bool = False  # resolved against the YAML's folder
    compat_only: bool = False  # accepted for PaddleRec compatibility, has no effect here


_STR = (str,)
_OPT_STR = (str, type(None))
_INT = (int,)
_OPT_INT = (int, type(None))
_BOOL = (bool,)

#: Every ``runner`` key recstack understands. ``doc/yaml.md`` documents the same table.
RUNNER_KEYS: dict[str, Key] = {
    # --- data
    "train_data_dir": Key(_OPT_STR, None, "folder of training files (all files in it, "
                          "sorted), or one file, or a glob (data/*.parquet); relative to the YAML's folder",
                          data_path=True),
    "train_reader_path": Key(_OPT_STR, None, "reader for training: a module name in the "
                             "model folder (e.g. criteo_reader) or a core reader name; unset: the reader of "
                             "hyper_parameters.data_config.input_type"),
    "train_batch_size": Key(_INT, 512, "training batch size"),
    "test_data_dir": Key(_OPT_STR, None, "folder of evaluation files (or one file, or a glob); relative to the "
                         "YAML's folder", data_path=True),
    "infer_reader_path": Key(_OPT_STR, None, "reader for evaluation (defaults to train_reader_path)"),
    "infer_batch_size": Key(_INT, 512, "evaluation batch size"),
    "shuffle": Key(_BOOL, False, "shuffle training data: file order and rows within each parsed block (seeded)"),
    "num_workers": Key(_INT, 1, "background threads that parse data ahead of the model (0 = parse inline)"),
    "bucket_by_length": Key(_BOOL, False, "readers with variable-length columns (DIN's "
                            "history): group each parsed block's rows by length into batches "
                            "(batch order shuffled with shuffle), so batches pad less"),
    "cache_dir": Key(_OPT_STR, None, "folder for the binary cache of parsed files (raw .bin arrays "
                     "+ meta.json, keyed by path, size, mtime and reader settings); relative to the "
                     "YAML's folder like the data; null = parse text each epoch", data_path=True),
    # --- training loop
    "epochs": Key(_INT, 1, "number of training epochs"),
    "print_interval": Key(_INT, 10, "log a batch line every N batches"),
    "seed": Key(_INT, 12345, "random seed (torch, numpy, python, shuffling); 0 to 2**32 - 1"),
    "use_auc": Key(_BOOL, True, "reset metrics at the start of every epoch (False: metrics accumulate over epochs)"),
    "topk": Key((list,), [10, 50, 100], "retrieval models: the K of hit_rate@K, recall@K and ndcg@K"),
    "mask_seen": Key(_BOOL, True, "retrieval models: leave each user's already-seen items (model_config.seen) out "
                     "of the ranked corpus"),
    "use_index": Key(_BOOL, False, "retrieval models: tools/infer.py ranks through a FAISS index over each "
                     "checkpoint's item vectors (runner.index_kind) instead of exact search"),
    "index_kind": Key(_STR, "hnsw", "retrieval models with use_index: flat, ivf or hnsw (recstack/retrieval/index.py "
                      "defaults)"),
    "model_save_path": Key(_STR, "output_model", "checkpoints are written to "
                           "<model_save_path>/<epoch>/ (relative to the working directory)"),
    "model_init_path": Key(_OPT_STR, None, "warm start: checkpoint folder "
                           "whose model parameters are loaded before training"),
    "save_optimizer": Key(_BOOL, True, "also save the optimizer state in each checkpoint"),
    "previous_run": Key(_STR, "archive", "what a run does with another run's <epoch>/ folders "
                        "found in model_save_path, before its first epoch: archive (move them "
                        "to <model_save_path>/previous_runs/<run id>/), remove (delete them) "
                        "or refuse (stop, exit 2); see doc/yaml.md, Runs and output folders"),
    # --- online training over time partitions (tools/online_trainer.py, doc/online_training.md)
    "partition_pattern": Key(_STR, "%Y%m%d/%H", "online: the partition folders under train_data_dir, as a strftime "
                             "pattern (%Y%m%d/%H hourly, %Y%m%d daily; the finest field sets the step)"),
    "start_partition": Key(_OPT_STR, None, "online: the first partition (in partition_pattern, e.g. 20260101/00); "
                           "null = the earliest one found"),
    "end_partition": Key(_OPT_STR, None, "online: the last partition trained (inclusive); null = follow the data "
                         "as it arrives"),
    "partition_count": Key(_OPT_INT, None, "online: train this many partitions from start_partition, then stop "
                           "(another way to set end_partition)"),
    "done_file": Key(_OPT_STR, "_SUCCESS", "online: the file that marks a partition complete (never read as data); "
                     "null = a partition is complete when its folder exists"),
    "poll_interval": Key((int, float), 10, "online: seconds between looks for a partition's done_file"),
    "wait_timeout": Key((int, float, type(None)), None, "online: seconds to wait for a partition's done_file, then "
                        "an error naming the partition and the file (or a clean stop with stop_on_timeout); "
                        "null = wait for ever"),
    "stop_on_timeout": Key(_BOOL, False, "online: after wait_timeout without the next partition, stop with exit "
                           "status 0 (a restart continues with that partition) instead of an error"),
    "keep_checkpoints": Key(_OPT_INT, None, "online: keep the newest N pass checkpoints (and exports); null = all"),
    "export_every_pass": Key(_BOOL, False, "online: also export each pass (TorchScript + ONNX, as "
                             "tools/to_static.py) to <model_save_path>/export/<pass>/"),
    "freeze_after": Key(_OPT_INT, None, "online: train the first N partitions, then only evaluate the frozen "
                        "model on the later ones (the baseline of progressive validation)"),
    # --- evaluation
    "infer_load_path": Key(_OPT_STR, None, "folder holding <epoch>/ checkpoints "
                           "to evaluate (defaults to model_save_path)"),
    "infer_start_epoch": Key(_INT, 0, "first checkpoint epoch evaluated by tools/infer.py"),
    "infer_end_epoch": Key(_OPT_INT, None, "evaluate epochs [infer_start_epoch, infer_end_epoch) (defaults to epochs)"),
    # --- devices, threads
    "use_gpu": Key(_BOOL, False, "train/evaluate on CUDA; a clear message and CPU fallback when no GPU is present"),
    "cpu_threads": Key(_OPT_INT, None, "torch intra-op threads (null = "
                       "torch's default); see doc/yaml.md on the OpenMP trap"),
    # --- logging
    "use_visual": Key(_BOOL, False, "write TensorBoard scalars (loss, metrics per interval and per epoch)"),
    "visual_log_path": Key(_OPT_STR, None, "TensorBoard folder (defaults to <model_save_path>/visual_log)"),
    "progress_bar": Key((bool, type(None)), None, "tqdm progress bar (null = only when stderr is a terminal)"),
    "profile": Key(_BOOL, False, "trace profile_steps training steps with torch.profiler (after profile_wait "
                   "untraced ones) into <model_save_path>/profile/ (trace.json, top_ops.txt), then train on; "
                   "see doc/profiling.md"),
    "profile_wait": Key(_INT, 5, "with profile: training steps left untraced before the trace (warm-up)"),
    "profile_steps": Key(_INT, 20, "with profile: training steps traced"),
    # --- compiled training (tools/static_trainer.py)
    "compile": Key(_BOOL, False, "compile the network's forward and backward with torch.compile "
                   "(tools/static_trainer.py sets it; recstack/compile.py, doc/static.md)"),
    "compile_backend": Key(_STR, "inductor", "with compile: torch.compile backend (inductor; aot_eager or eager "
                           "to trace without generating code)"),
    "compile_mode": Key(_STR, "default", "with compile: default, reduce-overhead, max-autotune or "
                        "max-autotune-no-cudagraphs"),
    "compile_dynamic": Key((bool, type(None)), None, "with compile: dynamic shapes (null: torch's automatic "
                           "choice, a second batch shape recompiles once as dynamic)"),
    "compile_fallback": Key(_BOOL, False, "with compile: where compilation cannot work, say why and train "
                            "eagerly instead of stopping"),
    # --- distributed
    "use_fleet": Key(_BOOL, False, "multi-process data-parallel training (PaddleRec's fleet) on torch.distributed: "
                     "start with torchrun --nproc_per_node=N tools/trainer.py -m ...; without torchrun (WORLD_SIZE "
                     "unset) the job runs as one process, with a warning (doc/distributed.md)"),
    "dist_backend": Key(_OPT_STR, None, "torch.distributed backend with use_fleet: gloo (CPU) "
                        "or nccl (GPU); null = nccl when use_gpu finds a GPU, gloo otherwise"),
    "dist_timeout_s": Key((int, float), 1800, "process-group timeout in seconds with use_fleet: "
                          "a collective waiting longer (a hung or lost rank) fails the job"),
    "dist_comm_hook": Key(_OPT_STR, None, "DDP gradient compression with use_fleet: fp16 or bf16 (dense "
                          "gradients only: refused with sparse embedding gradients); null = none"),
    "embedding_sharding": Key(_OPT_STR, None, "with use_fleet: shard the id table of the slot-format "
                              "rank models on TorchRec (optional extra, tools/install_torchrec.sh): "
                              "table_wise, column_wise, row_wise, table_row_wise, data_parallel or auto "
                              "(TorchRec's planner chooses); null = plain DDP (doc/distributed.md)"),
    # --- PaddleRec keys accepted so that PaddleRec configs load unchanged; they have no effect here
    "use_inference": Key(_BOOL, False, "PaddleRec: save an inference model each epoch; recstack "
                         "exports once, after training: tools/to_static.py", compat_only=True),
    "save_inference_feed_varnames": Key((list, type(None)), None, "PaddleRec inference feed names", compat_only=True),
    "save_inference_fetch_varnames": Key((list, type(None)), None, "PaddleRec inference fetch names", compat_only=True),
    "reader_type": Key(_OPT_STR, None, "PaddleRec reader type (QueueDataset/InmemoryDataset/DataLoader)",
                       compat_only=True),
    "sync_mode": Key(_OPT_STR, None, "PaddleRec parameter-server sync mode", compat_only=True),
    "thread_num": Key(_OPT_INT, None, "PaddleRec static-graph thread count; use cpu_threads", compat_only=True),
    "use_xpu": Key(_BOOL, False, "PaddleRec: Kunlun XPU", compat_only=True),
    "use_npu": Key(_BOOL, False, "PaddleRec: Ascend NPU", compat_only=True),
    "split_file_list": Key(_BOOL, False, "PaddleRec: split files across fleet workers", compat_only=True),
}


# ------------------------------------------------------------------ value checks
class Check:
    """A declarative check of one config value: a predicate and, in words, what it accepts.

    Runner and optimizer ranges below use these, and so does a model wrapper's
    ``hyper_parameter_schema`` (:class:`recstack.wrapper.DygraphModel`), checked by
    :func:`check_schema`::

        hyper_parameter_schema = {"sparse_feature_number": PositiveInt, "fc_sizes": ListOf(PositiveInt)}

    Args:
        expected: what a good value is, with its article (``"a positive int"``): the error
            message reads ``expected <expected>, got <value>``.
        predicate: ``value -> bool``; it checks the type too (a bool is never an int here).
        plural: the phrase for a list of such values (``"positive ints"``), for :func:`ListOf`.
    """

    def __init__(self, expected: str, predicate: Callable[[Any], bool], plural: str | None = None) -> None:
        self.expected, self.predicate = expected, predicate
        self.plural = plural or f"values that are each {expected}"

    def __call__(self, value: Any) -> bool:
        return bool(self.predicate(value))

    def __repr__(self) -> str:
        return f"Check({self.expected!r})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or a finite float (NaN and infinities are never a setting)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def IntRange(low: int, high: int | None = None) -> Check:  # noqa: N802 (reads like a type in a schema)
    """An int in ``[low, high]`` (``high=None``: no upper bound)."""
    if high is None:
        return Check(f"an int >= {low}", lambda v: _is_int(v) and v >= low, f"ints >= {low}")
    return Check(f"an int in [{low}, {high}]", lambda v: _is_int(v) and low <= v <= high, f"ints in [{low}, {high}]")


def Nullable(check: Check) -> Check:  # noqa: N802
    """``check`` or null."""
    return Check(f"{check.expected} or null", lambda v: v is None or check(v), f"{check.plural} or nulls")


def ListOf(item: Check, min_len: int = 0) -> Check:  # noqa: N802
    """A list whose every item passes ``item``, with at least ``min_len`` items."""
    what = f"a non-empty list of {item.plural}" if min_len == 1 else (
        f"a list of at least {min_len} {item.plural}" if min_len > 1 else f"a list of {item.plural}")
    return Check(what, lambda v: isinstance(v, list) and len(v) >= min_len and all(item(x) for x in v))


def OneOf(*choices: str) -> Check:  # noqa: N802
    """One of the strings ``choices`` (case-insensitive)."""
    lowered = {c.lower() for c in choices}
    return Check(f"one of {', '.join(choices)}", lambda v: isinstance(v, str) and v.lower() in lowered)


PositiveInt = Check("a positive int", lambda v: _is_int(v) and v > 0, "positive ints")
NonNegativeInt = IntRange(0)
PositiveNumber = Check("a positive finite number", lambda v: _is_number(v) and v > 0, "positive finite numbers")
NonNegativeNumber = Check("a finite number >= 0", lambda v: _is_number(v) and v >= 0, "finite numbers >= 0")
Bool = Check("a bool (true or false)", lambda v: isinstance(v, bool), "bools")
String = Check("a string", lambda v: isinstance(v, str), "strings")

#: The largest seed every seeded generator here accepts (numpy's ``np.random.seed``: 2**32 - 1).
MAX_SEED = 2**32 - 1

#: Range checks of ``runner`` keys (after their type check; the batch sizes, ``epochs`` and
#: ``print_interval`` are checked in :func:`validate_runner`).
RUNNER_RANGES: dict[str, Check] = {
    "seed": IntRange(0, MAX_SEED),
    "cpu_threads": Nullable(PositiveInt),
    "num_workers": NonNegativeInt,
    "infer_start_epoch": NonNegativeInt,
    "infer_end_epoch": Nullable(NonNegativeInt),
    "dist_timeout_s": PositiveNumber,
    "previous_run": OneOf("archive", "remove", "refuse"),
    "profile_wait": NonNegativeInt,
    "profile_steps": PositiveInt,
    "partition_count": Nullable(PositiveInt),
    "poll_interval": PositiveNumber,
    "wait_timeout": Nullable(NonNegativeNumber),
    "keep_checkpoints": Nullable(PositiveInt),
    "freeze_after": Nullable(NonNegativeInt),
    "compile_backend": OneOf("inductor", "aot_eager", "eager", "cudagraphs"),
    "compile_mode": OneOf("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
}

#: Optimizer keys under ``hyper_parameters.optimizer``.
OPTIMIZER_KEYS: dict[str, Key] = {
    "class": Key(_STR, "Adam", "optimizer name: SGD, Adam, Adagrad, AdamW (case-insensitive)"),
    "learning_rate": Key((float, int), 0.001, "learning rate"),
    "weight_decay": Key((float, int), 0.0, "AdamW's decoupled weight decay (dense parameters)"),
    "sparse": Key(_BOOL, True, "row-wise (sparse) updates for embedding tables; Adam/AdamW use SparseAdam for them"),
    "lr_schedule": Key((dict, type(None)), None, "learning-rate schedule stepped once per batch: {boundaries: "
                       "[steps], values: [rates]} (Paddle's PiecewiseDecay); see LR_SCHEDULE_KEYS"),
    "strategy": Key(_OPT_STR, None, "PaddleRec fleet strategy (sync/async); no effect here", compat_only=True),
}

#: Keys of ``hyper_parameters.optimizer.lr_schedule`` (a piecewise-constant rate over training steps).
LR_SCHEDULE_KEYS: dict[str, Key] = {
    "class": Key(_STR, "PiecewiseDecay", "schedule kind; PiecewiseDecay (Paddle's name) is the one available"),
    "boundaries": Key((list,), None, "step numbers (batches since the start of training, counted "
                      "from 0) where the rate changes; strictly increasing positive ints"),
    "values": Key((list,), None, "the rates: values[0] before boundaries[0], "
                  "values[i] from boundaries[i-1] on; one more than boundaries"),
}

#: Common names users type for a key, mapped to recstack's (PaddleRec's) name, for did-you-mean.
ALIASES: dict[str, str] = {
    "lr": "learning_rate", "batch_size": "train_batch_size", "epoch": "epochs", "num_epochs": "epochs",
    "optimizer_class": "class", "name": "class", "type": "class", "l2": "reg", "l2_reg": "reg",
    "threads": "cpu_threads", "num_threads": "cpu_threads", "gpu": "use_gpu", "save_path": "model_save_path",
}

#: Keys of ``hyper_parameters`` that belong to the training core, not to a model.
CORE_HYPER_PARAMETERS: dict[str, Key] = {
    "optimizer": Key((dict,), {}, "optimizer settings (see OPTIMIZER_KEYS)"),
    "reg": Key((float, int), 0.0, "L2 regularisation: added to dense gradients, and to the rows "
               "touched in a batch for sparse tables (as Paddle's L2Decay on sparse gradients)"),
    "clip_by_norm": Key((float, int, type(None)), None, "clip the global gradient norm (all parameters, "
                        "tables included) to this value before each step; null or 0: no clipping"),
}

#: Range checks of ``hyper_parameters.optimizer`` keys (after their type check). The learning rate
#: must be positive: torch's SparseAdam, used for the tables, refuses 0.
OPTIMIZER_RANGES: dict[str, Check] = {
    "learning_rate": PositiveNumber,
    "weight_decay": NonNegativeNumber,
}

#: Range checks of the core ``hyper_parameters`` keys.
CORE_RANGES: dict[str, Check] = {
    "reg": NonNegativeNumber,
    "clip_by_norm": Nullable(NonNegativeNumber),
}

SECTIONS = ("runner", "hyper_parameters")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2, not only ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _check_duplicate_keys(node: yaml.Node, path: Path, prefix: str = "", seen_nodes: set[int] | None = None) -> None:
    """Refuse a mapping that has a key twice (PyYAML would silently keep the last value).

    Raises:
        ConfigError: naming the dotted key and both lines.
    """
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias of a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                _check_duplicate_keys(value_node, path, prefix, seen_nodes)
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base': explicit keys may override merged ones
                _check_duplicate_keys(value_node, path, prefix, seen_nodes)
                continue
            line, name = key_node.start_mark.line + 1, (key_node.tag, key_node.value)
            if name in lines:
                raise ConfigError(f"{path}:{line}: duplicate key '{prefix}{key_node.value}' (lines {lines[name]} "
                                  f"and {line}); YAML would silently keep the last one: remove one of them")
            lines[name] = line
            _check_duplicate_keys(value_node, path, f"{prefix}{key_node.value}.", seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, path, f"{prefix[:-1]}[{i}].", seen_nodes)


def parse_value(text: str) -> Any:
    """Type an override value the way YAML would: ints, floats, bools, lists, null."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known key (or a known alias), or ``""``."""
    known = list(known)
    prefix, _, last = key.rpartition(".")
    alias = ALIASES.get(last)
    if alias is not None:
        full = f"{prefix}.{alias}" if prefix else alias
        if full in known:
            return f"; did you mean '{full}'?"
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def type_name(types: Sequence[type]) -> str:
    names = {int: "int", float: "float", str: "string", bool: "bool", list: "list", dict: "mapping", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def is_finite(value: Any) -> bool:
    """False for a NaN or infinite float (never a setting: ``.nan`` passes every ``<`` check), else True."""
    return not isinstance(value, float) or math.isfinite(value)


def check_type(value: Any, types: Sequence[type]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int in Python; not for a config
    return isinstance(value, tuple(types))


class Config:
    """A loaded config: nested sections with PaddleRec-style dotted ``get``.

    Attributes:
        path: the YAML file (``None`` for configs built in code).
        config_dir: the folder data paths resolve against.
    """

    def __init__(self, data: Mapping[str, Any], path: str | os.PathLike | None = None,
                 overridden: Iterable[str] = ()) -> None:
        self._data: dict[str, Any] = copy.deepcopy(dict(data))
        self.path = Path(path).resolve() if path is not None else None
        self.config_dir = self.path.parent if self.path is not None else Path.cwd()
        self.overridden = set(overridden)
        self.accessed_hyper_parameters: set[str] = set()

    # -------------------------------------------------------------- access
    def get(self, key: str, default: Any = _MISSING, type: type | tuple[type, ...] | None = None) -> Any:
        """Value at a dotted key such as ``"hyper_parameters.optimizer.learning_rate"``.

        Args:
            key: dotted key.
            default: returned when the key is absent (otherwise absence is an error).
            type: expected type(s) of the value; an int is accepted for float.

        Raises:
            ConfigError: the key is absent and no default was given, or the value
                has the wrong type.
        """
        parts = key.split(".")
        if parts[0] == "hyper_parameters" and len(parts) > 1:
            self.accessed_hyper_parameters.add(parts[1])
        value = self._lookup(key, parts, default)
        if type is not None and value is not default:
            types = type if isinstance(type, tuple) else (type,)
            if float in types and int not in types:
                types = types + (int,)
            if not check_type(value, types):
                raise ConfigError(f"{self.source(key)}: expected {type_name(types)}, got {value!r}")
            if not is_finite(value):
                raise ConfigError(f"{self.source(key)}: expected a finite number, got {value!r}")
        return value

    def _lookup(self, key: str, parts: list[str], default: Any) -> Any:
        node: Any = self._data
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                if default is not _MISSING:
                    return default
                prefix = "".join(p + "." for p in parts[:i])
                known = [prefix + k for k in node] if isinstance(node, dict) else []
                raise ConfigError(f"{self._where()}: missing key '{key}'{did_you_mean(key, known)}")
            node = node[part]
        return node

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __contains__(self, key: str) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def set(self, key: str, value: Any) -> None:
        """Set a dotted key, creating intermediate mappings."""
        node = self._data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one section (``runner`` or ``hyper_parameters``)."""
        return copy.deepcopy(self._data.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def dump(self) -> str:
        """The resolved config as YAML text."""
        return yaml.safe_dump(self._data, sort_keys=False, default_flow_style=False)

    def source(self, key: str) -> str:
        """Where a key's value came from, for error messages."""
        if key in self.overridden or any(key.startswith(over + ".") for over in self.overridden):
            return f"'{key}' (from -o)"
        return f"'{key}' in {self.path}" if self.path else f"'{key}'"

    def _where(self) -> str:
        return str(self.path) if self.path else "config"

    def data_path(self, key: str) -> Path | None:
        """A runner data path, resolved and checked to exist.

        Raises:
            ConfigError: the folder does not exist.
        """
        value = self.get(key, None)
        if value is None:
            return None
        path = Path(value)
        if not path.exists():
            raise ConfigError(f"{self.source(key)}: folder '{path}' does not exist")
        return path


# ------------------------------------------------------------------ loading
def parse_yaml(text: str, path: Path | str) -> Any:
    """The document of a YAML text under the configs' rules (``1e-3`` is a float, a key given twice is an error);
    ``None`` for an empty one.

    Raises:
        ConfigError: invalid YAML or a repeated key, naming ``path:line:column``.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_duplicate_keys(node, path)
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file '{path}': cannot read it: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is fine
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(f"{path}:{line}: not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start}"
                          f"{hint}; save the file as UTF-8") from None
    data = parse_yaml(text, path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected the sections {', '.join(SECTIONS)}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}, got {type(data).__name__}")
    return data


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    """``["runner.epochs=2", ...]`` → ``[("runner.epochs", 2), ...]``.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected key=value, e.g. runner.epochs=2")
        pairs.append((key, parse_value(value.strip())))
    return pairs


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config, apply ``-o`` overrides, validate ``runner`` and resolve paths.

    Args:
        path: the YAML file.
        overrides: ``key=value`` strings with dotted keys, values typed by YAML.

    Returns:
        The validated :class:`Config`, runner defaults filled in.

    Raises:
        ConfigError: unreadable YAML, an unknown section or runner key (with the
            closest known key), a wrongly typed value, a bad override.
    """
    path = Path(path).resolve()
    data = _read_yaml(path)
    pairs = parse_overrides(overrides)
    config = Config(data, path, overridden=[k for k, _ in pairs])
    for key, value in pairs:
        section = key.split(".", 1)[0]
        if section not in SECTIONS or "." not in key:
            raise ConfigError(f"override '{key}': keys start with {' or '.join(s + '.' for s in SECTIONS)}"
                              + did_you_mean(section, SECTIONS))
        config.set(key, value)
    validate_runner(config)
    return config


def from_dict(data: Mapping[str, Any], config_dir: str | os.PathLike | None = None) -> Config:
    """Build a validated config in code (tests, notebooks); data paths resolve against ``config_dir``."""
    config = Config(data)
    if config_dir is not None:
        config.config_dir = Path(config_dir).resolve()
    validate_runner(config)
    return config


def validate_runner(config: Config) -> None:
    """Check sections and runner keys, fill defaults, resolve data paths (in place)."""
    data = config._data
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(f"{config._where()}: unknown section '{section}'{did_you_mean(section, SECTIONS)}"
                              f" (expected {', '.join(SECTIONS)})")
    for section in SECTIONS:
        if not isinstance(data.setdefault(section, {}) or {}, dict):
            raise ConfigError(f"{config.source(section)}: expected a mapping")
        data[section] = data[section] or {}
    runner = data["runner"]
    for key, value in runner.items():
        full = f"runner.{key}"
        if key not in RUNNER_KEYS:
            raise ConfigError(f"unknown key {config.source(full)}"
                              f"{did_you_mean(full, ['runner.' + k for k in RUNNER_KEYS])}")
        spec = RUNNER_KEYS[key]
        if not check_type(value, spec.types):
            raise ConfigError(f"{config.source(full)}: expected {type_name(spec.types)}, got {value!r}")
        if not is_finite(value):
            raise ConfigError(f"{config.source(full)}: expected a finite number, got {value!r}")
        if spec.compat_only and value not in (None, False, [], ""):
            logger.warning("runner.%s is accepted for PaddleRec compatibility and has no effect in recstack", key)
    explicit_end = runner.get("infer_end_epoch")
    for key, spec in RUNNER_KEYS.items():
        runner.setdefault(key, copy.deepcopy(spec.default))
        if spec.data_path and runner[key] is not None:
            runner[key] = str((config.config_dir / os.path.expanduser(runner[key])).resolve())
    for key in ("train_batch_size", "infer_batch_size", "epochs", "print_interval"):
        if runner[key] < (0 if key == "epochs" else 1):
            raise ConfigError(f"{config.source('runner.' + key)}: must be positive, got {runner[key]}")
    check_schema(config, RUNNER_RANGES, "runner")
    start = runner["infer_start_epoch"]
    if explicit_end is not None and explicit_end <= start:
        raise ConfigError(f"{config.source('runner.infer_end_epoch')}: must be greater than "
                          f"{config.source('runner.infer_start_epoch')}, which is {start} (the evaluated epochs are "
                          f"[infer_start_epoch, infer_end_epoch)); got {explicit_end}")
    if runner["infer_reader_path"] is None:
        runner["infer_reader_path"] = runner["train_reader_path"]
    if runner["infer_load_path"] is None:
        runner["infer_load_path"] = runner["model_save_path"]
    if runner["infer_end_epoch"] is None:
        runner["infer_end_epoch"] = runner["epochs"]
    _validate_optimizer(config)


def _validate_optimizer(config: Config) -> None:
    hp = config._data["hyper_parameters"]
    opt = hp.setdefault("optimizer", {}) or {}
    if not isinstance(opt, dict):
        raise ConfigError(f"{config.source('hyper_parameters.optimizer')}: expected a mapping with class/learning_rate")
    hp["optimizer"] = opt
    for key, value in opt.items():
        full = f"hyper_parameters.optimizer.{key}"
        if key not in OPTIMIZER_KEYS:
            raise ConfigError(f"unknown key {config.source(full)}"
                              f"{did_you_mean(full, ['hyper_parameters.optimizer.' + k for k in OPTIMIZER_KEYS])}")
        if not check_type(value, OPTIMIZER_KEYS[key].types):
            raise ConfigError(f"{config.source(full)}: expected {type_name(OPTIMIZER_KEYS[key].types)}, got {value!r}")
        if OPTIMIZER_KEYS[key].compat_only and value not in (None, False, ""):
            logger.warning("hyper_parameters.optimizer.%s is accepted for PaddleRec compatibility and has no "
                           "effect in recstack", key)
    if opt.get("weight_decay") and str(opt.get("class", "")).lower() != "adamw":
        raise ConfigError(f"{config.source('hyper_parameters.optimizer.weight_decay')}: decoupled weight decay "
                          f"applies to AdamW only (class is {opt.get('class', 'Adam')!r}); use hyper_parameters.reg "
                          "for L2 regularisation with other optimizers")
    _validate_lr_schedule(config, opt)
    check_schema(config, OPTIMIZER_RANGES, "hyper_parameters.optimizer")
    for key, spec in OPTIMIZER_KEYS.items():
        opt.setdefault(key, spec.default)
    if "reg" in hp and not check_type(hp["reg"], CORE_HYPER_PARAMETERS["reg"].types):
        raise ConfigError(f"{config.source('hyper_parameters.reg')}: expected a float, got {hp['reg']!r}")
    hp.setdefault("reg", 0.0)
    clip = hp.get("clip_by_norm")
    if not check_type(clip, CORE_HYPER_PARAMETERS["clip_by_norm"].types):
        raise ConfigError(f"{config.source('hyper_parameters.clip_by_norm')}: expected a positive number or null, "
                          f"got {clip!r}")
    hp.setdefault("clip_by_norm", None)
    check_schema(config, CORE_RANGES, "hyper_parameters")


def _validate_lr_schedule(config: Config, opt: dict[str, Any]) -> None:
    """Check ``optimizer.lr_schedule`` and make ``learning_rate`` its first value."""
    key = "hyper_parameters.optimizer.lr_schedule"
    schedule = opt.get("lr_schedule")
    if schedule is None:
        return
    for name in schedule:
        if name not in LR_SCHEDULE_KEYS:
            raise ConfigError(f"unknown key {config.source(key + '.' + name)}"
                              f"{did_you_mean(key + '.' + name, [key + '.' + k for k in LR_SCHEDULE_KEYS])}")
    kind = schedule.get("class", "PiecewiseDecay")
    if not isinstance(kind, str) or kind.lower() not in ("piecewisedecay", "piecewise_decay", "piecewise"):
        raise ConfigError(f"{config.source(key + '.class')}: unknown schedule {kind!r}; the one available is "
                          "PiecewiseDecay")
    example = "e.g. {boundaries: [410000], values: [0.85, 0.2]}"
    boundaries, values = schedule.get("boundaries"), schedule.get("values")
    if not isinstance(boundaries, list) or not boundaries or \
            not all(isinstance(b, int) and not isinstance(b, bool) for b in boundaries):
        raise ConfigError(f"{config.source(key + '.boundaries')}: expected a non-empty list of step numbers "
                          f"(ints), {example}; got {boundaries!r}")
    if boundaries[0] <= 0 or any(b <= a for a, b in zip(boundaries, boundaries[1:])):
        raise ConfigError(f"{config.source(key + '.boundaries')}: must be positive and strictly increasing, "
                          f"got {boundaries!r}")
    if not isinstance(values, list) or not all(NonNegativeNumber(v) for v in values):
        raise ConfigError(f"{config.source(key + '.values')}: expected a list of learning rates (finite numbers >= 0), "
                          f"{example}; got {values!r}")
    if len(values) != len(boundaries) + 1:
        raise ConfigError(f"{config.source(key + '.values')}: needs len(boundaries) + 1 = {len(boundaries) + 1} "
                          f"rates (one before the first boundary, one after each), got {len(values)}: {values!r}")
    if values[0] <= 0:
        raise ConfigError(f"{config.source(key + '.values')}: the first rate (the learning rate at step 0) must be "
                          f"positive, got {values!r}")
    rate = opt.get("learning_rate")
    if rate is not None and rate != values[0]:
        raise ConfigError(f"{config.source('hyper_parameters.optimizer.learning_rate')}: is {rate!r} but "
                          f"lr_schedule starts at values[0] = {values[0]!r}; with a schedule leave learning_rate "
                          "out or set it to values[0]")
    opt["learning_rate"] = values[0]


def check_schema(config: Config, schema: Mapping[str, Check], section: str = "hyper_parameters",
                 model_name: str | None = None) -> None:
    """Check the keys of ``schema`` that ``section`` holds (absent keys are left to their reader).

    The values are read directly, not with :meth:`Config.get`, so that a key in a model's
    schema that its wrapper does not read still counts as unknown in :func:`check_hyper_parameters`.

    Args:
        config: the run's config.
        schema: key -> :class:`Check` (e.g. a wrapper's ``hyper_parameter_schema``).
        section: the dotted mapping the keys live in (``runner``, ``hyper_parameters``, ...).
        model_name: named in the message, for a model's keys.

    Raises:
        ConfigError: ``'<section>.<key>' in <file>: expected <what>, got <value>``.
    """
    node: Any = config._data
    for part in section.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return
    for key, check in schema.items():
        if not isinstance(check, Check):
            raise TypeError(f"schema of {section}.{key}: expected a recstack.config.Check, got {check!r}")
        if key in node and not check(node[key]):
            of_model = f" (model {model_name})" if model_name else ""
            raise ConfigError(f"{config.source(f'{section}.{key}')}: expected {check.expected}{of_model}, "
                              f"got {node[key]!r}")


def check_hyper_parameters(config: Config, model_name: str) -> None:
    """Reject ``hyper_parameters`` keys that nothing read.

    Wrappers and readers read their keys with :meth:`Config.get`; once the model,
    optimizer and readers are built, a key in the YAML (or ``-o``) that was never
    read is a typo or a key of another model, and is an error naming the closest
    key that was asked for.
    """
    hp = config._data["hyper_parameters"]
    core = set(CORE_HYPER_PARAMETERS)
    asked = config.accessed_hyper_parameters | core
    for key in hp:
        if key not in asked:
            full = f"hyper_parameters.{key}"
            raise ConfigError(f"unknown key {config.source(full)} for model {model_name}"
                              f"{did_you_mean(full, ['hyper_parameters.' + k for k in sorted(asked)])}")


_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def task_names(config: Config, default: Sequence[str], count: int | None = None) -> tuple[str, ...]:
    """``hyper_parameters.task_names``: a multi-task model's task names, in its output order.

    One list names the tasks everywhere: the metrics (``auc_<task>``), the label
    columns a reader yields and the wrapper reads (see
    :meth:`recstack.wrapper.DygraphModel.configure_tasks`), e.g. ``[like, completion]``
    for the short-video data, which is the census format with other label names.

    Args:
        config: the run's config.
        default: the names when the key is absent (the model's own, e.g. ``("income", "marital")``).
        count: the number of names the data format has (``None``: any).

    Raises:
        ConfigError: not a list of distinct identifiers, or not ``count`` of them.
    """
    key = "hyper_parameters.task_names"
    names = config.get(key, list(default), type=list)
    if (not names or not all(isinstance(n, str) and _TASK_NAME.fullmatch(n) for n in names)
            or len(set(names)) != len(names)):
        raise ConfigError(f"{config.source(key)}: expected a list of distinct task names (letters, digits, _), "
                          f"e.g. [{', '.join(default)}], got {names!r}")
    if count is not None and len(names) != count:
        raise ConfigError(f"{config.source(key)}: this data has {count} tasks (default names: "
                          f"{', '.join(default)}), got {len(names)}: {names!r}")
    return tuple(names)


def log_config(config: Config) -> None:
    """Log the resolved config (after defaults, overrides and path resolution)."""
    logger.info("config %s%s\n%s", config.path or "<in code>",
                f" (overrides: {', '.join(sorted(config.overridden))})" if config.overridden else "",
                config.dump().rstrip())

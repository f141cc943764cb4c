"""Grid and random search over ``-o`` overrides: the core of ``tools/tune.py`` (doc/tuning.md, "Searching").

A *grid file* maps dotted ``-o`` keys to the values to try::

    hyper_parameters.optimizer.learning_rate: [0.0005, 0.001, 0.003, 0.01]   # a grid: every value
    hyper_parameters.optimizer.class: [Adam, Adagrad]
    hyper_parameters.fc_sizes: [[400, 400, 400], [128, 64]]                   # a list value is a list in the list
    hyper_parameters.optimizer: [{class: Adam, learning_rate: 0.001}, {class: SGD, learning_rate: 0.5}]  # together

and, for ``--mode random --trials N``, also distributions to draw from (:data:`DISTRIBUTIONS`)::

    hyper_parameters.optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}
    hyper_parameters.reg: {uniform: [0, 0.001]}
    runner.train_batch_size: {int_uniform: [64, 512]}
    hyper_parameters.optimizer.class: {choice: [Adam, Adagrad]}              # a plain list is a choice too

A grid tries every combination (the last key varies fastest); a random search draws ``N`` distinct trials,
draw ``i`` from a generator seeded by ``(seed, i)`` (a draw that repeats an earlier trial is skipped), so the
same seed draws the same trials and a larger ``N`` keeps the first ones. Drawn floats are rounded to 4
significant digits.

A *study* is a folder (``--output``)::

    <study>/study.json        the config it tunes (a rerun with another config is refused)
    <study>/results.csv       one row per trial, sorted by the metric (rewritten after each trial)
    <study>/results.md        the same table in Markdown, with the best trial as a command
    <study>/trials/<id>/      a trial: its runner.model_save_path (checkpoints, run.json, train.log,
                              infer.log, visual_log/), trial.log (the console output of tools/trainer.py
                              and tools/infer.py) and trial.json (written when the trial ends)

A trial's id is a hash of its overrides (the command line's ``-o`` and the grid's values, typed as YAML),
so rerunning the same command skips the trials that have a ``trial.json`` and runs the others: a changed
grid adds and drops trials. Each trial runs ``tools/trainer.py`` and then ``tools/infer.py`` in their own
processes, with ``runner.use_visual: True`` (``tools/plot.py <study>`` overlays their curves).

:func:`prepare_study` reads the grid and validates every trial's overrides through
:func:`recstack.config.load_config` (and the model's keys on a model built without its tables) before
anything runs; :func:`run_study` runs the trials that are left; :func:`rank_trials` and
:func:`markdown_table` make the results table.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import itertools
import json
import logging
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from recstack.config import (
    CORE_HYPER_PARAMETERS,
    SECTIONS,
    ConfigError,
    did_you_mean,
    load_config,
    parse_overrides,
    parse_value,
    parse_yaml,
)
from recstack.fileio import atomic_open, remove_tree

logger = logging.getLogger(__name__)

#: the distributions of a random search, ``{name: [arguments]}`` in the grid file, and what they take
DISTRIBUTIONS = {
    "choice": "{choice: [v1, v2, ...]} (one of the values)",
    "uniform": "{uniform: [low, high]} (a float, low < high)",
    "log_uniform": "{log_uniform: [low, high]} (a float uniform in log scale, 0 < low < high)",
    "int_uniform": "{int_uniform: [low, high]} (an int, both included; ints, low <= high)",
}
MODES = ("grid", "random")
SELECT = ("best", "last")
#: what a study folder holds
STUDY_FILE = "study.json"
TRIALS = "trials"
TRIAL_FILE = "trial.json"
TRIAL_LOG = "trial.log"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
LOCK_FILE = "tune.lock"
#: the runner keys that tools/tune.py sets for each trial (refused in -o and the grid)
RESERVED = ("runner.model_save_path", "runner.infer_load_path", "runner.visual_log_path")
#: the trials' statuses
DONE, FAILED, RUNNING, PENDING, INTERRUPTED = "done", "failed", "running", "pending", "interrupted"
#: significant digits of the floats a random search draws
DIGITS = 4
#: seconds between two looks at the running trials
POLL_S = 0.2
#: a tools/infer.py result line: ``checkpoint epoch 2: auc: 0.771234, log_loss: 0.45``
_RESULT_LINE = re.compile(r"checkpoint epoch (\d+): (.+)$")
_ERROR_LINE = re.compile(r" - ERROR - (.*)$")


class TuneError(ConfigError):
    """A bad grid file, flag or study folder; the message names the file, key or flag and what was expected."""


class Interrupted(Exception):
    """The study was stopped (Ctrl-C, SIGTERM); the trials that ended are recorded, the rest rerun next time."""


# ---------------------------------------------------------------------- the grid file
@dataclass(frozen=True)
class Param:
    """One key of a grid file: the values of a grid (``kind`` ``values``) or a distribution to draw from."""

    key: str
    kind: str  #: ``values`` (a plain list) or a name of :data:`DISTRIBUTIONS`
    args: tuple  #: the values (``values``, ``choice``) or ``(low, high)``

    @property
    def listed(self) -> bool:
        """Whether the values are listed (a grid can take them), not a range to draw from."""
        return self.kind in ("values", "choice")

    def sample(self, rng: random.Random) -> Any:
        if self.listed:
            return rng.choice(self.args)
        low, high = self.args
        if self.kind == "int_uniform":
            return rng.randint(low, high)
        if self.kind == "uniform":
            value = rng.uniform(low, high)
        else:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        return float(f"{value:.{DIGITS}g}")

    def describe(self) -> str:
        if self.kind == "values":
            return f"[{', '.join(format_value(v) for v in self.args)}]"
        return f"{{{self.kind}: [{', '.join(format_value(v) for v in self.args)}]}}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _param(path: Path, key: str, value: Any) -> Param:
    where = f"{path}: key '{key}'"
    if isinstance(value, list):
        if not value:
            raise TuneError(f"{where}: expected a non-empty list of values, got []")
        return Param(key, "values", tuple(value))
    if not isinstance(value, dict):
        raise TuneError(f"{where}: expected a list of values (e.g. [0.001, 0.01]; a list value as a list in the "
                        f"list: [[400, 400], [128, 64]]) or a distribution ({', '.join(DISTRIBUTIONS)}), got "
                        f"{value!r}; a value shared by all trials goes on the command line: -o {key}=...")
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        names = ", ".join(str(k) for k in value) or "nothing"
        hint = did_you_mean(str(next(iter(value))), DISTRIBUTIONS) if len(value) == 1 else ""
        raise TuneError(f"{where}: expected a list of values or one distribution, one of "
                        + ", ".join(DISTRIBUTIONS.values()) + f"; got {names}{hint}")
    kind, args = next(iter(value.items()))
    expected = f"{where}: expected {DISTRIBUTIONS[kind]}; got {{{kind}: {args!r}}}"
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise TuneError(expected)
        return Param(key, kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2 or not all(_number(a) for a in args):
        raise TuneError(expected)
    low, high = args
    if kind == "int_uniform":
        if not all(isinstance(a, int) for a in args) or low > high:
            raise TuneError(expected)
    elif not low < high or (kind == "log_uniform" and low <= 0):
        raise TuneError(expected)
    return Param(key, kind, (low, high))


def read_grid(path: str | os.PathLike) -> dict[str, Param]:
    """The keys of a grid file, in file order.

    Raises:
        TuneError: a missing or invalid file, a key that is not ``runner.<key>`` / ``hyper_parameters.<key>``,
            a value that is neither a non-empty list nor a distribution (the message names the file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise TuneError(f"grid file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise TuneError(f"grid file '{path}': cannot read it as UTF-8 text: {err}") from None
    try:
        data = parse_yaml(text, path)  # the configs' YAML rules: 1e-3 is a float, a key twice is an error
    except ConfigError as err:
        raise TuneError(str(err)) from None
    example = "e.g. hyper_parameters.optimizer.learning_rate: [0.001, 0.01]"
    if not isinstance(data, dict) or not data:
        raise TuneError(f"grid file '{path}': expected a mapping of dotted -o keys to lists of values ({example}), "
                        f"got {'an empty file' if data is None else type(data).__name__}")
    params = {}
    for key, value in data.items():
        section = str(key).split(".", 1)[0]
        if not isinstance(key, str) or section not in SECTIONS or "." not in key or key.endswith("."):
            raise TuneError(f"{path}: key {key!r}: expected a dotted -o key starting with "
                            f"{' or '.join(s + '.' for s in SECTIONS)} ({example})" + did_you_mean(section, SECTIONS))
        params[key] = _param(path, key, value)
    return params


def grid_trials(params: Mapping[str, Param], path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every combination of the listed values, the last key varying fastest.

    Raises:
        TuneError: a key holds a distribution (only a random search draws from those).
    """
    for param in params.values():
        if not param.listed:
            raise TuneError(f"{path}: key '{param.key}': {param.describe()} is a distribution, drawn from only by "
                            "--mode random --trials N; a grid lists the values, e.g. [0.001, 0.003, 0.01]")
    keys = list(params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(params[k].args for k in keys))]


def random_trials(params: Mapping[str, Param], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct trials, draw ``i`` made by a generator seeded with ``(seed, i)``, draws that repeat an
    earlier trial skipped (fewer trials, with a warning, when the space holds fewer distinct combinations)."""
    trials: list[dict[str, Any]] = []
    seen: set[str] = set()
    draw = 0
    while len(trials) < count and draw < 20 * count + 100:
        rng = random.Random(f"{seed}/{draw}")
        draw += 1
        trial = {key: param.sample(rng) for key, param in params.items()}
        fingerprint = _canonical(trial.items())
        if fingerprint not in seen:
            seen.add(fingerprint)
            trials.append(trial)
    if len(trials) < count:
        logger.warning("--trials %d: drew only %d distinct trials from the grid file's values", count, len(trials))
    return trials


# ---------------------------------------------------------------------- overrides and ids
def format_value(value: Any) -> str:
    """``value`` as an ``-o`` value that reads back as the same value (``[400,400]``, ``0.001``, ``Adam``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if parse_value(text) == text and text.strip() == text else json.dumps(text)


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """``["key=value", ...]`` for ``-o``."""
    return [f"{key}={format_value(value)}" for key, value in overrides.items()]


def _canonical(pairs) -> str:
    return json.dumps(sorted([k, v] for k, v in pairs), default=str, separators=(",", ":"))


def trial_id(overrides: Mapping[str, Any]) -> str:
    """First 10 hex digits of the SHA-256 of the overrides (keys sorted, values typed): a trial's stable name."""
    return hashlib.sha256(_canonical(overrides.items()).encode()).hexdigest()[:10]


def default_output(config: str | os.PathLike) -> Path:
    """``tune_<model folder>`` (``tune_<model>_<x>`` for ``config_<x>.yaml``), in the working directory."""
    path = Path(config)
    model = path.resolve().parent.name
    stem = path.stem
    suffix = "" if stem == "config" else "_" + (stem[len("config_"):] if stem.startswith("config_") else stem)
    return Path(f"tune_{model}{suffix}")


# ---------------------------------------------------------------------- the study
@dataclass
class Trial:
    """One trial of a study."""

    index: int  #: its place in the grid (or draw order)
    overrides: dict[str, Any]  #: the grid file's keys → this trial's values
    id: str  #: :func:`trial_id` of the command line's ``-o`` and ``overrides``
    folder: Path  #: ``<study>/trials/<id>``: its model_save_path
    args: list[str]  #: every ``-o`` its tools get
    threads: int | None = None  #: its runner.cpu_threads
    state: dict[str, Any] = field(default_factory=dict)  #: its trial.json once it ended
    status: str = PENDING

    def describe(self) -> str:
        return " ".join(override_args(self.overrides)) or "(the config as it is)"


@dataclass
class Study:
    """What :func:`prepare_study` checked: the trials and where they go."""

    config: Path  #: the config file as given
    grid: Path
    output: Path
    shared: list[str]  #: the command line's ``-o``
    keys: list[str]  #: the grid file's keys
    trials: list[Trial]
    threads: int  #: cores // parallel: OMP_NUM_THREADS of the trials, their runner.cpu_threads unless -o sets it


def _user_keys(shared: Mapping[str, Any], params: Mapping[str, Param]) -> set[str]:
    return set(shared) | set(params)


def _from_grid(message: str, keys: Sequence[str], grid: Path) -> str:
    """A load_config message with ``'<key>' (from -o)`` of the grid's keys said to come from the grid file."""
    for key in keys:
        message = re.sub(rf"'({re.escape(key)}(?:\.[^']*)?)' \(from -o\)", lambda m: f"'{m[1]}' (from {grid})",
                         message)
    return message


def _check_value(config: Path, shared: list[str], key: str, value: Any, grid: Path) -> None:
    """One grid value through load_config and the model's schema (a wrongly typed fc_sizes)."""
    from recstack.wrapper import load_wrapper

    text = f"{key}={format_value(value)}"
    try:
        loaded = load_config(config, [*shared, text])
        wrapper = load_wrapper(loaded)
        _check_optimizer(wrapper, loaded)
    except ConfigError as err:
        raise TuneError(f"{grid}: key '{key}', value {format_value(value)}: {_from_grid(str(err), [key], grid)}") \
            from None


def _check_optimizer(wrapper: Any, config: Any) -> None:
    """The wrapper's ``create_optimizer`` over a one-weight network: the optimizer's class and settings checked
    as the trainer checks them (a ConfigError naming the key); any other failure is left to the trial."""
    import torch

    quiet = logging.getLogger("recstack.optim")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # (it logs the optimizer it built)
    try:
        wrapper.create_optimizer(torch.nn.Linear(1, 1), config)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001
        logger.debug("optimizer not checked before the trials: %s: %s", type(err).__name__, err)
    finally:
        quiet.setLevel(level)


def _check_model_keys(config_path: Path, trial: Trial, user_keys: set[str], grid: Path,
                      grid_keys: Sequence[str]) -> None:
    """Build the first trial's model with its id tables unallocated, and its readers, so that a
    ``hyper_parameters`` key of the grid or ``-o`` that the model never reads fails now, naming the key.

    Skipped (with a log line) when the model or readers cannot be built here: the trial then says why.
    """
    import torch

    from recstack.data import create_reader
    from recstack.wrapper import build_model, model_name

    config = load_config(config_path, trial.args)
    try:
        build_model(config, torch.device("cpu"), meta_tables=True)
    except ConfigError as err:  # a bad model key or value: every trial like the first would fail
        raise TuneError(f"{grid}: trial {trial.describe()}: {_from_grid(str(err), grid_keys, grid)}") from None
    except Exception as err:  # noqa: BLE001 (a model that cannot be built here: the trial says why)
        logger.info("not checking the hyper_parameters keys before the trials (building the model: %s: %s)",
                    type(err).__name__, err)
        return
    try:  # the readers read keys too; their data may be missing for this trial only (it then fails alone)
        create_reader(config, "train")
        create_reader(config, "infer")
    except Exception as err:  # noqa: BLE001
        logger.info("not checking the hyper_parameters keys before the trials (the first trial's readers: %s: %s)",
                    type(err).__name__, err)
        return
    asked = config.accessed_hyper_parameters | set(CORE_HYPER_PARAMETERS)
    for key in sorted(user_keys):
        parts = key.split(".")
        if parts[0] == "hyper_parameters" and parts[1] not in asked:
            origin = f"(from {grid})" if key in grid_keys else "(from -o)"
            top = f"hyper_parameters.{parts[1]}"
            raise TuneError(f"unknown key '{key}' {origin} for model {model_name(config)}: the model and its "
                            f"readers never read '{top}'"
                            f"{did_you_mean(top, ['hyper_parameters.' + k for k in sorted(asked)])}")


def prepare_study(config: str | os.PathLike, grid: str | os.PathLike, shared: Sequence[str] = (), *,
                  mode: str = "grid", trials: int | None = None, seed: int = 0,
                  output: str | os.PathLike | None = None, parallel: int = 1) -> Study:
    """Read the grid file and check every trial's overrides before any trial runs.

    Args:
        config: the model's YAML.
        grid: the grid file (module docstring).
        shared: ``-o`` overrides every trial gets.
        mode: ``grid`` (every combination) or ``random`` (``trials`` draws, ``seed``).
        output: the study folder (default :func:`default_output`).
        parallel: trials run at once; each gets ``runner.cpu_threads`` = cores // parallel.

    Raises:
        TuneError: a bad grid file, key or value (naming the file and key), a reserved key, a study folder of
            another config or that is no study folder.
        ConfigError: a bad config or ``-o``.
    """
    config, grid = Path(config), Path(grid)
    if mode not in MODES:
        raise TuneError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    params = read_grid(grid)
    shared = list(shared)
    shared_values = dict(parse_overrides(shared))
    for key in RESERVED:
        if key in shared_values or key in params:
            where = "-o" if key in shared_values else f"grid file {grid}"
            raise TuneError(f"{where}: '{key}' is set by tools/tune.py for each trial (under --output); "
                            "choose the study folder with --output")
    both = sorted(set(shared_values) & set(params))
    if both:
        raise TuneError(f"'{both[0]}' is both in -o and in grid file {grid}: give it in one place")
    base = load_config(config, shared)
    from recstack.wrapper import load_wrapper

    load_wrapper(base)
    if mode == "grid":
        if trials is not None:
            raise TuneError("--trials: applies to --mode random (a grid runs every combination)")
        combos = grid_trials(params, grid)
    else:
        if trials is None or trials < 1:
            raise TuneError(f"--trials: --mode random needs the number of trials to draw (1 or more), got {trials}")
        combos = random_trials(params, trials, seed)
    for key in params:  # each value alone first: an error names the key and value that caused it
        for value in {_canonical([(key, v)]): v for v in (c[key] for c in combos)}.values():
            _check_value(config, shared, key, value, grid)
    output = Path(output) if output is not None else default_output(config)
    threads = max(1, _cores() // parallel)
    if parallel > _cores():
        logger.warning("--parallel %d: more trials at once than the %d cores; each gets 1 thread", parallel, _cores())
    user = _user_keys(shared_values, params)
    made = []
    seen_ids: dict[str, int] = {}
    for index, combo in enumerate(combos):
        own = override_args(combo)
        try:
            epochs = load_config(config, [*shared, *own]).get("runner.epochs")
            tid = trial_id({**shared_values, **combo})
            folder = (output / TRIALS / tid).absolute()
            defaults = {"runner.use_visual": "True", "runner.cpu_threads": str(threads),
                        "runner.infer_start_epoch": "0", "runner.infer_end_epoch": str(epochs)}
            args = [f"{k}={v}" for k, v in defaults.items() if k not in user]
            place = format_value(str(folder))
            args += [*shared, *own, f"runner.model_save_path={place}", f"runner.infer_load_path={place}"]
            threads_used = load_config(config, args).get("runner.cpu_threads")
        except ConfigError as err:
            raise TuneError(f"{grid}: trial {' '.join(own)}: {_from_grid(str(err), list(params), grid)}") from None
        if tid in seen_ids:  # a grid listing a value twice
            raise TuneError(f"{grid}: trials {seen_ids[tid] + 1} and {index + 1} are the same ({' '.join(own)}): "
                            "a key lists a value twice")
        seen_ids[tid] = index
        made.append(Trial(index, combo, tid, folder, args, threads_used))
    if made:
        _check_model_keys(config, made[0], user, grid, list(params))
    study = Study(config, grid, output, shared, list(params), made, threads)
    _check_study_folder(study)
    for trial in made:
        trial.state = read_trial(trial.folder, trial.id)
        trial.status = trial.state.get("status", PENDING)
    return study


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_study_folder(study: Study) -> None:
    out = study.output
    if out.exists() and not out.is_dir():
        raise TuneError(f"--output {out}: a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        info = json.loads((out / STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TuneError(f"--output {out}: the folder holds files but no {STUDY_FILE}: not a tools/tune.py study "
                        "folder; choose another --output (or an empty folder)") from None
    theirs = info.get("config") if isinstance(info, dict) else None
    if theirs != str(study.config.resolve()):
        raise TuneError(f"--output {out}: a study of config {theirs} ({out / STUDY_FILE}), not of "
                        f"{study.config.resolve()}; choose another --output")


def read_trial(folder: Path, tid: str) -> dict[str, Any]:
    """A trial's trial.json when it ended (done or failed) and is this trial's, else {}."""
    try:
        state = json.loads((folder / TRIAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("id") != tid or state.get("status") not in (DONE, FAILED):
        return {}
    return state


# ---------------------------------------------------------------------- metrics of a trial
def parse_results(text: str) -> dict[int, dict[str, float]]:
    """``{epoch: {metric: value}}`` from tools/infer.py's ``checkpoint epoch N: auc: 0.77, ...`` lines."""
    results: dict[int, dict[str, float]] = {}
    for line in text.splitlines():
        match = _RESULT_LINE.search(line)
        if not match:
            continue
        metrics = {}
        for item in match.group(2).split(", "):
            name, _, value = item.rpartition(": ")
            with contextlib.suppress(ValueError):
                metrics[name] = float(value)
        if metrics:
            results[int(match.group(1))] = metrics
    return results


def last_error(text: str, returncode: int) -> str:
    """The last ERROR line of a tool's output (else its last line, e.g. a traceback's), or how it ended."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("====")]
    for line in reversed(lines):
        match = _ERROR_LINE.search(line)
        if match:
            return match.group(1)
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-returncode).name}"
    return lines[-1] if lines else f"exit status {returncode}"


def higher_is_better(metric: str) -> bool:
    """The direction of a metric from recstack.metrics: ``auc``, ``auc_ctr``, ``hit_rate@10`` higher;
    ``log_loss``, ``mse_play_time``, ``loss`` lower. An unknown name: higher."""
    from recstack import metrics

    found: list[tuple[str, bool]] = [("loss", False)]
    todo = [metrics.Metric]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if isinstance(getattr(cls, "log_name", None), str):
            found.append((cls.log_name, cls.higher_is_better))
    matches = [(len(name), better) for name, better in found
               if metric == name or metric.startswith((name + "_", name + "@"))]
    return max(matches)[1] if matches else True


@dataclass
class Ranking:
    """The results table: rows in order, the metric and how it was chosen."""

    rows: list[dict[str, Any]]
    metric: str | None
    maximize: bool
    select: str
    metrics: list[str]  #: the metric columns, the sort metric first


def rank_trials(trials: Sequence[Trial], metric: str | None = None, direction: str | None = None,
                select: str = "best") -> Ranking:
    """Rows of the trials, done ones first sorted by ``metric`` at the selected epoch, then failed, then the rest.

    Args:
        metric: default: the first metric the first done trial reported.
        direction: ``max`` or ``min``; default from the metric (:func:`higher_is_better`).
        select: ``best``: each trial's best epoch by ``metric``; ``last``: its last evaluated epoch.

    Raises:
        TuneError: ``metric`` is not among the metrics of a done trial.
    """
    done = [t for t in trials if t.status == DONE]
    names: list[str] = []
    for trial in done:
        for metrics in _epochs(trial).values():
            names += [n for n in metrics if n not in names]
    if metric is None and names:
        metric = names[0]
    if metric is not None and done and metric not in names:
        raise TuneError(f"--metric {metric}: the trials report {', '.join(names)}{did_you_mean(metric, names)}")
    maximize = higher_is_better(metric or "") if direction is None else direction == "max"
    rows = []
    for trial in trials:
        epochs = _epochs(trial)
        epoch = _select_epoch(epochs, metric, maximize, select)
        values = epochs.get(epoch, {}) if epoch is not None else {}
        state = trial.state
        rows.append({"trial": trial.id, "status": trial.status, "metrics": values, "epoch": epoch,
                     "train_s": state.get("train_seconds"), "overrides": trial.overrides,
                     "error": state.get("error", "") if trial.status == FAILED else "", "index": trial.index})

    def order(row):
        value = row["metrics"].get(metric) if metric else None
        rank = {DONE: 0, FAILED: 2}.get(row["status"], 3)
        if rank == 0 and (value is None or math.isnan(value)):
            rank = 1
        return rank, (-value if maximize else value) if rank == 0 else 0.0, row["index"]

    rows.sort(key=order)
    place = 0
    for row in rows:  # the done trials with the metric are ranked
        ranked = row["status"] == DONE and order(row)[0] == 0
        place += ranked
        row["rank"] = place if ranked else None
    ordered = ([metric] if metric else []) + [n for n in names if n != metric]
    return Ranking(rows, metric, maximize, select, ordered)


def _epochs(trial: Trial) -> dict[int, dict[str, float]]:
    return {int(k): v for k, v in trial.state.get("metrics", {}).items()}


def _select_epoch(epochs: Mapping[int, Mapping[str, float]], metric: str | None, maximize: bool,
                  select: str) -> int | None:
    if not epochs:
        return None
    if select == "last" or metric is None:
        return max(epochs)
    scored = [(v[metric], e) for e, v in epochs.items() if metric in v and not math.isnan(v[metric])]
    if not scored:
        return max(epochs)
    best = max(s for s, _ in scored) if maximize else min(s for s, _ in scored)
    return min(e for s, e in scored if s == best)


# ---------------------------------------------------------------------- tables
def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix that no other key ends with (``learning_rate``, ``optimizer.class``)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                names[key] = tail
                break
        else:
            names[key] = key
    return names


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def table_rows(ranking: Ranking, keys: Sequence[str], markdown: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the results table (``markdown``: short key names, fewer columns)."""
    names = _short_names(keys) if markdown else {k: k for k in keys}
    header = ["rank", "trial", *(names[k] for k in keys), *ranking.metrics, "epoch",
              "train s" if markdown else "train_s", "status"]
    if not markdown:
        header.append("overrides")
    header.append("error")
    body = []
    for row in ranking.rows:
        cells = [_cell(row["rank"]), row["trial"],
                 *(format_value(row["overrides"][k]) if k in row["overrides"] else "" for k in keys),
                 *(_cell(row["metrics"].get(m)) for m in ranking.metrics), _cell(row["epoch"]),
                 f"{row['train_s']:.1f}" if row["train_s"] is not None else "", row["status"]]
        if not markdown:
            cells.append(" ".join(override_args(row["overrides"])))
        cells.append(row["error"])
        body.append(cells)
    return header, body


def markdown_table(ranking: Ranking, keys: Sequence[str]) -> str:
    header, body = table_rows(ranking, keys, markdown=True)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(c) for c in body)])


def best_command(study: Study, ranking: Ranking) -> str | None:
    """``python tools/trainer.py -m <config> -o ...`` of the best trial (None without a ranked trial)."""
    best = next((r for r in ranking.rows if r["rank"] == 1), None)
    if best is None:
        return None
    args = [*study.shared, *override_args(best["overrides"])]
    return shlex.join(["python", "tools/trainer.py", "-m", str(study.config), *(["-o", *args] if args else [])])


def summary(study: Study, ranking: Ranking) -> str:
    """The best trial in words (its metric, epoch and overrides)."""
    best = next((r for r in ranking.rows if r["rank"] == 1), None)
    if best is None:
        return "no trial is done"
    trial = next(t for t in study.trials if t.id == best["trial"])
    how = f"{'max' if ranking.maximize else 'min'}, {ranking.select} epoch"
    return (f"best: trial {best['trial']} ({trial.describe()}), {ranking.metric} {best['metrics'][ranking.metric]:.6f}"
            f" at epoch {best['epoch']} ({how})")


def write_results(study: Study, ranking: Ranking) -> tuple[Path, Path]:
    """``results.csv`` and ``results.md`` in the study folder, each written atomically."""
    header, body = table_rows(ranking, study.keys)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    csv_path, md_path = study.output / RESULTS_CSV, study.output / RESULTS_MD
    with atomic_open(csv_path) as f:
        f.write(buffer.getvalue())
    counts = {s: sum(r["status"] == s for r in ranking.rows) for s in (DONE, FAILED)}
    lines = [f"# Study {study.output}", "",
             f"- config: `{study.config}`" + (f", `-o {' '.join(study.shared)}`" if study.shared else ""),
             f"- grid file: `{study.grid}` ({len(study.trials)} trials: {counts[DONE]} done, {counts[FAILED]} failed)",
             f"- sorted by: {ranking.metric or '(no trial done yet)'} ({'max' if ranking.maximize else 'min'}), "
             f"{ranking.select} epoch of each trial", "", markdown_table(ranking, study.keys), ""]
    command = best_command(study, ranking)
    if command:
        lines += [summary(study, ranking) + ":", "", "```bash", command, "```", ""]
    with atomic_open(md_path) as f:
        f.write("\n".join(lines))
    return csv_path, md_path


# ---------------------------------------------------------------------- running
@dataclass
class _Running:
    trial: Trial
    step: str  #: ``train`` or ``infer``
    process: subprocess.Popen
    log: IO[str]
    started: float
    step_started: float
    infer_offset: int = 0
    train_seconds: float | None = None


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _default_tools() -> Path:
    import recstack

    return Path(recstack.__file__).resolve().parent.parent / "tools"


@contextlib.contextmanager
def _study_lock(output: Path) -> Iterator[None]:
    """Hold ``<study>/tune.lock`` (POSIX ``flock``): a second tools/tune.py on the same study stops at once."""
    try:
        import fcntl
    except ImportError:  # (not POSIX: no lock)
        yield
        return
    with open(output / LOCK_FILE, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TuneError(f"--output {output}: another tools/tune.py is running this study ({output / LOCK_FILE} "
                            "is locked); wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Runner:
    """Runs a study's trials, ``parallel`` at a time, each a tools/trainer.py then a tools/infer.py process."""

    def __init__(self, study: Study, parallel: int, tools: Path, metric: str | None, direction: str | None,
                 select: str) -> None:
        self.study, self.parallel, self.tools = study, parallel, tools
        self.metric, self.direction, self.select = metric, direction, select
        self.running: list[_Running] = []
        self.env = dict(os.environ)
        self.env["OMP_NUM_THREADS"] = self.env["MKL_NUM_THREADS"] = str(study.threads)
        self.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (doc/benchmarks.md)
        self.finished = 0

    def command(self, trial: Trial, step: str) -> list[str]:
        tool = self.tools / ("trainer.py" if step == "train" else "infer.py")
        return [sys.executable, str(tool), "-m", str(self.study.config.resolve()), "-o", *trial.args]

    def spawn(self, trial: Trial, step: str, log: IO[str]) -> subprocess.Popen:
        command = self.command(trial, step)
        log.write(f"==== tools/tune.py {_now()}: trial {trial.id}, {step}: {shlex.join(command)}\n")
        log.flush()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)

    def start(self, trial: Trial, number: int, total: int) -> None:
        if trial.folder.exists():  # an unfinished (interrupted) or failed earlier try: start it afresh
            remove_tree(trial.folder, f"trial {trial.id} starts again")
        trial.folder.mkdir(parents=True, exist_ok=True)
        log = open(trial.folder / TRIAL_LOG, "a", encoding="utf-8")  # (closed in finish or stop)
        now = time.monotonic()
        try:
            process = self.spawn(trial, "train", log)
        except BaseException:
            log.close()
            raise
        self.running.append(_Running(trial, "train", process, log, now, now))
        trial.status, trial.state = RUNNING, {}
        logger.info("[%d/%d] trial %s: %s", number, total, trial.id, trial.describe())

    def poll(self) -> None:
        for run in list(self.running):
            code = run.process.poll()
            if code is None:
                continue
            if code == -signal.SIGINT:  # Ctrl-C reached the trial's process (and, in a terminal, this one)
                raise KeyboardInterrupt
            if run.step == "train" and code == 0:
                run.train_seconds = time.monotonic() - run.step_started
                run.log.flush()
                run.infer_offset = (run.trial.folder / TRIAL_LOG).stat().st_size
                run.step, run.step_started = "infer", time.monotonic()
                run.process = self.spawn(run.trial, "infer", run.log)
                continue
            self.finish(run, code)

    def finish(self, run: _Running, code: int) -> None:
        self.running.remove(run)
        run.log.close()
        trial = run.trial
        raw = (trial.folder / TRIAL_LOG).read_bytes()
        text = raw.decode("utf-8", errors="replace")
        step_text = raw[run.infer_offset:].decode("utf-8", errors="replace")
        seconds = time.monotonic() - run.step_started
        state: dict[str, Any] = {
            "id": trial.id, "status": DONE, "overrides": trial.overrides, "shared": self.study.shared,
            "args": trial.args, "config": str(self.study.config.resolve()), "threads": trial.threads,
            "train_seconds": run.train_seconds if run.step == "infer" else seconds,
            "infer_seconds": seconds if run.step == "infer" else None, "finished": _now(),
        }
        from recstack.runs import read_manifest

        state["run_id"] = read_manifest(trial.folder).get("run_id")
        if code != 0:
            tool = "tools/trainer.py" if run.step == "train" else "tools/infer.py"
            state.update(status=FAILED, step=run.step, returncode=code,
                         error=f"{tool}: {last_error(step_text if run.step == 'infer' else text, code)}")
        else:
            metrics = parse_results(step_text)
            if metrics:
                state["metrics"] = {str(k): v for k, v in sorted(metrics.items())}
            else:
                state.update(status=FAILED, step="infer", returncode=0,
                             error="tools/infer.py: printed no 'checkpoint epoch N: <metrics>' line")
        with atomic_open(trial.folder / TRIAL_FILE) as f:
            json.dump(state, f, indent=2, default=str)
            f.write("\n")
        trial.state, trial.status = state, state["status"]
        self.finished += 1
        if trial.status == DONE:
            epochs = state["metrics"]
            last = epochs[max(epochs, key=int)]
            logger.info("trial %s done in %.1f s (train %.1f s): %s (last epoch)", trial.id,
                        time.monotonic() - run.started, state["train_seconds"],
                        ", ".join(f"{k}: {v:.6f}" for k, v in last.items()))
        else:
            logger.warning("trial %s failed (%s): %s; log: %s", trial.id, run.step, state["error"],
                           trial.folder / TRIAL_LOG)
        self.write()

    def write(self) -> Ranking:
        ranking = rank_trials(self.study.trials, self.metric, self.direction, self.select)
        write_results(self.study, ranking)
        return ranking

    def stop(self) -> None:
        """End the trials' processes that still run (SIGTERM, then SIGKILL after 10 s); nothing is recorded."""
        for run in self.running:
            if run.process.poll() is None:
                run.process.terminate()
        deadline = time.monotonic() + 10
        for run in self.running:
            try:
                run.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
            run.log.close()
            run.trial.status = INTERRUPTED
        self.running.clear()


def _check_not_running(trials: Sequence[Trial]) -> None:
    """Refuse to restart a trial whose training process still runs (a killed tools/tune.py leaves them)."""
    from recstack.runs import RunEpochs, read_manifest

    for trial in trials:
        manifest = read_manifest(trial.folder)
        if manifest.get("status") == "running" and RunEpochs(manifest.get("run_id"), manifest=manifest).alive():
            raise TuneError(f"trial {trial.id}: its training run {manifest.get('run_id')} in {trial.folder} is still "
                            f"running (process {manifest.get('owner')}), left by a tools/tune.py that was killed? "
                            "Wait for it or stop it, then rerun")


def run_study(study: Study, *, parallel: int = 1, retry_failed: bool = False, metric: str | None = None,
              direction: str | None = None, select: str = "best", tools: str | os.PathLike | None = None) -> Ranking:
    """Run the trials without a trial.json (and, with ``retry_failed``, the failed ones), ``parallel`` at a time.

    Writes ``study.json`` first, ``trial.json`` per trial when it ends and the results files after each trial.

    Returns:
        The final :class:`Ranking`.

    Raises:
        Interrupted: Ctrl-C or SIGTERM: the running trials were stopped (they run again next time).
        TuneError: ``--metric`` names no metric of the trials, a trial still running from a killed study.
    """
    if parallel < 1:
        raise TuneError(f"--parallel: expected 1 or more, got {parallel}")
    if select not in SELECT:
        raise TuneError(f"--select: expected one of {', '.join(SELECT)}, got {select!r}")
    if direction not in (None, "max", "min"):
        raise TuneError(f"--direction: expected max or min, got {direction!r}")
    tools = Path(tools) if tools is not None else _default_tools()
    for name in ("trainer.py", "infer.py"):
        if not (tools / name).is_file():
            raise FileNotFoundError(f"{tools / name} does not exist (tools/tune.py runs each trial with it)")
    output = study.output
    output.mkdir(parents=True, exist_ok=True)
    with _study_lock(output):
        info = {"config": str(study.config.resolve()), "created": _now()}
        with contextlib.suppress(OSError, ValueError):
            info = {**info, **json.loads((output / STUDY_FILE).read_text(encoding="utf-8"))}
        info.update(grid=str(study.grid.resolve()), shared=study.shared, updated=_now())
        with atomic_open(output / STUDY_FILE) as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        todo = [t for t in study.trials if t.status not in (DONE, FAILED) or (retry_failed and t.status == FAILED)]
        for trial in todo:
            trial.status, trial.state = PENDING, {}
        _check_not_running(todo)
        ids = {t.id for t in study.trials}
        others = sorted(p.name for p in (output / TRIALS).glob("*") if p.is_dir() and p.name not in ids)
        if others:
            logger.info("%d trial folder(s) in %s are not trials of this grid (kept, not in the results): %s",
                        len(others), output / TRIALS, ", ".join(others))
        threads = sorted({str(t.threads) for t in todo})
        logger.info("study %s: %d trials, %d finished earlier, %d to run, %d at a time (runner.cpu_threads %s)",
                    output, len(study.trials), len(study.trials) - len(todo), len(todo), parallel,
                    ", ".join(threads) or "-")
        runner = _Runner(study, parallel, tools, metric, direction, select)
        ranking = runner.write()
        try:
            queue = list(todo)
            while queue or runner.running:
                while queue and len(runner.running) < parallel:
                    runner.start(queue.pop(0), len(todo) - len(queue), len(todo))
                time.sleep(POLL_S)
                runner.poll()
            ranking = runner.write()
        except BaseException as err:
            runner.stop()
            with contextlib.suppress(TuneError):
                runner.write()
            if isinstance(err, KeyboardInterrupt):
                raise Interrupted(f"study {output} interrupted: {runner.finished} trial(s) ended in this run; the "
                                  "same command resumes it (finished trials are not run again)") from None
            raise
    return ranking

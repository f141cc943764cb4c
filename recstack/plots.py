"""Pictures of training runs from their TensorBoard scalars: ``tools/plot.py`` (doc/plots.md).

With ``runner.use_visual: True`` a training run writes, into ``<visual_log_path>/<run id>/`` (by default
``<model_save_path>/visual_log/<run id>/``; :mod:`recstack.trainer`):

- ``train/loss``, ``train/<metric>`` (running over the epoch), ``train/ips`` at every ``print_interval``
  batch line, at step = training batches since the start (counted from 1);
- ``epoch/loss``, ``epoch/<metric>`` at the end of each epoch, at step = epoch;

and ``tools/infer.py`` with ``runner.use_visual: True`` adds ``test/<metric>`` per evaluated checkpoint, at
step = epoch (:class:`recstack.evaluator.EvaluationScalars`). A multi-task model names a metric per task
(``auc_income``, ``auc_marital``): a tag, and so a panel, per task.

:func:`find_runs` turns folders into runs (a TensorBoard run folder, a ``model_save_path``, or a folder
holding several of either, e.g. the trials of a search) and reads their scalars; :func:`plot_runs` draws
one panel per tag, every run a line in it, into a matplotlib :class:`~matplotlib.figure.Figure` (no
pyplot, no display: PNG goes through Agg); :func:`save_figure` writes it, atomically, as PNG and/or SVG.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recstack.fileio import atomic_path
from recstack.runs import PREVIOUS_RUNS, RUN_FILE, read_manifest

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

#: how the name of a TensorBoard event file starts
EVENT_PREFIX = "events.out.tfevents."
#: tag groups drawn per epoch (x axis: epoch); the others per training step
EPOCH_GROUPS = ("epoch", "test")
#: the order of the panel rows
GROUP_ORDER = ("train", "epoch", "test")
#: the most panels in one row
MAX_COLUMNS = 4
#: how deep :func:`find_runs` looks under a folder for runs
MAX_DEPTH = 4
FORMATS = ("png", "svg")
#: what to do without scalars, for the error messages
HOW_TO = ("train with runner.use_visual: True (-o runner.use_visual=True) to write them into "
          "<model_save_path>/visual_log/<run id>/, and run tools/infer.py with the same setting to add the test "
          "metrics")


class PlotError(ValueError):
    """A folder without TensorBoard scalars, or options that select nothing; the message names them."""


@dataclass
class Series:
    """One scalar tag of one run: its steps (ascending) and values."""

    steps: list[int]
    values: list[float]


@dataclass
class RunScalars:
    """A run's TensorBoard scalars.

    Attributes:
        label: the run's name in the legend.
        folder: the folder holding its event files.
        scalars: tag → series.
        model: the model name from the run's ``run.json``, when known.
    """

    label: str
    folder: Path
    scalars: dict[str, Series] = field(default_factory=dict)
    model: str | None = None


# ---------------------------------------------------------------------- finding runs
def has_events(folder: Path) -> bool:
    """Whether ``folder`` directly holds TensorBoard event files."""
    try:
        return any(p.name.startswith(EVENT_PREFIX) and p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def _manifest_visual_dir(folder: Path) -> tuple[Path | None, str]:
    """The TensorBoard folder of the run whose ``run.json`` is in ``folder`` (a model_save_path), or None and why."""
    manifest = read_manifest(folder)
    run_id = manifest.get("run_id")
    visual = manifest.get("visual_log")
    candidates = []
    if isinstance(run_id, str) and run_id:
        candidates.append(folder / "visual_log" / run_id)  # the default place, wherever the folder went
    if isinstance(visual, str) and visual:
        candidates.append(Path(visual))  # as the training wrote it (relative: to its working directory)
    for candidate in candidates:
        if has_events(candidate):
            return candidate, ""
    if not visual:
        return None, (f"its run {run_id} wrote no TensorBoard scalars (run.json: visual_log null, "
                      "runner.use_visual was False)")
    return None, f"its run {run_id}'s TensorBoard folder {visual} holds no event files"


def _search(folder: Path, depth: int, found: list[tuple[Path, Path]], skipped: list[str]) -> None:
    """Append ``(run folder, event folder)`` of the runs at or under ``folder``."""
    if has_events(folder):
        found.append((folder, folder))
        return
    if (folder / RUN_FILE).is_file():  # a model_save_path: the run that wrote it
        visual, why = _manifest_visual_dir(folder)
        if visual is not None:
            found.append((folder, visual))
        else:
            skipped.append(f"{folder}: {why}")
        return
    if depth >= MAX_DEPTH:
        return
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and p.name != PREVIOUS_RUNS
                          and not p.name.startswith("."))
    except OSError as err:
        skipped.append(f"{folder}: cannot list it ({err.strerror or err})")
        return
    for child in children:
        _search(child, depth + 1, found, skipped)


def _labels(inputs: Sequence[Path], found: Sequence[tuple[int, Path]]) -> list[str]:
    """Legend names: a run's path relative to the folder given (that folder's name for the folder itself),
    prefixed by the folder's name when several were given; the full path where names clash."""
    def name(path: Path) -> str:
        return path.name or path.resolve().name or str(path)

    labels = []
    for index, run in found:
        top = inputs[index]
        relative = run.relative_to(top).as_posix() if run != top else ""
        if len(inputs) == 1:
            labels.append(relative or name(top))
        else:
            labels.append(f"{name(top)}/{relative}" if relative else name(top))
    if len(set(labels)) < len(labels):
        labels = [str(run) for _, run in found]
    return labels


def find_runs(folders: Iterable[str | os.PathLike]) -> list[RunScalars]:
    """The runs under ``folders`` with their scalars, in the order given (each folder's runs sorted by path).

    A folder is a run's TensorBoard folder (it holds ``events.out.tfevents.*`` files), a run's
    ``model_save_path`` (its ``run.json`` names the TensorBoard folder of the run that wrote it), or a
    folder holding several of either (a ``visual_log`` folder with one subfolder per run, the trials of a
    search), searched up to 4 levels down (``previous_runs`` and hidden folders are skipped).

    Raises:
        FileNotFoundError: a folder does not exist.
        PlotError: a folder holds no run with scalars (the message names it and says how to get them).
    """
    inputs = [Path(f) for f in folders]
    found: list[tuple[int, Path, Path]] = []
    for index, top in enumerate(inputs):
        if not top.exists():
            raise FileNotFoundError(f"{top}: no such folder (expected a run's model_save_path or TensorBoard "
                                    "folder, or a folder holding runs)")
        if not top.is_dir():
            raise PlotError(f"{top}: not a folder (expected a run's model_save_path or TensorBoard folder, or a "
                            "folder holding runs)")
        runs: list[tuple[Path, Path]] = []
        skipped: list[str] = []
        _search(top, 0, runs, skipped)
        if not runs:
            why = f" ({'; '.join(skipped)})" if skipped else ""
            raise PlotError(f"{top}: no TensorBoard event files (events.out.tfevents.*) in it or its subfolders"
                            f"{why}; {HOW_TO}")
        for line in skipped:  # e.g. a trial trained without use_visual, beside others with scalars
            logger.warning("skipped %s", line)
        found.extend((index, run, events) for run, events in runs)
    labels = _labels(inputs, [(index, run) for index, run, _ in found])
    result = []
    for label, (_, run, events) in zip(labels, found):
        manifest = read_manifest(run)
        model = manifest.get("model") if isinstance(manifest.get("model"), str) else None
        result.append(RunScalars(label, events, load_scalars(events), model))
    return result


def load_scalars(folder: str | os.PathLike) -> dict[str, Series]:
    """Every scalar tag of the event files in ``folder`` (all their points: no sampling).

    A step written twice (``tools/infer.py`` run again over the same checkpoints) keeps the later value.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulator = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0}, purge_orphaned_data=False)
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags().get("scalars", []):
        by_step: dict[int, float] = {}
        for event in accumulator.Scalars(tag):  # files in name (= time) order, events in written order
            by_step[int(event.step)] = float(event.value)
        if by_step:
            steps = sorted(by_step)
            scalars[tag] = Series(steps, [by_step[s] for s in steps])
    return scalars


# ---------------------------------------------------------------------- choosing and ordering panels
def _group(tag: str) -> str:
    return tag.split("/", 1)[0] if "/" in tag else ""


def _sort_key(tag: str) -> tuple:
    group, _, name = tag.partition("/") if "/" in tag else ("", "", tag)
    rank = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    within = 0 if name == "loss" else 2 if name == "ips" else 1
    return rank, group, within, name


def matches(tag: str, pattern: str) -> bool:
    """``fnmatch`` on the whole tag (``train/*``, ``test/auc*``); a pattern without ``/`` also matches the
    name after the group (``auc*`` matches ``train/auc`` and ``test/auc_income``)."""
    if fnmatch.fnmatchcase(tag, pattern):
        return True
    return "/" not in pattern and "/" in tag and fnmatch.fnmatchcase(tag.split("/", 1)[1], pattern)


def select_tags(tags: Iterable[str], patterns: Sequence[str] | None = None) -> list[str]:
    """The tags to draw, in panel order (``train/*``, ``epoch/*``, ``test/*``, others; loss first, ips last).

    Raises:
        PlotError: ``patterns`` match none of ``tags`` (the message lists the tags).
    """
    tags = sorted(set(tags), key=_sort_key)
    if not patterns:
        return tags
    chosen = [t for t in tags if any(matches(t, p) for p in patterns)]
    if not chosen:
        raise PlotError(f"--metrics {' '.join(patterns)}: matches none of the runs' scalars ({', '.join(tags)})")
    unused = [p for p in patterns if not any(matches(t, p) for t in tags)]
    if unused:
        logger.warning("--metrics %s: matches none of the runs' scalars (%s)", " ".join(unused), ", ".join(tags))
    return chosen


def _layout(tags: Sequence[str]) -> tuple[int, list[tuple[str, int, int]]]:
    """Columns, and ``(tag, row, column)`` per panel: each group of tags starts a new row unless it fits in
    the rest of the current one (``test/auc`` beside ``epoch/loss``, ``epoch/auc``); as many columns as the
    largest group has tags, at most :data:`MAX_COLUMNS`."""
    groups: dict[str, list[str]] = {}
    for tag in tags:
        groups.setdefault(_group(tag), []).append(tag)
    columns = min(MAX_COLUMNS, max(len(g) for g in groups.values()))
    cells, row, col = [], 0, 0
    for members in groups.values():
        if col and col + len(members) > columns:
            row, col = row + 1, 0
        for tag in members:
            if col == columns:
                row, col = row + 1, 0
            cells.append((tag, row, col))
            col += 1
    return columns, cells


# ---------------------------------------------------------------------- drawing
def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with bias correction (the first points are not
    pulled towards 0); NaN points stay NaN and do not enter the average."""
    out, last, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight ** count))
    return out


def plot_runs(runs: Sequence[RunScalars], metrics: Sequence[str] | None = None, smooth: float = 0.0,
              title: str | None = None) -> Figure:
    """One panel per scalar tag (chosen by ``metrics`` glob patterns, see :func:`matches`), one line per run.

    Per-step tags (``train/*``) are drawn against the training step; ``epoch/*`` and ``test/*`` against the
    epoch, with markers. Each run keeps its colour in every panel; the legend below the panels names them.

    Args:
        runs: from :func:`find_runs`.
        metrics: glob patterns of the tags to draw (default: all).
        smooth: 0 <= smooth < 1: draw the per-step tags smoothed (:func:`ema` with this weight), the raw
            values faint behind (a line whose label starts with ``_``: not in the legend).
        title: the figure's title (default: the runs' model names).

    Returns:
        The figure: ``figure.axes`` are the panels in order, each titled with its tag; in each, the lines
        labelled with a run's label hold that run's (smoothed) values.

    Raises:
        PlotError: no scalars, ``metrics`` match nothing, or ``smooth`` is outside [0, 1).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not 0 <= smooth < 1:
        raise PlotError(f"--smooth: expected a weight in [0, 1) (0: no smoothing, 0.6 like TensorBoard's default), "
                        f"got {smooth}")
    all_tags = {tag for run in runs for tag in run.scalars}
    if not all_tags:
        raise PlotError(f"{', '.join(str(r.folder) for r in runs) or 'no runs'}: no scalars in the event files; "
                        f"{HOW_TO}")
    tags = select_tags(all_tags, metrics)
    columns, cells = _layout(tags)
    rows = max(row for _, row, _ in cells) + 1
    figure = Figure(figsize=(4.0 * columns, 2.8 * rows + 0.6), layout="constrained")
    handles = {}
    for tag, row, col in cells:
        axes = figure.add_subplot(rows, columns, row * columns + col + 1)
        per_epoch = _group(tag) in EPOCH_GROUPS
        for index, run in enumerate(runs):
            series = run.scalars.get(tag)
            if series is None:
                continue
            style = {"color": f"C{index % 10}", "linestyle": ("-", "--", ":", "-.")[index // 10 % 4]}
            values = series.values
            if smooth and not per_epoch:
                axes.plot(series.steps, values, alpha=0.25, linewidth=1, label=f"_raw {run.label}", **style)
                values = ema(values, smooth)
            (line,) = axes.plot(series.steps, values, label=run.label, linewidth=1.5,
                                marker="o" if per_epoch else None, markersize=4, **style)
            handles.setdefault(run.label, line)
        axes.set_title(tag, fontsize=10)
        axes.set_xlabel("epoch" if per_epoch else "step (training batches)", fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(True, alpha=0.3)
        if per_epoch:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    missing = [run.label for run in runs if run.label not in handles]
    if missing:
        logger.warning("run(s) %s have none of the drawn scalars (%s)", ", ".join(missing), ", ".join(tags))
    figure.legend(list(handles.values()), list(handles), loc="outside lower center",
                  ncols=min(len(handles), 4) or 1, frameon=False, fontsize=9)
    models = sorted({run.model for run in runs if run.model})
    if title is None and models:
        title = ", ".join(models)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def save_figure(figure: Figure, folder: str | os.PathLike, formats: Sequence[str] = FORMATS,
                name: str = "metrics", dpi: int = 100) -> list[Path]:
    """Write ``<folder>/<name>.<format>`` for each format (``png``, ``svg``), each through a temporary file
    renamed into place (a reader never sees half a picture). Returns the paths written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise PlotError(f"--format {' '.join(unknown)}: expected {' or '.join(FORMATS)}")
    folder = Path(folder)
    written = []
    for fmt in dict.fromkeys(formats):
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=dpi)
        written.append(path)
    return written

"""Permutation feature importance of a trained model on its test data (``tools/feature_importance.py``).

The checkpoint is loaded and evaluated the way ``tools/infer.py`` does it (:func:`recstack.prepare.prepare_run`,
:func:`recstack.evaluator.evaluate`): the same reader, loader settings, feeds and metrics. That gives the
*baseline* metrics. Then, for each feature in turn, the feature's values are shuffled across the test samples
(a seeded permutation of the rows of the feature's columns only, over the whole test set, every other column
left in place) and the data is evaluated again. A feature's importance is the **drop** of each metric,
``baseline - shuffled``, as mean and sample standard deviation over ``repeats`` shuffles (doc/feature_importance.md).

The features are the reader's (:meth:`recstack.data.base.BlockReader.feature_units`): Criteo slots, a feature
config's features, DIN's history and candidate, or the columns of a wider array (``features[j]``), restricted to
those the model reads (its wrapper's ``feed_names``); labels and group keys (GAUC's user) are never shuffled.
``group_by="group"`` shuffles the features of a group together (a feature group, the dense slot, DIN's target).

The whole test set (or its first ``max_samples`` samples) is held in memory as one block of column arrays, so a
shuffle moves values between any two samples, not only within a batch; each evaluation batches it with the
loader ``tools/infer.py`` uses (:func:`recstack.data.create_loader`). Repeat ``r`` shuffles every feature with
the same permutation, drawn from ``numpy.random.default_rng([seed, r])``, so a feature's figures do not depend on
which other features are evaluated. Grouped input (``GroupRTPInput``: one row per group of samples) is refused.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recstack.config import Config, ConfigError, did_you_mean
from recstack.data.base import BatchColumn, Block, BlockReader, DataFormatError, FeatureUnit, RaggedArray
from recstack.fileio import atomic_open, atomic_path

logger = logging.getLogger(__name__)

#: ``group_by`` choices: one feature at a time, or the features of a group together
GROUP_BY = ("feature", "group")
#: features drawn in the chart by default (the table and CSV hold all)
DEFAULT_TOP = 40


@dataclass
class FeatureImportance:
    """One shuffled feature (or group) and the metric drops it caused.

    Attributes:
        name: the feature's (or group's) name.
        columns: the block columns shuffled, ``(key, column index or None for the whole key)``.
        drops: metric name → ``baseline - shuffled`` of each repeat.
    """

    name: str
    columns: tuple[tuple[str, int | None], ...]
    drops: dict[str, list[float]] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        """Mean drop of ``metric`` over the repeats."""
        return float(np.mean(self.drops[metric]))

    def std(self, metric: str) -> float:
        """Sample standard deviation (``ddof=1``) of the drops of ``metric``; 0 for one repeat."""
        values = self.drops[metric]
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@dataclass
class ImportanceReport:
    """What :func:`permutation_importance` measured, features sorted by :attr:`sort_metric` (most important first).

    Attributes:
        config_path: the config's file (``None`` for a config built in memory).
        checkpoint: the evaluated checkpoint folder.
        test_data: the test data folder.
        samples: test samples evaluated.
        repeats: shuffles per feature.
        seed: base seed of the shuffles.
        group_by: ``"feature"`` or ``"group"``.
        metrics: the wrapper's metric names, in its order.
        higher_is_better: metric name → whether a higher value is better (False for log loss, MSE).
        baseline: metric name → its value on the unshuffled data.
        features: the shuffled features, most important first.
        sort_metric: the metric the features are sorted by.
    """

    config_path: Path | None
    checkpoint: Path
    test_data: str
    samples: int
    repeats: int
    seed: int
    group_by: str
    metrics: list[str]
    higher_is_better: dict[str, bool]
    baseline: dict[str, float]
    features: list[FeatureImportance]
    sort_metric: str

    def importance(self, item: FeatureImportance, metric: str | None = None) -> float:
        """The mean drop signed so that larger is more important (negated for a lower-is-better metric)."""
        metric = metric or self.sort_metric
        value = item.mean(metric)
        return value if self.higher_is_better[metric] else -value


# ---------------------------------------------------------------------- features
def describe_columns(columns: Sequence[tuple[str, int | None]]) -> str:
    """``sparse[5]``, ``features[0..10]`` (a run of columns), ``hist_item, hist_cat, hist_len`` (whole keys)."""
    parts: list[str] = []
    runs: dict[str, list[int]] = {}
    order: list[str] = []
    for key, column in columns:
        if key not in runs:
            runs[key] = []
            order.append(key)
        if column is not None:
            runs[key].append(column)
    for key in order:
        cols = sorted(set(runs[key]))
        if not cols:
            parts.append(key)
            continue
        start = prev = cols[0]
        for c in [*cols[1:], None]:
            if c is not None and c == prev + 1:
                prev = c
                continue
            parts.append(f"{key}[{start}]" if start == prev else f"{key}[{start}..{prev}]")
            if c is not None:
                start = prev = c
    return ", ".join(parts)


def _compact_names(names: Sequence[str]) -> str:
    """Names joined by commas, a run ``key[0]``, ``key[1]``, ... written ``key[0]..key[498]``."""
    out: list[str] = []
    i = 0
    while i < len(names):
        key, _, rest = names[i].partition("[")
        j = i
        if rest.endswith("]") and rest[:-1].isdigit():
            while j + 1 < len(names) and names[j + 1] == f"{key}[{int(rest[:-1]) + j + 1 - i}]":
                j += 1
        out.append(names[i] if j - i < 2 else f"{names[i]}..{names[j]}")
        i = j + 1
    return ", ".join(out)


def select_features(reader: BlockReader, feed_names: Sequence[str], columns: Sequence[str], group_by: str = "feature",
                    names: Sequence[str] | None = None) -> list[FeatureImportance]:
    """The features to shuffle: the reader's (:meth:`~recstack.data.base.BlockReader.feature_units`) whose columns
    the model reads, one per feature or per group, optionally restricted to ``names``.

    Args:
        reader: the test data's reader.
        feed_names: the batch keys the model reads (the wrapper's ``feed_names``).
        columns: the keys of the test data's blocks (the reader's ``columns``).
        group_by: ``"feature"`` (each feature alone; a feature of two feature groups is shuffled in both) or
            ``"group"`` (the features of a group together).
        names: keep these features (``None``: all), in the reader's order.

    Raises:
        ConfigError: ``group_by`` is not one of :data:`GROUP_BY`; the model reads none of the reader's
            features; a name in ``names`` is none of them (the message lists the valid ones).
    """
    if group_by not in GROUP_BY:
        raise ConfigError(f"--group_by: expected one of {', '.join(GROUP_BY)}, got {group_by!r}")
    feeds, present = set(feed_names), set(columns)
    units: list[FeatureUnit] = [u for u in reader.feature_units()
                                if u.columns and all(k in feeds and k in present for k, _ in u.columns)]
    if not units:
        raise ConfigError(f"the reader {type(reader).__name__} gives no feature the model reads: its blocks hold "
                          f"{sorted(present)}, the model's wrapper reads {list(feed_names)} (feed_names)")
    merged: dict[str, list[tuple[str, int | None]]] = {}
    for unit in units:
        target = merged.setdefault(unit.name if group_by == "feature" else unit.group, [])
        target.extend(c for c in unit.columns if c not in target)
    features = [FeatureImportance(name, tuple(cols)) for name, cols in merged.items()]
    if names is None:
        return features
    known = [f.name for f in features]
    unknown = [n for n in dict.fromkeys(names) if n not in merged]
    if unknown:
        hint = did_you_mean(unknown[0], known).removeprefix("; ") if len(unknown) == 1 else ""
        raise ConfigError(f"--features: unknown {group_by}{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(n) for n in unknown)}{f' ({hint})' if hint else ''}; valid with "
                          f"--group_by {group_by} ({len(known)}): {_compact_names(known)}")
    wanted = set(names)
    return [f for f in features if f.name in wanted]


# ---------------------------------------------------------------------- data
def _rows(block: Block) -> int:
    return len(next(iter(block.values())))


def read_test_block(reader: BlockReader, cache_dir: str | None = None, max_samples: int = 0) -> Block:
    """The reader's whole data (or its first ``max_samples`` samples) as one block.

    Raises:
        ConfigError: the blocks hold grouped rows (``GroupRTPInput``), which cannot be shuffled per sample.
    """
    parts: list[Block] = []
    rows = 0
    for block in reader.iter_blocks(cache_dir=cache_dir):
        grouped = [k for k, v in block.items() if isinstance(v, BatchColumn)]
        if grouped:
            raise ConfigError(f"the reader {type(reader).__name__} gives grouped rows (columns {', '.join(grouped)}: "
                              "one row per group of samples, GroupRTPInput); feature importance shuffles per sample "
                              "and does not support grouped input")
        parts.append(block)
        rows += _rows(block)
        if max_samples and rows >= max_samples:
            break
    if not parts:
        return {}
    if len(parts) == 1:
        out = dict(parts[0])
    else:
        out = {k: type(v).concatenate([p[k] for p in parts]) if isinstance(v, RaggedArray)
               else np.concatenate([p[k] for p in parts]) for k, v in parts[0].items()}
    if max_samples and rows > max_samples:
        out = {k: v[:max_samples] for k, v in out.items()}
    return out


def shuffle_columns(block: Block, columns: Sequence[tuple[str, int | None]], permutation: np.ndarray) -> Block:
    """A copy of ``block`` whose ``columns`` hold the rows ``permutation`` picks (the other columns unchanged).

    A whole key (column ``None``) is indexed as a whole (a :class:`RaggedArray` row by row); a column ``j`` of a
    2-D array is replaced in a copy of that array. Keys not listed are shared with ``block``, not copied.
    """
    out = dict(block)
    by_key: dict[str, list[int | None]] = {}
    for key, column in columns:
        by_key.setdefault(key, []).append(column)
    for key, cols in by_key.items():
        values = block[key]
        if None in cols:
            out[key] = values[permutation]
        else:
            shuffled = np.array(values, copy=True)
            shuffled[:, cols] = values[np.ix_(permutation, cols)]
            out[key] = shuffled
    return out


class _MemoryReader(BlockReader):
    """A block held in memory, as a reader for :func:`recstack.data.create_loader` (no files, never cached)."""

    cacheable = False

    def __init__(self, block: Block, like: BlockReader) -> None:
        super().__init__([], like.config)
        self.columns = like.columns
        self.block = block

    def iter_blocks(self, files=None, cache_dir=None, pool=None) -> Iterator[Block]:
        yield self.block


# ---------------------------------------------------------------------- the measurement
def choose_checkpoint(config: Config, epoch: int | None) -> Path:
    """``<infer_load_path>/<epoch>``; default: the last epoch ``tools/infer.py`` would evaluate."""
    from recstack.checkpoint import MODEL_FILE, clean_interrupted_saves, list_checkpoints

    root = Path(config.get("runner.infer_load_path"))
    if epoch is not None:
        return root / str(epoch)
    start, end = config.get("runner.infer_start_epoch"), config.get("runner.infer_end_epoch")
    if end <= start:
        raise ConfigError(f"{config.source('runner.infer_end_epoch')}: no epoch to evaluate: runner.infer_start_epoch "
                          f"is {start}, infer_end_epoch {end}; give --epoch, or the range [infer_start_epoch, "
                          "infer_end_epoch) whose last checkpoint to use")
    clean_interrupted_saves(root)
    epochs = [e for e in range(start, end) if (root / str(e) / MODEL_FILE).is_file()]
    if not epochs:
        found = list_checkpoints(root)
        raise FileNotFoundError(f"no checkpoint of epochs {start}..{end - 1} in '{root}' (runner.infer_load_path, "
                                "runner.infer_start_epoch, runner.infer_end_epoch)"
                                + (f"; checkpoints there: {', '.join(found)} (give --epoch)" if found else
                                   "; train first (tools/trainer.py) or set runner.infer_load_path"))
    return root / str(epochs[-1])


@contextlib.contextmanager
def _progress(config: Config, total: int) -> Iterator:
    """A tqdm bar of the shuffled evaluations on stderr (``runner.progress_bar``; default: stderr is a terminal)."""
    show = config.get("runner.progress_bar")
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield lambda: None
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(total=total, desc="shuffled evaluations", unit="eval", leave=False, dynamic_ncols=True) as bar, \
            logging_redirect_tqdm(tqdm_class=tqdm):
        yield lambda: bar.update(1)


def list_features(config: Config, group_by: str = "feature") -> list[FeatureImportance]:
    """The features :func:`permutation_importance` can shuffle (names and columns), without a checkpoint.

    Builds the model (for its ``feed_names``) and the test data's reader (for its columns); reads no data.
    """
    from recstack.prepare import prepare_run

    run = prepare_run(config, "infer")
    return select_features(run.reader, run.wrapper.feed_names, list(run.reader.columns), group_by)


def permutation_importance(config: Config, *, features: Sequence[str] | None = None, group_by: str = "feature",
                           epoch: int | None = None, repeats: int = 3, seed: int | None = None,
                           metric: str | None = None, max_samples: int = 0) -> ImportanceReport:
    """Measure the permutation importance of the model's input features on the test data.

    Args:
        config: the run's config (``runner.infer_load_path``, ``test_data_dir``, ``infer_reader_path``,
            ``infer_batch_size``, ... as ``tools/infer.py`` reads them).
        features: shuffle only these (names at the ``group_by`` level); ``None``: all.
        group_by: ``"feature"`` or ``"group"`` (see :func:`select_features`).
        epoch: the checkpoint ``<infer_load_path>/<epoch>``; ``None``: the last one of
            ``[infer_start_epoch, infer_end_epoch)`` that exists (the last ``tools/infer.py`` evaluates).
        repeats: shuffles per feature.
        seed: base seed of the shuffles (``None``: ``runner.seed``).
        metric: the metric to sort by (default: the wrapper's first, ``auc`` / ``auc_<first task>``).
        max_samples: use the first this many test samples (0: all).

    Returns:
        The report, features sorted by ``metric``, most important first.

    Raises:
        ConfigError: a bad argument (unknown feature or metric, ``repeats`` < 1, grouped input).
        FileNotFoundError: no such checkpoint (the message lists those that exist).
        CheckpointError: the checkpoint cannot be loaded.
    """
    from recstack.checkpoint import load_checkpoint
    from recstack.config import log_config
    from recstack.data import create_loader
    from recstack.evaluator import evaluate
    from recstack.prepare import prepare_run

    if repeats < 1:
        raise ConfigError(f"--repeats: must be at least 1, got {repeats}")
    if max_samples < 0:
        raise ConfigError(f"--max_samples: must be 0 (all) or positive, got {max_samples}")
    if group_by not in GROUP_BY:
        raise ConfigError(f"--group_by: expected one of {', '.join(GROUP_BY)}, got {group_by!r}")
    seed = config.get("runner.seed") if seed is None else seed
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed: must be a non-negative integer (numpy seeds), got {seed!r}"
                          + (f" from {config.source('runner.seed')}" if seed == config.get("runner.seed") else ""))
    log_config(config)
    checkpoint = choose_checkpoint(config, epoch)
    wrapper, model, _, reader, _, device = prepare_run(config, "infer")
    load_checkpoint(checkpoint, model, map_location=device)
    logger.info("loaded checkpoint %s", checkpoint)
    _, names = wrapper.create_metrics()
    if metric is not None and metric not in names:
        raise ConfigError(f"--metric: the model has no metric {metric!r}{did_you_mean(metric, names)} "
                          f"(its metrics: {', '.join(names)})")
    chosen = select_features(reader, wrapper.feed_names, list(reader.columns), group_by, features)
    block = read_test_block(reader, config.get("runner.cache_dir"), max_samples)
    if not block:
        raise DataFormatError(f"{config.source('runner.test_data_dir')}: the test data holds no samples")
    missing = sorted({k for item in chosen for k, _ in item.columns} - set(block))
    if missing:
        raise DataFormatError(f"the reader {type(reader).__name__} declares the columns {missing} (its columns) but "
                              f"its blocks hold only {sorted(block)}")
    n = _rows(block)

    def measure(data: Block) -> dict[str, float]:
        loader = create_loader(config, "infer", _MemoryReader(data, reader))
        return evaluate(wrapper, model, loader, config, device=device, log=False)

    baseline = measure(block)
    metric_objects, names = wrapper.create_metrics()
    higher = {name: m.higher_is_better for name, m in zip(names, metric_objects)}
    logger.info("baseline on %d test samples: %s", n, ", ".join(f"{k}: {v:.6f}" for k, v in baseline.items()))
    logger.info("shuffling %d %s%s, %d repeat(s), seed %d", len(chosen), group_by,
                "s" if len(chosen) != 1 else "", repeats, seed)
    permutations = [np.random.default_rng([seed, r]).permutation(n) for r in range(repeats)]
    with _progress(config, len(chosen) * repeats) as step:
        for item in chosen:
            item.drops = {name: [] for name in baseline}
            for permutation in permutations:
                shuffled = measure(shuffle_columns(block, item.columns, permutation))
                for name, value in shuffled.items():
                    item.drops[name].append(baseline[name] - value)
                step()
            logger.info("%s %s (%s): %s", group_by, item.name, describe_columns(item.columns),
                        ", ".join(f"{k} drop {item.mean(k):.6f} ± {item.std(k):.6f}" for k in item.drops))
    sort_metric = metric or names[0]
    report = ImportanceReport(config_path=Path(config.path) if config.path else None, checkpoint=checkpoint,
                              test_data=str(config.get("runner.test_data_dir")), samples=n, repeats=repeats,
                              seed=seed, group_by=group_by, metrics=list(baseline), higher_is_better=higher,
                              baseline=baseline, features=chosen, sort_metric=sort_metric)

    def key(item: FeatureImportance) -> tuple[bool, float]:
        value = report.importance(item)
        return (math.isnan(value), -value if not math.isnan(value) else 0.0)

    report.features = sorted(chosen, key=key)  # stable: ties keep the reader's order
    return report


# ---------------------------------------------------------------------- output
def _drop_header(report: ImportanceReport, metric: str) -> str:
    return f"{metric} drop" + ("" if report.higher_is_better[metric] else " (lower is better)")


def table_rows(report: ImportanceReport) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sorted table: rank, feature, columns, ``mean ± std`` drop of each metric."""
    header = ["rank", report.group_by, "shuffled columns", *(_drop_header(report, m) for m in report.metrics)]
    rows = [[str(i), item.name, describe_columns(item.columns),
             *(f"{item.mean(m):.5f} ± {item.std(m):.5f}" for m in report.metrics)]
            for i, item in enumerate(report.features, 1)]
    return header, rows


def markdown_table(report: ImportanceReport) -> str:
    """The sorted table as Markdown, columns padded to line up in a terminal."""
    header, rows = table_rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = [True, False, False] + [True] * len(report.metrics)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1)) for w, r in zip(widths, right)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _shown(path: str | Path | None) -> str:
    """A path relative to the working folder when it lies inside it, else as it is."""
    if path is None:
        return "(in memory)"
    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(path)


def summary_lines(report: ImportanceReport) -> list[str]:
    """What was measured, one fact a line (the Markdown report's header)."""
    baseline = ", ".join(f"{k} {v:.6f}" for k, v in report.baseline.items())
    return [
        f"- config: {_shown(report.config_path)}",
        f"- checkpoint: {_shown(report.checkpoint)}",
        f"- test data: {_shown(report.test_data)} ({report.samples} samples)",
        f"- unit: one {report.group_by} at a time (--group_by {report.group_by}), {len(report.features)} shuffled",
        f"- repeats: {report.repeats} shuffles per {report.group_by}, seed {report.seed}",
        f"- baseline: {baseline}",
        f"- sorted by: {report.sort_metric}"
        + ("" if report.higher_is_better[report.sort_metric] else " (lower is better: the most negative drop first)"),
    ]


def write_csv(report: ImportanceReport, path: Path) -> None:
    """One row per feature, in rank order: ``rank, <group_by>, columns``, then per metric its baseline, mean drop,
    std of the drops and each repeat's drop (``;``-separated)."""
    with atomic_open(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        per_metric = [f"{m}_{what}" for m in report.metrics for what in ("baseline", "drop_mean", "drop_std", "drops")]
        writer.writerow(["rank", report.group_by, "columns", *per_metric])
        for i, item in enumerate(report.features, 1):
            values = []
            for m in report.metrics:
                values += [f"{report.baseline[m]:.8g}", f"{item.mean(m):.8g}", f"{item.std(m):.8g}",
                           ";".join(f"{d:.8g}" for d in item.drops[m])]
            writer.writerow([i, item.name, describe_columns(item.columns), *values])


def write_markdown(report: ImportanceReport, path: Path) -> None:
    """The summary and the sorted table."""
    with atomic_open(path) as f:
        f.write(f"# Permutation importance ({report.group_by}s)\n\n")
        f.write("\n".join(summary_lines(report)) + "\n\n")
        f.write(f"Drop of each metric when the {report.group_by}'s values are shuffled across the test samples "
                f"(baseline - shuffled; mean ± sample std over {report.repeats} shuffles).\n\n")
        f.write(markdown_table(report) + "\n")


def write_chart(report: ImportanceReport, path: Path, top: int = DEFAULT_TOP) -> None:
    """A horizontal bar chart of the mean drop of the sort metric with ± std error bars, the most important
    feature on top; the first ``top`` features. Drawn with matplotlib's Agg canvas (no display, no pyplot
    state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = report.sort_metric
    shown = report.features[:top] if top > 0 else report.features
    fig = Figure(figsize=(8, 1.4 + 0.28 * max(len(shown), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = np.arange(len(shown))[::-1]
    means = [item.mean(metric) for item in shown]
    errors = [item.std(metric) for item in shown]
    ax.barh(positions, means, xerr=errors, color="#4c72b0", ecolor="#333333", capsize=3)
    ax.set_yticks(positions, [item.name for item in shown])
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_ylabel(report.group_by)
    ax.axvline(0.0, color="#888888", linewidth=0.8)
    more = f", top {len(shown)} of {len(report.features)}" if len(shown) < len(report.features) else ""
    where = f"{report.config_path.parent.name}/{report.config_path.name}, " if report.config_path else ""
    ax.set_title(f"Permutation importance: {where}checkpoint {report.checkpoint.name}{more}\n"
                 f"{report.repeats} shuffles per {report.group_by} of {report.samples} test samples, mean ± std",
                 fontsize=10)
    ax.set_xlabel(f"{metric} drop (baseline {report.baseline[metric]:.4f} - shuffled)"
                  + ("" if report.higher_is_better[metric] else "; lower is better: negative = important"))
    ax.grid(axis="x", alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_report(report: ImportanceReport, out_dir: str | Path, top: int = DEFAULT_TOP) -> dict[str, Path]:
    """Write ``<group_by>_importance.csv``, ``.md`` and ``.png`` into ``out_dir`` (each atomically); returns them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report.group_by}_importance"
    paths = {"csv": out / f"{stem}.csv", "markdown": out / f"{stem}.md", "png": out / f"{stem}.png"}
    write_csv(report, paths["csv"])
    write_markdown(report, paths["markdown"])
    write_chart(report, paths["png"], top)
    return paths

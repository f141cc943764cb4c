"""Online (incremental) training over time partitions: ``python tools/online_trainer.py -m CONFIG``.

``runner.train_data_dir`` holds one folder per time partition, named by ``runner.partition_pattern``
(``%Y%m%d/%H``: ``<dir>/20260101/00/``, ``<dir>/20260101/01/``, ...; ``%Y%m%d`` for daily partitions). For each
partition in time order, from ``runner.start_partition`` (default: the earliest found) to ``runner.end_partition``
(or ``runner.partition_count`` partitions; neither: follow the data as it arrives), the job:

1. waits for the partition's done-file (``runner.done_file``, e.g. ``_SUCCESS``, polled every
   ``runner.poll_interval`` seconds; past ``runner.wait_timeout`` an error names the partition and the missing
   file, or with ``runner.stop_on_timeout`` the job stops cleanly and a restart continues there);
2. evaluates the current model on it before training on it (progressive validation: the metrics a deployed model
   would have had on that hour), logged, appended to ``<model_save_path>/online_metrics.jsonl`` and written to
   TensorBoard (``progressive/<metric>``) with ``runner.use_visual``;
3. trains one pass over it (``runner.epochs`` passes per partition) with the trainer's loop
   (:func:`recstack.trainer.train_epoch`: the same steps, log lines, and ``runner.use_fleet`` strategy);
4. saves the checkpoint ``<model_save_path>/<pass>/`` atomically: model, optimizer and the data position (the
   partition it trained, in ``meta.json``); with ``runner.export_every_pass`` also an export (TorchScript + ONNX,
   as ``tools/to_static.py``) in ``<model_save_path>/export/<pass>/``, published whole by one rename; keeps the
   newest ``runner.keep_checkpoints`` of each.

A restarted job loads the newest checkpoint and continues with the partition after the one it trained: a kill
during a pass retrains that partition from the previous checkpoint, a kill during a save leaves a temporary
folder that is removed (checkpoints appear by one rename, :func:`recstack.checkpoint.save_checkpoint`). No
partition is trained twice, none is skipped. A partition that cannot be read (no data files, a malformed row)
stops the job before anything of it is trained or written, with an error naming the partition, file and line.

``runner.freeze_after: N`` trains the first N partitions and then only evaluates the frozen model on the later
ones: the baseline the progressive-validation curve is compared with (doc/online_training.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recstack.checkpoint import META_FILE, MODEL_FILE, clean_interrupted_saves, load_checkpoint, read_meta
from recstack.config import Config, ConfigError, log_config
from recstack.data import create_loader, create_reader
from recstack.data.base import DataFormatError, list_data_files
from recstack.dist.strategy import LocalStrategy, make_strategy
from recstack.fileio import atomic_open, owner_tag
from recstack.metrics import AUC, LogLoss, Metric
from recstack.prepare import move_batch, prepare_run
from recstack.profiling import TrainingProfiler
from recstack.runs import TrainingRun
from recstack.utils import seed_everything
from recstack.wrapper import DygraphModel, as_tasks, model_name, unwrap_model

logger = logging.getLogger(__name__)

METRICS_FILE = "online_metrics.jsonl"
EXPORT_DIR = "export"
#: the finest strftime field of a pattern sets the partitions' step
_STEPS = (("%M", dt.timedelta(minutes=1)), ("%H", dt.timedelta(hours=1)), ("%I", dt.timedelta(hours=1)),
          ("%d", dt.timedelta(days=1)), ("%j", dt.timedelta(days=1)))


class PartitionTimeout(FileNotFoundError):
    """A partition's done-file did not appear within ``runner.wait_timeout``; the message names both."""


# ---------------------------------------------------------------------- partitions
@dataclass(frozen=True)
class Partitions:
    """The time partitions of a data folder: ``<root>/<time formatted by pattern>/``."""

    root: Path
    pattern: str
    done_file: str | None

    @property
    def step(self) -> dt.timedelta:
        for field_, step in _STEPS:
            if field_ in self.pattern:
                return step
        raise ConfigError(f"runner.partition_pattern: '{self.pattern}' has no minute, hour or day field "
                          "(%M, %H, %d or %j); e.g. %Y%m%d/%H (hourly) or %Y%m%d (daily)")

    def name(self, when: dt.datetime) -> str:
        return when.strftime(self.pattern)

    def parse(self, name: str, key: str = "partition") -> dt.datetime:
        try:
            return dt.datetime.strptime(name.strip("/"), self.pattern)
        except ValueError:
            raise ConfigError(f"{key}: '{name}' does not match runner.partition_pattern '{self.pattern}' "
                              f"(e.g. {dt.datetime(2026, 1, 1).strftime(self.pattern)})") from None

    def folder(self, when: dt.datetime) -> Path:
        return self.root / self.name(when)

    def marker(self, when: dt.datetime) -> Path:
        """The file (or, without a done-file, the folder) whose presence makes a partition complete."""
        return self.folder(when) / self.done_file if self.done_file else self.folder(when)

    def found(self) -> list[dt.datetime]:
        """The partitions present under the root (complete or not), in time order."""
        depth = self.pattern.strip("/").count("/") + 1
        out = []
        if not self.root.is_dir():
            return out
        for path in self.root.glob("/".join(["*"] * depth)):
            if path.is_dir():
                try:
                    out.append(dt.datetime.strptime(path.relative_to(self.root).as_posix(), self.pattern))
                except ValueError:
                    continue
        return sorted(set(out))

    def data_files(self, when: dt.datetime) -> list[str]:
        """The partition's data files (every regular file but the done-file and hidden ones).

        Raises:
            DataFormatError: the partition holds no data file (names the partition and its folder).
        """
        name, folder = self.name(when), self.folder(when)
        files = [f for f in list_data_files_or_empty(folder) if Path(f).name != self.done_file]
        if not files:
            raise DataFormatError(f"partition {name}: folder '{folder}' holds no data files"
                                  + (f" (only its done-file {self.done_file})" if self.done_file else "")
                                  + "; nothing of it was trained or written")
        return files


def list_data_files_or_empty(folder: Path) -> list[str]:
    try:
        return list_data_files(folder)
    except DataFormatError:
        return []


def _agree(strategy: LocalStrategy, values: Sequence[float]) -> list[float]:
    """``values`` summed over the ranks (one process: as they are), so that every rank decides alike."""
    if not strategy.distributed:
        return list(values)
    from recstack.dist import ddp

    return ddp.all_sum(list(values))


def wait_for(partitions: Partitions, when: dt.datetime, config: Config, strategy: LocalStrategy) -> bool:
    """Wait until the partition is complete; ``False`` when ``runner.stop_on_timeout`` stops the job.

    Raises:
        PartitionTimeout: ``runner.wait_timeout`` passed without the done-file.
    """
    poll, timeout = float(config.get("runner.poll_interval")), config.get("runner.wait_timeout")
    marker, name = partitions.marker(when), partitions.name(when)
    start = time.monotonic()
    said = False
    while True:
        present, late = _agree(strategy, [float(marker.exists()),
                                          float(timeout is not None and time.monotonic() - start >= timeout)])
        if present == strategy.world_size:
            if said:
                logger.info("partition %s arrived after %.1f s", name, time.monotonic() - start)
            return True
        if late:
            later = [partitions.name(t) for t in partitions.found() if t > when]
            what = f"done-file {marker}" if partitions.done_file else f"folder {marker}"
            hint = f"; later partitions exist ({', '.join(later[:3])}{', ...' if len(later) > 3 else ''})" \
                if later else ""
            if config.get("runner.stop_on_timeout"):
                logger.info("partition %s: no %s after %g s (runner.wait_timeout); stopping "
                            "(runner.stop_on_timeout): a restart continues with partition %s%s", name, what, timeout,
                            name, hint)
                return False
            raise PartitionTimeout(f"partition {name}: {what} missing after waiting {timeout:g} s "
                                   f"(runner.wait_timeout){hint}; nothing of it was trained")
        if not said:
            logger.info("waiting for partition %s: %s (polling every %g s%s)", name,
                        marker if partitions.done_file else f"folder {marker}", poll,
                        f", timeout {timeout:g} s" if timeout is not None else "")
            said = True
        time.sleep(poll if timeout is None else max(0.01, min(poll, timeout - (time.monotonic() - start))))


# ---------------------------------------------------------------------- checkpoints
def pass_checkpoints(root: Path) -> list[int]:
    """The pass numbers of the complete checkpoints in ``root`` (``<pass>/model.pt``), oldest first."""
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / MODEL_FILE).is_file())


def newest_position(root: Path, partitions: Partitions, clean: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of an online run in ``root`` and its meta (None: none yet); ``clean``: first remove
    what a killed save left (rank 0 only, under torchrun).

    Raises:
        ConfigError: the newest checkpoint is not an online one (no ``partition`` in its meta.json).
    """
    if clean and root.is_dir():
        clean_interrupted_saves(root)  # the temporaries of a save that was killed
    passes = pass_checkpoints(root)
    if not passes:
        return None
    folder = root / str(passes[-1])
    meta = read_meta(folder / META_FILE) if (folder / META_FILE).is_file() else {}
    if not isinstance(meta.get("partition"), str):
        raise ConfigError(f"runner.model_save_path: '{root}' holds checkpoint {folder.name} of a run that was not "
                          "online (no data position in its meta.json); use another model_save_path for "
                          "tools/online_trainer.py, or runner.model_init_path to start from it")
    partitions.parse(meta["partition"], f"{folder / META_FILE} (partition)")
    return folder, meta


def _remove_published(folder: Path, why: str) -> None:
    """Remove a published folder: renamed to a temporary name first (a kill leaves a temporary that the next
    save tidies, never half a checkpoint), then deleted."""
    doomed = folder.parent / f".tmp-{folder.name}-{owner_tag()}"
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    logger.info("removed %s (%s)", folder, why)


def keep_newest(root: Path, keep: int | None) -> None:
    """Remove all but the newest ``keep`` numbered folders of ``root`` (checkpoints or exports)."""
    if keep is None or not root.is_dir():
        return
    numbered = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())
    for number in numbered[:-keep] if len(numbered) > keep else []:
        _remove_published(root / str(number), f"runner.keep_checkpoints: {keep}")


def export_pass(config: Config, checkpoint: Path, files: list[str], out_root: Path) -> Path:
    """Export a pass's checkpoint (TorchScript + ONNX + JSON, verified as ``tools/to_static.py`` does) to
    ``<out_root>/<pass>/``, written in a temporary folder and renamed into place."""
    from recstack.export import export_model

    target = out_root / checkpoint.name
    out_root.mkdir(parents=True, exist_ok=True)
    clean_interrupted_saves(out_root)
    tmp = out_root / f".tmp-{checkpoint.name}-{owner_tag()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        export_model(config, out_dir=tmp, checkpoint=checkpoint, files=files)
        if target.exists():
            _remove_published(target, "replaced by a new export of the same pass")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------- progressive validation
def _binary_tasks(metrics: list[Metric]) -> bool:
    return bool(metrics) and all(isinstance(m, AUC) for m in metrics)


@torch.no_grad()
def progressive_validation(wrapper: DygraphModel, model: torch.nn.Module, loader: Any, config: Config,
                           device: torch.device) -> dict[str, float]:
    """The model's metrics on a partition it has not trained on, and a log loss per task for the models whose
    metrics are AUCs (``logloss`` or ``logloss_<task>``); ``samples``: the rows evaluated (over every rank)."""
    from recstack import dist
    from recstack.wrapper import DygraphModel as Base

    net = unwrap_model(model)  # the plain network: no DDP collectives in a forward that ranks may not share
    net.eval()
    wrapper.begin_evaluation(net, config)
    metrics, names = wrapper.create_metrics()
    default_forward = type(wrapper).infer_forward is Base.infer_forward
    losses = [LogLoss() for _ in metrics] if default_forward and _binary_tasks(metrics) else []
    samples = 0
    for batch in loader:
        batch = move_batch(batch, device)
        if default_forward:
            inputs, labels = wrapper.create_feeds(batch, config)
            pred = net(*inputs)
            wrapper._update_metrics(metrics, pred, labels, batch)
            for loss, p, y in zip(losses, as_tasks(pred), labels):
                loss.update(p, y)
            samples += len(labels[0])
        else:
            metrics, _ = wrapper.infer_forward(net, metrics, batch, config)
            samples += len(next(iter(batch.values())))
    samples = int(_agree_dist([samples])[0])
    metrics, losses = dist.reduce_metrics(metrics), dist.reduce_metrics(losses)
    out = {name: metric.compute() for name, metric in zip(names, metrics)}
    for name, loss in zip(names, losses):
        out["logloss" + name[len("auc"):]] = loss.compute()
    out["samples"] = samples
    return out


def _agree_dist(values: list[float]) -> list[float]:
    from recstack import dist

    return dist.all_sum(values) if dist.is_initialized() else values


# ---------------------------------------------------------------------- metrics file
class MetricsFile:
    """``<model_save_path>/online_metrics.jsonl``: one JSON object per partition (rank 0 writes it, rewritten
    atomically: a kill never leaves half a line). A partition's record is written when it has been evaluated,
    before training, and completed after its checkpoint is saved; a partition evaluated again (after a kill
    during its pass) replaces its earlier record."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def put(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kept = [r for r in self.records() if r.get("partition") != record["partition"]]
        with atomic_open(self.path) as f:
            for r in [*kept, record]:
                f.write(json.dumps(r, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    return str(value)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of an ``online_metrics.jsonl`` file ([] when absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{line_no}: not a JSON object ({err.msg})") from None
    return out


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k}: {v:.6f}" if isinstance(v, float) else f"{k}: {v}" for k, v in values.items())


# ---------------------------------------------------------------------- the job
@dataclass
class OnlineResult:
    """What a call of :func:`train_online` did."""

    trained: list[str] = field(default_factory=list)  #: partitions trained, in order
    evaluated: list[str] = field(default_factory=list)  #: partitions evaluated (frozen ones included)
    resumed_from: str | None = None  #: the checkpoint the job started from
    stopped: str = ""  #: why the job ended


def _schedule(config: Config, partitions: Partitions, position: dt.datetime | None,
              job_start: dt.datetime | None = None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(first partition to visit, last one or None); the first is None when nothing has arrived yet.
    ``job_start``: the first partition of the job a checkpoint continues (``partition_count`` counts from it)."""
    start_name, end_name = config.get("runner.start_partition"), config.get("runner.end_partition")
    start = partitions.parse(start_name, config.source("runner.start_partition")) if start_name else None
    end = partitions.parse(end_name, config.source("runner.end_partition")) if end_name else None
    if position is not None:
        first = position + partitions.step
        if start is not None and start > first:
            logger.warning("%s is %s, but the checkpoint's data position is %s: continuing with %s (no partition "
                           "is skipped)", config.source("runner.start_partition"), start_name,
                           partitions.name(position), partitions.name(first))
    else:
        first = start
        if first is None:
            found = partitions.found()
            first = found[0] if found else None
    count = config.get("runner.partition_count")
    if count is not None:
        anchor = start or job_start or first
        if anchor is not None:
            by_count = anchor + (count - 1) * partitions.step
            end = by_count if end is None else min(end, by_count)
    return first, end


class _SaveHooks:
    """The optimizer as ``save_checkpoint`` sees it, with the test hooks' ``during_save(pass)`` called when the
    checkpoint's model file is written and its optimizer file not yet (a kill there leaves half a save)."""

    def __init__(self, optimizer: Any, hooks: Sequence[Any], pass_id: int) -> None:
        self.optimizer, self.hooks, self.pass_id = optimizer, hooks, pass_id

    def state_dict(self) -> dict[str, Any]:
        for hook in self.hooks:
            hook(self.pass_id)
        return self.optimizer.state_dict()


def train_online(config: Config, callbacks: Sequence[Any] = ()) -> OnlineResult:
    """Run the online job of ``config`` (see the module docstring); returns what it did.

    Args:
        config: the run's config (``runner.train_data_dir``: the partitions' root).
        callbacks: the trainer's callbacks (``on_batch(epoch, batch_id)``, ``on_train_end(model)``), plus
            ``on_pass(pass_id, partition)`` (before a pass trains) and ``during_save(pass_id)`` (test hooks,
            :mod:`recstack.testing`).

    Raises:
        ConfigError, DataFormatError, PartitionTimeout, CheckpointError: a bad config, partition or checkpoint.
    """
    if config.get("runner.embedding_sharding"):
        raise ConfigError(f"{config.source('runner.embedding_sharding')}: the online trainer runs plain data-parallel "
                          "training (runner.use_fleet); remove runner.embedding_sharding")
    strategy = make_strategy(config)
    with TrainingRun(config, main=strategy.is_main, resume=True) as run, \
            TrainingProfiler(config, enabled=False, run_id=run.run_id) as profiler:
        result = _train_online(config, strategy, run, callbacks, profiler)
    strategy.teardown()
    return result


def _train_online(config: Config, strategy: LocalStrategy, run: TrainingRun, callbacks: Sequence[Any],
                  profiler: TrainingProfiler) -> OnlineResult:
    from recstack.trainer import _summary_writer, make_loop, train_epoch

    log_config(config)
    root_key = "runner.train_data_dir"
    if not config.get(root_key):
        raise ConfigError(f"{config.source(root_key)}: not set; the online trainer reads its time partitions")
    partitions = Partitions(Path(config.get(root_key)), config.get("runner.partition_pattern"),
                            config.get("runner.done_file") or None)
    partitions.step  # noqa: B018 (a pattern without a time field is an error now, not at the first partition)
    save_root = Path(config.get("runner.model_save_path"))
    run.check()
    result = OnlineResult()
    main = strategy.is_main
    resume = newest_position(save_root, partitions, clean=main)
    position, passes_done, job_start = None, 0, None
    if resume is not None:
        folder, meta = resume
        position, passes_done = partitions.parse(meta["partition"]), int(folder.name) + 1
        job_start = partitions.parse(meta.get("first_partition") or meta["partition"])
    first, end = _schedule(config, partitions, position, job_start)
    if first is None:  # nothing has arrived yet: wait for the first partition folder
        first = _wait_first(partitions, config)
        if first is None:
            logger.info("online: no partition under %s arrived (runner.stop_on_timeout); nothing to do",
                        partitions.root)
            result.stopped = "no partition arrived"
            return result
    if end is not None and first > end:
        logger.info("online: every partition up to %s is trained (the newest checkpoint trained %s); nothing to do",
                    partitions.name(end), partitions.name(position) if position else "-")
        result.stopped = f"end partition {partitions.name(end)} reached"
        return result
    if not wait_for(partitions, first, config, strategy):
        result.stopped = f"partition {partitions.name(first)} did not arrive (runner.stop_on_timeout)"
        return result
    # seed, threads, the model, optimizer (and model_init_path's warm start), the wrapping: the trainer's
    # preparation, with the first partition's reader (the loaders are built per partition below)
    wrapper, model, optimizer, _, _, device = prepare_run(config, "train", strategy, train=True,
                                                          check_reader=run.check_cache,
                                                          files=partitions.data_files(first))
    if resume is not None:
        load_checkpoint(folder, unwrap_model(model), optimizer, map_location=device)
        result.resumed_from = str(folder)
        logger.info("resumed from checkpoint %s: pass %d trained partition %s; continuing with partition %s",
                    folder, int(folder.name), meta["partition"], partitions.name(first))
    run.begin(model_name(config))
    writer = _summary_writer(config, run) if main else None
    loop = make_loop(config, strategy, wrapper, model, optimizer, device, profiler, writer, callbacks)
    on_pass = [cb.on_pass for cb in callbacks if hasattr(cb, "on_pass")]
    during_save = [cb.during_save for cb in callbacks if hasattr(cb, "during_save")]
    metrics_file = MetricsFile(save_root / METRICS_FILE, enabled=main)
    epochs, keep = config.get("runner.epochs"), config.get("runner.keep_checkpoints")
    freeze_after = config.get("runner.freeze_after")
    logger.info("online: partitions %s/%s, from %s to %s, done-file %s; %d pass(es) per partition",
                partitions.root, partitions.pattern, partitions.name(first),
                partitions.name(end) if end else "(following the data)", partitions.done_file or "(none)", epochs)
    when, frozen_visits = first, 0
    while True:
        if end is not None and when > end:
            result.stopped = f"end partition {partitions.name(end)} reached"
            break
        name = partitions.name(when)
        if not wait_for(partitions, when, config, strategy):
            result.stopped = f"partition {name} did not arrive (runner.stop_on_timeout)"
            break
        files = partitions.data_files(when)
        frozen = freeze_after is not None and passes_done >= freeze_after
        pass_id = passes_done + frozen_visits  # (frozen partitions count on, for the records and TensorBoard)
        with _partition_errors(name):
            eval_loader = create_loader(config, "infer", create_reader(config, "infer", files))
            strategy.shard_loader(eval_loader)
            validation = progressive_validation(wrapper, model, eval_loader, config, device)
            train_loader = None if frozen else create_loader(config, "train", create_reader(config, "train", files))
        logger.info("partition %s (pass %d): progressive validation (before training on it): %s", name, pass_id,
                    _fmt(validation))
        record = {"partition": name, "pass": pass_id, "run_id": run.run_id, "time": time.time(),
                  "validation": validation, "trained": False, **({"frozen": True} if frozen else {})}
        metrics_file.put(record)
        result.evaluated.append(name)
        if writer is not None:
            for key, value in validation.items():
                if key != "samples":
                    writer.add_scalar(f"progressive/{key}", value, pass_id)
        if frozen:
            logger.info("partition %s: not trained (runner.freeze_after: %d, the model is frozen)", name,
                        freeze_after)
            frozen_visits += 1
            when += partitions.step
            continue
        strategy.shard_loader(train_loader)
        for hook in on_pass:
            hook(pass_id, name)
        logger.info("partition %s (pass %d): training on %d file(s)", name, pass_id, len(files))
        loss_total = batches = samples = 0
        seconds, train_metrics = 0.0, {}
        # the pass's random state (dropout, sampling) from the seed and the pass alone, not from what this process
        # did before: a job restarted from a checkpoint trains the next pass exactly as an uninterrupted one
        seed_everything(config.get("runner.seed", 0, type=int) + pass_id)
        for e in range(epochs):
            metrics, names = wrapper.create_metrics()
            train_loader.set_epoch(pass_id * epochs + e)
            with _partition_errors(name):
                loss_total, batches, samples, seconds, reduced = train_epoch(loop, train_loader, pass_id, metrics,
                                                                             names)
            if batches == 0:
                raise DataFormatError(f"partition {name}: its files produced no training batches")
            train_metrics = {n: m.compute() for n, m in zip(names, reduced)}
        loss = loss_total / max(batches, 1)
        meta = {"epoch": pass_id, "pass": pass_id, "partition": name,
                "first_partition": partitions.name(job_start or first), "metrics": train_metrics, "loss": loss,
                "validation": validation, "model": model_name(config), "config": str(config.path), **run.meta()}
        target = save_root / str(pass_id)
        saver = _SaveHooks(optimizer, during_save, pass_id) if during_save else optimizer
        strategy.save(target, model, saver, meta, config)
        run.epoch_saved(pass_id)
        exported = None
        if config.get("runner.export_every_pass"):
            if main:
                exported = export_pass(config, target, files, save_root / EXPORT_DIR)
            _barrier(strategy)
        if main:
            keep_newest(save_root, keep)
            keep_newest(save_root / EXPORT_DIR, keep)
        logger.info("partition %s (pass %d) trained: %sloss: %.6f, samples: %d, %.2f s; checkpoint %s%s", name,
                    pass_id, "".join(f"{k}: {v:.6f}, " for k, v in train_metrics.items()), loss, samples, seconds,
                    target, f", export {exported}" if exported else "")
        record.update(trained=True, train={**train_metrics, "loss": loss, "samples": samples, "seconds": seconds},
                      checkpoint=str(target), export=str(exported) if exported else None)
        metrics_file.put(record)
        if writer is not None:
            writer.add_scalar("pass/loss", loss, pass_id)
            writer.flush()
        result.trained.append(name)
        passes_done += 1
        when += partitions.step
    if writer is not None:
        writer.close()
    for callback in callbacks:
        if hasattr(callback, "on_train_end"):
            callback.on_train_end(model)
    logger.info("online: %s; trained %d partition(s) this run%s; metrics in %s", result.stopped,
                len(result.trained), f" ({result.trained[0]} .. {result.trained[-1]})" if result.trained else "",
                save_root / METRICS_FILE)
    strategy.finish(model, optimizer)
    return result


def _wait_first(partitions: Partitions, config: Config) -> dt.datetime | None:
    """The earliest partition folder, once one is there (None: ``runner.stop_on_timeout`` after the timeout)."""
    poll, timeout = float(config.get("runner.poll_interval")), config.get("runner.wait_timeout")
    start = time.monotonic()
    while True:
        found = partitions.found()
        if found:
            return found[0]
        if timeout is not None and time.monotonic() - start >= timeout:
            if config.get("runner.stop_on_timeout"):
                return None
            raise PartitionTimeout(f"runner.train_data_dir: no partition ({partitions.pattern}) under "
                                   f"'{partitions.root}' after waiting {timeout:g} s (runner.wait_timeout)")
        time.sleep(poll)


def _barrier(strategy: LocalStrategy) -> None:
    if strategy.distributed:
        from recstack.dist import ddp

        ddp.barrier()


@contextlib.contextmanager
def _partition_errors(name: str) -> Iterator[None]:
    """Prefix a data error with the partition it happened in (the readers name the file and line)."""
    try:
        yield
    except DataFormatError as err:
        if str(err).startswith("partition "):
            raise
        raise DataFormatError(f"partition {name}: {err}; nothing of it was trained or written") from None


# ---------------------------------------------------------------------- the plot
def plot_progressive(curves: Sequence[tuple[str, str | os.PathLike]], output: str | os.PathLike,
                     metric: str = "auc", title: str | None = None) -> Path:
    """Plot progressive-validation curves: ``metric`` per partition of each ``(label, online_metrics.jsonl)``,
    written as :mod:`recstack.plots` writes its figures (``.png`` or ``.svg``, through a temporary file)."""
    from matplotlib.figure import Figure

    from recstack.plots import FORMATS, save_figure

    output = Path(output)
    fmt = output.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--plot {output}: expected a .{' or .'.join(FORMATS)} file")
    figure = Figure(figsize=(8.0, 4.2), layout="constrained")
    axes = figure.add_subplot()
    for index, (label, path) in enumerate(curves):
        records = read_metrics(path)
        if not records:
            raise DataFormatError(f"{path}: no progressive-validation records")
        points = [(r["partition"], r["validation"][metric]) for r in records if metric in r.get("validation", {})]
        if not points:
            raise DataFormatError(f"{path}: no '{metric}' in its records (known: "
                                  f"{', '.join(k for k in records[0].get('validation', {}) if k != 'samples')})")
        names = [name for name, _ in points]
        axes.plot(range(len(points)), [value for _, value in points], marker="o", markersize=3,
                  color=f"C{index % 10}", label=label)
        ticks = list(range(0, len(names), max(1, math.ceil(len(names) / 8))))
        axes.set_xticks(ticks, [names[i] for i in ticks], rotation=30, ha="right", fontsize=8)
    axes.set_xlabel("partition (evaluated before training on it)")
    axes.set_ylabel(f"progressive {metric}")
    axes.set_title(title or f"progressive validation: {metric} of each new partition, before training on it",
                   fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=9)
    return save_figure(figure, output.parent, (fmt,), output.stem, dpi=110)[0]

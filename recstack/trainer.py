"""The training loop: one model-agnostic loop for every model folder.

Reads top to bottom: prepare (:func:`recstack.prepare.prepare_run`: wrapper, model, optimizer, loader) →
for each epoch: for each batch: ``train_forward`` → backward → step, log every ``print_interval``
batches → log the epoch → save ``<model_save_path>/<epoch>/``. One process or many is the strategy's
business (:mod:`recstack.dist.strategy`: prepare, batches, reduce, save), not the loop's.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recstack.compile import StepCompiler
from recstack.config import Config, log_config
from recstack.data.base import DataFormatError
from recstack.dist.strategy import LocalStrategy, make_strategy
from recstack.logs import IntervalStats, format_metrics, format_print_dict, memory_line, memory_mib
from recstack.metrics import Metric, warn_undefined
from recstack.prepare import batch_size_of, move_batch, prepare_run
from recstack.profiling import TrainingProfiler
from recstack.runs import TrainingRun
from recstack.wrapper import Batch, DygraphModel, model_name

logger = logging.getLogger(__name__)


@dataclass
class EpochResult:
    epoch: int
    metrics: dict[str, float]
    loss: float
    samples: int
    seconds: float
    checkpoint: Path | None

    @property
    def ips(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


@dataclass
class TrainResult:
    wrapper: DygraphModel
    model: nn.Module
    optimizer: Any
    epochs: list[EpochResult] = field(default_factory=list)


def train_step(wrapper: DygraphModel, model: nn.Module, optimizer: Any, metrics: list[Metric], batch: Batch,
               config: Config) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """One optimisation step on a batch; returns the (detached) loss and the wrapper's print_dict.

    A learning-rate schedule attached to the optimizer (``optimizer.lr_scheduler``, see
    ``hyper_parameters.optimizer.lr_schedule``) counts the step: the rate follows batches, as Paddle's.
    """
    loss, _, print_dict = wrapper.train_forward(model, metrics, batch, config)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler = getattr(optimizer, "lr_scheduler", None)
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), print_dict


def _progress(config: Config, loader: Any, epoch: int) -> tuple[Iterable, contextlib.AbstractContextManager]:
    """The epoch's batches behind a tqdm bar on stderr (``runner.progress_bar``; default: when stderr is a
    terminal), and the context to run the epoch in: log lines go through ``tqdm.write`` meanwhile, so they
    print above the bar instead of into it.

    The bar's total is the loader's ``expected_batches``: the previous epoch's batch count, or in the
    first epoch an estimate from the share of the data files' bytes parsed so far (refined as it goes),
    so the bar shows a percentage and an ETA.
    """
    show = config.get("runner.progress_bar")
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return loader, contextlib.nullcontext()
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(desc=f"epoch {epoch}", unit="batch", total=getattr(loader, "expected_batches", None), leave=False,
               dynamic_ncols=True)

    def batches() -> Iterable:
        try:
            for batch in loader:
                total = getattr(loader, "expected_batches", None)
                if total is not None and total != bar.total:
                    bar.total = max(total, bar.n + 1)
                    bar.refresh()
                yield batch
                bar.update(1)
        finally:
            bar.close()

    @contextlib.contextmanager
    def redirected() -> Iterator[None]:
        with logging_redirect_tqdm(tqdm_class=tqdm):
            try:
                yield
            finally:
                bar.close()

    return batches(), redirected()


@dataclass
class TrainLoop:
    """What every pass of the training loop shares: the run's parts, its callbacks and the global step.

    :func:`_train` (epochs over one data set) and :mod:`recstack.online` (one pass per time partition) run
    their passes through :func:`train_epoch` with one of these.
    """

    config: Config
    strategy: LocalStrategy
    wrapper: DygraphModel
    model: nn.Module  #: as the loop holds it (wrapped by the strategy)
    optimizer: Any
    device: torch.device
    compiler: StepCompiler
    profiler: TrainingProfiler
    writer: Any = None  #: TensorBoard writer (rank 0, ``runner.use_visual``) or None
    on_batch: Sequence[Any] = ()  #: ``hook(epoch, batch_id)`` before each training batch
    has_batch_norm: bool = False
    step: int = 0  #: training steps so far (TensorBoard's x axis)
    train_peak: float | None = None  #: RSS (MiB) at the end of the first pass, before any checkpoint


def make_loop(config: Config, strategy: LocalStrategy, wrapper: DygraphModel, model: nn.Module, optimizer: Any,
              device: torch.device, profiler: TrainingProfiler, writer: Any = None,
              callbacks: Sequence[Any] = ()) -> TrainLoop:
    """The :class:`TrainLoop` of a prepared run (the step compiler of ``runner.compile``, the callbacks'
    ``on_batch`` hooks)."""
    on_batch = [cb.on_batch for cb in callbacks if hasattr(cb, "on_batch")]
    # BatchNorm cannot normalise one row in training mode (torch raises); such a batch (the
    # last of an epoch, when the data size leaves one row over) is skipped with a warning
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    compiler = StepCompiler(config, model, device)  # runner.compile (tools/static_trainer.py)
    return TrainLoop(config, strategy, wrapper, model, optimizer, device, compiler, profiler, writer, on_batch,
                     has_batch_norm)


def train_epoch(loop: TrainLoop, loader: Any, epoch: int, metrics: list[Metric],
                names: list[str]) -> tuple[float, int, int, float, list[Metric]]:
    """One pass over ``loader`` (set to its epoch by the caller): a step per batch, a log line every
    ``runner.print_interval`` batches (and TensorBoard scalars).

    Returns:
        The pass's global ``(loss sum, batches, samples, seconds, metrics)`` over every rank
        (:meth:`LocalStrategy.reduce <recstack.dist.strategy.LocalStrategy.reduce>`).
    """
    config, strategy, wrapper, model, optimizer = loop.config, loop.strategy, loop.wrapper, loop.model, loop.optimizer
    device, writer, profiler, compiler = loop.device, loop.writer, loop.profiler, loop.compiler
    main = strategy.is_main
    interval = config.get("runner.print_interval")
    model.train()
    stats = IntervalStats()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    interval_loss = torch.zeros((), dtype=torch.float64, device=device)
    samples = batches = 0
    epoch_start = tick = time.perf_counter()
    batch_iter, progress = _progress(config, loader, epoch) if main else (loader, contextlib.nullcontext())
    batch_iter, joined = strategy.batches(model, batch_iter)  # DDP: ranks with fewer batches wait
    batch_iter = profiler.batches(batch_iter)  # runner.profile: the wait for each batch, as its own span
    with joined, progress:
        for batch_id, batch in enumerate(batch_iter):
            got = time.perf_counter()
            if loop.has_batch_norm and batch_size_of(batch) == 1:
                logger.warning("epoch %d: skipped batch %d of one row (BatchNorm cannot train on a single row); "
                               "choose train_batch_size so that no batch of one row is left over", epoch, batch_id)
                continue
            for hook in loop.on_batch:
                hook(epoch, batch_id)
            batch = move_batch(batch, device)
            loss, print_dict = compiler.step(train_step, wrapper, model, optimizer, metrics, batch, config)
            profiler.step()
            loss_sum += loss
            interval_loss += loss
            n = batch_size_of(batch)
            samples += n
            batches += 1
            loop.step += 1
            done = time.perf_counter()
            stats.add(got - tick, done - tick, n)
            tick = done
            if batch_id % interval == 0:  # rank 0's own batches (the epoch line is global)
                avg_loss = float(interval_loss) / stats.batches
                logger.info("epoch: %d, batch_id: %d, %sloss: %.6f, %s%s", epoch, batch_id,
                            format_metrics(names, metrics), avg_loss, format_print_dict(print_dict), stats.line())
                if writer is not None:
                    writer.add_scalar("train/loss", avg_loss, loop.step)
                    writer.add_scalar("train/ips", stats.samples / max(stats.batch_cost, 1e-9), loop.step)
                    for name, metric in zip(names, metrics):
                        writer.add_scalar(f"train/{name}", metric.compute(), loop.step)
                stats.reset()
                interval_loss.zero_()
    seconds = time.perf_counter() - epoch_start
    if loop.train_peak is None:
        loop.train_peak = memory_mib()[0]  # the first pass, before any checkpoint is gathered or written
        summary = compiler.summary() if main else None
        if summary:
            logger.info("%s", summary)
    return strategy.reduce(float(loss_sum), batches, samples, seconds, metrics)


def train(config: Config, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train the model of ``config`` for ``runner.epochs`` epochs, saving a checkpoint per epoch.

    With ``runner.use_fleet: True`` under torchrun, every process trains its shard of the data in one
    data-parallel job (:mod:`recstack.dist`, doc/distributed.md); rank 0 alone writes checkpoints,
    TensorBoard and log lines, and the epoch metrics are global. The returned :class:`TrainResult` then
    holds the unwrapped network (``None`` for a sharded one) on every rank. Where the work goes is the
    strategy's business (:mod:`recstack.dist.strategy`); the loop below is the same for all.

    Args:
        config: the run's config.
        callbacks: objects with some of ``on_batch(epoch, batch_id)`` (before each training batch) and
            ``on_train_end(model)`` (the model as the loop holds it, on every rank); ``tools/trainer.py``
            passes the test hooks of :mod:`recstack.testing` that the environment switches on.
    """
    strategy = make_strategy(config)  # under use_fleet and torchrun: joins the process group
    # the run's identity, run.json and train.log in model_save_path (recstack/runs.py; rank 0 only)
    with TrainingRun(config, main=strategy.is_main) as run, \
            TrainingProfiler(config, enabled=strategy.is_main, run_id=run.run_id) as profiler:  # runner.profile
        result = _train(config, strategy, run, callbacks, profiler)
    # on an error the group is left as it is: other ranks may be blocked in a collective, and torchrun
    # stops them when this process exits with the error (doc/distributed.md, "Errors")
    strategy.teardown()
    return result


def _train(config: Config, strategy: LocalStrategy, run: TrainingRun, callbacks: Sequence[Any],
           profiler: TrainingProfiler) -> TrainResult:
    log_config(config)
    run.check()  # the output folders are writable, a previous run's checkpoints may go: before any training
    # seed, threads, the model (and optimizer, warm start, wrapping: the strategy's), the reader and loader
    wrapper, model, optimizer, _, loader, device = prepare_run(config, "train", strategy, train=True,
                                                               check_reader=run.check_cache)
    main = strategy.is_main
    if config.get("runner.epochs") > 0:
        run.begin(model_name(config))  # (rank 0) a previous run's epochs archived/removed, run.json, train.log
    writer = _summary_writer(config, run) if main else None
    save_root = Path(config.get("runner.model_save_path"))
    result = TrainResult(wrapper, model, optimizer)
    metrics, names = wrapper.create_metrics()
    loop = make_loop(config, strategy, wrapper, model, optimizer, device, profiler, writer, callbacks)
    profiler.start(device)
    for epoch in range(config.get("runner.epochs")):
        if epoch > 0 and config.get("runner.use_auc"):
            metrics, names = wrapper.create_metrics()  # fresh metrics each epoch
        loader.set_epoch(epoch)
        # global figures: summed losses, samples and metric states of every rank
        loss_total, batches, samples, seconds, epoch_metrics_list = train_epoch(loop, loader, epoch, metrics, names)
        if batches == 0:
            raise DataFormatError(f"{config.source('runner.train_data_dir')}: training data produced no batches")
        epoch_metrics = {name: metric.compute() for name, metric in zip(names, epoch_metrics_list)}
        epoch_loss = loss_total / batches
        logger.info("epoch: %d done, %sloss: %.6f, epoch time: %.2f s, samples: %d, ips: %.1f ins/s", epoch,
                    format_metrics(names, epoch_metrics_list), epoch_loss, seconds, samples,
                    samples / max(seconds, 1e-9))
        warn_undefined(names, epoch_metrics_list, f"epoch {epoch}: ")  # a nan metric (e.g. one class only)
        meta = {"epoch": epoch, "metrics": epoch_metrics, "loss": epoch_loss, "model": model_name(config),
                "config": str(config.path), **run.meta()}
        # rank 0 writes the unwrapped model's state (a sharded model gathers it on every rank)
        checkpoint = strategy.save(save_root / str(epoch), model, optimizer, meta, config)
        logger.info("saved checkpoint %s", checkpoint)
        run.epoch_saved(epoch)
        if writer is not None:
            writer.add_scalar("epoch/loss", epoch_loss, epoch)
            for name, value in epoch_metrics.items():
                writer.add_scalar(f"epoch/{name}", value, epoch)
            writer.flush()
        result.epochs.append(EpochResult(epoch, epoch_metrics, epoch_loss, samples, seconds, checkpoint))
    if writer is not None:
        writer.close()
    if loop.train_peak is not None:
        _log_memory(strategy, loop.train_peak)
    for callback in callbacks:
        if hasattr(callback, "on_train_end"):
            callback.on_train_end(model)
    # the DDP wrapper (its reducer) and sharded modules must be released before the process group
    result.model, result.optimizer = strategy.finish(model, optimizer)
    del model, optimizer
    return result


def _log_memory(strategy: LocalStrategy, train_peak: float) -> None:
    """``memory (RSS): training peak ... MiB, peak ... MiB, now ... MiB`` (every rank's, on rank 0, under
    use_fleet). The training peak is taken at the end of epoch 0, before a checkpoint is gathered or written."""
    values = strategy.gather([train_peak, *memory_mib()])
    logger.info("%s", memory_line(values, per_rank=strategy.distributed))


def _summary_writer(config: Config, run: TrainingRun):
    """TensorBoard writer into the run's own subfolder ``<visual_log_path>/<run id>/``: TensorBoard shows
    the runs of one folder as separate curves instead of drawing them over each other."""
    if not config.get("runner.use_visual"):
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder, root = run.visual_dir(), run.visual_root()
    logger.info("TensorBoard scalars in %s (tensorboard --logdir %s shows every run's)", folder, root)
    return SummaryWriter(str(folder))

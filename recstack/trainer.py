"""The training loop: one model-agnostic loop for every model folder.

Reads top to bottom: build (wrapper, model, optimizer, loader) → for each epoch:
for each batch: ``train_forward`` → backward → step, log every
``print_interval`` batches → log the epoch → save ``<model_save_path>/<epoch>/``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from recstack.checkpoint import load_checkpoint, save_checkpoint
from recstack.config import Config, ConfigError, check_hyper_parameters, log_config
from recstack.data import create_loader, create_reader
from recstack.data.base import DataFormatError
from recstack.evaluator import IntervalStats, batch_size_of, format_metrics, move_batch
from recstack.metrics import Metric, warn_undefined
from recstack.runs import TrainingRun, moved_checkpoint_hint
from recstack.utils import seed_everything, select_device, set_cpu_threads, thread_settings
from recstack.wrapper import Batch, DygraphModel, load_wrapper, model_name

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


def build_model(config: Config, device: torch.device, meta_tables: bool = False) -> tuple[DygraphModel, nn.Module]:
    """The model folder's wrapper and its network on ``device``.

    ``meta_tables``: id tables made by ``recstack.layers.make_embedding`` stay on the ``meta``
    device, unallocated (``runner.embedding_sharding``: each rank then fills its shards only).
    """
    wrapper = load_wrapper(config)
    if meta_tables:
        from recstack.layers.embedding import meta_tables as on_meta

        with on_meta():
            model = wrapper.create_model(config)
    else:
        model = wrapper.create_model(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"create_model of {model_name(config)} returned {type(model).__name__}, not an nn.Module")
    if meta_tables:
        return wrapper, model._apply(lambda t: t if t.is_meta else t.to(device))
    return wrapper, model.to(device)


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


def _format_print_dict(print_dict: dict[str, Any] | None) -> str:
    if not print_dict:
        return ""
    return "".join(f"{k}: {float(v):.6f}, " for k, v in print_dict.items())


def train(config: Config) -> TrainResult:
    """Train the model of ``config`` for ``runner.epochs`` epochs, saving a checkpoint per epoch.

    With ``runner.use_fleet: True`` under torchrun, every process trains its shard of the data in one
    data-parallel job (:mod:`recstack.dist`, doc/distributed.md); rank 0 alone writes checkpoints,
    TensorBoard and log lines, and the epoch metrics are global. The returned :class:`TrainResult` then
    holds the unwrapped network (``None`` for a sharded one) on every rank.
    """
    ctx = None
    if config.get("runner.use_fleet"):
        from recstack import dist

        ctx = dist.init_distributed(config)  # None (one process, with a warning) without torchrun
    elif config.get("runner.embedding_sharding"):
        raise ConfigError(f"{config.source('runner.embedding_sharding')}: sharding needs runner.use_fleet: True and "
                          "torchrun (doc/distributed.md); remove it to train on one process")
    # the run's identity, run.json and train.log in model_save_path (recstack/runs.py; rank 0 only)
    with TrainingRun(config, main=ctx is None or ctx.is_main) as run:
        result = _train(config, ctx, run)
    if ctx is not None:
        # on an error the group is left as it is: other ranks may be blocked in a collective, and torchrun
        # stops them when this process exits with the error (doc/distributed.md, "Errors")
        dist.teardown()
    return result


def _train(config: Config, ctx: Any, run: TrainingRun) -> TrainResult:
    log_config(config)
    run.check()  # the output folders are writable, a previous run's checkpoints may go: before any training
    seed_everything(config.get("runner.seed"))
    set_cpu_threads(config.get("runner.cpu_threads"))
    device = select_device(config.get("runner.use_gpu")) if ctx is None else ctx.device
    logger.info("threads: %s", thread_settings())

    sharded = ctx is not None and bool(config.get("runner.embedding_sharding"))
    wrapper, model = build_model(config, device, meta_tables=sharded)  # sharded: the table is never whole
    init_path = config.get("runner.model_init_path")
    if ctx is None:
        optimizer = wrapper.create_optimizer(model, config)
    else:
        from recstack import dist

        if init_path and not sharded:  # every rank loads it before wrapping
            _warm_start(init_path, model, device)
            logger.info("warm start: loaded model parameters from %s", init_path)
        elif init_path:
            logger.info("warm start: each rank loads its shards and the dense parameters from %s", init_path)
        init_path = None  # sharded: shard_model reads it (memory-mapped, the local rows only)
        model, optimizer = dist.prepare_model(model, config, ctx, lambda module: wrapper.create_optimizer(module,
                                                                                                          config))
    reader = create_reader(config, "train")
    check_hyper_parameters(config, model_name(config))
    run.check_cache(reader)
    loader = create_loader(config, "train", reader)
    if ctx is not None:
        loader.set_shard(ctx.rank, ctx.world_size)
        logger.info("data: rank %d of %d reads %s", ctx.rank, ctx.world_size, loader.shard_description())
    if init_path:
        _warm_start(init_path, model, device)
        logger.info("warm start: loaded model parameters from %s", init_path)

    main = ctx is None or ctx.is_main
    if config.get("runner.epochs") > 0:
        run.begin(model_name(config))  # (rank 0) a previous run's epochs archived/removed, run.json, train.log
    writer = _summary_writer(config, run) if main else None
    save_root = Path(config.get("runner.model_save_path"))
    interval = config.get("runner.print_interval")
    result = TrainResult(wrapper, model, optimizer)
    metrics, names = wrapper.create_metrics()
    # BatchNorm cannot normalise one row in training mode (torch raises); such a batch (the
    # last of an epoch, when the data size leaves one row over) is skipped with a warning
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    step = 0
    for epoch in range(config.get("runner.epochs")):
        if epoch > 0 and config.get("runner.use_auc"):
            metrics, names = wrapper.create_metrics()  # fresh metrics each epoch
        model.train()
        loader.set_epoch(epoch)
        stats = IntervalStats()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        interval_loss = torch.zeros((), dtype=torch.float64, device=device)
        samples = batches = 0
        epoch_start = tick = time.perf_counter()
        batch_iter, progress = _progress(config, loader, epoch) if main else (loader, contextlib.nullcontext())
        joined = contextlib.nullcontext()
        if ctx is not None:
            joined = dist.join_context(model)  # ranks with fewer batches wait for the others
            if dist.is_sharded(model):
                batch_iter = dist.equal_batches(batch_iter, device)
        with joined, progress:
            for batch_id, batch in enumerate(batch_iter):
                got = time.perf_counter()
                if has_batch_norm and batch_size_of(batch) == 1:
                    logger.warning("epoch %d: skipped batch %d of one row (BatchNorm cannot train on a single row); "
                                   "choose train_batch_size so that no batch of one row is left over", epoch, batch_id)
                    continue
                if ctx is not None:
                    dist.ddp.maybe_inject_failure(batch_id)
                batch = move_batch(batch, device)
                loss, print_dict = train_step(wrapper, model, optimizer, metrics, batch, config)
                loss_sum += loss
                interval_loss += loss
                n = batch_size_of(batch)
                samples += n
                batches += 1
                step += 1
                done = time.perf_counter()
                stats.add(got - tick, done - tick, n)
                tick = done
                if batch_id % interval == 0:  # rank 0's own batches (the epoch line below is global)
                    avg_loss = float(interval_loss) / stats.batches
                    logger.info("epoch: %d, batch_id: %d, %sloss: %.6f, %s%s", epoch, batch_id,
                                format_metrics(names, metrics), avg_loss, _format_print_dict(print_dict), stats.line())
                    if writer is not None:
                        writer.add_scalar("train/loss", avg_loss, step)
                        writer.add_scalar("train/ips", stats.samples / max(stats.batch_cost, 1e-9), step)
                        for name, metric in zip(names, metrics):
                            writer.add_scalar(f"train/{name}", metric.compute(), step)
                    stats.reset()
                    interval_loss.zero_()
        seconds = time.perf_counter() - epoch_start
        if epoch == 0:
            train_peak = _memory()[0]  # before any checkpoint is gathered or written
        epoch_metrics_list = metrics
        if ctx is not None:  # global figures: summed losses, samples and metric states of every rank
            loss_total, batches, samples, seconds = dist.all_sum([float(loss_sum), batches, samples, seconds])
            batches, samples, seconds = int(batches), int(samples), seconds / ctx.world_size
            loss_sum = torch.tensor(loss_total, dtype=torch.float64)
            epoch_metrics_list = dist.reduce_metrics(metrics)
        if batches == 0:
            raise DataFormatError(f"{config.source('runner.train_data_dir')}: training data produced no batches")
        epoch_metrics = {name: metric.compute() for name, metric in zip(names, epoch_metrics_list)}
        epoch_loss = float(loss_sum) / batches
        logger.info("epoch: %d done, %sloss: %.6f, epoch time: %.2f s, samples: %d, ips: %.1f ins/s", epoch,
                    format_metrics(names, epoch_metrics_list), epoch_loss, seconds, samples,
                    samples / max(seconds, 1e-9))
        warn_undefined(names, epoch_metrics_list, f"epoch {epoch}: ")  # a nan metric (e.g. one class only)
        meta = {"epoch": epoch, "metrics": epoch_metrics, "loss": epoch_loss, "model": model_name(config),
                "config": str(config.path), **run.meta()}
        checkpoint = save_root / str(epoch)
        if ctx is None:
            checkpoint = save_checkpoint(checkpoint, model,
                                         optimizer if config.get("runner.save_optimizer") else None, meta)
        else:  # rank 0 writes the unwrapped model's state (a sharded model gathers it on every rank)
            state = dist.model_state_dict(model)
            if ctx.is_main:
                meta["world_size"] = ctx.world_size
                save_checkpoint(checkpoint, _StateHolder(state),
                                optimizer if config.get("runner.save_optimizer") and not dist.is_sharded(model)
                                else None, meta)
            del state
            dist.barrier()  # the checkpoint is complete before any rank goes on
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
    if config.get("runner.epochs") > 0:
        _log_memory(ctx, train_peak)
    if ctx is not None:
        # the DDP wrapper (its reducer) and sharded modules must be released before the process group
        dist.ddp.maybe_dump_state(model)
        sharded = dist.is_sharded(model)
        result.model = None if sharded else dist.unwrap(model)
        result.optimizer = None if sharded else optimizer
        del model, optimizer
    return result


def _warm_start(init_path: str, model: nn.Module, device: torch.device) -> None:
    """Load ``runner.model_init_path``; a folder that a later run archived is an error saying where it went."""
    try:
        load_checkpoint(init_path, model, map_location=device)
    except FileNotFoundError as err:
        hint = moved_checkpoint_hint(init_path)
        if not hint:
            raise
        raise FileNotFoundError(f"{err}{hint}") from None


def _memory() -> tuple[float, float]:
    from recstack.dist.ddp import memory_mib

    return memory_mib()


def _log_memory(ctx: Any, train_peak: float) -> None:
    """``memory (RSS): training peak ... MiB, peak ... MiB, now ... MiB`` (every rank's, on rank 0, under
    use_fleet). The training peak is taken at the end of epoch 0, before a checkpoint is gathered or written."""
    peak, now = _memory()
    values = [[train_peak, peak, now]]
    if ctx is not None:
        from recstack import dist

        values = dist.all_gather_floats(values[0])
    text = "; ".join(f"{'' if ctx is None else f'rank {r}: '}training peak {t:.0f} MiB, peak {p:.0f} MiB, "
                     f"now {n:.0f} MiB" for r, (t, p, n) in enumerate(values))
    logger.info("memory (RSS)%s: %s", "" if ctx is None else " per rank", text)


class _StateHolder:
    """Gives ``save_checkpoint`` a ready ``state_dict`` (the unwrapped or gathered one)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def _summary_writer(config: Config, run: TrainingRun):
    """TensorBoard writer into the run's own subfolder ``<visual_log_path>/<run id>/``: TensorBoard shows
    the runs of one folder as separate curves instead of drawing them over each other."""
    if not config.get("runner.use_visual"):
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder, root = run.visual_dir(), run.visual_root()
    logger.info("TensorBoard scalars in %s (tensorboard --logdir %s shows every run's)", folder, root)
    return SummaryWriter(str(folder))

"""The training loop: one model-agnostic loop for every model folder.

Reads top to bottom: build (wrapper, model, optimizer, loader) → for each epoch:
for each batch: ``train_forward`` → backward → step, log every
``print_interval`` batches → log the epoch → save ``<model_save_path>/<epoch>/``.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from recstack.checkpoint import load_checkpoint, save_checkpoint
from recstack.config import Config, ConfigError, check_hyper_parameters, log_config
from recstack.data import create_loader, create_reader
from recstack.evaluator import IntervalStats, batch_size_of, format_metrics, move_batch
from recstack.metrics import Metric
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


def build_model(config: Config, device: torch.device) -> tuple[DygraphModel, nn.Module]:
    """The model folder's wrapper and its network on ``device``."""
    wrapper = load_wrapper(config)
    model = wrapper.create_model(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"create_model of {model_name(config)} returned {type(model).__name__}, not an nn.Module")
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


def _progress(config: Config, iterable: Iterable, epoch: int) -> Iterable:
    show = config.get("runner.progress_bar")
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=f"epoch {epoch}", unit="batch", leave=False, dynamic_ncols=True)


def _format_print_dict(print_dict: dict[str, Any] | None) -> str:
    if not print_dict:
        return ""
    return "".join(f"{k}: {float(v):.6f}, " for k, v in print_dict.items())


def train(config: Config) -> TrainResult:
    """Train the model of ``config`` for ``runner.epochs`` epochs, saving a checkpoint per epoch."""
    log_config(config)
    if config.get("runner.use_fleet"):
        raise ConfigError(f"{config.source('runner.use_fleet')}: multi-process training is not available in "
                          "this version of recstack; set runner.use_fleet: False")
    seed_everything(config.get("runner.seed"))
    set_cpu_threads(config.get("runner.cpu_threads"))
    device = select_device(config.get("runner.use_gpu"))
    logger.info("threads: %s", thread_settings())

    wrapper, model = build_model(config, device)
    optimizer = wrapper.create_optimizer(model, config)
    reader = create_reader(config, "train")
    check_hyper_parameters(config, model_name(config))
    loader = create_loader(config, "train", reader)
    init_path = config.get("runner.model_init_path")
    if init_path:
        load_checkpoint(init_path, model, map_location=device)
        logger.info("warm start: loaded model parameters from %s", init_path)

    writer = _summary_writer(config)
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
        for batch_id, batch in enumerate(_progress(config, loader, epoch)):
            got = time.perf_counter()
            if has_batch_norm and batch_size_of(batch) == 1:
                logger.warning("epoch %d: skipped batch %d of one row (BatchNorm cannot train on a single row); "
                               "choose train_batch_size so that no batch of one row is left over", epoch, batch_id)
                continue
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
            if batch_id % interval == 0:
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
        if batches == 0:
            raise ValueError(f"{config.source('runner.train_data_dir')}: training data produced no batches")
        epoch_metrics = {name: metric.compute() for name, metric in zip(names, metrics)}
        epoch_loss = float(loss_sum) / batches
        logger.info("epoch: %d done, %sloss: %.6f, epoch time: %.2f s, samples: %d, ips: %.1f ins/s", epoch,
                    format_metrics(names, metrics), epoch_loss, seconds, samples, samples / max(seconds, 1e-9))
        checkpoint = save_checkpoint(
            save_root / str(epoch), model, optimizer if config.get("runner.save_optimizer") else None,
            {"epoch": epoch, "metrics": epoch_metrics, "loss": epoch_loss, "model": model_name(config),
             "config": str(config.path)})
        logger.info("saved checkpoint %s", checkpoint)
        if writer is not None:
            writer.add_scalar("epoch/loss", epoch_loss, epoch)
            for name, value in epoch_metrics.items():
                writer.add_scalar(f"epoch/{name}", value, epoch)
            writer.flush()
        result.epochs.append(EpochResult(epoch, epoch_metrics, epoch_loss, samples, seconds, checkpoint))
    if writer is not None:
        writer.close()
    return result


def _summary_writer(config: Config):
    if not config.get("runner.use_visual"):
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder = config.get("runner.visual_log_path") or str(Path(config.get("runner.model_save_path")) / "visual_log")
    logger.info("TensorBoard scalars in %s (tensorboard --logdir %s)", folder, folder)
    return SummaryWriter(folder)

"""What every run does before its first batch, in one order: the trainer, the evaluator and the exporter
call :func:`prepare_run` (seed, threads, device, wrapper and model, reader, config checks, loader), and the
batch helpers their loops share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from recstack.config import Config, check_hyper_parameters
from recstack.data import create_loader, create_reader
from recstack.utils import seed_everything, select_device, set_cpu_threads, thread_settings
from recstack.wrapper import Batch, DygraphModel, build_model, model_name

logger = logging.getLogger(__name__)


class PreparedRun(NamedTuple):
    """The parts of a run, ready for its loop."""

    wrapper: DygraphModel
    model: nn.Module  #: as the loop holds it (wrapped by the strategy when it prepared one)
    optimizer: Any  #: ``None`` unless a strategy prepared the model for training
    reader: Any
    loader: Any
    device: torch.device


def prepare_run(config: Config, mode: str, strategy: Any = None, *, device: torch.device | None = None,
                train: bool = False, check_reader: Callable[[Any], None] | None = None,
                files: list[str] | None = None) -> PreparedRun:
    """Seed, threads, device, wrapper and model, reader, config checks and loader of a run, in that order.

    Args:
        config: the run's config (logged by the caller first).
        mode: ``"train"`` or ``"infer"``: which data the reader and loader read.
        strategy: a :mod:`recstack.dist.strategy` strategy (default: one process): its device, whether the
            id tables stay on ``meta``, and the shard of the data this process reads.
        device: the device regardless of ``runner.use_gpu`` (the exporter's CPU); default the
            strategy's, or the one ``runner.use_gpu`` selects.
        train: let the strategy prepare the model for training (optimizer, warm start, wrapping) right
            after it is built; :attr:`PreparedRun.optimizer` is then set.
        check_reader: called with the reader before the loader is built (the trainer's cache check).
        files: read these data files instead of the ``mode``'s data folder (the online trainer's partition).

    Raises:
        ConfigError, FileNotFoundError, DataFormatError: a bad config, model folder or data.
    """
    if strategy is None:
        from recstack.dist.strategy import LocalStrategy

        strategy = LocalStrategy()
    seed_everything(config.get("runner.seed"))
    set_cpu_threads(config.get("runner.cpu_threads"))
    if device is None:
        device = strategy.device if strategy.device is not None else select_device(config.get("runner.use_gpu"))
    logger.info("threads: %s", thread_settings())
    wrapper, model = build_model(config, device, meta_tables=strategy.meta_tables)
    optimizer = None
    if train:
        model, optimizer = strategy.prepare(wrapper, model, config, device)
    reader = create_reader(config, mode, files)
    check_hyper_parameters(config, model_name(config))
    if check_reader is not None:
        check_reader(reader)
    loader = create_loader(config, mode, reader)
    strategy.shard_loader(loader)
    return PreparedRun(wrapper, model, optimizer, reader, loader, device)


def move_batch(batch: Batch, device: torch.device) -> Batch:
    """A batch on ``device`` (unchanged on CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def batch_size_of(batch: Batch) -> int:
    """Samples in a batch: the rows of its first column; in a grouped batch (GroupRTPInput, whose
    ``sample_num`` column maps each sample to its group) the samples, not the groups."""
    if "sample_num" in batch:
        return len(batch["sample_num"])
    return len(next(iter(batch.values())))

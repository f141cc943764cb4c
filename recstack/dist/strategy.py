"""How a training run is spread over processes, behind one small interface the training loop calls.

:class:`LocalStrategy` (one process), :class:`DDPStrategy` (``runner.use_fleet`` under torchrun: data
parallel, :mod:`recstack.dist.ddp`) and :class:`ShardedStrategy` (plus ``runner.embedding_sharding``:
TorchRec's sharded id table, :mod:`recstack.dist.sharding`) each answer the same questions, so
:func:`recstack.trainer.train` is one loop without ``if distributed`` branches:

==================  ======================================================================
``device``          this process's device (``None``: chosen from ``runner.use_gpu``)
``meta_tables``     build the id tables on the ``meta`` device (sharded: never whole)
``prepare``         the optimizer, the warm start (``runner.model_init_path``), the wrapping
``shard_loader``    which part of the data this process reads
``batches``         an epoch's batches and the context to run them in (DDP's ``Join``)
``reduce``          the epoch's global loss, counts and metrics
``save``            write ``<model_save_path>/<epoch>/`` (rank 0; gathered shards)
``gather``          every rank's few numbers (the memory line)
``finish``          the network and optimizer handed back (unwrapped; none when sharded)
``teardown``        release the process group
==================  ======================================================================

:func:`make_strategy` picks one from the config (and joins the process group).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from recstack.checkpoint import load_checkpoint, save_checkpoint
from recstack.config import Config, ConfigError
from recstack.dist import ddp
from recstack.metrics import Metric
from recstack.runs import moved_checkpoint_hint
from recstack.wrapper import DygraphModel, unwrap_model

logger = logging.getLogger(__name__)


def warm_start(init_path: str, model: nn.Module, device: torch.device) -> None:
    """Load ``runner.model_init_path``; a folder that a later run archived is an error saying where it went."""
    try:
        load_checkpoint(init_path, model, map_location=device)
    except FileNotFoundError as err:
        hint = moved_checkpoint_hint(init_path)
        if not hint:
            raise
        raise FileNotFoundError(f"{err}{hint}") from None
    logger.info("warm start: loaded model parameters from %s", init_path)


class _StateHolder:
    """Gives ``save_checkpoint`` a ready ``state_dict`` (the unwrapped or gathered one)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


class LocalStrategy:
    """One process: the model as built, the optimizer of the wrapper, every batch, local figures."""

    ctx: ddp.DistContext | None = None
    distributed = False  # a rank of a process group (log lines then name the ranks)
    device: torch.device | None = None  # chosen from runner.use_gpu by recstack.prepare.prepare_run
    meta_tables = False
    is_main = True
    world_size = 1

    def prepare(self, wrapper: DygraphModel, model: nn.Module, config: Config,
                device: torch.device) -> tuple[nn.Module, Any]:
        """The optimizer (``create_optimizer``, which may switch tables to sparse gradients), then the warm start."""
        optimizer = wrapper.create_optimizer(model, config)
        init_path = config.get("runner.model_init_path")
        if init_path:
            warm_start(init_path, model, device)
        return model, optimizer

    def shard_loader(self, loader: Any) -> None:
        """This process reads all the data."""

    def batches(self, model: nn.Module, batches: Iterable) -> tuple[Iterable, contextlib.AbstractContextManager]:
        """An epoch's batches, and the context to run them in."""
        return batches, contextlib.nullcontext()

    def reduce(self, loss_sum: float, batches: int, samples: int, seconds: float,
               metrics: list[Metric]) -> tuple[float, int, int, float, list[Metric]]:
        """The epoch's (loss sum, batches, samples, seconds, metrics) over every process."""
        return loss_sum, batches, samples, seconds, metrics

    def save(self, path: Path, model: nn.Module, optimizer: Any, meta: dict[str, Any], config: Config) -> Path:
        """Write the checkpoint ``path`` (with the optimizer's state under ``runner.save_optimizer``)."""
        return save_checkpoint(path, model, optimizer if config.get("runner.save_optimizer") else None, meta)

    def gather(self, values: list[float]) -> list[list[float]]:
        """Every process's ``values``, in rank order."""
        return [values]

    def finish(self, model: nn.Module, optimizer: Any) -> tuple[nn.Module | None, Any]:
        """The trained network (unwrapped) and its optimizer, as :class:`recstack.trainer.TrainResult` holds them."""
        return model, optimizer

    def teardown(self) -> None:
        """Release what the run held outside the model (the process group)."""


class DDPStrategy(LocalStrategy):
    """A rank of a data-parallel job: the model in ``DistributedDataParallel``, a shard of the data,
    global figures; rank 0 writes the checkpoints (of the unwrapped network)."""

    distributed = True

    def __init__(self, ctx: ddp.DistContext) -> None:
        self.ctx = ctx
        self.device = ctx.device
        self.is_main = ctx.is_main
        self.world_size = ctx.world_size

    def prepare(self, wrapper: DygraphModel, model: nn.Module, config: Config,
                device: torch.device) -> tuple[nn.Module, Any]:
        """Warm start on every rank before wrapping, then :func:`recstack.dist.ddp.prepare_model`."""
        init_path = config.get("runner.model_init_path")
        if init_path:
            warm_start(init_path, model, device)
        return ddp.prepare_model(model, config, self.ctx, lambda module: wrapper.create_optimizer(module, config))

    def shard_loader(self, loader: Any) -> None:
        loader.set_shard(self.ctx.rank, self.ctx.world_size)
        logger.info("data: rank %d of %d reads %s", self.ctx.rank, self.ctx.world_size, loader.shard_description())

    def batches(self, model: nn.Module, batches: Iterable) -> tuple[Iterable, contextlib.AbstractContextManager]:
        return batches, ddp.join_context(model)  # ranks with fewer batches wait for the others

    def reduce(self, loss_sum: float, batches: int, samples: int, seconds: float,
               metrics: list[Metric]) -> tuple[float, int, int, float, list[Metric]]:
        """Summed losses, batches and samples, the mean time, and metric states combined over the ranks."""
        loss_sum, batches, samples, seconds = ddp.all_sum([loss_sum, batches, samples, seconds])
        return loss_sum, int(batches), int(samples), seconds / self.world_size, ddp.reduce_metrics(metrics)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The unwrapped network's ``state_dict`` (call on every rank)."""
        return unwrap_model(model).state_dict()

    def save(self, path: Path, model: nn.Module, optimizer: Any, meta: dict[str, Any], config: Config) -> Path:
        state = self.state_dict(model)
        if self.is_main:
            meta["world_size"] = self.world_size
            save_checkpoint(path, _StateHolder(state), optimizer if self.save_optimizer(config) else None, meta)
        del state
        ddp.barrier()  # the checkpoint is complete before any rank goes on
        return path

    def save_optimizer(self, config: Config) -> bool:
        return bool(config.get("runner.save_optimizer"))

    def gather(self, values: list[float]) -> list[list[float]]:
        return ddp.all_gather_floats(values)

    def finish(self, model: nn.Module, optimizer: Any) -> tuple[nn.Module | None, Any]:
        return unwrap_model(model), optimizer  # the DDP wrapper (its reducer) goes before the process group

    def teardown(self) -> None:
        ddp.teardown()


class ShardedStrategy(DDPStrategy):
    """A rank of a job whose id table is sharded by TorchRec (``runner.embedding_sharding``,
    :func:`recstack.dist.sharding.shard_model`): the table is built on ``meta`` and never whole, the ranks
    run equal batch counts, checkpoints gather the shards (without the fused table optimizer's state)."""

    meta_tables = True

    def prepare(self, wrapper: DygraphModel, model: nn.Module, config: Config,
                device: torch.device) -> tuple[nn.Module, Any]:
        """:func:`recstack.dist.sharding.shard_model`; each rank reads its rows of ``runner.model_init_path``."""
        try:
            from recstack.dist.sharding import shard_model
        except ImportError as err:
            raise ConfigError(f"{config.source('runner.embedding_sharding')}: sharded embedding tables need "
                              f"recstack.dist.sharding and TorchRec ({err}); see doc/distributed.md") from None
        init_path = config.get("runner.model_init_path")
        if init_path:
            logger.info("warm start: each rank loads its shards and the dense parameters from %s", init_path)
        return shard_model(model, config, self.ctx.device, lambda module: wrapper.create_optimizer(module, config),
                           init_path=init_path)

    def batches(self, model: nn.Module, batches: Iterable) -> tuple[Iterable, contextlib.AbstractContextManager]:
        return ddp.equal_batches(batches, self.ctx.device), contextlib.nullcontext()  # not joinable

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The plain model's ``state_dict``, the shards gathered on rank 0 (call on every rank)."""
        from recstack.dist.sharding import full_state_dict

        return full_state_dict(model)

    def save_optimizer(self, config: Config) -> bool:
        return False  # the fused table optimizer's state stays sharded

    def finish(self, model: nn.Module, optimizer: Any) -> tuple[nn.Module | None, Any]:
        return None, None  # sharded modules go before the process group


def make_strategy(config: Config, training: bool = True) -> LocalStrategy:
    """The strategy of ``config``; under ``runner.use_fleet`` and torchrun this process joins the group.

    ``training=False`` (evaluation): a data-parallel strategy even with ``runner.embedding_sharding`` (the
    plain model evaluates a shard of the data; the metrics are global).

    Raises:
        ConfigError: ``runner.embedding_sharding`` without ``runner.use_fleet``, or a bad distributed setting
            (:func:`recstack.dist.ddp.init_distributed`).
    """
    if config.get("runner.use_fleet"):
        ctx = ddp.init_distributed(config)  # None (one process, with a warning) without torchrun
        if ctx is None:
            return LocalStrategy()
        if training and config.get("runner.embedding_sharding"):
            return ShardedStrategy(ctx)
        return DDPStrategy(ctx)
    if training and config.get("runner.embedding_sharding"):
        raise ConfigError(f"{config.source('runner.embedding_sharding')}: sharding needs runner.use_fleet: True and "
                          "torchrun (doc/distributed.md); remove it to train on one process")
    return LocalStrategy()

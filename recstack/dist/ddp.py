"""Data-parallel training on ``torch.distributed``: one process per rank, started by ``torchrun``.

``runner.use_fleet: True`` (PaddleRec's switch) under ``torchrun --nproc_per_node=N tools/trainer.py -m
CONFIG`` makes every process a rank of one process group (gloo on CPU, nccl on GPU; ``runner.dist_backend``),
with the timeout ``runner.dist_timeout_s`` on every collective. The trainer then:

1. :func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
   ``MASTER_ADDR``, ``MASTER_PORT``) and initialises the group; log lines of ranks other than 0 are
   limited to warnings and errors, and every line names its rank (``[rank 1]``).
2. builds the same model on every rank (same seed), then :func:`prepare_model` builds the optimizer
   (which switches the embedding tables to sparse gradients) and wraps the model in
   ``DistributedDataParallel`` — or, with ``runner.embedding_sharding``, the sharded strategy hands it to
   :func:`recstack.dist.sharding.shard_model` (TorchRec).
3. each rank reads its own shard of the data (:meth:`recstack.data.loader.BatchLoader.set_shard`), inside
   DDP's ``Join`` context so that ranks with fewer batches do not hang the others (:func:`join_context`).
4. at the end of an epoch the metric states are combined across ranks (:func:`reduce_metrics`: summed
   AUC histograms, sums and counts; GAUC's per-sample state gathered), and rank 0 alone writes the
   checkpoint (of the unwrapped model, so it loads into the plain model), TensorBoard and the log.
5. :func:`teardown` releases the model and optimizers, then destroys the process group.

The training loop reaches these through :mod:`recstack.dist.strategy` (``DDPStrategy``, ``ShardedStrategy``).
``doc/distributed.md`` is the user's guide.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from recstack.config import Config, ConfigError
from recstack.metrics import Metric

logger = logging.getLogger(__name__)

_BACKENDS = ("gloo", "nccl")
_COMM_HOOKS = ("fp16", "bf16")


@dataclass
class DistContext:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 .. world_size - 1); 0 writes checkpoints, TensorBoard and the log.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this rank computes on.
        backend: ``gloo`` or ``nccl``.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _comm_device() -> torch.device:
    """Where collectives' tensors must live: the current GPU under nccl, the CPU under gloo."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(tensor: torch.Tensor) -> None:
    """In-place sum over ranks of a (CPU) tensor, through the backend's device."""
    device = _comm_device()
    if tensor.device == device:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    else:
        moved = tensor.to(device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        tensor.copy_(moved.to(tensor.device))


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher of the ``env://`` kind) set ``WORLD_SIZE``."""
    return "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0, and in a process that is not part of a process group."""
    return not is_initialized() or dist.get_rank() == 0


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"runner.use_fleet: environment variable {name}={value!r} is not an integer; start the "
                          "job with torchrun (doc/distributed.md)") from None


def init_distributed(config: Config) -> DistContext | None:
    """Join the process group described by torchrun's environment.

    Returns ``None`` (after a warning) when ``WORLD_SIZE`` is unset, i.e. ``use_fleet: True`` in a plain
    ``python tools/trainer.py`` run: the job then runs as one process, as PaddleRec's fleet does with one
    worker.

    Raises:
        ConfigError: a bad ``runner.dist_backend`` / ``dist_timeout_s``, nccl without a GPU, or
            torchrun's variables missing or malformed.
    """
    if not launched_by_torchrun():
        logger.warning("runner.use_fleet is True but WORLD_SIZE is not set (not started by torchrun): running as "
                       "one process; start N processes with torchrun --nproc_per_node=N tools/trainer.py -m ... "
                       "(doc/distributed.md)%s", "; runner.embedding_sharding is ignored"
                       if config.get("runner.embedding_sharding") else "")
        return None
    timeout = config.get("runner.dist_timeout_s")
    if timeout <= 0:
        raise ConfigError(f"{config.source('runner.dist_timeout_s')}: must be a positive number of seconds, "
                          f"got {timeout}")
    world, global_rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigError(f"runner.use_fleet: WORLD_SIZE is set but {name} is not; start the job with torchrun, "
                              "which sets both (doc/distributed.md)")
    backend = config.get("runner.dist_backend")
    use_gpu = config.get("runner.use_gpu") and torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if use_gpu else "gloo"
    if backend not in _BACKENDS:
        raise ConfigError(f"{config.source('runner.dist_backend')}: unknown backend '{backend}' "
                          f"(known: {', '.join(_BACKENDS)}; null picks nccl on GPU, gloo on CPU)")
    if backend == "nccl" and not use_gpu:
        raise ConfigError(f"{config.source('runner.dist_backend')}: nccl needs GPUs (runner.use_gpu: True and a "
                          "visible CUDA device); use gloo on CPU")
    if use_gpu:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        if config.get("runner.use_gpu"):
            logger.warning("runner.use_gpu is True but no CUDA device is visible; rank %d runs on CPU", global_rank)
        device = torch.device("cpu")
    _setup_rank_logging(global_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)),
                            world_size=world, rank=global_rank)
    logger.info("process group: %d rank(s), backend %s, timeout %g s, master %s:%s", world, backend, timeout,
                os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    return DistContext(global_rank, world, local_rank, device, backend)


def _setup_rank_logging(global_rank: int) -> None:
    """``[rank N]`` in every log line; ranks other than 0 log warnings and errors only."""
    root = logging.getLogger()
    for handler in root.handlers:
        fmt = handler.formatter._fmt if handler.formatter is not None else "%(message)s"
        if "[rank " not in fmt:
            handler.setFormatter(logging.Formatter(fmt.replace("%(message)s", f"[rank {global_rank}] %(message)s")))
    if global_rank != 0:
        root.setLevel(max(root.level, logging.WARNING))


def check_sparse_combinations(config: Config, model: nn.Module, backend: str) -> None:
    """Refuse the combinations that fail inside DDP with sparse embedding gradients, naming the key to change.

    The optimizer has already switched the tables' ``sparse`` flag (``hyper_parameters.optimizer.sparse``).
    """
    sparse = [name for name, m in model.named_modules()
              if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse]
    if not sparse:
        return
    hook = config.get("runner.dist_comm_hook")
    if hook is not None:
        raise ConfigError(f"{config.source('runner.dist_comm_hook')}: the {hook} compression hook cannot reduce "
                          f"sparse gradients (tables {', '.join(sparse[:3])}); set runner.dist_comm_hook: null, or "
                          "hyper_parameters.optimizer.sparse: False (dense tables: every row is sent each step)")
    if backend == "nccl":
        raise ConfigError(f"{config.source('hyper_parameters.optimizer.sparse')}: nccl cannot all-reduce sparse "
                          f"gradients (tables {', '.join(sparse[:3])}); set hyper_parameters.optimizer.sparse: False "
                          "on GPUs, or runner.embedding_sharding to shard the tables")


def prepare_model(model: nn.Module, config: Config, ctx: DistContext,
                  make_optimizer: Callable[[nn.Module], Any]) -> tuple[nn.Module, Any]:
    """The model as trained by this rank (data parallel), and its optimizer.

    ``make_optimizer(model)`` first (it sets the tables' sparse flag, which DDP reads when it is built),
    then ``DistributedDataParallel(model)`` (which broadcasts rank 0's parameters, so every rank starts
    from the same weights). (Sharded tables, ``runner.embedding_sharding``, are prepared by
    :class:`recstack.dist.strategy.ShardedStrategy` with :func:`recstack.dist.sharding.shard_model`.)

    Args:
        model: the plain network on ``ctx.device``, built identically on every rank.
        config: the run's config.
        ctx: from :func:`init_distributed`.
        make_optimizer: builds recstack's optimizer over a module's parameters
            (``lambda m: wrapper.create_optimizer(m, config)``).
    """
    hook = config.get("runner.dist_comm_hook")
    if hook is not None and hook not in _COMM_HOOKS:
        raise ConfigError(f"{config.source('runner.dist_comm_hook')}: unknown hook '{hook}' "
                          f"(known: {', '.join(_COMM_HOOKS)}, or null)")
    optimizer = make_optimizer(model)
    check_sparse_combinations(config, model, ctx.backend)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if hook is not None:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook if hook == "fp16"
                               else default_hooks.bf16_compress_hook)
    return ddp, optimizer


def is_sharded(model: nn.Module) -> bool:
    """True for a model returned by TorchRec sharding (neither plain nor DDP)."""
    return getattr(model, "_recstack_sharded", False) or type(model).__name__ == "DistributedModelParallel"


def join_context(model: nn.Module) -> contextlib.AbstractContextManager:
    """DDP's ``Join`` context: a rank out of batches shadows the others' gradient all-reduces until all
    are done, then the last one's parameters are broadcast, so unequal batch counts neither hang nor
    leave ranks with different weights. (A sharded model is not joinable: its loop is equalised by
    :func:`equal_batches` instead.)"""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        from torch.distributed.algorithms.join import Join

        return Join([model])
    return contextlib.nullcontext()


def equal_batches(batches: Iterator[Any], device: torch.device) -> Iterator[Any]:
    """Batches while every rank still has one (one tiny all-reduce per batch); the batches left on
    the longer ranks are skipped, with a warning. For models that cannot use :func:`join_context`."""
    skipped = 0
    stopped = False
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        flag = torch.tensor([0 if batch is None else 1], device=device)
        if not stopped:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            if int(flag) == 0:
                stopped = True
        if batch is None:
            break
        if stopped:
            skipped += 1
            continue
        yield batch
    if skipped:
        logger.warning("rank %d: skipped its last %d batch(es): another rank had run out (equalised sharding)",
                       rank(), skipped)


# ---------------------------------------------------------------------- metrics
def combine_states(metric: Metric, states: Sequence[Sequence[torch.Tensor]]) -> Metric:
    """A copy of ``metric`` holding the combination of several ranks' states (``metric.state()`` of each).

    Additive states (AUC histograms, sums and counts) are summed; GAUC's per-sample state
    (group, prediction, label) is concatenated. ``metric`` itself is not changed.
    """
    merged = copy.deepcopy(metric)
    if getattr(metric, "additive_state", True):
        for target, parts in zip(merged.state(), zip(*states)):
            target.copy_(torch.stack([p.to(target.device) for p in parts]).sum(0))
    else:
        columns = [torch.cat([p.cpu() for p in parts]) for parts in zip(*states)]
        merged.load_state(columns)
    return merged


def reduce_metrics(metrics: Sequence[Metric]) -> list[Metric]:
    """Global copies of this rank's metrics (every rank must call it; all get the same result).

    AUC (summed histograms: exact for the histogram AUC, not an average of per-rank AUCs), per-task
    AUCs, log loss / MSE / accuracy (summed sums and counts), GAUC (per-sample state all-gathered).
    Outside a process group the metrics are returned unchanged.
    """
    if not is_initialized():
        return list(metrics)
    out = []
    for metric in metrics:
        if getattr(metric, "additive_state", True):
            merged = copy.deepcopy(metric)
            for tensor in merged.state():
                _all_reduce_sum(tensor)
            out.append(merged)
        else:
            gathered: list[Any] = [None] * world_size()
            dist.all_gather_object(gathered, [t.cpu() for t in metric.state()])
            out.append(combine_states(metric, gathered))
    return out


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over ranks of a few numbers (float64)."""
    if not is_initialized():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)
    _all_reduce_sum(tensor)
    return tensor.tolist()


def all_gather_floats(values: Sequence[float]) -> list[list[float]]:
    """Every rank's ``values`` (same length on all ranks), in rank order."""
    if not is_initialized():
        return [list(values)]
    tensor = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    out = [torch.zeros_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor)
    return [t.cpu().tolist() for t in out]


def barrier() -> None:
    if is_initialized():
        dist.barrier()


# ---------------------------------------------------------------------- teardown
def teardown() -> None:
    """Destroy the process group; the caller has dropped its model and optimizer references first
    (a DDP reducer or a sharded module alive past the group's destruction crashed the process at exit)."""
    gc.collect()
    if is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()

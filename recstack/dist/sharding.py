"""Sharded embedding tables on TorchRec: ``runner.embedding_sharding``.

The slot-format rank models (the Criteo family: DeepFM, DLRM, DNN, DCN, DCN-V2,
Wide&Deep, xDeepFM, DeepFEFM, FFM, FM, GateNet) look up all ``S`` sparse slots in one
shared ``nn.Embedding`` (directly or inside :class:`recstack.layers.FieldEmbedding`).
Which models qualify follows from that structure (:func:`reads_slot_format`,
:func:`slot_id_table`), not from a list of names.
:func:`shard_model` swaps that table for a :class:`SlotEmbeddingBag` — a TorchRec
``EmbeddingBagCollection`` with one table and one feature per slot (one id per bag,
sum pooling, so the output equals the plain lookup) — and hands the model to
TorchRec's ``DistributedModelParallel`` with a sharding plan constrained to the
chosen sharding type. The dense layers are replicated (DDP, gradients averaged).

Traps handled here (measured with torchrec 1.8.0 / fbgemm-gpu-cpu 1.8.0, torch 2.13 CPU):

- A sharded collection returns its pooled outputs in shard order, not in the
  order of the features: :class:`SlotEmbeddingBag` indexes them by feature key.
- DDP averages the dense gradients over ranks; TorchRec's collectives divide the
  table gradients by the world size too (its ``comm_ops`` gradient division, which
  :func:`shard_model` keeps on), so N ranks on N batches equal one process on the
  combined batch.
- The planner offers row-wise and table-row-wise sharding only for CUDA; on CPU
  :class:`_CPUShardingSharder` reports the CUDA sharding choices (the fused
  kernel only), and the CPU kernels of fbgemm-gpu-cpu run them.
- Sharded tables train with TorchRec's fused optimizer (applied in the backward
  pass): ``hyper_parameters.optimizer.class`` SGD or Adagrad (Adam on CUDA only:
  fbgemm-gpu-cpu has no CPU Adam kernel), the same learning rate as the dense
  layers. ``data_parallel`` tables are not fused (TorchRec ignores fused optimizer
  settings there): they get dense, all-reduced gradients and the config's optimizer
  steps them with the dense parameters (a warning says so).
- Sharded lookups exchange equal-sized blocks: a smaller batch on one rank (an
  epoch's last) is padded to the ranks' largest (:class:`SlotEmbeddingBag`).
- Start-up without the full table: the trainer builds the model under
  :func:`recstack.layers.embedding.meta_tables` (the id table's weight on the ``meta``
  device, no memory); :func:`shard_model` then fills each rank's local shards only,
  with :func:`init_table_block` (a row-chunked, seeded init: row ``i``'s values depend
  on ``runner.seed`` and ``i`` only, not on the sharding type or the world size) or,
  with ``runner.model_init_path``, from the checkpoint memory-mapped
  (``torch.load(mmap=True)``), reading only the local rows and columns.
- Checkpoints: :func:`full_state_dict` gathers the shards under the plain model's
  parameter names into one preallocated full-size tensor on rank 0 (the other ranks
  send their shards in blocks of at most 64 MiB), so a checkpoint loads into the
  unsharded model (``tools/infer.py``, ``tools/to_static.py``).
- FBGEMM's kernels need a table width divisible by 4 (DeepFM's ``1 + 9`` is 10): the
  collection's table is padded with zero columns that the lookup drops (they get no
  gradient, so they stay zero) and :func:`full_state_dict` cuts them off.
- Teardown: the model and optimizer must be released (``del``, ``gc.collect()``)
  before ``destroy_process_group`` (a crash at exit otherwise); the trainer's
  ``recstack.dist.teardown`` does so.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from recstack.config import Config, ConfigError
from recstack.wrapper import SLOT_FORMAT_SCHEMA, model_name, slot_format_args

logger = logging.getLogger(__name__)

#: values of ``runner.embedding_sharding`` (``auto``: TorchRec's planner chooses per table)
SHARDING_TYPES = ("table_wise", "column_wise", "row_wise", "table_row_wise", "data_parallel", "auto")

#: which models :func:`shard_model` converts follows from their structure, not from their names: a model
#: fed the slot format (its config holds these keys, :data:`recstack.wrapper.SLOT_FORMAT_SCHEMA`) whose
#: network holds exactly one plain ``nn.Embedding`` (the id table all slots share; :func:`slot_id_table`)
SLOT_FORMAT_KEYS = tuple(SLOT_FORMAT_SCHEMA)

#: recstack optimizer name -> torch optimizer class that TorchRec fuses into its embedding kernel
_FUSED_OPTIMIZERS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}
#: the ones fbgemm-gpu-cpu's CPU kernels implement
_CPU_FUSED_OPTIMIZERS = ("sgd", "adagrad")

TABLE_NAME = "table"
#: rows per block of :func:`init_table_block` (each block drawn from its own generator)
INIT_CHUNK_ROWS = 65536
#: largest block one rank sends to rank 0 at a time in :func:`full_state_dict`
GATHER_CHUNK_BYTES = 64 * 2**20
INSTALL_HINT = "install the optional extra with tools/install_torchrec.sh (requirements-torchrec.txt)"


def torchrec_available() -> bool:
    """Whether TorchRec and fbgemm-gpu(-cpu) import (their import-time deprecation notices silenced)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import fbgemm_gpu  # noqa: F401
            import torchrec  # noqa: F401
    except Exception:  # ImportError, or an fbgemm library that does not load
        return False
    return True


def _require_torchrec(config: Config) -> None:
    if not torchrec_available():
        raise ConfigError(f"{config.source('runner.embedding_sharding')}: sharded embedding tables need TorchRec; "
                          f"{INSTALL_HINT}")


class SlotEmbeddingBag(nn.Module):
    """``S`` slots of ids looked up in one table, as a TorchRec ``EmbeddingBagCollection``.

    Feature ``slot<i>`` holds slot ``i``'s id (one per bag, sum pooling), so the output
    equals ``nn.Embedding(ids)``. The collection's pooled outputs are read by feature
    key (a sharded collection returns them in shard order).

    Sharded, every rank must look up the same number of rows: with ``common_batch``
    (set by :func:`shard_model`) a batch smaller than another rank's (the last of an
    epoch) is padded with id 0 rows whose outputs are dropped (one small all-reduce per
    batch; the padding rows get zero gradient).

    The collection's table is ``(N, D')`` with ``D'`` the next multiple of 4 (FBGEMM's
    kernels need it); the extra columns start at zero, are dropped from the output and
    so never change.

    Args:
        weight: the table ``(N, D)`` whose values the collection starts from.
        num_slots: ``S``.

    Shapes:
        ids ``(B, S)`` int64 → ``(B, S, D)``.
    """

    def __init__(self, weight: torch.Tensor, num_slots: int) -> None:
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

        num_embeddings, dim = weight.shape
        self.dim = dim
        self.common_batch = False  # set by shard_model: pad every rank's batch to the largest
        self.keys = [f"slot{i}" for i in range(num_slots)]
        width = padded_width(dim)
        # built on the meta device, then given the table (no second copy when the width needs no padding;
        # a table on the meta device stays there: shard_model initialises the shards)
        self.ebc = EmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name=TABLE_NAME, embedding_dim=width, num_embeddings=num_embeddings,
                                       feature_names=list(self.keys), pooling=PoolingType.SUM)],
            device=torch.device("meta"))
        with torch.no_grad():
            table = weight.detach() if width == dim else nn.functional.pad(weight.detach(), (0, width - dim))
        self.ebc.embedding_bags[TABLE_NAME].weight = nn.Parameter(table)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        if ids.dim() != 2 or ids.shape[1] != len(self.keys):
            raise ValueError(f"SlotEmbeddingBag takes ids of shape (B, {len(self.keys)}), got {tuple(ids.shape)}")
        batch = ids.shape[0]
        if self.common_batch and dist.is_initialized():
            # sharded lookups exchange equal-sized blocks: pad to the largest batch of the ranks
            size = torch.tensor([batch], device=ids.device)
            dist.all_reduce(size, op=dist.ReduceOp.MAX)
            if int(size) > batch:
                ids = torch.cat([ids, ids.new_zeros(int(size) - batch, ids.shape[1])])
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.keys, values=ids.t().reshape(-1),
            lengths=torch.ones(ids.numel(), dtype=torch.int32, device=ids.device))
        pooled = self.ebc(kjt).to_dict()                                # feature key -> (B, D')
        return torch.stack([pooled[k][:batch, :self.dim] for k in self.keys], dim=1)  # (B, S, D), slot order


def padded_width(dim: int) -> int:
    """``dim`` rounded up to a multiple of 4 (FBGEMM's table width requirement)."""
    return (dim + 3) // 4 * 4


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def _not_shardable(name: str, reason: str) -> str:
    return (f"model '{name}' cannot be sharded: sharding converts the one id table that all sparse slots of a "
            f"slot-format model share (hyper_parameters {', '.join(SLOT_FORMAT_KEYS)}; one plain nn.Embedding, "
            f"as in deepfm); {reason}; remove runner.embedding_sharding (plain DDP with runner.use_fleet still works)")


def reads_slot_format(config: Config) -> bool:
    """Whether the config's model is fed the slot format (its config holds the slot-format keys)."""
    try:
        slot_format_args(config)
    except ConfigError:
        return False
    return True


def slot_id_table(model: nn.Module, name: str = "model") -> str:
    """The module name of the model's one shardable id table: its only ``nn.Embedding``, without
    ``padding_idx`` or ``max_norm`` (found on the ``meta`` device too).

    Raises:
        ConfigError: the model holds no such table, or more than one ``nn.Embedding``.
    """
    tables = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if len(tables) != 1:
        raise ConfigError(_not_shardable(name, f"its network holds {len(tables)} nn.Embedding tables "
                                               f"{[n for n, _ in tables]}"))
    table_name, table = tables[0]
    if table.padding_idx is not None or table.max_norm is not None:
        raise ConfigError(_not_shardable(name, f"its table {table_name} has a padding_idx or max_norm"))
    return table_name


def to_embedding_bags(model: nn.Module, num_slots: int, name: str = "model") -> tuple[nn.Module, dict[str, str]]:
    """Replace the model's one id table (:func:`slot_id_table`) by a :class:`SlotEmbeddingBag`, in place.

    Returns the model and ``{plain parameter name: converted parameter name}``.

    Raises:
        ConfigError: the model does not hold exactly one plain ``nn.Embedding``.
    """
    table_name = slot_id_table(model, name)
    table = model.get_submodule(table_name)
    parent, attr = _parent(model, table_name)
    bags = SlotEmbeddingBag(table.weight.detach(), num_slots)
    bags.init_std = getattr(table, "init_std", None)  # make_embedding's, for init_table_block
    setattr(parent, attr, bags)
    new = f"{table_name}.ebc.embedding_bags.{TABLE_NAME}.weight"
    return model, {f"{table_name}.weight": new}


def _check_config(config: Config) -> tuple[str, str, float]:
    """The sharding type, the optimizer name and its learning rate, after checking what sharding supports."""
    sharding = config.get("runner.embedding_sharding")
    if sharding not in SHARDING_TYPES:
        raise ConfigError(f"{config.source('runner.embedding_sharding')}: unknown sharding type '{sharding}' "
                          f"(known: {', '.join(SHARDING_TYPES)})")
    if not reads_slot_format(config):
        raise ConfigError(f"{config.source('runner.embedding_sharding')}: " + _not_shardable(
            model_name(config), "its config does not describe the slot format"))
    optimizer = config.get("hyper_parameters.optimizer.class", "Adam", type=str).lower()
    lr = config.get("hyper_parameters.optimizer.learning_rate", 0.001, type=float)
    if sharding != "data_parallel":
        if optimizer not in _FUSED_OPTIMIZERS:
            raise ConfigError(f"{config.source('hyper_parameters.optimizer.class')}: sharded tables train with "
                              f"TorchRec's fused optimizers; supported: SGD, Adagrad, Adam (got '{optimizer}')")
        for key in ("hyper_parameters.reg", "hyper_parameters.clip_by_norm",
                    "hyper_parameters.optimizer.lr_schedule", "hyper_parameters.optimizer.weight_decay"):
            if config.get(key, None):
                raise ConfigError(f"{config.source(key)}: not supported with sharded embedding tables (the fused "
                                  f"table optimizer does not apply it); remove it or use "
                                  f"runner.embedding_sharding: data_parallel")
    return sharding, optimizer, lr


class _CPUShardingSharder:
    """Builds an ``EmbeddingBagCollectionSharder`` that reports CUDA's sharding types on CPU (row-wise
    included) with the fused kernel only; the CPU kernels of fbgemm-gpu-cpu run them."""

    @staticmethod
    def create(fused_params: dict[str, Any] | None = None):
        from torchrec.distributed.embedding_types import EmbeddingComputeKernel
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

        class Sharder(EmbeddingBagCollectionSharder):
            def sharding_types(self, compute_device_type: str) -> list[str]:
                return super().sharding_types("cuda")

            def compute_kernels(self, sharding_type: str, compute_device_type: str) -> list[str]:
                kernels = super().compute_kernels(sharding_type, compute_device_type)
                if compute_device_type == "cpu":
                    kernels = [k for k in kernels if k in (EmbeddingComputeKernel.FUSED.value,
                                                           EmbeddingComputeKernel.DENSE.value)]
                return kernels

        return Sharder(fused_params=fused_params)


class ShardedOptimizer:
    """The dense optimizer (recstack's, over the replicated layers) plus TorchRec's fused table optimizer.

    The fused optimizer steps inside the backward pass; :meth:`step` steps the dense
    part. ``state_dict`` holds the dense part only (the fused state stays sharded and
    is not checkpointed).
    """

    def __init__(self, dense: Any, fused: Any | None) -> None:
        self.dense, self.fused = dense, fused

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.dense.param_groups if self.dense is not None else []

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.dense is not None:
            self.dense.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> None:
        if self.dense is not None:
            self.dense.step()

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict() if self.dense is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.dense is not None and state.get("dense"):
            self.dense.load_state_dict(state["dense"])

    def __repr__(self) -> str:
        return f"ShardedOptimizer(dense={self.dense!r}, fused={type(self.fused).__name__})"


class _Params(nn.Module):
    """A module holding a list of parameters (for recstack's optimizer builder)."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)


def init_table_block(rows: tuple[int, int], cols: tuple[int, int], dim: int, std: float, seed: int) -> torch.Tensor:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of a table initialised row chunk by row chunk.

    Rows ``[k * INIT_CHUNK_ROWS, (k + 1) * INIT_CHUNK_ROWS)`` are drawn from a generator seeded
    with ``(seed, k)`` as ``make_embedding`` draws a table: truncated normal N(0, std) at ±2 std,
    ``dim`` columns; columns from ``dim`` on (FBGEMM's padding) are zero. A row's values depend
    on ``seed``, its index, ``dim`` and ``std`` only: not on the table's row count, the sharding
    type or the world size. Memory: the block plus one chunk.
    """
    from recstack.layers.init import truncated_normal_

    (r0, r1), (c0, c1) = rows, cols
    out = torch.zeros(r1 - r0, c1 - c0)
    kept = min(c1, dim) - c0  # columns below dim
    if kept <= 0 or r1 <= r0:
        return out
    for k in range(r0 // INIT_CHUNK_ROWS, (r1 - 1) // INIT_CHUNK_ROWS + 1):
        g = torch.Generator().manual_seed((int(seed) % 2**31) * 2**32 + k)
        chunk = truncated_normal_(torch.empty(INIT_CHUNK_ROWS, dim), std, generator=g)
        lo, hi = max(r0, k * INIT_CHUNK_ROWS), min(r1, (k + 1) * INIT_CHUNK_ROWS)
        out[lo - r0:hi - r0, :kept] = chunk[lo - k * INIT_CHUNK_ROWS:hi - k * INIT_CHUNK_ROWS, c0:c0 + kept]
    return out


def _fill_local_shards(dmp: nn.Module, key: str, block: Callable[[int, int, int, int], torch.Tensor]) -> None:
    """Fill this rank's part of table ``key`` of ``dmp`` (the sharder starts tables from its own init)
    with ``block(r0, nr, c0, nc)``: rows ``r0:r0+nr``, columns ``c0:c0+nc`` of the padded table."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    target = dmp.state_dict()[key]
    with torch.no_grad():
        if isinstance(target, ShardedTensor):
            for shard in target.local_shards():
                (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                for start in range(0, nr, INIT_CHUNK_ROWS):  # block by block: bounded temporary memory
                    n = min(INIT_CHUNK_ROWS, nr - start)
                    shard.tensor[start:start + n].copy_(block(r0 + start, n, c0, nc))
        elif hasattr(target, "full_tensor"):  # DTensor
            raise NotImplementedError("DTensor table states are not supported")
        else:  # data_parallel: a replicated full table
            rows, cols = target.shape
            for start in range(0, rows, INIT_CHUNK_ROWS):
                n = min(INIT_CHUNK_ROWS, rows - start)
                target[start:start + n].copy_(block(start, n, 0, cols))


def _load_init_checkpoint(path: str, model: nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """``runner.model_init_path`` for a sharded model: the checkpoint memory-mapped; its dense
    parameters loaded into ``model`` (converted, not yet sharded); returns the tables (still mapped:
    only the pages of the rows read later are loaded)."""
    from pathlib import Path

    from recstack.checkpoint import MODEL_FILE, CheckpointError, read_state

    model_file = Path(path) / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}' (missing {MODEL_FILE})")
    state = read_state(model_file, "cpu", mmap=True)  # (one-line CheckpointError for a damaged file)
    if not isinstance(state, dict):
        raise CheckpointError(f"{model_file}: holds a {type(state).__name__}, not a model state_dict")
    tables = {}
    for old, new in names.items():
        if old not in state:
            raise CheckpointError(f"checkpoint '{path}' does not fit the model built from the config: no '{old}'")
        tables[new] = state.pop(old)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in names.values()]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{path}' does not fit the model built from the config: missing keys "
                              f"{missing}, unexpected keys {unexpected}")
    return tables


def shard_model(model: nn.Module, config: Config, device: torch.device,
                make_optimizer: Callable[[nn.Module], Any],
                init_path: str | None = None) -> tuple[nn.Module, ShardedOptimizer]:
    """Shard the model's id table with TorchRec; the process group must be initialised.

    The table's starting values: ``init_path``'s when given; otherwise the plain table's,
    or, when its weight is on the ``meta`` device (built under
    :func:`recstack.layers.embedding.meta_tables`, as the trainer does),
    :func:`init_table_block`'s seeded with ``runner.seed``. Either way each rank writes
    only its own shards: the full table is never materialised.

    Args:
        model: the plain network (same initial dense weights on every rank).
        config: its config (``runner.embedding_sharding``, ``hyper_parameters.optimizer``).
        device: this rank's device.
        make_optimizer: builds recstack's optimizer over a module's parameters (used for
            the dense layers, and for the table under ``data_parallel``).
        init_path: a checkpoint folder of the plain model (``runner.model_init_path``) to
            start from; memory-mapped, each rank reads its rows only.

    Returns:
        ``(DistributedModelParallel, ShardedOptimizer)``; call :func:`full_state_dict` on all
        ranks for a checkpoint of the plain model.

    Raises:
        ConfigError: TorchRec not installed, an unknown sharding type, a model that cannot be
            sharded, or optimizer settings the fused table optimizer cannot honour.
    """
    _require_torchrec(config)
    sharding, optimizer_name, lr = _check_config(config)
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingEnv

    name = model_name(config)
    fused = sharding != "data_parallel"
    if fused and optimizer_name not in _CPU_FUSED_OPTIMIZERS and device.type != "cuda":
        raise ConfigError(f"{config.source('hyper_parameters.optimizer.class')}: the fused {optimizer_name} of sharded "
                          f"tables runs on CUDA only (fbgemm-gpu-cpu: 'not supported in CPU mode'); on CPU use SGD "
                          f"or Adagrad, or runner.embedding_sharding: data_parallel")
    if not dist.is_initialized():
        raise RuntimeError("shard_model needs an initialised process group (torchrun, runner.use_fleet: True)")
    world = dist.get_world_size()
    from torchrec.distributed import comm_ops

    # table gradients averaged over ranks like DDP's dense ones (TorchRec's default; a global flag)
    comm_ops.set_gradient_division(True)
    model, names = to_embedding_bags(model, slot_format_args(config)["num_sparse_fields"], name=name)
    for module in model.modules():
        if isinstance(module, SlotEmbeddingBag):
            module.common_batch = True
    model._apply(lambda t: t if t.is_meta else t.to(device))  # a table on meta stays there
    bags = {new: model.get_submodule(new.partition(".ebc.")[0]) for new in names.values()}
    widths = {new: module.dim for new, module in bags.items()}
    if init_path:
        full = _load_init_checkpoint(init_path, model, names)
    else:
        full = {new: model.get_parameter(new).detach() for new in names.values()}
    blocks = {}  # converted name -> block(r0, nr, c0, nc) of the padded table
    for new, value in full.items():
        if value.is_meta:
            std, seed = bags[new].init_std, config.get("runner.seed")
            if std is None:
                raise ConfigError(f"{name}: the id table is on the meta device but was not made by "
                                  f"recstack.layers.make_embedding (no init_std)")
            blocks[new] = (lambda r0, nr, c0, nc, dim=widths[new], std=std, seed=seed:
                           init_table_block((r0, r0 + nr), (c0, c0 + nc), dim, std, seed))
        else:  # (N, D) from a checkpoint, or the converted (N, D') table
            rows, padded = bags[new].ebc.embedding_bags[TABLE_NAME].weight.shape
            if value.shape[0] != rows or value.shape[1] not in (widths[new], padded):
                from recstack.checkpoint import CheckpointError

                raise CheckpointError(f"checkpoint '{init_path}': id table of shape {tuple(value.shape)}, the "
                                      f"model's is {(rows, widths[new])}")
            # the padded table's rows r0:r0+nr, columns c0:c0+nc (zeros beyond the value's columns)
            blocks[new] = (lambda r0, nr, c0, nc, value=value: nn.functional.pad(
                value[r0:r0 + nr, c0:c0 + nc], (0, max(0, c0 + nc - max(value.shape[1], c0)))))
    (table_param,) = [model.get_parameter(new) for new in names.values()]
    if fused:
        from torch.distributed.optim import _apply_optimizer_in_backward

        # torch's defaults where FBGEMM's differ (Adagrad eps 1e-10 against 1e-8)
        kwargs = {"lr": lr, "eps": 1e-10} if optimizer_name == "adagrad" else {"lr": lr}
        _apply_optimizer_in_backward(_FUSED_OPTIMIZERS[optimizer_name], [table_param], kwargs)
    else:
        logger.warning("runner.embedding_sharding: data_parallel replicates the table on every rank and TorchRec "
                       "ignores fused optimizer settings there: the table gets dense, all-reduced gradients and "
                       "the dense optimizer (%s) updates every row each step; use it for small tables only",
                       optimizer_name)
    compute = "cuda" if device.type == "cuda" else "cpu"
    if sharding == "auto":
        # the planner's choice among the model-parallel types (its data_parallel would drop the fused optimizer)
        constraints = {TABLE_NAME: ParameterConstraints(sharding_types=[t for t in SHARDING_TYPES
                                                                        if t not in ("auto", "data_parallel")])}
    else:
        # column-wise: shards of at least 4 columns (TorchRec's default minimum keeps a narrow table whole)
        constraints = {TABLE_NAME: ParameterConstraints(
            sharding_types=[sharding], min_partition=4 if "column" in sharding else None)}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device=compute),
                                       constraints=constraints)
    if compute == "cpu":
        sharders = [_CPUShardingSharder.create()]
    else:
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

        sharders = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
                                   device=device, plan=plan, sharders=sharders)
    for new, block in blocks.items():
        _fill_local_shards(dmp, new, block)
    if not any(p is table_param for p in dmp.parameters()):
        # the plain table now lives in the shards: free it now rather than at the next garbage collection
        for attr in ("_in_backward_optimizers", "_optimizer_classes", "_optimizer_kwargs"):
            if hasattr(table_param, attr):
                delattr(table_param, attr)
        table_param.data = torch.empty(0, device=table_param.device)
    del full, blocks
    # converted name -> (plain name, plain width): full_state_dict renames and cuts the padding
    dmp._recstack_param_names = {new: (old, widths[new]) for old, new in names.items()}
    dmp._recstack_sharded = True
    dmp._recstack_plan = {}  # "<module path>.<table>" -> (sharding type, ranks)
    for path, options in plan.plan.items():
        for table, option in options.items():
            dmp._recstack_plan[f"{path}.{table}"] = (option.sharding_type, option.ranks)
            logger.info("sharding %s.%s: %s, %s, ranks %s", path, table, option.sharding_type, option.compute_kernel,
                        option.ranks)
    if fused:
        from torchrec.optim.optimizers import in_backward_optimizer_filter

        dense_params = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    else:
        dense_params = list(dmp.parameters())
    dense = make_optimizer(_Params(dense_params)) if dense_params else None
    return dmp, ShardedOptimizer(dense, getattr(dmp, "fused_optimizer", None) if fused else None)


def _plain(dmp: nn.Module, key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    """The plain model's name for a state key of ``dmp``, and the value without padding columns."""
    key = key[len("module."):] if key.startswith("module.") else key
    names = getattr(dmp, "_recstack_param_names", {})
    if key in names:
        plain, width = names[key]
        return plain, value[:, :width]
    return key, value


def _gather_to_rank0(value: Any, width: int) -> torch.Tensor | None:
    """A ShardedTensor's first ``width`` columns as one full tensor on rank 0 (``None`` elsewhere).

    Rank 0 preallocates the result and copies its own shards in; the other ranks send theirs
    in blocks of at most :data:`GATHER_CHUNK_BYTES` (no full-size buffer on any other rank,
    no second full copy on rank 0). Every rank walks the shards in the metadata's order, so
    the sends and receives pair up.
    """
    from recstack.dist.ddp import _comm_device

    rank = dist.get_rank()
    rows = value.size()[0]
    dtype = value.metadata().tensor_properties.dtype
    out = torch.empty(rows, width, dtype=dtype) if rank == 0 else None
    local = {tuple(s.metadata.shard_offsets): s.tensor for s in value.local_shards()}
    comm = _comm_device()
    for meta in value.metadata().shards_metadata:
        (r0, c0), (nr, nc) = meta.shard_offsets, meta.shard_sizes
        owner = meta.placement.rank()
        kept = min(nc, width - c0)  # columns from width on are FBGEMM's padding
        if kept <= 0 or nr == 0 or (rank != 0 and owner != rank):
            continue
        step = max(1, GATHER_CHUNK_BYTES // (kept * dtype.itemsize))
        for start in range(0, nr, step):
            n = min(step, nr - start)
            if owner == rank:
                block = local[(r0, c0)][start:start + n, :kept]
                if rank == 0:
                    out[r0 + start:r0 + start + n, c0:c0 + kept].copy_(block)
                else:
                    dist.send(block.contiguous().to(comm), dst=0)
            else:  # rank 0 receives another rank's block
                buffer = torch.empty(n, kept, dtype=dtype, device=comm)
                dist.recv(buffer, src=owner)
                out[r0 + start:r0 + start + n, c0:c0 + kept].copy_(buffer)
    return out


def full_state_dict(dmp: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model's ``state_dict`` from a sharded one; all ranks must call it.

    Sharded tables are gathered on rank 0 into one preallocated tensor each, without the
    padding columns (:func:`_gather_to_rank0`); other ranks get an empty dict. Keys are the
    plain model's (``embedding.embedding.weight``), so the result loads into the model built
    from the config without TorchRec.
    """
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    rank = dist.get_rank()
    names = getattr(dmp, "_recstack_param_names", {})
    out: dict[str, torch.Tensor] = {}
    for key, value in dmp.state_dict().items():
        short = key[len("module."):] if key.startswith("module.") else key
        if isinstance(value, ShardedTensor):
            plain, width = names.get(short, (short, value.size()[1]))
            full = _gather_to_rank0(value, width)
            if rank == 0:
                out[plain] = full
            continue
        if hasattr(value, "full_tensor"):  # DTensor
            value = value.full_tensor()
        if rank == 0:
            plain, value = _plain(dmp, key, value)
            out[plain] = value.detach().cpu().clone()
    return out

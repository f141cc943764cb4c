"""Distributed training: data parallel (:mod:`recstack.dist.ddp`) and, optionally, TorchRec's sharded
embedding tables (:mod:`recstack.dist.sharding`, an extra), behind the strategies the training loop
calls (:mod:`recstack.dist.strategy`). See ``doc/distributed.md``."""

from recstack.dist.ddp import (DistContext, all_gather_floats, all_sum, barrier, combine_states, equal_batches,
                               init_distributed, is_initialized, is_main, is_sharded, join_context,
                               launched_by_torchrun, prepare_model, rank, reduce_metrics, teardown,
                               world_size)

__all__ = ["DistContext", "all_gather_floats", "all_sum", "barrier", "combine_states", "equal_batches",
           "init_distributed", "is_initialized", "is_main", "is_sharded", "join_context", "launched_by_torchrun",
           "prepare_model", "rank", "reduce_metrics", "teardown", "world_size"]

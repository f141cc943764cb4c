"""One rank of tests/test_sharding.py (started by ``python -m torch.distributed.run --nproc_per_node=2``).

For each sharding type given: builds the model folder's network as the trainer does under
``runner.embedding_sharding`` (the id table on the ``meta`` device) and shards it with
:func:`recstack.dist.sharding.shard_model` (each rank initialises its own shards), records
what each rank holds (no full table), gathers the initial weights with ``full_state_dict``
into a plain reference model, compares their outputs on this rank's half of a batch, trains
both for a few steps (the sharded one on its rank's half, the reference on the combined
batch), gathers again and, on rank 0, compares every tensor with the reference, saves a
checkpoint and loads it into a fresh plain model; finally warm-starts a second sharded model
from that checkpoint (``init_path``) and compares its gathered weights with the checkpoint's.
Rank 0 writes the results as JSON and each run's first 1000 initial table rows as
``<out>/<sharding>/init_rows.pt``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recstack.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from recstack.config import load_config  # noqa: E402
from recstack.dist.sharding import full_state_dict, shard_model  # noqa: E402
from recstack.wrapper import build_model, slot_format_args  # noqa: E402


def batches(config, steps: int, batch: int, seed: int = 7):
    args = slot_format_args(config)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps + 1):
        sparse = torch.randint(0, args["sparse_feature_number"], (batch, args["num_sparse_fields"]), generator=g)
        dense = torch.rand(batch, args["dense_feature_dim"], generator=g)
        label = torch.randint(0, 2, (batch, 1), generator=g).float()
        yield sparse, dense, label


def run(model_dir: str, spec: str, lr: float, steps: int, out: Path) -> dict:
    """One ``<sharding type>:<optimizer>[:<table rows>]`` run; returns the comparisons (rank 0) and
    writes ``<out>/<sharding>/0``, a checkpoint of the plain model. Without ``<table rows>`` the
    table keeps the config's ``sparse_feature_number`` (the sample data's ids fit it, for export)."""
    sharding, optimizer, *rows = spec.split(":")
    rank, world = dist.get_rank(), dist.get_world_size()
    overrides = [f"hyper_parameters.optimizer.class={optimizer}", "runner.use_fleet=True",
                 f"hyper_parameters.optimizer.learning_rate={lr if optimizer.lower() == 'sgd' else lr / 5}",
                 f"runner.embedding_sharding={sharding}"]
    config = load_config(ROOT / model_dir / "config.yaml",
                         overrides + [f"hyper_parameters.sparse_feature_number={rows[0]}"] if rows else overrides)
    if "fc_sizes" in (config.get("hyper_parameters") or {}):
        config.set("hyper_parameters.fc_sizes", [16, 8])
    torch.manual_seed(0)
    wrapper, plain = build_model(config, torch.device("cpu"), meta_tables=True)  # as the trainer does
    (table_name, table), = [(n, m) for n, m in plain.named_modules() if isinstance(m, torch.nn.Embedding)]
    full_shape = tuple(table.weight.shape)
    table_on_meta = table.weight.is_meta
    model, opt = shard_model(plain, config, torch.device("cpu"), lambda m: wrapper.create_optimizer(m, config))
    holdings = _holdings(model, table_on_meta)
    init_state = full_state_dict(model)  # the sharded model's initial weights, gathered on rank 0
    shared = [init_state]
    dist.broadcast_object_list(shared, src=0)
    init_state = shared[0]
    reference = _fresh(wrapper, config)
    reference.load_state_dict(init_state)
    ref_opt = wrapper.create_optimizer(reference, config)
    init = {k: v.clone() for k, v in init_state.items() if k == f"{table_name}.weight"}

    global_batch = 8 * world
    lo, hi = rank * 8, (rank + 1) * 8
    result: dict = {"sharding": sharding, "optimizer": optimizer, "plan": model._recstack_plan,
                    "full_shape": full_shape, "holdings": [None] * world}
    dist.all_gather_object(result["holdings"], holdings)
    if rank == 0:
        (out / sharding).mkdir(parents=True, exist_ok=True)
        torch.save(init[f"{table_name}.weight"][:1000].clone(), out / sharding / "init_rows.pt")
    data = list(batches(config, steps, global_batch))
    sparse, dense, _ = data[0]
    with torch.no_grad():
        got = model(sparse[lo:hi], dense[lo:hi])
        want = reference(sparse[lo:hi], dense[lo:hi])
    diff = torch.tensor(float((got - want).abs().max()))
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    result["forward_max_abs_diff"] = float(diff)
    for sparse, dense, label in data[1:]:
        opt.zero_grad(set_to_none=True)
        F.binary_cross_entropy(model(sparse[lo:hi], dense[lo:hi]), label[lo:hi]).backward()
        opt.step()
        ref_opt.zero_grad(set_to_none=True)
        F.binary_cross_entropy(reference(sparse, dense), label).backward()
        ref_opt.step()
    # a last step with unequal batches (8 and 5 rows: an epoch's last batch): DDP averages the
    # ranks' mean losses, so the reference loss is the mean of the two halves' means
    sizes = [8 - 3 * (r % 2) for r in range(world)]
    starts = [r * 8 for r in range(world)]
    sparse, dense, label = data[-1]
    opt.zero_grad(set_to_none=True)
    mine = slice(starts[rank], starts[rank] + sizes[rank])
    F.binary_cross_entropy(model(sparse[mine], dense[mine]), label[mine]).backward()
    opt.step()
    ref_opt.zero_grad(set_to_none=True)
    parts = [slice(st, st + n) for st, n in zip(starts, sizes)]
    torch.stack([F.binary_cross_entropy(reference(sparse[p], dense[p]), label[p]) for p in parts]).mean().backward()
    ref_opt.step()
    state = full_state_dict(model)
    if rank == 0:
        want_state = reference.state_dict()
        result["keys_equal"] = sorted(state) == sorted(want_state)
        result["weights_max_abs_diff"] = max(float((state[k] - want_state[k]).abs().max()) for k in want_state)
        result["table_change"] = max(float((state[k] - init[k]).abs().max()) for k in init)
        folder = save_checkpoint(out / sharding / "0", _Holder(state), None, {"model": model_dir})
        fresh = _fresh(wrapper, config)
        load_checkpoint(folder, fresh)
        with torch.no_grad():
            result["checkpoint_max_abs_diff"] = float((fresh(sparse, dense) - reference(sparse, dense)).abs().max())
    del model, opt
    gc.collect()
    dist.barrier()
    # warm start from the checkpoint just written: each rank reads its rows of it (memory-mapped)
    torch.manual_seed(1)  # other dense weights than the checkpoint's, so loading them is checked too
    wrapper, plain = build_model(config, torch.device("cpu"), meta_tables=True)
    model, opt = shard_model(plain, config, torch.device("cpu"), lambda m: wrapper.create_optimizer(m, config),
                             init_path=str(out / sharding / "0"))
    warm = full_state_dict(model)
    if rank == 0:
        result["warm_start_max_abs_diff"] = max(float((warm[k] - state[k]).abs().max()) for k in state)
        result["warm_start_keys_equal"] = sorted(warm) == sorted(state)
    del model, opt
    gc.collect()
    dist.barrier()
    return result


def _holdings(model, table_on_meta: bool) -> dict:
    """What this rank holds of the id table: the local shards' (rows, cols) and the largest plain
    tensor among the sharded model's parameters and state (a full table would show up there)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    shards, largest = [], 0
    for value in model.state_dict().values():
        if isinstance(value, ShardedTensor):
            shards += [list(s.tensor.shape) for s in value.local_shards()]
        else:
            largest = max(largest, value.numel())
    for p in model.parameters():
        largest = max(largest, p.numel() if not isinstance(p, ShardedTensor) else 0)
    return {"table_on_meta": table_on_meta, "shards": shards, "largest_plain_numel": largest}


def _fresh(wrapper, config):
    torch.manual_seed(0)
    return wrapper.create_model(config)


class _Holder(torch.nn.Module):
    """Saves a ready state_dict through recstack's checkpoint writer."""

    def __init__(self, state):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):
        return self._state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/rank/deepfm")
    parser.add_argument("--runs", nargs="+", default=["table_wise:SGD", "column_wise:Adagrad"],
                        help="<sharding type>:<optimizer> pairs")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD's; the others' is a fifth of it")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = []
    for spec in args.runs:
        # an error on one rank ends the job (torchrun stops the others); the test reads the output
        results.append(run(args.model, spec, args.lr, args.steps, args.out))
    if dist.get_rank() == 0:
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

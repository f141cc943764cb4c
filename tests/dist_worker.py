"""Helper of tests/test_distributed.py: models trained for a few steps in float64 with recstack's optimizers,
as one process or as one rank of a torchrun job (``recstack.dist``).

- DeepFM (a sparse embedding table): ``torchrun --nproc_per_node=2 tests/dist_worker.py OUT_DIR`` (each rank
  writes ``OUT_DIR/<optimizer>_rank<N>.pt``); :func:`run` in-process for the one-process reference.
- The multi-task models with regularisation and extra outputs (DBMTL, EasyRec's MMoE, E2E_MM_DBMTL):
  ``torchrun --nproc_per_node=2 tests/dist_worker.py --multitask SPEC.json OUT_DIR`` (SPEC: ``{"config_dir",
  "data", "steps"}``, a config dict and its model folder; each rank writes ``OUT_DIR/rank<N>.pt`` with its
  ``state`` and per-step ``losses``); :func:`run_multitask` with ``ctx=None`` in-process for the reference.

float64, because Adam-type updates divide by ``sqrt(v) + eps``: a weight whose gradient is below ``eps``
(1e-8) moves by up to ``lr`` on float32 rounding alone, and DDP sums gradients in another order than one
process does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recstack import dist  # noqa: E402
from recstack.config import Config, from_dict, load_config  # noqa: E402
from recstack.data import create_loader, create_reader  # noqa: E402
from recstack.trainer import train_step  # noqa: E402
from recstack.utils import seed_everything  # noqa: E402
from recstack.wrapper import build_model  # noqa: E402

OPTIMIZERS = ("SGD", "Adam")  # Adam: SparseAdam on the table (sparse gradients), Adam on the dense layers
STEPS = 8
RANK_BATCH = 250


def run(optimizer: str, batch_size: int, ctx: dist.DistContext | None, steps: int = STEPS) -> dict[str, torch.Tensor]:
    """Train ``steps`` batches; returns the final parameters."""
    config = load_config(REPO / "models/rank/deepfm/config.yaml",
                         [f"hyper_parameters.optimizer.class={optimizer}",
                          "hyper_parameters.optimizer.learning_rate=0.01",
                          f"runner.train_batch_size={batch_size}", "runner.use_fleet=True"])
    seed_everything(config.get("runner.seed"))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wrapper, model = build_model(config, torch.device("cpu"))
    finally:
        torch.set_default_dtype(default)
    net = model
    loader = create_loader(config, "train", create_reader(config, "train"))
    if ctx is None:
        optimizer_ = wrapper.create_optimizer(model, config)
    else:
        model, optimizer_ = dist.prepare_model(model, config, ctx, lambda m: wrapper.create_optimizer(m, config))
        loader.set_shard(ctx.rank, ctx.world_size)
    metrics, _ = wrapper.create_metrics()
    with dist.join_context(model):
        for step, batch in enumerate(loader):
            if step == steps:
                break
            batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
            train_step(wrapper, model, optimizer_, metrics, batch, config)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _float64(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


def multitask_config(spec: dict[str, Any]) -> Config:
    """The config of a ``--multitask`` SPEC: its ``data`` dict, paths resolved against ``config_dir``."""
    return from_dict(spec["data"], spec["config_dir"])


def run_multitask(config: Config, ctx: dist.DistContext | None, steps: int,
                  world_size: int = 2) -> tuple[dict[str, torch.Tensor], list[float]]:
    """``steps`` training steps of ``world_size`` ranks, each on its row shard of the training data
    (``loader.set_shard``: the batches a rank of a torchrun job reads); float64.

    With ``ctx`` (a torchrun rank): the model under DDP, this rank's batches; returns its state and the loss of
    each of its batches. With ``ctx=None``: one process does what the ranks do together, by hand: at each step
    the wrapper's ``train_forward`` on every rank's batch (loss, extra outputs, regularisation), the mean of
    those losses backpropagated (DDP averages the ranks' gradients) and one optimizer step. Returns the state
    and the mean loss of each step. Compare the parameters: the buffers (BatchNorm's running statistics) follow
    DDP's own rules (rank 0's broadcast before every forward, the last rank's at the end of ``Join``) and, in
    training mode, enter neither the outputs nor the gradients.
    """
    seed_everything(config.get("runner.seed"))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wrapper, model = build_model(config, torch.device("cpu"))
    finally:
        torch.set_default_dtype(default)
    net = model
    shards = [ctx.rank] if ctx is not None else list(range(world_size))
    loaders = []
    for shard in shards:
        loader = create_loader(config, "train", create_reader(config, "train"))
        loader.set_shard(shard, world_size)
        loaders.append(iter(loader))
    if ctx is None:
        optimizer = wrapper.create_optimizer(model, config)
    else:
        model, optimizer = dist.prepare_model(model, config, ctx, lambda m: wrapper.create_optimizer(m, config))
    metrics, _ = wrapper.create_metrics()
    model.train()
    losses = []
    with dist.join_context(model):
        for _ in range(steps):
            batches = [_float64(next(loader)) for loader in loaders]
            if ctx is not None:
                loss, _ = train_step(wrapper, model, optimizer, metrics, batches[0], config)
                losses.append(float(loss))
                continue
            rank_losses = [wrapper.train_forward(model, metrics, batch, config)[0] for batch in batches]
            loss = torch.stack(rank_losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, losses


if __name__ == "__main__":
    if sys.argv[1] == "--multitask":
        spec = json.loads(Path(sys.argv[2]).read_text())
        out = Path(sys.argv[3])
        out.mkdir(parents=True, exist_ok=True)
        config = multitask_config(spec)
        ctx = dist.init_distributed(config)
        state, losses = run_multitask(config, ctx, spec["steps"])
        torch.save({"state": state, "losses": losses}, out / f"rank{ctx.rank}.pt")
        dist.teardown()
    else:
        out = Path(sys.argv[1])
        out.mkdir(parents=True, exist_ok=True)
        ctx = dist.init_distributed(load_config(REPO / "models/rank/deepfm/config.yaml", ["runner.use_fleet=True"]))
        for name in OPTIMIZERS:
            torch.save(run(name, RANK_BATCH, ctx), out / f"{name}_rank{ctx.rank}.pt")
        dist.teardown()

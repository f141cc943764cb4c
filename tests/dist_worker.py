"""Helper of tests/test_distributed.py: DeepFM (a sparse embedding table) trained for a few steps in float64
with recstack's optimizers, as one process or as one rank of a torchrun job (``recstack.dist``).

float64, because Adam-type updates divide by ``sqrt(v) + eps``: a weight whose gradient is below ``eps``
(1e-8) moves by up to ``lr`` on float32 rounding alone, and DDP sums gradients in another order than one
process does. Usage: ``torchrun --nproc_per_node=2 tests/dist_worker.py OUT_DIR`` (each rank writes
``OUT_DIR/<optimizer>_rank<N>.pt``); :func:`run` in-process for the one-process reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recstack import dist  # noqa: E402
from recstack.config import load_config  # noqa: E402
from recstack.data import create_loader, create_reader  # noqa: E402
from recstack.trainer import build_model, train_step  # noqa: E402
from recstack.utils import seed_everything  # noqa: E402

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


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    ctx = dist.init_distributed(load_config(REPO / "models/rank/deepfm/config.yaml", ["runner.use_fleet=True"]))
    for name in OPTIMIZERS:
        torch.save(run(name, RANK_BATCH, ctx), out / f"{name}_rank{ctx.rank}.pt")
    dist.teardown()

"""Optimizers by name, the sparse (row-wise) path for tables, and lazy L2."""

import copy

import pytest
import torch
from torch import nn

from recstack.optim import CombinedOptimizer, build_optimizer


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(50, 3)
        self.linear = nn.Linear(3, 1)

    def forward(self, ids):
        return torch.sigmoid(self.linear(self.table(ids).sum(1)))


def step(model, opt, ids=None):
    ids = torch.tensor([[1, 2], [2, 3]]) if ids is None else ids
    loss = model(ids).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("name, kinds", [
    ("SGD", ["SGD"]), ("adagrad", ["Adagrad", "Adagrad"]), ("Adam", ["Adam", "SparseAdam"]),
    ("adamw", ["AdamW", "SparseAdam"]),
])
def test_tables_get_sparse_row_wise_updates(name, kinds):
    torch.manual_seed(0)
    model = Tiny()
    before = model.table.weight.detach().clone()
    opt = build_optimizer(model, name, 0.1)
    parts = opt.optimizers if isinstance(opt, CombinedOptimizer) else [opt]
    assert [type(o).__name__ for o in parts] == kinds
    assert model.table.sparse
    step(model, opt)
    assert model.table.weight.grad is None or model.table.weight.grad.is_sparse
    moved = (model.table.weight.detach() != before).any(1)
    assert moved.nonzero().flatten().tolist() == [1, 2, 3]  # only the rows in the batch


def test_dense_path_when_sparse_is_off():
    model = Tiny()
    opt = build_optimizer(model, "Adam", 0.1, sparse=False)
    assert isinstance(opt, torch.optim.Adam) and not model.table.sparse
    step(model, opt)


def test_unknown_optimizer_names_the_closest():
    with pytest.raises(KeyError, match="unknown optimizer 'adma'; did you mean 'adam'"):
        build_optimizer(Tiny(), "adma")


def test_lazy_l2_touches_only_batch_rows_and_matches_dense_l2_there():
    torch.manual_seed(0)
    sparse_model = Tiny()
    dense_model = Tiny()
    dense_model.load_state_dict(sparse_model.state_dict())
    before = sparse_model.table.weight.detach().clone()
    reg = 0.5
    opt_s = build_optimizer(sparse_model, "SGD", 0.1, reg=reg, sparse=True)
    step(sparse_model, opt_s)
    # reference: plain SGD with gradient + reg * w on the touched rows only
    ids = torch.tensor([[1, 2], [2, 3]])
    loss = dense_model(ids).sum()
    loss.backward()
    with torch.no_grad():
        grad = dense_model.table.weight.grad.clone()
        rows = torch.tensor([1, 2, 3])
        grad[rows] += reg * dense_model.table.weight[rows]
        expected = dense_model.table.weight - 0.1 * grad
        expected_linear = dense_model.linear.weight - 0.1 * (dense_model.linear.weight.grad
                                                             + reg * dense_model.linear.weight)
    torch.testing.assert_close(sparse_model.table.weight.detach(), expected)
    torch.testing.assert_close(sparse_model.linear.weight.detach(), expected_linear)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[[1, 2, 3]] = False
    assert torch.equal(sparse_model.table.weight.detach()[untouched], before[untouched])


def test_combined_optimizer_state_round_trip():
    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, "Adam", 0.01)
    step(model, opt)
    state = copy.deepcopy(opt.state_dict())  # as if saved to disk (state_dict shares live tensors)
    model2 = Tiny()
    model2.load_state_dict(model.state_dict())
    opt2 = build_optimizer(model2, "Adam", 0.01)
    opt2.load_state_dict(state)
    step(model, opt)
    step(model2, opt2)
    torch.testing.assert_close(model.table.weight, model2.table.weight)
    assert len(opt.param_groups) == 2


def test_clip_norm_bounds_the_global_norm_of_dense_and_sparse_gradients():
    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, "SGD", 1.0, clip_norm=0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(model, opt)
    moved = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    assert moved.norm().item() == pytest.approx(0.01, rel=1e-3)  # SGD lr 1: the step is the clipped gradient


# ---------------------------------------------------------------------------- learning-rate schedule
def test_piecewise_decay_follows_paddle_boundaries_on_every_parameter_group():
    from recstack.optim import PiecewiseDecay

    model = Tiny()
    opt = build_optimizer(model, "Adam", lr_schedule={"boundaries": [2, 5], "values": [0.1, 0.01, 0.001]})
    assert isinstance(opt, CombinedOptimizer) and isinstance(opt.lr_scheduler, PiecewiseDecay)
    seen = []
    for _ in range(7):
        seen.append({g["lr"] for g in opt.param_groups})  # Adam (dense) and SparseAdam (table) alike
        step(model, opt)
        opt.lr_scheduler.step()
    # Paddle's PiecewiseDecay: values[0] for steps 0, 1; values[1] for 2..4; values[2] from step 5 on
    assert seen == [{0.1}, {0.1}, {0.01}, {0.01}, {0.01}, {0.001}, {0.001}]
    state = opt.lr_scheduler.state_dict()
    fresh = PiecewiseDecay(opt, [2, 5], [0.1, 0.01, 0.001])
    assert fresh.lr == 0.1
    fresh.load_state_dict(state)
    assert fresh.lr == 0.001 and {g["lr"] for g in opt.param_groups} == {0.001}
    with pytest.raises(ValueError, match="strictly increasing"):
        PiecewiseDecay(opt, [5, 5], [1, 2, 3])
    with pytest.raises(ValueError, match="needs len\\(boundaries\\) \\+ 1 = 2 values"):
        PiecewiseDecay(opt, [5], [1.0])


def _config(optimizer):
    from recstack.config import from_dict

    return from_dict({"hyper_parameters": {"optimizer": optimizer}})


@pytest.mark.parametrize("schedule, message", [
    ({"boundaries": [10, 5], "values": [1, 2, 3]}, "must be positive and strictly increasing"),
    ({"boundaries": [0], "values": [1, 2]}, "must be positive and strictly increasing"),
    ({"boundaries": [10], "values": [1, 2, 3]}, r"needs len\(boundaries\) \+ 1 = 2 rates"),
    ({"boundaries": [10.5], "values": [1, 2]}, "list of step numbers"),
    ({"boundaries": [], "values": [1]}, "non-empty list"),
    ({"boundaries": [10], "values": [1, "fast"]}, "list of learning rates"),
    ({"boundaries": [10], "values": [1, -2]}, "list of learning rates"),
    ({"boundary": [10], "values": [1, 2]}, "did you mean 'hyper_parameters.optimizer.lr_schedule.boundaries'"),
    ({"class": "CosineDecay", "boundaries": [10], "values": [1, 2]}, "unknown schedule 'CosineDecay'"),
])
def test_lr_schedule_config_errors_are_clear(schedule, message):
    from recstack.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _config({"class": "SGD", "lr_schedule": schedule})


def test_lr_schedule_sets_learning_rate_and_conflicts_are_errors():
    from recstack.config import ConfigError

    config = _config({"class": "SGD", "lr_schedule": {"boundaries": [410000], "values": [0.85, 0.2]}})
    assert config.get("hyper_parameters.optimizer.learning_rate") == 0.85
    assert _config({"learning_rate": 0.85, "lr_schedule": {"boundaries": [4], "values": [0.85, 0.2]}})
    with pytest.raises(ConfigError, match="lr_schedule starts at values\\[0\\] = 0.85"):
        _config({"learning_rate": 0.01, "lr_schedule": {"boundaries": [4], "values": [0.85, 0.2]}})


def test_trainer_steps_the_schedule_once_per_batch(tmp_path):
    """The trainer's step advances the schedule: batch t trains with the rate of step t."""
    from pathlib import Path

    from recstack.config import load_config
    from recstack.data import create_loader
    from recstack.trainer import train_step
    from recstack.wrapper import build_model

    config = load_config(Path(__file__).resolve().parents[1] / "models/rank/din/config.yaml",
                         ["hyper_parameters.optimizer.lr_schedule={boundaries: [3, 5], values: [0.004, 0.002, 0.001]}",
                          "hyper_parameters.item_emb_size=4", "hyper_parameters.cat_emb_size=4"])
    wrapper, model = build_model(config, torch.device("cpu"))
    opt = wrapper.create_optimizer(model, config)
    metrics, _ = wrapper.create_metrics()
    rates = []
    for i, batch in enumerate(create_loader(config, "train")):
        if i == 7:
            break
        rates.append(opt.param_groups[0]["lr"])
        train_step(wrapper, model, opt, metrics, batch, config)
    assert rates == [0.004] * 3 + [0.002] * 2 + [0.001] * 2
    assert opt.lr_scheduler.step_count == 7

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


def step(model, opt, ids=torch.tensor([[1, 2], [2, 3]])):
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
        expected_linear = dense_model.linear.weight - 0.1 * (dense_model.linear.weight.grad + reg * dense_model.linear.weight)
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

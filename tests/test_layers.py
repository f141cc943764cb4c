"""Shared layers: exact values against straightforward reference implementations."""

import itertools

import pytest
import torch
from torch import nn

from recstack.layers import MLP, Experts, FactorizationMachine, FieldEmbedding, TaskGates, Towers, mix_experts
from recstack.layers.init import init_linear, truncated_normal_


def test_fm_equals_sum_of_pairwise_dot_products():
    torch.manual_seed(0)
    fields = torch.randn(4, 6, 3)
    brute = torch.stack([sum((fields[b, i] * fields[b, j]).sum() for i, j in itertools.combinations(range(6), 2))
                         for b in range(4)]).unsqueeze(1)
    torch.testing.assert_close(FactorizationMachine()(fields), brute, rtol=1e-5, atol=1e-5)


def test_field_embedding_embeds_sparse_ids_and_scales_dense_vectors():
    torch.manual_seed(0)
    layer = FieldEmbedding(100, 4, dense_dim=2, init_std=0.1)
    sparse = torch.tensor([[1, 5, 7], [2, 2, 99]])
    dense = torch.tensor([[0.5, 2.0], [0.0, 1.0]])
    out = layer(sparse, dense)
    assert out.shape == (2, 5, 4)
    torch.testing.assert_close(out[:, :3], layer.embedding.weight[sparse])
    torch.testing.assert_close(out[0, 4], 2.0 * layer.dense_weight[1])
    torch.testing.assert_close(out[1, 3], torch.zeros(4))
    assert layer.embedding.weight.abs().max() <= 0.2 + 1e-6  # truncated at 2 std


def test_truncated_normal_is_bounded_and_has_the_right_spread():
    torch.manual_seed(0)
    w = truncated_normal_(torch.empty(200_000), 0.05)
    assert w.abs().max() <= 0.1
    # std of N(0, s) truncated at 2s is 0.8796 s
    assert w.std().item() == pytest.approx(0.05 * 0.8796, rel=0.02)
    assert abs(w.mean().item()) < 1e-3


def test_mlp_layout_and_shapes():
    mlp = MLP(10, [8, 6], output_dim=1, dropout=0.1, batch_norm=True, init="normal")
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert mlp(torch.randn(5, 10)).shape == (5, 1)
    assert MLP(10, []).output_dim == 10
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_linear(nn.Linear(2, 2), "bogus")
    with pytest.raises(KeyError, match="unknown activation 'rellu'; did you mean 'relu'"):
        MLP(3, [2], activation="rellu")


def test_fused_experts_and_gates_equal_separate_layers():
    torch.manual_seed(0)
    experts = Experts(7, num_experts=3, expert_size=4)
    gates = TaskGates(7, num_tasks=2, num_experts=3)
    x = torch.randn(5, 7)
    w, b = experts.linear.weight, experts.linear.bias
    separate = torch.stack([torch.relu(x @ w[e * 4:(e + 1) * 4].T + b[e * 4:(e + 1) * 4]) for e in range(3)], 1)
    torch.testing.assert_close(experts(x), separate)
    g = gates(x)
    assert g.shape == (5, 2, 3)
    torch.testing.assert_close(g.sum(-1), torch.ones(5, 2))
    mixed = mix_experts(g, experts(x))
    torch.testing.assert_close(mixed[:, 1], (g[:, 1].unsqueeze(-1) * separate).sum(1))
    torch.testing.assert_close(experts.linear.bias, torch.full((12,), 0.1))


def test_towers_return_one_probability_per_task():
    towers = Towers(4, num_tasks=3, hidden_sizes=[5])
    outs = towers(torch.randn(6, 3, 4))
    assert len(outs) == 3 and all(o.shape == (6, 1) for o in outs)
    assert all(((o > 0) & (o < 1)).all() for o in outs)

"""Shared layers: exact values against straightforward reference implementations."""

import itertools

import pytest
import torch
from torch import nn

from recstack.layers import (
    CIN,
    MLP,
    CrossNet,
    CrossNetMix,
    DotInteraction,
    EmbeddingGate,
    Experts,
    ExtractionLayer,
    FactorizationMachine,
    FieldAwareInteraction,
    FieldEmbeddedInteraction,
    FieldEmbedding,
    MLPExperts,
    TaskGates,
    Towers,
    mix_experts,
)
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


def test_extraction_layer_equals_the_ple_formula_loop():
    """PLE/CGC: task k mixes its own and the shared experts, the shared gate mixes all, each expert
    reads its owner's input (the same x at the first level)."""
    torch.manual_seed(0)
    T, E, S, H, D = 3, 2, 2, 4, 5
    layer = ExtractionLayer(D, T, E, S, H, shared_gate=True)
    w, b = layer.experts.linear.weight, layer.experts.linear.bias
    gw, gb = layer.task_gates.linear.weight, layer.task_gates.linear.bias

    def expert(i, x):  # expert i as a separate Linear + ReLU
        return torch.relu(x @ w[i * H:(i + 1) * H].T + b[i * H:(i + 1) * H])

    def gate(k, x):  # task k's gate over its E + S experts
        return torch.softmax(x @ gw[k * (E + S):(k + 1) * (E + S)].T + gb[k * (E + S):(k + 1) * (E + S)], -1)

    owner = [i // E for i in range(T * E)] + [T] * S  # input group of each expert
    for inputs in (torch.randn(6, D), torch.randn(6, T + 1, D)):
        x = [inputs if inputs.dim() == 2 else inputs[:, g] for g in range(T + 1)]
        out = layer(inputs)
        assert out.shape == (6, T + 1, H)
        for k in range(T):
            pool = [*range(k * E, (k + 1) * E), *range(T * E, T * E + S)]
            g = gate(k, x[k])
            expected = sum(g[:, j:j + 1] * expert(i, x[owner[i]]) for j, i in enumerate(pool))
            torch.testing.assert_close(out[:, k], expected)
        g = torch.softmax(layer.shared_gate.linear(x[T]), -1)
        expected = sum(g[:, i:i + 1] * expert(i, x[owner[i]]) for i in range(T * E + S))
        torch.testing.assert_close(out[:, T], expected)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    cgc = ExtractionLayer(D, T, E, S, H, shared_gate=False)  # the last level / CGC: task outputs only
    x = torch.randn(6, D)
    assert cgc(x).shape == (6, T, H)
    torch.testing.assert_close(torch.jit.script(cgc)(x), cgc(x))
    torch.testing.assert_close(torch.jit.script(layer)(inputs), layer(inputs))
    torch.testing.assert_close(layer.experts.linear.bias, torch.full((H * (T * E + S),), 0.1))
    with pytest.raises(ValueError, match="expects 4 inputs"):
        layer(torch.randn(6, 2, D))


@pytest.mark.parametrize("batch_norm, activation", [(False, "relu"), (True, "relu"), (False, "tanh")])
def test_mlp_experts_equal_a_loop_of_separate_mlps(batch_norm, activation):
    """EasyRec's multi-layer experts: the fused/batched bank equals E separate MLPs holding the same weights."""
    torch.manual_seed(0)
    E, D, sizes = 3, 7, [6, 5, 4]
    bank = MLPExperts(D, E, sizes, activation=activation, batch_norm=batch_norm, dropout=[0.0, 0.2, 0.0])
    loop = [MLP(D, sizes, activation=activation, batch_norm=batch_norm, dropout=[0.0, 0.2, 0.0]) for _ in range(E)]
    linears = [[m for m in mlp if isinstance(m, nn.Linear)] for mlp in loop]
    with torch.no_grad():
        for e in range(E):
            rows = slice(e * sizes[0], (e + 1) * sizes[0])
            linears[e][0].weight.copy_(bank.first.weight[rows])
            linears[e][0].bias.copy_(bank.first.bias[rows])
            for layer, linear in zip(bank.layers, linears[e][1:]):
                linear.weight.copy_(layer.weight[e].T)
                linear.bias.copy_(layer.bias[e])
    x = torch.randn(9, D)
    for train in (True, False):  # training (batch statistics; no dropout drawn in eval) and eval
        bank.train(train)
        for mlp in loop:
            mlp.train(train)
        if train:  # dropout masks differ between the two; compare with the middle dropout switched off
            bank.layers[0].post[-1].p = 0.0
            for mlp in loop:
                next(m for m in mlp if isinstance(m, nn.Dropout)).p = 0.0
        out = bank(x)
        assert out.shape == (9, E, 4)
        torch.testing.assert_close(out, torch.stack([mlp(x) for mlp in loop], 1))
    # each expert's block is initialised on its own fans (Xavier-uniform bound sqrt(6 / (6 + 5))), zero biases
    assert bank.layers[0].weight.shape == (E, 6, 5)
    assert bank.layers[0].weight.abs().max() <= (6 / 11) ** 0.5 and torch.equal(bank.layers[0].bias, torch.zeros(E, 5))
    assert [tuple(k.shape) for k in bank.kernels()] == [(E * 6, D), (E, 6, 5), (E, 5, 4)]
    bank.train()
    bank(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bank.parameters())
    bank.eval()
    torch.testing.assert_close(torch.jit.script(bank)(x), bank(x))


def test_mlp_experts_with_one_layer_are_the_fused_experts():
    torch.manual_seed(0)
    one = Experts(7, num_experts=3, expert_size=4)
    torch.manual_seed(0)
    bank = MLPExperts(7, 3, [4], bias_init=0.1)
    assert torch.equal(one.linear.weight, bank.first.weight) and torch.equal(one.linear.bias, bank.first.bias)
    x = torch.randn(5, 7)
    torch.testing.assert_close(bank(x), one(x))
    with pytest.raises(ValueError, match="at least one positive hidden size"):
        MLPExperts(7, 3, [])


def test_field_aware_interaction_equals_ffm_double_loop():
    torch.manual_seed(0)
    e = torch.randn(3, 5, 5, 4)
    expected = torch.stack([sum((e[b, i, j] * e[b, j, i]).sum() for i, j in itertools.combinations(range(5), 2))
                            for b in range(3)]).unsqueeze(1)
    torch.testing.assert_close(FieldAwareInteraction(5)(e), expected, rtol=1e-5, atol=1e-5)


def test_field_embedded_and_dot_interactions_equal_loops():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3)
    fefm = FieldEmbeddedInteraction(4, 3, init_std=0.5)
    pairs = list(itertools.combinations(range(4), 2))
    mats = fefm.pair_matrices.detach()
    expected = torch.stack([torch.stack([x[b, i] @ (0.5 * (mats[p] + mats[p].T)) @ x[b, j]
                                         for p, (i, j) in enumerate(pairs)]) for b in range(2)])
    torch.testing.assert_close(fefm(x), expected, rtol=1e-5, atol=1e-5)
    dots = torch.stack([torch.stack([x[b, i] @ x[b, j] for i, j in pairs]) for b in range(2)])
    torch.testing.assert_close(DotInteraction(4)(x), dots)
    assert DotInteraction(4, self_interaction=True)(x).shape == (2, 10)


def test_cin_equals_its_formula():
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 4)
    cin = CIN(3, [4, 2], split_half=True)
    assert cin.output_dim == 2 + 2
    h, outs = x0, []
    for k, layer in enumerate(cin.layers):
        w, b = layer.weight, layer.bias  # (H_k, H_{k-1} * F)
        z = torch.stack([torch.stack([h[:, i] * x0[:, j] for j in range(3)], 1) for i in range(h.shape[1])], 1)
        z = torch.relu(torch.einsum("om,bmd->bod", w, z.reshape(2, -1, 4)) + b[None, :, None])
        if k == 0:
            h, direct = z[:, :2], z[:, 2:]
        else:
            direct = z
        outs.append(direct.sum(2))
    torch.testing.assert_close(cin(x0), torch.cat(outs, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must be even"):
        CIN(3, [3, 2])


def test_cross_networks_equal_their_formulas():
    torch.manual_seed(0)
    x0 = torch.randn(5, 6)
    cross = CrossNet(6, 2)
    x = x0
    for w, b in zip(cross.weights, cross.biases):
        x = x0 * (x @ w)[:, None] + b + x
    torch.testing.assert_close(cross(x0), x)
    assert cross.l2().detach().item() == pytest.approx(float((cross.weights.detach() ** 2).sum()))
    full = CrossNetMix(6, 2)
    x = x0
    for w, b in zip(full.full, full.biases):
        x = x0 * (x @ w.T + b) + x
    torch.testing.assert_close(full(x0), x)
    mix = CrossNetMix(6, 2, low_rank=3, num_experts=2)
    x = x0
    for layer in range(2):
        gates = torch.softmax(x @ mix.gates[layer], 1)
        out = torch.zeros_like(x)
        for e in range(2):
            low = torch.tanh(torch.tanh(x @ mix.v[layer, e]) @ mix.c[layer, e])
            out += gates[:, e:e + 1] * (x0 * (low @ mix.u[layer, e] + mix.biases[layer]))
        x = out + x
    torch.testing.assert_close(mix(x0), x, rtol=1e-5, atol=1e-5)


def test_cross_net_mix_scripts_and_initialises_each_expert_on_its_own_fans():
    torch.manual_seed(0)
    x0 = torch.randn(4, 64)
    for layer in (CrossNetMix(64, 2), CrossNetMix(64, 2, low_rank=8, num_experts=3)):
        scripted = torch.jit.script(layer)
        torch.testing.assert_close(scripted(x0), layer(x0))
    full = CrossNetMix(64, 3)
    assert full.l2().item() == pytest.approx(float((full.full.detach() ** 2).sum()))
    # Xavier normal of a (64, 64) matrix: std sqrt(2 / 128) = 0.125 per layer
    assert full.full.detach()[0].std().item() == pytest.approx(0.125, rel=0.05)
    mix = CrossNetMix(256, 1, low_rank=16, num_experts=4)
    # V_i is (256, 16): std sqrt(2 / 272) for every expert, not the fans of the whole 4-d tensor
    for expert in mix.v.detach()[0]:
        assert expert.std().item() == pytest.approx((2 / 272) ** 0.5, rel=0.1)
    expected = sum(float((w.detach() ** 2).sum()) for w in (mix.v, mix.c, mix.u))
    assert mix.l2().item() == pytest.approx(expected)


def test_gates():
    torch.manual_seed(0)
    fields = torch.randn(2, 3, 4)
    gate = EmbeddingGate(3, 4, bit_wise=True)
    expected = torch.stack([fields[:, i] * torch.sigmoid(fields[:, i] @ gate.weight[i]) for i in range(3)], 1)
    torch.testing.assert_close(gate(fields), expected)
    assert EmbeddingGate(3, 4, bit_wise=False).weight.shape == (3, 4, 1)
    mlp = MLP(4, [5], hidden_gate=True)
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "HiddenGate"]
    h = torch.relu(mlp[0](fields[:, 0]))
    torch.testing.assert_close(mlp(fields[:, 0]), h * torch.sigmoid(mlp[2].linear(h)))


def test_multi_value_embedding_sums_only_real_ids_and_padding_gets_no_gradient():
    from recstack.layers import MaskedPooling, MultiValueEmbedding, masked_pool

    torch.manual_seed(0)
    layer = MultiValueEmbedding(50, 4, padding_idx=0, init_std=0.1)
    with torch.no_grad():
        layer.embedding.weight[0] = 100.0  # a padding row that would show if it were summed
    ids = torch.tensor([[[3, 7, 0], [0, 0, 0]], [[5, 5, 9], [11, 0, 0]]])  # (B=2, F=2, L=3)
    out = layer(ids)
    w = layer.embedding.weight
    assert out.shape == (2, 2, 4)
    torch.testing.assert_close(out[0, 0], w[3] + w[7])
    torch.testing.assert_close(out[0, 1], torch.zeros(4))  # an absent field pools to zero
    torch.testing.assert_close(out[1, 0], 2 * w[5] + w[9])  # repeated ids count each time
    torch.testing.assert_close(out[1, 1], w[11])
    out.sum().backward()
    grad = w.grad.to_dense() if w.grad.is_sparse else w.grad
    assert grad[0].abs().sum() == 0 and grad[5].tolist() == [2.0] * 4
    # mean pooling divides by the number of real ids; the module and the function agree
    values, mask = torch.randn(3, 5, 2), torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]])
    torch.testing.assert_close(MaskedPooling("mean")(values, mask)[2], values[2, [0, 2, 4]].mean(0))
    torch.testing.assert_close(masked_pool(values, mask.bool())[0], values[0, :2].sum(0))
    assert masked_pool(values, mask, "mean")[1].abs().sum() == 0
    with pytest.raises(ValueError, match="unknown pooling mode 'max'"):
        MaskedPooling("max")

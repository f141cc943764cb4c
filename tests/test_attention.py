"""recstack.layers.attention: Dice against its formula, masked softmax, the local activation unit, DIN pooling."""

import pytest
import torch
from torch import nn

from recstack.layers import (
    MLP,
    Dice,
    DINAttention,
    LocalActivationUnit,
    get_activation,
    lengths_to_mask,
    masked_softmax,
)


def dice_formula(x, mean, var, alpha, eps):
    p = torch.sigmoid((x - mean) / torch.sqrt(var + eps))
    return p * x + (1 - p) * alpha * x


def test_dice_train_mode_uses_batch_statistics_and_updates_running_ones():
    torch.manual_seed(0)
    dice = Dice(3, eps=1e-8, momentum=0.1)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.0, 0.25, -0.5]))
    x = torch.randn(6, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([0.0, 1.0, -2.0])
    out = dice.train()(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    assert torch.allclose(out, dice_formula(x, mean, var, dice.alpha, 1e-8), atol=1e-6)
    # running = 0.9 * running + 0.1 * batch, the variance with Bessel's correction (as nn.BatchNorm1d)
    assert torch.allclose(dice.running_mean, 0.1 * mean, atol=1e-6)
    assert torch.allclose(dice.running_var, 0.9 + 0.1 * x.var(0, unbiased=True), atol=1e-6)
    reference = nn.BatchNorm1d(3, affine=False, momentum=0.1)
    reference.train()(x)
    assert torch.allclose(dice.running_var, reference.running_var, atol=1e-6)


def test_dice_eval_mode_uses_running_statistics_so_samples_are_independent():
    torch.manual_seed(1)
    dice = Dice(4, momentum=0.5)
    for _ in range(3):
        dice.train()(torch.randn(32, 4) * 3 + 1)
    dice.eval()
    x = torch.randn(5, 4)
    expected = dice_formula(x, dice.running_mean, dice.running_var, dice.alpha, dice.eps)
    assert torch.allclose(dice(x), expected, atol=1e-6)
    assert torch.allclose(dice(x[:2]), expected[:2], atol=1e-6)  # the batch's other rows do not matter
    before = dice.running_mean.clone()
    dice(x)
    assert torch.equal(dice.running_mean, before)  # eval does not update


def test_dice_mask_keeps_padding_out_of_the_statistics():
    torch.manual_seed(2)
    dice = Dice(2).train()
    x = torch.randn(3, 4, 2)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = dice(x, mask)
    valid = x[mask]
    expected = dice_formula(x, valid.mean(0), valid.var(0, unbiased=False), dice.alpha, dice.eps)
    assert torch.allclose(out, expected, atol=1e-6)
    garbage = x.clone()
    garbage[~mask] = 1e4
    assert torch.allclose(dice(garbage, mask)[mask], out[mask], atol=1e-6)


def test_dice_alpha_learns_and_dice_is_an_mlp_activation():
    x = torch.randn(16, 3, requires_grad=True)
    dice = Dice(3)
    dice(x).sum().backward()
    assert dice.alpha.grad is not None and x.grad is not None
    assert isinstance(get_activation("dice", 5), Dice) and get_activation("Dice", 5).num_features == 5
    with pytest.raises(ValueError, match="per-feature"):
        get_activation("dice")
    mlp = MLP(4, [6, 3], output_dim=1, activation="dice")
    assert [m.num_features for m in mlp if isinstance(m, Dice)] == [6, 3]
    assert mlp(torch.randn(8, 4)).shape == (8, 1)


def test_masked_softmax_is_zero_on_padding_and_sums_to_one():
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 100.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.allclose(w[0, :2], torch.softmax(torch.tensor([1.0, 2.0]), 0)) and w[0, 2] == 0
    assert torch.equal(w[1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(w[2], torch.zeros(3))  # no valid position: zeros, not NaN


def test_lengths_to_mask():
    assert torch.equal(lengths_to_mask(torch.tensor([[2], [0], [3]]), 4),
                       torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool))
    assert lengths_to_mask(torch.tensor([1, 3])).shape == (2, 3)


def test_local_activation_unit_scores_real_positions_with_the_mlp_and_padding_with_zero():
    torch.manual_seed(3)
    unit = LocalActivationUnit(4, (5,), "sigmoid")
    q, k = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = lengths_to_mask(torch.tensor([3, 1]), 3)
    scores = unit(q, k, mask)
    for b, length in enumerate((3, 1)):
        for j in range(length):
            manual = unit.mlp(torch.cat([q[b], k[b, j], q[b] - k[b, j], q[b] * k[b, j]]))
            assert torch.allclose(scores[b, j], manual[0], atol=1e-6)
    assert torch.equal(scores[1, 1:], torch.zeros(2))
    k2 = k.clone()
    k2[1, 1:] = 99.0  # whatever sits in the padding
    assert torch.equal(unit(q, k2, mask), scores)


@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("act", ["sigmoid", "dice"])
def test_din_attention_pools_only_real_positions_whatever_the_padding(softmax, act):
    torch.manual_seed(4)
    att = DINAttention(6, (8, 4), act, softmax).train()
    q, k = torch.randn(3, 6), torch.randn(3, 4, 6)
    lengths = torch.tensor([4, 2, 1])
    mask = lengths_to_mask(lengths, 4)
    weights = att.weights(q, k, mask)
    pooled = att(q, k, mask)
    assert torch.allclose(pooled, (weights.unsqueeze(-1) * k).sum(1), atol=1e-6)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    if softmax:
        assert torch.allclose(weights.sum(1), torch.ones(3), atol=1e-6)
    # pad further with garbage: same output, in train mode (Dice's batch statistics) too
    wide = torch.cat([k, torch.full((3, 5, 6), 7.0)], dim=1)
    again = att(q, wide, lengths_to_mask(lengths, 9))
    assert torch.allclose(again, pooled, atol=1e-6)

"""FinalMLP's blocks (models/rank/finalmlp/net.py): the multi-head bilinear fusion against its formula
computed by hand, and the feature gate's range (0, 2)."""

import torch

from models.rank.finalmlp.net import BilinearFusion, FeatureSelection, FinalMLP
from recstack.layers.field_inputs import SlotFields


def test_bilinear_fusion_matches_its_formula_by_hand():
    fusion = BilinearFusion(4, 2, num_heads=2)   # heads: x in chunks of 2, y in chunks of 1
    with torch.no_grad():
        fusion.w_x.weight.copy_(torch.tensor([[1.0, 0.0, -1.0, 2.0]]))
        fusion.w_x.bias.fill_(0.5)
        fusion.w_y.weight.copy_(torch.tensor([[3.0, -2.0]]))
        fusion.w_xy.copy_(torch.tensor([[[1.0], [2.0]], [[-1.0], [0.5]]]))   # W_1 = [1, 2]^T, W_2 = [-1, 0.5]^T
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 1.0, 0.0]])
    y = torch.tensor([[2.0, -1.0], [1.0, 1.0]])
    # row 0: b 0.5, w_x.x = 1 - 3 + 8 = 6, w_y.y = 6 + 2 = 8, heads: (1*1 + 2*2) * 2 = 10, (3*-1 + 4*0.5) * -1 = 1
    # row 1: b 0.5, w_x.x = -1, w_y.y = 3 - 2 = 1, heads: (0 - 2) * 1 = -2, (-1 + 0) * 1 = -1
    expected = torch.tensor([[0.5 + 6 + 8 + 10 + 1], [0.5 - 1 + 1 - 2 - 1]])
    torch.testing.assert_close(fusion(x, y), expected)


def test_bilinear_fusion_with_one_head_is_a_full_bilinear_form():
    torch.manual_seed(0)
    fusion = BilinearFusion(6, 3, num_heads=1)
    x, y = torch.randn(5, 6), torch.randn(5, 3)
    expected = fusion.w_x(x) + fusion.w_y(y) + torch.einsum("bi,ij,bj->b", x, fusion.w_xy[0], y).unsqueeze(1)
    torch.testing.assert_close(fusion(x, y), expected)


def test_feature_gate_lies_in_zero_two_and_starts_from_its_context():
    torch.manual_seed(0)
    fields = torch.randn(64, 5, 3, dtype=torch.float64)
    for context in ([], [0, 3]):
        gate = FeatureSelection(15, [8], context, 3).double()
        with torch.no_grad():
            for p in gate.parameters():
                p.normal_(0, 1)   # spread the gate over its range (float64: float32's sigmoid rounds to 1 past 17)
        g = gate(fields)
        assert g.shape == (64, 15)
        assert bool((g > 0).all()) and bool((g < 2).all())
        assert g.min() < 0.2 and g.max() > 1.8
    # a learned context gives every sample the same gate; a field context depends on those fields only
    assert torch.equal(FeatureSelection(15, [8], [], 3).double()(fields).std(0), torch.zeros(15))
    gate = FeatureSelection(15, [8], [1], 3).double()
    other = fields.clone()
    other[:, [0, 2, 3, 4]] = 0
    torch.testing.assert_close(gate(fields), gate(other))


def test_finalmlp_forward_and_head_check():
    torch.manual_seed(0)
    net = FinalMLP(SlotFields(100, 4, 3, 2, dense_fields=True), [8, 6], [4], fs1_context=[0, 4], num_heads=2)
    prob = net(torch.randint(0, 100, (7, 3)), torch.rand(7, 2))
    assert prob.shape == (7, 1) and bool(((prob > 0) & (prob < 1)).all())
    try:
        FinalMLP(SlotFields(100, 4, 3, 2, dense_fields=True), [8, 6], [4], num_heads=4)
    except ValueError as e:
        assert "num_heads" in str(e)
    else:
        raise AssertionError("num_heads 4 does not divide 6")

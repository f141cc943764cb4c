"""DIEN: PaddleRec's sample parsed exactly, the masked GRU / AUGRU against their formulas, padding invariance, the
auxiliary loss by hand, deterministic negatives, the auxiliary loss on and off, export over other lengths."""

from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import from_dict, load_config
from recstack.data import create_loader
from recstack.data.base import RaggedArray
from recstack.data.din import DINReader
from recstack.layers import AUGRU, MaskedGRU
from recstack.modules import load_module
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "models" / "rank" / "dien"
CONFIG = FOLDER / "config.yaml"
SAMPLE = "paddlerec/models/rank/dien/data/train_data/sample_data.txt"
FEEDS = ("hist_item", "hist_cat", "hist_len", "target_item", "target_cat")


def net_module():
    return load_module(FOLDER, "net")


# ---------------------------------------------------------------------------- reader
def test_dien_reader_parses_paddlerec_sample_exactly(shared_data):
    path = shared_data / SAMPLE
    reader = DINReader([str(path)], from_dict({"hyper_parameters": {"item_count": 63001, "cat_count": 801}}))
    rows = []
    for b in reader.iter_blocks():
        for i in range(len(b["label"])):
            rows.append((b["hist_item"][np.array([i])].values.tolist(), b["hist_cat"][np.array([i])].values.tolist(),
                         int(b["target_item"][i, 0]), int(b["target_cat"][i, 0]), float(b["label"][i, 0]),
                         int(b["user"][i, 0]), int(b["hist_len"][i, 0])))
        assert isinstance(b["hist_item"], RaggedArray)
    reference = []
    for line in path.read_text().splitlines():
        f = line.strip().split(";")
        assert len(f) == 5
        items, cats = [int(t) for t in f[0].split()], [int(t) for t in f[1].split()]
        reference.append((items, cats, int(f[2]), int(f[3]), float(f[4]), -1, len(items)))
    assert len(rows) == 100 and rows == reference
    assert rows[0][:5] == ([3737, 19450], [288, 196], 18486, 674, 1.0)  # its first line, by hand
    assert rows[1][:5] == ([3647, 4342, 6855, 3805], [281, 463, 558, 674], 4206, 463, 1.0)


# ---------------------------------------------------------------------------- layers
def gru_by_hand(gru, x, gates):
    """The paper's GRU step by step for one sequence: u'_t = g_t u_t, h_t = (1 - u'_t) h_{t-1} + u'_t h~_t."""
    w_ih, w_hh, b_ih, b_hh = (p.detach().double() for p in (gru.weight_ih, gru.weight_hh, gru.bias_ih, gru.bias_hh))
    hidden = gru.hidden_size
    h = torch.zeros(hidden, dtype=torch.float64)
    states = []
    sig = torch.sigmoid
    for t in range(x.shape[0]):
        xt = x[t].double()
        W = [w_ih[k * hidden:(k + 1) * hidden] for k in range(3)]
        U = [w_hh[k * hidden:(k + 1) * hidden] for k in range(3)]
        bi = [b_ih[k * hidden:(k + 1) * hidden] for k in range(3)]
        bh = [b_hh[k * hidden:(k + 1) * hidden] for k in range(3)]
        r = sig(W[0] @ xt + bi[0] + U[0] @ h + bh[0])
        u = sig(W[1] @ xt + bi[1] + U[1] @ h + bh[1])
        cand = torch.tanh(W[2] @ xt + bi[2] + r * (U[2] @ h + bh[2]))
        u = gates[t] * u
        h = (1 - u) * h + u * cand
        states.append(h)
    return torch.stack(states)


def test_augru_and_masked_gru_follow_the_formula_step_by_step():
    torch.manual_seed(0)
    augru = AUGRU(4, 3)
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    att = torch.rand(2, 5)
    states, last = augru(x, mask, att)
    for i in range(2):
        expected = gru_by_hand(augru, x[i], att[i] * mask[i])
        assert torch.allclose(states[i].double(), expected, atol=1e-6)
    assert torch.allclose(last[1], states[1, 2])  # the state after the last real step
    assert torch.equal(states[1, 3], states[1, 2]) and torch.equal(states[1, 4], states[1, 2])  # padding: unchanged
    # attention 1 everywhere is the masked GRU; the masked GRU with a full mask is a plain GRU (the paper's update)
    gru = MaskedGRU(4, 3)
    gru.load_state_dict(augru.state_dict())
    assert torch.allclose(gru(x, mask)[0], augru(x, mask, torch.ones(2, 5))[0])
    assert torch.allclose(gru(x, mask)[0][0].double(), gru_by_hand(gru, x[0], torch.ones(5)), atol=1e-6)
    # attention 0 at a step: the state does not move
    zero = att.clone()
    zero[0, 2] = 0
    s = augru(x, mask, zero)[0]
    assert torch.equal(s[0, 2], s[0, 1])
    # torch.nn.GRU is the same recurrence with z = 1 - u = sigmoid(-(...)): its update-gate rows negated
    ref = torch.nn.GRU(4, 3, batch_first=True)
    flip = torch.ones(9, 1)
    flip[3:6] = -1
    ref.load_state_dict({"weight_ih_l0": gru.weight_ih * flip, "weight_hh_l0": gru.weight_hh * flip,
                         "bias_ih_l0": gru.bias_ih * flip[:, 0], "bias_hh_l0": gru.bias_hh * flip[:, 0]})
    assert torch.allclose(ref(x[:1])[0], gru(x[:1], torch.ones(1, 5, dtype=torch.bool))[0], atol=1e-6)


def test_masked_gru_state_ignores_padding_and_empty_sequences_give_zero():
    torch.manual_seed(1)
    gru = MaskedGRU(3, 5)
    x = torch.randn(3, 4, 3)
    lengths = torch.tensor([4, 2, 0])
    mask = torch.arange(4) < lengths[:, None]
    _, last = gru(x, mask)
    for i, n in enumerate(lengths.tolist()):
        alone = gru(x[i:i + 1, :n], torch.ones(1, n, dtype=torch.bool))[1]
        assert torch.allclose(alone, last[i:i + 1], atol=1e-6)
    assert torch.equal(last[2], torch.zeros(5))
    states, last = gru(torch.zeros(2, 0, 3), torch.zeros(2, 0, dtype=torch.bool))  # an all-empty batch
    assert states.shape == (2, 0, 5) and torch.equal(last, torch.zeros(2, 5))


def small_dien(act="sigmoid", *extra):
    config = load_config(CONFIG, [f"hyper_parameters.act={act}", "hyper_parameters.item_emb_size=8",
                                  "hyper_parameters.cat_emb_size=4", "runner.bucket_by_length=False",
                                  "runner.infer_batch_size=64", *extra])
    torch.manual_seed(0)
    wrapper, model = build_model(config, torch.device("cpu"))
    return config, wrapper, model


@pytest.mark.parametrize("act", ["sigmoid", "dice"])
def test_padding_a_batch_further_leaves_each_prediction_unchanged(act):
    config, _, model = small_dien(act)
    batch = next(iter(create_loader(config, "infer")))
    inputs = [batch[k] for k in FEEDS]
    width = inputs[0].shape[1]
    assert (batch["hist_len"] < width).any()
    rng = torch.Generator().manual_seed(1)
    wider = [torch.cat([x, torch.randint(1, 500, (len(x), 23), generator=rng)], dim=1) for x in inputs[:2]]
    mask = torch.arange(width + 23) < batch["hist_len"]
    wider = [torch.where(mask, w, torch.randint(1, 500, w.shape, generator=rng)) for w in wider]
    for mode in ("eval", "train"):
        getattr(model, mode)()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            base = model(*inputs)
            model.load_state_dict(state)
            padded = model(wider[0], wider[1], *inputs[2:])
        assert torch.allclose(base, padded, atol=1e-6), (mode, (base - padded).abs().max())
    model.eval()
    with torch.no_grad():
        full = model(*inputs)
        for i in range(0, len(full), 41):
            n = int(batch["hist_len"][i])
            alone = model(inputs[0][i:i + 1, :n], inputs[1][i:i + 1, :n], *[x[i:i + 1] for x in inputs[2:]])
            assert torch.allclose(alone, full[i:i + 1], atol=1e-6)


# ---------------------------------------------------------------------------- auxiliary loss
def test_auxiliary_loss_matches_a_hand_computation():
    DIEN = net_module().DIEN
    torch.manual_seed(2)
    net = DIEN(item_count=10, cat_count=5, item_emb_size=2, cat_emb_size=1, aux_sizes=[3])
    states, pos, neg = torch.randn(2, 3, 3), torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss = net.auxiliary_loss(states, pos, neg, mask)
    # by hand: f(h, e) = w2 . sigmoid(W1 [h, e] + b1) + b2; pairs (h_t, e_{t+1}) with t + 1 real: 2 + 1
    W1, b1 = net.aux_net[0].weight, net.aux_net[0].bias
    W2, b2 = net.aux_net[-1].weight, net.aux_net[-1].bias
    f = lambda h, e: (W2 @ torch.sigmoid(W1 @ torch.cat([h, e]) + b1) + b2)[0]  # noqa: E731
    terms = [-torch.log(torch.sigmoid(f(states[i, t], pos[i, t + 1])))
             - torch.log(1 - torch.sigmoid(f(states[i, t], neg[i, t + 1])))
             for i, t in [(0, 0), (0, 1), (1, 0)]]
    assert torch.allclose(loss, torch.stack(terms).sum() / 3, atol=1e-6)
    # no sample with two behaviours: 0, still a graph
    empty = net.auxiliary_loss(states.requires_grad_(), pos, neg,
                               torch.tensor([[True, False, False], [False, False, False]]))
    assert empty.item() == 0 and empty.requires_grad


def test_negative_sampling_is_deterministic_and_avoids_the_positive():
    sample = net_module().sample_negatives
    items = torch.tensor([[5, 5, 7, 9, 0], [5, 11, 0, 0, 0], [9, 9, 9, 9, 9]])
    cats = items % 4 + 100  # every item has one category
    mask = torch.arange(5) < torch.tensor([[4], [2], [5]])
    runs = [sample(items, cats, mask, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))  # same seed, same draws
    other = sample(items, cats, mask, torch.Generator().manual_seed(4))
    assert not torch.equal(other[0], runs[0][0])
    neg_item, neg_cat = runs[0]
    assert torch.equal(neg_item[~mask], torch.zeros_like(neg_item[~mask]))  # padding: 0
    assert (neg_item[mask] != items[mask]).all()  # the pool always holds another item here
    assert torch.equal(neg_cat[mask], neg_item[mask] % 4 + 100)  # negatives keep their own category
    pool = set(items[mask].tolist())
    assert set(neg_item[mask].tolist()) <= pool
    # many draws: each other entry of the pool is reached, in proportion to its count
    big_items, big_cats = items.repeat(200, 1), cats.repeat(200, 1)
    big_mask = mask.repeat(200, 1)
    neg, _ = sample(big_items, big_cats, big_mask, torch.Generator().manual_seed(5))
    drawn = neg[big_mask & (big_items == 5)]
    assert set(drawn.tolist()) == {7, 9, 11}
    share9 = (drawn == 9).float().mean().item()  # 9 is 6 of the 8 non-5 entries per copy
    assert abs(share9 - 6 / 8) < 0.03
    # unavoidable: a pool of one item only
    single = torch.tensor([[4, 4, 4]])
    neg, cat = sample(single, single + 1, torch.ones(1, 3, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert torch.equal(neg, single) and torch.equal(cat, single + 1)
    # an empty batch
    neg, cat = sample(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long),
                      torch.zeros(2, 0, dtype=torch.bool), torch.Generator())
    assert neg.shape == (2, 0)


@pytest.mark.parametrize("extra, weight", [((), 1.0), (("hyper_parameters.aux_loss_weight=0.25",), 0.25),
                                           (("hyper_parameters.use_aux_loss=False",), 0.0),
                                           (("hyper_parameters.aux_loss_weight=0",), 0.0)])
def test_auxiliary_loss_on_and_off(extra, weight):
    config, wrapper, model = small_dien("sigmoid", *extra)
    assert wrapper.aux_loss_weight == weight
    batch = next(iter(create_loader(config, "train")))
    metrics, _ = wrapper.create_metrics()
    model.train()
    calls = []
    handle = model.register_forward_hook(lambda m, args, kwargs, out: calls.append(len(args)), with_kwargs=True)
    loss, _, print_dict = wrapper.train_forward(model, metrics, batch, config)
    handle.remove()
    if weight == 0:
        assert print_dict is None and calls == [5]  # DIN's feeds only, no negatives drawn
        assert model.aux_net is None  # no auxiliary net: every parameter gets a gradient (DDP)
        pred = model(*[batch[k] for k in FEEDS])
        assert torch.allclose(loss, torch.nn.functional.binary_cross_entropy(pred, batch["label"]))
    else:
        assert calls == [7] and print_dict["aux_loss"] > 0
        assert torch.allclose(loss, print_dict["ctr_loss"] + weight * print_dict["aux_loss"])
        loss.backward()
        assert model.aux_net[0].weight.grad.abs().sum() > 0
    # the same seed draws the same negatives: a fresh wrapper reproduces the loss
    config2, wrapper2, model2 = small_dien("sigmoid", *extra)
    loss2 = wrapper2.train_forward(model2.train(), wrapper2.create_metrics()[0], batch, config2)[0]
    assert torch.allclose(loss.detach(), loss2.detach())


def test_traced_dien_runs_on_other_history_lengths():
    config, _, model = small_dien("dice")
    model.eval()
    loader = iter(create_loader(config, "infer"))
    first, second = next(loader), next(loader)
    example = [first[k] for k in FEEDS]
    traced = torch.jit.trace(model, tuple(example), check_trace=False)
    with torch.no_grad():
        for batch in (second, {k: v[:3, :1] if k in ("hist_item", "hist_cat") else v[:3] for k, v in first.items()}):
            inputs = [batch[k] for k in FEEDS]
            inputs[2] = inputs[2].clamp(max=inputs[0].shape[1])
            assert inputs[0].shape[1] != example[0].shape[1]
            assert torch.allclose(traced(*inputs), model(*inputs), atol=1e-6)

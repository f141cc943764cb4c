"""The retrieval core against references: whole-corpus positions and top-K against a brute-force sort (ties
included), the four metrics against their definitions, each loss against a hand computation (log-Q included),
the streaming frequency estimate, the negative sampler, and capsule routing against its loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recstack.layers.capsule import CapsuleRouting, squash
from recstack.metrics import MRR, NDCG, HitRate, Recall, retrieval_metrics
from recstack.retrieval.losses import (
    FrequencyEstimator,
    NegativeSampler,
    bce_loss,
    in_batch_loss,
    sampled_softmax_loss,
    softmax_loss,
)
from recstack.retrieval.ranking import Scorer, target_positions, top_k


def dot_scorer(items: torch.Tensor) -> Scorer:
    return Scorer(rows=lambda u, a, b: u @ items[a:b].T, pairs=lambda u, rows: (u.unsqueeze(1) * items[rows]).sum(-1),
                  num_items=len(items))


def brute_ranking(user: np.ndarray, items: np.ndarray, exclude: set[int], keep: set[int]) -> list[int]:
    """Rows by score descending, ties by the smaller row; excluded rows dropped unless kept."""
    scores = items @ user
    rows = [r for r in range(len(items)) if r not in exclude or r in keep]
    return sorted(rows, key=lambda r: (-scores[r], r))


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    items = rng.integers(-2, 3, size=(37, 3)).astype(np.float32)  # small integers: exact scores, many ties
    users = rng.integers(-2, 3, size=(6, 3)).astype(np.float32)
    targets = np.array([[3, 10], [0, -1], [36, 5], [7, -1], [12, 12 + 1], [20, -1]])
    exclude = np.array([[1, 2, 3, -1], [4, -1, -1, -1], [-1, -1, -1, -1], [7, 8, 9, 30], [0, 12, -1, -1],
                        [2, 2, 19, -1]])
    return torch.from_numpy(items), torch.from_numpy(users), torch.from_numpy(targets), torch.from_numpy(exclude)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_positions_and_top_k_match_a_brute_force_sort(case, chunk):
    items, users, targets, exclude = case
    positions = target_positions(dot_scorer(items), users, targets, exclude, chunk=chunk)
    scores, rows = top_k(dot_scorer(items), users, 8, exclude, chunk=chunk)
    for b in range(len(users)):
        keep = {int(t) for t in targets[b] if t >= 0}
        ranking = brute_ranking(users[b].numpy(), items.numpy(), {int(e) for e in exclude[b] if e >= 0}, keep)
        for t, pos in zip(targets[b].tolist(), positions[b].tolist()):
            assert pos == (ranking.index(t) if t >= 0 else -1), (b, t)
        # top-K excludes seen items, targets included (targets are not known when serving)
        plain = brute_ranking(users[b].numpy(), items.numpy(), {int(e) for e in exclude[b] if e >= 0}, set())
        assert rows[b].tolist() == plain[:8]
        assert torch.equal(scores[b], (items[plain[:8]] @ users[b]))


def test_top_k_pads_past_the_unmasked_items():
    items = torch.eye(3)
    scores, rows = top_k(dot_scorer(items), torch.ones(1, 3), 5, torch.tensor([[1, -1]]))
    assert rows.tolist() == [[0, 2, -1, -1, -1]] and torch.isinf(scores[0, 2:]).all()


def test_metrics_follow_their_definitions():
    positions = torch.tensor([[0, 7], [3, -1], [12, 40], [-1, -1], [9, 2]])
    k = 10
    expected = {"hit": [1, 1, 0, 1], "recall": [1, 1, 0, 1],
                "ndcg": [(1 + 1 / math.log2(9)) / (1 + 1 / math.log2(3)), 1 / math.log2(5), 0,
                         (1 / math.log2(11) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))],
                "mrr": [1, 1 / 4, 1 / 13, 1 / 3]}  # the row without targets is skipped
    for metric, key in ((HitRate(k), "hit"), (Recall(k), "recall"), (NDCG(k), "ndcg"), (MRR(), "mrr")):
        # row 0: both targets in the top 10; row 2: none; row 4: both (positions 9 and 2)
        metric.update(positions[:2])
        metric.update(positions[2:])  # streaming: two batches
        assert metric.compute() == pytest.approx(np.mean(expected[key]), abs=1e-12), key
    partial = Recall(5)
    partial.update(torch.tensor([[0, 7], [9, 2]]))     # one of two targets in the top 5, each row
    assert partial.compute() == 0.5
    metrics, names = retrieval_metrics([10, 50])
    assert names == ["hit_rate@10", "recall@10", "ndcg@10", "hit_rate@50", "recall@50", "ndcg@50", "mrr"]
    assert math.isnan(metrics[0].compute()) and metrics[0].undefined_reason()


# ------------------------------------------------------------------------------------------------- losses
def test_in_batch_loss_with_log_q_and_a_repeated_item():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.3, 1.5, 0.2], [0.1, 0.4, 3.0]])
    rows = torch.tensor([7, 9, 7])          # rows 0 and 2 hold the same item: each other's copy is masked
    log_q = torch.tensor([-1.0, -2.0, -1.0])
    got = in_batch_loss(logits, rows, log_q)
    z = logits - log_q
    terms = [-(z[0, 0] - torch.logsumexp(z[0, [0, 1]], 0)),
             -(z[1, 1] - torch.logsumexp(z[1], 0)),
             -(z[2, 2] - torch.logsumexp(z[2, [1, 2]], 0))]
    assert got.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)
    assert in_batch_loss(logits, torch.tensor([1, 2, 3]), None).item() == pytest.approx(
        F.cross_entropy(logits, torch.arange(3)).item(), rel=1e-6)


def test_sampled_softmax_with_log_q_and_an_accidental_hit():
    pos = torch.tensor([1.0, 0.5])
    neg = torch.tensor([[0.2, 2.0, -1.0], [0.0, 0.1, 0.3]])
    log_q = torch.log(torch.tensor([0.1, 0.5, 0.2]) * 3)
    accidental = torch.tensor([[False, True, False], [False, False, False]])
    got = sampled_softmax_loss(pos, neg, log_q, accidental)
    z0 = torch.stack([pos[0], neg[0, 0] - log_q[0], neg[0, 2] - log_q[2]])
    z1 = torch.cat([pos[1:], neg[1] - log_q])
    want = (-(z0[0] - torch.logsumexp(z0, 0)) - (z1[0] - torch.logsumexp(z1, 0))) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_bce_and_full_softmax():
    pos, neg = torch.tensor([2.0]), torch.tensor([[-1.0, 0.5]])
    want = -(math.log(torch.sigmoid(pos).item()) + math.log(1 - torch.sigmoid(neg[0, 0]).item())
             + math.log(1 - torch.sigmoid(neg[0, 1]).item())) / 3
    assert bce_loss(pos, neg).item() == pytest.approx(want, rel=1e-6)
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    assert softmax_loss(logits, torch.tensor([1])).item() == pytest.approx(
        -(1.0 - math.log(1 + math.e + math.e ** 2)), rel=1e-6)


def test_frequency_estimator_learns_the_gap():
    est = FrequencyEstimator(4, alpha=0.5)
    for step in range(200):
        est.update(torch.tensor([0] if step % 2 == 0 else [1, 1]))   # item 0 every 2 steps, 1 every 2, 2 never
    q = est.log_q(torch.tensor([0, 1, 2])).exp()
    assert q[0].item() == pytest.approx(0.5, abs=1e-3) and q[1].item() == pytest.approx(0.5, abs=1e-3)
    assert q[2].item() == pytest.approx(0.25)   # unseen: 1 / num_items


def test_negative_sampler_draws_by_popularity():
    sampler = NegativeSampler(3, "popularity", power=1.0, seed=3)
    sampler.observe(torch.tensor([0] * 7 + [1] * 1))         # counts + 1: 8, 2, 1
    p = sampler.probabilities()
    assert p.tolist() == pytest.approx([8 / 11, 2 / 11, 1 / 11])
    rows, log_q = sampler.sample((20000,), torch.device("cpu"))
    share = torch.bincount(rows, minlength=3).double() / 20000
    assert share.tolist() == pytest.approx(p.tolist(), abs=0.02)
    assert torch.allclose(log_q, torch.log(p[rows] * 20000).float())
    uniform = NegativeSampler(5, "uniform", seed=1)
    rows, log_q = uniform.sample((4, 2), torch.device("cpu"))
    assert rows.shape == (4, 2) and torch.allclose(log_q, torch.full((4, 2), math.log(2 / 5)))


# ------------------------------------------------------------------------------------------------- capsules
def test_capsule_routing_follows_its_loop():
    torch.manual_seed(0)
    layer = CapsuleRouting(3, 4, num_capsules=2, max_len=5, iterations=3, seed=1)
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    out = layer(x, mask)
    for b in range(2):
        n = int(mask[b].sum())
        u = x[b, :n] @ layer.bilinear.weight.T                       # (n, D)
        logits = layer.initial[:, :n].clone()                        # (K, n)
        for _ in range(3):
            w = torch.softmax(logits, 0)
            caps = squash(w @ u)
            logits = logits + caps @ u.T
        assert torch.allclose(out[b], caps, atol=1e-6)
    # padding does not matter: the same rows with other padded values give the same capsules
    noisy = x.clone()
    noisy[~mask] = 100.0
    assert torch.allclose(layer(noisy, mask), out, atol=1e-6)
    assert torch.equal(layer(x, torch.zeros_like(mask)), torch.zeros(2, 2, 4))

"""DIEN: Deep Interest Evolution Network for Click-Through Rate Prediction.

Zhou, Mou, Fan, Pi, Bian, Zhou, Zhu, Gai. AAAI 2019. https://arxiv.org/abs/1809.03672

A user's behaviours ``e_1 .. e_L`` (item and category embeddings, concatenated, ``D`` wide, as DIN's) and the
candidate ``v_A``:

``h_1 .. h_L = GRU(e_1 .. e_L)``                                 interest extractor (masked GRU, ``H = D``)

``L_aux = -1/N sum_{i, t < len_i} [log sigmoid(f(h_t, e_{t+1})) + log(1 - sigmoid(f(h_t, ê_{t+1})))]``
(auxiliary loss, training only: ``ê`` a sampled negative behaviour, ``f`` a small MLP on ``[h_t, e]``,
``N`` the number of pairs),

``a_t = softmax_t(MLP_att([v_A, h_t, v_A - h_t, v_A * h_t]) / sqrt(D))`` over the real positions,

``h'_t = AUGRU(h_t, a_t)``: ``u'_t = a_t u_t``, ``h'_t = (1 - u'_t) h'_{t-1} + u'_t h~'_t``   interest evolving,

``s = sum_t e_t``, ``y = sigmoid(MLP([h'_L, v_A, h'_L * v_A, s, v_A * s]) + b_item(A))``.

Histories have any length: padded positions never change a recurrent state, get attention 0 and are left out of
the pooling and of the auxiliary loss, so a prediction does not depend on the batch's padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recstack.layers import AUGRU, MLP, DINAttention, MaskedGRU, lengths_to_mask, make_embedding, masked_pool


class DIEN(nn.Module):
    """Deep Interest Evolution Network over item / category behaviour histories.

    One item and one category table serve history, candidate and negatives (as DIN here). The interest extractor
    and the evolving layer have ``H = D`` units (the attention compares the candidate with the extractor's
    states). The output MLP reads ``[h'_L, v_A, h'_L * v_A, s, v_A * s]`` (``s`` the sum of the history's
    embeddings), as the authors' ``Model_DIN_V2_Gru_Vec_attGru_Neg``.

    Initialisation: tables truncated normal with std ``init_std``; the per-item bias 0; the GRUs uniform in
    ``±1/sqrt(H)`` (``torch.nn.GRU``'s); every Linear N(0, 1/sqrt(fan_in)) with zero bias (PaddleRec's DIN).

    Args:
        item_count: rows of the item table.
        cat_count: rows of the category table.
        item_emb_size: item embedding width.
        cat_emb_size: category embedding width; ``D = item_emb_size + cat_emb_size``.
        act: hidden activation of the attention unit and of the output MLP (``sigmoid``, ``dice``, ...).
        fc_sizes: hidden widths of the output MLP.
        attention_sizes: hidden widths of the attention unit.
        aux_sizes: hidden widths of the auxiliary net ``f`` (sigmoid activations, as the authors').
        auxiliary: build ``f`` (``False``: no auxiliary net and no ``aux_net.*`` weights; training without the
            auxiliary loss then leaves no parameter without a gradient, which DDP requires).
        init_std: std of the embedding tables.

    Shapes:
        hist_item, hist_cat ``(B, L)`` int64 (padded), hist_len ``(B, 1)`` int64, target_item, target_cat
        ``(B, 1)`` int64 → probability ``(B, 1)``. With ``neg_item``, ``neg_cat`` ``(B, L)`` (a negative per
        history position; position 0 unused) and ``return_extras=True``: ``(probability, {"aux_loss": ()})``.
    """

    def __init__(self, item_count: int, cat_count: int, item_emb_size: int = 64, cat_emb_size: int = 64,
                 act: str = "sigmoid", fc_sizes: Sequence[int] = (80, 40), attention_sizes: Sequence[int] = (80, 40),
                 aux_sizes: Sequence[int] = (100, 50), auxiliary: bool = True, init_std: float = 0.3) -> None:
        super().__init__()
        self.item_embedding = make_embedding(item_count, item_emb_size, init_std)
        self.cat_embedding = make_embedding(cat_count, cat_emb_size, init_std)
        self.item_bias = nn.Embedding(item_count, 1, _weight=torch.zeros(item_count, 1))
        dim = item_emb_size + cat_emb_size
        self.extractor = MaskedGRU(dim, dim)
        self.attention = DINAttention(dim, attention_sizes, act, softmax=True)
        self.evolution = AUGRU(dim, dim)
        self.mlp = MLP(5 * dim, fc_sizes, output_dim=1, activation=act, init="normal")
        # built last: without it the other parameters start the same (use_aux_loss on/off compare like with like)
        self.aux_net = MLP(2 * dim, aux_sizes, output_dim=1, activation="sigmoid", init="normal") if auxiliary else None

    def embed(self, items: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        """Item and category embeddings, concatenated: ``(...)`` → ``(..., D)``."""
        return torch.cat([self.item_embedding(items), self.cat_embedding(cats)], dim=-1)

    def auxiliary_loss(self, states: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy of ``f(h_t, e_{t+1})`` (label 1) and ``f(h_t, ê_{t+1})`` (label 0) over
        the pairs whose ``t + 1`` is a real position.

        Args:
            states: extractor states ``(B, L, D)``.
            positives: the history's embeddings ``(B, L, D)``.
            negatives: the negatives' embeddings ``(B, L, D)`` (position 0 unused).
            mask: real positions ``(B, L)``.

        Returns:
            A scalar; 0 when no sample has two behaviours.
        """
        if self.aux_net is None:
            raise RuntimeError("DIEN was built with auxiliary=False: it has no auxiliary net")
        valid = mask[:, 1:]
        h = states[:, :-1][valid]  # (N, D)
        if h.shape[0] == 0:  # 0, connected to every parameter it would have used (DDP expects their gradients)
            return (states.sum() + positives.sum() + negatives.sum()
                    + sum(p.sum() for p in self.aux_net.parameters())) * 0.0
        pos = self.aux_net(torch.cat([h, positives[:, 1:][valid]], dim=-1))
        neg = self.aux_net(torch.cat([h, negatives[:, 1:][valid]], dim=-1))
        total = (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
                 + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="sum"))
        return total / h.shape[0]

    def forward(self, hist_item: torch.Tensor, hist_cat: torch.Tensor, hist_len: torch.Tensor,
                target_item: torch.Tensor, target_cat: torch.Tensor, neg_item: torch.Tensor | None = None,
                neg_cat: torch.Tensor | None = None, return_extras: bool = False):
        mask = lengths_to_mask(hist_len, hist_item.shape[1])  # (B, L)
        history = self.embed(hist_item, hist_cat)  # (B, L, D)
        target = self.embed(target_item.reshape(-1), target_cat.reshape(-1))  # (B, D)
        states, _ = self.extractor(history, mask)  # (B, L, D)
        attention = self.attention.weights(target, states, mask)  # (B, L), 0 at padding
        _, interest = self.evolution(states, mask, attention)  # (B, D)
        pooled = masked_pool(history, mask, "sum")  # (B, D)
        features = torch.cat([interest, target, interest * target, pooled, target * pooled], dim=-1)
        pred = torch.sigmoid(self.mlp(features) + self.item_bias(target_item.reshape(-1)))
        if not return_extras:
            return pred
        extras = {}
        if neg_item is not None and neg_cat is not None:
            extras["aux_loss"] = self.auxiliary_loss(states, history, self.embed(neg_item, neg_cat), mask)
        return pred, extras


def sample_negatives(hist_item: torch.Tensor, hist_cat: torch.Tensor, mask: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A negative behaviour (item and its category) for every real history position, drawn from the batch.

    The pool is the batch's real behaviours, each ``(item, category)`` pair as often as it occurs (PaddleRec's
    DIEN reader draws from a buffer of recently read history items the same way; the authors draw from all
    items). For a position with item ``i`` the draw is uniform over the pool's entries whose item is not ``i``, so a
    negative equals its positive only when the pool holds no other item. Deterministic for a generator's state;
    runs on the CPU (the generator's device) and returns tensors on the inputs' device.

    Args:
        hist_item, hist_cat: ``(B, L)`` int64 histories (padded).
        mask: ``(B, L)`` bool, the real positions.
        generator: a CPU ``torch.Generator``.

    Returns:
        ``neg_item``, ``neg_cat`` ``(B, L)`` int64, 0 at padded positions.
    """
    device = hist_item.device
    items, cats, mask = hist_item.cpu(), hist_cat.cpu(), mask.cpu()
    neg_item, neg_cat = torch.zeros_like(items), torch.zeros_like(cats)
    pool_items, pool_cats = items[mask], cats[mask]
    size = pool_items.numel()
    if size == 0:
        return neg_item.to(device), neg_cat.to(device)
    sorted_items, order = torch.sort(pool_items, stable=True)
    positives = items[mask]
    first = torch.searchsorted(sorted_items, positives, right=False)  # the block of entries equal to the positive
    count = torch.searchsorted(sorted_items, positives, right=True) - first
    others = size - count
    unavoidable = others == 0  # the pool holds only this item: any entry
    count = torch.where(unavoidable, torch.zeros_like(count), count)
    others = torch.where(unavoidable, torch.full_like(others, size), others)
    draw = torch.rand(positives.shape, generator=generator, dtype=torch.float64)
    rank = torch.minimum((draw * others).long(), others - 1)  # uniform in [0, others)
    index = torch.where(rank < first, rank, rank + count)  # skip the positive's block
    neg_item[mask] = sorted_items[index]
    neg_cat[mask] = pool_cats[order[index]]
    return neg_item.to(device), neg_cat.to(device)

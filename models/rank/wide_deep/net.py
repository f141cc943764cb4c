"""Wide & Deep Learning for Recommender Systems.

Cheng, Koc, Harmsen, Shaked, Chandra, Aradhye, Anderson, Corrado, Chai, Ispir, Anil, Haque, Hong, Jain,
Liu, Shah. DLRS 2016. https://arxiv.org/abs/1606.07792

``y = sigmoid(w_wide^T [x_dense, 1] + MLP([e_1, ..., e_S, x_dense]))``: a linear (wide) model over the
dense values and a deep MLP over the sparse embeddings concatenated with the dense values, trained jointly
(as in PaddleRec's wide_deep; the paper's wide part also takes cross-product features of sparse ids).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from recstack.layers import MLP, make_embedding
from recstack.layers.init import truncated_normal_


class WideDeep(nn.Module):
    """Wide & Deep over ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values.

    Wide part: ``Linear(Dn, 1)`` over the dense values (PaddleRec's wide part). Deep part:
    ``MLP(S * D + Dn → fc_sizes → 1)`` over the flattened sparse embeddings and the raw dense values.

    Initialisation: the id table truncated normal with std ``0.1 / sqrt(sparse_feature_dim)`` (the
    zoo's table init; PaddleRec draws it from U(-1, 1)), the wide weights truncated normal with std
    ``1 / sqrt(Dn)`` and bias 0 (as PaddleRec), MLP weights N(0, 1/sqrt(fan_in)) and biases 0 (as
    PaddleRec).

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: embedding size ``D``.
        dense_feature_dim: number of dense values ``Dn``.
        num_sparse_fields: number of sparse slots ``S``.
        fc_sizes: hidden layer widths of the deep part.

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int,
                 num_sparse_fields: int, fc_sizes: Sequence[int]) -> None:
        super().__init__()
        self.embedding = make_embedding(sparse_feature_number, sparse_feature_dim,
                                        0.1 / math.sqrt(sparse_feature_dim))
        self.wide = nn.Linear(dense_feature_dim, 1)
        truncated_normal_(self.wide.weight.data, 1.0 / math.sqrt(dense_feature_dim))
        nn.init.zeros_(self.wide.bias)
        deep_input = num_sparse_fields * sparse_feature_dim + dense_feature_dim
        self.deep = MLP(deep_input, fc_sizes, output_dim=1, init="normal")

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        deep_input = torch.cat([self.embedding(sparse).flatten(1), dense], dim=1)  # (B, S * D + Dn)
        return torch.sigmoid(self.wide(dense) + self.deep(deep_input))

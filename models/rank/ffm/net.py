"""Field-aware Factorization Machines for CTR Prediction.

Yuchin Juan, Yong Zhuang, Wei-Sheng Chin, Chih-Jen Lin. RecSys 2016.
https://doi.org/10.1145/2959100.2959134

``y = sigmoid(b + sum_i w_i x_i + sum_{i<j} <v_{i,f_j}, v_{j,f_i}> x_i x_j)``: each feature has
one factor vector per field it meets. Fields: the 26 sparse slots (x = 1) and the 13 dense
values (as in PaddleRec's FFM, dense field i is ``x_i * v_i``), ``F = 39``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recstack.layers import FieldAwareInteraction, FieldEmbedding


class FFM(nn.Module):
    """FFM over ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values, ``F = S + Dn`` fields.

    Each id's row holds its first-order weight (column 0, as in DeepFM's net: one lookup
    and one row-wise update per batch) and ``F`` factor vectors of size ``D``, one towards
    each field: the row is ``1 + F * D`` wide, reshaped to ``(F, D)`` per field.

    Initialisation: table and dense field vectors truncated normal with std
    ``0.1 / sqrt(sparse_feature_dim)`` (PaddleRec's table init; PaddleRec sets the dense
    weights and vectors to 1.0, which saturates the sigmoid at the start), bias 0.

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: factor size ``D``.
        dense_feature_dim: number of dense values ``Dn``.
        num_sparse_fields: number of sparse slots ``S``.

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int,
                 num_sparse_fields: int) -> None:
        super().__init__()
        self.num_fields = num_sparse_fields + dense_feature_dim
        self.embedding_dim = sparse_feature_dim
        std = 0.1 / math.sqrt(sparse_feature_dim)
        # column 0: first-order weight w_i; columns 1..F*D: v_{i,f} for f = 0..F-1
        self.embedding = FieldEmbedding(sparse_feature_number, 1 + self.num_fields * sparse_feature_dim,
                                        dense_feature_dim, init_std=std)
        self.ffm = FieldAwareInteraction(self.num_fields)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        weights, vectors = self.embedding(sparse, dense).split(
            [1, self.num_fields * self.embedding_dim], dim=2)                     # (B, F, 1), (B, F, F*D)
        fields = vectors.reshape(-1, self.num_fields, self.num_fields, self.embedding_dim)  # (B, F, F, D)
        logit = self.bias + weights.sum(dim=1) + self.ffm(fields)                  # (B, 1)
        return torch.sigmoid(logit)

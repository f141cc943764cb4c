"""Factorization Machines.

Steffen Rendle. ICDM 2010. https://doi.org/10.1109/ICDM.2010.127

``y = sigmoid(b + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j)``: a first-order weight and a
factor vector per feature, over the 26 sparse slots (x = 1) and the 13 dense values (as in
PaddleRec's FM, dense field i is ``x_i * v_i``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recstack.layers import FactorizationMachine, FieldEmbedding


class FM(nn.Module):
    """FM over ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values.

    One table of width ``1 + D`` holds each id's first-order weight (column 0) and its
    factor vector, as DeepFM's net: one lookup and one row-wise update per batch.

    Initialisation: table and dense field vectors truncated normal with std
    ``0.1 / sqrt(sparse_feature_dim)`` (PaddleRec's table init; PaddleRec sets the dense
    weights and vectors to 1.0, which saturates the sigmoid at the start), bias 0.

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: factor size ``D``.
        dense_feature_dim: number of dense values ``Dn``.

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int) -> None:
        super().__init__()
        std = 0.1 / math.sqrt(sparse_feature_dim)
        # column 0: first-order weight w_i; columns 1..D: factor vector v_i
        self.embedding = FieldEmbedding(sparse_feature_number, 1 + sparse_feature_dim, dense_feature_dim, init_std=std)
        self.embedding_dim = sparse_feature_dim
        self.fm = FactorizationMachine()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        weights, fields = self.embedding(sparse, dense).split([1, self.embedding_dim], dim=2)  # (B, F, 1), (B, F, D)
        logit = self.bias + weights.sum(dim=1) + self.fm(fields)                               # (B, 1)
        return torch.sigmoid(logit)

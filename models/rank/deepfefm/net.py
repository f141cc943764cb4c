"""DeepFEFM: Field-Embedded Factorization Machines for Click-through rate prediction.

Pande. arXiv 2020. https://arxiv.org/abs/2009.09931

``y = sigmoid(sum_i w_i + sum_{i<j} v_i^T W_{f_i f_j} v_j + MLP([v_1, ..., v_F, s_12, ..., s_{F-1,F}]))``:
first-order weights, FEFM's field-pair interactions (one symmetric ``D x D`` matrix per
field pair, scores ``s_ij``) and a DNN over the field embeddings and the pair scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, FieldEmbeddedInteraction, FieldEmbedding


class DeepFEFM(nn.Module):
    """DeepFEFM over ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values.

    Dense values are fields too (``x_i * v_i``, as ``FieldEmbedding`` makes them), so there
    are ``F = S + Dn`` fields and ``F (F - 1) / 2`` pair scores. As DeepFM here, one table of
    width ``1 + D`` holds each id's first-order weight (column 0) and its vector.

    Initialisation: table, dense field vectors and field-pair matrices truncated normal
    with std ``0.1 / sqrt(D)`` (PaddleRec's init for all three); MLP weights
    N(0, 1/sqrt(fan_in)) as PaddleRec.

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: embedding size ``D``.
        dense_feature_dim: number of dense values ``Dn``.
        num_sparse_fields: number of sparse slots ``S``.
        fc_sizes: hidden layer widths of the DNN.
        dropout: dropout after each hidden layer of the DNN (PaddleRec: 0.2).

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int,
                 num_sparse_fields: int, fc_sizes: Sequence[int], dropout: float = 0.2) -> None:
        super().__init__()
        std = 0.1 / math.sqrt(sparse_feature_dim)
        num_fields = num_sparse_fields + dense_feature_dim
        self.embedding = FieldEmbedding(sparse_feature_number, 1 + sparse_feature_dim, dense_feature_dim,
                                        init_std=std)
        self.embedding_dim = sparse_feature_dim
        self.fefm = FieldEmbeddedInteraction(num_fields, sparse_feature_dim, init_std=std)
        num_pairs = num_fields * (num_fields - 1) // 2
        self.dnn = MLP(num_fields * sparse_feature_dim + num_pairs, fc_sizes, output_dim=1, dropout=dropout,
                       init="normal")

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        weights, fields = self.embedding(sparse, dense).split([1, self.embedding_dim], dim=2)
        pairs = self.fefm(fields)                                   # (B, F (F - 1) / 2)
        deep = self.dnn(torch.cat([fields.flatten(1), pairs], dim=1))
        logit = weights.sum(dim=1) + pairs.sum(dim=1, keepdim=True) + deep
        return torch.sigmoid(logit)

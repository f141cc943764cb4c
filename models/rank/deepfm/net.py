"""DeepFM: A Factorization-Machine based Neural Network for CTR Prediction.

Guo, Tang, Ye, Li, He. IJCAI 2017. https://arxiv.org/abs/1703.04247

``y = sigmoid(y_first_order + y_FM + y_DNN)``: first-order weights of every
field, FM's pairwise interactions ``sum_{i<j} <v_i, v_j>`` of the field
embeddings, and an MLP over the same embeddings (shared, no pre-training).
Dense features are fields too: ``x_i * v_i`` (as in PaddleRec's DeepFM).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from recstack.layers import MLP, FactorizationMachine, FieldEmbedding


class DeepFM(nn.Module):
    """DeepFM over ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values.

    Initialisation: tables and dense field vectors truncated normal with std
    ``0.1 / sqrt(sparse_feature_dim)`` (PaddleRec's table init; PaddleRec sets
    the dense vectors to 1.0, which saturates the output at the start), MLP
    weights N(0, 1/sqrt(fan_in)) as PaddleRec.

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
        std = 0.1 / math.sqrt(sparse_feature_dim)
        self.first_order = FieldEmbedding(sparse_feature_number, 1, dense_feature_dim, init_std=std)
        self.embedding = FieldEmbedding(sparse_feature_number, sparse_feature_dim, dense_feature_dim, init_std=std)
        self.fm = FactorizationMachine()
        num_fields = num_sparse_fields + dense_feature_dim
        self.dnn = MLP(num_fields * sparse_feature_dim, fc_sizes, output_dim=1, init="normal")

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        fields = self.embedding(sparse, dense)
        logit = self.first_order(sparse, dense).sum(dim=1) + self.fm(fields) + self.dnn(fields.flatten(1))
        return torch.sigmoid(logit)

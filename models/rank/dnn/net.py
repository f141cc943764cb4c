"""A plain deep neural network for CTR prediction (PaddleRec's ``dnn`` rank model).

The embedding + MLP baseline of deep CTR models; e.g. Covington, Adams, Sargin, "Deep Neural
Networks for YouTube Recommendations", RecSys 2016. https://doi.org/10.1145/2959100.2959190

``y = sigmoid(MLP([e_1, ..., e_S, x_dense]))``: the embeddings of the 26 sparse slots
concatenated with the 13 raw dense values, through ReLU layers ``fc_sizes`` to one logit.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from recstack.layers import MLP, make_embedding


class DNN(nn.Module):
    """Embeddings of ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values → MLP.

    Initialisation: table truncated normal with std ``0.1 / sqrt(sparse_feature_dim)``
    (PaddleRec draws it from U(-1, 1), far larger than the dense values in [0, 1]), MLP
    weights N(0, 1/sqrt(fan_in)) and biases 0 as PaddleRec. PaddleRec's last layer has two
    outputs and a softmax; one logit and a sigmoid is the same model.

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: embedding size ``D``.
        dense_feature_dim: number of dense values ``Dn``.
        num_sparse_fields: number of sparse slots ``S``.
        fc_sizes: hidden layer widths.

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int,
                 num_sparse_fields: int, fc_sizes: Sequence[int]) -> None:
        super().__init__()
        self.embedding = make_embedding(sparse_feature_number, sparse_feature_dim, 0.1 / math.sqrt(sparse_feature_dim))
        self.mlp = MLP(num_sparse_fields * sparse_feature_dim + dense_feature_dim, fc_sizes, output_dim=1,
                       init="normal")

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embeddings = self.embedding(sparse).flatten(1)                     # (B, S, D) -> (B, S * D)
        logit = self.mlp(torch.cat([embeddings, dense], dim=1))           # (B, 1)
        return torch.sigmoid(logit)

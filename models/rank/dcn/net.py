"""Deep & Cross Network for Ad Click Predictions.

Wang, Fu, Fu, Wang. ADKDD 2017. https://arxiv.org/abs/1708.05123

``x_0 = [e_1, ..., e_S, x_dense]``; cross layers ``x_{l+1} = x_0 (x_l^T w_l) + b_l + x_l`` and an MLP
run in parallel on ``x_0``; ``y = sigmoid(w^T [x_L, h_K] + b)`` over their concatenated outputs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from recstack.layers import MLP, CrossNet, make_embedding
from recstack.layers.init import init_linear


class DCN(nn.Module):
    """Deep & Cross Network over ``S`` sparse slots (one shared hashed-id table) and ``Dn`` dense values.

    ``x_0`` is the flattened sparse embeddings followed by the raw dense values (width
    ``S * D + Dn``), as in the paper and PaddleRec. The cross network keeps that width; the deep
    part is ``MLP(S * D + Dn → fc_sizes)`` with ReLU (and BatchNorm with ``dnn_use_bn``).

    Initialisation: the id table truncated normal with std ``0.1 / sqrt(sparse_feature_dim)``
    (PaddleRec's), cross weights truncated normal with std ``1 / sqrt(S * D + Dn)`` and biases 0
    (``recstack.layers.CrossNet``), MLP and output weights N(0, 1/sqrt(fan_in)) and biases 0 (as
    PaddleRec).

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: embedding size ``D``.
        dense_feature_dim: number of dense values ``Dn``.
        num_sparse_fields: number of sparse slots ``S``.
        fc_sizes: hidden layer widths of the deep part.
        cross_num: number of cross layers.
        dnn_use_bn: BatchNorm after each hidden Linear of the deep part.

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int,
                 num_sparse_fields: int, fc_sizes: Sequence[int], cross_num: int, dnn_use_bn: bool = False) -> None:
        super().__init__()
        self.embedding = make_embedding(sparse_feature_number, sparse_feature_dim,
                                        0.1 / math.sqrt(sparse_feature_dim))
        input_dim = num_sparse_fields * sparse_feature_dim + dense_feature_dim
        self.cross = CrossNet(input_dim, cross_num)
        self.dnn = MLP(input_dim, fc_sizes, batch_norm=dnn_use_bn, init="normal")
        self.output = init_linear(nn.Linear(input_dim + self.dnn.output_dim, 1), "normal")

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([self.embedding(sparse).flatten(1), dense], dim=1)  # (B, S * D + Dn)
        logit = self.output(torch.cat([self.cross(x0), self.dnn(x0)], dim=1))
        return torch.sigmoid(logit)

"""GateNet: Gating-Enhanced Deep Network for Click-Through Rate Prediction.

Huang, She, Wang, Zhang. arXiv 2020. https://arxiv.org/abs/2007.03519

A DNN over the field embeddings with two optional gates: an embedding gate per field,
``e_i' = e_i * sigmoid(w_i^T e_i)`` (field-private, vector-wise: one scalar per field),
and a gate after every hidden layer, ``h' = h * sigmoid(W h)``;
``y = sigmoid(MLP([e_1', ..., e_S', dense]))``. With both gates off it is PaddleRec's DNN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, EmbeddingGate, make_embedding


class GateNet(nn.Module):
    """GateNet (PaddleRec's "GateDNN") over ``S`` sparse slots and ``Dn`` dense values.

    As PaddleRec: the sparse slots share one table and pass the embedding gate; the dense
    values join the MLP input as they are (not embedded, not gated).

    Initialisation: table truncated normal with std ``0.1 / sqrt(D)`` (PaddleRec draws
    U(-1, 1)); MLP weights N(0, 1/sqrt(fan_in)) as PaddleRec; gate weights Xavier uniform
    (``EmbeddingGate``, ``HiddenGate``).

    Args:
        sparse_feature_number: rows of the id table.
        sparse_feature_dim: embedding size ``D``.
        dense_feature_dim: number of dense values ``Dn``.
        num_sparse_fields: number of sparse slots ``S``.
        fc_sizes: hidden layer widths.
        use_embedding_gate: gate each sparse field's embedding (vector-wise).
        use_hidden_gate: gate each hidden layer's output.

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, dense_feature_dim: int,
                 num_sparse_fields: int, fc_sizes: Sequence[int], use_embedding_gate: bool = True,
                 use_hidden_gate: bool = True) -> None:
        super().__init__()
        self.embedding = make_embedding(sparse_feature_number, sparse_feature_dim,
                                        0.1 / math.sqrt(sparse_feature_dim))
        self.embedding_gate = (EmbeddingGate(num_sparse_fields, sparse_feature_dim, bit_wise=False)
                               if use_embedding_gate else nn.Identity())
        self.dnn = MLP(num_sparse_fields * sparse_feature_dim + dense_feature_dim, fc_sizes, output_dim=1,
                       init="normal", hidden_gate=use_hidden_gate)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        fields = self.embedding_gate(self.embedding(sparse))   # (B, S, D)
        logit = self.dnn(torch.cat([fields.flatten(1), dense], dim=1))
        return torch.sigmoid(logit)

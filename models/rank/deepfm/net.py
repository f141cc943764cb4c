"""DeepFM: A Factorization-Machine based Neural Network for CTR Prediction.

Guo, Tang, Ye, Li, He. IJCAI 2017. https://arxiv.org/abs/1703.04247

``y = sigmoid(y_first_order + y_FM + y_DNN)``: first-order weights of every
field, FM's pairwise interactions ``sum_{i<j} <v_i, v_j>`` of the field
embeddings, and an MLP over the same embeddings (shared, no pre-training).
Dense features are fields too: ``x_i * v_i`` (as in PaddleRec's DeepFM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, FactorizationMachine
from recstack.layers.field_inputs import FieldInputs


class DeepFM(nn.Module):
    """DeepFM over ``F`` fields of one width ``D`` (:class:`FieldInputs` with ``first_order``).

    Each field carries its first-order weight in column 0 (slot format: one table of width
    ``1 + D`` holds each id's weight and vector, one lookup and one row-wise update per batch
    instead of two, about 25% faster training steps on uniformly hashed ids, measured here;
    dense values are fields ``x_i * v_i``). From a feature config every feature of the DEEP groups
    is a field: all need the same ``embedding_dim`` (RawFeatures too, or boundaries).

    Initialisation: field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's;
    PaddleRec's table init, PaddleRec sets the dense vectors to 1.0, which saturates the output
    at the start), MLP weights N(0, 1/sqrt(fan_in)) as PaddleRec.

    Args:
        inputs: the field-embedding block (:func:`recstack.rank_inputs.field_inputs`, ``first_order``,
            ``dense_fields``).
        fc_sizes: hidden layer widths of the deep part.

    Shapes:
        ``inputs.input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, fc_sizes: Sequence[int]) -> None:
        super().__init__()
        if not inputs.first_order or inputs.dense_dim:
            raise ValueError("DeepFM reads fields with a first-order column and no dense values apart")
        self.embedding = inputs  # (B, F, 1 + D): each field's first-order weight (column 0) and its FM/DNN vector
        self.embedding_dim = inputs.require_equal_width("DeepFM") - 1
        self.fm = FactorizationMachine()
        self.dnn = MLP(inputs.num_fields * self.embedding_dim, fc_sizes, output_dim=1, init="normal")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        weights, fields = self.embedding(*inputs)[0].split([1, self.embedding_dim], dim=2)
        logit = weights.sum(dim=1) + self.fm(fields) + self.dnn(fields.flatten(1))
        return torch.sigmoid(logit)

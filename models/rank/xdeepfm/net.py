"""xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender Systems.

Lian, Zhou, Zhang, Chen, Xie, Sun. KDD 2018. https://arxiv.org/abs/1803.05170

``y = sigmoid(b + sum_i w_i x_i + w_cin^T p(CIN(X^0)) + MLP([v_1 x_1, ..., v_F x_F]))``: a linear
(first-order) part, the Compressed Interaction Network's explicit vector-wise interactions
``X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i ∘ X^0_j)`` sum-pooled over the embedding dimension, and an
MLP over the same field embeddings (26 sparse slots with x = 1 and 13 dense values ``x_i * v_i``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import CIN, MLP
from recstack.layers.field_inputs import FieldInputs


class XDeepFM(nn.Module):
    """xDeepFM over ``F`` fields of one width ``D`` (:class:`FieldInputs` with ``first_order``).

    As DeepFM here, each field carries its first-order weight in column 0 (slot format: one table of
    width ``1 + D``, so a batch does one lookup and one row-wise update; dense field ``i`` has the
    first-order weight ``u_i0`` and the vector ``u_i[1:]``, both times ``x_i``). From a feature config
    every feature is a field and all need the same ``embedding_dim`` (the CIN's feature maps).

    The CIN feeds every layer's feature maps both to the next layer and to the output
    (``split_half=False``, as PaddleRec's CIN), so ``layer_sizes_cin`` means what it means there:
    ``[128, 32]`` pools 160 maps.

    Initialisation: field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's;
    PaddleRec's table init, PaddleRec sets the dense ones to 1.0),
    CIN layers PyTorch's default Linear init (``recstack.layers.CIN``), the CIN output layer
    N(0, 0.1/sqrt(fan_in)) as PaddleRec's, MLP weights N(0, 1/sqrt(fan_in)) and the bias 0.

    Args:
        inputs: the field-embedding block (:func:`recstack.rank_inputs.field_inputs`).
        layer_sizes_cin: feature maps of each CIN layer.
        layer_sizes_dnn: hidden layer widths of the deep part.

    Shapes:
        ``inputs.input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, layer_sizes_cin: Sequence[int], layer_sizes_dnn: Sequence[int]) -> None:
        super().__init__()
        if not inputs.first_order or inputs.dense_dim:
            raise ValueError("xDeepFM reads fields with a first-order column and no dense values apart")
        self.embedding = inputs  # (B, F, 1 + D): each field's first-order weight (column 0) and its vector
        self.embedding_dim = inputs.require_equal_width("xDeepFM") - 1
        num_fields = inputs.num_fields
        self.cin = CIN(num_fields, layer_sizes_cin, split_half=False)
        self.cin_output = nn.Linear(self.cin.output_dim, 1, bias=False)
        nn.init.normal_(self.cin_output.weight, 0.0, 0.1 / math.sqrt(self.cin.output_dim))
        self.dnn = MLP(num_fields * self.embedding_dim, layer_sizes_dnn, output_dim=1, init="normal")
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        weights, fields = self.embedding(*inputs)[0].split([1, self.embedding_dim], dim=2)  # (B, F, 1), (B, F, D)
        linear = weights.sum(dim=1) + self.bias
        logit = linear + self.cin_output(self.cin(fields)) + self.dnn(fields.flatten(1))
        return torch.sigmoid(logit)

"""Deep & Cross Network for Ad Click Predictions.

Wang, Fu, Fu, Wang. ADKDD 2017. https://arxiv.org/abs/1708.05123

``x_0 = [e_1, ..., e_S, x_dense]``; cross layers ``x_{l+1} = x_0 (x_l^T w_l) + b_l + x_l`` and an MLP
run in parallel on ``x_0``; ``y = sigmoid(w^T [x_L, h_K] + b)`` over their concatenated outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, CrossNet
from recstack.layers.field_inputs import FieldInputs
from recstack.layers.init import init_linear


class DCN(nn.Module):
    """Deep & Cross Network over field embeddings and dense values (:class:`FieldInputs`).

    ``x_0`` is the flattened field embeddings followed by the raw dense values (width
    ``S * D + Dn`` in the slot format), as in the paper and PaddleRec. The cross network keeps that
    width; the deep part is ``MLP(x_0 → fc_sizes)`` with ReLU (and BatchNorm with ``dnn_use_bn``).
    Fields may have different widths (the cross runs over the concatenation).

    Initialisation: the field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's;
    PaddleRec's), cross weights truncated normal with std ``1 / sqrt(width of x_0)`` and biases 0
    (``recstack.layers.CrossNet``), MLP and output weights N(0, 1/sqrt(fan_in)) and biases 0 (as
    PaddleRec).

    Args:
        inputs: the field-embedding block (:func:`recstack.rank_inputs.field_inputs`).
        fc_sizes: hidden layer widths of the deep part.
        cross_num: number of cross layers.
        dnn_use_bn: BatchNorm after each hidden Linear of the deep part.

    Shapes:
        ``inputs.input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, fc_sizes: Sequence[int], cross_num: int, dnn_use_bn: bool = False) -> None:
        super().__init__()
        self.embedding = inputs
        input_dim = inputs.flat_dim + inputs.dense_dim
        self.cross = CrossNet(input_dim, cross_num)
        self.dnn = MLP(input_dim, fc_sizes, batch_norm=dnn_use_bn, init="normal")
        self.output = init_linear(nn.Linear(input_dim + self.dnn.output_dim, 1), "normal")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        fields, dense = self.embedding(*inputs)
        x0 = torch.cat([fields.flatten(1), dense], dim=1)  # (B, S * D + Dn)
        logit = self.output(torch.cat([self.cross(x0), self.dnn(x0)], dim=1))
        return torch.sigmoid(logit)

"""A plain deep neural network for CTR prediction (PaddleRec's ``dnn`` rank model).

The embedding + MLP baseline of deep CTR models; e.g. Covington, Adams, Sargin, "Deep Neural
Networks for YouTube Recommendations", RecSys 2016. https://doi.org/10.1145/2959100.2959190

``y = sigmoid(MLP([e_1, ..., e_S, x_dense]))``: the embeddings of the 26 sparse slots
concatenated with the 13 raw dense values, through ReLU layers ``fc_sizes`` to one logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP
from recstack.layers.field_inputs import FieldInputs


class DNN(nn.Module):
    """Field embeddings and dense values (:class:`FieldInputs`, any widths) → MLP.

    Initialisation: field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's;
    PaddleRec draws its table from U(-1, 1), far larger than the dense values in [0, 1]), MLP
    weights N(0, 1/sqrt(fan_in)) and biases 0 as PaddleRec. PaddleRec's last layer has two
    outputs and a softmax; one logit and a sigmoid is the same model.

    Args:
        inputs: the field-embedding block (:func:`recstack.rank_inputs.field_inputs`).
        fc_sizes: hidden layer widths.

    Shapes:
        ``inputs.input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, fc_sizes: Sequence[int]) -> None:
        super().__init__()
        self.embedding = inputs
        self.mlp = MLP(inputs.flat_dim + inputs.dense_dim, fc_sizes, output_dim=1, init="normal")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        fields, dense = self.embedding(*inputs)
        embeddings = fields.flatten(1)                                     # (B, S, D) -> (B, S * D)
        logit = self.mlp(torch.cat([embeddings, dense], dim=1))           # (B, 1)
        return torch.sigmoid(logit)

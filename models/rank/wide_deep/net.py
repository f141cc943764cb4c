"""Wide & Deep Learning for Recommender Systems.

Cheng, Koc, Harmsen, Shaked, Chandra, Aradhye, Anderson, Corrado, Chai, Ispir, Anil, Haque, Hong, Jain,
Liu, Shah. DLRS 2016. https://arxiv.org/abs/1606.07792

``y = sigmoid(w_wide^T [x_dense, 1] + MLP([e_1, ..., e_S, x_dense]))``: a linear (wide) model over the
dense values and a deep MLP over the sparse embeddings concatenated with the dense values, trained jointly
(as in PaddleRec's wide_deep; the paper's wide part also takes cross-product features of sparse ids). From a
feature config with ``wide_deep: WIDE`` groups (EasyRec's), the wide part is a learned weight per id of those
groups plus a linear term per raw value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP
from recstack.layers.field_inputs import FieldInputs
from recstack.layers.init import truncated_normal_


class WideDeep(nn.Module):
    """Wide & Deep over field embeddings and dense values (:class:`FieldInputs`, any widths).

    Wide part: ``Linear(Dn, 1)`` over the dense values (PaddleRec's wide part), or, given ``wide``
    (the ``WIDE`` feature groups at width 1), the sum of those groups' per-id weights plus
    ``Linear`` over their raw values. Deep part: ``MLP(flattened fields + Dn → fc_sizes → 1)``.

    Initialisation: field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's; the
    zoo's table init, PaddleRec draws it from U(-1, 1)), the wide weights truncated normal with std
    ``1 / sqrt(inputs)`` and bias 0 (as PaddleRec), MLP weights N(0, 1/sqrt(fan_in)) and biases 0 (as
    PaddleRec).

    Args:
        inputs: the deep part's field-embedding block (:func:`recstack.rank_inputs.field_inputs`).
        fc_sizes: hidden layer widths of the deep part.
        wide: the wide part's block (:func:`recstack.rank_inputs.wide_inputs`; fields of width 1), or
            ``None``: the wide part reads ``inputs``' dense values.

    Shapes:
        ``input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, fc_sizes: Sequence[int], wide: FieldInputs | None = None) -> None:
        super().__init__()
        self.embedding = inputs
        self.wide_inputs = wide
        self.input_names = tuple(inputs.input_names) + (tuple(wide.input_names) if wide is not None else ())
        wide_dim = inputs.dense_dim if wide is None else wide.dense_dim
        self.wide = nn.Linear(wide_dim, 1)
        truncated_normal_(self.wide.weight.data, 1.0 / math.sqrt(max(wide_dim, 1)))
        nn.init.zeros_(self.wide.bias)
        self.deep = MLP(inputs.flat_dim + inputs.dense_dim, fc_sizes, output_dim=1, init="normal")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        n = len(self.embedding.input_names)
        fields, dense = self.embedding(*inputs[:n])
        deep_input = torch.cat([fields.flatten(1), dense], dim=1)  # (B, S * D + Dn)
        if self.wide_inputs is None:
            wide = self.wide(dense)
        else:
            weights, values = self.wide_inputs(*inputs[n:])
            wide = weights.flatten(1).sum(dim=1, keepdim=True) + self.wide(values)
        return torch.sigmoid(wide + self.deep(deep_input))

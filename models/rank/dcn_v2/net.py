"""DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank Systems.

Wang, Shivanna, Cheng, Jain, Lin, Hong, Chi. WWW 2021. https://arxiv.org/abs/2008.13535

``x_0 = [e_1, ..., e_S, dense]``; cross layers ``x_{l+1} = x_0 ∘ (W_l x_l + b_l) + x_l`` (``W_l``
full rank, or a gated mixture of low-rank experts ``U_i tanh(C_i tanh(V_i^T x_l))``); stacked:
``y = sigmoid(w^T MLP(x_L))``, parallel: ``y = sigmoid(w^T [MLP(x_0), x_L])``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, CrossNetMix
from recstack.layers.field_inputs import FieldInputs
from recstack.layers.init import init_linear


class DCNv2(nn.Module):
    """DCN-V2 over field embeddings and dense values (:class:`FieldInputs`).

    ``x_0`` is the flattened field embeddings followed by the dense values as they are
    (width ``S * D + Dn`` in the slot format), as in the paper; the cross network is ``CrossNetMix``.
    Fields may have different widths (the cross runs over the concatenation).

    Initialisation: field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's; PaddleRec's);
    cross weights Xavier normal, biases 0 (``CrossNetMix``'s init); MLP and
    output weights N(0, 1/sqrt(fan_in)) as PaddleRec, biases 0.

    Args:
        inputs: the field-embedding block (:func:`recstack.rank_inputs.field_inputs`).
        fc_sizes: hidden layer widths of the MLP (ReLU).
        cross_num: number of cross layers.
        is_stacked: cross network → MLP (True) or both side by side on ``x_0`` (False).
        use_low_rank_mixture: cross layers as a mixture of low-rank experts instead of full rank.
        low_rank: rank of each expert.
        num_experts: experts per cross layer.
        dnn_use_bn: BatchNorm after each hidden Linear of the MLP.
        dropout: dropout after each hidden layer of the MLP (PaddleRec: 0.5, no key).

    Shapes:
        ``inputs.input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, fc_sizes: Sequence[int], cross_num: int, is_stacked: bool = True,
                 use_low_rank_mixture: bool = True, low_rank: int = 32, num_experts: int = 4,
                 dnn_use_bn: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        self.embedding = inputs
        width = inputs.flat_dim + inputs.dense_dim
        self.cross = CrossNetMix(width, cross_num, low_rank if use_low_rank_mixture else None, num_experts)
        self.dnn = MLP(width, fc_sizes, dropout=dropout, batch_norm=dnn_use_bn, init="normal")
        self.is_stacked = is_stacked
        self.output = init_linear(nn.Linear(self.dnn.output_dim if is_stacked else self.dnn.output_dim + width, 1),
                                  "normal")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        fields, dense = self.embedding(*inputs)
        x0 = torch.cat([fields.flatten(1), dense], dim=1)   # (B, S * D + Dn)
        if self.is_stacked:
            hidden = self.dnn(self.cross(x0))
        else:
            hidden = torch.cat([self.dnn(x0), self.cross(x0)], dim=1)
        return torch.sigmoid(self.output(hidden))

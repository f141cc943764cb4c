"""AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks.

Song, Shi, Xiao, Duan, Xu, Zhang, Tang. CIKM 2019. https://arxiv.org/abs/1810.11921

Fields ``E^(0) = [e_1, ..., e_F]`` (dense values are fields ``x_m v_m``); ``L`` interacting layers
``E^(l) = ReLU(MultiHead(E^(l-1)) + E^(l-1) W_Res)`` (multi-head self-attention over the fields);
``y = sigmoid(w^T [e^(L)_1, ..., e^(L)_F] + b [+ sum_m w_m x_m] [+ MLP(flatten(E^(0)))])``: the optional
first-order term (PaddleRec's ``use_wide``) and MLP over the embeddings (AutoInt+).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, InteractingLayer
from recstack.layers.field_inputs import FieldInputs
from recstack.layers.init import init_linear


class AutoInt(nn.Module):
    """AutoInt / AutoInt+ over ``F`` fields of one width ``D`` (:class:`FieldInputs` with ``dense_fields``,
    and ``first_order`` when ``use_wide``: column 0 of each field is its first-order weight).

    Initialisation: field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's; PaddleRec's
    rank-table init); attention and residual weights Glorot uniform (:class:`InteractingLayer`, PaddleRec's
    XavierUniform); MLP and output weights N(0, 1/sqrt(fan_in)), biases 0.

    Args:
        inputs: the field-embedding block (:func:`recstack.rank_inputs.field_inputs`).
        attn_layer_sizes: output width ``d`` of each interacting layer (``L`` layers; multiples of ``head_num``).
        head_num: attention heads of each layer.
        use_residual: the residual projection ``E W_Res`` in each layer.
        scaling: scale the attention scores by ``1 / sqrt(d / head_num)``.
        use_wide: add the first-order term ``sum_m w_m x_m`` (needs ``inputs.first_order``).
        fc_sizes: hidden widths of the MLP over the flattened embeddings (AutoInt+); empty: plain AutoInt.

    Shapes:
        ``inputs.input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, attn_layer_sizes: Sequence[int], head_num: int,
                 use_residual: bool = True, scaling: bool = True, use_wide: bool = True,
                 fc_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        if inputs.first_order != use_wide or inputs.dense_dim:
            raise ValueError("AutoInt reads fields (a first-order column exactly when use_wide) and no dense "
                             "values apart")
        self.embedding = inputs
        self.use_wide = use_wide
        self.embedding_dim = inputs.require_equal_width("AutoInt") - (1 if use_wide else 0)
        widths = [self.embedding_dim, *attn_layer_sizes]
        self.interacting = nn.Sequential(*(InteractingLayer(widths[i], widths[i + 1], head_num, use_residual, scaling)
                                           for i in range(len(attn_layer_sizes))))
        self.output = init_linear(nn.Linear(inputs.num_fields * widths[-1], 1), "normal")
        self.dnn = (MLP(inputs.num_fields * self.embedding_dim, fc_sizes, output_dim=1, init="normal")
                    if fc_sizes else None)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        fields = self.embedding(*inputs)[0]                           # (B, F, [1 +] D)
        if self.use_wide:
            weights, fields = fields.split([1, self.embedding_dim], dim=2)
            logit = self.output(self.interacting(fields).flatten(1)) + weights.sum(dim=1)
        else:
            logit = self.output(self.interacting(fields).flatten(1))
        if self.dnn is not None:
            logit = logit + self.dnn(fields.flatten(1))
        return torch.sigmoid(logit)

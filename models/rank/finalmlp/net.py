"""FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction.

Mao, Zhu, Su, Cai, Dong, Zhou, Zhang, Dong, Tang. AAAI 2023. https://arxiv.org/abs/2304.00902

Two MLP streams over the flattened field embeddings ``e``, each optionally behind its own feature
gate ``g_i = 2 * sigmoid(MLP_i(c_i))`` (``c_i``: a learned vector or the embeddings of chosen fields):
``o_1 = MLP_1(g_1 ∘ e)``, ``o_2 = MLP_2(g_2 ∘ e)``; multi-head bilinear fusion
``y = sigmoid(b + w_1^T o_1 + w_2^T o_2 + sum_j o_{1,j}^T W_{3,j} o_{2,j})`` over ``k`` heads (chunks) of each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP
from recstack.layers.field_inputs import FieldInputs


class FeatureSelection(nn.Module):
    """A stream's feature gate: ``2 * sigmoid(MLP(c))`` in (0, 2), one value per input width.

    Args:
        output_dim: the gated width (the flattened embeddings).
        hidden_sizes: the gate MLP's hidden widths (ReLU).
        context: field indices whose embeddings (flattened) are the context ``c``; empty: a learned vector
            of ``field_dim`` values, zeros at the start (FuxiCTR's ``ctx_bias``).
        field_dim: the width of one field.

    Shapes:
        fields ``(B, F, D)`` → gate ``(B, output_dim)``.
    """

    def __init__(self, output_dim: int, hidden_sizes: Sequence[int], context: Sequence[int], field_dim: int) -> None:
        super().__init__()
        self.register_buffer("context", torch.tensor(list(context), dtype=torch.long), persistent=False)
        self.bias = None if context else nn.Parameter(torch.zeros(1, field_dim))
        self.mlp = MLP(field_dim * max(1, len(context)), hidden_sizes, output_dim=output_dim)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            ctx = fields.index_select(1, self.context).flatten(1)
        else:
            ctx = self.bias.expand(fields.shape[0], -1)
        return 2.0 * torch.sigmoid(self.mlp(ctx))


class BilinearFusion(nn.Module):
    """Multi-head bilinear fusion of two vectors into one logit (FuxiCTR's ``InteractionAggregation``).

    ``x`` and ``y`` are split into ``k`` equal chunks; ``b + w_x^T x + w_y^T y + sum_j x_j^T W_j y_j``.
    Initialisation: ``w_x``, ``w_y`` and ``b`` torch's Linear default; ``W`` Xavier normal over its
    ``(k * hx * hy, 1)`` shape (FuxiCTR's).

    Shapes:
        ``(B, x_dim)``, ``(B, y_dim)`` → ``(B, 1)``.
    """

    def __init__(self, x_dim: int, y_dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide both stream widths ({x_dim}, {y_dim})")
        self.num_heads = num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1, bias=False)
        hx, hy = x_dim // num_heads, y_dim // num_heads
        self.w_xy = nn.Parameter(torch.randn(num_heads, hx, hy) * math.sqrt(2.0 / (num_heads * hx * hy + 1)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        heads_x = x.view(x.shape[0], self.num_heads, -1).transpose(0, 1)           # (k, B, hx)
        heads_y = y.view(y.shape[0], self.num_heads, -1).transpose(0, 1)           # (k, B, hy)
        bilinear = (torch.bmm(heads_x, self.w_xy) * heads_y).sum(dim=(0, 2))       # (B,)
        return self.w_x(x) + self.w_y(y) + bilinear.unsqueeze(1)


class FinalMLP(nn.Module):
    """FinalMLP over ``F`` fields of one width ``D`` (:class:`FieldInputs`, dense values as fields ``x_i * v_i``).

    Initialisation: field vectors truncated normal with std ``0.1 / sqrt(D)`` (the producer's); the
    MLPs torch's Linear default (FuxiCTR's); the fusion as :class:`BilinearFusion`.

    Args:
        inputs: the field-embedding block (:func:`recstack.rank_inputs.field_inputs`, ``dense_fields``).
        mlp1_hidden_units, mlp2_hidden_units: each stream's hidden widths (no output layer: the last hidden
            layer is the stream's output; empty: the stream passes its input through).
        mlp1_hidden_activations, mlp2_hidden_activations: each stream's activation name.
        mlp1_dropout, mlp2_dropout: dropout after each hidden layer of a stream.
        mlp1_batch_norm, mlp2_batch_norm: BatchNorm after each hidden Linear of a stream.
        use_fs: gate each stream's input (stream-specific feature selection).
        fs_hidden_units: the gates' hidden widths.
        fs1_context, fs2_context: the fields (0-based indices into the ``F`` fields) whose embeddings are
            each gate's context; empty: a learned vector.
        num_heads: heads of the bilinear fusion; must divide both stream widths.

    Shapes:
        ``inputs.input_names`` tensors (slot: sparse ``(B, S)`` int64, dense ``(B, Dn)``) → probability ``(B, 1)``.
    """

    def __init__(self, inputs: FieldInputs, mlp1_hidden_units: Sequence[int], mlp2_hidden_units: Sequence[int],
                 mlp1_hidden_activations: str = "relu", mlp2_hidden_activations: str = "relu",
                 mlp1_dropout: float = 0.0, mlp2_dropout: float = 0.0, mlp1_batch_norm: bool = False,
                 mlp2_batch_norm: bool = False, use_fs: bool = True, fs_hidden_units: Sequence[int] = (64,),
                 fs1_context: Sequence[int] = (), fs2_context: Sequence[int] = (), num_heads: int = 1) -> None:
        super().__init__()
        if inputs.dense_dim:
            raise ValueError("FinalMLP reads dense values as fields (dense_fields), not apart")
        self.embedding = inputs
        field_dim = inputs.require_equal_width("FinalMLP")
        for context in (fs1_context, fs2_context):
            bad = [i for i in context if not 0 <= i < inputs.num_fields]
            if bad:
                raise ValueError(f"feature-selection context field {bad[0]} is not in 0..{inputs.num_fields - 1}")
        width = inputs.flat_dim
        self.mlp1 = MLP(width, mlp1_hidden_units, activation=mlp1_hidden_activations, dropout=mlp1_dropout,
                        batch_norm=mlp1_batch_norm)
        self.mlp2 = MLP(width, mlp2_hidden_units, activation=mlp2_hidden_activations, dropout=mlp2_dropout,
                        batch_norm=mlp2_batch_norm)
        self.fs1 = FeatureSelection(width, fs_hidden_units, fs1_context, field_dim) if use_fs else None
        self.fs2 = FeatureSelection(width, fs_hidden_units, fs2_context, field_dim) if use_fs else None
        self.fusion = BilinearFusion(self.mlp1.output_dim, self.mlp2.output_dim, num_heads)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        fields = self.embedding(*inputs)[0]                                        # (B, F, D)
        flat = fields.flatten(1)                                                   # (B, F * D)
        x1 = flat if self.fs1 is None else flat * self.fs1(fields)
        x2 = flat if self.fs2 is None else flat * self.fs2(fields)
        return torch.sigmoid(self.fusion(self.mlp1(x1), self.mlp2(x2)))

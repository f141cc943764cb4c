"""GateNet's gates (Huang, She, Wang, Zhang, "GateNet: Gating-Enhanced Deep Network for Click-Through
Rate Prediction", 2020, https://arxiv.org/abs/2007.03519)."""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingGate(nn.Module):
    """Field-private gates on embeddings: ``e_i' = e_i ∘ sigmoid(W_i e_i)``.

    Args:
        num_fields: ``F``.
        embedding_dim: ``D``.
        bit_wise: ``W_i`` is ``D x D`` (one gate per bit); otherwise ``D x 1`` (one per field).

    Shapes:
        ``(B, F, D)`` → ``(B, F, D)``.
    """

    def __init__(self, num_fields: int, embedding_dim: int, bit_wise: bool = True) -> None:
        super().__init__()
        out = embedding_dim if bit_wise else 1
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_fields, embedding_dim, out)))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return fields * torch.sigmoid(torch.einsum("bfd,fde->bfe", fields, self.weight))


class HiddenGate(nn.Module):
    """A gate on a hidden layer's output: ``h' = h ∘ sigmoid(W h)``.

    Shapes:
        ``(B, width)`` → ``(B, width)``.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)
        nn.init.xavier_uniform_(self.linear.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * torch.sigmoid(self.linear(hidden))

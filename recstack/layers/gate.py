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


class Highway(nn.Module):
    """EasyRec's ``highway_dnn`` (one highway layer after a projection; Srivastava, Greff, Schmidhuber,
    "Highway Networks", 2015, https://arxiv.org/abs/1505.00387)::

        h = relu(W_p x + b_p);  T = sigmoid(W_t h + b_t);  H = relu(W_h h + b_h)
        out = H * T + h * (1 - T)

    No dropout; Linears Glorot-uniform with zero bias (TensorFlow's ``dense``).

    Args:
        input_dim: width of ``x``.
        emb_size: width of the output (EasyRec's ``highway_dnn.emb_size``).

    Shapes:
        ``(B, input_dim)`` -> ``(B, emb_size)``.
    """

    def __init__(self, input_dim: int, emb_size: int) -> None:
        super().__init__()
        self.project = nn.Linear(input_dim, emb_size)
        self.gate = nn.Linear(emb_size, emb_size)
        self.transform = nn.Linear(emb_size, emb_size)
        for layer in (self.project, self.gate, self.transform):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.output_dim = emb_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.project(x))
        t = torch.sigmoid(self.gate(h))
        return torch.relu(self.transform(h)) * t + h * (1 - t)

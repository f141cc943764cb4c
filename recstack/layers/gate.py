"""Gates: GateNet's embedding and hidden gates (Huang, She, Wang, Zhang, "GateNet: Gating-Enhanced Deep Network
for Click-Through Rate Prediction", 2020, https://arxiv.org/abs/2007.03519), highway layers and EasyRec's
weighted gate."""

from __future__ import annotations

import torch
from torch import nn

from recstack.layers.activation import get_activation
from recstack.layers.init import init_linear


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


class HighwayNetwork(nn.Module):
    """A stack of highway layers (Srivastava, Greff, Schmidhuber, 2015; EasyRec's ``Highway`` component)::

        v = x, or P x when the input width differs from emb_size (a Linear without activation)
        per layer: T = sigmoid(W_t v + b_t);  H = dropout(act(W_h v + b_h));  v = T * H + (1 - T) * v

    Unlike :class:`Highway` (EasyRec's ``highway_dnn`` tower: a ReLU projection and one layer with a zero
    gate bias), the gate bias starts at ``init_gate_bias`` (-3: the layer starts close to the identity,
    carrying ``v`` through, which suits fine-tuning pre-trained embeddings).

    Initialisation: Glorot-uniform kernels, zero biases but the gate's (Keras' Dense).

    Args:
        input_dim: width of ``x``.
        emb_size: width of ``v`` and of the output (``None``: ``input_dim``).
        activation: activation of ``H`` (an :mod:`recstack.layers.activation` name).
        dropout_rate: dropout on ``H``.
        init_gate_bias: initial ``b_t``.
        num_layers: highway layers.

    Shapes:
        ``(B, ..., input_dim)`` → ``(B, ..., emb_size)``.
    """

    def __init__(self, input_dim: int, emb_size: int | None = None, activation: str = "relu",
                 dropout_rate: float = 0.0, init_gate_bias: float = -3.0, num_layers: int = 1) -> None:
        super().__init__()
        width = emb_size or input_dim
        self.project = init_linear(nn.Linear(input_dim, width), "xavier_uniform") if width != input_dim else None
        self.gates = nn.ModuleList(init_linear(nn.Linear(width, width), "xavier_uniform", init_gate_bias)
                                   for _ in range(num_layers))
        self.transforms = nn.ModuleList(init_linear(nn.Linear(width, width), "xavier_uniform")
                                        for _ in range(num_layers))
        self.activation = get_activation(activation, width)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x if self.project is None else self.project(x)
        for gate, transform in zip(self.gates, self.transforms):
            t = torch.sigmoid(gate(v))
            v = t * self.dropout(self.activation(transform(v))) + (1 - t) * v
        return v


class WeightedGate(nn.Module):
    """A per-sample weighted sum of ``n`` inputs (EasyRec's ``Gate`` component, used by Cross Decoupling
    Network): ``out = sum_j w[:, j] * x_j``, the weights ``w`` being one of the inputs.

    Args:
        weight_index: position of ``w`` ``(B, n)`` in the input list; the other ``n`` entries are the ``x_j``.
        top: a module applied to the sum (EasyRec's ``Gate.mlp``), or ``None``.

    Shapes:
        a list of ``n + 1`` tensors: ``w`` ``(B, n)`` and ``x_j`` ``(B, D)`` (or ``(B, ..., D)``) → ``(B, D)``
        (``top``'s output width with ``top``).
    """

    def __init__(self, weight_index: int = 0, top: nn.Module | None = None) -> None:
        super().__init__()
        self.weight_index = weight_index
        self.top = top

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        weights = inputs[self.weight_index]
        values = [x for i, x in enumerate(inputs) if i != self.weight_index]
        stacked = torch.stack(values, dim=1)                                  # (B, n, ..., D)
        w = weights.reshape(weights.shape[0], weights.shape[1], *([1] * (stacked.dim() - 2)))
        out = (w * stacked).sum(dim=1)
        return out if self.top is None else self.top(out)

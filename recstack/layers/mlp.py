"""Multi-layer perceptron shared by every model's deep part and towers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from recstack.layers.activation import get_activation
from recstack.layers.gate import HiddenGate
from recstack.layers.init import init_linear


class MLP(nn.Sequential):
    """Linear → [BatchNorm] → activation → [hidden gate] → [Dropout], repeated; optional output layer.

    Args:
        input_dim: input features.
        hidden_sizes: width of each hidden layer (may be empty).
        output_dim: size of a final Linear without activation (``None``: no output layer).
        activation: hidden activation name (see :mod:`recstack.layers.activation`).
        dropout: dropout rate after each hidden activation, or one rate per hidden layer
            (EasyRec's ``dropout_ratio`` list).
        batch_norm: BatchNorm1d after each hidden Linear.
        init: Linear initialisation scheme (see :func:`recstack.layers.init.init_linear`).
        bias_init: constant bias (``None``: the scheme's default).
        hidden_gate: GateNet's gate after each hidden activation (:class:`recstack.layers.gate.HiddenGate`).

    Shapes:
        ``(B, input_dim)`` → ``(B, output_dim or hidden_sizes[-1] or input_dim)``.
    """

    def __init__(self, input_dim: int, hidden_sizes: Sequence[int], output_dim: int | None = None,
                 activation: str = "relu", dropout: float | Sequence[float] = 0.0, batch_norm: bool = False,
                 init: str = "torch", bias_init: float | None = None, hidden_gate: bool = False) -> None:
        layers: list[nn.Module] = []
        width = input_dim
        rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden_sizes)
        if len(rates) != len(hidden_sizes):
            raise ValueError(f"MLP: {len(rates)} dropout rates for {len(hidden_sizes)} hidden layers")
        for size, rate in zip(hidden_sizes, rates):
            layers.append(init_linear(nn.Linear(width, size), init, bias_init))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(get_activation(activation, size))
            if hidden_gate:
                layers.append(HiddenGate(size))
            if rate > 0:
                layers.append(nn.Dropout(rate))
            width = size
        if output_dim is not None:
            layers.append(init_linear(nn.Linear(width, output_dim), init, bias_init))
            width = output_dim
        super().__init__(*layers)
        self.output_dim = width

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
        bias: the hidden Linears have a bias (EasyRec's ``MLP.use_bias``; its default, false, assumes
            BatchNorm follows).
        bn_after_activation: BatchNorm after the activation instead of before it.
        final_activation, final_batch_norm, final_bias: the last hidden layer's activation, BatchNorm and
            bias when they differ from the other hidden layers' (EasyRec's ``final_activation``,
            ``use_final_bn``, ``use_final_bias``); ``None``: as the others.

    Shapes:
        ``(B, input_dim)`` → ``(B, output_dim or hidden_sizes[-1] or input_dim)``.
    """

    def __init__(self, input_dim: int, hidden_sizes: Sequence[int], output_dim: int | None = None,
                 activation: str = "relu", dropout: float | Sequence[float] = 0.0, batch_norm: bool = False,
                 init: str = "torch", bias_init: float | None = None, hidden_gate: bool = False, *,
                 bias: bool = True, bn_after_activation: bool = False, final_activation: str | None = None,
                 final_batch_norm: bool | None = None, final_bias: bool | None = None) -> None:
        layers: list[nn.Module] = []
        width = input_dim
        rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden_sizes)
        if len(rates) != len(hidden_sizes):
            raise ValueError(f"MLP: {len(rates)} dropout rates for {len(hidden_sizes)} hidden layers")
        for i, (size, rate) in enumerate(zip(hidden_sizes, rates)):
            last = i == len(hidden_sizes) - 1
            act = final_activation if last and final_activation is not None else activation
            norm = final_batch_norm if last and final_batch_norm is not None else batch_norm
            has_bias = final_bias if last and final_bias is not None else bias
            layers.append(init_linear(nn.Linear(width, size, bias=has_bias), init, bias_init))
            if norm and not bn_after_activation:
                layers.append(nn.BatchNorm1d(size))
            layers.append(get_activation(act, size))
            if norm and bn_after_activation:
                layers.append(nn.BatchNorm1d(size))
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

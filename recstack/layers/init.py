"""Weight initialisations, chosen per layer and named so configs and docstrings can say which.

Why it matters (measured while building recstack): FM-style models with
``nn.Embedding``'s default N(0, 1) stay near AUC 0.5 after an epoch, where a
small truncated normal (PaddleRec's std 0.1/sqrt(dim)) learns.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def truncated_normal_(tensor: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """In-place N(0, std) truncated at ±2 std (Paddle's TruncatedNormal), by rejection.

    Redraws the ~4.6% of values outside the bounds until none is left: exact, and
    several times faster than ``nn.init.trunc_normal_`` on a 1,000,001 x 9 table.
    ``generator``: draw from it instead of torch's global generator.
    """
    bound = 2 * std
    flat = tensor.view(-1)
    flat.normal_(0.0, std, generator=generator)
    redo = torch.nonzero(flat.abs() > bound).squeeze(1)
    while redo.numel():
        values = torch.empty(redo.numel(), dtype=tensor.dtype, device=tensor.device).normal_(0.0, std,
                                                                                               generator=generator)
        flat[redo] = values
        redo = redo[values.abs() > bound]
    return tensor


#: the schemes :func:`init_linear` knows
INIT_SCHEMES = ("torch", "normal", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "truncated_normal")


def init_linear(layer: nn.Linear, scheme: str = "torch", bias: float | None = None) -> nn.Linear:
    """Initialise a Linear layer.

    Args:
        layer: the layer (modified in place and returned).
        scheme: ``"torch"`` (PyTorch's default, U(±1/sqrt(fan_in))), ``"normal"``
            (PaddleRec's rank models: N(0, 1/sqrt(fan_in))), ``"xavier_uniform"``
            (PaddleRec's multi-task models; Keras' ``glorot_uniform``), ``"xavier_normal"``,
            ``"he_uniform"`` (Keras': U(±sqrt(6/fan_in)), EasyRec's MLP default), ``"he_normal"``
            (Keras': N(0, 2/fan_in) truncated at 2 std and rescaled to keep that variance) or
            ``"truncated_normal"`` (Keras' ``truncated_normal``: N(0, 0.05) truncated at 2 std).
        bias: constant for the bias (``None`` keeps the scheme's default; 0 for every scheme
            but ``"torch"``).
    """
    fan_in = layer.in_features
    if scheme == "he_uniform":
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        default_bias = 0.0
    elif scheme == "he_normal":
        # 0.8796: the std of a unit normal truncated at ±2, so the truncated draw has variance 2/fan_in
        truncated_normal_(layer.weight, math.sqrt(2.0 / fan_in) / 0.87962566103423978)
        default_bias = 0.0
    elif scheme == "truncated_normal":
        truncated_normal_(layer.weight, 0.05)
        default_bias = 0.0
    elif scheme == "normal":
        nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(fan_in))
        default_bias = 0.0
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(layer.weight)
        default_bias = 0.0
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(layer.weight)
        default_bias = 0.0
    elif scheme == "torch":
        default_bias = None
    else:
        raise ValueError(f"unknown init scheme '{scheme}' (known: {', '.join(INIT_SCHEMES)})")
    if layer.bias is not None:
        value = bias if bias is not None else default_bias
        if value is not None:
            nn.init.constant_(layer.bias, value)
    return layer

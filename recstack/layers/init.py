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


def init_linear(layer: nn.Linear, scheme: str = "torch", bias: float | None = None) -> nn.Linear:
    """Initialise a Linear layer.

    Args:
        layer: the layer (modified in place and returned).
        scheme: ``"torch"`` (PyTorch's default, U(±1/sqrt(fan_in))), ``"normal"``
            (PaddleRec's rank models: N(0, 1/sqrt(fan_in))), ``"xavier_uniform"``
            (PaddleRec's multi-task models) or ``"xavier_normal"``.
        bias: constant for the bias (``None`` keeps the scheme's default; 0 for the
            xavier and normal schemes).
    """
    fan_in = layer.in_features
    if scheme == "normal":
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
        raise ValueError(f"unknown init scheme '{scheme}' (known: torch, normal, xavier_uniform, xavier_normal)")
    if layer.bias is not None:
        value = bias if bias is not None else default_bias
        if value is not None:
            nn.init.constant_(layer.bias, value)
    return layer

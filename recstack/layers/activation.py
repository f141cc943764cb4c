"""Activations by name (``relu``, ``sigmoid``, ``tanh``, ``leaky_relu``, ``prelu``, ``gelu``, ``elu``, ``selu``,
``swish``, ``none`` / ``linear``; ``dice`` from :mod:`recstack.layers.attention`)."""

from __future__ import annotations

from torch import nn

from recstack.registry import ACTIVATIONS

ACTIVATIONS.register("relu", nn.ReLU)
ACTIVATIONS.register("sigmoid", nn.Sigmoid)
ACTIVATIONS.register("tanh", nn.Tanh)
ACTIVATIONS.register("leaky_relu", nn.LeakyReLU)
ACTIVATIONS.register("prelu", nn.PReLU)
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("elu", nn.ELU)
ACTIVATIONS.register("selu", nn.SELU)
ACTIVATIONS.register("swish", nn.SiLU)
ACTIVATIONS.register("none", nn.Identity)
ACTIVATIONS.register("linear", nn.Identity)


def get_activation(name: str | None, num_features: int | None = None) -> nn.Module:
    """A fresh activation module for ``name`` (``None`` → identity).

    ``num_features`` (the layer's width) is passed to activations with per-feature
    parameters or statistics (``per_feature = True``: ``dice``, registered by
    :mod:`recstack.layers.attention`); others ignore it.
    """
    cls = ACTIVATIONS.get(name or "none")
    if getattr(cls, "per_feature", False):
        if num_features is None:
            raise ValueError(f"activation '{name}' has per-feature parameters: pass the layer width (num_features)")
        return cls(num_features)
    return cls()

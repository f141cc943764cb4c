"""Activations by name (``relu``, ``sigmoid``, ``tanh``, ``leaky_relu``, ``prelu``, ``gelu``, ``none``)."""

from __future__ import annotations

from torch import nn

from recstack.registry import ACTIVATIONS

ACTIVATIONS.register("relu", nn.ReLU)
ACTIVATIONS.register("sigmoid", nn.Sigmoid)
ACTIVATIONS.register("tanh", nn.Tanh)
ACTIVATIONS.register("leaky_relu", nn.LeakyReLU)
ACTIVATIONS.register("prelu", nn.PReLU)
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("none", nn.Identity)
ACTIVATIONS.register("linear", nn.Identity)


def get_activation(name: str | None) -> nn.Module:
    """A fresh activation module for ``name`` (``None`` → identity)."""
    return ACTIVATIONS.get(name or "none")()

"""Small shape and merge layers: stacking a feature list, applying a layer on the last axis, sums and
concatenations of lists (Keras' ``Add`` / ``Concatenate``, as EasyRec's backbone configs name them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def stack_fields(fields: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A list of ``F`` tensors ``(B, D)`` as one ``(B, F, D)`` tensor; a tensor passes as it is."""
    if isinstance(fields, (list, tuple)):
        return torch.stack(list(fields), dim=1)
    return fields


class StackFields(nn.Module):
    """Runs a field-interaction layer (``(B, F, D)`` input) on a feature list too.

    Args:
        layer: the layer, e.g. :class:`recstack.layers.FactorizationMachine`.

    Shapes:
        a list of ``F`` tensors ``(B, D)`` (stacked on axis 1) or ``(B, F, D)`` → the layer's output.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, fields: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return self.layer(stack_fields(fields))


class PerPosition(nn.Module):
    """Applies a layer written for ``(N, D)`` rows (BatchNorm1d, an MLP with BatchNorm) to every position of a
    ``(B, ..., D)`` tensor: the leading axes are flattened into rows and restored afterwards.

    Shapes:
        ``(B, ..., D)`` → ``(B, ..., D')``.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.layer(x)
        out = self.layer(x.reshape(-1, x.shape[-1]))
        return out.reshape(*x.shape[:-1], out.shape[-1])


class Add(nn.Module):
    """Elementwise sum of a list of tensors (broadcasting as torch does).

    Shapes:
        a list of tensors of one shape ``(B, ...)`` → ``(B, ...)``; a single tensor passes as it is.
    """

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return inputs
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class Concatenate(nn.Module):
    """Concatenation of a list of tensors on ``axis`` (counted with the batch axis, as Keras and torch do).

    Shapes:
        a list of tensors ``(B, ..., D_i)`` → ``(B, ..., sum D_i)`` (for ``axis=-1``).
    """

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return inputs
        return torch.cat(list(inputs), dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

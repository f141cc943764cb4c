"""Target attention over variable-length behaviour sequences (DIN): the local activation unit,
Dice, masked softmax and attention pooling.

Every layer here takes a ``mask`` ``(B, L)`` (true at real positions) next to the padded
sequence ``(B, L, D)`` and never lets a padded position change a result: the attention
MLP runs on the real positions only (gathered into one ``(N, 4D)`` matrix, so Dice's
batch statistics never see padding and no time is spent on it), padded positions get
weight exactly 0, and pooling skips them. A batch padded further gives each sample the
same output.

Reference: Zhou et al., "Deep Interest Network for Click-Through Rate Prediction",
KDD 2018, https://arxiv.org/abs/1706.06978.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers.embedding import masked_pool
from recstack.layers.mlp import MLP
from recstack.registry import ACTIVATIONS


class Dice(nn.Module):
    """Dice activation (DIN paper, eq. 9): a PReLU whose switch point follows the data.

    ``f(s) = p(s) * s + (1 - p(s)) * alpha * s``, ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``,
    per feature. In training mode ``E[s]`` and ``Var[s]`` are the batch's mean and (biased)
    variance over every row (all leading axes), gradients flowing through them as in
    batch normalisation, and running estimates are updated:
    ``running = (1 - momentum) * running + momentum * batch`` (the variance with Bessel's
    correction, as ``nn.BatchNorm1d``). In eval mode the running estimates are used, so a
    sample's output does not depend on the rest of its batch.

    Initialisation: ``alpha = 0`` (the paper's and DeepCTR's), running mean 0, running variance 1.

    Args:
        num_features: ``C``, the width of the last axis.
        eps: added to the variance (the paper's 1e-8).
        momentum: running-statistics update rate (0.01 = TensorFlow's BatchNorm default 0.99,
            which the original DIN code uses).

    Shapes:
        ``(..., C)`` → ``(..., C)``; with ``mask`` ``(...)`` (bool), only the rows where it is
        true enter the batch statistics (outputs are computed for every row).
    """

    per_feature = True  # get_activation passes the layer width

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.01) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.alpha = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mean, var = self.running_mean, self.running_var
        if self.training:
            rows = x.reshape(-1, self.num_features)
            if mask is not None:
                rows = rows[mask.reshape(-1).bool()]
            n = rows.shape[0]
            if n > 0:
                mean = rows.mean(dim=0)
                var = rows.var(dim=0, unbiased=False)
                with torch.no_grad():
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), self.momentum)
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + (1 - p) * self.alpha * x

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


ACTIVATIONS.register("dice", Dice)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over the positions where ``mask`` is true; exactly 0 elsewhere.

    A row without any true position gives all zeros (not NaN).

    Args:
        scores: ``(..., L)``.
        mask: ``(..., L)``, bool or 0/1.
    """
    mask = mask.bool()
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(scores.dtype)


class LocalActivationUnit(nn.Module):
    """DIN's local activation unit: the relevance of each behaviour to the candidate.

    ``a(q, k_j) = MLP([q, k_j, q - k_j, q * k_j])`` for the query (candidate) ``q`` and each
    behaviour ``k_j``: hidden layers with ``activation`` (``dice`` included), then one
    linear output. The MLP runs on the real positions only; padded positions score 0.

    Initialisation: Linear weights N(0, 1/sqrt(fan_in)), biases 0 (PaddleRec's DIN).

    Args:
        embed_dim: ``D`` of query and keys.
        hidden_sizes: hidden widths (PaddleRec: ``[80, 40]``).
        activation: hidden activation name (``sigmoid`` in PaddleRec's DIN, ``dice``, ``relu``, ...).
        mlp: a scoring network ``(N, 4D) → (N, 1)`` to use instead of the one ``hidden_sizes`` and
            ``activation`` describe (EasyRec's ``attention_dnn``, with its BatchNorm and bias options).

    Shapes:
        query ``(B, D)`` (or ``(B, L, D)``: one query per position, as DMR's position-aware queries),
        keys ``(B, L, D)``, mask ``(B, L)`` → scores ``(B, L)``.
    """

    def __init__(self, embed_dim: int, hidden_sizes: Sequence[int] = (80, 40), activation: str = "sigmoid",
                 mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.mlp = mlp if mlp is not None else MLP(4 * embed_dim, list(hidden_sizes), output_dim=1,
                                                   activation=activation, init="normal")

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = keys.shape
        rows, positions = mask.bool().nonzero(as_tuple=True)  # the N real positions, row-major
        k = keys[rows, positions]  # (N, D)
        q = query[rows] if query.dim() == 2 else query[rows, positions]  # (N, D)
        score = self.mlp(torch.cat([q, k, q - k, q * k], dim=-1)).squeeze(-1)  # (N,)
        return keys.new_zeros(batch, length).index_put((rows, positions), score)


class DINAttention(nn.Module):
    """Attention pooling of a behaviour sequence with the candidate as the query (DIN).

    ``v = sum_j w_j k_j`` over the real positions, with ``w_j = a(q, k_j)`` from the
    :class:`LocalActivationUnit`. The paper keeps the raw weights (``softmax=False``: "the
    intensity of user interests"); PaddleRec's DIN and the original code normalise them:
    ``w = softmax(a / sqrt(D))`` over the real positions (``softmax=True``). Either way a
    padded position has weight 0 and pooling is :func:`recstack.layers.embedding.masked_pool`.

    Args:
        embed_dim: ``D``.
        hidden_sizes: hidden widths of the activation unit.
        activation: its hidden activation.
        softmax: normalise the weights with a masked, scaled softmax.

    Shapes:
        query ``(B, D)``, keys ``(B, L, D)``, mask ``(B, L)`` → ``(B, D)``.
    """

    def __init__(self, embed_dim: int, hidden_sizes: Sequence[int] = (80, 40), activation: str = "sigmoid",
                 softmax: bool = True) -> None:
        super().__init__()
        self.unit = LocalActivationUnit(embed_dim, hidden_sizes, activation)
        self.softmax = softmax
        self.scale = 1.0 / math.sqrt(embed_dim)

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The attention weights ``(B, L)``; 0 at padded positions."""
        scores = self.unit(query, keys, mask)
        return masked_softmax(scores * self.scale, mask) if self.softmax else scores

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = self.weights(query, keys, mask)
        return masked_pool(keys * weights.unsqueeze(-1), mask, "sum")


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(B,)`` or ``(B, 1)`` lengths → bool mask ``(B, max_len)``, true at the first ``lengths[b]`` positions."""
    lengths = lengths.reshape(-1)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


__all__ = ["DINAttention", "Dice", "LocalActivationUnit", "lengths_to_mask", "masked_softmax"]

"""Embedding tables and field embeddings for slot data (sparse ids + dense values).

Embedding tables are plain ``nn.Embedding`` modules: the optimizer builder
(:func:`recstack.optim.build_optimizer`) switches them to sparse (row-wise)
gradients when the optimizer allows, so a 1,000,001-row table costs only the
rows a batch touches.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recstack.layers.init import truncated_normal_


def make_embedding(num_embeddings: int, embedding_dim: int, init_std: float) -> nn.Embedding:
    """An ``nn.Embedding`` initialised with a truncated normal of ``init_std``.

    ``nn.Embedding``'s default N(0, 1) is far too large for FM-style models; pass a
    small std (PaddleRec's rank models use ``0.1 / sqrt(embedding_dim)``).
    """
    weight = truncated_normal_(torch.empty(num_embeddings, embedding_dim), init_std)
    return nn.Embedding(num_embeddings, embedding_dim, _weight=weight)


class FieldEmbedding(nn.Module):
    """Embeds ``S`` sparse slots and ``Dn`` dense values as ``S + Dn`` field vectors.

    All sparse slots share one table (PaddleRec's hashed Criteo ids live in one
    id space). Dense field ``i`` is ``dense[:, i] * v_i`` with a learned vector
    ``v_i``, as in PaddleRec's DeepFM.

    Args:
        num_embeddings: rows of the shared sparse table (``sparse_feature_number``).
        embedding_dim: ``D`` (``sparse_feature_dim``; 1 gives FM's first-order weights).
        dense_dim: number of dense values ``Dn`` (0 for none).
        init_std: truncated-normal std of the sparse table and of the dense field
            vectors; default ``0.1 / sqrt(D)`` (PaddleRec's DeepFM table init).
        dense_init: a constant for the dense field vectors instead (PaddleRec's DeepFM
            uses 1.0, which with 13 dense fields makes the initial FM term ~10 and
            saturates the sigmoid: loss ~27 on its own sample data; measured here).

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float → ``(B, S + Dn, D)``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dense_dim: int = 0,
                 init_std: float | None = None, dense_init: float | None = None) -> None:
        super().__init__()
        std = init_std if init_std is not None else 0.1 / math.sqrt(embedding_dim)
        self.embedding = make_embedding(num_embeddings, embedding_dim, std)
        self.dense_dim = dense_dim
        self.dense_weight = nn.Parameter(torch.empty(dense_dim, embedding_dim))
        if dense_init is None:
            truncated_normal_(self.dense_weight.data, std)
        else:
            nn.init.constant_(self.dense_weight, dense_init)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        fields = self.embedding(sparse)
        if self.dense_dim > 0 and dense is not None:
            fields = torch.cat([fields, dense.unsqueeze(-1) * self.dense_weight], dim=1)
        return fields

"""Embedding tables and field embeddings for slot data (sparse ids + dense values).

Embedding tables are plain ``nn.Embedding`` modules: the optimizer builder
(:func:`recstack.optim.build_optimizer`) switches them to sparse (row-wise)
gradients when the optimizer allows, so a 1,000,001-row table costs only the
rows a batch touches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from recstack.layers.init import truncated_normal_

_META_TABLES = False


@contextlib.contextmanager
def meta_tables() -> Iterator[None]:
    """Inside it, :func:`make_embedding` leaves its table's weight on the ``meta`` device (no memory, no
    random draws); the table keeps its ``init_std`` so that the sharded tables can be initialised shard by
    shard (:func:`recstack.dist.sharding.shard_model`, ``runner.embedding_sharding``)."""
    global _META_TABLES
    previous, _META_TABLES = _META_TABLES, True
    try:
        yield
    finally:
        _META_TABLES = previous


def make_embedding(num_embeddings: int, embedding_dim: int, init_std: float) -> nn.Embedding:
    """An ``nn.Embedding`` initialised with a truncated normal of ``init_std``.

    ``nn.Embedding``'s default N(0, 1) is far too large for FM-style models; pass a
    small std (PaddleRec's rank models use ``0.1 / sqrt(embedding_dim)``). The std is
    kept as the table's ``init_std`` attribute; under :func:`meta_tables` the weight is
    left on the ``meta`` device, uninitialised.
    """
    if _META_TABLES:
        table = nn.Embedding(num_embeddings, embedding_dim, device="meta")
    else:
        weight = truncated_normal_(torch.empty(num_embeddings, embedding_dim), init_std)
        table = nn.Embedding(num_embeddings, embedding_dim, _weight=weight)
    table.init_std = init_std
    return table


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


def masked_pool(values: torch.Tensor, mask: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """Sum or mean of ``values`` over their second-to-last axis, counting only positions where ``mask`` is true.

    Padded positions contribute nothing whatever their values; the mean divides by
    the number of valid positions (a row with none gives zeros).

    Args:
        values: ``(..., L, D)``.
        mask: ``(..., L)``, bool or 0/1.
        mode: ``"sum"`` or ``"mean"``.

    Returns:
        ``(..., D)``.
    """
    weights = mask.to(values.dtype).unsqueeze(-1)
    pooled = (values * weights).sum(dim=-2)
    if mode == "mean":
        return pooled / weights.sum(dim=-2).clamp(min=1.0)
    if mode != "sum":
        raise ValueError(f"unknown pooling mode '{mode}' (known: sum, mean)")
    return pooled


class MaskedPooling(nn.Module):
    """:func:`masked_pool` as a module: ``(..., L, D)`` values and ``(..., L)`` mask → ``(..., D)``.

    Args:
        mode: ``"sum"`` or ``"mean"``.
    """

    def __init__(self, mode: str = "sum") -> None:
        super().__init__()
        if mode not in ("sum", "mean"):
            raise ValueError(f"unknown pooling mode '{mode}' (known: sum, mean)")
        self.mode = mode

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_pool(values, mask, self.mode)


class MultiValueEmbedding(nn.Module):
    """Multi-valued fields (ids padded to ``L`` with ``padding_idx``) → one pooled vector per field.

    Each field's ids are looked up in one shared table and summed (or averaged),
    padding excluded by a mask, so the padding row's values never matter and it
    gets no gradient (PaddleRec's ESMM sums with ``padding_idx=0`` for the same effect).

    Initialisation: truncated normal, std ``init_std`` (default ``0.1 / sqrt(D)``).

    Args:
        num_embeddings: rows of the table (``sparse_feature_number``).
        embedding_dim: ``D``.
        padding_idx: the id that pads a field.
        mode: ``"sum"`` or ``"mean"``.
        init_std: truncated-normal std of the table.

    Shapes:
        ids ``(B, F, L)`` int64 → ``(B, F, D)``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int = 0, mode: str = "sum",
                 init_std: float | None = None) -> None:
        super().__init__()
        std = init_std if init_std is not None else 0.1 / math.sqrt(embedding_dim)
        self.embedding = make_embedding(num_embeddings, embedding_dim, std)
        self.padding_idx = padding_idx
        self.pool = MaskedPooling(mode)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.pool(self.embedding(ids), ids != self.padding_idx)

"""The one input interface of the rank nets: batch tensors -> field embeddings + dense values.

A rank ``net.py`` takes a :class:`FieldInputs` and never learns which data format fed it (DESIGN.md,
principle 10; FuxiCTR's ``FeatureEmbedding(feature_map)``). Three producers:

* :class:`SlotFields`: PaddleRec's Criteo slot format, ``sparse`` ``(B, S)`` ids in one shared hashed
  table and ``dense`` ``(B, Dn)`` values (what the rank nets read before; same parameters, same
  initialisation draws, same speed);
* :class:`IndexValueFields`: PaddleRec's AutoInt layout, ``feat_idx`` ``(B, F)`` global ids in one table
  and ``feat_value`` ``(B, F)`` values, each field ``x_f * e[idx_f]``;
* :class:`recstack.easyrec.tabular_fields.TabularFields`: the feature groups of an EasyRec-style
  ``data_config`` / ``feature_config`` / ``feature_groups``, through
  :class:`recstack.easyrec.feature_embedding.FeatureEmbedding` (one fused table per width, row offsets,
  ``id_bounds`` for serving). It lives with the EasyRec pieces: this module knows no config format.

Contract (``forward(*inputs)`` with the tensors named by ``input_names``, in that order):

* ``fields``: ``(B, F, W)`` when every field has one width (``field_dim == W``), else the fields'
  vectors concatenated, ``(B, sum W_f)`` (``field_dim is None``); ``fields.flatten(1)`` is always
  the concatenation, of width ``flat_dim``;
* ``dense``: ``(B, Dn)`` float values that are not fields (``dense_dim`` of them; ``(B, 0)`` when none).

With ``first_order=True`` each field vector carries its first-order weight in column 0
(``W = 1 + D``): one lookup serves the linear term and the interactions (DeepFM, xDeepFM).
With ``dense_fields=True`` dense values become fields ``x_i * v_i`` (PaddleRec's DeepFM), so
``dense`` is empty.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from recstack.layers.embedding import make_embedding
from recstack.layers.init import truncated_normal_


class FieldInputs(nn.Module):
    """Base of the producers: batch tensors -> ``(fields, dense)`` (see the module docstring).

    Attributes:
        input_names: batch keys ``forward`` takes, in order (a wrapper's ``feed_names``).
        num_fields: ``F``.
        field_dim: ``W`` of every field (``1 + D`` with a first-order column), or ``None`` when widths differ.
        flat_dim: width of ``fields.flatten(1)``.
        dense_dim: ``Dn``.
        first_order: column 0 of each field is its first-order weight.
    """

    input_names: tuple[str, ...] = ()
    num_fields: int = 0
    field_dim: int | None = None
    flat_dim: int = 0
    dense_dim: int = 0
    first_order: bool = False

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def require_equal_width(self, model: str) -> int:
        """``field_dim`` (the ``D`` of ``(B, F, D)``), for a model whose structure needs one width (FM, CIN).

        Raises:
            ValueError: the fields have different widths (a producer checks this at build time with a
                message naming its config key; this is the net's own guard).
        """
        if self.field_dim is None:
            raise ValueError(f"{model} needs fields of one width; got {self.num_fields} fields of widths summing to "
                             f"{self.flat_dim}")
        return self.field_dim


class SlotFields(FieldInputs):
    """The slot format: ``S`` sparse slots in one shared table (``sparse_feature_number`` rows) + ``Dn`` dense values.

    Parameters as the rank nets had them (checkpoints load unchanged): ``embedding`` (the table,
    ``nn.Embedding``) and, with ``dense_fields``, ``dense_weight`` ``(Dn, W)`` (the dense field vectors of
    :class:`recstack.layers.FieldEmbedding`). A checkpoint written when the table was the net's own
    ``embedding`` (``embedding.weight``) loads too.

    Initialisation: table and dense vectors truncated normal with std ``init_std`` (default
    ``0.1 / sqrt(embedding_dim)``, PaddleRec's rank-table init), drawn table first.

    Args:
        num_embeddings: rows of the shared table.
        embedding_dim: ``D``.
        num_sparse_fields: ``S``.
        dense_dim: ``Dn``.
        first_order: table width ``1 + D`` (column 0: first-order weight).
        dense_fields: dense values become fields ``x_i * v_i`` (``F = S + Dn``); else they pass through.
        init_std: truncated-normal std.

    Shapes:
        sparse ``(B, S)`` int64, dense ``(B, Dn)`` float -> fields ``(B, F, W)``, dense ``(B, Dn)`` or ``(B, 0)``.
    """

    input_names = ("sparse", "dense")

    def __init__(self, num_embeddings: int, embedding_dim: int, num_sparse_fields: int, dense_dim: int = 0,
                 first_order: bool = False, dense_fields: bool = False, init_std: float | None = None) -> None:
        super().__init__()
        width = embedding_dim + (1 if first_order else 0)
        std = init_std if init_std is not None else 0.1 / math.sqrt(embedding_dim)
        self.embedding = make_embedding(num_embeddings, width, std)
        self.dense_fields = dense_fields
        if dense_fields:
            self.dense_weight = nn.Parameter(truncated_normal_(torch.empty(dense_dim, width), std))
        self.first_order = first_order
        self.num_fields = num_sparse_fields + (dense_dim if dense_fields else 0)
        self.field_dim = width
        self.flat_dim = self.num_fields * width
        self.dense_dim = 0 if dense_fields else dense_dim
        self._register_load_state_dict_pre_hook(self._legacy_keys)

    @staticmethod
    def _legacy_keys(state: dict[str, Any], prefix: str, *args: Any) -> None:
        if prefix + "weight" in state and prefix + "embedding.weight" not in state:
            state[prefix + "embedding.weight"] = state.pop(prefix + "weight")

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fields = self.embedding(sparse)
        if not self.dense_fields:
            return fields, dense
        if self.dense_weight.shape[0]:
            fields = torch.cat([fields, dense.unsqueeze(-1) * self.dense_weight], dim=1)
        return fields, dense[:, :0]


class IndexValueFields(FieldInputs):
    """Fields from global feature ids and values: field ``f`` is ``x_f * e[idx_f]`` (PaddleRec's AutoInt input,
    the id/value layout of :class:`recstack.data.slot.IndexValueReader`; numeric fields carry their value,
    categorical ones 1).

    With ``first_order`` column 0 of each row is the id's first-order weight, scaled by the value like the
    rest, so ``fields[..., 0].sum(1)`` is the linear term ``sum_f w[idx_f] x_f``.

    Initialisation: the table truncated normal with std ``init_std`` (default ``0.1 / sqrt(embedding_dim)``, as
    :class:`SlotFields`).

    Args:
        num_embeddings: rows of the table (``feature_number``).
        embedding_dim: ``D``.
        num_fields: ``F``.
        first_order: table width ``1 + D``.
        init_std: truncated-normal std.

    Shapes:
        feat_idx ``(B, F)`` int64, feat_value ``(B, F)`` float -> fields ``(B, F, W)``, dense ``(B, 0)``.
    """

    input_names = ("feat_idx", "feat_value")

    def __init__(self, num_embeddings: int, embedding_dim: int, num_fields: int, first_order: bool = False,
                 init_std: float | None = None) -> None:
        super().__init__()
        width = embedding_dim + (1 if first_order else 0)
        self.embedding = make_embedding(num_embeddings, width,
                                        init_std if init_std is not None else 0.1 / math.sqrt(embedding_dim))
        self.first_order = first_order
        self.num_fields = num_fields
        self.field_dim = width
        self.flat_dim = num_fields * width
        self.dense_dim = 0

    def forward(self, feat_idx: torch.Tensor, feat_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embedding(feat_idx) * feat_value.unsqueeze(-1), feat_value[:, :0]

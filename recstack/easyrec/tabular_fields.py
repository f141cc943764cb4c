"""The feature-config producer of the rank nets' :class:`~recstack.layers.field_inputs.FieldInputs`.

:class:`TabularFields` turns the feature groups of an EasyRec-style ``data_config`` / ``feature_config`` /
``feature_groups`` (:class:`recstack.easyrec.features.TabularSpec`) into the ``(fields, dense)`` contract of
:mod:`recstack.layers.field_inputs` (whose other producer, :class:`~recstack.layers.field_inputs.SlotFields`,
reads PaddleRec's slot format), through :class:`recstack.easyrec.feature_embedding.FeatureEmbedding` (one
fused table per width, row offsets, ``id_bounds`` for serving). :func:`recstack.rank_inputs.field_inputs`
picks one of the two producers from the config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.layers.field_inputs import FieldInputs


class TabularFields(FieldInputs):
    """The feature groups of a :class:`TabularSpec` as fields: one field per id-like feature and per raw
    feature with ``embedding_dim > 0`` (``x * v``); raw features with ``embedding_dim: 0`` are the dense values.

    Built on :class:`FeatureEmbedding` (its parameters under ``embedding``; ``id_bounds`` for serving).
    Per group the layout is FeatureEmbedding's (id features, projected raw features, plain values),
    groups in the given order; a feature listed in two groups is two fields with one set of rows.

    Initialisation: FeatureEmbedding's (truncated normal, std ``0.1 / sqrt(width)``; with
    ``first_order``, ``0.1 / sqrt(D)`` as :class:`~recstack.layers.field_inputs.SlotFields`).

    Args:
        spec: the features and groups.
        groups: the groups to read (their batch keys are :attr:`input_names`).
        first_order: every field gets one more column, its first-order weight (column 0); needs one width.
        dense_fields: plain raw values are not allowed (every feature must be a field): check
            ``dense_dim == 0`` at the caller, which names the config key.
        width: force every feature to ``width`` columns (the wide part of Wide&Deep: 1); ``None``: each
            feature's ``embedding_dim``.

    Shapes:
        ``<g>.ids`` int64 ``(B, k_g)``, ``<g>.values`` float ``(B, m_g)`` per group -> fields ``(B, F, W)`` (one
        width) or ``(B, sum W_f)``, dense ``(B, Dn)``.
    """

    def __init__(self, spec: TabularSpec, groups: Sequence[str], first_order: bool = False,
                 width: int | None = None) -> None:
        super().__init__()
        self.group_names = list(groups)
        members = [spec.feature(n) for g in self.group_names for n in spec.group(g).feature_names]
        fields = [f for f in members if f.is_id or f.embedding_dim > 0]
        widths = sorted({width if width is not None else f.embedding_dim for f in fields})
        if first_order and len(widths) > 1:
            raise ValueError(f"first-order columns need fields of one width, got widths {widths}")
        if width is not None or first_order:
            extra = 1 if first_order else 0
            new_width = (width if width is not None else widths[0]) + extra
            spec = dataclasses.replace(spec, features=tuple(
                dataclasses.replace(f, embedding_dim=new_width) if (f.is_id or f.embedding_dim > 0) else f
                for f in spec.features), _by_name={})
        std = 0.1 / math.sqrt(widths[0]) if first_order and widths else None
        self.embedding = FeatureEmbedding(spec, self.group_names, init_std=std)
        self.input_names = tuple(self.embedding.input_names)
        self.first_order = first_order
        self.num_fields = len(fields)
        field_widths = [spec.feature(f.name).output_dim for f in fields]
        self.field_dim = field_widths[0] if len(set(field_widths)) == 1 else None
        self.flat_dim = sum(field_widths)
        # per group: width of its fields' part, then of its plain values
        self._splits = []
        for g in self.group_names:
            feats = [spec.feature(n) for n in spec.group(g).feature_names]
            emb = sum(f.output_dim for f in feats if f.is_id or f.embedding_dim > 0)
            self._splits.append((emb, self.embedding.output_dims[g] - emb))
        self.dense_dim = sum(plain for _, plain in self._splits)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.embedding(*inputs)
        fields = [out[:, :emb] for out, (emb, _) in zip(outputs, self._splits) if emb]
        dense = [out[:, emb:] for out, (emb, plain) in zip(outputs, self._splits) if plain]
        if not fields:
            flat = outputs[0][:, :0]
        else:
            flat = fields[0] if len(fields) == 1 else torch.cat(fields, dim=1)
        batch = flat.shape[0]
        values = (dense[0] if len(dense) == 1 else torch.cat(dense, dim=1)) if dense else flat[:, :0]
        if self.field_dim is None:
            return flat, values
        return flat.reshape(batch, self.num_fields, self.field_dim), values

"""Feature groups of EasyRec-style configs as dense tensors: id embeddings and raw values, concatenated.

Built from the same :class:`recstack.easyrec.features.TabularSpec` as the tabular reader
(:mod:`recstack.easyrec.tabular`), so it takes exactly the batch arrays the reader
yields (``<group>.ids``, ``<group>.values``) and any model can be configured the
EasyRec way: list the features in ``feature_config`` and the groups in
``model_config.feature_groups``, and read each group as one ``(B, D_group)`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recstack.easyrec.features import Feature, TabularSpec
from recstack.layers.init import truncated_normal_


class FeatureEmbedding(nn.Module):
    """Embeds the feature groups of a :class:`TabularSpec`, one ``(B, D_g)`` tensor per group.

    Every id-like feature (``IdFeature``; ``RawFeature`` with ``boundaries``) owns
    ``num_embeddings`` rows; features with the same ``embedding_dim`` share one fused
    ``nn.Embedding`` (each at its own row offset), so a group costs one lookup per
    distinct width and the optimizer's sparse (row-wise) path covers every table. A
    feature listed in several groups has one set of rows. A ``RawFeature`` with
    ``embedding_dim > 0`` and no boundaries becomes ``value * v`` with a learned
    vector ``v``; with ``embedding_dim: 0`` the value itself.

    Layout of a group's tensor: the id features' embeddings (grouped by
    ``embedding_dim`` in order of first appearance, each group of widths in the
    feature group's order; with one width, simply the group's order), then the
    projected raw features, then the plain raw values.

    Initialisation: tables and raw-feature vectors truncated normal with std
    ``init_std`` (default ``0.1 / sqrt(embedding_dim)``, as :class:`FieldEmbedding`).
    TensorFlow's ``embedding_column`` default, which EasyRec uses, is ten times
    larger (``1 / sqrt(embedding_dim)``); on DBMTL's sample data it lost 0.02-0.05
    test AUC to the small one (models/multitask/dbmtl/README.md).

    Args:
        spec: the features and groups (from :meth:`TabularSpec.from_config`).
        groups: names of the groups to embed (default: all, in config order).
        init_std: std of the initialisation (``None``: ``0.1 / sqrt(embedding_dim)`` per width).

    Shapes:
        ``forward(*inputs)`` takes the tensors named by :attr:`input_names` in that
        order (``<g>.ids`` int64 ``(B, k_g)``, ``<g>.values`` float ``(B, m_g)``) and
        returns one ``(B, output_dims[g])`` tensor per group, in :attr:`group_names` order.
    """

    def __init__(self, spec: TabularSpec, groups: Sequence[str] | None = None, init_std: float | None = None) -> None:
        super().__init__()
        self.group_names = list(groups) if groups is not None else [g.name for g in spec.groups]
        known = [g.name for g in spec.groups]
        for name in self.group_names:
            if name not in known:
                raise ValueError(f"FeatureEmbedding: unknown feature group '{name}' (known: {', '.join(known)})")
        self.input_names: list[str] = [key for g in self.group_names for key in spec.group_inputs(g)]
        # per column of each ``<group>.ids`` input: ids must lie in [0, bound) (row offsets are added inside)
        self.id_bounds: dict[str, list[int]] = {f"{g}.ids": [f.num_embeddings for f in spec.id_features(g)]
                                                for g in self.group_names if spec.id_features(g)}
        # one fused table per embedding width over the id features of the selected groups
        used: list[Feature] = []
        for g in self.group_names:
            for f in spec.id_features(g):
                if f not in used:
                    used.append(f)
        self.dims = list(dict.fromkeys(f.embedding_dim for f in used))
        offsets: dict[str, int] = {}
        rows = dict.fromkeys(self.dims, 0)
        for f in used:
            offsets[f.name] = rows[f.embedding_dim]
            rows[f.embedding_dim] += f.num_embeddings
        self.tables = nn.ModuleList(
            nn.Embedding(rows[d], d,
                         _weight=truncated_normal_(torch.empty(rows[d], d),
                                                   init_std if init_std is not None else 0.1 / math.sqrt(d)))
            for d in self.dims)
        self.raw_weights = nn.ParameterList()
        self.output_dims: dict[str, int] = {}
        self._plans: list[dict] = []
        for g in self.group_names:
            ids, values = spec.id_features(g), spec.value_features(g)
            plan: dict = {"ids": [], "projected": [], "plain": None}
            for t, d in enumerate(self.dims):
                cols = [i for i, f in enumerate(ids) if f.embedding_dim == d]
                if cols:
                    plan["ids"].append((t, len(cols) * d))
                    self.register_buffer(f"_{len(self._plans)}_cols_{t}", torch.tensor(cols, dtype=torch.long),
                                         persistent=False)
                    self.register_buffer(f"_{len(self._plans)}_offsets_{t}",
                                         torch.tensor([offsets[ids[c].name] for c in cols], dtype=torch.long),
                                         persistent=False)
            for c, f in enumerate(values):
                if f.embedding_dim > 0:
                    std = init_std if init_std is not None else 0.1 / math.sqrt(f.embedding_dim)
                    self.raw_weights.append(nn.Parameter(truncated_normal_(torch.empty(f.embedding_dim), std)))
                    plan["projected"].append((c, len(self.raw_weights) - 1))
            plain = [c for c, f in enumerate(values) if f.embedding_dim == 0]
            if plain:
                plan["plain"] = len(plain)
                self.register_buffer(f"_{len(self._plans)}_plain", torch.tensor(plain, dtype=torch.long),
                                     persistent=False)
            plan["has_ids"], plan["has_values"] = bool(ids), bool(values)
            self._plans.append(plan)
            self.output_dims[g] = sum(f.output_dim for f in ids + values)

    def _group(self, index: int, ids: torch.Tensor | None, values: torch.Tensor | None,
               embeddings_only: bool = False) -> torch.Tensor:
        plan = self._plans[index]
        parts = []
        for t, _ in plan["ids"]:
            cols = getattr(self, f"_{index}_cols_{t}")
            offsets = getattr(self, f"_{index}_offsets_{t}")
            parts.append(self.tables[t](ids.index_select(1, cols) + offsets).flatten(1))
        if embeddings_only:
            return torch.cat(parts, dim=1) if parts else torch.zeros(0)
        for c, w in plan["projected"]:
            parts.append(values[:, c:c + 1] * self.raw_weights[w])
        if plan["plain"]:
            parts.append(values.index_select(1, getattr(self, f"_{index}_plain")).to(torch.float32))
        return torch.cat(parts, dim=1)

    def _split(self, inputs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"FeatureEmbedding takes {len(self.input_names)} tensors ({', '.join(self.input_names)}), "
                             f"got {len(inputs)}")
        out, i = [], 0
        for plan in self._plans:
            ids = values = None
            if plan["has_ids"]:
                ids, i = inputs[i], i + 1
            if plan["has_values"]:
                values, i = inputs[i], i + 1
            out.append((ids, values))
        return out

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return [self._group(g, ids, values) for g, (ids, values) in enumerate(self._split(inputs))]

    def embedding_penalty(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``sum(e ** 2) / 2`` over the id embeddings the batch looks up, all groups (EasyRec's
        ``embedding_regularization`` before its coefficient; raw values are not included)."""
        total = torch.zeros(())
        for g, (ids, values) in enumerate(self._split(inputs)):
            if ids is not None:
                total = total + 0.5 * self._group(g, ids, values, embeddings_only=True).pow(2).sum()
        return total


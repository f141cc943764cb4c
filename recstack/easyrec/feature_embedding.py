"""Feature groups of EasyRec-style configs as dense tensors: id embeddings and raw values, concatenated.

Built from the same :class:`recstack.easyrec.features.TabularSpec` as the tabular reader
(:mod:`recstack.easyrec.tabular`), so it takes exactly the batch arrays the reader
yields (``<group>.ids``, ``<group>.values``, and the keys of tag and sequence features)
and any model can be configured the EasyRec way: list the features in ``feature_config``
and the groups in ``model_config.feature_groups``, and read each group as one ``(B, D_group)``
tensor (:meth:`FeatureEmbedding.forward`), or feature by feature with its sequences apart
(:meth:`FeatureEmbedding.group_features`, what the backbone's input layer reads).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recstack.easyrec.features import Feature, TabularSpec
from recstack.layers.init import truncated_normal_


class FeatureEmbedding(nn.Module):
    """Embeds the feature groups of a :class:`TabularSpec`, one ``(B, D_g)`` tensor per group.

    Every id-like feature (``IdFeature``; ``RawFeature`` with ``boundaries``; ``TagFeature``;
    ``SequenceFeature`` of ids) owns ``num_embeddings`` rows; features with the same
    ``embedding_dim`` share one fused ``nn.Embedding`` (each at its own row offset), so a group
    costs one lookup per distinct width and the optimizer's sparse (row-wise) path covers every
    table. A feature listed in several groups has one set of rows, and so have the features
    that set the same ``embedding_name`` (EasyRec's shared embedding: DIN's history and target
    item in one table). A ``RawFeature`` with ``embedding_dim > 0`` and no boundaries becomes
    ``value * v`` with a learned vector ``v``; with ``embedding_dim: 0`` the value itself.

    A ``TagFeature`` pools the embeddings of its row's values with weights ``w`` (1 per value, or
    the ``key:weight`` weights) by its ``combiner`` (TensorFlow's ``embedding_column`` rules, which
    EasyRec uses): ``sum``: ``sum(w * e)``; ``mean``: ``sum(w * e) / sum(w)``; ``sqrtn``:
    ``sum(w * e) / sqrt(sum(w ** 2))``; ``mean`` and ``sqrtn`` drop values of weight <= 0. A row
    without values gives zeros. A ``SequenceFeature`` is not pooled: :meth:`group_features` gives
    it as ``(B, L, D)`` (zeros past each row's length) with the lengths.

    Layout of a group's tensor (:meth:`forward`): the id features' embeddings (grouped by
    ``embedding_dim`` in order of first appearance, each group of widths in the feature
    group's order; with one width, simply the group's order), then the projected raw
    features, then the pooled tag features (group order), then the plain raw values. A group
    holding a sequence feature has no such tensor (EasyRec asks for a ``sequence_combiner``
    there): read it with :meth:`group_features`.

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
        order (``<g>.ids`` int64 ``(B, k_g)``, ``<g>.values`` float ``(B, m_g)``, then per tag or
        sequence feature its ids int64 / values float ``(B, L)``, weights float ``(B, L)`` and lengths
        int64 ``(B, 1)``, see :meth:`TabularSpec.ragged_keys`) and returns one ``(B, output_dims[g])``
        tensor per group, in :attr:`group_names` order.
    """

    def __init__(self, spec: TabularSpec, groups: Sequence[str] | None = None, init_std: float | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.init_std = init_std
        self.group_names = list(groups) if groups is not None else [g.name for g in spec.groups]
        known = [g.name for g in spec.groups]
        for name in self.group_names:
            if name not in known:
                raise ValueError(f"FeatureEmbedding: unknown feature group '{name}' (known: {', '.join(known)})")
        self.input_names: list[str] = [key for g in self.group_names for key in spec.group_inputs(g)]
        # ids must lie in [0, bound) (row offsets are added inside): one bound per column of a group's ids, one
        # bound for every position of a tag's or sequence's ids (their width changes from batch to batch)
        self.id_bounds: dict[str, list[int] | int] = {f"{g}.ids": [f.num_embeddings for f in spec.id_features(g)]
                                                      for g in self.group_names if spec.id_features(g)}
        for g in self.group_names:
            for f in spec.ragged_features(g):
                if f.has_ids:
                    self.id_bounds[spec.ragged_keys(g, f)["ids"]] = f.num_embeddings
        # one fused table per embedding width over the tables of the selected groups' features
        used: dict[str, Feature] = {}
        for g in self.group_names:
            for name in spec.group(g).feature_names:
                f = spec.feature(name)
                if f.has_ids and f.table not in used:
                    used[f.table] = f
        self.dims = list(dict.fromkeys(f.embedding_dim for f in used.values()))
        offsets: dict[str, int] = {}
        rows = dict.fromkeys(self.dims, 0)
        for key, f in used.items():
            offsets[key] = rows[f.embedding_dim]
            rows[f.embedding_dim] += f.num_embeddings
        self.tables = nn.ModuleList(
            nn.Embedding(rows[d], d,
                         _weight=truncated_normal_(torch.empty(rows[d], d),
                                                   init_std if init_std is not None else 0.1 / math.sqrt(d)))
            for d in self.dims)
        # table key -> (index in self.tables, row offset): lookup() of a feature's ids outside its groups
        self._table_rows = {key: (self.dims.index(f.embedding_dim), offsets[key]) for key, f in used.items()}
        self.raw_weights = nn.ParameterList()
        self.output_dims: dict[str, int] = {}
        self._plans: list[dict[str, Any]] = []
        for g in self.group_names:
            self._plans.append(self._plan(spec, g, offsets, init_std))
            self.output_dims[g] = sum(f.output_dim for f in spec.id_features(g) + spec.value_features(g)
                                      + spec.ragged_features(g) if not f.is_sequence)
        self.wide_embedding: FeatureEmbedding | None = None  # made by wide()
        self._wide_width = 0

    def _new_vector(self, width: int, init_std: float | None) -> int:
        """A learned ``(width,)`` vector of a projected raw value; its index in :attr:`raw_weights`."""
        std = init_std if init_std is not None else 0.1 / math.sqrt(width)
        self.raw_weights.append(nn.Parameter(truncated_normal_(torch.empty(width), std)))
        return len(self.raw_weights) - 1

    def _plan(self, spec: TabularSpec, g: str, offsets: dict[str, int], init_std: float | None) -> dict[str, Any]:
        """How group ``g`` is computed: lookups per table, projected and plain values, ragged features, and each
        feature's place (``order``, group order)."""
        index = len(self._plans)
        ids, values = spec.id_features(g), spec.value_features(g)
        plan: dict[str, Any] = {"name": g, "ids": [], "projected": [], "plain": None, "id_pos": [None] * len(ids),
                                "ragged": [], "order": []}
        for t, d in enumerate(self.dims):
            cols = [i for i, f in enumerate(ids) if f.embedding_dim == d]
            if cols:
                plan["ids"].append((t, len(cols) * d))
                for p, c in enumerate(cols):
                    plan["id_pos"][c] = (t, p)
                self.register_buffer(f"_{index}_cols_{t}", torch.tensor(cols, dtype=torch.long), persistent=False)
                self.register_buffer(f"_{index}_offsets_{t}",
                                     torch.tensor([offsets[ids[c].table] for c in cols], dtype=torch.long),
                                     persistent=False)
        projected: dict[int, int] = {}
        for c, f in enumerate(values):
            if f.embedding_dim > 0:
                projected[c] = len(plan["projected"])
                plan["projected"].append((c, self._new_vector(f.embedding_dim, init_std)))
        plain = [c for c, f in enumerate(values) if f.embedding_dim == 0]
        if plain:
            plan["plain"] = len(plain)
            self.register_buffer(f"_{index}_plain", torch.tensor(plain, dtype=torch.long), persistent=False)
        for f in spec.ragged_features(g):
            entry = {"feature": f.name, "keys": spec.ragged_keys(g, f), "tag": f.is_tag, "combiner": f.combiner,
                     "table": None, "offset": 0, "proj": None}
            if f.has_ids:
                entry["table"], entry["offset"] = self.dims.index(f.embedding_dim), offsets[f.table]
            elif f.embedding_dim > 0:
                entry["proj"] = self._new_vector(f.embedding_dim, init_std)
            plan["ragged"].append(entry)
        id_i = value_i = ragged_i = 0
        for name in spec.group(g).feature_names:
            f = spec.feature(name)
            if f.is_ragged:
                plan["order"].append(("ragged", ragged_i))
                ragged_i += 1
            elif f.is_id:
                plan["order"].append(("id", id_i))
                id_i += 1
            elif not f.is_group_input:
                plan["order"].append(("proj", projected[value_i]) if value_i in projected else ("plain", value_i))
                value_i += 1
        plan["has_ids"], plan["has_values"] = bool(ids), bool(values)
        plan["sequences"] = [f.name for f in spec.sequence_features(g)]
        self._flat_order(index, plan, ids, values, plain)
        return plan

    def _flat_order(self, index: int, plan: dict[str, Any], ids: Sequence[Feature], values: Sequence[Feature],
                    plain: Sequence[int]) -> None:
        """Where each feature of the group sits in :meth:`forward`'s layout (lookups by width, projected, tags,
        plain values), so that :meth:`group_flat` can put the group's order back with one column gather; no gather
        (``plan["flat_perm"]`` False) when the two orders agree."""
        if plan["sequences"]:
            plan["flat_perm"] = False
            return
        starts, at = {}, 0
        for t, width in plan["ids"]:
            for c, (tc, p) in enumerate(plan["id_pos"]):
                if tc == t:
                    starts[("id", c)] = at + p * self.dims[t]
            at += width
        for j, (c, _) in enumerate(plan["projected"]):
            starts[("proj", j)] = at
            at += values[c].embedding_dim
        for i, entry in enumerate(plan["ragged"]):
            starts[("ragged", i)] = at
            at += self.spec.feature(entry["feature"]).output_dim
        for c in plain:
            starts[("plain", c)] = at
            at += 1
        columns: list[int] = []
        for kind, i in plan["order"]:
            if kind == "id":
                width = ids[i].embedding_dim
            elif kind == "proj":
                width = values[plan["projected"][i][0]].embedding_dim
            elif kind == "plain":
                width = 1
            else:
                width = self.spec.feature(plan["ragged"][i]["feature"]).output_dim
            columns += range(starts[(kind, i)], starts[(kind, i)] + width)
        plan["flat_perm"] = columns != list(range(len(columns)))
        if plan["flat_perm"]:
            self.register_buffer(f"_{index}_flat", torch.tensor(columns, dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ pieces
    def _lookup(self, index: int, t: int, ids: torch.Tensor) -> torch.Tensor:
        """``(B, k_t, d_t)``: the group's ``.ids`` columns of width ``dims[t]``, looked up."""
        cols = getattr(self, f"_{index}_cols_{t}")
        offsets = getattr(self, f"_{index}_offsets_{t}")
        return self.tables[t](ids.index_select(1, cols) + offsets)

    def _steps(self, entry: dict[str, Any], batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A tag's or sequence's values as ``(B, L, D)`` (padding not yet zeroed) and the mask ``(B, L)`` of the
        real values (position < the row's length)."""
        keys = entry["keys"]
        lengths = batch[keys["lengths"]].reshape(-1, 1)
        if "ids" in keys:
            ref = batch[keys["ids"]]
            steps = self.tables[entry["table"]](ref + entry["offset"])
        else:
            ref = batch[keys["values"]].to(torch.float32)
            steps = ref.unsqueeze(-1)
            if entry["proj"] is not None:
                steps = steps * self.raw_weights[entry["proj"]]
        # position + 1 of each step, from tensor ops only (no Python int from a shape: traceable, exportable)
        mask = torch.ones_like(ref, dtype=torch.long).cumsum(1) <= lengths
        return steps, mask

    def _pooled(self, entry: dict[str, Any], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, D)``: a tag feature's embeddings pooled by its combiner."""
        steps, mask = self._steps(entry, batch)
        weights = mask.to(steps.dtype)
        if "weights" in entry["keys"]:
            weights = weights * batch[entry["keys"]["weights"]].to(steps.dtype)
        combiner = entry["combiner"]
        if combiner != "sum":  # TensorFlow drops the values of weight <= 0 for mean and sqrtn
            weights = weights.clamp_min(0.0)
        pooled = (steps * weights.unsqueeze(-1)).sum(1)
        if combiner == "sum":
            return pooled
        total = weights.sum(1, keepdim=True) if combiner == "mean" else weights.pow(2).sum(1, keepdim=True).sqrt()
        return pooled / torch.where(total > 0, total, torch.ones_like(total))

    def _sequence(self, entry: dict[str, Any], batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, D)`` with zeros past each row's length, and the lengths int64 ``(B,)``."""
        steps, mask = self._steps(entry, batch)
        return steps * mask.unsqueeze(-1).to(steps.dtype), batch[entry["keys"]["lengths"]].reshape(-1)

    def _batch(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"FeatureEmbedding takes {len(self.input_names)} tensors ({', '.join(self.input_names)}), "
                             f"got {len(inputs)}")
        return dict(zip(self.input_names, inputs))

    def _group(self, index: int, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        plan = self._plans[index]
        if plan["sequences"]:
            raise ValueError(f"feature group '{plan['name']}' holds the sequence feature '{plan['sequences'][0]}', "
                             "which has no 2-D form (EasyRec asks for a sequence_combiner there); read the group with "
                             "an input_layer's output_seq_and_normal_feature, or make the feature a TagFeature")
        ids, values = batch.get(f"{plan['name']}.ids"), batch.get(f"{plan['name']}.values")
        parts = [self._lookup(index, t, ids).flatten(1) for t, _ in plan["ids"]]
        for c, w in plan["projected"]:
            parts.append(values[:, c:c + 1] * self.raw_weights[w])
        parts += [self._pooled(entry, batch) for entry in plan["ragged"]]
        if plan["plain"]:
            parts.append(values.index_select(1, getattr(self, f"_{index}_plain")).to(torch.float32))
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ API
    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        batch = self._batch(inputs)
        return [self._group(g, batch) for g in range(len(self._plans))]

    def group_features(self, group: str, batch: Mapping[str, torch.Tensor]
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """One group feature by feature, in the group's order, sequences apart.

        Args:
            group: a group of :attr:`group_names`.
            batch: at least the group's keys (:meth:`TabularSpec.group_inputs`).

        Returns:
            ``(features, sequences, lengths)``: each non-sequence feature's ``(B, D_i)`` (an id's embedding, a tag's
            pooled embeddings, a projected or plain raw value), each sequence feature's ``(B, L, D_j)`` (zeros past
            each row's length), and the lengths int64 ``(B,)`` of the group's first sequence (the reader checks that a
            group's sequences have equal lengths), ``None`` without sequences.
        """
        index = self.group_names.index(group)
        plan = self._plans[index]
        ids, values = batch.get(f"{group}.ids"), batch.get(f"{group}.values")
        # unbind, not one select per feature: its backward is one stack, not a zero-filled table-wide gradient each
        lookups = {t: self._lookup(index, t, ids).unbind(1) for t, _ in plan["ids"]}
        features: list[torch.Tensor] = []
        sequences: list[torch.Tensor] = []
        lengths = None
        for kind, i in plan["order"]:
            if kind == "id":
                t, p = plan["id_pos"][i]
                features.append(lookups[t][p])
            elif kind == "proj":
                c, w = plan["projected"][i]
                features.append(values[:, c:c + 1] * self.raw_weights[w])
            elif kind == "plain":
                features.append(values[:, i:i + 1].to(torch.float32))
            elif plan["ragged"][i]["tag"]:
                features.append(self._pooled(plan["ragged"][i], batch))
            else:
                steps, row_lengths = self._sequence(plan["ragged"][i], batch)
                sequences.append(steps)
                lengths = row_lengths if lengths is None else lengths
        return features, sequences, lengths

    def lookup(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        """``(*ids.shape, D)``: rows of ``feature``'s table (its ``embedding_name``'s) for ids in
        ``[0, num_embeddings)`` read elsewhere (the retrieval stage's history and target item ids embedded with
        the item tower's item-id table).

        Raises:
            KeyError: the feature has no table here (not an id feature of the embedded groups).
        """
        f = self.spec.feature(feature)
        if not f.has_ids or f.table not in self._table_rows:
            raise KeyError(f"feature '{feature}' has no id table in this embedding (groups {self.group_names})")
        t, offset = self._table_rows[f.table]
        return self.tables[t](ids + offset)

    def group_flat(self, group: str, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, D_g)``: the concatenation of :meth:`group_features`' features (group order) computed the fused way
        (:meth:`forward`'s lookups, one column gather when the orders differ): the backbone input layer's 2-D form.

        Raises:
            ValueError: the group holds a sequence feature (no 2-D form).
        """
        index = self.group_names.index(group)
        flat = self._group(index, batch)
        return flat.index_select(1, getattr(self, f"_{index}_flat")) if self._plans[index]["flat_perm"] else flat

    def feature_dims(self, group: str) -> tuple[list[int], list[int]]:
        """Widths of :meth:`group_features`' outputs: the non-sequence features', the sequence features' (per step)."""
        feats = [self.spec.feature(n) for n in self.spec.group(group).feature_names]
        return ([f.output_dim for f in feats if not f.is_sequence and not f.is_group_input],
                [f.output_dim for f in feats if f.is_sequence])

    def wide(self, width: int) -> FeatureEmbedding:
        """The wide part of the ``wide_deep: WIDE`` groups (EasyRec's ``wide_output_dim``), made on first use.

        Every feature of those groups gets a wide embedding of ``width`` columns, parameters of its own (apart
        from its deep embedding): ids a table of that width (shared as the deep ones: one set of rows per
        feature or ``embedding_name``), tags pooled by ``sum`` (EasyRec's wide combiner), raw values ``value * v``
        (also those of ``embedding_dim: 0``). A :class:`FeatureEmbedding` over the WIDE groups whose
        :meth:`group_features` gives each feature's ``(B, width)``.

        Raises:
            ValueError: another width was asked for before (EasyRec has one ``wide_output_dim`` per model).
        """
        if self.wide_embedding is not None:
            if self._wide_width != width:
                raise ValueError(f"wide_output_dim {width} differs from the {self._wide_width} another input layer "
                                 "set (a model has one wide width, as in EasyRec)")
            return self.wide_embedding
        groups = [g for g in self.group_names if self.spec.group(g).wide_deep == "WIDE"]
        members = {n for g in groups for n in self.spec.group(g).feature_names}
        features = tuple(dataclasses.replace(f, embedding_dim=width, combiner="sum") if f.name in members else f
                         for f in self.spec.features)
        spec = dataclasses.replace(self.spec, features=features, _by_name={})
        self.wide_embedding = FeatureEmbedding(spec, groups, init_std=self.init_std)
        self._wide_width = width
        return self.wide_embedding

    def embedding_penalty(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``sum(e ** 2) / 2`` over the id embeddings the batch looks up, all groups (EasyRec's
        ``embedding_regularization`` before its coefficient; raw values are not included). A tag counts
        with its pooled embedding, a sequence with its steps (EasyRec regularises the columns' outputs)."""
        return self.batch_penalty(self._batch(inputs))

    def batch_penalty(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`embedding_penalty` of a batch given by key; groups whose keys the batch lacks are skipped."""
        total = torch.zeros(())
        for index, plan in enumerate(self._plans):
            if any(key not in batch for key in self.spec.group_inputs(plan["name"])):
                continue
            if plan["ids"]:
                ids = batch[f"{plan['name']}.ids"]
                parts = [self._lookup(index, t, ids).flatten(1) for t, _ in plan["ids"]]
                total = total + 0.5 * torch.cat(parts, dim=1).pow(2).sum()
            for entry in plan["ragged"]:
                if entry["table"] is None:
                    continue
                out = self._pooled(entry, batch) if entry["tag"] else self._sequence(entry, batch)[0]
                total = total + 0.5 * out.pow(2).sum()
        return total

"""Retrieval models: a user tower and an item tower over shared feature embeddings, the training objectives of
:mod:`recstack.retrieval.losses`, and exact whole-corpus evaluation.

A config (``models/recall/<m>/config.yaml``) describes two tables in EasyRec's keys: the interactions
(``data_config`` / ``feature_config`` / ``model_config.feature_groups``: one line per (user, target item), with the
user's features, the history before the target and, in test lines, every item the user saw before) and the items
(``item_config``, :mod:`recstack.retrieval.corpus`). ``model_config`` names the roles::

    model_config:
      feature_groups: [{group_name: user, feature_names: [...]}, {group_name: items, feature_names: [...]}]
      user_groups: [user]         # embedded for the user tower
      history: hist_item_id       # SequenceFeature of item ids before the target (optional)
      target: item_id             # IdFeature: the target item id
      seen: seen_item_id          # TagFeature / SequenceFeature: items to leave out of the ranking (optional)

The history, target and seen ids use the item table's id space (``num_buckets`` of its item-id feature); the
towers embed history ids with the item tower's item-id table (:meth:`RetrievalNet.item_embedding`).

``hyper_parameters.loss`` chooses the objective (``type``: ``softmax``, ``sampled_softmax``, ``in_batch``,
``bce``; ``temperature``; ``num_negatives``; ``sampler``: ``uniform`` / ``popularity``; ``sampling_power``;
``log_q``: the correction on or off). ``runner.topk`` (default ``[10, 50, 100]``) and ``runner.mask_seen``
(default True) set the evaluation: per checkpoint ``hit_rate@K``, ``recall@K``, ``ndcg@K`` and ``mrr`` against the
whole corpus (:mod:`recstack.retrieval.ranking`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import Check, Config, ConfigError, OneOf
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.schema import Node
from recstack.metrics import Metric, retrieval_metrics
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.losses import (
    LOSSES,
    SAMPLERS,
    FrequencyEstimator,
    NegativeSampler,
    bce_loss,
    in_batch_loss,
    sampled_softmax_loss,
    softmax_loss,
)
from recstack.retrieval.ranking import Scorer, target_positions, top_k
from recstack.wrapper import Batch, DygraphModel, unwrap_model

SIMILARITIES = ("inner_product", "cosine")
_MAPPING = Check("a mapping", lambda v: isinstance(v, dict), "mappings")
#: the keys every retrieval wrapper reads (a model's wrapper adds its own: ``{**RETRIEVAL_SCHEMA, ...}``)
RETRIEVAL_SCHEMA: dict[str, Check] = {"loss": _MAPPING, "item_config": _MAPPING,
                                      "similarity": OneOf(*SIMILARITIES)}


@dataclass(frozen=True)
class Roles:
    """The interaction batch keys of each role (see the module docstring)."""

    user_groups: tuple[str, ...]
    history: dict[str, str] | None   # {"ids": key, "lengths": key}
    history_feature: str | None
    target: tuple[str, int]          # (key of the group's ids, column)
    seen: dict[str, str] | None

    @classmethod
    def from_config(cls, config: Config, spec: TabularSpec, corpus: ItemCorpus) -> Roles:
        node = Node.at(config, "hyper_parameters.model_config")
        groups = [g.name for g in spec.groups]
        user_groups = tuple(node.get_list("user_groups", str, scalar_ok=True))
        for i, g in enumerate(user_groups):
            if g not in groups:
                raise ConfigError(f"{node.where(f'user_groups[{i}]')}: unknown feature group {g!r} (known: {groups})")

        def find(key: str, kinds: Sequence[str]) -> tuple[str, Any]:
            name = node.get(key, type=str)
            try:
                f = spec.feature(name)
            except KeyError:
                raise ConfigError(f"{node.where(key)}: unknown feature {name!r}") from None
            if f.feature_type not in kinds:
                raise ConfigError(f"{node.where(key)}: {name!r} must be a {' or '.join(kinds)}, got {f.feature_type}")
            group = next((g.name for g in spec.groups if name in g.feature_names), None)
            if group is None:
                raise ConfigError(f"{node.where(key)}: {name!r} is in no feature group (the reader reads only "
                                  "grouped features)")
            if group in user_groups:
                raise ConfigError(f"{node.where(key)}: {name!r} is in user group {group!r}; ids of items go in a "
                                  "group the user tower does not embed")
            ids = f.sub_feature_type == "IdFeature" or f.is_tag or f.feature_type == "IdFeature"
            if not ids or f.hash_bucket_size or f.num_buckets != corpus.num_buckets:
                raise ConfigError(f"{node.where(key)}: {name!r} must hold item ids as the item table's "
                                  f"'{corpus.item_feature}' does (num_buckets {corpus.num_buckets}, no hashing)")
            return group, f

        history = seen = None
        history_feature = None
        if node.get("history", None) is not None:
            group, f = find("history", ("SequenceFeature",))
            history, history_feature = spec.ragged_keys(group, f), f.name
        group, f = find("target", ("IdFeature",))
        column = [x.name for x in spec.id_features(group)].index(f.name)
        target = (f"{group}.ids", column)
        if node.get("seen", None) is not None:
            group, f = find("seen", ("SequenceFeature", "TagFeature"))
            seen = spec.ragged_keys(group, f)
        return cls(user_groups, history, history_feature, target, seen)


class RetrievalNet(nn.Module):
    """Base of the retrieval networks: subclasses define :meth:`user_tower` and :meth:`item_tower`.

    Args:
        corpus: the item corpus (:class:`ItemCorpus`).
        roles: the interaction batch keys.
        user_input_names: the batch keys the user tower reads (its export's inputs), in order.
        similarity: ``inner_product`` or ``cosine`` (both towers' outputs L2-normalised).

    Shapes:
        ``encode_user(batch)`` -> ``(B, D)`` (``(B, K, D)`` for multi-interest models); ``encode_items(*inputs)``
        -> ``(R, D)``; ``score(user, items (R, D))`` -> ``(B, R)``; ``score_pairs(user, items (B, T, D))``
        -> ``(B, T)``. ``forward(*inputs)`` is the user tower over :attr:`user_input_names` (what is exported).
    """

    def __init__(self, corpus: ItemCorpus, roles: Roles, user_input_names: Sequence[str],
                 similarity: str = "inner_product") -> None:
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.corpus = corpus
        self.roles = roles
        self.user_input_names = list(user_input_names)
        self.similarity = similarity

    # -------------------------------------------------------------- towers (subclasses)
    def user_tower(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def item_tower(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """The item-id table's rows for item ids (history embeddings); subclasses with such a table define it."""
        raise NotImplementedError(f"{type(self).__name__} has no item-id table")

    # -------------------------------------------------------------- common
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.similarity == "cosine" else x

    def encode_user(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._normalise(self.user_tower(batch))

    def encode_items(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._normalise(self.item_tower(*inputs))

    def item_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Item vectors of corpus rows (any shape) -> ``(*rows.shape, D)``."""
        flat = rows.reshape(-1)
        return self.encode_items(*self.corpus.features(flat)).reshape(*rows.shape, -1)

    @torch.no_grad()
    def corpus_vectors(self, chunk: int = 65536) -> torch.Tensor:
        """``(N, D)``: every corpus item's vector (evaluation, export)."""
        rows = torch.arange(self.corpus.num_items, device=self.corpus.item_ids.device)
        return torch.cat([self.item_vectors(rows[i:i + chunk]) for i in range(0, len(rows), chunk)])

    def score(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return user @ items.T

    def score_pairs(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (user.unsqueeze(1) * items).sum(-1)

    def training_queries(self, batch: Mapping[str, torch.Tensor], target_rows: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries (M, ...), target rows (M,))`` the loss trains on: by default one per line (the user and its
        target); a sequence model gives one per history position."""
        return self.encode_user(batch), target_rows

    def train_query(self, queries: torch.Tensor, target_vectors: torch.Tensor) -> torch.Tensor:
        """The query scored in training once the target is known (MIND's label-aware attention); default as is."""
        return queries

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encode_user(dict(zip(self.user_input_names, inputs)))

    def history(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(ids (B, L), mask (B, L))`` of the history, newest first, or ``None`` without one."""
        keys = self.roles.history
        if keys is None:
            return None
        ids = batch[keys["ids"]]
        lengths = batch[keys["lengths"]].reshape(-1, 1)
        mask = torch.ones_like(ids).cumsum(1) <= lengths
        return ids, mask


class RetrievalWrapper(DygraphModel):
    """The training wrapper of the retrieval models: objectives, evaluation against the corpus, export hooks.

    Subclasses define ``build_net(config, spec, corpus, roles) -> RetrievalNet``.
    """

    label_names = ()
    hyper_parameter_schema = RETRIEVAL_SCHEMA

    def build_net(self, config: Config, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> RetrievalNet:
        raise NotImplementedError

    def create_model(self, config: Config) -> RetrievalNet:
        spec = TabularSpec.from_config(config)
        corpus = ItemCorpus(config)
        roles = Roles.from_config(config, spec, corpus)
        net = self.build_net(config, spec, corpus, roles)
        self.roles = roles
        self._configure_loss(config, corpus.num_items)
        self.topk = _topk(config)
        self.mask_seen = bool(config.get("runner.mask_seen", True, type=bool))
        self.use_index = bool(config.get("runner.use_index", False, type=bool))
        self.index_kind = config.get("runner.index_kind", "hnsw", type=str)
        if self.use_index and self.index_kind not in ("flat", "ivf", "hnsw"):
            raise ConfigError(f"{config.source('runner.index_kind')}: expected flat, ivf or hnsw, got "
                              f"{self.index_kind!r}")
        self._index = None
        keys = list(net.user_input_names) + [roles.target[0]]
        if roles.seen is not None:
            keys += [roles.seen["ids"], roles.seen["lengths"]]
        self.feed_names = tuple(dict.fromkeys(keys))
        self._evaluating = False
        self._corpus_vectors: torch.Tensor | None = None
        return net

    def _configure_loss(self, config: Config, num_items: int) -> None:
        node = Node.at(config, "hyper_parameters.loss")
        self.loss_type = node.get("type", "in_batch", type=str)
        if self.loss_type not in LOSSES:
            raise ConfigError(f"{node.where('type')}: expected one of {', '.join(LOSSES)}, got {self.loss_type!r}")
        self.temperature = float(node.get("temperature", 1.0, type=float))
        if self.temperature <= 0:
            raise ConfigError(f"{node.where('temperature')}: must be > 0, got {self.temperature}")
        self.num_negatives = int(node.get("num_negatives", 100, type=int))
        if self.num_negatives < 1:
            raise ConfigError(f"{node.where('num_negatives')}: must be >= 1, got {self.num_negatives}")
        sampler = node.get("sampler", "popularity" if self.loss_type == "sampled_softmax" else "uniform", type=str)
        if sampler not in SAMPLERS:
            raise ConfigError(f"{node.where('sampler')}: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
        power = float(node.get("sampling_power", 0.75, type=float))
        self.log_q = bool(node.get("log_q", True, type=bool))
        alpha = float(node.get("frequency_alpha", 0.01, type=float))
        node.finish()
        seed = int(config.get("runner.seed", 0) or 0)
        self.sampler = NegativeSampler(num_items, sampler, power, seed=seed)
        self.frequency = FrequencyEstimator(num_items, alpha)

    # -------------------------------------------------------------- batches
    def create_feeds(self, batch_data: Batch, config: Config) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        missing = [k for k in self.feed_names if k not in batch_data]
        if missing:
            raise KeyError(f"batch has no column {missing[0]!r}; the reader gives {sorted(batch_data)}")
        return [batch_data[k] for k in self.feed_names], []

    def _targets(self, net: RetrievalNet, batch: Batch) -> torch.Tensor:
        key, column = self.roles.target
        rows = net.corpus.rows(batch[key][:, column])
        if (rows < 0).any():
            bad = int(batch[key][:, column][rows < 0][0])
            raise ValueError(f"target item id {bad} is not in the item table ({net.corpus.num_items} items); every "
                             "target must be an item of item_config.data_path")
        return rows

    def _exclude(self, net: RetrievalNet, batch: Batch) -> torch.Tensor | None:
        if not self.mask_seen or self.roles.seen is None:
            return None
        ids = batch[self.roles.seen["ids"]]
        mask = torch.ones_like(ids).cumsum(1) <= batch[self.roles.seen["lengths"]].reshape(-1, 1)
        return torch.where(mask, net.corpus.rows(ids), torch.full_like(ids, -1))

    # -------------------------------------------------------------- training
    def create_metrics(self) -> tuple[list[Metric], list[str]]:
        """Training logs the loss only; evaluation (after :meth:`begin_evaluation`) the ranking metrics."""
        return retrieval_metrics(self.topk) if self._evaluating else ([], [])

    def train_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[torch.Tensor, list[Metric], dict[str, Any] | None]:
        self._evaluating = False
        self._corpus_vectors = None
        net: RetrievalNet = unwrap_model(dy_model)
        batch = dict(batch_data)
        targets = self._targets(net, batch)
        queries, rows = net.training_queries(batch, targets)
        loss = self.objective(net, queries, rows)
        return loss, metrics_list, None

    def objective(self, net: RetrievalNet, queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The configured loss of ``queries`` against their target ``rows`` (module docstring of losses)."""
        t = self.temperature
        positives = net.item_vectors(rows)                                        # (M, D)
        query = net.train_query(queries, positives)                              # (M, D)
        if self.loss_type == "in_batch":
            log_q = None
            if self.log_q:
                self.frequency.update(rows.cpu())
                log_q = self.frequency.log_q(rows.cpu()).to(rows.device)
            return in_batch_loss(net.score(query, positives) / t, rows, log_q)
        pos = net.score_pairs(query, positives.unsqueeze(1)).squeeze(1) / t
        if self.loss_type == "softmax":
            logits = net.score(query, net.item_vectors(torch.arange(net.corpus.num_items, device=rows.device))) / t
            return softmax_loss(logits, rows)
        self.sampler.observe(rows.cpu())
        if self.loss_type == "sampled_softmax":
            negs, log_q = self.sampler.sample((self.num_negatives,), rows.device)
            neg = net.score(query, net.item_vectors(negs)) / t                    # (M, S)
            accidental = negs.unsqueeze(0) == rows.unsqueeze(1)
            return sampled_softmax_loss(pos - (self._log_q_of(rows) if self.log_q else 0.0), neg,
                                        log_q if self.log_q else None, accidental)
        negs, _ = self.sampler.sample((len(rows), self.num_negatives), rows.device)  # bce: per query
        neg = net.score_pairs(query, net.item_vectors(negs)) / t                  # (M, S)
        return bce_loss(pos, neg)

    def _log_q_of(self, rows: torch.Tensor) -> torch.Tensor:
        """``log(S * q(row))`` of the targets under the sampler (the correction applies to every logit)."""
        p = self.sampler.probabilities()[rows.cpu()]
        return torch.log(p * self.num_negatives).float().to(rows.device)

    # -------------------------------------------------------------- evaluation
    def begin_evaluation(self, model: nn.Module, config: Config) -> None:
        """Embed the whole corpus once for the checkpoint being evaluated (and index it with ``runner.use_index``)."""
        self._evaluating = True
        net = unwrap_model(model)
        self._corpus_vectors = net.corpus_vectors()
        self._index = None
        if self.use_index:
            if not getattr(net, "dot_product", True):
                raise ConfigError(f"runner.use_index: {type(net).__name__} scores pairs with a network; no vector "
                                  "index applies (evaluate it exactly)")
            from recstack.retrieval.index import build_index

            self._index = build_index(self._corpus_vectors.cpu().numpy().astype("float32"), self.index_kind,
                                      net.similarity)

    def _index_positions(self, net: RetrievalNet, user: torch.Tensor, targets: torch.Tensor,
                         exclude: torch.Tensor | None) -> torch.Tensor:
        """Positions of the targets in the index's answer (``runner.use_index``): the index's top
        ``max(topk)`` items after the masked ones are dropped; a target outside them is placed past every K (the
        metrics at each K are then the index's; MRR counts only targets inside)."""
        from recstack.retrieval.index import search

        depth = max(self.topk)
        extra = int((exclude >= 0).sum(1).max()) if exclude is not None and exclude.numel() else 0
        queries = user.reshape(-1, user.shape[-1]).cpu().numpy().astype("float32")
        scores, rows = search(self._index, queries, min(depth + extra, net.corpus.num_items), net.similarity)
        per_user = user.shape[1] if user.dim() == 3 else 1                      # MIND: interests merged by max
        positions = torch.full(targets.shape, net.corpus.num_items, dtype=torch.long)
        for b in range(len(targets)):
            best: dict[int, float] = {}
            for q in range(b * per_user, (b + 1) * per_user):
                for row, score in zip(rows[q].tolist(), scores[q].tolist()):
                    if row >= 0 and score > best.get(row, float("-inf")):
                        best[row] = score
            masked = set(exclude[b].tolist()) - set(targets[b].tolist()) if exclude is not None else set()
            ranked = [r for r, _ in sorted(best.items(), key=lambda x: (-x[1], x[0])) if r not in masked][:depth]
            for t, target in enumerate(targets[b].tolist()):
                if target < 0:
                    positions[b, t] = -1
                elif target in ranked:
                    positions[b, t] = ranked.index(target)
        return positions

    def scorer(self, net: RetrievalNet) -> Scorer:
        if self._corpus_vectors is None:
            self._corpus_vectors = net.corpus_vectors()
        vectors = self._corpus_vectors
        return Scorer(rows=lambda user, start, stop: net.score(user, vectors[start:stop]),
                      pairs=lambda user, rows: net.score_pairs(user, vectors[rows]),
                      num_items=len(vectors))

    def infer_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[list[Metric], dict[str, Any] | None]:
        net: RetrievalNet = unwrap_model(dy_model)
        batch = dict(batch_data)
        user = net.encode_user(batch)
        targets, exclude = self._targets(net, batch).unsqueeze(1), self._exclude(net, batch)
        if self._index is not None:
            positions = self._index_positions(net, user, targets, exclude)
        else:
            positions = target_positions(self.scorer(net), user, targets, exclude)
        for metric in metrics_list:
            metric.update(positions)
        return metrics_list, None

    def export_model(self, loaded: Any, out_dir: Any, prefix: str, head: dict[str, Any], tolerance: float) -> Any:
        """The towers apart and the corpus's vectors (:mod:`recstack.retrieval.export`)."""
        from pathlib import Path

        from recstack.retrieval.export import export_retrieval

        return export_retrieval(loaded, Path(out_dir), prefix, head, tolerance)

    export_parts = ()  # tools/to_static.py writes the towers (export_model); parts name what each JSON holds

    def export_feeds(self, net: nn.Module, batch: Batch, part: str) -> tuple[list[str], list[torch.Tensor]]:
        """The inputs of a tower's export for a batch of the interaction reader: the user keys (``user_tower``), or
        the item table's keys of the batch's target items (``item_tower``)."""
        net = unwrap_model(net)
        if part == "user_tower":
            return list(net.user_input_names), [batch[n] for n in net.user_input_names]
        if part == "item_tower":
            rows = self._targets(net, dict(batch))
            return list(net.corpus.input_names), net.corpus.features(rows)
        raise ValueError(f"a retrieval export's parts are user_tower and item_tower (the scorer takes vectors), "
                         f"got {part!r}")

    def recommend(self, net: RetrievalNet, batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's top ``k`` items: ``(scores (B, k), item ids (B, k))`` (``-1`` past the corpus)."""
        scores, rows = top_k(self.scorer(net), net.encode_user(batch), k, self._exclude(net, batch))
        return scores, torch.where(rows >= 0, net.corpus.item_ids[rows.clamp_min(0)], rows)


def _topk(config: Config) -> tuple[int, ...]:
    raw = config.get("runner.topk", [10, 50, 100])
    values = raw if isinstance(raw, list) else [raw]
    if not values or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in values):
        raise ConfigError(f"{config.source('runner.topk')}: expected a list of integers >= 1, got {raw!r}")
    return tuple(values)

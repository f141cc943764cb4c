"""Streaming metrics: AUC, log loss, MSE, accuracy, group AUC (GAUC); the retrieval stage's hit rate, recall,
NDCG and MRR at K.

Every metric keeps its state in a few tensors (``state()``) so that states from
several batches, epochs or processes add up: the AUC keeps histograms of
positive and negative predictions, which sum across ranks exactly (averaging
per-rank AUCs does not give the global AUC).

Usage::

    auc = AUC()
    for preds, labels in batches:
        auc.update(preds, labels)
    auc.compute()   # float; nan when only one class has been seen

A metric that cannot be computed (an AUC over one class, a GAUC without a user
holding both classes, any metric over no samples) is ``nan``;
:meth:`Metric.undefined_reason` says why, and :func:`warn_undefined` logs it once
per evaluation (the trainer at each epoch's end, ``tools/infer.py`` per checkpoint).

Each metric is registered in :data:`recstack.registry.METRICS` under the name a config's
``metrics_set`` uses (EasyRec's names): ``auc``, ``gauc``, ``mean_squared_error``, ``accuracy``,
``log_loss``; a task tower logs it as ``<log_name>_<tower>`` (``auc_ctr``, ``mse_play_time``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from recstack.registry import METRICS

logger = logging.getLogger(__name__)


class Metric:
    """Base class: ``update(preds, labels)``, ``compute() -> float``, ``reset()``."""

    #: True for metrics whose ``update`` also takes the batch's group keys (``groups=``, e.g. :class:`GAUC`)
    needs_groups: bool = False
    #: True when ``state()`` tensors add up across processes (histograms, sums, counts); False when they
    #: concatenate (:class:`GAUC`), which :meth:`load_state` then takes back (see :mod:`recstack.dist`)
    additive_state: bool = True
    #: prefix of the logged name (``auc`` -> ``auc_<task>``); ``None``: the name it is registered under
    log_name: str | None = None
    #: True for metrics of probabilities against 0/1 labels (a ``CLASSIFICATION`` task tower only)
    binary: bool = False
    #: False for error metrics, where lower is better (log loss, MSE): how feature importance ranks their changes
    higher_is_better: bool = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def state(self) -> list[torch.Tensor]:
        """Additive state tensors (summed across processes by distributed training)."""
        raise NotImplementedError

    def undefined_reason(self) -> str | None:
        """Why :meth:`compute` is ``nan`` on the data seen so far (``None`` when it is defined)."""
        return None

    # PaddleRec's paddle.metric names, so ported wrappers read the same.
    def accumulate(self) -> float:
        return self.compute()


@METRICS.register("auc")
class AUC(Metric):
    """Area under the ROC curve from histograms of predicted probabilities.

    Predictions in ``[0, 1]`` fall into ``num_buckets`` equal-width buckets; pairs
    in the same bucket count as ties (half a correct pair), which is exact for
    tied scores and differs from the exact AUC by less than the fraction of
    positive/negative pairs that share a bucket (about 1e-5 with the default
    100,000 buckets on spread-out scores). One class only gives ``nan``.

    Args:
        num_buckets: histogram resolution.
    """

    log_name = "auc"
    binary = True

    def __init__(self, num_buckets: int = 100_000) -> None:
        self.num_buckets = num_buckets
        super().__init__()

    def reset(self) -> None:
        # negatives in [0, n), positives in [n, 2n); int64 so counts stay exact
        self.counts = torch.zeros(2 * self.num_buckets, dtype=torch.int64)

    @property
    def pos(self) -> torch.Tensor:
        return self.counts[self.num_buckets:]

    @property
    def neg(self) -> torch.Tensor:
        return self.counts[: self.num_buckets]

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch. ``preds``: probabilities (B,) or (B, 1); ``labels``: 0/1, same shape.

        ``mask`` (optional, bool or 0/1, same shape): only the samples where it is true count,
        e.g. ESMM's CVR AUC over the clicked samples (``mask=click``).
        """
        preds = preds.detach().reshape(-1)
        labels = labels.detach().reshape(-1)
        if preds.shape != labels.shape:
            raise ValueError(f"AUC.update: {preds.numel()} predictions for {labels.numel()} labels")
        if mask is not None:
            mask = mask.detach().reshape(-1)
            if mask.shape != preds.shape:
                raise ValueError(f"AUC.update: a mask of {mask.numel()} values for {preds.numel()} predictions")
            keep = mask != 0
            preds, labels = preds[keep], labels[keep]
        n = self.num_buckets
        bucket = (preds.float() * n).long().clamp_(0, n - 1)
        bucket += (labels > 0.5).long() * n
        bucket = bucket.cpu()
        # O(batch), not O(buckets): a bincount over 200,000 bins cost 0.3 ms per batch
        self.counts.index_add_(0, bucket, torch.ones_like(bucket))

    def undefined_reason(self) -> str | None:
        positives, negatives = int(self.pos.sum()), int(self.neg.sum())
        if positives and negatives:
            return None
        if not positives and not negatives:
            return "no samples were evaluated"
        return (f"the evaluated labels hold only class {1 if positives else 0} ({positives + negatives} samples); "
                "an AUC needs both classes")

    def compute(self) -> float:
        pos, neg = self.pos.double(), self.neg.double()
        total_pos, total_neg = float(pos.sum()), float(neg.sum())
        if total_pos == 0 or total_neg == 0:
            return math.nan
        neg_below = torch.cumsum(neg, 0) - neg
        correct = torch.sum(pos * (neg_below + 0.5 * neg))
        return float(correct) / (total_pos * total_neg)

    def state(self) -> list[torch.Tensor]:
        return [self.counts]


class _Mean(Metric):
    """Running mean of a per-sample quantity."""

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def _add(self, values: torch.Tensor) -> None:
        self.total += float(values.double().sum())
        self.count += values.numel()

    def compute(self) -> float:
        return float(self.total / self.count) if self.count > 0 else math.nan

    def undefined_reason(self) -> str | None:
        return "no samples were evaluated" if self.count == 0 else None

    def state(self) -> list[torch.Tensor]:
        return [self.total, self.count]


@METRICS.register("log_loss")
class LogLoss(_Mean):
    """Mean binary cross-entropy of probabilities (clamped to [1e-7, 1 - 1e-7])."""

    log_name = "log_loss"
    binary = True
    higher_is_better = False

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        p = preds.detach().reshape(-1).double().clamp(1e-7, 1 - 1e-7)
        y = labels.detach().reshape(-1).double()
        self._add(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)))


@METRICS.register("mean_squared_error")
class MSE(_Mean):
    """Mean squared error."""

    log_name = "mse"
    higher_is_better = False

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        self._add((preds.detach().reshape(-1).double() - labels.detach().reshape(-1).double()) ** 2)


@METRICS.register("accuracy")
class Accuracy(_Mean):
    """Binary accuracy at a probability threshold (default 0.5)."""

    log_name = "accuracy"
    binary = True

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        super().__init__()

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        hit = (preds.detach().reshape(-1) > self.threshold) == (labels.detach().reshape(-1) > 0.5)
        self._add(hit)


@METRICS.register("gauc")
class GAUC(Metric):
    """Group AUC: the AUC of each group (user), weighted by the group's number of samples.

    ``GAUC = sum_u n_u * AUC_u / sum_u n_u`` over the groups that have both a positive
    and a negative sample (a group with one class has no AUC and is skipped, as in the
    DIN paper, Zhou et al. 2018, where ``n_u`` is the user's impressions). Each
    ``AUC_u`` is exact, ties counting half (the Mann-Whitney statistic with average
    ranks, as scikit-learn's ``roc_auc_score``). ``nan`` when no group qualifies.

    The metric keeps every (group, prediction, label) it sees (13 bytes a sample), so
    that a user's samples may arrive in any batches. A model feeds it through its
    wrapper's ``group_name`` (see :meth:`recstack.wrapper.DygraphModel.update_metrics`).
    Negative group keys mean "unknown" (e.g. a data line without a user id) and are
    skipped.
    """

    #: the wrapper passes the batch's group keys to ``update`` (``groups=``)
    needs_groups = True
    log_name = "gauc"
    binary = True
    #: the state is per-sample: ranks' states concatenate (distributed training gathers them)
    additive_state = False

    def reset(self) -> None:
        self._parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        """Add a batch. ``preds``, ``labels`` (0/1) and ``groups`` (integer keys): ``(B,)`` or ``(B, 1)``."""
        if groups is None:
            raise ValueError("GAUC.update needs the group (user) keys of the batch: set the wrapper's group_name "
                             "to the batch column holding them (e.g. 'user')")
        preds = preds.detach().reshape(-1)
        labels = labels.detach().reshape(-1)
        groups = groups.detach().reshape(-1)
        if not preds.shape == labels.shape == groups.shape:
            raise ValueError(f"GAUC.update: {preds.numel()} predictions, {labels.numel()} labels and "
                             f"{groups.numel()} group keys")
        if groups.is_floating_point():
            raise ValueError(f"GAUC.update: group keys must be integers, got {groups.dtype}")
        self._parts.append((groups.to("cpu", torch.int64), preds.to("cpu", torch.float32),
                            (labels > 0.5).to("cpu")))

    def state(self) -> list[torch.Tensor]:
        """Group keys, predictions and labels seen so far (these concatenate across processes; they do not add)."""
        if not self._parts:
            return [torch.zeros(0, dtype=torch.int64), torch.zeros(0), torch.zeros(0, dtype=torch.bool)]
        if len(self._parts) > 1:  # merge, so later calls do not concatenate again
            self._parts = [tuple(torch.cat(column) for column in zip(*self._parts))]
        return list(self._parts[0])

    def load_state(self, state: list[torch.Tensor]) -> None:
        """Replace the state by ``[groups, preds, labels]`` (e.g. the concatenation of several ranks' states)."""
        groups, preds, labels = state
        self._parts = [(groups.to(torch.int64), preds.to(torch.float32), labels.to(torch.bool))]

    def compute(self) -> float:
        groups, preds, labels = (t.numpy() for t in self.state())
        auc, weights = group_aucs(groups, preds, labels)
        return float(np.sum(auc * weights) / np.sum(weights)) if len(weights) else math.nan

    def undefined_reason(self) -> str | None:
        groups, _, labels = (t.numpy() for t in self.state())
        known = groups >= 0
        if not len(groups):
            return "no samples were evaluated"
        if not known.any():
            return f"no sample has a known group (user) key ({len(groups)} samples, all unknown: -1)"
        keys, index = np.unique(groups[known], return_inverse=True)
        positives = np.bincount(index, weights=labels[known].astype(np.float64), minlength=len(keys))
        counts = np.bincount(index, minlength=len(keys))
        if ((positives > 0) & (positives < counts)).any():
            return None
        return (f"no group (user) holds both classes ({len(keys)} groups, {int(known.sum())} samples with a known "
                "group); a group AUC needs a positive and a negative sample of the same group")


def group_aucs(groups: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group AUC and sample count of the groups (keys >= 0) that have both classes.

    Vectorised: one sort by (group, prediction), average ranks for ties within a group,
    then ``AUC_u = (R_u - P_u (P_u + 1) / 2) / (P_u N_u)`` with ``R_u`` the rank sum of
    the group's ``P_u`` positives and ``N_u`` its negatives.

    Args:
        groups: int64 ``(n,)``; preds: ``(n,)``; labels: bool ``(n,)``.

    Returns:
        ``(auc, count)``: float64 arrays, one entry per qualifying group, in key order.
    """
    keep = groups >= 0
    groups, preds, labels = groups[keep], preds[keep], labels[keep]
    if len(groups) == 0:
        return np.zeros(0), np.zeros(0)
    order = np.lexsort((preds, groups))
    g, p, y = groups[order], preds[order], labels[order]
    n = len(g)
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.flatnonzero(new_group)
    group_id = np.cumsum(new_group) - 1
    # runs of equal (group, prediction): each gets the average of the positions it spans
    new_run = new_group | np.r_[True, p[1:] != p[:-1]]
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], n]
    run_rank = (run_start + run_end - 1) / 2.0  # 0-based average position
    rank = np.repeat(run_rank, run_end - run_start) - group_start[group_id] + 1.0  # 1-based within the group
    count = np.bincount(group_id).astype(np.float64)
    positives = np.bincount(group_id, weights=y).astype(np.float64)
    negatives = count - positives
    rank_sum = np.bincount(group_id, weights=np.where(y, rank, 0.0))
    both = (positives > 0) & (negatives > 0)
    auc = (rank_sum[both] - positives[both] * (positives[both] + 1) / 2) / (positives[both] * negatives[both])
    return auc, count[both]


def warn_undefined(names: Sequence[str], metrics: Sequence[Metric], context: str = "") -> list[str]:
    """Log one warning for each metric that is ``nan`` on the data seen, naming it and why, e.g.
    ``epoch 0: auc_ctr is undefined: the evaluated labels hold only class 0 (1234 samples); ...``.

    Call it once per evaluation (not per batch, where one class in a batch is normal).

    Args:
        names: the metrics' log names.
        metrics: the metrics, in the same order.
        context: a prefix such as ``"epoch 0: "``.

    Returns:
        the warnings logged.
    """
    warnings = []
    for name, metric in zip(names, metrics):
        reason = metric.undefined_reason()
        if reason:
            warnings.append(f"{context}{name} is undefined: {reason}")
            logger.warning("%s", warnings[-1])
    return warnings


# --------------------------------------------------------------------------------------------- retrieval
class _RankMetric(_Mean):
    """Mean over users of a top-K quality from the **positions** of each user's target items in the ranking of
    the whole corpus (:func:`recstack.retrieval.ranking.target_positions`: 0-based, items ahead of a target
    counted among all unmasked items, ties broken by the smaller corpus row; ``-1`` pads a row with fewer
    targets). ``update(positions (B, T) int64, labels)`` (labels unused: every target is relevant); a row
    without any target is skipped. The state (sum, users) adds up across batches and processes.

    Args:
        k: the cut-off ``K`` (``None`` for :class:`MRR`, which reads the whole list).
    """

    def __init__(self, k: int | None = None) -> None:
        if k is not None and k < 1:
            raise ValueError(f"{type(self).__name__}: k must be >= 1, got {k}")
        self.k = k
        super().__init__()

    def value(self, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        positions = preds.detach().reshape(preds.shape[0], -1).long()
        valid = positions >= 0
        users = valid.any(dim=1)
        if users.any():
            self._add(self.value(positions[users], valid[users]).double())


class HitRate(_RankMetric):
    """``hit_rate@K``: the share of users with at least one target in their top K."""

    log_name = "hit_rate"

    def value(self, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (valid & (positions < self.k)).any(dim=1).double()


class Recall(_RankMetric):
    """``recall@K``: per user, the share of its targets in its top K (equal to the hit rate with one target)."""

    log_name = "recall"

    def value(self, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (valid & (positions < self.k)).sum(dim=1).double() / valid.sum(dim=1).double()


class NDCG(_RankMetric):
    """``ndcg@K``: per user ``sum_{targets in the top K} 1 / log2(position + 2)`` over the ideal value
    ``sum_{i < min(targets, K)} 1 / log2(i + 2)`` (binary relevance)."""

    log_name = "ndcg"

    def value(self, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        hit = valid & (positions < self.k)
        gains = torch.where(hit, 1.0 / torch.log2(positions.double().clamp_min(0) + 2.0),
                            torch.zeros((), dtype=torch.float64))
        ideal_count = valid.sum(dim=1).clamp(max=self.k)
        discounts = 1.0 / torch.log2(torch.arange(self.k, dtype=torch.float64) + 2.0)
        ideal = torch.cumsum(discounts, 0)[ideal_count - 1]
        return gains.sum(dim=1) / ideal


class MRR(_RankMetric):
    """``mrr``: per user ``1 / (position of its first target + 1)`` over the whole ranking (no cut-off)."""

    log_name = "mrr"

    def value(self, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        first = torch.where(valid, positions, torch.full_like(positions, torch.iinfo(torch.int64).max)).min(dim=1)
        return 1.0 / (first.values.double() + 1.0)


def retrieval_metrics(topk: Sequence[int]) -> tuple[list[Metric], list[str]]:
    """The retrieval stage's metrics: ``hit_rate@K``, ``recall@K``, ``ndcg@K`` for each K, then ``mrr``."""
    metrics: list[Metric] = []
    names: list[str] = []
    for k in topk:
        for cls in (HitRate, Recall, NDCG):
            metrics.append(cls(k))
            names.append(f"{cls.log_name}@{k}")
    metrics.append(MRR())
    names.append("mrr")
    return metrics, names

"""Streaming metrics: AUC, log loss, MSE, accuracy.

Every metric keeps its state in a few tensors (``state()``) so that states from
several batches, epochs or processes add up: the AUC keeps histograms of
positive and negative predictions, which sum across ranks exactly (averaging
per-rank AUCs does not give the global AUC).

Usage::

    auc = AUC()
    for preds, labels in batches:
        auc.update(preds, labels)
    auc.compute()   # float; nan when only one class has been seen
"""

from __future__ import annotations

import math

import torch


class Metric:
    """Base class: ``update(preds, labels)``, ``compute() -> float``, ``reset()``."""

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

    # PaddleRec's paddle.metric names, so ported wrappers read the same.
    def accumulate(self) -> float:
        return self.compute()


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
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch. ``preds``: probabilities (B,) or (B, 1); ``labels``: 0/1, same shape."""
        preds = preds.detach().reshape(-1)
        labels = labels.detach().reshape(-1)
        if preds.shape != labels.shape:
            raise ValueError(f"AUC.update: {preds.numel()} predictions for {labels.numel()} labels")
        n = self.num_buckets
        bucket = (preds.float() * n).long().clamp_(0, n - 1)
        bucket += (labels > 0.5).long() * n
        bucket = bucket.cpu()
        # O(batch), not O(buckets): a bincount over 200,000 bins cost 0.3 ms per batch
        self.counts.index_add_(0, bucket, torch.ones_like(bucket))

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

    def state(self) -> list[torch.Tensor]:
        return [self.total, self.count]


class LogLoss(_Mean):
    """Mean binary cross-entropy of probabilities (clamped to [1e-7, 1 - 1e-7])."""

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        p = preds.detach().reshape(-1).double().clamp(1e-7, 1 - 1e-7)
        y = labels.detach().reshape(-1).double()
        self._add(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)))


class MSE(_Mean):
    """Mean squared error."""

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        self._add((preds.detach().reshape(-1).double() - labels.detach().reshape(-1).double()) ** 2)


class Accuracy(_Mean):
    """Binary accuracy at a probability threshold (default 0.5)."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        super().__init__()

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        hit = (preds.detach().reshape(-1) > self.threshold) == (labels.detach().reshape(-1) > 0.5)
        self._add(hit)

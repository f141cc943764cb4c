"""Exact ranking of the whole item corpus for a batch of users: the positions of their target items (for the
metrics) and their top-K items (for serving), computed chunk by chunk over the corpus so that memory stays at
``batch x chunk`` scores.

The ranking rule, the same everywhere (metrics, ``tools/infer.py``, the recall export's exact search): items are
ordered by score, highest first; equal scores by the smaller corpus row; masked items (a user's already-seen
items, ``runner.mask_seen``) are left out, except the user's own targets.

A model scores through two functions (:class:`Scorer`):
``rows(user, start, stop) -> (B, stop - start)`` scores every user against the corpus rows ``[start, stop)``,
``pairs(user, rows (B, T)) -> (B, T)`` scores each user against its own rows (the targets). A two-tower model's
are matrix products with its corpus embeddings; MIND takes the maximum over a user's interests; NCF runs its
network over the pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

#: scores per user and row chunk, and per user and own rows
RowScores = Callable[[Any, int, int], torch.Tensor]
PairScores = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass
class Scorer:
    """How a model scores a batch of users (``user``: its user representation) against corpus rows."""

    rows: RowScores
    pairs: PairScores
    num_items: int


def _mask(scores: torch.Tensor, exclude: torch.Tensor | None, start: int, keep: torch.Tensor | None) -> torch.Tensor:
    """``scores`` (B, C) of rows ``[start, start + C)`` with each user's ``exclude`` rows (B, S; -1 pads) set to
    ``-inf``, except the rows in ``keep`` (B, T; the user's targets)."""
    if exclude is None or exclude.numel() == 0:
        return scores
    local = exclude - start
    inside = (exclude >= 0) & (local >= 0) & (local < scores.shape[1])
    if keep is not None:
        inside &= ~(exclude.unsqueeze(-1) == keep.unsqueeze(1)).any(-1)
    if not inside.any():
        return scores
    rows, cols = inside.nonzero(as_tuple=True)
    scores = scores.clone()
    scores[rows, local[rows, cols]] = float("-inf")
    return scores


@torch.no_grad()
def target_positions(scorer: Scorer, user: Any, targets: torch.Tensor, exclude: torch.Tensor | None = None,
                     chunk: int = 8192) -> torch.Tensor:
    """Position of each target in its user's ranking of the corpus (module docstring): the number of unmasked
    items ranked ahead of it (other targets included).

    Args:
        scorer: the model's scoring functions.
        user: the batch's user representation (what the scorer takes).
        targets: corpus rows ``(B, T)`` int64, ``-1`` pads rows with fewer targets.
        exclude: rows ``(B, S)`` to leave out of each user's ranking (``-1`` pads), or ``None``.
        chunk: corpus rows scored at a time.

    Returns:
        ``(B, T)`` int64 positions (0: ranked first), ``-1`` where ``targets`` is ``-1``.
    """
    targets = targets.long()
    valid = targets >= 0
    own = scorer.pairs(user, targets.clamp_min(0)).float()                    # (B, T)
    ahead = torch.zeros(targets.shape, dtype=torch.long, device=targets.device)
    for start in range(0, scorer.num_items, chunk):
        stop = min(start + chunk, scorer.num_items)
        scores = _mask(scorer.rows(user, start, stop).float(), exclude, start, targets)   # (B, C)
        rows = torch.arange(start, stop, device=targets.device)
        higher = scores.unsqueeze(1) > own.unsqueeze(-1)                                 # (B, T, C)
        tied = (scores.unsqueeze(1) == own.unsqueeze(-1)) & (rows < targets.unsqueeze(-1))
        itself = rows == targets.unsqueeze(-1)
        ahead += ((higher | tied) & ~itself).sum(-1)
    return torch.where(valid, ahead, torch.full_like(ahead, -1))


@torch.no_grad()
def top_k(scorer: Scorer, user: Any, k: int, exclude: torch.Tensor | None = None,
          chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's ``k`` best corpus rows (module docstring's order), with their scores.

    Returns:
        ``(scores (B, k) float32, rows (B, k) int64)``; with fewer than ``k`` unmasked items the tail is
        ``-inf`` / ``-1``.
    """
    best_scores: torch.Tensor | None = None
    best_rows: torch.Tensor | None = None
    for start in range(0, scorer.num_items, chunk):
        stop = min(start + chunk, scorer.num_items)
        scores = _mask(scorer.rows(user, start, stop).float(), exclude, start, None)
        rows = torch.arange(start, stop, device=scores.device).expand(scores.shape[0], -1)
        if best_scores is not None:
            scores, rows = torch.cat([best_scores, scores], 1), torch.cat([best_rows, rows], 1)
        # descending by score; a stable sort keeps the smaller row first among equal scores (rows are ascending)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        best_scores, best_rows = scores.gather(1, order), rows.gather(1, order)
    assert best_scores is not None and best_rows is not None
    if best_scores.shape[1] < k:
        pad = k - best_scores.shape[1]
        best_scores = torch.cat([best_scores, best_scores.new_full((best_scores.shape[0], pad), float("-inf"))], 1)
        best_rows = torch.cat([best_rows, best_rows.new_full((best_rows.shape[0], pad), -1)], 1)
    best_rows = torch.where(torch.isinf(best_scores) & (best_scores < 0), torch.full_like(best_rows, -1), best_rows)
    return best_scores, best_rows

"""Training objectives of the retrieval stage, chosen by ``hyper_parameters.loss`` (one core for every model).

All take logits ``s(u, i) / temperature`` of users (or sequence positions) against items:

``softmax``
    Full softmax over the whole corpus: ``-log softmax_i(s(u, i))[target]``. Exact; for small catalogues.
``sampled_softmax``
    Softmax over the target and ``num_negatives`` items sampled for the batch (shared by its users), uniform or
    by popularity (``count ** sampling_power``), each logit corrected by ``- log(num_negatives * q(i))`` (log-Q:
    the sampled softmax then estimates the full one; Bengio & Senecal 2008, Jean et al. 2015); a sample equal to
    a user's target is masked (an accidental hit).
``in_batch``
    The other targets of the batch as negatives (Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large
    Corpus Item Recommendations", RecSys 2019): logits ``s(u_b, i_c)`` for every pair of the batch, corrected by
    ``- log q(i_c)`` where ``q`` is the streaming estimate of the probability that item ``c`` is in a batch
    (:class:`FrequencyEstimator`, the paper's algorithm); another row with the same item as ``b``'s target is
    masked.
``bce``
    Pointwise: ``BCE(s(u, target), 1) + sum_k BCE(s(u, neg_k), 0)`` over ``num_negatives`` items sampled per
    user (PaddleRec's NCF / torch-rechub's point-wise mode).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("softmax", "sampled_softmax", "in_batch", "bce")
SAMPLERS = ("uniform", "popularity")


def softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(M, N)`` logits over the whole corpus, targets ``(M,)`` rows -> mean cross-entropy."""
    return F.cross_entropy(logits, targets)


def sampled_softmax_loss(pos: torch.Tensor, neg: torch.Tensor, log_q_neg: torch.Tensor | None,
                         accidental: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the target among ``[target, negatives]``.

    Args:
        pos: ``(M,)`` logits of the targets.
        neg: ``(M, S)`` logits of the sampled items.
        log_q_neg: ``(S,)`` ``log(S * q(i))`` of each sample (subtracted), or ``None`` (no correction).
        accidental: ``(M, S)`` True where a sample is the row's target (masked), or ``None``.
    """
    if log_q_neg is not None:
        neg = neg - log_q_neg
    if accidental is not None:
        neg = neg.masked_fill(accidental, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def in_batch_loss(logits: torch.Tensor, rows: torch.Tensor, log_q: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of each row's own target among the batch's targets.

    Args:
        logits: ``(M, M)``: user ``b`` against the target of row ``c``.
        rows: ``(M,)`` corpus rows of the targets (equal rows off the diagonal are masked).
        log_q: ``(M,)`` ``log q`` of each target (subtracted per column), or ``None``.
    """
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    same = rows.unsqueeze(0) == rows.unsqueeze(1)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def bce_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``(M,)`` target logits and ``(M, S)`` negative logits -> mean over the ``M * (1 + S)`` binary terms."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)


class FrequencyEstimator(nn.Module):
    """Streaming estimate of the probability that an item is in a training batch (Yi et al. 2019, Algorithm 1).

    Per item: the step it was last seen ``A`` and the mean gap between its occurrences ``B`` (exponential moving
    average with rate ``alpha``); ``q = 1 / B``. Items not seen yet keep ``B = num_items`` (a uniform guess).
    The state is saved with the model (buffers), so a resumed run continues the estimate.

    Args:
        num_items: corpus size.
        alpha: moving-average rate (the paper's 0.01 range).
    """

    def __init__(self, num_items: int, alpha: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"FrequencyEstimator: alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.register_buffer("step", torch.zeros((), dtype=torch.float64))
        self.register_buffer("last", torch.zeros(num_items, dtype=torch.float64))
        self.register_buffer("gap", torch.full((num_items,), float(num_items), dtype=torch.float64))

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> None:
        """Count one training batch holding ``rows``."""
        self.step += 1
        seen = torch.unique(rows[rows >= 0])
        first = self.last[seen] == 0
        gap = torch.where(first, self.gap[seen], self.step - self.last[seen])
        self.gap[seen] = (1 - self.alpha) * self.gap[seen] + self.alpha * gap
        self.last[seen] = self.step

    def log_q(self, rows: torch.Tensor) -> torch.Tensor:
        """``log q`` of corpus rows, float32."""
        return (-torch.log(self.gap[rows].clamp_min(1.0))).float()


class NegativeSampler(nn.Module):
    """Draws negatives from the corpus, uniformly or by popularity (``count ** power``, counts of the training
    targets seen so far plus one, so every item can be drawn), with ``log(S * q(i))`` for the log-Q correction.

    Args:
        num_items: corpus size.
        kind: ``uniform`` or ``popularity``.
        power: the popularity exponent (word2vec's 0.75; 1: proportional to counts).
        seed: the generator's seed (draws are reproducible from the run's seed).
    """

    def __init__(self, num_items: int, kind: str = "uniform", power: float = 0.75, seed: int = 0) -> None:
        super().__init__()
        if kind not in SAMPLERS:
            raise ValueError(f"negative sampler must be one of {', '.join(SAMPLERS)}, got {kind!r}")
        self.num_items, self.kind, self.power = num_items, kind, power
        self.register_buffer("counts", torch.zeros(num_items, dtype=torch.float64))
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def observe(self, rows: torch.Tensor) -> None:
        """Count the training targets of a batch (popularity)."""
        valid = rows[rows >= 0]
        self.counts.index_add_(0, valid.cpu(), torch.ones(len(valid), dtype=torch.float64))

    def probabilities(self) -> torch.Tensor:
        if self.kind == "uniform":
            return torch.full((self.num_items,), 1.0 / self.num_items, dtype=torch.float64)
        weights = (self.counts + 1.0) ** self.power
        return weights / weights.sum()

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``shape`` corpus rows drawn with replacement and ``log(S * q(row))`` of each (``S``: the last axis)."""
        count = math.prod(shape)
        if self.kind == "uniform":
            rows = torch.randint(self.num_items, (count,), generator=self.generator)
            probs = torch.full((count,), 1.0 / self.num_items, dtype=torch.float64)
        else:
            p = self.probabilities()
            rows = torch.multinomial(p, count, replacement=True, generator=self.generator)
            probs = p[rows]
        log_q = torch.log(probs * shape[-1]).float()
        return rows.view(shape).to(device), log_q.view(shape).to(device)

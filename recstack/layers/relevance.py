"""DMR's user-to-item and item-to-item relevance networks, and the sampled-softmax match loss.

Reference: Lyu, Dong, Huo, Ren, "Deep Match to Rank Model for Personalized Click-Through Rate Prediction",
AAAI 2020 (code and paper: https://github.com/lvze92/DMR).

Both networks score behaviours with DIN's local activation unit
(:class:`recstack.layers.attention.LocalActivationUnit`, ``a(q, e) = MLP([q, e, q - e, q * e])``) against a
query built per position: ``q_t = PReLU_t(W [.., c_t] + b)``, ``c_t`` the position's context (a position
embedding and the behaviour type's embedding), ``PReLU_t`` a PReLU whose slope is per position (PaddleRec's
``num_parameters=history_length``). Padded positions (``mask`` false) never change a result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recstack.layers.attention import LocalActivationUnit, masked_softmax
from recstack.layers.embedding import masked_pool
from recstack.layers.init import init_linear


def causal_attention_weights(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """For each position ``t``, the softmax of ``scores`` over the real positions ``j <= t``.

    ``W[b, t, j] = exp(s_bj) / sum_{k <= t, mask_bk} exp(s_bk)`` for ``j <= t`` with ``mask[b, j]``, 0 elsewhere;
    a row ``t`` without any real position up to it is all zeros.

    Shapes:
        scores ``(B, T)``, mask ``(B, T)`` → ``(B, T, T)``.
    """
    length = scores.shape[1]
    lower = torch.ones(length, length, dtype=torch.bool, device=scores.device).tril()  # j <= t
    allowed = lower.unsqueeze(0) & mask.bool().unsqueeze(1)  # (B, T, T)
    return masked_softmax(scores.unsqueeze(1).expand(-1, length, -1), allowed)


class UserToItemRelevance(nn.Module):
    """DMR's user-to-item network: user representations from the behaviours with position-aware attention.

    ``u_t = PReLU_t(W_u (sum_{j <= t} w_tj e_j) + b_u)``, ``w_tj = softmax_{j <= t}(a(q_j, e_j))`` over the real
    positions (:func:`causal_attention_weights`), ``q_j = PReLU_j(W_q c_j + b_q)`` from the position context only
    (the paper's ``alpha_t = z^T tanh(W_p p_t + W_e e_t + b)`` with its position-aware weights, in PaddleRec's
    and the original code's form). ``u_T`` (all behaviours) is the user representation; the relevance to the
    target is the inner product with the target's *output-side* embedding, ``r = u_T . v'_target``; ``u_{T-1}``
    (all but the last) feeds the auxiliary match loss (:func:`match_loss`), which makes ``u . v'`` a relevance.

    Initialisation: Linear weights N(0, 1/sqrt(fan_in)), biases 0 (as the attention unit's); PReLU slopes 0.1
    (PaddleRec's).

    Args:
        embed_dim: ``E``, the behaviour embedding width (the query's width too).
        context_dim: ``C``, the position context's width.
        user_dim: ``U``, the user representation's width (that of the output-side item table).
        history_length: ``T`` (the per-position PReLU slopes).
        attention_sizes: hidden widths of the attention unit (PaddleRec: ``[80, 40]``, sigmoid).

    Shapes:
        behaviours ``(B, T, E)``, context ``(B, T, C)``, mask ``(B, T)`` → ``(B, T, U)``, ``u_t`` for each ``t``.
    """

    def __init__(self, embed_dim: int, context_dim: int, user_dim: int, history_length: int,
                 attention_sizes: Sequence[int] = (80, 40)) -> None:
        super().__init__()
        self.query = init_linear(nn.Linear(context_dim, embed_dim), "normal")
        self.query_act = nn.PReLU(history_length, init=0.1)
        self.unit = LocalActivationUnit(embed_dim, attention_sizes, "sigmoid")
        self.project = init_linear(nn.Linear(embed_dim, user_dim), "normal")
        self.project_act = nn.PReLU(history_length, init=0.1)

    def weights(self, behaviours: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The causal attention weights ``(B, T, T)`` (row ``t``: the weights of ``u_t``)."""
        query = self.query_act(self.query(context))  # (B, T, E)
        return causal_attention_weights(self.unit(query, behaviours, mask), mask)

    def forward(self, behaviours: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = torch.bmm(self.weights(behaviours, context, mask), behaviours)  # (B, T, E)
        return self.project_act(self.project(pooled))


class ItemToItemRelevance(nn.Module):
    """DMR's item-to-item network: target attention over the behaviours; the relevance is the weights' sum.

    ``q_t = PReLU_t(W [v_target, c_t] + b)``, ``a_t = a(q_t, e_t)`` (0 at padding), ``alpha = softmax(a)`` over the
    real positions; outputs the pooled interest ``sum_t alpha_t e_t``, the relevance ``r = sum_t a_t`` (the
    paper's sum of the *unnormalised* weights, PaddleRec's ``scores_no_softmax``) and ``alpha``.

    Initialisation: as :class:`UserToItemRelevance`.

    Args:
        embed_dim: ``E``, the width of the behaviour and target embeddings.
        context_dim: ``C``, the position context's width.
        history_length: ``T``.
        attention_sizes: hidden widths of the attention unit (PaddleRec: ``[80, 40]``, sigmoid).

    Shapes:
        target ``(B, E)``, behaviours ``(B, T, E)``, context ``(B, T, C)``, mask ``(B, T)`` →
        (pooled ``(B, E)``, relevance ``(B, 1)``, weights ``(B, T)``).
    """

    def __init__(self, embed_dim: int, context_dim: int, history_length: int,
                 attention_sizes: Sequence[int] = (80, 40)) -> None:
        super().__init__()
        self.query = init_linear(nn.Linear(embed_dim + context_dim, embed_dim), "normal")
        self.query_act = nn.PReLU(history_length, init=0.1)
        self.unit = LocalActivationUnit(embed_dim, attention_sizes, "sigmoid")

    def forward(self, target: torch.Tensor, behaviours: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tiled = target.unsqueeze(1).expand(-1, behaviours.shape[1], -1)
        query = self.query_act(self.query(torch.cat([tiled, context], dim=-1)))  # (B, T, E)
        scores = self.unit(query, behaviours, mask)  # (B, T), 0 at padding
        weights = masked_softmax(scores, mask)
        pooled = masked_pool(behaviours * weights.unsqueeze(-1), mask, "sum")
        return pooled, scores.sum(dim=1, keepdim=True), weights


def match_loss(user: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               valid: torch.Tensor, num_sampled: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Softmax cross-entropy of predicting ``target`` from ``user`` over an output table, averaged over ``valid``.

    ``logit_i = user . weight[i] + bias[i]``. With ``num_sampled = 0`` (or at least the table's rows minus one)
    the softmax runs over the whole table (PaddleRec's DMR); otherwise over the target and ``num_sampled``
    classes drawn uniformly with replacement, shared by the batch (``generator`` seeds them), a drawn class
    equal to a row's target left out of that row (TensorFlow's ``sampled_softmax_loss`` with
    ``remove_accidental_hits``, as the original DMR code; the uniform sampler's ``log Q`` correction is the
    same for every class and cancels).

    Args:
        user: ``(B, U)``.
        target: ``(B,)`` class ids.
        weight: ``(V, U)``, the output-side table.
        bias: ``(V,)``.
        valid: ``(B,)``, 1 for the rows that count (0/1 or bool).
        num_sampled: negatives per batch; 0: the full softmax.
        generator: the negatives' generator (CPU); ``None``: torch's global one.

    Returns:
        A scalar: the mean over the valid rows (0 when none is).
    """
    valid = valid.to(user.dtype)
    rows = weight.shape[0]
    if num_sampled <= 0 or num_sampled >= rows - 1:
        losses = F.cross_entropy(user @ weight.t() + bias, target, reduction="none")
    else:
        sampled = torch.randint(0, rows, (num_sampled,), generator=generator).to(target.device)
        true_logit = (user * weight[target]).sum(-1, keepdim=True) + bias[target].unsqueeze(-1)  # (B, 1)
        sampled_logit = user @ weight[sampled].t() + bias[sampled]  # (B, S)
        hit = sampled.unsqueeze(0) == target.unsqueeze(1)
        sampled_logit = sampled_logit.masked_fill(hit, torch.finfo(user.dtype).min)
        losses = -torch.log_softmax(torch.cat([true_logit, sampled_logit], dim=1), dim=1)[:, 0]
    return (losses * valid).sum() / valid.sum().clamp(min=1.0)


__all__ = ["ItemToItemRelevance", "UserToItemRelevance", "causal_attention_weights", "match_loss"]

"""SASRec: self-attentive sequential recommendation.

Kang, McAuley. "Self-Attentive Sequential Recommendation", ICDM 2018. https://arxiv.org/abs/1808.09781

The history in time order ``s_1 .. s_n`` is embedded with the item table (``sqrt(D) · E[s_t]`` plus a learned
position embedding), passed through ``num_blocks`` causal self-attention blocks (position ``t`` sees ``s_1 .. s_t``;
:class:`recstack.layers.sequence.TransformerBlock`), and the output at position ``t`` scores the next item by
``<F_t, E[i]>`` with the same item table. The user vector is the last position's output. Training: the next item
at every position (``positions: all``, the paper's objective) or at the last one (``positions: last``: with the
leave-one-out rows, where every prefix is a line, the same pairs once each), with the configured loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from recstack.layers.sequence import TransformerBlock
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RetrievalNet, Roles
from recstack.retrieval.towers import ItemFeatures


class SASRec(RetrievalNet):
    """Causal self-attention over the history; items are their embedding.

    Args:
        corpus: the item corpus (its group: the item id; ``embedding_dim`` is ``D``).
        roles: the interaction batch keys (a history is required).
        max_len: the longest history read (the history feature's ``sequence_length``).
        num_blocks, num_heads: attention blocks and heads (``D`` a multiple of ``num_heads``).
        dropout: dropout on the embeddings and in the blocks.
        positions: ``all`` or ``last`` (module docstring).

    Shapes:
        user tower: the history's ids ``(B, L)`` (newest first) and lengths ``(B, 1)`` -> ``(B, D)``; item tower:
        the item-id key ``(R, 1)`` -> ``(R, D)``.
    """

    def __init__(self, corpus: ItemCorpus, roles: Roles, max_len: int, num_blocks: int = 2, num_heads: int = 1,
                 dropout: float = 0.2, positions: str = "all") -> None:
        if roles.history is None:
            raise ValueError("SASRec reads the history: set model_config.history")
        if positions not in ("all", "last"):
            raise ValueError(f"positions must be 'all' or 'last', got {positions!r}")
        super().__init__(corpus, roles, [roles.history["ids"], roles.history["lengths"]], "inner_product")
        self.items = ItemFeatures(corpus)
        dim = self.items.output_dim
        self.max_len, self.positions = max_len, positions
        self.position = nn.Parameter(torch.randn(max_len, dim) * 0.02)   # learned, added to every step
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, dim, "relu", dropout, 0.0, causal=True)
                                    for _ in range(num_blocks))
        self.norm = nn.LayerNorm(dim)
        self.scale = math.sqrt(dim)

    def item_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.items.ids(ids)

    def item_tower(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.items(*inputs)

    def _sequence(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The history in time order, left-aligned: ids ``(B, L)`` (0 past the end: an id no item has here, the
        corpus ids start at 1 or the row is padding) and lengths ``(B,)`` (at least 1: an empty history reads one
        padding step)."""
        ids = batch[self.roles.history["ids"]][:, :self.max_len]
        lengths = batch[self.roles.history["lengths"]].reshape(-1).clamp(max=ids.shape[1])
        steps = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        order = (lengths.unsqueeze(1) - 1 - steps).clamp_min(0)
        chronological = torch.where(steps < lengths.unsqueeze(1), ids.gather(1, order), torch.zeros_like(ids))
        return chronological, lengths.clamp_min(1)

    def encode_positions(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outputs at every position ``(B, L, D)``, the time-ordered ids ``(B, L)`` and the lengths ``(B,)``."""
        ids, lengths = self._sequence(batch)
        if ids.shape[1] == 0:
            ids = torch.zeros((ids.shape[0], 1), dtype=ids.dtype, device=ids.device)
        x = self.item_embedding(ids) * self.scale + self.position[:ids.shape[1]]
        x = self.dropout(x)
        for block in self.blocks:
            x = block.encode(x, lengths)
        return self.norm(x), ids, lengths

    def user_tower(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out, _, lengths = self.encode_positions(batch)
        return out.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[2])).squeeze(1)

    def training_queries(self, batch: Mapping[str, torch.Tensor], target_rows: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.positions == "last":
            return super().training_queries(batch, target_rows)
        out, ids, lengths = self.encode_positions(batch)                       # (B, L, D), (B, L), (B,)
        steps = torch.arange(out.shape[1], device=out.device).unsqueeze(0)
        # the item after position t: s_{t+1} inside the history, the line's target after the last position
        following = torch.cat([ids[:, 1:], ids.new_zeros((len(ids), 1))], 1)
        last = steps == (lengths.unsqueeze(1) - 1)
        rows = torch.where(last, target_rows.unsqueeze(1), self.corpus.rows(following))
        valid = (steps < lengths.unsqueeze(1)) & (rows >= 0)
        return out[valid], rows[valid]

"""AITM: Modeling the Sequential Dependence among Audience Multi-step Conversions with Multi-task Learning in
Targeted Display Advertising.

Xi, Chen, Yan, Zhu, Zhuang, Shen, Zhang, Yan, Zhao, Zhang. KDD 2021. https://arxiv.org/abs/2105.08489

Tasks ``t = 1..T`` are the steps of a conversion funnel (impression → click → purchase). The fields' embeddings
``e`` are shared; each task has its own tower ``q_t = tower_t(e)``. Information flows along the funnel through
the Adaptive Information Transfer module (:class:`recstack.layers.AdaptiveInformationTransfer`)::

    z_1 = q_1
    p_t = g_{t-1}(z_{t-1})                                    (transfer MLP)
    z_t = sum_{u in {p_t, q_t}} w_u h1(u),  w_u = softmax_u(<h2(u), h3(u)> / sqrt(D))
    y_t = sigmoid(head_t(z_t))

The loss (the wrapper's) adds the behavioural expectation calibrator to the tasks' cross-entropies,
``L = sum_t BCE(y_t, label_t) + alpha * mean_batch sum_{t>=2} max(y_t - y_{t-1}, 0)``: a later step should
never be likelier than the one before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, AdaptiveInformationTransfer, FieldEmbedding
from recstack.layers.init import init_linear


class AITM(nn.Module):
    """Shared field embeddings, one tower per task, an AIT module between consecutive tasks, one head per task.

    Each field ``f`` has its own ``vocabulary_sizes[f]`` ids (PaddleRec: one ``nn.Embedding`` per field); here the
    tables are the row ranges of one table (field ``f``'s id ``i`` is row ``offset_f + i``), the same embeddings
    with one lookup and one sparse (row-wise) update.

    Initialisation: embeddings truncated normal with std ``0.1 / sqrt(D)`` (PaddleRec: Paddle's default
    Glorot-uniform per table, which gives the 3-id fields values near ±1 and the 400,000-id ones ±0.004);
    towers, transfer MLPs, attention maps and heads Glorot-uniform with zero biases (Paddle's ``nn.Linear``).

    Args:
        vocabulary_sizes: ids of each field (PaddleRec's ``feature_vocabulary`` sizes, in column order).
        embedding_size: ``D`` of every field.
        tower_dims: hidden widths of each task's tower (PaddleRec's ``dims``); the last is the width of ``q_t``
            and ``z_t``.
        drop_prob: dropout after each tower layer (one rate per layer); the last rate also follows each
            transfer MLP, as in PaddleRec.
        num_tasks: ``T`` (at least 2).
        stop_gradient: cut the gradient from task ``t`` into ``z_{t-1}`` (the paper and PaddleRec let it flow).

    Shapes:
        ``features`` ``(B, F)`` int64 → a list of ``T`` probabilities ``(B, 1)``, funnel order.
    """

    def __init__(self, vocabulary_sizes: Sequence[int], embedding_size: int, tower_dims: Sequence[int],
                 drop_prob: Sequence[float], num_tasks: int = 2, stop_gradient: bool = False) -> None:
        super().__init__()
        if num_tasks < 2:
            raise ValueError(f"AITM needs at least 2 tasks, got {num_tasks}")
        if len(drop_prob) != len(tower_dims):
            raise ValueError(f"AITM: {len(drop_prob)} dropout rates for {len(tower_dims)} tower layers")
        sizes = [int(s) for s in vocabulary_sizes]
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]], dtype=torch.int64).cumsum(0),
                             persistent=False)
        self.embedding = FieldEmbedding(sum(sizes), embedding_size)
        width = len(sizes) * embedding_size
        dim = tower_dims[-1]
        self.towers = nn.ModuleList(MLP(width, tower_dims, dropout=list(drop_prob), init="xavier_uniform")
                                    for _ in range(num_tasks))
        self.transfers = nn.ModuleList(AdaptiveInformationTransfer(dim, dropout=drop_prob[-1],
                                                                   stop_gradient=stop_gradient)
                                       for _ in range(num_tasks - 1))
        self.heads = nn.ModuleList(init_linear(nn.Linear(dim, 1), "xavier_uniform") for _ in range(num_tasks))

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        shared = self.embedding(features + self.offsets).flatten(1)               # (B, F * D)
        z = self.towers[0](shared)                                                # z_1 = q_1
        outputs = [torch.sigmoid(self.heads[0](z))]
        for t, ait in enumerate(self.transfers, start=1):
            z = ait(z, self.towers[t](shared))                                    # z_t = AIT(g(z_{t-1}), q_t)
            outputs.append(torch.sigmoid(self.heads[t](z)))
        return outputs

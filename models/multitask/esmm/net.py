"""ESMM: Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click Conversion Rate.

Ma, Zhao, Hu, Zhu, Fang, Gai. SIGIR 2018. https://arxiv.org/abs/1804.07931

``pCTR = sigmoid(tower_ctr(e))``, ``pCVR = sigmoid(tower_cvr(e))`` and
``pCTCVR = pCTR * pCVR``, where ``e`` concatenates the sum-pooled embeddings of the
multi-valued fields, shared by both towers. Both losses are taken over the entire
exposure space: ``L = BCE(pCTR, click) + BCE(pCTCVR, click & conversion)``; pCVR
has no loss of its own, so it is never trained on the biased clicked-only sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, MultiValueEmbedding


class ESMM(nn.Module):
    """Shared multi-valued field embeddings, a CTR tower and a CVR tower, ``pCTCVR = pCTR * pCVR``.

    Initialisation: the embedding table truncated normal with std ``0.1 / sqrt(D)``
    (PaddleRec draws it from U(-1, 1)); tower weights N(0, 1/sqrt(fan_in)) with zero
    biases, as PaddleRec's ESMM.

    Args:
        sparse_feature_number: rows of the shared table (id 0 pads a field).
        sparse_feature_dim: embedding width ``D``.
        num_field: number of fields ``F``.
        max_len: values per field ``L`` (padded with id 0).
        ctr_fc_sizes: hidden widths of the CTR tower.
        cvr_fc_sizes: hidden widths of the CVR tower.

    Shapes:
        ``sparse`` ``(B, F * L)`` or ``(B, F, L)`` int64 → ``[pCTR, pCTCVR, pCVR]``, each ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, num_field: int, max_len: int,
                 ctr_fc_sizes: Sequence[int], cvr_fc_sizes: Sequence[int]) -> None:
        super().__init__()
        self.num_field, self.max_len = num_field, max_len
        self.embedding = MultiValueEmbedding(sparse_feature_number, sparse_feature_dim, padding_idx=0)
        width = num_field * sparse_feature_dim
        self.ctr_tower = MLP(width, ctr_fc_sizes, 1, init="normal")
        self.cvr_tower = MLP(width, cvr_fc_sizes, 1, init="normal")

    def forward(self, sparse: torch.Tensor) -> list[torch.Tensor]:
        ids = sparse.view(sparse.shape[0], self.num_field, self.max_len)
        shared = self.embedding(ids).flatten(1)  # (B, F * D)
        ctr = torch.sigmoid(self.ctr_tower(shared))
        cvr = torch.sigmoid(self.cvr_tower(shared))
        return [ctr, ctr * cvr, cvr]

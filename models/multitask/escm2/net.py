"""ESCM²: Entire Space Counterfactual Multi-Task Model for Post-Click Conversion Rate Estimation.

Wang, Chang, Liu, Huang, Chen, Yu, Li, Chu. SIGIR 2022. https://arxiv.org/abs/2204.05125

The ESMM structure (shared sum-pooled field embeddings ``e``, ``pCTR = sigmoid(tower_ctr(e))``,
``pCVR = sigmoid(tower_cvr(e))``, ``pCTCVR = pCTR * pCVR``) plus, for the doubly robust variant, an
imputation tower ``δ̂ = sigmoid(tower_imp(e))`` that predicts the CVR error of each exposure. The loss
(:mod:`recstack.losses`; the wrapper in ``dygraph_model.py``)::

    L = BCE(pCTR, click) + counterfactual_w * R_cf + global_w * BCE(pCTCVR, click & conversion)

where ``R_cf`` is the IPS risk (clicked exposures' CVR errors weighted by their inverse propensity
``1 / pCTR``) or the DR risk (imputed errors over every exposure, IPS-corrected on the clicked ones).

Two bottoms: the ESMM towers (``ctr_fc_sizes``, ``cvr_fc_sizes``, ``imp_fc_sizes``; the default), or
PaddleRec's own build, an MMoE (``expert_num`` one-layer experts of ``expert_size`` over the
``feature_size`` = ``num_field * sparse_feature_dim`` embeddings, one softmax gate and one tower of
``tower_size`` per output: CTR, CVR and, for DR, the imputation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, Experts, MultiValueEmbedding, TaskGates, Towers, mix_experts


class ESCM2(nn.Module):
    """Shared multi-valued field embeddings; CTR, CVR and (DR) imputation towers; ``pCTCVR = pCTR * pCVR``.

    Initialisation: the embedding table truncated normal with std ``0.1 / sqrt(D)`` (as ESMM here);
    ESMM towers N(0, 1/sqrt(fan_in)) with zero biases (as ESMM); the MMoE bottom Xavier-uniform with
    biases 0.1 (PaddleRec's).

    Args:
        sparse_feature_number: rows of the shared table (id 0 pads a field).
        sparse_feature_dim: embedding width ``D``.
        num_field: number of fields ``F``.
        max_len: values per field ``L`` (padded with id 0).
        ctr_fc_sizes, cvr_fc_sizes: hidden widths of the CTR and CVR towers (ESMM bottom).
        imputation: build the imputation tower (the DR variant).
        imp_fc_sizes: hidden widths of the imputation tower (default ``cvr_fc_sizes``).
        expert_num: set to use the MMoE bottom with this many experts (then ``expert_size`` and
            ``tower_size`` are needed and the ``*_fc_sizes`` are not used).
        expert_size, tower_size: expert width and tower hidden width of the MMoE bottom.

    Shapes:
        ``sparse`` ``(B, F * L)`` or ``(B, F, L)`` int64 → ``[pCTR, pCTCVR, pCVR]``, each ``(B, 1)``;
        with ``return_extras=True`` also ``{"imputation": δ̂ (B, 1)}`` (the DR variant; ``{}`` for IPS).
    """

    def __init__(self, sparse_feature_number: int, sparse_feature_dim: int, num_field: int, max_len: int,
                 ctr_fc_sizes: Sequence[int] = (), cvr_fc_sizes: Sequence[int] = (), imputation: bool = False,
                 imp_fc_sizes: Sequence[int] | None = None, expert_num: int | None = None,
                 expert_size: int | None = None, tower_size: int | None = None) -> None:
        super().__init__()
        self.num_field, self.max_len, self.imputation = num_field, max_len, imputation
        self.embedding = MultiValueEmbedding(sparse_feature_number, sparse_feature_dim, padding_idx=0)
        width = num_field * sparse_feature_dim
        self.mmoe = expert_num is not None
        if self.mmoe:
            if expert_size is None or tower_size is None:
                raise ValueError("ESCM2's MMoE bottom needs expert_size and tower_size")
            outputs = 3 if imputation else 2
            self.experts = Experts(width, expert_num, expert_size)
            self.gates = TaskGates(width, outputs, expert_num)
            self.towers = Towers(expert_size, outputs, [tower_size])
        else:
            self.ctr_tower = MLP(width, ctr_fc_sizes, 1, init="normal")
            self.cvr_tower = MLP(width, cvr_fc_sizes, 1, init="normal")
            self.imp_tower = MLP(width, cvr_fc_sizes if imp_fc_sizes is None else imp_fc_sizes, 1,
                                 init="normal") if imputation else None

    def forward(self, sparse: torch.Tensor, return_extras: bool = False):
        ids = sparse.view(sparse.shape[0], self.num_field, self.max_len)
        shared = self.embedding(ids).flatten(1)  # (B, F * D)
        if self.mmoe:
            outs = self.towers(mix_experts(self.gates(shared), self.experts(shared)))
            ctr, cvr = outs[0], outs[1]
            imp = outs[2] if self.imputation else None
        else:
            ctr = torch.sigmoid(self.ctr_tower(shared))
            cvr = torch.sigmoid(self.cvr_tower(shared))
            imp = torch.sigmoid(self.imp_tower(shared)) if return_extras and self.imp_tower is not None else None
        pred = [ctr, ctr * cvr, cvr]
        if not return_extras:
            return pred
        return pred, ({"imputation": imp} if imp is not None else {})

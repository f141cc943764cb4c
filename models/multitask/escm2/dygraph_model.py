"""ESCM² training wrapper on PaddleRec's Ali-CCP format.

Outputs ``ctr``, ``ctcvr`` and ``cvr`` (exported as ``prob_ctr``, ``prob_ctcvr``, ``prob_cvr``); the DR
variant's imputation tower is a training-only extra output. Loss::

    L = mean BCE(pCTR, click) + counterfactual_w * R_cf + global_w * mean BCE(pCTCVR, click & conversion)

``R_cf`` is :func:`recstack.losses.ips_cvr_loss` (``counterfact_mode: IPS``) or
:func:`recstack.losses.dr_cvr_loss` (``DR``). Metrics as ESMM's: ``auc_ctr``, ``auc_ctcvr`` over all
exposures, ``auc_cvr`` over the clicked exposures only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from recstack.config import (
    Bool,
    Config,
    ConfigError,
    ListOf,
    NonNegativeNumber,
    OneOf,
    PositiveInt,
    PositiveNumber,
)
from recstack.losses import IPS_CLIP, dr_cvr_loss, ips_cvr_loss
from recstack.metrics import Metric
from recstack.wrapper import DygraphModel as BaseModel
from recstack.wrapper import EntireSpaceMetrics

from .net import ESCM2

logger = logging.getLogger(__name__)


class DygraphModel(EntireSpaceMetrics, BaseModel):
    hyper_parameter_schema = {**EntireSpaceMetrics.hyper_parameter_schema, "imp_fc_sizes": ListOf(PositiveInt),
                              "counterfact_mode": OneOf("IPS", "DR"), "global_w": NonNegativeNumber,
                              "counterfactual_w": NonNegativeNumber, "ips_clip": PositiveNumber,
                              "detach_propensity": Bool, "expert_num": PositiveInt, "expert_size": PositiveInt,
                              "tower_size": PositiveInt, "feature_size": PositiveInt, "gate_num": PositiveInt}

    def create_model(self, config: Config) -> ESCM2:
        hp = "hyper_parameters."
        self.mode = config.get(hp + "counterfact_mode", "IPS", type=str).upper()
        self.global_w = float(config.get(hp + "global_w", 0.5, type=float))
        self.counterfactual_w = float(config.get(hp + "counterfactual_w", 0.5, type=float))
        self.ips_clip = float(config.get(hp + "ips_clip", IPS_CLIP, type=float))
        self.detach_propensity = config.get(hp + "detach_propensity", True, type=bool)
        self.extra_output_names = ("imputation",) if self.mode == "DR" else ()
        num_field = config.get(hp + "num_field", type=int)
        dim = config.get(hp + "sparse_feature_dim", type=int)
        # PaddleRec's configs carry both the tower sizes and the MMoE keys; its net uses only the MMoE ones
        ctr_fc_sizes = config.get(hp + "ctr_fc_sizes", [], type=list)
        cvr_fc_sizes = config.get(hp + "cvr_fc_sizes", [], type=list)
        imp_fc_sizes = config.get(hp + "imp_fc_sizes", None, type=list)
        expert_num = config.get(hp + "expert_num", None, type=int)
        mmoe: dict[str, Any] = {}
        if expert_num is not None:
            mmoe = {"expert_num": expert_num, "expert_size": config.get(hp + "expert_size", type=int),
                    "tower_size": config.get(hp + "tower_size", type=int)}
            feature_size = config.get(hp + "feature_size", None, type=int)
            if feature_size is not None and feature_size != num_field * dim:
                raise ConfigError(f"{config.source(hp + 'feature_size')}: must be num_field * sparse_feature_dim = "
                                  f"{num_field * dim} (the concatenated embeddings), got {feature_size}")
            gate_num = config.get(hp + "gate_num", None, type=int)
            outputs = 3 if self.mode == "DR" else 2
            if gate_num is not None and gate_num != outputs:
                logger.warning("%s = %d is ignored: counterfact_mode %s uses %d gates (as PaddleRec's net)",
                               config.source(hp + "gate_num"), gate_num, self.mode, outputs)
        return ESCM2(
            sparse_feature_number=config.get(hp + "sparse_feature_number", type=int),
            sparse_feature_dim=dim, num_field=num_field, max_len=config.get(hp + "max_len", 3, type=int),
            ctr_fc_sizes=ctr_fc_sizes, cvr_fc_sizes=cvr_fc_sizes, imputation=self.mode == "DR",
            imp_fc_sizes=imp_fc_sizes, **mmoe)

    def create_loss(self, pred: Sequence[torch.Tensor], label: Sequence[torch.Tensor],
                   imputation: torch.Tensor | None = None) -> torch.Tensor:
        """``BCE(pCTR, click) + counterfactual_w * R_cf + global_w * BCE(pCTCVR, conversion)``."""
        ctr, ctcvr, cvr = pred
        click, conversion = label
        loss_ctr = F.binary_cross_entropy(ctr, click.to(ctr.dtype))
        loss_ctcvr = F.binary_cross_entropy(ctcvr, conversion.to(ctcvr.dtype))
        if self.mode == "DR":
            if imputation is None:
                raise RuntimeError("escm2: counterfact_mode DR needs the imputation tower's output")
            risk = dr_cvr_loss(cvr, ctr, imputation, click, conversion, clip=self.ips_clip,
                               detach=self.detach_propensity)
        else:
            risk = ips_cvr_loss(cvr, ctr, click, conversion, clip=self.ips_clip, detach=self.detach_propensity)
        return loss_ctr + self.counterfactual_w * risk + self.global_w * loss_ctcvr

    def train_forward(self, dy_model: torch.nn.Module, metrics_list: list[Metric], batch_data: dict[str, torch.Tensor],
                      config: Config) -> tuple[torch.Tensor, list[Metric], dict[str, Any] | None]:
        inputs, labels = self.create_feeds(batch_data, config)
        pred, extras = self.forward_outputs(dy_model, inputs)
        loss = self.create_loss(pred, labels, extras.get("imputation"))
        self.update_metrics(metrics_list, pred, labels)
        return loss, metrics_list, None


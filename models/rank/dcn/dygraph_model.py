"""DCN training wrapper: the cross weights' L2 penalty joins the loss (``clip_by_norm`` is a core key)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recstack.backbone.model import ReadsBackboneConfigs
from recstack.config import Bool, Config, ListOf, NonNegativeInt, NonNegativeNumber, PositiveInt
from recstack.rank_inputs import INDEX_VALUE_SCHEMA, configure_feeds, field_inputs
from recstack.wrapper import SLOT_FORMAT_SCHEMA
from recstack.wrapper import DygraphModel as BaseModel

from .net import DCN


class DygraphModel(ReadsBackboneConfigs, BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, **INDEX_VALUE_SCHEMA,
                              "fc_sizes": ListOf(PositiveInt), "cross_num": NonNegativeInt,
                              "dnn_use_bn": Bool, "l2_reg_cross": NonNegativeNumber}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> DCN:
        inputs = field_inputs(config, "DCN")  # slot keys or feature config
        model = DCN(
            inputs,
            fc_sizes=config.get("hyper_parameters.fc_sizes", type=list),
            cross_num=config.get("hyper_parameters.cross_num", type=int),
            dnn_use_bn=config.get("hyper_parameters.dnn_use_bn", type=bool),
        )
        configure_feeds(self, config, inputs.input_names)
        self.cross = model.cross   # create_loss penalises its weights
        self.l2_reg_cross = config.get("hyper_parameters.l2_reg_cross", 0.0, type=float)
        return model

    def create_loss(self, pred: torch.Tensor, label: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean binary cross-entropy plus ``l2_reg_cross * sum_l ||w_l||^2`` over the cross layers."""
        loss = super().create_loss(pred, label)
        return loss + self.l2_reg_cross * self.cross.l2() if self.l2_reg_cross else loss

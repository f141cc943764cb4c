"""DMR training wrapper: PaddleRec's keys → net; loss = click BCE + ``aux_loss_weight`` * match loss; AUC."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from recstack.config import Config, ListOf, NonNegativeInt, NonNegativeNumber, PositiveInt, PositiveNumber
from recstack.data.alimama import HISTORY_LENGTH, LAYOUT
from recstack.metrics import Metric
from recstack.wrapper import Batch
from recstack.wrapper import DygraphModel as BaseModel

from .net import DMR

#: PaddleRec's table-size keys, in DMRLayer's argument order
TABLE_KEYS = ("user_size", "cms_segid_size", "cms_group_id_size", "final_gender_code_size", "age_level_size",
              "pvalue_level_size", "shopping_level_size", "occupation_size", "new_user_class_level_size",
              "adgroup_id_size", "cate_size", "campaign_id_size", "customer_size", "brand_size", "btag_size",
              "pid_size")


class DygraphModel(BaseModel):
    hyper_parameter_schema = {**{key: PositiveInt for key in TABLE_KEYS}, "main_embedding_size": PositiveInt,
                              "other_embedding_size": PositiveInt, "fc_sizes": ListOf(PositiveInt, 1),
                              "attention_sizes": ListOf(PositiveInt), "aux_loss_weight": NonNegativeNumber,
                              "aux_num_sampled": NonNegativeInt, "init_std": PositiveNumber}
    #: the reader's columns (recstack/data/alimama.py) but the label, in the net's argument order
    feed_names = tuple(name for name, *_ in LAYOUT if name != "label")
    label_names = ("label",)

    def create_model(self, config: Config) -> DMR:
        # PaddleRec's aux_loss *= 0.1; 0 leaves the match loss out (the net then never computes it)
        self.aux_loss_weight = config.get("hyper_parameters.aux_loss_weight", 0.1, type=float)
        self.extra_output_names = ("aux_loss",) if self.aux_loss_weight > 0 else ()
        return DMR(
            **{key: config.get(f"hyper_parameters.{key}", type=int) for key in TABLE_KEYS},
            main_embedding_size=config.get("hyper_parameters.main_embedding_size", 32, type=int),
            other_embedding_size=config.get("hyper_parameters.other_embedding_size", 8, type=int),
            history_length=HISTORY_LENGTH,
            fc_sizes=config.get("hyper_parameters.fc_sizes", [512, 256, 128], type=list),
            attention_sizes=config.get("hyper_parameters.attention_sizes", [80, 40], type=list),
            aux_num_sampled=config.get("hyper_parameters.aux_num_sampled", 0, type=int),
            init_std=config.get("hyper_parameters.init_std", 0.1, type=float),
        )

    def train_forward(self, dy_model: torch.nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[torch.Tensor, list[Metric], dict[str, Any] | None]:
        """``ctr_loss`` (mean BCE) + ``aux_loss_weight`` * ``aux_loss`` (the match loss); both logged."""
        inputs, labels = self.create_feeds(batch_data, config)
        pred, extras = self.forward_outputs(dy_model, inputs)
        ctr_loss = F.binary_cross_entropy(pred, labels[0].to(pred.dtype))
        self._update_metrics(metrics_list, pred, labels, batch_data)
        if "aux_loss" not in extras:
            return ctr_loss, metrics_list, None
        aux = extras["aux_loss"]
        loss = ctr_loss + self.aux_loss_weight * aux
        return loss, metrics_list, {"ctr_loss": ctr_loss.detach(), "aux_loss": aux.detach()}

"""DIEN training wrapper: DIN's feeds and metrics (AUC, GAUC); in training, negatives and the auxiliary loss.

Inference and export take DIN's five feeds only: the negatives of the auxiliary loss are drawn here, from the
training batch (:func:`.net.sample_negatives`, a generator seeded with ``runner.seed``), and only when the loss is
on (``use_aux_loss: True`` and ``aux_loss_weight > 0``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from recstack.config import Bool, Config, ListOf, NonNegativeNumber, OneOf, PositiveInt, PositiveNumber
from recstack.layers import lengths_to_mask
from recstack.metrics import Metric
from recstack.wrapper import Batch, ClickGAUCMetrics
from recstack.wrapper import DygraphModel as BaseModel

from .net import DIEN, sample_negatives

logger = logging.getLogger(__name__)


class DygraphModel(ClickGAUCMetrics, BaseModel):
    hyper_parameter_schema = {"item_count": PositiveInt, "cat_count": PositiveInt, "item_emb_size": PositiveInt,
                              "cat_emb_size": PositiveInt, "fc_sizes": ListOf(PositiveInt),
                              "attention_sizes": ListOf(PositiveInt), "aux_sizes": ListOf(PositiveInt),
                              "aux_loss_weight": NonNegativeNumber, "use_aux_loss": Bool,
                              "init_std": PositiveNumber, "act": OneOf("sigmoid", "dice", "relu", "prelu")}
    feed_names = ("hist_item", "hist_cat", "hist_len", "target_item", "target_cat")
    label_names = ("label",)
    group_name = "user"  # GAUC's group: the reader's user id column (-1 = unknown, skipped)

    def __init__(self) -> None:
        self.aux_loss_weight = 0.0
        self.generator = torch.Generator()

    def create_model(self, config: Config) -> DIEN:
        act = config.get("hyper_parameters.act", "sigmoid", type=str)
        for key in ("is_sparse", "use_DataLoader", "distributed_embedding"):  # PaddleRec's flags: no effect
            if config.get(f"hyper_parameters.{key}", None) is not None:
                logger.info("hyper_parameters.%s is a PaddleRec setting with no effect here", key)
        use_aux = config.get("hyper_parameters.use_aux_loss", True, type=bool)
        weight = config.get("hyper_parameters.aux_loss_weight", 1.0, type=float)
        self.aux_loss_weight = weight if use_aux else 0.0
        self.generator = torch.Generator().manual_seed(config.get("runner.seed", 0, type=int) + 1)
        return DIEN(
            item_count=config.get("hyper_parameters.item_count", type=int),
            cat_count=config.get("hyper_parameters.cat_count", type=int),
            item_emb_size=config.get("hyper_parameters.item_emb_size", 64, type=int),
            cat_emb_size=config.get("hyper_parameters.cat_emb_size", 64, type=int),
            act=act.lower(),
            fc_sizes=config.get("hyper_parameters.fc_sizes", [80, 40], type=list),
            attention_sizes=config.get("hyper_parameters.attention_sizes", [80, 40], type=list),
            aux_sizes=config.get("hyper_parameters.aux_sizes", [100, 50], type=list),
            auxiliary=self.aux_loss_weight > 0,
            init_std=config.get("hyper_parameters.init_std", 0.3, type=float),
        )


    def negatives(self, batch_data: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``neg_item``, ``neg_cat`` ``(B, L)`` for the batch's histories (:func:`.net.sample_negatives`)."""
        items = batch_data["hist_item"]
        mask = lengths_to_mask(batch_data["hist_len"], items.shape[1])
        return sample_negatives(items, batch_data["hist_cat"], mask, self.generator)

    def train_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[torch.Tensor, list[Metric], dict[str, Any] | None]:
        """BCE of the click, plus ``aux_loss_weight`` times the auxiliary loss when it is on."""
        inputs, labels = self.create_feeds(batch_data, config)
        if self.aux_loss_weight > 0:
            pred, extras = dy_model(*inputs, *self.negatives(batch_data), return_extras=True)
        else:
            pred, extras = dy_model(*inputs), {}
        ctr_loss = self.create_loss(pred, labels)
        print_dict = None
        loss = ctr_loss
        if "aux_loss" in extras:
            loss = ctr_loss + self.aux_loss_weight * extras["aux_loss"]
            print_dict = {"ctr_loss": ctr_loss.detach(), "aux_loss": extras["aux_loss"].detach()}
        self._update_metrics(metrics_list, pred, labels, batch_data)
        return loss, metrics_list, print_dict

"""DIEN training wrapper: DIN's feeds and metrics (AUC, GAUC); in training, negatives and the auxiliary loss.

Inference and export take DIN's five feeds only: the negatives of the auxiliary loss are drawn here, from the
training batch (:func:`.net.sample_negatives`, a generator seeded with ``runner.seed``), and only when the loss is
on (``use_aux_loss: True`` and ``aux_loss_weight > 0``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recstack.config import Bool, Config, ListOf, NonNegativeNumber, PositiveInt
from recstack.layers import lengths_to_mask
from recstack.metrics import Metric
from recstack.wrapper import Batch, BehaviourClickModel
from recstack.wrapper import DygraphModel as BaseModel

from .net import DIEN, sample_negatives


class DygraphModel(BehaviourClickModel, BaseModel):
    hyper_parameter_schema = {**BehaviourClickModel.hyper_parameter_schema, "aux_sizes": ListOf(PositiveInt),
                              "aux_loss_weight": NonNegativeNumber, "use_aux_loss": Bool}
    paddle_flags = (*BehaviourClickModel.paddle_flags, "distributed_embedding")

    def __init__(self) -> None:
        self.aux_loss_weight = 0.0
        self.generator = torch.Generator()

    def create_model(self, config: Config) -> DIEN:
        use_aux = config.get("hyper_parameters.use_aux_loss", True, type=bool)
        weight = config.get("hyper_parameters.aux_loss_weight", 1.0, type=float)
        self.aux_loss_weight = weight if use_aux else 0.0
        self.generator = torch.Generator().manual_seed(config.get("runner.seed", 0, type=int) + 1)
        return DIEN(**self.din_keys(config), aux_sizes=config.get("hyper_parameters.aux_sizes", [100, 50], type=list),
                    auxiliary=self.aux_loss_weight > 0)

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

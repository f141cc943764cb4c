"""DIN training wrapper: hyper_parameters → net; AUC and GAUC (per user) as metrics."""

from __future__ import annotations

import logging

from recstack.config import Bool, Config, ListOf, OneOf, PositiveInt, PositiveNumber
from recstack.wrapper import ClickGAUCMetrics
from recstack.wrapper import DygraphModel as BaseModel

from .net import DIN

logger = logging.getLogger(__name__)


class DygraphModel(ClickGAUCMetrics, BaseModel):
    hyper_parameter_schema = {"item_count": PositiveInt, "cat_count": PositiveInt, "item_emb_size": PositiveInt,
                              "cat_emb_size": PositiveInt, "fc_sizes": ListOf(PositiveInt),
                              "attention_sizes": ListOf(PositiveInt), "attention_softmax": Bool,
                              "init_std": PositiveNumber, "act": OneOf("sigmoid", "dice", "relu", "prelu")}
    feed_names = ("hist_item", "hist_cat", "hist_len", "target_item", "target_cat")
    label_names = ("label",)
    group_name = "user"  # GAUC's group: the reader's user id column (-1 = unknown, skipped)

    def create_model(self, config: Config) -> DIN:
        act = config.get("hyper_parameters.act", "sigmoid", type=str)  # one of the schema's, any case
        for key in ("is_sparse", "use_DataLoader"):  # PaddleRec's flags: accepted, no effect
            if config.get(f"hyper_parameters.{key}", None) is not None:
                logger.info("hyper_parameters.%s is a PaddleRec setting with no effect here (tables take "
                            "row-wise updates per hyper_parameters.optimizer.sparse)", key)
        return DIN(
            item_count=config.get("hyper_parameters.item_count", type=int),
            cat_count=config.get("hyper_parameters.cat_count", type=int),
            item_emb_size=config.get("hyper_parameters.item_emb_size", 64, type=int),
            cat_emb_size=config.get("hyper_parameters.cat_emb_size", 64, type=int),
            act=act.lower(),
            fc_sizes=config.get("hyper_parameters.fc_sizes", [80, 40], type=list),
            attention_sizes=config.get("hyper_parameters.attention_sizes", [80, 40], type=list),
            attention_softmax=config.get("hyper_parameters.attention_softmax", True, type=bool),
            init_std=config.get("hyper_parameters.init_std", 0.3, type=float),
        )


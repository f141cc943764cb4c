"""DLRM training wrapper: hyper_parameters → net, and PaddleRec's two metrics (AUC and accuracy)."""

from __future__ import annotations

from recstack.backbone.model import ReadsBackboneConfigs
from recstack.config import Config, ConfigError, ListOf, PositiveInt
from recstack.metrics import AUC, Accuracy
from recstack.wrapper import SLOT_FORMAT_SCHEMA, slot_format_args
from recstack.wrapper import DygraphModel as BaseModel

from .net import DLRM


class DygraphModel(ReadsBackboneConfigs, BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, "bot_layer_sizes": ListOf(PositiveInt, min_len=1),
                              "top_layer_sizes": ListOf(PositiveInt, min_len=1)}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> DLRM:
        dim = config.get("hyper_parameters.sparse_feature_dim", type=int)
        bot = config.get("hyper_parameters.bot_layer_sizes", type=list)
        top = config.get("hyper_parameters.top_layer_sizes", type=list)
        if not bot or bot[-1] != dim:
            raise ConfigError(f"{config.source('hyper_parameters.bot_layer_sizes')}: the last size "
                              f"({bot[-1] if bot else None}) must equal hyper_parameters.sparse_feature_dim ({dim}): "
                              "the bottom MLP's output is one more vector for the dot interaction")
        if not top or top[-1] not in (1, 2):
            raise ConfigError(f"{config.source('hyper_parameters.top_layer_sizes')}: the last size is the output "
                              f"layer and must be 1 (one logit) or 2 (two-class logits, PaddleRec), got {top}")
        return DLRM(
            **slot_format_args(config),
            bot_layer_sizes=bot,
            top_layer_sizes=top,
        )

    def create_metrics(self):
        """AUC and accuracy at 0.5, as PaddleRec's DLRM."""
        return [AUC(), Accuracy()], ["auc", "accuracy"]

    def update_metrics(self, metrics_list, pred, labels):
        for metric in metrics_list:   # both metrics watch the single task
            metric.update(pred, labels[0])

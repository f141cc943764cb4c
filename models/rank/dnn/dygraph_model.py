"""DNN training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.config import Config
from recstack.wrapper import DygraphModel as BaseModel

from .net import DNN


class DygraphModel(BaseModel):
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> DNN:
        return DNN(
            sparse_feature_number=config.get("hyper_parameters.sparse_feature_number", type=int),
            sparse_feature_dim=config.get("hyper_parameters.sparse_feature_dim", type=int),
            dense_feature_dim=config.get("hyper_parameters.dense_input_dim", type=int),
            # PaddleRec counts the label among sparse_inputs_slots
            num_sparse_fields=config.get("hyper_parameters.sparse_inputs_slots", type=int) - 1,
            fc_sizes=config.get("hyper_parameters.fc_sizes", type=list),
        )

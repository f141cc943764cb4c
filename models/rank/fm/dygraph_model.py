"""FM training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.config import Config
from recstack.wrapper import SLOT_FORMAT_SCHEMA
from recstack.wrapper import DygraphModel as BaseModel

from .net import FM


class DygraphModel(BaseModel):
    hyper_parameter_schema = SLOT_FORMAT_SCHEMA
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> FM:
        # sparse_inputs_slots (label + 26 slots, PaddleRec's count) is read by the slot reader
        return FM(
            sparse_feature_number=config.get("hyper_parameters.sparse_feature_number", type=int),
            sparse_feature_dim=config.get("hyper_parameters.sparse_feature_dim", type=int),
            dense_feature_dim=config.get("hyper_parameters.dense_input_dim", type=int),
        )

"""DNN training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.backbone.model import ReadsBackboneConfigs
from recstack.config import Config, ListOf, PositiveInt
from recstack.rank_inputs import INDEX_VALUE_SCHEMA, configure_feeds, field_inputs
from recstack.wrapper import SLOT_FORMAT_SCHEMA
from recstack.wrapper import DygraphModel as BaseModel

from .net import DNN


class DygraphModel(ReadsBackboneConfigs, BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, **INDEX_VALUE_SCHEMA, "fc_sizes": ListOf(PositiveInt)}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> DNN:
        inputs = field_inputs(config, "DNN")  # slot keys or feature config
        model = DNN(
            inputs,
            fc_sizes=config.get("hyper_parameters.fc_sizes", type=list),
        )
        configure_feeds(self, config, inputs.input_names)
        return model

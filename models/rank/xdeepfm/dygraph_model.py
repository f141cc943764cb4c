"""xDeepFM training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.config import Config, ListOf, PositiveInt
from recstack.rank_inputs import INDEX_VALUE_SCHEMA, configure_feeds, field_inputs
from recstack.wrapper import SLOT_FORMAT_SCHEMA
from recstack.wrapper import DygraphModel as BaseModel

from .net import XDeepFM


class DygraphModel(BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, **INDEX_VALUE_SCHEMA,
                              "layer_sizes_cin": ListOf(PositiveInt, min_len=1),
                              "layer_sizes_dnn": ListOf(PositiveInt)}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> XDeepFM:
        inputs = field_inputs(config, "xDeepFM", first_order=True, dense_fields=True,
                              equal_width=True)  # slot keys or feature config
        model = XDeepFM(
            inputs,
            layer_sizes_cin=config.get("hyper_parameters.layer_sizes_cin", type=list),
            layer_sizes_dnn=config.get("hyper_parameters.layer_sizes_dnn", type=list),
        )
        configure_feeds(self, config, inputs.input_names)
        return model

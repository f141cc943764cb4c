"""DeepFEFM training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.config import Config, ListOf, PositiveInt
from recstack.wrapper import SLOT_FORMAT_SCHEMA, slot_format_args
from recstack.wrapper import DygraphModel as BaseModel

from .net import DeepFEFM


class DygraphModel(BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, "fc_sizes": ListOf(PositiveInt)}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> DeepFEFM:
        return DeepFEFM(
            **slot_format_args(config),
            fc_sizes=config.get("hyper_parameters.fc_sizes", type=list),
        )

"""FFM training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.config import Config
from recstack.wrapper import SLOT_FORMAT_SCHEMA, slot_format_args
from recstack.wrapper import DygraphModel as BaseModel

from .net import FFM


class DygraphModel(BaseModel):
    hyper_parameter_schema = SLOT_FORMAT_SCHEMA
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> FFM:
        return FFM(
            **slot_format_args(config),
        )

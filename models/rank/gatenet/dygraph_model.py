"""GateNet training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.config import Bool, Config, ListOf, PositiveInt
from recstack.wrapper import SLOT_FORMAT_SCHEMA, slot_format_args
from recstack.wrapper import DygraphModel as BaseModel

from .net import GateNet


class DygraphModel(BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, "fc_sizes": ListOf(PositiveInt), "use_embedding_gate": Bool,
                              "use_hidden_gate": Bool}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> GateNet:
        return GateNet(
            **slot_format_args(config),
            fc_sizes=config.get("hyper_parameters.fc_sizes", type=list),
            use_embedding_gate=config.get("hyper_parameters.use_embedding_gate", type=bool),
            use_hidden_gate=config.get("hyper_parameters.use_hidden_gate", type=bool),
        )

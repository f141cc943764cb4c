"""GateNet training wrapper: maps hyper_parameters to the net; everything else is the core's default."""

from __future__ import annotations

from recstack.config import Config
from recstack.wrapper import DygraphModel as BaseModel
from recstack.wrapper import slot_format_args

from .net import GateNet


class DygraphModel(BaseModel):
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> GateNet:
        return GateNet(
            **slot_format_args(config),
            fc_sizes=config.get("hyper_parameters.fc_sizes", type=list),
            use_embedding_gate=config.get("hyper_parameters.use_embedding_gate", type=bool),
            use_hidden_gate=config.get("hyper_parameters.use_hidden_gate", type=bool),
        )

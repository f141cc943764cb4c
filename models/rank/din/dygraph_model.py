"""DIN training wrapper: hyper_parameters → net; AUC and GAUC (per user) as metrics."""

from __future__ import annotations

from recstack.config import Bool, Config
from recstack.wrapper import BehaviourClickModel
from recstack.wrapper import DygraphModel as BaseModel

from .net import DIN


class DygraphModel(BehaviourClickModel, BaseModel):
    hyper_parameter_schema = {**BehaviourClickModel.hyper_parameter_schema, "attention_softmax": Bool}

    def create_model(self, config: Config) -> DIN:
        return DIN(
            **self.din_keys(config),
            attention_softmax=config.get("hyper_parameters.attention_softmax", True, type=bool),
        )


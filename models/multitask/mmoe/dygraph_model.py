"""MMoE training wrapper on the census data: tasks income and marital (metrics auc_income, auc_marital)."""

from __future__ import annotations

from recstack.config import Config, ConfigError
from recstack.wrapper import DygraphModel as BaseModel

from .net import MMoE


class DygraphModel(BaseModel):
    feed_names = ("features",)
    label_names = ("income", "marital")
    task_names = ("income", "marital")

    def create_model(self, config: Config) -> MMoE:
        gate_num = config.get("hyper_parameters.gate_num", type=int)
        if gate_num != len(self.task_names):
            raise ConfigError(f"{config.source('hyper_parameters.gate_num')}: must be {len(self.task_names)} "
                              f"(one gate per task: {', '.join(self.task_names)}), got {gate_num}")
        return MMoE(
            feature_size=config.get("hyper_parameters.feature_size", type=int),
            expert_num=config.get("hyper_parameters.expert_num", type=int),
            expert_size=config.get("hyper_parameters.expert_size", type=int),
            tower_size=config.get("hyper_parameters.tower_size", type=int),
            gate_num=gate_num,
        )

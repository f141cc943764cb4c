"""PLE / CGC training wrapper on census-format data: tasks income and marital (metrics auc_income,
auc_marital) by default, or the names in ``hyper_parameters.task_names`` (the short-video data:
like, completion)."""

from __future__ import annotations

from recstack.config import Config, NonNegativeInt, PositiveInt
from recstack.data.csv import CENSUS_TASKS
from recstack.wrapper import DygraphModel as BaseModel

from .net import PLE


class DygraphModel(BaseModel):
    feed_names = ("features",)
    task_names = CENSUS_TASKS
    hyper_parameter_schema = {"feature_size": PositiveInt, "task_num": PositiveInt, "exp_per_task": PositiveInt,
                              "shared_num": NonNegativeInt, "level_number": PositiveInt, "expert_size": PositiveInt,
                              "tower_size": PositiveInt}

    def create_model(self, config: Config) -> PLE:
        tasks = self.configure_tasks(config, count_key="hyper_parameters.task_num")
        return PLE(
            feature_size=config.get("hyper_parameters.feature_size", type=int),
            task_num=len(tasks),
            expert_size=config.get("hyper_parameters.expert_size", type=int),
            tower_size=config.get("hyper_parameters.tower_size", type=int),
            exp_per_task=config.get("hyper_parameters.exp_per_task", type=int),
            shared_num=config.get("hyper_parameters.shared_num", type=int),
            level_number=config.get("hyper_parameters.level_number", type=int),
        )

"""PLE / CGC training wrapper on census-format data: tasks income and marital (metrics auc_income,
auc_marital) by default, or the names in ``hyper_parameters.task_names`` (the short-video data:
like, completion)."""

from __future__ import annotations

from recstack.config import Config, ConfigError
from recstack.data.csv import CENSUS_TASKS
from recstack.wrapper import DygraphModel as BaseModel

from .net import PLE


class DygraphModel(BaseModel):
    feed_names = ("features",)
    task_names = CENSUS_TASKS

    def create_model(self, config: Config) -> PLE:
        tasks = self.configure_tasks(config, count_key="hyper_parameters.task_num")
        sizes = {}
        for key, least in (("exp_per_task", 1), ("shared_num", 0), ("level_number", 1)):
            sizes[key] = config.get(f"hyper_parameters.{key}", type=int)
            if sizes[key] < least:
                raise ConfigError(f"{config.source('hyper_parameters.' + key)}: must be at least {least}, "
                                  f"got {sizes[key]}")
        return PLE(
            feature_size=config.get("hyper_parameters.feature_size", type=int),
            task_num=len(tasks),
            expert_size=config.get("hyper_parameters.expert_size", type=int),
            tower_size=config.get("hyper_parameters.tower_size", type=int),
            **sizes,
        )

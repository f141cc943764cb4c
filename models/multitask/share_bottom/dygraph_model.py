"""Share-Bottom training wrapper on census-format data: tasks income and marital (metrics
auc_income, auc_marital) by default, or the names in ``hyper_parameters.task_names`` (the
short-video data: like, completion)."""

from __future__ import annotations

from recstack.config import Config, PositiveInt
from recstack.data.csv import CENSUS_TASKS
from recstack.wrapper import DygraphModel as BaseModel

from .net import ShareBottom


class DygraphModel(BaseModel):
    feed_names = ("features",)
    task_names = CENSUS_TASKS
    hyper_parameter_schema = {key: PositiveInt for key in ("feature_size", "bottom_size", "tower_size", "task_num")}

    def create_model(self, config: Config) -> ShareBottom:
        tasks = self.configure_tasks(config, count_key="hyper_parameters.task_num")
        return ShareBottom(
            feature_size=config.get("hyper_parameters.feature_size", type=int),
            bottom_size=config.get("hyper_parameters.bottom_size", type=int),
            tower_size=config.get("hyper_parameters.tower_size", type=int),
            task_num=len(tasks),
        )

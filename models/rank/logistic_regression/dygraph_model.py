"""Logistic-regression training wrapper: maps hyper_parameters to the net; loss, optimizer (with
``reg``) and AUC are the core defaults."""

from __future__ import annotations

from recstack.config import Config, PositiveInt
from recstack.wrapper import DygraphModel as BaseModel

from .net import LogisticRegression


class DygraphModel(BaseModel):
    hyper_parameter_schema = {"sparse_feature_number": PositiveInt, "num_field": PositiveInt}
    feed_names = ("feat_idx", "feat_value")
    label_names = ("label",)

    def create_model(self, config: Config) -> LogisticRegression:
        # num_field (the number of feat_idx / feat_value tokens per line) is read by the reader;
        # reg (L2 on the table rows of each batch) by the core's create_optimizer
        return LogisticRegression(
            sparse_feature_number=config.get("hyper_parameters.sparse_feature_number", type=int),
        )

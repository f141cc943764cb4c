"""AutoInt training wrapper: maps ``hyper_parameters`` (PaddleRec's key names) to the net."""

from __future__ import annotations

import logging

from recstack.config import Bool, Config, ListOf, PositiveInt
from recstack.rank_inputs import INDEX_VALUE_SCHEMA, configure_feeds, field_inputs
from recstack.wrapper import SLOT_FORMAT_SCHEMA
from recstack.wrapper import DygraphModel as BaseModel

from .net import AutoInt

logger = logging.getLogger(__name__)


class DygraphModel(BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, **INDEX_VALUE_SCHEMA, "fc_sizes": ListOf(PositiveInt),
                              "attn_layer_sizes": ListOf(PositiveInt, 1), "head_num": PositiveInt,
                              "use_residual": Bool, "scaling": Bool, "use_wide": Bool}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> AutoInt:
        for key in ("use_sparse", "distributed_embedding"):  # PaddleRec's flags: accepted, no effect
            if config.get(f"hyper_parameters.{key}", None) is not None:
                logger.info("hyper_parameters.%s is a PaddleRec setting with no effect here (tables take "
                            "row-wise updates per hyper_parameters.optimizer.sparse)", key)
        use_wide = config.get("hyper_parameters.use_wide", True, type=bool)
        inputs = field_inputs(config, "AutoInt", first_order=use_wide, dense_fields=True, equal_width=True)
        model = AutoInt(
            inputs,
            attn_layer_sizes=config.get("hyper_parameters.attn_layer_sizes", type=list),
            head_num=config.get("hyper_parameters.head_num", type=int),
            use_residual=config.get("hyper_parameters.use_residual", True, type=bool),
            scaling=config.get("hyper_parameters.scaling", True, type=bool),
            use_wide=use_wide,
            fc_sizes=config.get("hyper_parameters.fc_sizes", [], type=list),
        )
        configure_feeds(self, config, inputs.input_names)
        return model

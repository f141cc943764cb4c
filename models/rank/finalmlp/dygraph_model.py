"""FinalMLP training wrapper: maps hyper_parameters (FuxiCTR's FinalMLP key names) to the net."""

from __future__ import annotations

from recstack.config import Bool, Config, ListOf, NonNegativeInt, NonNegativeNumber, PositiveInt, String
from recstack.rank_inputs import INDEX_VALUE_SCHEMA, configure_feeds, field_inputs
from recstack.wrapper import SLOT_FORMAT_SCHEMA
from recstack.wrapper import DygraphModel as BaseModel

from .net import FinalMLP


class DygraphModel(BaseModel):
    hyper_parameter_schema = {**SLOT_FORMAT_SCHEMA, **INDEX_VALUE_SCHEMA,
                              **{f"mlp{i}_{key}": check for i in (1, 2) for key, check in (
                                  ("hidden_units", ListOf(PositiveInt)), ("hidden_activations", String),
                                  ("dropout", NonNegativeNumber), ("batch_norm", Bool))},
                              "use_fs": Bool, "fs_hidden_units": ListOf(PositiveInt),
                              "fs1_context": ListOf(NonNegativeInt), "fs2_context": ListOf(NonNegativeInt),
                              "num_heads": PositiveInt}
    feed_names = ("sparse", "dense")
    label_names = ("label",)

    def create_model(self, config: Config) -> FinalMLP:
        inputs = field_inputs(config, "FinalMLP", dense_fields=True, equal_width=True)  # slot keys or feature config

        def key(name, default, kind):
            return config.get(f"hyper_parameters.{name}", default, type=kind)

        model = FinalMLP(
            inputs,
            mlp1_hidden_units=key("mlp1_hidden_units", None, list),
            mlp2_hidden_units=key("mlp2_hidden_units", None, list),
            mlp1_hidden_activations=key("mlp1_hidden_activations", "relu", str),
            mlp2_hidden_activations=key("mlp2_hidden_activations", "relu", str),
            mlp1_dropout=key("mlp1_dropout", 0.0, float),
            mlp2_dropout=key("mlp2_dropout", 0.0, float),
            mlp1_batch_norm=key("mlp1_batch_norm", False, bool),
            mlp2_batch_norm=key("mlp2_batch_norm", False, bool),
            use_fs=key("use_fs", True, bool),
            fs_hidden_units=key("fs_hidden_units", [64], list),
            fs1_context=key("fs1_context", [], list),
            fs2_context=key("fs2_context", [], list),
            num_heads=key("num_heads", 1, int),
        )
        configure_feeds(self, config, inputs.input_names)
        return model

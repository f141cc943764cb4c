"""MaskNet reads Criteo's raw TSV layout with the core tabular reader (see recstack/easyrec/tabular.py):
columns, label, features and groups come from ``hyper_parameters.data_config`` / ``feature_config`` /
``model_config.feature_groups``."""

from recstack.easyrec.tabular import TabularReader as RecDataset

__all__ = ["RecDataset"]

"""The retrieval models read EasyRec-style delimited text with the core tabular reader (recstack/easyrec/tabular.py):
the interactions by ``hyper_parameters.data_config`` / ``feature_config`` / ``model_config.feature_groups``; the
item table (``item_config``) is read by the model itself (recstack/retrieval/corpus.py)."""

from recstack.easyrec.tabular import TabularReader as RecDataset

__all__ = ["RecDataset"]

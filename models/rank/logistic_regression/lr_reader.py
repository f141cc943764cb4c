"""The LR model reads PaddleRec's logistic-regression format with the core reader (see recstack/data/slot.py):
``feat_idx:<id>`` x num_field, ``feat_value:<v>`` x num_field, ``label:<0/1>``."""

from recstack.data.slot import FeatIdxValueReader as RecDataset

__all__ = ["RecDataset"]

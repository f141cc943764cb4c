"""DIN reads PaddleRec's Amazon-Electronics DIN format with the core reader (see recstack/data/din.py).

Named like PaddleRec's ``dinReader`` so that ``train_reader_path: "dinReader"`` keeps working.
"""

from recstack.data.din import DINReader as RecDataset

__all__ = ["RecDataset"]

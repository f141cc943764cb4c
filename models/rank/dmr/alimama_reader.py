"""DMR reads PaddleRec's Alimama format with the core reader (see recstack/data/alimama.py).

Named like PaddleRec's ``alimama_reader`` so that ``train_reader_path: "alimama_reader"`` keeps working.
"""

from recstack.data.alimama import AlimamaReader as RecDataset

__all__ = ["RecDataset"]

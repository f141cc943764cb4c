"""BST on DIN's format: the core DIN reader plus BST's positions, the reverse index (recstack/data/bst.py).

Named like DIN's ``dinReader`` so that a DIN config's data section (``train_reader_path: "dinReader"``) works
unchanged here; PaddleRec's BST format is ``amazon_reader``.
"""

from recstack.data.bst import DINPositionReader as RecDataset

__all__ = ["RecDataset"]

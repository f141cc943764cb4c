"""BST reads PaddleRec's BST format (``userid:.. history:.. cate:.. position:.. target:.. target_cate:..
target_position:.. label:..``) with the core reader (see recstack/data/bst.py).

Named like PaddleRec's ``amazon_reader`` so that ``train_reader_path: "amazon_reader"`` keeps working.
"""

from recstack.data.bst import BSTReader as RecDataset

__all__ = ["RecDataset"]

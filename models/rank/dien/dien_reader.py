"""DIEN reads PaddleRec's DIN / DIEN format with the core reader (see recstack/data/din.py).

``hist_item_ids;hist_cat_ids;target_item;target_cat;label[;user_id]``. Named like PaddleRec's ``dien_reader`` so
that ``train_reader_path: "dien_reader"`` keeps working. PaddleRec's DIEN reader also draws the negative
histories of the auxiliary loss; here the wrapper draws them in training only (``dygraph_model.py``), so
inference and export take DIN's feeds.
"""

from recstack.data.din import DINReader as RecDataset

__all__ = ["RecDataset"]

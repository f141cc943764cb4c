"""FiBiNet: Combining Feature Importance and Bilinear feature Interaction for CTR Prediction.

Tongwen Huang, Zhiqi Zhang, Junlin Zhang (Sina Weibo). RecSys 2019. https://arxiv.org/abs/1905.09433

The formulas (EasyRec's form of the model, as configured here) are in this folder's README.md.

There is no model code here: the network is ``config.yaml``'s EasyRec backbone (``model_class: RankModel``),
built by recstack's generic backbone model from the shared components (``recstack/backbone/library.py`` over
``recstack/layers/``; doc/backbone.md). This module names that network for readers and imports.
"""

from recstack.backbone.model import BackboneNet as FiBiNet

__all__ = ["FiBiNet"]

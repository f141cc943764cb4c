"""MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking Models by Instance-Guided Mask.

Zhiqiang Wang, Qingyun She, Junlin Zhang (Sina Weibo). DLP-KDD 2021. https://arxiv.org/abs/2102.07619

The formulas (EasyRec's form of the model, as configured here) are in this folder's README.md.

There is no model code here: the network is ``config.yaml``'s EasyRec backbone (``model_class: RankModel``),
built by recstack's generic backbone model from the shared components (``recstack/backbone/library.py`` over
``recstack/layers/``; doc/backbone.md). This module names that network for readers and imports.
"""

from recstack.backbone.model import BackboneNet as MaskNet

__all__ = ["MaskNet"]

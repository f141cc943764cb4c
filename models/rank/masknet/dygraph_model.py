"""MaskNet training wrapper: the model is the config's backbone (``MaskNet`` component, parallel MaskBlocks) under
``model_class: RankModel``; :class:`recstack.backbone.model.BackboneWrapper` builds it.

Wang et al., "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking Models by Instance-Guided Mask",
DLP-KDD 2021 (https://arxiv.org/abs/2102.07619). Logs ``auc`` and ``loss`` like the other rank models.
"""

from __future__ import annotations

from recstack.backbone.model import BackboneWrapper


class DygraphModel(BackboneWrapper):
    """MaskNet from ``hyper_parameters.model_config.backbone`` (see config.yaml and README.md)."""

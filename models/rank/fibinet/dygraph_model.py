"""FiBiNet training wrapper: the model is the config's backbone (input layer -> ``FiBiNet`` component) under
``model_class: RankModel``; :class:`recstack.backbone.model.BackboneWrapper` builds it.

Huang et al., "FiBiNET: Combining Feature Importance and Bilinear feature Interaction for Click-Through Rate
Prediction", RecSys 2019 (https://arxiv.org/abs/1905.09433). Logs ``auc`` and ``loss`` like the other rank models.
"""

from __future__ import annotations

from recstack.backbone.model import BackboneWrapper


class DygraphModel(BackboneWrapper):
    """FiBiNet from ``hyper_parameters.model_config.backbone`` (see config.yaml and README.md)."""

"""DBMTL: Deep Bayesian Multi-Target Learning for Recommender Systems.

Qi Wang, Zhihui Ji, Huasheng Liu, Binqiang Zhao (Alibaba). arXiv 2019.
https://arxiv.org/abs/1902.09154 ; as built by EasyRec's ``DBMTL`` model.

The targets form a Bayesian network whose links are hidden layers. With shared
features ``x`` (the feature group ``all``) and towers in config order::

    b   = bottom_dnn(x)
    h_t = dnn_t(b)
    r_t = relation_dnn_t([h_t, r_s for s in relation_tower_names_t])
    y_t = sigmoid(w_t . r_t + c_t)   (CLASSIFICATION)   or   w_t . r_t + c_t   (L2_LOSS)

so ``P(y_1, y_2 | x) = P(y_1 | x) P(y_2 | y_1, x)`` when tower 2 names tower 1
(``is_valid_play`` -> ``play_time``): tower 2 reads tower 1's relation output.
Loss: ``sum_t weight_t * mean(loss_t) + l2_regularization * sum ||W||^2 / 2``
(+ ``embedding_regularization * sum e^2 / 2`` over the batch's id embeddings).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from recstack.features import TabularSpec
from recstack.layers.feature_embedding import FeatureEmbedding
from recstack.layers.task_tower import RelationTowers, easyrec_dnn, linear_l2
from recstack.tasks import DNNSpec, TaskTowerSpec


class DBMTL(nn.Module):
    """Feature group ``all`` -> [BatchNorm] -> bottom DNN -> Bayesian task towers.

    Initialisation: embeddings truncated normal with std ``0.1 / sqrt(embedding_dim)``
    (:class:`FeatureEmbedding`'s default; TensorFlow's ``1 / sqrt(embedding_dim)``, which
    EasyRec uses, lost 0.02-0.05 test AUC on the sample data, see the README); every
    Linear Xavier-uniform with zero bias (``tf.layers.dense``); BatchNorm weight 1, bias 0.

    Args:
        spec: features and feature groups (``data_config`` / ``feature_config`` /
            ``feature_groups``); the model reads the group ``all``.
        bottom_dnn: the shared DNN (``None``: the features go to the towers as they are).
        towers: the task towers, in order (relations to earlier towers only).
        l2_regularization: coefficient of ``sum ||W||^2 / 2`` over all Linear weights
            (EasyRec's ``dbmtl.l2_regularization``, default 1e-4).
        embedding_regularization: coefficient of ``sum e^2 / 2`` over the id embeddings a
            batch looks up (EasyRec's ``model_config.embedding_regularization``).
        use_feature_bn: BatchNorm on the feature group before the bottom DNN.

    Shapes:
        inputs: the batch arrays of group ``all`` (``all.ids`` int64 ``(B, k)``,
        ``all.values`` float ``(B, m)``, those present, see :attr:`input_names`)
        -> list of one ``(B, 1)`` prediction per tower (probability or value).
    """

    def __init__(self, spec: TabularSpec, bottom_dnn: DNNSpec | None, towers: Sequence[TaskTowerSpec],
                 l2_regularization: float = 1e-4, embedding_regularization: float = 0.0,
                 use_feature_bn: bool = False) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, ["all"])
        self.input_names = self.embedding.input_names
        width = self.embedding.output_dims["all"]
        self.feature_bn = nn.BatchNorm1d(width) if use_feature_bn else nn.Identity()
        self.bottom = easyrec_dnn(width, bottom_dnn)
        self.towers = RelationTowers(self.bottom.output_dim, towers)
        self.l2_regularization = l2_regularization
        self.embedding_regularization = embedding_regularization

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        (features,) = self.embedding(*inputs)
        return self.towers(self.bottom(self.feature_bn(features)))

    def regularization_loss(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``l2_regularization * sum ||W||^2 / 2`` (+ the embedding term for this batch's ``inputs``)."""
        loss = self.l2_regularization * linear_l2([self.bottom, self.towers]) if self.l2_regularization else \
            torch.zeros(())
        if self.embedding_regularization:
            loss = loss + self.embedding_regularization * self.embedding.embedding_penalty(*inputs)
        return loss

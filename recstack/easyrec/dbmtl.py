"""DBMTL's network (Wang et al., "Deep Bayesian Multi-Target Learning for Recommender Systems", 2019,
https://arxiv.org/abs/1902.09154; EasyRec's ``DBMTL``), shared by ``models/multitask/dbmtl`` and
``models/multitask/e2e_mm_dbmtl`` (whose image embedding enters through :meth:`DBMTL.head`'s ``side``).
The formula is in ``models/multitask/dbmtl/net.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.task_tower import RelationTowers, easyrec_dnn, linear_l2
from recstack.easyrec.tasks import DNNSpec, TaskTowerSpec


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
        feature_bn_momentum, feature_bn_eps: that BatchNorm's settings (torch's defaults; E2E_MM_DBMTL
            uses TensorFlow's 0.01 / 1e-3).
        side_input_dim: width of an input concatenated before the bottom DNN's output and fed to the
            towers (:meth:`head`'s ``side``; E2E_MM_DBMTL's image embedding); 0: none.

    Shapes:
        inputs: the batch arrays of group ``all`` (``all.ids`` int64 ``(B, k)``,
        ``all.values`` float ``(B, m)``, those present, see :attr:`input_names`)
        -> list of one ``(B, 1)`` prediction per tower (probability or value).
    """

    def __init__(self, spec: TabularSpec, bottom_dnn: DNNSpec | None, towers: Sequence[TaskTowerSpec],
                 l2_regularization: float = 1e-4, embedding_regularization: float = 0.0,
                 use_feature_bn: bool = False, feature_bn_momentum: float = 0.1, feature_bn_eps: float = 1e-5,
                 side_input_dim: int = 0) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, ["all"])
        self.input_names = self.embedding.input_names
        width = self.embedding.output_dims["all"]
        self.feature_bn = nn.BatchNorm1d(width, eps=feature_bn_eps, momentum=feature_bn_momentum) if use_feature_bn \
            else nn.Identity()
        self.bottom = easyrec_dnn(width, bottom_dnn)
        self.side_input_dim = side_input_dim
        self.towers = RelationTowers(side_input_dim + self.bottom.output_dim, towers)
        self.l2_regularization = l2_regularization
        self.embedding_regularization = embedding_regularization

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return self.head(inputs)

    def head(self, inputs: Sequence[torch.Tensor], side: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The towers on ``[side, bottom_dnn(bn(features))]`` (``side``: ``(B, side_input_dim)``, or ``None``
        when ``side_input_dim`` is 0)."""
        (features,) = self.embedding(*inputs)
        x = self.bottom(self.feature_bn(features))
        if side is not None:
            x = torch.cat([side, x], dim=1)
        return self.towers(x)

    def regularization_loss(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``l2_regularization * sum ||W||^2 / 2`` (+ the embedding term for this batch's ``inputs``)."""
        loss = self.l2_regularization * linear_l2([self.bottom, self.towers]) if self.l2_regularization else \
            torch.zeros(())
        if self.embedding_regularization:
            loss = loss + self.embedding_regularization * self.embedding.embedding_penalty(*inputs)
        return loss

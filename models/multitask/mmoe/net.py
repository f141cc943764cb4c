"""MMoE: Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts.

Ma, Zhao, Yi, Chen, Hong, Chi. KDD 2018. https://dl.acm.org/doi/10.1145/3219819.3220007

``f_k(x) = sum_e softmax(W_k x)_e * expert_e(x)`` and ``y_k = tower_k(f_k(x))``:
shared experts, one softmax gate and one tower per task.

Two builds: :class:`MMoE` is PaddleRec's (census format, one-layer experts, one-hidden-layer
towers); :class:`EasyRecMMoE` is EasyRec's ``MMoE`` (feature group ``all``, ``num_expert``
experts of ``expert_dnn.hidden_units``, EasyRec task towers, with the loss
``sum_t weight_t * mean(loss_t) + l2_regularization * sum ||W||^2 / 2
+ embedding_regularization * sum e^2 / 2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.task_tower import RelationTowers, linear_l2
from recstack.easyrec.tasks import DNNSpec, TaskTowerSpec
from recstack.layers import Experts, MLPExperts, TaskGates, Towers, mix_experts


class MMoE(nn.Module):
    """Multi-gate mixture of one-layer ReLU experts with one-hidden-layer towers.

    Initialisation (PaddleRec's): Xavier-uniform weights, biases 0.1.

    Args:
        feature_size: input features.
        expert_num: number of experts.
        expert_size: width of each expert.
        tower_size: hidden width of each tower.
        gate_num: number of tasks (one gate and one tower each).

    Shapes:
        ``(B, feature_size)`` → list of ``gate_num`` probabilities ``(B, 1)``.
    """

    def __init__(self, feature_size: int, expert_num: int, expert_size: int, tower_size: int,
                 gate_num: int) -> None:
        super().__init__()
        self.experts = Experts(feature_size, expert_num, expert_size)
        self.gates = TaskGates(feature_size, gate_num, expert_num)
        self.towers = Towers(expert_size, gate_num, [tower_size])

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return self.towers(mix_experts(self.gates(features), self.experts(features)))


class EasyRecMMoE(nn.Module):
    """EasyRec's MMoE: feature group ``all`` -> ``num_expert`` MLP experts and one softmax gate per
    task tower (both over the group) -> per-task mixture -> the tower's ``dnn`` -> one output unit.

    Initialisation: embeddings truncated normal with std ``0.1 / sqrt(embedding_dim)``
    (:class:`FeatureEmbedding`, as DBMTL); every Linear (experts' layers, gates, towers,
    outputs) Xavier-uniform per expert / gate / tower with zero bias (``tf.layers.dense``).

    Args:
        spec: features and feature groups; the model reads the group ``all``.
        expert_dnn: each expert's DNN (``expert_dnn``; at least one hidden layer).
        num_expert: number of experts.
        towers: the task towers (``dnn``, ``loss_type``, no relations), one gate each.
        l2_regularization: coefficient of ``sum ||W||^2 / 2`` over every Linear weight
            (EasyRec's ``mmoe.l2_regularization``, default 1e-4).
        embedding_regularization: coefficient of ``sum e^2 / 2`` over the id embeddings a batch
            looks up (EasyRec's ``model_config.embedding_regularization``).

    Shapes:
        inputs: the batch arrays of group ``all`` (:attr:`input_names`: ``all.ids`` int64 ``(B, k)``,
        ``all.values`` float ``(B, m)``, those present) -> list of one ``(B, 1)`` prediction per
        tower (probability for CLASSIFICATION, value for L2_LOSS).
    """

    def __init__(self, spec: TabularSpec, expert_dnn: DNNSpec, num_expert: int, towers: Sequence[TaskTowerSpec],
                 l2_regularization: float = 1e-4, embedding_regularization: float = 0.0) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, ["all"])
        self.input_names = self.embedding.input_names
        width = self.embedding.output_dims["all"]
        self.experts = MLPExperts(width, num_expert, expert_dnn.hidden_units, activation=expert_dnn.activation,
                                  dropout=expert_dnn.dropout, batch_norm=expert_dnn.use_bn, bias_init=0.0)
        self.gates = TaskGates(width, len(towers), num_expert, bias_init=0.0)
        self.towers = RelationTowers(self.experts.output_dim, towers)
        self.l2_regularization = l2_regularization
        self.embedding_regularization = embedding_regularization

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        (features,) = self.embedding(*inputs)
        mixed = mix_experts(self.gates(features), self.experts(features))  # (B, T, expert width)
        return self.towers(mixed.unbind(1))

    def regularization_loss(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``l2_regularization * sum ||W||^2 / 2`` (+ the embedding term for this batch's ``inputs``)."""
        loss = torch.zeros(())
        if self.l2_regularization:
            experts = torch.stack([0.5 * w.pow(2).sum() for w in self.experts.kernels()]).sum()
            loss = self.l2_regularization * (experts + linear_l2([self.gates, self.towers]))
        if self.embedding_regularization:
            loss = loss + self.embedding_regularization * self.embedding.embedding_penalty(*inputs)
        return loss

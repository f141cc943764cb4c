"""MMoE: Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts.

Ma, Zhao, Yi, Chen, Hong, Chi. KDD 2018. https://dl.acm.org/doi/10.1145/3219819.3220007

``f_k(x) = sum_e softmax(W_k x)_e * expert_e(x)`` and ``y_k = tower_k(f_k(x))``:
shared experts, one softmax gate and one tower per task.

``gate_type="dselect_k"`` swaps each softmax gate for a DSelect-k gate (Hazimeh et al., "DSelect-k:
Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning", NeurIPS 2021,
https://arxiv.org/abs/2106.03760; :class:`recstack.layers.DSelectKGates`): ``f_k(x) = sum_i softmax(w_k(x))_i
sum_e q_e(z_{k,i}(x)) expert_e(x)``, ``k`` binary-encoded single-expert selectors per task, at most ``k`` experts
per task once the smooth-steps saturate; its regulariser is :meth:`MMoE.regularization_loss`.

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
from recstack.layers import DSelectKGates, Experts, MLPExperts, TaskGates, Towers, mix_experts

#: the gates :class:`MMoE` builds
GATE_TYPES = ("softmax", "dselect_k")


class MMoE(nn.Module):
    """Multi-gate mixture of one-layer ReLU experts with one-hidden-layer towers.

    Initialisation (PaddleRec's): Xavier-uniform weights, biases 0.1.

    Args:
        feature_size: input features.
        expert_num: number of experts.
        expert_size: width of each expert.
        tower_size: hidden width of each tower.
        gate_num: number of tasks (one gate and one tower each).
        gate_type: ``softmax`` (:class:`TaskGates`, PaddleRec's) or ``dselect_k`` (:class:`DSelectKGates`).
        num_selectors, gamma, entropy_reg, entropy_reg_warmup_steps, gate_per_example: the DSelect-k gate's
            ``num_selectors``, ``gamma``, ``entropy_reg``, ``entropy_reg_warmup_steps`` and ``per_example``
            (ignored by the softmax gate).

    Shapes:
        ``(B, feature_size)`` → list of ``gate_num`` probabilities ``(B, 1)``.
    """

    def __init__(self, feature_size: int, expert_num: int, expert_size: int, tower_size: int,
                 gate_num: int, gate_type: str = "softmax", num_selectors: int = 2, gamma: float = 1.0,
                 entropy_reg: float = 0.0, entropy_reg_warmup_steps: int = 0, gate_per_example: bool = True) -> None:
        super().__init__()
        if gate_type not in GATE_TYPES:
            raise ValueError(f"MMoE: gate_type must be one of {GATE_TYPES}, got {gate_type!r}")
        self.experts = Experts(feature_size, expert_num, expert_size)
        if gate_type == "dselect_k":
            self.gates: nn.Module = DSelectKGates(feature_size, gate_num, expert_num, num_selectors, gamma=gamma,
                                                  entropy_reg=entropy_reg,
                                                  entropy_reg_warmup_steps=entropy_reg_warmup_steps,
                                                  per_example=gate_per_example)
        else:
            self.gates = TaskGates(feature_size, gate_num, expert_num)
        self.towers = Towers(expert_size, gate_num, [tower_size])

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return self.towers(mix_experts(self.gates(features), self.experts(features)))

    def regularization_loss(self, features: torch.Tensor) -> torch.Tensor | None:
        """The DSelect-k gates' regulariser for this batch (entropy, masked-code barrier); ``None`` for softmax
        gates. The wrapper adds it to the training loss (:meth:`recstack.wrapper.DygraphModel.regularization_loss`)."""
        if isinstance(self.gates, DSelectKGates):
            return self.gates.regularization_loss(features)
        return None


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

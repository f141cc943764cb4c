"""MMoE: Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts.

Ma, Zhao, Yi, Chen, Hong, Chi. KDD 2018. https://dl.acm.org/doi/10.1145/3219819.3220007

``f_k(x) = sum_e softmax(W_k x)_e * expert_e(x)`` and ``y_k = tower_k(f_k(x))``:
shared experts, one softmax gate and one tower per task.
"""

from __future__ import annotations

import torch
from torch import nn

from recstack.layers import Experts, TaskGates, Towers, mix_experts


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

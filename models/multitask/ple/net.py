"""PLE: Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations.

Tang, Liu, Zhao, Gong. RecSys 2020. https://dl.acm.org/doi/10.1145/3383313.3412236

Each extraction level has ``exp_per_task`` experts per task and ``shared_num`` shared
experts; task ``k``'s gate mixes its own and the shared experts,
``y_k = sum_i softmax(W_k x_k)_i * expert_i``, and a shared gate mixes all experts into
the next level's shared input (every level but the last). ``level_number`` levels are
stacked, then one tower per task: ``out_k = sigmoid(tower_k(y_k))``. One level is CGC
(Customized Gate Control).
"""

from __future__ import annotations

import torch
from torch import nn

from recstack.layers import ExtractionLayer, Towers


class PLE(nn.Module):
    """Stacked extraction levels (one-layer ReLU experts, softmax gates) under one-hidden-layer towers.

    Initialisation (PaddleRec's): Xavier-uniform weights, biases 0.1, in experts, gates
    and towers.

    Args:
        feature_size: input features.
        task_num: number of tasks (one tower each).
        exp_per_task: task-specific experts per task at each level.
        shared_num: shared experts at each level.
        expert_size: width of each expert (and input width of levels after the first).
        tower_size: hidden width of each tower.
        level_number: number of extraction levels (1: CGC).

    Shapes:
        ``(B, feature_size)`` → list of ``task_num`` probabilities ``(B, 1)``.
    """

    def __init__(self, feature_size: int, task_num: int, exp_per_task: int, shared_num: int, expert_size: int,
                 tower_size: int, level_number: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            ExtractionLayer(feature_size if level == 0 else expert_size, task_num, exp_per_task, shared_num,
                            expert_size, shared_gate=level < level_number - 1)
            for level in range(level_number)
        )
        self.towers = Towers(expert_size, task_num, [tower_size])

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        hidden = features
        for level in self.levels:
            hidden = level(hidden)  # (B, task_num + 1, expert_size); the last level: (B, task_num, expert_size)
        return self.towers(hidden)

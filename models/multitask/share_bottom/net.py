"""Share-Bottom: hard parameter sharing for multi-task learning.

Caruana. Multitask Learning. Machine Learning 28, 1997 (CMU-CS-97-203).
http://reports-archive.adm.cs.cmu.edu/anon/1997/CMU-CS-97-203.pdf

``h = relu(W_b x + b_b)`` and ``y_k = sigmoid(tower_k(h))``: one bottom layer shared
by every task, one tower per task.
"""

from __future__ import annotations

import torch
from torch import nn

from recstack.layers import MLP, Towers


class ShareBottom(nn.Module):
    """A shared one-layer ReLU bottom under one-hidden-layer towers.

    Initialisation: bottom Xavier-uniform weights and bias 0 (Paddle's default for
    PaddleRec's bottom layer); towers Xavier-uniform weights and biases 0.1 (PaddleRec
    sets the towers' weights to the constant 0.1, which keeps every hidden unit of a
    tower identical; see the README).

    Args:
        feature_size: input features.
        bottom_size: width of the shared bottom layer.
        tower_size: hidden width of each tower.
        task_num: number of tasks (one tower each).

    Shapes:
        ``(B, feature_size)`` → list of ``task_num`` probabilities ``(B, 1)``.
    """

    def __init__(self, feature_size: int, bottom_size: int, tower_size: int, task_num: int) -> None:
        super().__init__()
        self.task_num = task_num
        self.bottom = MLP(feature_size, [bottom_size], init="xavier_uniform", bias_init=0.0)
        self.towers = Towers(bottom_size, task_num, [tower_size])

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        shared = self.bottom(features)  # (B, bottom_size)
        return self.towers(shared.unsqueeze(1).expand(-1, self.task_num, -1))

"""Multi-task building blocks: a bank of experts, softmax gates, per-task towers."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from recstack.layers.init import init_linear
from recstack.layers.mlp import MLP


def fused_linear(input_dim: int, blocks: int, block_size: int, init: str, bias_init: float | None) -> nn.Linear:
    """One ``Linear(input_dim, blocks * block_size)`` whose row blocks are initialised like
    ``blocks`` separate ``Linear(input_dim, block_size)`` layers (fan-out of one block)."""
    linear = nn.Linear(input_dim, blocks * block_size)
    with torch.no_grad():
        for b in range(blocks):
            block = init_linear(nn.Linear(input_dim, block_size), init, bias_init)
            rows = slice(b * block_size, (b + 1) * block_size)
            linear.weight[rows] = block.weight
            linear.bias[rows] = block.bias
    return linear


class Experts(nn.Module):
    """``E`` one-layer experts ``relu(x W_e + b_e)`` computed as one fused matmul.

    Equivalent to ``E`` separate ``nn.Linear(input_dim, expert_size)`` + ReLU
    (each block initialised on its own), but one GEMM instead of ``E``.

    Args:
        input_dim: input features.
        num_experts: ``E``.
        expert_size: output width of each expert.
        init: initialisation scheme of each expert's weight block.
        bias_init: constant bias (PaddleRec's MMoE: 0.1).

    Shapes:
        ``(B, input_dim)`` → ``(B, E, expert_size)``.
    """

    def __init__(self, input_dim: int, num_experts: int, expert_size: int,
                 init: str = "xavier_uniform", bias_init: float | None = 0.1) -> None:
        super().__init__()
        self.num_experts, self.expert_size = num_experts, expert_size
        self.linear = fused_linear(input_dim, num_experts, expert_size, init, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.linear(x))
        return out.view(x.shape[0], self.num_experts, self.expert_size)


class TaskGates(nn.Module):
    """One softmax gate per task over ``E`` experts, fused into one Linear.

    Args:
        input_dim: gate input features.
        num_tasks: ``T`` (PaddleRec's ``gate_num``).
        num_experts: ``E``.

    Shapes:
        ``(B, input_dim)`` → weights ``(B, T, E)`` summing to 1 over ``E``.
    """

    def __init__(self, input_dim: int, num_tasks: int, num_experts: int,
                 init: str = "xavier_uniform", bias_init: float | None = 0.1) -> None:
        super().__init__()
        self.num_tasks, self.num_experts = num_tasks, num_experts
        self.linear = fused_linear(input_dim, num_tasks, num_experts, init, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x).view(x.shape[0], self.num_tasks, self.num_experts)
        return torch.softmax(logits, dim=-1)


def mix_experts(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum of expert outputs: ``(B, T, E) x (B, E, H) → (B, T, H)``."""
    return torch.bmm(gates, experts)


class Towers(nn.Module):
    """One MLP tower per task ending in a single logit, returned as probabilities.

    Args:
        input_dim: tower input width.
        num_tasks: number of towers.
        hidden_sizes: hidden widths of each tower.
        init, bias_init, activation, dropout, batch_norm: as :class:`MLP`.

    Shapes:
        ``(B, T, input_dim)`` → list of ``T`` tensors ``(B, 1)`` in ``(0, 1)``.
    """

    def __init__(self, input_dim: int, num_tasks: int, hidden_sizes: Sequence[int],
                 init: str = "xavier_uniform", bias_init: float | None = 0.1, activation: str = "relu",
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.towers = nn.ModuleList(
            MLP(input_dim, hidden_sizes, 1, activation=activation, dropout=dropout,
                batch_norm=batch_norm, init=init, bias_init=bias_init)
            for _ in range(num_tasks)
        )

    def forward(self, task_inputs: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        for t, tower in enumerate(self.towers):
            outputs.append(torch.sigmoid(tower(task_inputs[:, t])))
        return outputs

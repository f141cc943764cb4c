"""Feature-interaction layers."""

from __future__ import annotations

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """Second-order FM interaction (Rendle, "Factorization Machines", ICDM 2010).

    ``sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)``, linear in
    the number of fields.

    Shapes:
        ``(B, F, D)`` → ``(B, 1)``.
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        square_of_sum = fields.sum(dim=1).pow(2)
        sum_of_square = fields.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)

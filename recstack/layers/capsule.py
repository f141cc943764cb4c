"""Capsules with dynamic routing, as MIND's multi-interest extractor uses them.

Sabour, Frosst, Hinton. "Dynamic Routing Between Capsules", NeurIPS 2017 (routing by agreement); Li et al.
"Multi-Interest Network with Dynamic Routing for Recommendation at Tmall" (MIND), CIKM 2019 (the
behaviour-to-interest variant: one bilinear map ``S`` shared by all capsules, routing logits initialised at
random instead of at zero, so that the shared map does not make every capsule the same).
"""

from __future__ import annotations

import torch
from torch import nn

from recstack.layers.init import init_linear


def squash(z: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """``|z|^2 / (1 + |z|^2) · z / |z|`` on the last axis (a vector's length mapped into [0, 1))."""
    norm2 = (z * z).sum(-1, keepdim=True)
    return norm2 / (1.0 + norm2) * z / torch.sqrt(norm2 + eps)


class CapsuleRouting(nn.Module):
    """``K`` interest capsules from a masked sequence of ``L`` behaviours by ``iterations`` rounds of routing::

        u_i = S e_i;   w_ij = softmax_j(b_ij);   c_j = squash(sum_i w_ij u_i);   b_ij += <c_j, u_i>

    (masked behaviours take no part; the update of ``b`` does not backpropagate, as in MIND's implementation).
    The initial logits ``b`` are a fixed N(0, 1) draw (a buffer, seeded), the same at every call: the layer is
    deterministic, so training, evaluation and the export agree.

    Args:
        input_dim: behaviour width.
        output_dim: capsule width.
        num_capsules: ``K``.
        max_len: the longest sequence (the initial logits' length).
        iterations: routing rounds (MIND: 3).
        seed: the initial logits' seed.

    Shapes:
        ``x`` ``(B, L, input_dim)``, ``mask`` ``(B, L)`` bool -> ``(B, K, output_dim)`` (zeros for a row without
        behaviours).
    """

    def __init__(self, input_dim: int, output_dim: int, num_capsules: int, max_len: int, iterations: int = 3,
                 seed: int = 0) -> None:
        super().__init__()
        if num_capsules < 1 or iterations < 1 or max_len < 1:
            raise ValueError(f"CapsuleRouting needs num_capsules, iterations and max_len >= 1, got {num_capsules}, "
                             f"{iterations}, {max_len}")
        self.bilinear = init_linear(nn.Linear(input_dim, output_dim, bias=False), "xavier_uniform")
        self.iterations = iterations
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("initial", torch.randn(num_capsules, max_len, generator=generator))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        u = self.bilinear(x)                                                   # (B, L, D)
        length = x.shape[1]
        logits = self.initial[:, :length].unsqueeze(0).expand(x.shape[0], -1, -1)   # (B, K, L)
        keep = mask.unsqueeze(1).to(u.dtype)                                   # (B, 1, L)
        capsules = u.new_zeros((x.shape[0], logits.shape[1], u.shape[2]))
        for step in range(self.iterations):
            weights = torch.softmax(logits, dim=1) * keep                      # over capsules, per behaviour
            capsules = squash(weights @ u)                                     # (B, K, D)
            if step + 1 < self.iterations:
                logits = logits + capsules.detach() @ u.detach().transpose(1, 2)
        return capsules

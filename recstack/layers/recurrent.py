"""Recurrent layers over padded, variable-length sequences: a masked GRU and DIEN's AUGRU.

Both run one recurrence (:func:`gated_gru_scan`), a GRU whose update gate is scaled per step by a gate value
``g_t`` in ``[0, 1]``:

```
r_t  = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)                 reset gate
u_t  = sigmoid(W_iu x_t + b_iu + W_hu h_{t-1} + b_hu)                 update gate
h~_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))            candidate
u'_t = g_t * u_t
h_t  = (1 - u'_t) * h_{t-1} + u'_t * h~_t                             (the DIEN paper's convention: u weighs the new)
```

:class:`MaskedGRU` sets ``g_t = m_t`` (1 at a real position, 0 at padding): a GRU whose state a padded position
does not change, so the last state is the state after the sample's last real behaviour whatever the batch's padding.
:class:`AUGRU` (DIEN's "GRU with attentional update gate") sets ``g_t = a_t * m_t`` with an attention score ``a_t``.
``h_0 = 0``.

Exportable: the loop over time steps is a TorchScript function, so a model traced by ``tools/to_static.py``
keeps it as a loop (an ONNX ``Loop``) and runs on histories of any length (0 included), not only the traced one.
The input projections of all steps are one matmul outside the loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AUGRU", "MaskedGRU", "gated_gru_scan"]


@torch.jit.script
def gated_gru_scan(x_gates: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                   gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated GRU recurrence over time (module docstring).

    Args:
        x_gates: the input projections ``W_i x_t + b_i`` of every step, ``(B, L, 3H)`` in the order reset,
            update, candidate.
        w_hh: the recurrent weights ``(3H, H)``, same order.
        b_hh: the recurrent biases ``(3H,)``.
        gate: ``g_t`` ``(B, L)``: scales the update gate (0 keeps the state unchanged).

    Returns:
        The states ``h_1 .. h_L`` ``(B, L, H)`` and the last one ``(B, H)``.
    """
    batch = x_gates.shape[0]
    steps = x_gates.shape[1]
    hidden = w_hh.shape[1]
    h = x_gates.new_zeros(batch, hidden)
    states = x_gates.new_zeros(batch, 0, hidden)
    w_t = w_hh.t()
    for t in range(steps):
        xr, xu, xn = x_gates[:, t].chunk(3, 1)
        hr, hu, hn = (torch.matmul(h, w_t) + b_hh).chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        u = torch.sigmoid(xu + hu) * gate[:, t].unsqueeze(1)
        candidate = torch.tanh(xn + r * hn)
        h = (1.0 - u) * h + u * candidate
        # a growing concatenation rather than a list + stack: it exports to ONNX and handles L = 0
        states = torch.cat([states, h.unsqueeze(1)], 1)
    return states, h


class MaskedGRU(nn.Module):
    """A one-layer GRU over padded sequences whose padded positions leave the state unchanged.

    Parameters as ``torch.nn.GRU``'s (``weight_ih`` ``(3H, In)``, ``weight_hh`` ``(3H, H)``, biases ``(3H,)``,
    gates in the order reset, update, candidate) and its initialisation, uniform in ``±1/sqrt(H)``. The update
    follows the DIEN paper, ``h_t = (1 - u_t) h_{t-1} + u_t h~_t`` (``nn.GRU`` writes ``1 - u`` for its ``z``).

    Args:
        input_size: ``In``.
        hidden_size: ``H``.

    Shapes:
        x ``(B, L, In)``, mask ``(B, L)`` bool (real positions) → states ``(B, L, H)`` (at a padded position:
        the state of the last real one before it), last state ``(B, H)`` (0 for an empty sequence).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def scan(self, x: torch.Tensor, gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrence with update-gate scale ``gate`` ``(B, L)``."""
        x_gates = torch.matmul(x, self.weight_ih.t()) + self.bias_ih
        return gated_gru_scan(x_gates, self.weight_hh, self.bias_hh, gate.to(x.dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scan(x, mask)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class AUGRU(MaskedGRU):
    """DIEN's GRU with attentional update gate: ``u'_t = a_t * u_t``, ``h_t = (1 - u'_t) h_{t-1} + u'_t h~_t``.

    The attention ``a_t`` (DIEN: the candidate's softmax attention over the interest extractor's states) scales
    how much step ``t`` moves the state; padded positions (mask 0) never move it. Parameters and initialisation
    as :class:`MaskedGRU`.

    Shapes:
        x ``(B, L, In)``, mask ``(B, L)`` bool, attention ``(B, L)`` → states ``(B, L, H)``, last state ``(B, H)``.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor,  # type: ignore[override]
                attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scan(x, attention * mask.to(attention.dtype))

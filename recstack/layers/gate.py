"""Gates: GateNet's embedding and hidden gates (Huang, She, Wang, Zhang, "GateNet: Gating-Enhanced Deep Network
for Click-Through Rate Prediction", 2020, https://arxiv.org/abs/2007.03519), highway layers, EasyRec's
weighted gate and the DSelect-k mixture-of-experts gate (Hazimeh et al., NeurIPS 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn

from recstack.layers.activation import get_activation
from recstack.layers.init import init_linear


class EmbeddingGate(nn.Module):
    """Field-private gates on embeddings: ``e_i' = e_i ∘ sigmoid(W_i e_i)``.

    Args:
        num_fields: ``F``.
        embedding_dim: ``D``.
        bit_wise: ``W_i`` is ``D x D`` (one gate per bit); otherwise ``D x 1`` (one per field).

    Shapes:
        ``(B, F, D)`` → ``(B, F, D)``.
    """

    def __init__(self, num_fields: int, embedding_dim: int, bit_wise: bool = True) -> None:
        super().__init__()
        out = embedding_dim if bit_wise else 1
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_fields, embedding_dim, out)))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return fields * torch.sigmoid(torch.einsum("bfd,fde->bfe", fields, self.weight))


class HiddenGate(nn.Module):
    """A gate on a hidden layer's output: ``h' = h ∘ sigmoid(W h)``.

    Shapes:
        ``(B, width)`` → ``(B, width)``.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)
        nn.init.xavier_uniform_(self.linear.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * torch.sigmoid(self.linear(hidden))


class Highway(nn.Module):
    """EasyRec's ``highway_dnn`` (one highway layer after a projection; Srivastava, Greff, Schmidhuber,
    "Highway Networks", 2015, https://arxiv.org/abs/1505.00387)::

        h = relu(W_p x + b_p);  T = sigmoid(W_t h + b_t);  H = relu(W_h h + b_h)
        out = H * T + h * (1 - T)

    No dropout; Linears Glorot-uniform with zero bias (TensorFlow's ``dense``).

    Args:
        input_dim: width of ``x``.
        emb_size: width of the output (EasyRec's ``highway_dnn.emb_size``).

    Shapes:
        ``(B, input_dim)`` -> ``(B, emb_size)``.
    """

    def __init__(self, input_dim: int, emb_size: int) -> None:
        super().__init__()
        self.project = nn.Linear(input_dim, emb_size)
        self.gate = nn.Linear(emb_size, emb_size)
        self.transform = nn.Linear(emb_size, emb_size)
        for layer in (self.project, self.gate, self.transform):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.output_dim = emb_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.project(x))
        t = torch.sigmoid(self.gate(h))
        return torch.relu(self.transform(h)) * t + h * (1 - t)


class HighwayNetwork(nn.Module):
    """A stack of highway layers (Srivastava, Greff, Schmidhuber, 2015; EasyRec's ``Highway`` component)::

        v = x, or P x when the input width differs from emb_size (a Linear without activation)
        per layer: T = sigmoid(W_t v + b_t);  H = dropout(act(W_h v + b_h));  v = T * H + (1 - T) * v

    Unlike :class:`Highway` (EasyRec's ``highway_dnn`` tower: a ReLU projection and one layer with a zero
    gate bias), the gate bias starts at ``init_gate_bias`` (-3: the layer starts close to the identity,
    carrying ``v`` through, which suits fine-tuning pre-trained embeddings).

    Initialisation: Glorot-uniform kernels, zero biases but the gate's (Keras' Dense).

    Args:
        input_dim: width of ``x``.
        emb_size: width of ``v`` and of the output (``None``: ``input_dim``).
        activation: activation of ``H`` (an :mod:`recstack.layers.activation` name).
        dropout_rate: dropout on ``H``.
        init_gate_bias: initial ``b_t``.
        num_layers: highway layers.

    Shapes:
        ``(B, ..., input_dim)`` → ``(B, ..., emb_size)``.
    """

    def __init__(self, input_dim: int, emb_size: int | None = None, activation: str = "relu",
                 dropout_rate: float = 0.0, init_gate_bias: float = -3.0, num_layers: int = 1) -> None:
        super().__init__()
        width = emb_size or input_dim
        self.project = init_linear(nn.Linear(input_dim, width), "xavier_uniform") if width != input_dim else None
        self.gates = nn.ModuleList(init_linear(nn.Linear(width, width), "xavier_uniform", init_gate_bias)
                                   for _ in range(num_layers))
        self.transforms = nn.ModuleList(init_linear(nn.Linear(width, width), "xavier_uniform")
                                        for _ in range(num_layers))
        self.activation = get_activation(activation, width)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x if self.project is None else self.project(x)
        for gate, transform in zip(self.gates, self.transforms):
            t = torch.sigmoid(gate(v))
            v = t * self.dropout(self.activation(transform(v))) + (1 - t) * v
        return v


class WeightedGate(nn.Module):
    """A per-sample weighted sum of ``n`` inputs (EasyRec's ``Gate`` component, used by Cross Decoupling
    Network): ``out = sum_j w[:, j] * x_j``, the weights ``w`` being one of the inputs.

    Args:
        weight_index: position of ``w`` ``(B, n)`` in the input list; the other ``n`` entries are the ``x_j``.
        top: a module applied to the sum (EasyRec's ``Gate.mlp``), or ``None``.

    Shapes:
        a list of ``n + 1`` tensors: ``w`` ``(B, n)`` and ``x_j`` ``(B, D)`` (or ``(B, ..., D)``) → ``(B, D)``
        (``top``'s output width with ``top``).
    """

    def __init__(self, weight_index: int = 0, top: nn.Module | None = None) -> None:
        super().__init__()
        self.weight_index = weight_index
        self.top = top

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        weights = inputs[self.weight_index]
        values = [x for i, x in enumerate(inputs) if i != self.weight_index]
        stacked = torch.stack(values, dim=1)                                  # (B, n, ..., D)
        w = weights.reshape(weights.shape[0], weights.shape[1], *([1] * (stacked.dim() - 2)))
        out = (w * stacked).sum(dim=1)
        return out if self.top is None else self.top(out)


#: added inside the entropy's log and used as the floor of a selector's reachable mass (the reference code's EPSILON)
DSELECT_EPSILON = 1e-6


def smooth_step(t: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """DSelect-k's smooth-step ``S(t)``: 0 for ``t <= -gamma/2``, 1 for ``t >= gamma/2`` and in between the cubic
    ``-2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2``, continuously differentiable (``S'(±gamma/2) = 0``).

    Shapes:
        any → the same.
    """
    cubic = (-2.0 / gamma ** 3) * t ** 3 + (1.5 / gamma) * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


def binary_codes(num_experts: int) -> torch.Tensor:
    """Row ``i``: the ``m = ceil(log2 num_experts)`` binary digits of ``i``, most significant first (float 0/1).

    Shapes:
        → ``(num_experts, m)``.
    """
    m = math.ceil(math.log2(num_experts)) if num_experts > 1 else 0
    return torch.tensor([[(i >> (m - 1 - j)) & 1 for j in range(m)] for i in range(num_experts)],
                        dtype=torch.float32).reshape(num_experts, m)


class _ExampleLogits(nn.Module):
    """Logits computed from each example: ``x W + b`` (uniform ``(-bound, bound)`` weight and bias, as the reference
    code's Keras ``RandomUniform`` initialisers)."""

    def __init__(self, input_dim: int, size: int, bound: float) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, size)
        nn.init.uniform_(self.linear.weight, -bound, bound)
        nn.init.uniform_(self.linear.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class _StaticLogits(nn.Module):
    """Logits that do not depend on the example (task-only conditioning), broadcast over the batch."""

    def __init__(self, size: int, bound: float) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.empty(size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.unsqueeze(0).expand(x.shape[0], -1)


class DSelectKGates(nn.Module):
    """One DSelect-k gate per task over ``E`` experts (Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong,
    Chi, "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning",
    NeurIPS 2021, https://arxiv.org/abs/2106.03760); a drop-in for :class:`recstack.layers.TaskGates`.

    Each of the ``k`` *single-expert selectors* of a gate holds ``m = ceil(log2 E)`` logits ``z``; expert ``e``
    (binary code ``b(e)``, :func:`binary_codes`) gets the selector weight
    ``q_e(z) = prod_j [b_j(e) S(z_j) + (1 - b_j(e)) (1 - S(z_j))]`` with the smooth-step ``S``
    (:func:`smooth_step`), a distribution over the ``2^m`` codes that is one-hot once every ``|z_j| >= gamma/2``.
    The gate mixes its selectors with ``softmax(w)``::

        gate(x) = sum_i softmax(w(x))_i * q(z_i(x))      (per example: z_i(x) = x Z_i + c_i, w(x) = x W + d)

    so at most ``k`` experts have a nonzero weight once the selectors' ``z`` saturate. With ``per_example=False``
    ``z`` and ``w`` are per-task parameters (task-only conditioning, the paper's static gate).

    When ``E`` is not a power of two the codes ``E .. 2^m - 1`` reach no expert: they are masked (left out) and each
    selector's ``q`` is renormalised over the reachable codes, so every gate sums to one exactly; the reference
    code's barrier ``sum 1 / (reachable mass)`` (here ``- 1`` each, zero once a selector reaches only experts) joins
    :meth:`regularization_loss` and keeps the selectors off the masked codes. A selector whose smooth-steps have
    saturated on a masked code (reachable mass exactly 0, which the barrier keeps training from reaching) falls
    back to the uniform weights ``1/E``.

    Initialisation (the reference code's): ``z``'s weights and biases uniform in ``±gamma/100``, ``w``'s in ``±0.05``.

    Args:
        input_dim: gate input features.
        num_tasks: ``T`` (one gate each).
        num_experts: ``E`` (at least 2).
        num_selectors: ``k``, the most experts a gate selects.
        gamma: width of the smooth-step's cubic region.
        entropy_reg: ``lambda`` of the entropy regulariser ``-lambda * sum q log(q + 1e-6)`` over the batch's
            examples, tasks, selectors and experts (a sum, as the reference code's; 0: none).
        entropy_reg_warmup_steps: ramp ``lambda`` linearly over this many training steps (the reference code's
            schedule of the regulariser's call counter); 0: constant.
        per_example: example-conditioned gate (``z``, ``w`` linear in the input); ``False``: static per task.

    Shapes:
        ``(B, input_dim)`` → weights ``(B, T, E)``, each row summing to 1.
    """

    def __init__(self, input_dim: int, num_tasks: int, num_experts: int, num_selectors: int, gamma: float = 1.0,
                 entropy_reg: float = 0.0, entropy_reg_warmup_steps: int = 0, per_example: bool = True) -> None:
        super().__init__()
        if num_tasks < 1 or num_experts < 2 or num_selectors < 1:
            raise ValueError(f"DSelectKGates needs num_tasks >= 1, num_experts >= 2 and num_selectors >= 1, got "
                             f"{num_tasks}, {num_experts} and {num_selectors}")
        if gamma <= 0 or entropy_reg < 0 or entropy_reg_warmup_steps < 0:
            raise ValueError(f"DSelectKGates needs gamma > 0, entropy_reg >= 0 and entropy_reg_warmup_steps >= 0, "
                             f"got {gamma}, {entropy_reg} and {entropy_reg_warmup_steps}")
        codes = binary_codes(num_experts)
        self.num_tasks, self.num_experts, self.num_selectors = num_tasks, num_experts, num_selectors
        self.num_binary = codes.shape[1]
        self.power_of_two = num_experts == 2 ** self.num_binary
        self.gamma, self.entropy_reg, self.entropy_reg_warmup_steps = float(gamma), float(entropy_reg), \
            int(entropy_reg_warmup_steps)
        self.per_example = per_example
        self.epsilon = DSELECT_EPSILON
        self.register_buffer("codes", codes, persistent=False)
        z_size, w_size = num_tasks * num_selectors * self.num_binary, num_tasks * num_selectors
        if per_example:
            self.z_logits: nn.Module = _ExampleLogits(input_dim, z_size, gamma / 100)
            self.w_logits: nn.Module = _ExampleLogits(input_dim, w_size, 0.05)
        else:
            self.z_logits = _StaticLogits(z_size, gamma / 100)
            self.w_logits = _StaticLogits(w_size, 0.05)
        #: training steps seen by :meth:`regularization_loss` (the reference code's ``num_calls``), for the schedule
        self.register_buffer("num_calls", torch.zeros(()))

    def selector_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each selector's weights over the reachable experts ``(B, T, k, E)`` (renormalised when ``E`` is not a
        power of two; uniform for a selector saturated on masked codes alone) and the mass it put on them before
        that ``(B, T, k)`` (1 for a power of two)."""
        z = self.z_logits(x).view(x.shape[0], self.num_tasks, self.num_selectors, 1, self.num_binary)
        s = smooth_step(z, self.gamma)
        q = (self.codes * s + (1 - self.codes) * (1 - s)).prod(dim=-1)           # (B, T, k, E)
        mass = q.sum(dim=-1)
        if not self.power_of_two:
            reached = mass > 0
            safe = torch.where(reached, mass, torch.ones_like(mass)).unsqueeze(-1)  # no 0/0, no NaN gradient
            q = torch.where(reached.unsqueeze(-1), q / safe, torch.full_like(q, 1.0 / self.num_experts))
        return q, mass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, _ = self.selector_outputs(x)
        w = torch.softmax(self.w_logits(x).view(x.shape[0], self.num_tasks, self.num_selectors), dim=-1)
        return (w.unsqueeze(-1) * q).sum(dim=2)

    def entropy_weight(self, step: int) -> float:
        """``lambda`` at training step ``step`` (0-based): ``entropy_reg``, ramped linearly over the warm-up."""
        if self.entropy_reg_warmup_steps == 0:
            return self.entropy_reg
        return self.entropy_reg * min(1.0, (step + 1) / self.entropy_reg_warmup_steps)

    def regularization_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The batch's gate regulariser: ``lambda(step) * sum -q log(q + 1e-6)`` plus, when ``E`` is not a power of
        two, ``sum (1 / max(mass, 1e-6) - 1)`` over examples, tasks and selectors. Counts one training step."""
        weight = self.entropy_weight(int(self.num_calls))
        with torch.no_grad():
            self.num_calls += 1
        if weight == 0 and self.power_of_two:
            return x.new_zeros(())
        q, mass = self.selector_outputs(x)
        loss = weight * -(q * torch.log(q + DSELECT_EPSILON)).sum()
        if not self.power_of_two:
            loss = loss + (1.0 / mass.clamp_min(DSELECT_EPSILON) - 1.0).sum()
        return loss

"""Multi-task building blocks: banks of experts (one layer, or multi-layer MLPs), softmax gates, per-task towers,
PLE/CGC extraction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers.activation import get_activation
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


class _GroupedLayer(nn.Module):
    """``E`` separate ``Linear(in_dim, out_dim)`` applied to ``E`` inputs at once, then ``post`` on the
    flattened ``(B, E * out_dim)`` result. Weight ``(E, in_dim, out_dim)`` (expert ``e``'s block is the
    transpose of its Linear weight), bias ``(E, out_dim)``."""

    def __init__(self, num_experts: int, in_dim: int, out_dim: int, init: str, bias_init: float | None,
                 post: nn.Sequential) -> None:
        super().__init__()
        blocks = [init_linear(nn.Linear(in_dim, out_dim), init, bias_init) for _ in range(num_experts)]
        self.weight = nn.Parameter(torch.stack([b.weight.detach().T for b in blocks]))
        self.bias = nn.Parameter(torch.stack([b.bias.detach() for b in blocks]))
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, E = x.shape[0], x.shape[1]
        out = torch.matmul(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias  # (B, E, out)
        return self.post(out.reshape(B, -1)).view(B, E, -1)


class MLPExperts(nn.Module):
    """``E`` experts, each an MLP ``Linear -> [BatchNorm] -> activation -> [Dropout]`` per hidden layer
    (EasyRec's ``expert_dnn``), computed together.

    The first layer is one fused GEMM (as :class:`Experts`); each later layer is one batched
    matrix product over the experts (weights ``(E, h_{l-1}, h_l)``). BatchNorm, activation and
    dropout act on the ``(B, E * h_l)`` layer output, feature by feature, so the bank equals
    ``E`` separate :class:`recstack.layers.MLP` (``tests/test_layers.py`` checks it against
    that loop). With one hidden layer, ReLU, no BatchNorm and no dropout it is
    :class:`Experts` (same initialisation from the same seed).

    Initialisation: each expert's Linear on its own with ``init`` (its own fans) and constant
    ``bias_init``; BatchNorm weight 1, bias 0.

    Args:
        input_dim: input features.
        num_experts: ``E``.
        hidden_sizes: widths of each expert's layers (at least one); the last is the output width.
        activation: activation name (see :mod:`recstack.layers.activation`).
        dropout: dropout after each activation, one rate or one per layer.
        batch_norm: BatchNorm after each Linear.
        init, bias_init: initialisation of each expert's Linear layers (EasyRec: Xavier-uniform, 0).

    Shapes:
        ``(B, input_dim)`` -> ``(B, E, hidden_sizes[-1])``.
    """

    def __init__(self, input_dim: int, num_experts: int, hidden_sizes: Sequence[int], activation: str = "relu",
                 dropout: float | Sequence[float] = 0.0, batch_norm: bool = False,
                 init: str = "xavier_uniform", bias_init: float | None = 0.0) -> None:
        super().__init__()
        sizes = list(hidden_sizes)
        if num_experts < 1 or not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"MLPExperts needs num_experts >= 1 and at least one positive hidden size, "
                             f"got {num_experts} and {sizes}")
        rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(sizes)
        if len(rates) != len(sizes):
            raise ValueError(f"MLPExperts: {len(rates)} dropout rates for {len(sizes)} layers")
        self.num_experts, self.output_dim = num_experts, sizes[-1]

        def post(size: int, rate: float) -> nn.Sequential:
            width = num_experts * size
            layers = [nn.BatchNorm1d(width)] if batch_norm else []
            layers.append(get_activation(activation, width))
            return nn.Sequential(*layers, *([nn.Dropout(rate)] if rate > 0 else []))

        self.first = fused_linear(input_dim, num_experts, sizes[0], init, bias_init)
        self.first_post = post(sizes[0], rates[0])
        self.layers = nn.ModuleList(
            _GroupedLayer(num_experts, sizes[i - 1], sizes[i], init, bias_init, post(sizes[i], rates[i]))
            for i in range(1, len(sizes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.first_post(self.first(x)).view(x.shape[0], self.num_experts, -1)
        for layer in self.layers:
            out = layer(out)
        return out

    def kernels(self) -> list[torch.Tensor]:
        """The Linear weights of all experts and layers (for ``l2_regularization``; biases excluded)."""
        return [self.first.weight] + [layer.weight for layer in self.layers]


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


class ExtractionLayer(nn.Module):
    """One level of PLE's progressive layered extraction; a CGC layer when it has no shared gate.

    Tang, Liu, Zhao, Gong. Progressive Layered Extraction (PLE). RecSys 2020.
    Each task ``k`` owns ``E`` experts, ``S`` experts are shared; task ``k``'s output
    mixes its own and the shared experts with its gate, and (below the last level) a
    shared gate mixes all ``T * E + S`` experts into the shared output::

        y_k      = sum_{i in own(k) + shared} softmax(W_k x_k)_i   * expert_i(x_{group(i)})
        y_shared = sum_{i in all experts}     softmax(W_s x_s)_i   * expert_i(x_{group(i)})

    where ``x_k`` is task ``k``'s input, ``x_s`` the shared input and ``group(i)`` the
    input of expert ``i``'s owner (task ``k`` or shared). At the first level every
    input is the same ``x``.

    Composed from the fused :class:`Experts` (all ``T * E + S`` experts: task 0's ``E``,
    ..., task ``T-1``'s, then the shared ones) and :class:`TaskGates` (the ``T`` task
    gates; the shared gate is a second one), so the first level is at most three
    matrix products whatever ``T``. At later levels each expert and gate needs its own
    group's input: the fused layers run on every group's input and the owner's rows
    are picked out (wasted work only on the small ``expert_size``-wide inputs).

    Initialisation: as :class:`Experts` / :class:`TaskGates` (Xavier-uniform blocks,
    biases 0.1, PaddleRec's PLE).

    Args:
        input_dim: width of each input.
        num_tasks: ``T``.
        experts_per_task: ``E`` (PaddleRec's ``exp_per_task``), at least 1.
        shared_experts: ``S`` (PaddleRec's ``shared_num``), at least 0.
        expert_size: width of each expert.
        shared_gate: also output the shared gate's mixture (every level but the last).
        init, bias_init: initialisation of each expert's and gate's block (as :class:`Experts`).

    Shapes:
        ``(B, input_dim)`` (first level: one input for all) or ``(B, T + 1, input_dim)``
        (task inputs, then the shared one) → ``(B, T + 1, expert_size)`` with a shared
        gate, else ``(B, T, expert_size)``.
    """

    def __init__(self, input_dim: int, num_tasks: int, experts_per_task: int, shared_experts: int,
                 expert_size: int, shared_gate: bool, init: str = "xavier_uniform",
                 bias_init: float | None = 0.1) -> None:
        super().__init__()
        if num_tasks < 1 or experts_per_task < 1 or shared_experts < 0:
            raise ValueError(f"ExtractionLayer needs num_tasks >= 1, experts_per_task >= 1 and shared_experts >= 0, "
                             f"got {num_tasks}, {experts_per_task}, {shared_experts}")
        self.num_tasks = num_tasks
        total = num_tasks * experts_per_task + shared_experts
        self.experts = Experts(input_dim, total, expert_size, init, bias_init)
        self.task_gates = TaskGates(input_dim, num_tasks, experts_per_task + shared_experts, init, bias_init)
        self.shared_gate = TaskGates(input_dim, 1, total, init, bias_init) if shared_gate else None
        own = torch.arange(num_tasks).unsqueeze(1) * experts_per_task + torch.arange(experts_per_task)
        shared = torch.arange(num_tasks * experts_per_task, total).expand(num_tasks, shared_experts)
        # columns of the expert pool each task gate weighs: its own experts, then the shared ones
        self.register_buffer("gate_columns", torch.cat([own, shared], dim=1), persistent=False)
        # which input group (task k, or T for shared) each expert of the pool reads
        owner = torch.cat([torch.arange(num_tasks).repeat_interleave(experts_per_task),
                           torch.full((shared_experts,), num_tasks)])
        self.register_buffer("expert_owner", owner, persistent=False)
        self.register_buffer("expert_index", torch.arange(total), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        T = self.num_tasks
        if inputs.dim() == 2:  # first level: every expert and gate reads the same input
            experts = self.experts(inputs)  # (B, N, H)
            task_gates = self.task_gates(inputs)  # (B, T, E + S)
            shared_input = inputs
        else:
            B, G, D = inputs.shape
            if G != T + 1:
                raise ValueError(f"ExtractionLayer expects {T + 1} inputs (tasks + shared), got {G}")
            every = self.experts(inputs.reshape(B * G, D)).view(B, G, -1, self.experts.expert_size)
            experts = every[:, self.expert_owner, self.expert_index]  # expert i on its owner's input
            gates = self.task_gates(inputs[:, :T].reshape(B * T, D)).view(B, T, T, -1)
            task_gates = torch.diagonal(gates, dim1=1, dim2=2).transpose(1, 2)  # task k's gate on input k
            shared_input = inputs[:, T]
        weights = task_gates.new_zeros(task_gates.shape[0], T, experts.shape[1])
        weights = weights.scatter(2, self.gate_columns.expand(task_gates.shape[0], -1, -1), task_gates)
        if self.shared_gate is not None:
            weights = torch.cat([weights, self.shared_gate(shared_input)], dim=1)  # (B, T + 1, N)
        return mix_experts(weights, experts)


class MMoE(nn.Module):
    """Multi-gate mixture of experts as one layer (Ma et al., KDD 2018; EasyRec's ``MMoE`` component): task ``t``
    gets ``sum_e softmax(W_t x + b_t)_e · expert_e(x)``.

    The experts are any modules of one output width (EasyRec's ``expert_mlp``: an MLP each), or one bank module
    that computes all of them at once (``(B, D) -> (B, E, H)``, :class:`MLPExperts`). Without them the
    input is a list of the ``E`` expert outputs followed by the gates' input (experts computed elsewhere in
    the backbone). Gates: :class:`TaskGates` (Glorot-uniform, biases 0: Keras' Dense).

    Args:
        input_dim: width of the gates' input.
        num_task: ``T``.
        num_expert: ``E``.
        experts: ``E`` expert modules, one bank module, or ``None`` (see above).

    Shapes:
        ``(B, input_dim)``, or ``[expert_1 (B, H), ..., expert_E (B, H), gate_input (B, input_dim)]`` → a list of
        ``T`` tensors ``(B, H)``.
    """

    def __init__(self, input_dim: int, num_task: int, num_expert: int,
                 experts: Sequence[nn.Module] | nn.Module | None = None) -> None:
        super().__init__()
        if num_task < 1 or num_expert < 1:
            raise ValueError(f"MMoE needs num_task >= 1 and num_expert >= 1, got {num_task} and {num_expert}")
        self.bank = experts if isinstance(experts, nn.Module) else None
        if self.bank is None and experts is not None and len(experts) != num_expert:
            raise ValueError(f"MMoE: {len(experts)} experts for num_expert={num_expert}")
        self.num_expert = num_expert
        self.experts = None if experts is None or self.bank is not None else nn.ModuleList(experts)
        self.gates = TaskGates(input_dim, num_task, num_expert, init="xavier_uniform", bias_init=0.0)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self.bank is not None:
            experts, gate_input = self.bank(x), x                                        # (B, E, H)
        elif self.experts is not None:
            experts = torch.stack([expert(x) for expert in self.experts], dim=1)        # (B, E, H)
            gate_input = x
        else:
            experts = torch.stack(list(x[:self.num_expert]), dim=1)
            gate_input = x[self.num_expert]
        return list(mix_experts(self.gates(gate_input), experts).unbind(dim=1))


class AITMTower(nn.Module):
    """The adaptive information transfer of AITM (Xi et al., "Modeling the Sequential Dependence among Audience
    Multi-step Conversions with Multi-task Learning in Targeted Display Advertising", KDD 2021,
    https://arxiv.org/abs/2105.08489), as EasyRec's ``AITMTower`` component.

    The input is this task's tower output ``z_0`` and the outputs ``z_1, ...`` of the tasks it depends on; each
    dependency passes through ``transfer`` (gradient stopped first with ``stop_gradient``). Self-attention of
    ``z_0``'s query over all of them::

        w = softmax_i(<W_q z_0, W_k,i z_i> / sqrt(d));   out = sum_i w_i W_v,i z_i

    Only ``z_0``'s query is computed (the other positions' outputs are not used). Initialisation: Glorot-uniform,
    biases 0 (Keras' Dense).

    Args:
        dims: widths of ``z_0, z_1, ...`` (after ``transfer`` for the dependencies).
        project_dim: ``d`` (``None``: ``dims[0]``).
        transfer: module applied to each dependency, or ``None``.
        stop_gradient: no gradient flows from this task into the dependencies.

    Shapes:
        ``[z_0 (B, D_0), z_1 (B, D_1), ...]`` → ``(B, d)``; a single tensor is returned as it is.
    """

    def __init__(self, dims: Sequence[int], project_dim: int | None = None, transfer: nn.Module | None = None,
                 stop_gradient: bool = True) -> None:
        super().__init__()
        dim = project_dim or dims[0]
        self.query = init_linear(nn.Linear(dims[0], dim), "xavier_uniform")
        self.keys = nn.ModuleList(init_linear(nn.Linear(d, dim), "xavier_uniform") for d in dims)
        self.values = nn.ModuleList(init_linear(nn.Linear(d, dim), "xavier_uniform") for d in dims)
        self.transfer, self.stop_gradient = transfer, stop_gradient
        self.scale = 1.0 / dim ** 0.5
        self.output_dim = dim

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return inputs
        towers = [inputs[0]]
        for dep in inputs[1:]:
            dep = dep.detach() if self.stop_gradient else dep
            towers.append(dep if self.transfer is None else self.transfer(dep))
        keys = torch.stack([layer(z) for layer, z in zip(self.keys, towers)], dim=1)       # (B, n, d)
        values = torch.stack([layer(z) for layer, z in zip(self.values, towers)], dim=1)
        scores = (keys @ self.query(towers[0]).unsqueeze(-1)).squeeze(-1) * self.scale     # (B, n)
        return (torch.softmax(scores, dim=-1).unsqueeze(-1) * values).sum(dim=1)


class AdaptiveInformationTransfer(nn.Module):
    """AITM's Adaptive Information Transfer (AIT) module between two consecutive tasks, as in the paper (Xi et al.,
    "Modeling the Sequential Dependence among Audience Multi-step Conversions with Multi-task Learning in Targeted
    Display Advertising", KDD 2021, https://arxiv.org/abs/2105.08489) and PaddleRec's ``aitm/net.py``.

    Task ``t-1``'s information ``z_{t-1}`` is projected by the transfer MLP ``g`` and attended together with
    task ``t``'s tower output ``q_t``; ``h1``, ``h2``, ``h3`` are bias-free linear maps shared by both inputs::

        p_t = g(z_{t-1}) = Dropout(ReLU(W z_{t-1} + b))
        w_u = softmax_{u in {p_t, q_t}} (<h2(u), h3(u)> / sqrt(D))
        z_t = w_p h1(p_t) + w_q h1(q_t)

    Each input scores itself (``<h2(u), h3(u)>``), unlike :class:`AITMTower` (EasyRec's variant: ``q_t``'s query
    against a key per input, the dependency's gradient stopped). Initialisation: Glorot-uniform weights, zero
    biases (PaddleRec's ``nn.Linear`` default).

    Args:
        dim: width ``D`` of ``z_{t-1}``, ``q_t`` and ``z_t``.
        dropout: dropout rate after the transfer MLP (PaddleRec: the last ``drop_prob``).
        stop_gradient: no gradient flows from task ``t`` back into ``z_{t-1}`` (the paper lets it flow: False).

    Shapes:
        ``previous`` ``z_{t-1}`` ``(B, D)``, ``current`` ``q_t`` ``(B, D)`` → ``z_t`` ``(B, D)``; :meth:`weights`
        gives ``[w_p, w_q]`` ``(B, 2)``.
    """

    def __init__(self, dim: int, dropout: float = 0.0, stop_gradient: bool = False) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"AdaptiveInformationTransfer needs dim >= 1, got {dim}")
        self.transfer = MLP(dim, [dim], dropout=dropout, init="xavier_uniform", bias_init=0.0)
        self.h1 = init_linear(nn.Linear(dim, dim, bias=False), "xavier_uniform")   # values
        self.h2 = init_linear(nn.Linear(dim, dim, bias=False), "xavier_uniform")   # queries
        self.h3 = init_linear(nn.Linear(dim, dim, bias=False), "xavier_uniform")   # keys
        self.stop_gradient = stop_gradient
        self.scale = 1.0 / dim ** 0.5

    def _inputs(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """``[p_t, q_t]`` stacked: ``(B, 2, D)``."""
        previous = previous.detach() if self.stop_gradient else previous
        return torch.stack([self.transfer(previous), current], dim=1)

    def _scores(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax((self.h2(inputs) * self.h3(inputs)).sum(dim=-1) * self.scale, dim=1)   # (B, 2)

    def weights(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """The attention weights ``[w_p, w_q]`` of each sample, ``(B, 2)`` (rows sum to 1)."""
        return self._scores(self._inputs(previous, current))

    def forward(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        inputs = self._inputs(previous, current)                                                      # (B, 2, D)
        return (self._scores(inputs).unsqueeze(-1) * self.h1(inputs)).sum(dim=1)

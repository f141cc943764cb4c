"""Feature-importance layers: FiBiNet's SENet, MaskNet's instance-guided masks, PEPNet's personalised gates,
and FiBiNet itself as one layer (SENet + bilinear interaction + MLP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers.init import init_linear
from recstack.layers.mlp import MLP


class SENet(nn.Module):
    """Squeeze-and-excitation over feature fields (FiBiNet, https://arxiv.org/abs/1905.09433; grouped squeeze,
    skip connection and output LayerNorm from FiBiNet++, https://arxiv.org/abs/2209.05016).

    1. *Squeeze*: each field ``v_i`` (width ``D_i``) is cut into ``g`` groups of ``D_i / g``; each group gives
       its max and its mean: ``z`` of width ``F * 2g`` (field by field: ``g`` maxima, then ``g`` means).
    2. *Excitation*: ``a = W_2 relu(W_1 z + b_1) + b_2``, one weight per embedding element (width ``sum D_i``);
       ``W_1`` has ``max(1, F * 2g // reduction_ratio)`` units.
    3. *Re-weight*: ``out = x ∘ a`` for the concatenated fields ``x``, plus ``x`` with the skip
       connection, then LayerNorm (``eps`` 1e-3, Keras') when ``use_output_layer_norm``.

    Initialisation: ``W_1`` He-normal, ``W_2`` Glorot-normal, biases 0 (EasyRec's).

    Args:
        dims: the fields' widths ``D_i``, each divisible by ``num_squeeze_group``.
        reduction_ratio: ``r``.
        num_squeeze_group: ``g``.
        use_skip_connection: add ``x`` to the re-weighted fields.
        use_output_layer_norm: LayerNorm on the output.

    Shapes:
        a list of ``F`` tensors ``(B, D_i)``, or ``(B, F, D)`` → ``(B, sum D_i)``.
    """

    def __init__(self, dims: Sequence[int], reduction_ratio: int = 4, num_squeeze_group: int = 2,
                 use_skip_connection: bool = True, use_output_layer_norm: bool = True) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        g = num_squeeze_group
        if g < 1 or reduction_ratio < 1:
            raise ValueError(f"SENet: num_squeeze_group and reduction_ratio must be >= 1, got {g} and "
                             f"{reduction_ratio}")
        bad = [d for d in dims if d < g or d % g]
        if bad:
            raise ValueError(f"SENet: every field width must be a multiple of num_squeeze_group={g}, got {dims}")
        self.dims, self.groups, self.skip = dims, g, use_skip_connection
        total = sum(dims)
        self.reduce = init_linear(nn.Linear(len(dims) * 2 * g, max(1, len(dims) * g * 2 // reduction_ratio)),
                                  "he_normal")
        self.excite = init_linear(nn.Linear(self.reduce.out_features, total), "xavier_normal")
        self.norm = nn.LayerNorm(total, eps=1e-3) if use_output_layer_norm else None
        self.output_dim = total

    def squeeze(self, fields: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``z`` ``(B, F * 2g)``: each field's group maxima, then its group means."""
        g = self.groups
        if isinstance(fields, torch.Tensor):
            grouped = fields.reshape(fields.shape[0], fields.shape[1], g, -1)          # (B, F, g, D / g)
            return torch.cat([grouped.amax(dim=-1), grouped.mean(dim=-1)], dim=-1).flatten(1)
        parts = []
        for v in fields:
            grouped = v.reshape(v.shape[0], g, -1)
            parts += [grouped.amax(dim=-1), grouped.mean(dim=-1)]
        return torch.cat(parts, dim=1)

    def forward(self, fields: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        weights = self.excite(torch.relu(self.reduce(self.squeeze(fields))))
        x = fields.flatten(1) if isinstance(fields, torch.Tensor) else torch.cat(list(fields), dim=-1)
        out = x * weights
        if self.skip:
            out = out + x
        return out if self.norm is None else self.norm(out)


class MaskBlock(nn.Module):
    """MaskNet's MaskBlock (Wang, She, Zhang, "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking
    Models by Instance-Guided Mask", 2021, https://arxiv.org/abs/2102.07619).

    The *instance-guided mask* ``m = W_2 relu(W_1 u + b_1) + b_2`` (``W_1``: ``aggregation_size`` units, on the
    mask input ``u`` or on its low-rank projection) scales the block's input elementwise: ``h = m ∘ x``
    (``x`` LayerNorm-ed first when ``input_layer_norm``). With ``output_size`` the block ends in
    ``relu(LayerNorm(W_o h))`` (``W_o`` without bias), otherwise it returns ``h``.

    Initialisation: ``W_1`` He-uniform, the others Glorot-uniform, biases 0 (EasyRec's). LayerNorm ``eps`` 1e-3.

    Args:
        input_dim: width of ``x``.
        mask_input_dim: width of ``u``.
        aggregation_size: ``W_1``'s units (EasyRec derives it from ``reduction_factor`` when that is set).
        output_size: the output layer's width, or ``None``.
        input_layer_norm: LayerNorm on ``x``.
        projection_dim: project ``u`` to this width first (a Linear without bias), or ``None``.

    Shapes:
        ``x`` ``(B, input_dim)`` (then ``u = x``) or ``[x, u]`` → ``(B, output_size or input_dim)``.
    """

    def __init__(self, input_dim: int, mask_input_dim: int, aggregation_size: int, output_size: int | None = None,
                 input_layer_norm: bool = False, projection_dim: int | None = None) -> None:
        super().__init__()
        if aggregation_size < 1:
            raise ValueError(f"MaskBlock: aggregation size must be >= 1, got {aggregation_size}")
        self.input_norm = nn.LayerNorm(input_dim, eps=1e-3) if input_layer_norm else None
        self.project = None if projection_dim is None else init_linear(
            nn.Linear(mask_input_dim, projection_dim, bias=False), "xavier_uniform")
        self.aggregate = init_linear(nn.Linear(projection_dim or mask_input_dim, aggregation_size), "he_uniform")
        self.mask = init_linear(nn.Linear(aggregation_size, input_dim), "xavier_uniform")
        self.output = None if output_size is None else nn.Sequential(
            init_linear(nn.Linear(input_dim, output_size, bias=False), "xavier_uniform"),
            nn.LayerNorm(output_size, eps=1e-3), nn.ReLU())
        self.output_dim = output_size or input_dim

    def instance_mask(self, mask_input: torch.Tensor) -> torch.Tensor:
        """``m`` ``(B, input_dim)`` from the mask input ``u``."""
        u = mask_input if self.project is None else self.project(mask_input)
        return self.mask(torch.relu(self.aggregate(u)))

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"MaskBlock takes one tensor or a pair [x, mask_input], got {len(inputs)} tensors")
            x, u = inputs
        else:
            x = u = inputs
        if self.input_norm is not None:
            x = self.input_norm(x)
        h = x * self.instance_mask(u)
        return h if self.output is None else self.output(h)


class MaskNet(nn.Module):
    """MaskNet (https://arxiv.org/abs/2102.07619): MaskBlocks over the (LayerNorm-ed) input, in parallel (their
    outputs concatenated) or serially (block ``k`` masks block ``k - 1``'s output, every mask computed from
    the input), then an optional top module (an MLP).

    Args:
        input_dim: width of the input.
        blocks: the MaskBlocks; in parallel each takes ``(input_dim, input_dim)``, serially block ``k`` takes
            the previous block's output width and ``input_dim`` as mask input.
        use_parallel: the parallel form.
        top: applied to the blocks' output, or ``None``.
        input_layer_norm: LayerNorm (``eps`` 1e-3) on the input first.

    Shapes:
        ``(B, input_dim)`` → ``(B, output_dim)``.
    """

    def __init__(self, input_dim: int, blocks: Sequence[MaskBlock], use_parallel: bool = True,
                 top: nn.Module | None = None, input_layer_norm: bool = True) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("MaskNet needs at least one mask block")
        self.blocks = nn.ModuleList(blocks)
        self.parallel = use_parallel
        self.top = top
        self.input_norm = nn.LayerNorm(input_dim, eps=1e-3) if input_layer_norm else None
        width = sum(b.output_dim for b in blocks) if use_parallel else blocks[-1].output_dim
        self.output_dim = getattr(top, "output_dim", width) if top is not None else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.parallel:
            out = torch.cat([block([x, x]) for block in self.blocks], dim=-1)
        else:
            out = x
            for block in self.blocks:
                out = block([out, x])
        return out if self.top is None else self.top(out)


class GateNN(nn.Module):
    """PEPNet's gate unit (Chang et al., "PEPNet: Parameter and Embedding Personalized Network for Infusing
    with Personalized Prior Information", KDD 2023, https://arxiv.org/abs/2302.01115):
    ``g(z) = 2 · sigmoid(W_2 h + b_2)`` with one hidden layer ``h = MLP(z)``. The factor 2 centres the gate
    at 1: a neutral gate leaves the gated tensor as it is, and a gate can amplify as well as damp.

    Initialisation: He-uniform kernels, zero biases; no biases when BatchNorm is used (EasyRec's GateNN).

    Args:
        input_dim: width of the gate's input ``z``.
        output_dim: width of the gate (the gated tensor's width).
        hidden_dim: hidden width (``None``: ``output_dim``).
        activation: hidden activation name.
        use_bn: BatchNorm after the hidden Linear.
        dropout_rate: dropout after the hidden activation.

    Shapes:
        ``(B, input_dim)`` → ``(B, output_dim)``, in ``(0, 2)``.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int | None = None, activation: str = "relu",
                 use_bn: bool = False, dropout_rate: float = 0.0) -> None:
        super().__init__()
        hidden = hidden_dim or output_dim
        self.hidden = MLP(input_dim, [hidden], activation=activation, dropout=dropout_rate, batch_norm=use_bn,
                          init="he_uniform", bias=not use_bn)
        self.weight = init_linear(nn.Linear(hidden, output_dim, bias=not use_bn), "he_uniform")
        self.output_dim = output_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 2 * torch.sigmoid(self.weight(self.hidden(z)))


class PPNet(nn.Module):
    """PEPNet's parameter-personalised network (PPNet, https://arxiv.org/abs/2302.01115): an MLP whose layers
    are scaled by :class:`GateNN` gates computed from personal (e.g. user / author id) features.

    Mode ``"eager"`` gates each layer's input: ``x_{k+1} = layer_k(x_k ∘ g_k(z))``; mode ``"lazy"`` gates each
    layer's output: ``x_{k+1} = layer_k(x_k) ∘ g_k(z)``. The gates' input is ``z = [stop_grad(x_0), p]``
    with ``full_gate_input`` (the gates learn from the MLP's input without pushing gradients into it),
    else the personal features ``p`` alone.

    Args:
        layers: the MLP's layers, one module each (``output_dim`` attribute: its width).
        gates: one :class:`GateNN` per layer, as wide as the tensor it gates.
        mode: ``"eager"`` or ``"lazy"``.
        full_gate_input: see above.

    Shapes:
        ``[x (B, D), p (B, D_p)]`` → ``(B, layers[-1].output_dim)``.
    """

    def __init__(self, layers: Sequence[nn.Module], gates: Sequence[GateNN], mode: str = "eager",
                 full_gate_input: bool = True) -> None:
        super().__init__()
        if mode not in ("eager", "lazy"):
            raise ValueError(f"PPNet: mode must be 'eager' or 'lazy', got {mode!r}")
        if not layers or len(layers) != len(gates):
            raise ValueError(f"PPNet needs one gate per layer, got {len(layers)} layers and {len(gates)} gates")
        self.layers = nn.ModuleList(layers)
        self.gates = nn.ModuleList(gates)
        self.eager = mode == "eager"
        self.full_gate_input = full_gate_input
        self.output_dim = layers[-1].output_dim

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("PPNet takes a pair [x, personal features]")
        x, personal = inputs
        z = torch.cat([x.detach(), personal], dim=-1) if self.full_gate_input else personal
        for layer, gate in zip(self.layers, self.gates):
            x = layer(x * gate(z)) if self.eager else layer(x) * gate(z)
        return x


class FiBiNet(nn.Module):
    """FiBiNet as one layer (https://arxiv.org/abs/1905.09433, FiBiNet++ https://arxiv.org/abs/2209.05016):
    ``top([SENet(fields), BiLinear(fields)])``, the bilinear part and the top module optional.

    Args:
        senet: a :class:`SENet` over the fields.
        bilinear: a :class:`recstack.layers.BilinearInteraction` over the same fields, or ``None``.
        top: applied to the concatenation (an MLP), or ``None``.

    Shapes:
        a list of ``F`` tensors ``(B, D_i)`` or ``(B, F, D)`` → ``(B, output_dim)``.
    """

    def __init__(self, senet: SENet, bilinear: nn.Module | None = None, top: nn.Module | None = None) -> None:
        super().__init__()
        self.senet, self.bilinear, self.top = senet, bilinear, top
        width = senet.output_dim + (bilinear.output_dim if bilinear is not None else 0)
        self.output_dim = getattr(top, "output_dim", width) if top is not None else width

    def forward(self, fields: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.senet(fields)
        if self.bilinear is not None:
            out = torch.cat([out, self.bilinear(fields)], dim=-1)
        return out if self.top is None else self.top(out)

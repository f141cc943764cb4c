"""Feature-interaction layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recstack.layers.init import init_linear, truncated_normal_
from recstack.layers.sequence import MultiHeadAttention


class FactorizationMachine(nn.Module):
    """Second-order FM interaction (Rendle, "Factorization Machines", ICDM 2010).

    ``sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)``, linear in
    the number of fields.

    Args:
        sum_dims: sum the interaction over ``D`` (the FM score); ``False``: keep one term per
            dimension, ``0.5 * ((sum_i v_i)^2 - sum_i v_i^2)`` (EasyRec's ``FM.use_variant``).

    Shapes:
        ``(B, F, D)`` → ``(B, 1)``; ``(B, D)`` when not ``sum_dims``.
    """

    def __init__(self, sum_dims: bool = True) -> None:
        super().__init__()
        self.sum_dims = sum_dims

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        square_of_sum = fields.sum(dim=1).pow(2)
        sum_of_square = fields.pow(2).sum(dim=1)
        if not self.sum_dims:
            return 0.5 * (square_of_sum - sum_of_square)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


def _pairs(num_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the ``F (F - 1) / 2`` field pairs ``i < j``."""
    return torch.triu_indices(num_fields, num_fields, offset=1)


class FieldAwareInteraction(nn.Module):
    """FFM's pairwise term (Juan et al., "Field-aware Factorization Machines", RecSys 2016).

    Each field ``i`` has one vector per other field ``j``: ``sum_{i<j} <v_{i,j}, v_{j,i}>``.

    Args:
        num_fields: ``F``.

    Shapes:
        ``(B, F, F, D)`` (field ``i``'s vector towards field ``j`` at ``[:, i, j]``) → ``(B, 1)``.
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = _pairs(num_fields)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        left = fields[:, self.rows, self.cols]   # v_{i,j}: (B, P, D)
        right = fields[:, self.cols, self.rows]  # v_{j,i}
        return (left * right).sum(dim=(1, 2)).unsqueeze(1)


class FieldEmbeddedInteraction(nn.Module):
    """DeepFEFM's field-pair interactions: ``v_i^T W_{f_i, f_j} v_j`` with a symmetric matrix per field pair.

    Pande, "FIELD-EMBEDDED FACTORIZATION MACHINES FOR CLICK-THROUGH RATE PREDICTION", 2020.
    ``W_{ij} = (A_{ij} + A_{ij}^T) / 2``, initialised like the embeddings (small truncated normal).

    Args:
        num_fields: ``F``.
        embedding_dim: ``D``.
        init_std: truncated-normal std of the pair matrices.

    Shapes:
        ``(B, F, D)`` → one score per field pair ``(B, F (F - 1) / 2)``.
    """

    def __init__(self, num_fields: int, embedding_dim: int, init_std: float = 0.01) -> None:
        super().__init__()
        rows, cols = _pairs(num_fields)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.pair_matrices = nn.Parameter(truncated_normal_(torch.empty(len(rows), embedding_dim, embedding_dim),
                                                            init_std))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        symmetric = 0.5 * (self.pair_matrices + self.pair_matrices.transpose(1, 2))
        left, right = fields[:, self.rows], fields[:, self.cols]  # (B, P, D)
        return torch.einsum("bpd,pde,bpe->bp", left, symmetric, right)


class DotInteraction(nn.Module):
    """DLRM's interaction: dot products of every pair of feature vectors.

    Naumov et al., "Deep Learning Recommendation Model for Personalization and
    Recommendation Systems", 2019. https://arxiv.org/abs/1906.00091

    Args:
        num_fields: ``F`` (the dense vector counts as one field).
        self_interaction: also include ``<v_i, v_i>``.
        skip_gather: return the whole ``F x F`` matrix, flattened, with the pairs not taken set to 0
            (the lower triangle kept, as EasyRec's ``DotInteraction.skip_gather``): no gather, a wider output.

    Shapes:
        ``(B, F, D)`` → ``(B, F (F - 1) / 2)`` (``F (F + 1) / 2`` with self-interaction; ``F * F`` with
        ``skip_gather``).
    """

    def __init__(self, num_fields: int, self_interaction: bool = False, skip_gather: bool = False) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=0 if self_interaction else 1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.skip_gather = skip_gather
        if skip_gather:
            keep = torch.ones(num_fields, num_fields).tril(0 if self_interaction else -1)
            self.register_buffer("keep", keep, persistent=False)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(fields, fields.transpose(1, 2))
        if self.skip_gather:
            return (gram * self.keep).flatten(1)
        return gram[:, self.rows, self.cols]


class CIN(nn.Module):
    """Compressed Interaction Network of xDeepFM (Lian et al., KDD 2018, https://arxiv.org/abs/1803.05170).

    ``X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i ∘ X^0_j)``: explicit vector-wise
    interactions of growing order; each layer's maps are sum-pooled over ``D``.
    With ``split_half`` every layer but the last sends half its maps to the output
    and half to the next layer (the paper's default).

    Args:
        num_fields: ``F``.
        layer_sizes: feature maps per layer (PaddleRec's ``layer_sizes_cin``).
        split_half: see above (sizes must then be even, except the last).

    Shapes:
        ``(B, F, D)`` → ``(B, output_dim)``.
    """

    def __init__(self, num_fields: int, layer_sizes: Sequence[int], split_half: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.split_half = split_half
        prev, out = num_fields, 0
        for k, size in enumerate(layer_sizes):
            last = k == len(layer_sizes) - 1
            if split_half and not last and size % 2:
                raise ValueError(f"CIN layer_sizes must be even when split_half (layer {k} has {size})")
            # W^k as a Linear over the H_{k-1} * F products (the paper's 1x1 convolution; PyTorch's default init)
            self.layers.append(nn.Linear(prev * num_fields, size))
            prev = size // 2 if split_half and not last else size
            out += size // 2 if split_half and not last else size
        self.output_dim = out

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x0.shape
        # Work in (B, D, maps) layout: each layer is then one (B * D, H * F) x (H * F, size) matrix
        # product instead of a 1x1 convolution over length-D rows (1.2-1.5x faster measured here,
        # 512 x 39 fields x 9, layers [128, 32], forward + backward).
        base = x0.transpose(1, 2)                                              # (B, D, F)
        hidden, pooled = base, []
        for k, layer in enumerate(self.layers):
            z = (hidden.unsqueeze(3) * base.unsqueeze(2)).reshape(batch, dim, -1)   # (B, D, H * F)
            z = torch.relu(layer(z))                                           # (B, D, size)
            if self.split_half and k < len(self.layers) - 1:
                hidden, direct = z.chunk(2, dim=2)
            else:
                hidden = direct = z
            pooled.append(direct.sum(dim=1))
        return torch.cat(pooled, dim=1)


class CrossNet(nn.Module):
    """DCN's cross network (Wang et al., ADKDD 2017, https://arxiv.org/abs/1708.05123).

    ``x_{l+1} = x_0 (x_l^T w_l) + b_l + x_l``: one weight vector per layer.

    Args:
        input_dim: width of ``x_0``.
        num_layers: PaddleRec's ``cross_num``.

    Shapes:
        ``(B, input_dim)`` → ``(B, input_dim)``.
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(truncated_normal_(torch.empty(num_layers, input_dim), 1.0 / input_dim ** 0.5))
        self.biases = nn.Parameter(torch.zeros(num_layers, input_dim))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.weights, self.biases):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return x

    def l2(self) -> torch.Tensor:
        """Sum of squared cross weights (PaddleRec's ``l2_reg_cross`` penalty)."""
        return self.weights.pow(2).sum()

def _xavier_slices(tensor: torch.Tensor) -> torch.Tensor:
    """Xavier-normal init of every trailing 2-D matrix of ``tensor`` on its own fans (one per
    layer/expert), not on the fans ``nn.init`` would compute for the whole N-d tensor."""
    with torch.no_grad():
        for matrix in tensor.view(-1, *tensor.shape[-2:]):
            nn.init.xavier_normal_(matrix)
    return tensor


class CrossNetMix(nn.Module):
    """DCN-V2's cross network (Wang et al., WWW 2021, https://arxiv.org/abs/2008.13535).

    Full rank (``low_rank=None``): ``x_{l+1} = x_0 ∘ (W_l x_l + b_l) + x_l``.
    Mixture of low-rank experts: ``x_{l+1} = sum_i G_i(x_l) x_0 ∘ (U_i tanh(C_i tanh(V_i^T x_l)) + b_l) + x_l``
    with a softmax gate ``G`` over ``num_experts`` experts of rank ``low_rank``.

    Args:
        input_dim: width of ``x_0``.
        num_layers: cross layers (PaddleRec's ``cross_num``).
        low_rank: rank ``r`` of each expert; ``None`` for the full-rank matrix.
        num_experts: experts per layer (low-rank mode).

    Shapes:
        ``(B, input_dim)`` → ``(B, input_dim)``.
    """

    def __init__(self, input_dim: int, num_layers: int, low_rank: int | None = None, num_experts: int = 1) -> None:
        super().__init__()
        self.low_rank = low_rank
        d, n = input_dim, num_layers
        self.biases = nn.Parameter(torch.zeros(n, d))
        if low_rank is None:
            # one (n, d, d) tensor, not a ParameterList: the layer scripts and exports as is
            self.full = nn.Parameter(_xavier_slices(torch.empty(n, d, d)))
            self.v = self.c = self.u = self.gates = None
        else:
            r, e = low_rank, num_experts
            self.full = None
            self.v = nn.Parameter(_xavier_slices(torch.empty(n, e, d, r)))
            self.c = nn.Parameter(_xavier_slices(torch.empty(n, e, r, r)))
            self.u = nn.Parameter(_xavier_slices(torch.empty(n, e, r, d)))
            self.gates = nn.Parameter(_xavier_slices(torch.empty(n, d, e)))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        full, v, c, u, gates = self.full, self.v, self.c, self.u, self.gates
        if full is not None:
            for layer in range(self.biases.shape[0]):
                x = x0 * (x @ full[layer].T + self.biases[layer]) + x
            return x
        assert v is not None and c is not None and u is not None and gates is not None
        for layer in range(self.biases.shape[0]):
            low = torch.tanh(torch.einsum("bd,edr->ber", x, v[layer]))
            low = torch.tanh(torch.einsum("ber,ers->bes", low, c[layer]))
            experts = x0.unsqueeze(1) * (torch.einsum("ber,erd->bed", low, u[layer]) + self.biases[layer])
            weights = torch.softmax(x @ gates[layer], dim=1)
            x = torch.einsum("be,bed->bd", weights, experts) + x
        return x

    def l2(self) -> torch.Tensor:
        """Sum of squared cross weights (full-rank ``W`` or the experts' ``U``, ``V``, ``C``; not the
        biases or the gates): PaddleRec's ``l2_reg_cross`` penalty."""
        if self.full is not None:
            return self.full.pow(2).sum()
        return sum(w.pow(2).sum() for w in (self.v, self.c, self.u))


class Cross(nn.Module):
    """One DCN-V2 cross layer on ``(x_0, x)`` (Wang et al., WWW 2021, https://arxiv.org/abs/2008.13535, eq. 1-2).

    ``x' = x_0 ∘ (W x + b + diag_scale · x) + x``: ``diag_scale`` adds ``diag_scale · I`` to ``W`` (training
    stability, mostly for the low-rank form). ``W`` is full (``input_dim x input_dim``) or, with
    ``projection_dim = r``, the low-rank ``V U`` (``U``: ``input_dim → r`` without bias, ``V``: ``r → input_dim``).
    A stack ``x_{k+1} = Cross_k(x_0, x_k)`` is the backbone's ``recurrent`` block; :class:`CrossNetMix` is the
    whole stack as one layer for the built-in models.

    Initialisation: Keras' ``truncated_normal`` (std 0.05) for the kernels unless ``init`` says otherwise
    (any :func:`recstack.layers.init.init_linear` scheme), bias 0.

    Args:
        input_dim: width of ``x_0`` and ``x``.
        projection_dim: ``r`` of the low-rank form; ``None``: the full matrix.
        diag_scale: non-negative; added to ``W``'s diagonal.
        use_bias: add ``b``.
        init: kernel initialisation scheme.

    Shapes:
        ``(B, input_dim)`` (then ``x_0 = x``) or a pair ``[x_0, x]`` of ``(B, input_dim)`` → ``(B, input_dim)``.
    """

    def __init__(self, input_dim: int, projection_dim: int | None = None, diag_scale: float = 0.0,
                 use_bias: bool = True, init: str = "truncated_normal") -> None:
        super().__init__()
        if diag_scale < 0:
            raise ValueError(f"Cross: diag_scale must be >= 0, got {diag_scale}")
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"Cross: projection_dim must be >= 1, got {projection_dim}")
        self.diag_scale = float(diag_scale)
        self.down = None if projection_dim is None else init_linear(
            nn.Linear(input_dim, projection_dim, bias=False), init)
        self.up = init_linear(nn.Linear(projection_dim or input_dim, input_dim, bias=use_bias), init, 0.0)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"Cross takes one tensor or a pair [x0, x], got a list of {len(inputs)}")
            x0, x = inputs
        else:
            x0 = x = inputs
        h = self.up(x if self.down is None else self.down(x))
        if self.diag_scale:
            h = h + self.diag_scale * x
        return x0 * h + x


class BilinearInteraction(nn.Module):
    """FiBiNet's bilinear interaction of every field pair, then one Linear (Huang, Zhang, Zhang, "FiBiNET",
    RecSys 2019, https://arxiv.org/abs/1905.09433; bilinear+ from FiBiNet++, https://arxiv.org/abs/2209.05016).

    For each pair ``i < j``: ``p_ij = (v_i W + b) ∘ v_j`` (a ``D_j`` vector), or with ``use_plus``
    ``p_ij = <v_i W + b, v_j>`` (a scalar); the ``p_ij`` are concatenated and projected to
    ``num_output_units``. ``W`` is shared by all pairs (``"all"``), one per left field ``i`` (``"each"``)
    or one per pair (``"interaction"``, ``D_i x D_j``: the only type that allows fields of different widths).

    All pairs are computed at once: fields are padded to the widest ``D`` and the matrices stored as one
    ``(K, D, D)`` tensor (``K`` = 1, ``F - 1`` or the number of pairs) whose padding stays 0.

    Initialisation: Glorot-uniform on each matrix's own fans and on the output Linear, biases 0 (Keras' Dense).

    Args:
        dims: the fields' widths ``D_i`` (``F >= 2``).
        num_output_units: output width.
        bilinear_type: ``"all"``, ``"each"`` or ``"interaction"``.
        use_plus: the scalar bilinear+ form.

    Shapes:
        a list of ``F`` tensors ``(B, D_i)``, or ``(B, F, D)`` → ``(B, num_output_units)``.
    """

    TYPES = ("all", "each", "interaction")

    def __init__(self, dims: Sequence[int], num_output_units: int, bilinear_type: str = "interaction",
                 use_plus: bool = True) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if bilinear_type not in self.TYPES:
            raise ValueError(f"BiLinear: type must be one of {', '.join(self.TYPES)}, got {bilinear_type!r}")
        if len(dims) < 2:
            raise ValueError(f"BiLinear needs at least 2 fields, got {len(dims)}")
        if bilinear_type != "interaction" and len(set(dims)) > 1:
            raise ValueError(f"BiLinear type {bilinear_type!r} needs fields of equal width, got {dims} "
                             "(type 'interaction' allows different widths)")
        self.dims, self.bilinear_type, self.use_plus = dims, bilinear_type, use_plus
        self.width = width = max(dims)
        rows, cols = _pairs(len(dims))
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        blocks = [(d, d) for d in dims[:1]] if bilinear_type == "all" else \
            [(d, d) for d in dims[:-1]] if bilinear_type == "each" else \
            [(dims[i], dims[j]) for i, j in zip(rows.tolist(), cols.tolist())]
        weight = torch.zeros(len(blocks), width, width)
        with torch.no_grad():
            for k, (d_in, d_out) in enumerate(blocks):
                nn.init.xavier_uniform_(weight[k, :d_in, :d_out])
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(len(blocks), width))
        # the real columns of each pair's padded product (pair (i, j) keeps its first D_j); None: all are real
        keep = [p * width + c for p, j in enumerate(cols.tolist()) for c in range(dims[j])]
        padded = not use_plus and len(keep) < len(rows) * width
        self.register_buffer("keep", torch.tensor(keep) if padded else None, persistent=False)
        size = len(rows) if use_plus else len(keep)
        self.output = init_linear(nn.Linear(size, num_output_units), "xavier_uniform")
        self.output_dim = num_output_units

    def forward(self, fields: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(fields, (list, tuple)):
            fields = torch.stack([F.pad(v, (0, self.width - v.shape[-1])) for v in fields], dim=1)
        if self.bilinear_type == "interaction":
            left = torch.einsum("bpd,pde->bpe", fields[:, self.rows], self.weight) + self.bias
        elif self.bilinear_type == "each":
            projected = torch.einsum("bfd,fde->bfe", fields[:, :-1], self.weight) + self.bias
            left = projected[:, self.rows]
        else:
            left = (fields @ self.weight[0] + self.bias[0])[:, self.rows]
        product = left * fields[:, self.cols]                            # (B, P, D)
        if self.use_plus:
            return self.output(product.sum(dim=-1))
        flat = product.flatten(1)
        return self.output(flat if self.keep is None else flat[:, self.keep])


class InteractingLayer(nn.Module):
    """AutoInt's interacting layer (Song et al., CIKM 2019, eqs. 5-8): multi-head self-attention over the
    fields, a residual projection and ReLU::

        head_h = softmax((E W_Q^h)(E W_K^h)^T [/ sqrt(d')]) (E W_V^h);   out = ReLU([head_1, ..., head_H] + E W_Res)

    The attention is :class:`recstack.layers.MultiHeadAttention` without biases or output projection.

    Initialisation: Glorot-uniform ``W_Q``, ``W_K``, ``W_V`` and ``W_Res`` (PaddleRec's XavierUniform).

    Args:
        input_dim: ``D``, the width of each field vector.
        output_dim: ``d``, the output width of each field (a multiple of ``num_heads``; heads of ``d' = d / H``).
        num_heads: ``H``.
        use_residual: add ``E W_Res`` (``W_Res`` ``(D, d)``) before the ReLU.
        scaling: divide the attention scores by ``sqrt(d')``.

    Shapes:
        ``(B, F, D)`` → ``(B, F, d)``.
    """

    def __init__(self, input_dim: int, output_dim: int, num_heads: int, use_residual: bool = True,
                 scaling: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or output_dim % num_heads:
            raise ValueError(f"InteractingLayer: output width {output_dim} is not a multiple of head_num {num_heads}")
        self.attention = MultiHeadAttention(input_dim, num_heads, output_dim // num_heads, use_bias=False,
                                            output_projection=False, scale=scaling)
        self.residual = (init_linear(nn.Linear(input_dim, output_dim, bias=False), "xavier_uniform")
                         if use_residual else None)
        self.output_dim = output_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        out, _ = self.attention.attend(fields, fields)
        if self.residual is not None:
            out = out + self.residual(fields)
        return torch.relu(out)

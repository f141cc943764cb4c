"""Sequence encoders: multi-head attention, Transformer layers and encoders, BST and DIN's target attention as
EasyRec's backbone components define them.

Sequences are padded ``(B, L, D)`` tensors with a mask of the real positions, given as lengths ``(B,)`` or as a
``(B, L)`` bool / 0-1 tensor (:func:`key_mask`). Attention never attends to a padded key (weights exactly 0,
:func:`recstack.layers.attention.masked_softmax`); outputs at padded query positions are computed but carry
no information.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recstack.layers.activation import get_activation
from recstack.layers.attention import LocalActivationUnit, lengths_to_mask, masked_softmax
from recstack.layers.init import init_linear, truncated_normal_


def key_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """A bool ``(B, length)`` mask from lengths ``(B,)`` or from a ``(B, length)`` bool / 0-1 mask."""
    return lengths_to_mask(mask, length) if mask.dim() == 1 else mask.bool()


def _split_inputs(inputs: torch.Tensor | Sequence[torch.Tensor], who: str) -> tuple[list[torch.Tensor],
                                                                                     torch.Tensor | None]:
    """The 3-D tensors of an input list, in order, and the mask (the one tensor of rank 1 or 2), if any."""
    if isinstance(inputs, torch.Tensor):
        return [inputs], None
    tensors = [t for t in inputs if t.dim() == 3]
    masks = [t for t in inputs if t.dim() < 3]
    if not tensors or len(masks) > 1 or len(tensors) + len(masks) != len(inputs):
        raise ValueError(f"{who} takes (B, L, D) tensors and at most one mask ((B,) lengths or a (B, L) mask), "
                         f"got ranks {[t.dim() for t in inputs]}")
    return tensors, masks[0] if masks else None


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al., "Attention Is All You Need", 2017) with Keras'
    parameters: ``num_heads`` heads of width ``key_dim`` for queries and keys and ``value_dim`` for values,
    then an output projection::

        head_h = softmax(Q_h K_h^T / sqrt(key_dim) + mask) V_h;   out = [head_1, ..., head_H] W_o

    Initialisation: Glorot-uniform kernels, zero biases (Keras').

    Args:
        query_dim: width of the query input.
        num_heads: ``H``.
        key_dim: per-head width of queries and keys.
        value_dim: per-head width of values (``None``: ``key_dim``).
        dropout: dropout on the attention weights.
        use_bias: biases in the four projections.
        output_dim: output width (``None``: ``query_dim``; EasyRec's ``output_shape``).
        use_causal_mask: query ``t`` attends to keys ``s <= t`` only.
        return_attention_scores: also return the weights ``(B, H, T, S)``.
        key_input_dim, value_input_dim: widths of the key and value inputs (``None``: the value's / query's).
        output_projection: apply ``W_o`` (False: the concatenated heads are the output, width
            ``num_heads * value_dim``; AutoInt's interacting layer).
        scale: divide the scores by ``sqrt(key_dim)`` (False: raw dot products).

    Shapes:
        ``x`` ``(B, T, D)`` (self-attention) or a list ``[query (B, T, D), value (B, S, D_v)]``, with an optional
        ``key (B, S, D_k)`` after the value and an optional mask of the keys last (lengths ``(B,)`` or ``(B, S)``)
        → ``(B, T, output_dim)`` (``[output, weights]`` with ``return_attention_scores``).
    """

    def __init__(self, query_dim: int, num_heads: int, key_dim: int, value_dim: int | None = None,
                 dropout: float = 0.0, use_bias: bool = True, output_dim: int | None = None,
                 use_causal_mask: bool = False, return_attention_scores: bool = False,
                 key_input_dim: int | None = None, value_input_dim: int | None = None,
                 output_projection: bool = True, scale: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or key_dim < 1:
            raise ValueError(f"MultiHeadAttention: num_heads and key_dim must be >= 1, got {num_heads} and {key_dim}")
        value_dim = value_dim or key_dim
        value_in = value_input_dim or query_dim
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.query = init_linear(nn.Linear(query_dim, num_heads * key_dim, bias=use_bias), "xavier_uniform")
        self.key = init_linear(nn.Linear(key_input_dim or value_in, num_heads * key_dim, bias=use_bias),
                               "xavier_uniform")
        self.value = init_linear(nn.Linear(value_in, num_heads * value_dim, bias=use_bias), "xavier_uniform")
        if output_projection:
            self.output = init_linear(nn.Linear(num_heads * value_dim, output_dim or query_dim, bias=use_bias),
                                      "xavier_uniform")
        else:
            if output_dim is not None and output_dim != num_heads * value_dim:
                raise ValueError(f"MultiHeadAttention: without an output projection the output width is "
                                 f"num_heads * value_dim = {num_heads * value_dim}, got output_dim {output_dim}")
            self.output = nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.causal, self.return_scores = use_causal_mask, return_attention_scores
        self.scaled = scale
        self.output_dim = (output_dim or query_dim) if output_projection else num_heads * value_dim

    def _heads(self, x: torch.Tensor, width: int) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, width).transpose(1, 2)   # (B, H, L, width)

    def attend(self, query: torch.Tensor, value: torch.Tensor, key: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The output ``(B, T, output_dim)`` and the attention weights ``(B, H, T, S)``.

        ``mask``: the real keys, lengths ``(B,)`` or ``(B, S)``; ``None``: all.
        """
        key = value if key is None else key
        q = self._heads(self.query(query), self.key_dim)
        k = self._heads(self.key(key), self.key_dim)
        v = self._heads(self.value(value), self.value_dim)
        scores = q @ k.transpose(-1, -2)                                                   # (B, H, T, S)
        if self.scaled:
            scores = scores / math.sqrt(self.key_dim)
        allowed = None if mask is None else key_mask(mask, key.shape[1])[:, None, None, :]
        if self.causal:
            causal = torch.ones(scores.shape[-2], scores.shape[-1], dtype=torch.bool, device=scores.device).tril()
            allowed = causal if allowed is None else allowed & causal
        weights = torch.softmax(scores, dim=-1) if allowed is None else masked_softmax(scores, allowed)
        heads = self.dropout(weights) @ v                                                  # (B, H, T, value_dim)
        out = heads.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)
        return self.output(out), weights

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        tensors, mask = _split_inputs(inputs, "MultiHeadAttention")
        query = tensors[0]
        value = tensors[1] if len(tensors) > 1 else query
        key = tensors[2] if len(tensors) > 2 else None
        out, weights = self.attend(query, value, key, mask)
        return [out, weights] if self.return_scores else out


class TransformerBlock(nn.Module):
    """One Transformer encoder layer, post-LayerNorm (Vaswani et al., 2017; BERT's layout)::

        h = LayerNorm(x + dropout(MultiHeadAttention(x, x, x, mask)))
        out = LayerNorm(h + dropout(W_2 act(W_1 h + b_1) + b_2))

    Initialisation: Glorot-uniform kernels (Keras'), or a normal of std ``init_std`` truncated at 2 std
    (BERT's ``initializer_range``) when given; biases 0.

    Args:
        hidden_size: ``H``, the input and output width; a multiple of ``num_heads`` (heads of ``H / num_heads``).
        num_heads: attention heads.
        intermediate_size: width of the feed-forward layer.
        hidden_act: its activation name.
        hidden_dropout_prob: dropout on the attention and feed-forward outputs.
        attention_probs_dropout_prob: dropout on the attention weights.
        eps: LayerNorm epsilon (1e-6: EasyRec's TransformerBlock; BERT uses 1e-12).
        init_std: see Initialisation.
        causal: position ``t`` attends to positions ``s <= t`` only (SASRec's left-to-right model).

    Shapes:
        ``x`` ``(B, L, H)`` or ``[x, mask]`` (lengths ``(B,)`` or ``(B, L)``) → ``(B, L, H)``.
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, hidden_act: str = "relu",
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.0, eps: float = 1e-6,
                 init_std: float | None = None, causal: bool = False) -> None:
        super().__init__()
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"TransformerBlock: hidden_size {hidden_size} is not a multiple of num_attention_heads "
                             f"{num_heads}")
        self.attention = MultiHeadAttention(hidden_size, num_heads, hidden_size // num_heads,
                                            dropout=attention_probs_dropout_prob, use_causal_mask=causal)
        self.dropout1 = nn.Dropout(hidden_dropout_prob)
        self.norm1 = nn.LayerNorm(hidden_size, eps=eps)
        self.intermediate = init_linear(nn.Linear(hidden_size, intermediate_size), "xavier_uniform")
        self.activation = get_activation(hidden_act, intermediate_size)
        self.project = init_linear(nn.Linear(intermediate_size, hidden_size), "xavier_uniform")
        self.dropout2 = nn.Dropout(hidden_dropout_prob)
        self.norm2 = nn.LayerNorm(hidden_size, eps=eps)
        if init_std is not None:
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    truncated_normal_(module.weight.data, init_std)
        self.output_dim = hidden_size

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, H)`` → ``(B, L, H)``; ``mask``: the real positions (lengths or ``(B, L)``), ``None``: all."""
        attended, _ = self.attention.attend(x, x, None, mask)
        h = self.norm1(x + self.dropout1(attended))
        return self.norm2(h + self.dropout2(self.project(self.activation(self.intermediate(h)))))

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        tensors, mask = _split_inputs(inputs, "TransformerBlock")
        if len(tensors) != 1:
            raise ValueError(f"TransformerBlock takes x or [x, mask], got {len(tensors)} sequences")
        return self.encode(tensors[0], mask)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """``(length, width)``: ``[sin(p / 10000^(i / (W/2))), cos(...)]`` for ``i < W/2`` (sines first, then cosines,
    as EasyRec's TransformerEncoder; ``width`` even)."""
    half = width // 2
    positions = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    rates = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = positions * rates
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


class TransformerEncoder(nn.Module):
    """A Transformer encoder over token ids: ``x = sqrt(H) · Embedding(ids) + sinusoidal positions``, dropout, then
    ``num_layers`` :class:`TransformerBlock` layers.

    Initialisation: the token table U(±0.05) (Keras' Embedding), the layers as :class:`TransformerBlock`.

    Args:
        vocab_size: token ids are in ``[0, vocab_size)``.
        hidden_size: ``H`` (even).
        num_layers: Transformer layers.
        num_heads, intermediate_size, hidden_act, hidden_dropout_prob, attention_probs_dropout_prob: of each layer.
        max_position_embeddings: longest sequence; longer ones are cut to their first positions.
        output_all_token_embeddings: output every position, else the first (a ``[CLS]`` token's).
        use_position_embeddings: add the sinusoidal positions.

    Shapes:
        ids ``(B, L)`` (int64) or ``[ids, mask]`` (lengths ``(B,)`` or ``(B, L)``) → ``(B, min(L, max), H)``,
        or ``(B, H)`` when not ``output_all_token_embeddings``.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                 hidden_act: str = "relu", hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.0,
                 max_position_embeddings: int = 512, output_all_token_embeddings: bool = True,
                 use_position_embeddings: bool = True) -> None:
        super().__init__()
        if hidden_size % 2 or vocab_size < 1 or num_layers < 1:
            raise ValueError(f"TransformerEncoder needs an even hidden_size, vocab_size >= 1 and num_hidden_layers "
                             f">= 1, got {hidden_size}, {vocab_size}, {num_layers}")
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        self.scale = math.sqrt(hidden_size)
        self.max_len = max_position_embeddings
        positions = sinusoidal_positions(max_position_embeddings, hidden_size)
        self.register_buffer("positions", positions if use_position_embeddings else torch.zeros_like(positions),
                             persistent=False)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.layers = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, intermediate_size, hidden_act, hidden_dropout_prob,
                             attention_probs_dropout_prob) for _ in range(num_layers))
        self.output_all = output_all_token_embeddings
        self.output_dim = hidden_size

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        ids, mask = (inputs, None) if isinstance(inputs, torch.Tensor) else (inputs[0], inputs[1])
        ids = ids[:, :self.max_len]
        if mask is not None and mask.dim() == 2:
            mask = mask[:, :self.max_len]
        x = self.embedding(ids) * self.scale + self.positions[:ids.shape[1]]
        x = self.dropout(x)
        for layer in self.layers:
            x = layer.encode(x, mask)
        return x if self.output_all else x[:, 0]


class BST(nn.Module):
    """Behavior Sequence Transformer (Chen et al., "Behavior Sequence Transformer for E-commerce Recommendation in
    Alibaba", 2019, https://arxiv.org/abs/1905.06874), as EasyRec's BST component.

    The sequence (projected to ``H`` by ``relu(W x)`` when ``D != H``) gets the target item as one more token, at the
    head or the tail (``target_item_position``; ``"ignore"`` leaves it out); learned position embeddings are added,
    then LayerNorm and dropout, then ``num_hidden_layers`` :class:`TransformerBlock` layers over the real positions
    (the target token is always real). With ``reserve_target_position`` and no target token, a zero token
    holds its place, so the output keeps its width.

    Output: every position (``output_all_token_embeddings``; the sequence is then padded or cut to
    ``max_position_embeddings`` so that the width is fixed: ``(max + 1) * H`` with a target / reserved token),
    else the target's position (the first for ``"head"``, the last otherwise).

    Initialisation: BERT's: every kernel and the position table N(0, ``initializer_range``) truncated at 2 std,
    biases 0; LayerNorm epsilon 1e-12.

    Args:
        seq_dim: ``D``.
        target_dim: the target item's width (must be ``D``), or ``None`` when the input has no target.
        hidden_size: ``H``, a multiple of ``num_attention_heads``.
        num_hidden_layers, num_attention_heads, intermediate_size, hidden_act, hidden_dropout_prob,
        attention_probs_dropout_prob: of the Transformer layers.
        max_position_embeddings: longest sequence; longer ones are cut to their first positions.
        use_position_embeddings: add the position embeddings.
        initializer_range: see Initialisation.
        output_all_token_embeddings, target_item_position, reserve_target_position: see above.

    Shapes:
        ``[seq (B, L, D), lengths (B,)]`` or ``[seq, lengths, target (B, D)]`` → ``(B, (max [+ 1]) * H)`` or
        ``(B, H)``.
    """

    def __init__(self, seq_dim: int, target_dim: int | None, hidden_size: int, num_hidden_layers: int,
                 num_attention_heads: int, intermediate_size: int, hidden_act: str = "gelu",
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1,
                 max_position_embeddings: int = 512, use_position_embeddings: bool = True,
                 initializer_range: float = 0.02, output_all_token_embeddings: bool = True,
                 target_item_position: str = "head", reserve_target_position: bool = True) -> None:
        super().__init__()
        if target_item_position not in ("head", "tail", "ignore"):
            raise ValueError(f"BST: target_item_position must be head, tail or ignore, got {target_item_position!r}")
        self.keep_target = target_dim is not None and target_item_position != "ignore"
        if self.keep_target and target_dim != seq_dim:
            raise ValueError(f"BST: the target item's width {target_dim} differs from the sequence's {seq_dim}")
        if num_hidden_layers < 1:
            raise ValueError(f"BST: num_hidden_layers must be >= 1, got {num_hidden_layers}")

        def projection() -> nn.Module:
            if seq_dim == hidden_size:
                return nn.Identity()
            linear = nn.Linear(seq_dim, hidden_size)
            truncated_normal_(linear.weight.data, initializer_range)
            nn.init.zeros_(linear.bias)
            return nn.Sequential(linear, nn.ReLU())

        self.seq_project = projection()
        self.target_project = projection() if self.keep_target else None
        self.extra = 1 if self.keep_target or reserve_target_position else 0
        self.head = target_item_position == "head"
        self.max_len, self.hidden_size = max_position_embeddings, hidden_size
        table = truncated_normal_(torch.empty(max_position_embeddings + self.extra, hidden_size), initializer_range)
        self.positions = nn.Parameter(table) if use_position_embeddings else None
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.layers = nn.ModuleList(
            TransformerBlock(hidden_size, num_attention_heads, intermediate_size, hidden_act, hidden_dropout_prob,
                             attention_probs_dropout_prob, eps=1e-12, init_std=initializer_range)
            for _ in range(num_hidden_layers))
        self.output_all = output_all_token_embeddings
        self.output_dim = (max_position_embeddings + self.extra) * hidden_size if output_all_token_embeddings \
            else hidden_size

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        seq, lengths = inputs[0][:, :self.max_len], inputs[1]
        mask = lengths_to_mask(lengths, seq.shape[1])                                # (B, L)
        if self.output_all:  # pad to the fixed length (zero padding when L == max)
            pad = self.max_len - seq.shape[1]
            seq = F.pad(seq, (0, 0, 0, pad))
            mask = F.pad(mask, (0, pad))
        x = self.seq_project(seq)
        if self.extra:
            if self.target_project is not None:
                token = self.target_project(inputs[2]).unsqueeze(1)
            else:
                token = x.new_zeros(x.shape[0], 1, self.hidden_size)
            real = torch.ones_like(mask[:, :1])
            x = torch.cat([token, x] if self.head else [x, token], dim=1)
            mask = torch.cat([real, mask] if self.head else [mask, real], dim=1)
        if self.positions is not None:
            x = x + self.positions[:x.shape[1]]
        x = self.dropout(self.norm(x))
        for layer in self.layers:
            x = layer.encode(x, mask)
        if self.output_all:
            return x.flatten(1)
        return x[:, 0] if self.head else x[:, -1]


class DINEncoder(nn.Module):
    """DIN's target attention as EasyRec's ``DIN`` component (Zhou et al., KDD 2018,
    https://arxiv.org/abs/1706.06978).

    Scores ``a_j = MLP([q, k_j, q - k_j, q * k_j])`` for the target item ``q`` (zero-padded to the
    sequence's width when narrower) and each behaviour ``k_j``, computed on the real positions only
    (:class:`recstack.layers.attention.LocalActivationUnit`); weights ``softmax(a)`` over the real positions,
    or ``sigmoid(a / sqrt(D))``; the output is ``sum_j w_j k_j`` (the first ``D_t`` dimensions of each
    behaviour), followed by ``q`` with ``need_target_feature``.

    Args:
        seq_dim: ``D``.
        target_dim: ``D_t <= D``.
        unit: the scoring unit, built for width ``D``.
        attention_normalizer: ``"softmax"`` or ``"sigmoid"``.
        need_target_feature: append the target item to the output.

    Shapes:
        ``[seq (B, L, D), lengths (B,), target (B, D_t)]`` → ``(B, 2 D_t)`` (``(B, D_t)`` without the target).
    """

    def __init__(self, seq_dim: int, target_dim: int, unit: LocalActivationUnit, attention_normalizer: str = "softmax",
                 need_target_feature: bool = True) -> None:
        super().__init__()
        if attention_normalizer not in ("softmax", "sigmoid"):
            raise ValueError(f"DIN: attention_normalizer must be softmax or sigmoid, got {attention_normalizer!r}")
        if target_dim > seq_dim:
            raise ValueError(f"DIN: the target item's width {target_dim} exceeds the sequence's {seq_dim}")
        self.unit = unit
        self.seq_dim, self.target_dim = seq_dim, target_dim
        self.softmax = attention_normalizer == "softmax"
        self.need_target = need_target_feature
        self.output_dim = 2 * target_dim if need_target_feature else target_dim

    def weights(self, seq: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The attention weights ``(B, L)``, 0 at padded positions."""
        mask = lengths_to_mask(lengths, seq.shape[1])
        query = F.pad(target, (0, self.seq_dim - self.target_dim))
        scores = self.unit(query, seq, mask)
        if self.softmax:
            return masked_softmax(scores, mask)
        return torch.sigmoid(scores / math.sqrt(self.seq_dim)) * mask.to(scores.dtype)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        seq, lengths, target = inputs[0], inputs[1], inputs[2]
        weights = self.weights(seq, lengths, target)
        pooled = (weights.unsqueeze(-1) * seq[..., :self.target_dim]).sum(dim=1)
        return torch.cat([pooled, target], dim=-1) if self.need_target else pooled

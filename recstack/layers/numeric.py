"""Embeddings of numeric features: periodic (sin/cos) embeddings and AutoDis' soft discretisation.

Both take the ``N`` numeric features of a group as one ``(B, N)`` tensor and give each feature its own
``D``-wide vector. Their output is the flattened ``(B, N * D)``; EasyRec's ``output_tensor_list`` /
``output_3d_tensor`` add the per-feature vectors as a second output: ``[flat, [e_1, ..., e_N]]`` or
``[flat, (B, N, D)]``, so that a backbone block can feed the flat tensor to an MLP and the vectors to an
interaction layer (``input_slice: '[1]'``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recstack.layers.activation import get_activation
from recstack.layers.multitask import _GroupedLayer


def _outputs(emb: torch.Tensor, output_tensor_list: bool, output_3d_tensor: bool) -> torch.Tensor | list:
    """The flat ``(B, N * D)`` embedding, with the per-feature vectors when asked for."""
    flat = emb.flatten(1)
    if output_tensor_list:
        return [flat, list(emb.unbind(dim=1))]
    if output_3d_tensor:
        return [flat, emb]
    return flat


class PeriodicEmbedding(nn.Module):
    """Periodic embeddings of numeric features (Gorishniy, Rubachev, Babenko, "On Embeddings for Numerical
    Features in Tabular Deep Learning", NeurIPS 2022, https://arxiv.org/abs/2203.05556, "PLR").

    ``v_i = 2π c_i x_i`` with ``D / 2`` learned frequencies ``c_i`` per feature, ``e_i = [sin v_i, cos v_i]``;
    with ``add_linear_layer`` each feature's ``e_i`` then goes through its own Linear ``D → D`` and
    ``linear_activation``.

    Initialisation: ``c ~ N(0, sigma)`` (``sigma`` matters a lot and has no good default: the paper tunes it
    on a log scale in [0.01, 100]); the per-feature Linears Glorot-uniform, biases 0.

    Args:
        num_features: ``N``.
        embedding_dim: ``D``, even.
        sigma: std of the frequencies' initialisation.
        add_linear_layer: the per-feature Linear + activation.
        linear_activation: its activation name.
        output_tensor_list, output_3d_tensor: see the module docstring.

    Shapes:
        ``(B, N)`` → ``(B, N * D)`` (and the per-feature vectors, see the module docstring).
    """

    def __init__(self, num_features: int, embedding_dim: int, sigma: float, add_linear_layer: bool = True,
                 linear_activation: str = "relu", output_tensor_list: bool = False,
                 output_3d_tensor: bool = False) -> None:
        super().__init__()
        if embedding_dim < 2 or embedding_dim % 2:
            raise ValueError(f"PeriodicEmbedding: embedding_dim must be even and positive, got {embedding_dim}")
        if sigma <= 0:
            raise ValueError(f"PeriodicEmbedding: sigma must be > 0, got {sigma}")
        self.coefficients = nn.Parameter(torch.randn(num_features, embedding_dim // 2) * sigma)
        self.linear = None if not add_linear_layer else _GroupedLayer(
            num_features, embedding_dim, embedding_dim, "xavier_uniform", 0.0,
            nn.Sequential(get_activation(linear_activation, num_features * embedding_dim)))
        self.output_tensor_list, self.output_3d_tensor = output_tensor_list, output_3d_tensor

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The per-feature vectors ``(B, N, D)``."""
        v = 2 * math.pi * self.coefficients * x.unsqueeze(-1)                   # (B, N, D / 2)
        emb = torch.cat([torch.sin(v), torch.cos(v)], dim=-1)
        return emb if self.linear is None else self.linear(emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list:
        return _outputs(self.embed(x), self.output_tensor_list, self.output_3d_tensor)


class AutoDisEmbedding(nn.Module):
    """AutoDis: soft discretisation of numeric features (Guo et al., "An Embedding Learning Framework for
    Numerical Features in CTR Prediction", KDD 2021, https://arxiv.org/abs/2012.08986).

    Per feature ``i`` with ``K`` meta-embeddings ``E_i`` ``(K, D)``::

        h_i = leaky_relu(w_i x_i)                  (K,)   w_i: (K,), leaky slope 0.2 (TensorFlow's)
        s_i = W_i h_i + keep_prob * h_i            (K,)   W_i: (K, K), a skip connection weighted by keep_prob
        e_i = softmax(s_i / temperature) E_i       (D,)

    Initialisation: Glorot-uniform on each feature's ``w_i``, ``W_i`` and ``E_i`` (their own fans).

    Args:
        num_features: ``N``.
        embedding_dim: ``D``.
        num_bins: ``K``.
        keep_prob: weight of the skip connection.
        temperature: softmax temperature (> 0).
        output_tensor_list, output_3d_tensor: see the module docstring.

    Shapes:
        ``(B, N)`` → ``(B, N * D)`` (and the per-feature vectors, see the module docstring).
    """

    def __init__(self, num_features: int, embedding_dim: int, num_bins: int, keep_prob: float = 0.8,
                 temperature: float = 1.0, output_tensor_list: bool = False, output_3d_tensor: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"AutoDisEmbedding: temperature must be > 0, got {temperature}")
        if num_bins < 1 or embedding_dim < 1:
            raise ValueError(f"AutoDisEmbedding: num_bins and embedding_dim must be >= 1, got {num_bins} and "
                             f"{embedding_dim}")

        def glorot(rows: int, cols: int) -> torch.Tensor:
            tensor = torch.empty(num_features, rows, cols)
            for matrix in tensor:
                nn.init.xavier_uniform_(matrix)
            return tensor

        self.project_w = nn.Parameter(glorot(1, num_bins).squeeze(1))               # (N, K)
        self.project_mat = nn.Parameter(glorot(num_bins, num_bins))                 # (N, K, K): s = W h
        self.meta_embedding = nn.Parameter(glorot(num_bins, embedding_dim))         # (N, K, D)
        self.keep_prob, self.temperature = keep_prob, temperature
        self.output_tensor_list, self.output_3d_tensor = output_tensor_list, output_3d_tensor

    def bin_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The soft bin assignment ``softmax(s / temperature)`` ``(B, N, K)``."""
        hidden = nn.functional.leaky_relu(self.project_w * x.unsqueeze(-1), negative_slope=0.2)
        scores = torch.einsum("nik,bnk->bni", self.project_mat, hidden) + self.keep_prob * hidden
        return torch.softmax(scores / self.temperature, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list:
        emb = torch.einsum("bnk,nkd->bnd", self.bin_weights(x), self.meta_embedding)
        return _outputs(emb, self.output_tensor_list, self.output_3d_tensor)

"""BST: Behavior Sequence Transformer for E-commerce Recommendation in Alibaba.

Chen, Zhao, Li, Huang, Ou. DLP-KDD 2019. https://arxiv.org/abs/1905.06874

Each behaviour ``v_j`` and the candidate ``v_t`` (appended as the sequence's last token) are embedded as
``e_j = [E_item(v_j), E_cat(v_j), E_pos(pos_j)]`` (``D = d_model`` wide; ``pos_j`` the position feature, the
time gap to the impression in PaddleRec's data, the reverse index for DIN's). Transformer layers (the paper's,
post-LayerNorm, with its LeakyReLU feed-forward) encode the sequence, attending to the real tokens only::

    S' = LayerNorm(S + Dropout(MH(S)))                    MH: softmax(Q K^T / sqrt(d_head) + mask) V per head
    F  = LayerNorm(S' + Dropout(LeakyReLU(S' W1 + b1) W2 + b2))

then ``y = sigmoid(MLP([F_t, mean_j F_j]))``, ``F_t`` the candidate's output and ``mean_j F_j`` the mean of
the behaviours' outputs over the real positions (the paper concatenates all outputs of a fixed-length
sequence; a mean keeps any length; README), the MLP with LeakyReLU hidden layers (the paper: 1024-512-256).

Padded behaviours are masked as keys, the candidate is always a real token (an empty history still
attends to it) and the mean skips padding, so a sample's prediction does not depend on its batch's padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.layers import MLP, TransformerBlock, lengths_to_mask, make_embedding, masked_pool


class BST(nn.Module):
    """Behavior Sequence Transformer over item / category / position behaviour sequences.

    One table each for items, categories and positions serves the history and the candidate (PaddleRec's
    BST creates separate tables per use).

    Initialisation: the three tables truncated normal with std ``init_std``; the Transformer layers'
    Linears truncated normal with std ``transformer_init_std`` (BERT's ``initializer_range``), LayerNorms 1 / 0;
    the output MLP's Linears N(0, 1/sqrt(fan_in)) with zero biases (PaddleRec's rank models).

    Args:
        item_count: rows of the item table (ids ``0 .. item_count - 1``).
        cat_count: rows of the category table.
        position_count: rows of the position table.
        item_emb_size, cat_emb_size, position_emb_size: table widths; ``d_model`` is their sum.
        n_encoder_layers: Transformer layers.
        n_head: attention heads (each ``d_model / n_head`` wide).
        d_inner_hid: width of the feed-forward layer.
        dropout_rate: dropout on the attention weights.
        prepostprocess_dropout: dropout on the attention and feed-forward outputs before each residual sum.
        act: hidden activation of the output MLP (``leaky_relu``, the paper's).
        fc_sizes: hidden widths of the output MLP.
        init_std: std of the embedding tables.
        transformer_init_std: std of the Transformer layers' Linears.

    Shapes:
        hist_item, hist_cat, hist_pos ``(B, L)`` int64 (padded; ``L`` the batch's longest history),
        hist_len ``(B, 1)`` int64, target_item, target_cat, target_pos ``(B, 1)`` int64 → probability ``(B, 1)``.
    """

    def __init__(self, item_count: int, cat_count: int, position_count: int, item_emb_size: int = 96,
                 cat_emb_size: int = 96, position_emb_size: int = 96, n_encoder_layers: int = 1, n_head: int = 6,
                 d_inner_hid: int = 512, dropout_rate: float = 0.2, prepostprocess_dropout: float = 0.2,
                 act: str = "leaky_relu", fc_sizes: Sequence[int] = (1024, 512, 256), init_std: float = 0.1,
                 transformer_init_std: float = 0.02) -> None:
        super().__init__()
        self.item_embedding = make_embedding(item_count, item_emb_size, init_std)
        self.cat_embedding = make_embedding(cat_count, cat_emb_size, init_std)
        self.position_embedding = make_embedding(position_count, position_emb_size, init_std)
        d_model = item_emb_size + cat_emb_size + position_emb_size
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, n_head, d_inner_hid, hidden_act="leaky_relu",
                             hidden_dropout_prob=prepostprocess_dropout, attention_probs_dropout_prob=dropout_rate,
                             eps=1e-5, init_std=transformer_init_std)
            for _ in range(n_encoder_layers))
        self.mlp = MLP(2 * d_model, fc_sizes, output_dim=1, activation=act, init="normal")

    def embed(self, items: torch.Tensor, cats: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Item, category and position embeddings, concatenated: ``(B, L)`` → ``(B, L, d_model)``."""
        return torch.cat([self.item_embedding(items), self.cat_embedding(cats), self.position_embedding(positions)],
                         dim=-1)

    def forward(self, hist_item: torch.Tensor, hist_cat: torch.Tensor, hist_pos: torch.Tensor,
                hist_len: torch.Tensor, target_item: torch.Tensor, target_cat: torch.Tensor,
                target_pos: torch.Tensor) -> torch.Tensor:
        history_mask = lengths_to_mask(hist_len, hist_item.shape[1])                      # (B, L)
        sequence = torch.cat([self.embed(hist_item, hist_cat, hist_pos),
                              self.embed(target_item, target_cat, target_pos)], dim=1)  # (B, L + 1, D)
        real = history_mask.new_ones((history_mask.shape[0], 1))                          # the candidate
        mask = torch.cat([history_mask, real], dim=1)                                    # (B, L + 1)
        for layer in self.layers:
            sequence = layer.encode(sequence, mask)
        features = torch.cat([sequence[:, -1], masked_pool(sequence[:, :-1], history_mask, "mean")], dim=-1)
        return torch.sigmoid(self.mlp(features))

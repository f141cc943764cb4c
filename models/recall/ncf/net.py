"""NCF: Neural Collaborative Filtering (NeuMF).

He, Liao, Zhang, Nie, Hu, Chua. "Neural Collaborative Filtering", WWW 2017. https://arxiv.org/abs/1708.05031

``y(u, i) = h^T [p_u ⊙ q_i ; MLP([p'_u ; q'_i])]``: generalised matrix factorisation (GMF) and an MLP over the
concatenated embeddings, fused by one output layer. The score of a pair is a network, not a dot product: NCF
ranks the corpus by running the network over every (user, item) pair (exact, chunked), and its export carries
that scoring network (no nearest-neighbour index applies). Trained pointwise (BCE with sampled negatives,
the paper's 4 per positive). The user side here is the user group's embeddings (the user id and its
features, as the paper's "user embedding" generalised), projected to the GMF and MLP widths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from recstack.easyrec.features import TabularSpec
from recstack.layers import MLP
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RetrievalNet, Roles
from recstack.retrieval.towers import ItemFeatures, UserFeatures


class NCF(RetrievalNet):
    """NeuMF over a user vector ``[p_u ; p'_u]`` and an item vector ``[q_i ; q'_i]`` (the item-id embedding).

    Args:
        spec: the interaction table's features.
        corpus: the item corpus (its group: the item id, ``embedding_dim`` = ``gmf_dim`` + the MLP's item part).
        roles: the interaction batch keys.
        gmf_dim: width of the GMF factors.
        mlp: the MLP's widths; its input is ``[p'_u ; q'_i]``, ``q'_i`` the item vector past ``gmf_dim``.
        chunk: item rows scored at a time (the MLP runs over ``B x chunk`` pairs).

    Shapes:
        user tower -> ``(B, gmf_dim + m)``; item tower -> ``(R, gmf_dim + m)``; ``score`` ``(B, R)``.
    """

    dot_product = False  # the score is a network: no nearest-neighbour index

    def __init__(self, spec: TabularSpec, corpus: ItemCorpus, roles: Roles, gmf_dim: int, mlp: Sequence[int],
                 chunk: int = 512) -> None:
        user = UserFeatures(spec, roles.user_groups)
        super().__init__(corpus, roles, user.input_names, "inner_product")
        self.user_features = user
        self.items = ItemFeatures(corpus)
        width = self.items.output_dim
        if width <= gmf_dim:
            raise ValueError(f"the item embedding ({width}) must be wider than gmf_dim ({gmf_dim}): the rest is the "
                             "MLP's item part")
        self.gmf_dim, self.mlp_item = gmf_dim, width - gmf_dim
        self.user_projection = nn.Linear(user.output_dim, width)
        self.mlp = MLP(2 * self.mlp_item, list(mlp), init="xavier_uniform")
        self.output = nn.Linear(gmf_dim + self.mlp.output_dim, 1)
        self.chunk = chunk

    def item_tower(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.items(*inputs)

    def user_tower(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.user_projection(self.user_features(batch))

    def _pairs(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``user (..., W)`` and ``items (..., W)`` broadcast to one shape -> logits ``(...)``."""
        user, items = torch.broadcast_tensors(user, items)
        gmf = user[..., :self.gmf_dim] * items[..., :self.gmf_dim]
        deep = self.mlp(torch.cat([user[..., self.gmf_dim:], items[..., self.gmf_dim:]], -1)
                        .reshape(-1, 2 * self.mlp_item)).reshape(*gmf.shape[:-1], -1)
        return self.output(torch.cat([gmf, deep], -1)).squeeze(-1)

    def score(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._pairs(user.unsqueeze(1), items[i:i + self.chunk].unsqueeze(0))
                          for i in range(0, len(items), self.chunk)], dim=1)

    def score_pairs(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self._pairs(user.unsqueeze(1), items)

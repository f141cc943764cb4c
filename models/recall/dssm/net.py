"""DSSM for recommendation retrieval: two towers, a user vector and an item vector, scored by their similarity.

Huang, He, Gao, Deng, Acero, Heck. "Learning Deep Structured Semantic Models for Web Search using Clickthrough
Data", CIKM 2013 (the two-tower structure); as a recommender's retrieval model in EasyRec's and torch-rechub's
``DSSM``: ``u = MLP_u([user features, mean of the history's item embeddings])``,
``v = MLP_v([item id, genres, year embeddings])``, ``s(u, v) = cos(u, v) / temperature``, trained with in-batch
negatives and the log-Q correction (Yi et al., RecSys 2019; ``hyper_parameters.loss``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from recstack.easyrec.features import TabularSpec
from recstack.layers import MLP
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RetrievalNet, Roles
from recstack.retrieval.towers import ItemFeatures, UserFeatures, features_and_history


class DSSM(RetrievalNet):
    """User tower and item tower, each an MLP ending in ``embedding_dim`` units (no activation on the last).

    Args:
        spec: the interaction table's features (user groups embedded here).
        corpus: the item corpus.
        roles: the interaction batch keys.
        user_mlp, item_mlp: hidden widths of the towers; their last entry is the vector's dimension.
        similarity: ``cosine`` (the default here) or ``inner_product``.

    Shapes:
        user tower: the user groups' keys and the history's ``(B, L)`` ids and ``(B, 1)`` lengths ->
        ``(B, D)``; item tower: the item table's keys -> ``(R, D)``.
    """

    def __init__(self, spec: TabularSpec, corpus: ItemCorpus, roles: Roles, user_mlp: Sequence[int],
                 item_mlp: Sequence[int], similarity: str = "cosine") -> None:
        self_user = UserFeatures(spec, roles.user_groups)
        history = [roles.history["ids"], roles.history["lengths"]] if roles.history else []
        super().__init__(corpus, roles, self_user.input_names + history, similarity)
        self.user_features = self_user
        self.items = ItemFeatures(corpus)
        user_in = self_user.output_dim + (self.items.id_dim if roles.history else 0)
        self.user_mlp = MLP(user_in, list(user_mlp)[:-1], output_dim=user_mlp[-1], init="xavier_uniform")
        self.item_mlp = MLP(self.items.output_dim, list(item_mlp)[:-1], output_dim=item_mlp[-1],
                            init="xavier_uniform")

    def item_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.items.ids(ids)

    def user_tower(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.user_mlp(features_and_history(self.user_features, self, batch))

    def item_tower(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.item_mlp(self.items(*inputs))

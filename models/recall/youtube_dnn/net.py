"""YouTube DNN candidate generation: a user MLP against item embeddings, trained as extreme classification.

Covington, Adams, Sargin. "Deep Neural Networks for YouTube Recommendations", RecSys 2016.
https://doi.org/10.1145/2959100.2959190

``u = MLP([user features, mean of the watch history's item embeddings])`` (ReLU layers, the last linear),
``P(next = i | u) = softmax_i(<u, v_i>)`` over the corpus with ``v_i`` the item's embedding, the same table the
history is embedded with. Trained with a sampled softmax (popularity negatives, log-Q correction;
``hyper_parameters.loss``), served by nearest-neighbour search on ``<u, v>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from recstack.easyrec.features import TabularSpec
from recstack.layers import MLP
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RetrievalNet, Roles
from recstack.retrieval.towers import ItemFeatures, UserFeatures, features_and_history


class YouTubeDNN(RetrievalNet):
    """User MLP (ending in the item embedding's width) and the item-id embedding.

    Args:
        spec: the interaction table's features.
        corpus: the item corpus (its group: the item id; its ``embedding_dim`` is the vectors' ``D``).
        roles: the interaction batch keys.
        user_mlp: hidden widths of the user tower; the last must equal the item embedding's ``D``.

    Shapes:
        user tower -> ``(B, D)``; item tower: the item-id key ``(R, 1)`` -> ``(R, D)``.
    """

    def __init__(self, spec: TabularSpec, corpus: ItemCorpus, roles: Roles, user_mlp: Sequence[int]) -> None:
        user = UserFeatures(spec, roles.user_groups)
        history = [roles.history["ids"], roles.history["lengths"]] if roles.history else []
        super().__init__(corpus, roles, user.input_names + history, "inner_product")
        self.user_features = user
        self.items = ItemFeatures(corpus)
        if self.items.output_dim != user_mlp[-1]:
            raise ValueError(f"user_mlp ends in {user_mlp[-1]} units; the item vectors are {self.items.output_dim} "
                             "wide (the item table's group: the item-id embedding)")
        width = user.output_dim + (self.items.id_dim if roles.history else 0)
        self.user_mlp = MLP(width, list(user_mlp)[:-1], output_dim=user_mlp[-1], init="xavier_uniform")

    def item_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.items.ids(ids)

    def user_tower(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.user_mlp(features_and_history(self.user_features, self, batch))

    def item_tower(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.items(*inputs)

"""MIND: Multi-Interest Network with Dynamic Routing.

Li, Liu, Wu, Xu, Zhao, Huang, Kang, Chen, Li, Lee. "Multi-Interest Network with Dynamic Routing for
Recommendation at Tmall", CIKM 2019. https://arxiv.org/abs/1904.08030

The history's item embeddings are routed into ``K`` interest capsules (behaviour-to-interest dynamic routing,
:class:`recstack.layers.capsule.CapsuleRouting`); each capsule, concatenated with the user's other features, goes
through a ReLU MLP: ``K`` interest vectors ``u_k``. Training scores the target with label-aware attention
``u = sum_k softmax_k(<u_k, v>^p) u_k`` (``p``: ``attention_power``); retrieval takes each item's best interest,
``s(u, v) = max_k <u_k, v>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from recstack.easyrec.features import TabularSpec
from recstack.layers import MLP
from recstack.layers.capsule import CapsuleRouting
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RetrievalNet, Roles
from recstack.retrieval.towers import ItemFeatures, UserFeatures


class MIND(RetrievalNet):
    """Interest capsules over the history, an MLP per interest (shared), the item-id embedding as items.

    Args:
        spec: the interaction table's features.
        corpus: the item corpus (its group: the item id; ``embedding_dim`` is ``D``).
        roles: the interaction batch keys (a history is required).
        max_len: the longest history (the history feature's ``sequence_length``).
        num_interests: ``K``.
        routing_iterations: routing rounds.
        attention_power: ``p`` of the label-aware attention.
        user_mlp: widths of the interest MLP; the last must be ``D``.
        seed: the routing logits' seed.

    Shapes:
        user tower -> ``(B, K, D)``; item tower: the item-id key ``(R, 1)`` -> ``(R, D)``.
    """

    def __init__(self, spec: TabularSpec, corpus: ItemCorpus, roles: Roles, max_len: int, num_interests: int,
                 routing_iterations: int, attention_power: float, user_mlp: Sequence[int], seed: int = 0) -> None:
        if roles.history is None:
            raise ValueError("MIND reads the history: set model_config.history")
        user = UserFeatures(spec, roles.user_groups)
        super().__init__(corpus, roles, user.input_names + [roles.history["ids"], roles.history["lengths"]],
                         "inner_product")
        self.user_features = user
        self.items = ItemFeatures(corpus)
        dim = self.items.output_dim
        if user_mlp[-1] != dim:
            raise ValueError(f"user_mlp ends in {user_mlp[-1]} units; the item vectors are {dim} wide")
        self.routing = CapsuleRouting(self.items.id_dim, dim, num_interests, max_len, routing_iterations, seed)
        self.interest_mlp = MLP(dim + user.output_dim, list(user_mlp)[:-1], output_dim=user_mlp[-1],
                                init="xavier_uniform")
        self.attention_power = attention_power
        self.max_len = max_len

    def item_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.items.ids(ids)

    def item_tower(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.items(*inputs)

    def user_tower(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = self.history(batch)
        ids, mask = ids[:, :self.max_len], mask[:, :self.max_len]
        capsules = self.routing(self.item_embedding(ids), mask)                 # (B, K, D)
        features = self.user_features(batch)
        if features is not None:
            capsules = torch.cat([capsules, features.unsqueeze(1).expand(-1, capsules.shape[1], -1)], dim=2)
        return self.interest_mlp(capsules)                                      # (B, K, D)

    def train_query(self, queries: torch.Tensor, target_vectors: torch.Tensor) -> torch.Tensor:
        """Label-aware attention: the interests weighted by ``softmax_k(<u_k, v>^p)``."""
        weights = torch.softmax((queries @ target_vectors.unsqueeze(-1)).squeeze(-1).pow(self.attention_power), 1)
        return (weights.unsqueeze(-1) * queries).sum(1)

    def score(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if user.dim() == 2:  # a label-aware query (training)
            return user @ items.T
        return (user @ items.T).amax(dim=1)                                     # (B, K, R) -> (B, R)

    def score_pairs(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if user.dim() == 2:
            return (user.unsqueeze(1) * items).sum(-1)
        return (items @ user.transpose(1, 2)).amax(dim=2)                       # (B, T, K) -> (B, T)

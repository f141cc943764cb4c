"""Most popular: every user gets the items ranked by how often they were trained on (the baseline every
retrieval model must beat).

Built as a retrieval model so that it trains, evaluates, exports and serves like the others: each item has one
learned score ``b_i`` (a one-wide item-id embedding) and every user the constant vector ``1``, so
``s(u, i) = b_i``. Trained with the full softmax over the corpus, ``b`` converges to the log frequency of the
training targets (the maximum-likelihood solution of ``softmax_i(b_i)``), i.e. to the popularity ranking.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RetrievalNet, Roles
from recstack.retrieval.towers import ItemFeatures, UserFeatures


class Popularity(RetrievalNet):
    """``s(u, i) = b_i``: a constant user vector and a one-wide item embedding.

    Args:
        spec: the interaction table's features (the user group's keys are read for their batch size only).
        corpus: the item corpus (its group: the item id with ``embedding_dim: 1``).
        roles: the interaction batch keys.

    Shapes:
        user tower -> ``(B, 1)`` ones; item tower -> ``(R, 1)``.
    """

    def __init__(self, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> None:
        user = UserFeatures(spec, roles.user_groups)
        super().__init__(corpus, roles, user.input_names[:1], "inner_product")
        self.items = ItemFeatures(corpus)
        if self.items.output_dim != 1:
            raise ValueError(f"the popularity baseline's item group is the item id with embedding_dim 1, got width "
                             f"{self.items.output_dim}")
        with torch.no_grad():
            self.items.embedding.tables[0].weight.zero_()   # start from the uniform ranking

    def user_tower(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = batch[self.user_input_names[0]]
        return torch.ones_like(x[:, :1], dtype=torch.float32)

    def item_tower(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.items(*inputs)

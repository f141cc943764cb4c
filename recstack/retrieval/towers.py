"""Pieces the retrieval networks share: the user side's feature embedding, the item side's, and history pooling.

:class:`UserFeatures` embeds the interaction table's user groups (``model_config.user_groups``: ids, tags,
raw values) as one ``(B, D_u)`` row; :class:`ItemFeatures` embeds the item table's group (``(R, D_i)``) and owns
the item-id table that history ids are looked up in (:meth:`ItemFeatures.ids`); :func:`masked_mean` pools a
history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus


class UserFeatures(nn.Module):
    """The user groups of the interaction table, concatenated: ``batch -> (B, output_dim)``.

    Attributes:
        input_names: the batch keys read, in order.
        output_dim: the width of the row.
    """

    def __init__(self, spec: TabularSpec, groups: Sequence[str]) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, list(groups)) if groups else None
        self.input_names = list(self.embedding.input_names) if self.embedding is not None else []
        self.output_dim = sum(self.embedding.output_dims.values()) if self.embedding is not None else 0

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        if self.embedding is None:
            return None
        parts = self.embedding(*[batch[k] for k in self.input_names])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class ItemFeatures(nn.Module):
    """The item table's group: ``(*item inputs) -> (R, output_dim)``, and its item-id table.

    Attributes:
        output_dim: the width of an item's row.
        id_dim: the item-id feature's ``embedding_dim``.
    """

    def __init__(self, corpus: ItemCorpus) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(corpus.spec, [corpus.group])
        self.item_feature = corpus.item_feature
        self.output_dim = self.embedding.output_dims[corpus.group]
        self.id_dim = corpus.spec.feature(corpus.item_feature).embedding_dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.embedding(*inputs)[0]

    def ids(self, ids: torch.Tensor) -> torch.Tensor:
        """``(*ids.shape, id_dim)``: the item-id table's rows (ids in the item table's id space)."""
        return self.embedding.lookup(self.item_feature, ids)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, L, D)`` values, ``(B, L)`` bool mask -> ``(B, D)`` mean over the masked steps (zeros for none)."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def features_and_history(features: UserFeatures, net: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(B, D_u [+ D_i])``: the user groups' row and, with a history, the mean of its item embeddings (the
    user-side input of DSSM's and YouTube DNN's MLPs; ``net``: a :class:`~recstack.retrieval.model.RetrievalNet`,
    whose ``history`` and ``item_embedding`` it reads)."""
    parts = []
    row = features(batch)
    if row is not None:
        parts.append(row)
    history = net.history(batch)
    if history is not None:
        ids, mask = history
        parts.append(masked_mean(net.item_embedding(ids), mask))
    return torch.cat(parts, dim=1)

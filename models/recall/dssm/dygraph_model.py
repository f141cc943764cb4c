"""DSSM training wrapper: the retrieval core's (objectives, whole-corpus evaluation); the towers' sizes here."""

from __future__ import annotations

from recstack.config import Config, ListOf, PositiveInt
from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RETRIEVAL_SCHEMA, RetrievalWrapper, Roles

from .net import DSSM


class DygraphModel(RetrievalWrapper):
    hyper_parameter_schema = {**RETRIEVAL_SCHEMA, "user_mlp": ListOf(PositiveInt), "item_mlp": ListOf(PositiveInt)}

    def build_net(self, config: Config, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> DSSM:
        user_mlp = config.get("hyper_parameters.user_mlp", type=list)
        item_mlp = config.get("hyper_parameters.item_mlp", type=list)
        if user_mlp[-1] != item_mlp[-1]:
            raise ValueError(f"{config.source('hyper_parameters.item_mlp')}: both towers end in the vector's "
                             f"dimension: user_mlp ends in {user_mlp[-1]}, item_mlp in {item_mlp[-1]}")
        return DSSM(spec, corpus, roles, user_mlp, item_mlp,
                    similarity=config.get("hyper_parameters.similarity", "cosine", type=str))

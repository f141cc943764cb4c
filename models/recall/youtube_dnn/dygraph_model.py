"""YouTube DNN training wrapper: the retrieval core's (objectives, whole-corpus evaluation); the user MLP here."""

from __future__ import annotations

from recstack.config import Config, ListOf, PositiveInt
from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RETRIEVAL_SCHEMA, RetrievalWrapper, Roles

from .net import YouTubeDNN


class DygraphModel(RetrievalWrapper):
    hyper_parameter_schema = {**RETRIEVAL_SCHEMA, "user_mlp": ListOf(PositiveInt)}

    def build_net(self, config: Config, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> YouTubeDNN:
        config.get("hyper_parameters.similarity", "inner_product", type=str)
        return YouTubeDNN(spec, corpus, roles, config.get("hyper_parameters.user_mlp", type=list))

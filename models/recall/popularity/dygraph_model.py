"""Popularity baseline wrapper: the retrieval core's (trained with the full softmax over the corpus)."""

from __future__ import annotations

from recstack.config import Config
from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RetrievalWrapper, Roles

from .net import Popularity


class DygraphModel(RetrievalWrapper):
    def build_net(self, config: Config, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> Popularity:
        config.get("hyper_parameters.similarity", "inner_product", type=str)
        return Popularity(spec, corpus, roles)

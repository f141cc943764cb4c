"""NCF training wrapper: the retrieval core's (objectives, whole-corpus evaluation); NeuMF's sizes here."""

from __future__ import annotations

from recstack.config import Config, ListOf, PositiveInt
from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RETRIEVAL_SCHEMA, RetrievalWrapper, Roles

from .net import NCF


class DygraphModel(RetrievalWrapper):
    hyper_parameter_schema = {**RETRIEVAL_SCHEMA, "gmf_dim": PositiveInt, "mlp": ListOf(PositiveInt)}

    def build_net(self, config: Config, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> NCF:
        config.get("hyper_parameters.similarity", "inner_product", type=str)
        return NCF(spec, corpus, roles, gmf_dim=config.get("hyper_parameters.gmf_dim", type=int),
                   mlp=config.get("hyper_parameters.mlp", type=list))

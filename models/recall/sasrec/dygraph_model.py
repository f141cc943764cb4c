"""SASRec training wrapper: the retrieval core's (objectives, whole-corpus evaluation); the encoder's sizes here."""

from __future__ import annotations

from recstack.config import Config, NonNegativeNumber, OneOf, PositiveInt
from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RETRIEVAL_SCHEMA, RetrievalWrapper, Roles

from .net import SASRec


class DygraphModel(RetrievalWrapper):
    hyper_parameter_schema = {**RETRIEVAL_SCHEMA, "num_blocks": PositiveInt, "num_heads": PositiveInt,
                              "dropout": NonNegativeNumber, "positions": OneOf("all", "last")}

    def build_net(self, config: Config, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> SASRec:
        history = spec.feature(config.get("hyper_parameters.model_config.history", type=str))
        config.get("hyper_parameters.similarity", "inner_product", type=str)
        return SASRec(corpus, roles, max_len=history.sequence_length,
                      num_blocks=config.get("hyper_parameters.num_blocks", 2, type=int),
                      num_heads=config.get("hyper_parameters.num_heads", 1, type=int),
                      dropout=float(config.get("hyper_parameters.dropout", 0.2)),
                      positions=config.get("hyper_parameters.positions", "all", type=str))

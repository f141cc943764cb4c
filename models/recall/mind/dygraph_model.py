"""MIND training wrapper: the retrieval core's (objectives, whole-corpus evaluation); the interests' sizes here."""

from __future__ import annotations

from recstack.config import Config, ListOf, PositiveInt, PositiveNumber
from recstack.easyrec.features import TabularSpec
from recstack.retrieval.corpus import ItemCorpus
from recstack.retrieval.model import RETRIEVAL_SCHEMA, RetrievalWrapper, Roles

from .net import MIND


class DygraphModel(RetrievalWrapper):
    hyper_parameter_schema = {**RETRIEVAL_SCHEMA, "num_interests": PositiveInt, "routing_iterations": PositiveInt,
                              "attention_power": PositiveNumber, "user_mlp": ListOf(PositiveInt)}

    def build_net(self, config: Config, spec: TabularSpec, corpus: ItemCorpus, roles: Roles) -> MIND:
        history = spec.feature(config.get("hyper_parameters.model_config.history", type=str))
        config.get("hyper_parameters.similarity", "inner_product", type=str)
        return MIND(spec, corpus, roles, max_len=history.sequence_length,
                    num_interests=config.get("hyper_parameters.num_interests", 4, type=int),
                    routing_iterations=config.get("hyper_parameters.routing_iterations", 3, type=int),
                    attention_power=float(config.get("hyper_parameters.attention_power", 2.0)),
                    user_mlp=config.get("hyper_parameters.user_mlp", type=list),
                    seed=int(config.get("runner.seed")))

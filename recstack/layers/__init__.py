"""Shared layers; a model's ``net.py`` composes these instead of copying them."""

from recstack.layers.activation import get_activation
from recstack.layers.embedding import FieldEmbedding, make_embedding
from recstack.layers.gate import EmbeddingGate, HiddenGate
from recstack.layers.interaction import (CIN, CrossNet, CrossNetMix, DotInteraction, FactorizationMachine,
                                         FieldAwareInteraction, FieldEmbeddedInteraction)
from recstack.layers.mlp import MLP
from recstack.layers.multitask import Experts, TaskGates, Towers, mix_experts

__all__ = ["get_activation", "FieldEmbedding", "make_embedding", "EmbeddingGate", "HiddenGate", "CIN", "CrossNet",
           "CrossNetMix", "DotInteraction", "FactorizationMachine", "FieldAwareInteraction",
           "FieldEmbeddedInteraction", "MLP", "Experts", "TaskGates", "Towers", "mix_experts"]

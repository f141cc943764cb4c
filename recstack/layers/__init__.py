"""Shared layers; a model's ``net.py`` composes these instead of copying them."""

from recstack.layers.activation import get_activation
from recstack.layers.attention import DINAttention, Dice, LocalActivationUnit, lengths_to_mask, masked_softmax
from recstack.layers.embedding import (FieldEmbedding, MaskedPooling, MultiValueEmbedding, make_embedding,
                                        masked_pool)
from recstack.layers.feature_embedding import FeatureEmbedding
from recstack.layers.gate import EmbeddingGate, HiddenGate, Highway
from recstack.layers.interaction import (CIN, CrossNet, CrossNetMix, DotInteraction, FactorizationMachine,
                                         FieldAwareInteraction, FieldEmbeddedInteraction)
from recstack.layers.mlp import MLP
from recstack.layers.multitask import Experts, ExtractionLayer, MLPExperts, TaskGates, Towers, mix_experts
from recstack.layers.task_tower import RelationTowers, easyrec_dnn, linear_l2
from recstack.layers.vision import MobileNetV3Large, ResNet18, build_image_model

__all__ = ["get_activation", "FieldEmbedding", "make_embedding", "MaskedPooling", "MultiValueEmbedding",
           "masked_pool", "EmbeddingGate", "HiddenGate", "CIN", "CrossNet",
           "CrossNetMix", "DotInteraction", "FactorizationMachine", "FieldAwareInteraction",
           "FieldEmbeddedInteraction", "MLP", "Experts", "ExtractionLayer", "MLPExperts", "TaskGates", "Towers",
           "mix_experts",
           "FeatureEmbedding", "RelationTowers", "easyrec_dnn", "linear_l2",
           "DINAttention", "Dice", "LocalActivationUnit", "lengths_to_mask", "masked_softmax",
           "Highway", "MobileNetV3Large", "ResNet18", "build_image_model"]

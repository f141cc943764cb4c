"""Shared layers; a model's ``net.py`` composes these instead of copying them.

Layers sit at the bottom: they import nothing from recstack but each other and :mod:`recstack.registry`
(no config, tasks, losses or optimizers). The layers built from an EasyRec-style config (feature
embedding, task towers, DBMTL) are in :mod:`recstack.easyrec`.
"""

from recstack.layers.activation import get_activation
from recstack.layers.attention import Dice, DINAttention, LocalActivationUnit, lengths_to_mask, masked_softmax
from recstack.layers.basic import Add, Concatenate, PerPosition, StackFields, stack_fields
from recstack.layers.embedding import FieldEmbedding, MaskedPooling, MultiValueEmbedding, make_embedding, masked_pool
from recstack.layers.feature_importance import FiBiNet, GateNN, MaskBlock, MaskNet, PPNet, SENet
from recstack.layers.field_inputs import FieldInputs, IndexValueFields, SlotFields
from recstack.layers.gate import (
                                        DSelectKGates,
                                        EmbeddingGate,
                                        HiddenGate,
                                        Highway,
                                        HighwayNetwork,
                                        WeightedGate,
                                        binary_codes,
                                        smooth_step,
)
from recstack.layers.interaction import (
                                        CIN,
                                        BilinearInteraction,
                                        Cross,
                                        CrossNet,
                                        CrossNetMix,
                                        DotInteraction,
                                        FactorizationMachine,
                                        FieldAwareInteraction,
                                        FieldEmbeddedInteraction,
                                        InteractingLayer,
)
from recstack.layers.mlp import MLP
from recstack.layers.multitask import (
                                        AdaptiveInformationTransfer,
                                        AITMTower,
                                        Experts,
                                        ExtractionLayer,
                                        MLPExperts,
                                        MMoE,
                                        TaskGates,
                                        Towers,
                                        mix_experts,
)
from recstack.layers.numeric import AutoDisEmbedding, PeriodicEmbedding
from recstack.layers.recurrent import AUGRU, MaskedGRU
from recstack.layers.relevance import ItemToItemRelevance, UserToItemRelevance, causal_attention_weights, match_loss
from recstack.layers.sequence import BST, DINEncoder, MultiHeadAttention, TransformerBlock, TransformerEncoder
from recstack.layers.vision import MobileNetV3Large, ResNet18, build_image_model

__all__ = ["get_activation", "FieldEmbedding", "make_embedding", "MaskedPooling", "MultiValueEmbedding",
           "masked_pool", "EmbeddingGate", "HiddenGate", "CIN", "CrossNet",
           "DSelectKGates", "binary_codes", "smooth_step",
           "CrossNetMix", "DotInteraction", "FactorizationMachine", "FieldAwareInteraction",
           "FieldEmbeddedInteraction", "MLP", "Experts", "ExtractionLayer", "MLPExperts", "TaskGates", "Towers",
           "mix_experts",
           "FieldInputs", "IndexValueFields", "SlotFields",
           "DINAttention", "Dice", "LocalActivationUnit", "lengths_to_mask", "masked_softmax",
           "Highway", "MobileNetV3Large", "ResNet18", "build_image_model",
           "Add", "Concatenate", "PerPosition", "StackFields", "stack_fields",
           "SENet", "FiBiNet", "GateNN", "MaskBlock", "MaskNet", "PPNet", "HighwayNetwork", "WeightedGate",
           "BilinearInteraction", "Cross", "MMoE", "AITMTower", "AutoDisEmbedding", "PeriodicEmbedding",
           "AdaptiveInformationTransfer",
           "AUGRU", "MaskedGRU", "BST", "DINEncoder", "MultiHeadAttention", "TransformerBlock", "TransformerEncoder",
           "InteractingLayer",
           "ItemToItemRelevance", "UserToItemRelevance", "causal_attention_weights", "match_loss"]

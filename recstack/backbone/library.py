"""The built-in backbone components: one builder per EasyRec class name, over the layers of :mod:`recstack.layers`.

Each builder reads its block's parameters under EasyRec's names and defaults (the ``keras_layer``'s parameter
message, e.g. ``senet: {reduction_ratio: 4}``, or ``st_params``) and the shape of the block's input, and returns
a plain ``nn.Module``; the engine calls :meth:`Params.finish` afterwards, so a parameter no builder reads is an
error naming it. A builder finishes the sub-messages it reads itself (``FiBiNet.senet``, ``MMoE.expert_mlp``).

Inputs, by the shapes the builders accept (without the batch axis):

* a tensor ``(D,)`` (``(..., D)`` for the per-position ones): ``MLP``, ``Highway``, ``Dense``,
  ``LayerNormalization``, ``BatchNormalization``, ``Dropout``, ``MaskNet``, ``MMoE`` (with ``expert_mlp``);
  the numeric features ``(N,)``: ``PeriodicEmbedding``, ``AutoDisEmbedding``;
* a feature list ``[(D_1,), (D_2,), ...]`` or a ``(F, D)`` tensor: ``SENet``, ``FM``, ``DotInteraction``,
  ``CIN``, ``BiLinear``, ``FiBiNet``;
* a sequence list ``[(L, D), (), (D_t,)]`` (the ``output_seq_and_normal_feature`` input layer: sequence,
  lengths, target item): ``DIN``, ``BST``; ``(L, D)`` tensors and a mask for ``MultiHeadAttention`` and
  ``TransformerBlock``; token ids ``(L,)`` and a mask for ``TransformerEncoder``;
* a pair: ``Cross`` (``[x0, x]``), ``MaskBlock`` (``[x, mask_input]``), ``PPNet`` (``[x, personal features]``);
  other lists: ``Add``, ``Concatenate``, ``Gate`` (``[weights, x_1, ...]``), ``AITMTower`` (``[this tower,
  dependencies...]``), ``MMoE`` without ``expert_mlp`` (``[expert_1, ..., expert_E, gate input]``).

``MMoE`` returns a list of ``num_task`` tensors; the numeric embeddings return ``[flat, per-feature vectors]``
with ``output_tensor_list`` / ``output_3d_tensor``; ``MultiHeadAttention`` ``[output, weights]`` with
``return_attention_scores``. A list given where a tensor is expected (or the reverse) is a
:class:`~recstack.config.ConfigError` naming the block's parameters and the shapes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from recstack.backbone.components import InputShape, Params, Shape, component, feature_dims, tensor_shape
from recstack.config import ConfigError
from recstack.easyrec.schema import source
from recstack.layers.activation import get_activation
from recstack.layers.attention import LocalActivationUnit
from recstack.layers.basic import Add, Concatenate, PerPosition, StackFields
from recstack.layers.feature_importance import FiBiNet, GateNN, MaskBlock, MaskNet, PPNet, SENet
from recstack.layers.gate import HighwayNetwork, WeightedGate
from recstack.layers.init import init_linear
from recstack.layers.interaction import CIN, BilinearInteraction, Cross, DotInteraction, FactorizationMachine
from recstack.layers.mlp import MLP
from recstack.layers.multitask import AITMTower, MLPExperts, MMoE
from recstack.layers.numeric import AutoDisEmbedding, PeriodicEmbedding
from recstack.layers.sequence import BST, DINEncoder, MultiHeadAttention, TransformerBlock, TransformerEncoder
from recstack.registry import ACTIVATIONS

logger = logging.getLogger(__name__)

#: Keras / EasyRec initializer names → :func:`recstack.layers.init.init_linear` schemes
INITIALIZERS = {"he_uniform": "he_uniform", "he_normal": "he_normal", "glorot_uniform": "xavier_uniform",
                "glorot_normal": "xavier_normal", "xavier_uniform": "xavier_uniform",
                "xavier_normal": "xavier_normal", "truncated_normal": "truncated_normal"}


# ---------------------------------------------------------------------------------------------- reading helpers
def where(p: Params) -> str:
    """The location of a block's parameters, for errors: ``'...blocks[2].keras_layer.senet' in config.yaml``."""
    return source(p.config, p.key)


#: ``default`` of a key that must be present
REQUIRED = object()


def positive(p: Params, name: str, default: Any = REQUIRED) -> Any:
    """An int ``>= 1``; ``default`` when absent (``None`` for an optional size), an error when ``REQUIRED``."""
    value = p.get(name, type=int) if default is REQUIRED else p.get(name, default, type=int)
    if value is None and default is None:
        return None
    if value < 1:
        raise ConfigError(f"{p.where(name)}: must be an integer >= 1, got {value!r}")
    return value


def rate(p: Params, name: str, default: float | None = 0.0) -> float:
    """A dropout rate in ``[0, 1)``."""
    value = p.get(name, type=float) if default is None else p.get(name, default, type=float)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{p.where(name)}: must be in [0, 1), got {value!r}")
    return float(value)


def choice(p: Params, name: str, default: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (in any case, returned in lower case)."""
    value = p.get(name, default, type=str)
    if value.lower() not in choices:
        raise ConfigError(f"{p.where(name)}: must be one of {', '.join(choices)}, got {value!r}")
    return value.lower()


def activation(p: Params, name: str, default: str | None) -> str:
    """An activation name of :mod:`recstack.layers.activation` (``None`` / ``linear``: identity)."""
    value = p.get(name, default)
    if value is None:
        return "linear"
    if not isinstance(value, str):
        raise ConfigError(f"{p.where(name)}: expected an activation name, got {value!r}")
    ACTIVATIONS.lookup(value, p.where(name))
    return value


def initializer(p: Params, name: str, default: str) -> str:
    """A Keras initializer name as an :func:`recstack.layers.init.init_linear` scheme."""
    value = p.get(name, default, type=str)
    if value not in INITIALIZERS:
        raise ConfigError(f"{p.where(name)}: unsupported initializer {value!r} (supported: "
                          f"{', '.join(sorted(INITIALIZERS))})")
    return INITIALIZERS[value]


def zeros_only(p: Params, name: str) -> None:
    """A bias initializer: only Keras' default, ``zeros``, is supported."""
    value = p.get(name, "zeros", type=str)
    if value != "zeros":
        raise ConfigError(f"{p.where(name)}: only 'zeros' is supported, got {value!r}")


def describe(shape: InputShape) -> str:
    """``(B, 4)`` or ``[(B, 5, 4), (B,)]``: an input's shape with the batch axis, for errors."""
    if isinstance(shape, list):
        return "[" + ", ".join(describe(s) for s in shape) + "]"
    return "(" + ", ".join(["B", *map(str, shape)]) + ")"


def width(shape: InputShape, who: str, p: Params) -> int:
    """The last-axis width of a single-tensor input of rank >= 1."""
    dims = tensor_shape(shape, who, where(p))
    if not dims:
        raise ConfigError(f"{where(p)}: {who} takes a (B, ..., D) tensor, got (B,)")
    return dims[-1]


def equal_dims(shape: InputShape, who: str, p: Params) -> list[int]:
    """Field widths of a feature list / ``(F, D)`` input, which must all be equal."""
    dims = feature_dims(shape, who, where(p))
    if len(set(dims)) > 1:
        raise ConfigError(f"{where(p)}: {who} needs features of equal width, got widths {dims}")
    return dims


def list_of(shape: InputShape, count: int | tuple[int, ...], who: str, what: str, p: Params) -> list[Shape]:
    """A list input of ``count`` tensors (``what`` describes them for the error)."""
    counts = (count,) if isinstance(count, int) else count
    if not isinstance(shape, list) or len(shape) not in counts or any(isinstance(s, list) for s in shape):
        got = f"a list of {len(shape)}" if isinstance(shape, list) else f"one tensor {describe(shape)}"
        raise ConfigError(f"{where(p)}: {who} takes a list {what}, got {got}")
    return shape


def last_axis(module: nn.Module, shape: Shape) -> nn.Module:
    """``module`` (written for ``(N, D)`` rows) made to work on a ``(B, ..., D)`` input."""
    return PerPosition(module) if len(shape) > 1 else module


# --------------------------------------------------------------------------------------------------------- MLP
@dataclass(frozen=True)
class MLPParams:
    """EasyRec's ``MLP`` message (defaults as EasyRec's: BatchNorm on, no biases, ReLU everywhere, He-uniform)."""

    hidden_units: tuple[int, ...]
    dropout_ratio: tuple[float, ...]
    activation: str = "relu"
    use_bn: bool = True
    use_final_bn: bool = True
    final_activation: str = "relu"
    use_bias: bool = False
    use_final_bias: bool = False
    initializer: str = "he_uniform"
    use_bn_after_activation: bool = False

    @classmethod
    def read(cls, p: Params) -> MLPParams:
        """Read the message's keys from ``p`` (the caller finishes ``p``)."""
        units = p.get_list("hidden_units", int, scalar_ok=True)
        if not units or any(u < 1 for u in units):
            raise ConfigError(f"{p.where('hidden_units')}: expected a non-empty list of integers >= 1, got {units!r}")
        rates = p.get_list("dropout_ratio", float, [], scalar_ok=True)
        if len(rates) > len(units) or any(not 0.0 <= r < 1.0 for r in rates):
            raise ConfigError(f"{p.where('dropout_ratio')}: expected at most one rate in [0, 1) per hidden layer "
                              f"({len(units)}), got {rates!r}")
        return cls(tuple(units), tuple(float(r) for r in rates) + (0.0,) * (len(units) - len(rates)),
                   activation=activation(p, "activation", "relu"), use_bn=p.get("use_bn", True, type=bool),
                   use_final_bn=p.get("use_final_bn", True, type=bool),
                   final_activation=activation(p, "final_activation", "relu"),
                   use_bias=p.get("use_bias", False, type=bool),
                   use_final_bias=p.get("use_final_bias", False, type=bool),
                   initializer=initializer(p, "initializer", "he_uniform"),
                   use_bn_after_activation=p.get("use_bn_after_activation", False, type=bool))

    @classmethod
    def node(cls, p: Params, name: str) -> MLPParams:
        """The sub-message ``name`` of ``p`` read and finished."""
        sub = p.node(name)
        params = cls.read(sub)
        sub.finish()
        return params

    def build(self, input_dim: int) -> MLP:
        """The MLP ``(B, input_dim) → (B, hidden_units[-1])``."""
        return MLP(input_dim, list(self.hidden_units), activation=self.activation, dropout=list(self.dropout_ratio),
                   batch_norm=self.use_bn, init=self.initializer, bias=self.use_bias,
                   bn_after_activation=self.use_bn_after_activation, final_activation=self.final_activation,
                   final_batch_norm=self.use_final_bn, final_bias=self.use_final_bias)

    def bank(self, input_dim: int, num_experts: int) -> MLPExperts | None:
        """``num_experts`` of these MLPs computed together (:class:`recstack.layers.multitask.MLPExperts`: one
        GEMM per layer instead of one per expert and layer), or ``None`` when the bank cannot express them: the
        last layer unlike the others (activation, BatchNorm, bias), BatchNorm after the activation, or Linears
        without bias and no BatchNorm after them (a bias before BatchNorm changes nothing: its gradient is 0)."""
        uniform = (self.final_activation == self.activation and self.use_final_bn == self.use_bn
                   and self.use_final_bias == self.use_bias)
        if not uniform or self.use_bn_after_activation or not (self.use_bias or self.use_bn):
            return None
        return MLPExperts(input_dim, num_experts, list(self.hidden_units), activation=self.activation,
                          dropout=list(self.dropout_ratio), batch_norm=self.use_bn, init=self.initializer,
                          bias_init=0.0)

    def layers(self, input_dim: int) -> list[MLP]:
        """The same MLP as one module per layer (PPNet gates between them)."""
        out, width_in = [], input_dim
        for i, units in enumerate(self.hidden_units):
            last = i == len(self.hidden_units) - 1
            out.append(MLP(width_in, [units], activation=self.final_activation if last else self.activation,
                           dropout=[self.dropout_ratio[i]], batch_norm=self.use_final_bn if last else self.use_bn,
                           init=self.initializer, bias=self.use_final_bias if last else self.use_bias,
                           bn_after_activation=self.use_bn_after_activation))
            width_in = units
        return out


@component("MLP", params="mlp")
def mlp(p: Params, shape: InputShape) -> nn.Module:
    """``Linear → [BatchNorm] → activation → [Dropout]`` per layer; the last layer's options are the ``final_*``
    ones. ``(B, ..., D) → (B, ..., hidden_units[-1])``."""
    dims = tensor_shape(shape, "MLP", where(p))
    return last_axis(MLPParams.read(p).build(width(shape, "MLP", p)), dims)


# ------------------------------------------------------------------------------------------------------- basic
@component("Highway", params="highway")
def highway(p: Params, shape: InputShape) -> nn.Module:
    """Highway layers: ``(B, ..., D) → (B, ..., emb_size or D)`` (:class:`recstack.layers.HighwayNetwork`)."""
    return HighwayNetwork(width(shape, "Highway", p), emb_size=positive(p, "emb_size", None),
                          activation=activation(p, "activation", "relu"), dropout_rate=rate(p, "dropout_rate"),
                          init_gate_bias=p.get("init_gate_bias", -3.0, type=float),
                          num_layers=positive(p, "num_layers", 1))


@component("Gate", params="gate")
def gate(p: Params, shape: InputShape) -> nn.Module:
    """``[weights (B, n), x_1, ..., x_n]`` (weights at ``weight_index``) → ``sum_j w_j x_j`` ``(B, D)``, then
    ``mlp``."""
    index = p.get("weight_index", 0, type=int)
    if not isinstance(shape, list) or len(shape) < 2:
        raise ConfigError(f"{where(p)}: Gate takes a list [weights, x_1, ..., x_n], got "
                          f"{'a list of ' + str(len(shape)) if isinstance(shape, list) else 'one tensor'}")
    if not 0 <= index < len(shape):
        raise ConfigError(f"{p.where('weight_index')}: must be in [0, {len(shape)}) for this input, got {index}")
    values = [s for i, s in enumerate(shape) if i != index]
    if shape[index] != (len(values),) or any(s != values[0] for s in values):
        raise ConfigError(f"{where(p)}: Gate needs weights (B, {len(values)}) at index {index} and values of one "
                          f"shape, got {describe(shape)}")
    top = MLPParams.node(p, "mlp").build(values[0][-1]) if "mlp" in p else None
    return WeightedGate(index, None if top is None else last_axis(top, values[0]))


@component("PeriodicEmbedding", params="periodic_embedding")
def periodic_embedding(p: Params, shape: InputShape) -> nn.Module:
    """Numeric features ``(B, N)`` → ``(B, N * embedding_dim)`` (and the per-feature vectors when asked for)."""
    (num,) = _numeric(shape, "PeriodicEmbedding", p)
    dim = positive(p, "embedding_dim")
    if dim % 2:
        raise ConfigError(f"{p.where('embedding_dim')}: must be even, got {dim}")
    sigma = p.get("sigma", type=float)
    if sigma <= 0:
        raise ConfigError(f"{p.where('sigma')}: must be > 0, got {sigma}")
    return PeriodicEmbedding(num, dim, sigma, add_linear_layer=p.get("add_linear_layer", True, type=bool),
                             linear_activation=activation(p, "linear_activation", "relu"),
                             output_tensor_list=p.get("output_tensor_list", False, type=bool),
                             output_3d_tensor=p.get("output_3d_tensor", False, type=bool))


@component("AutoDisEmbedding", params="auto_dis_embedding")
def auto_dis_embedding(p: Params, shape: InputShape) -> nn.Module:
    """Numeric features ``(B, N)`` → ``(B, N * embedding_dim)`` (and the per-feature vectors when asked for)."""
    (num,) = _numeric(shape, "AutoDisEmbedding", p)
    temperature = p.get("temperature", type=float)
    if temperature <= 0:
        raise ConfigError(f"{p.where('temperature')}: must be > 0, got {temperature}")
    return AutoDisEmbedding(num, positive(p, "embedding_dim"), positive(p, "num_bins"),
                            keep_prob=p.get("keep_prob", 0.8, type=float), temperature=temperature,
                            output_tensor_list=p.get("output_tensor_list", False, type=bool),
                            output_3d_tensor=p.get("output_3d_tensor", False, type=bool))


def _numeric(shape: InputShape, who: str, p: Params) -> Shape:
    """The ``(N,)`` shape of a numeric-features input."""
    dims = tensor_shape(shape, who, where(p))
    if len(dims) != 1:
        raise ConfigError(f"{where(p)}: {who} takes the numeric features as one (B, N) tensor, got "
                          f"{describe(dims)}")
    return dims


@component("Add")
def add(p: Params, shape: InputShape) -> nn.Module:
    """Keras' ``Add``: the elementwise sum of a list."""
    return Add()


@component("Concatenate")
def concatenate(p: Params, shape: InputShape) -> nn.Module:
    """Keras' ``Concatenate(axis=-1)``."""
    return Concatenate(p.get("axis", -1, type=int))


@component("Dropout")
def dropout(p: Params, shape: InputShape) -> nn.Module:
    """Keras' ``Dropout(rate)``."""
    return nn.Dropout(rate(p, "rate", None))


@component("Dense")
def dense(p: Params, shape: InputShape) -> nn.Module:
    """Keras' ``Dense``: a Linear on the last axis (``units``, ``activation``, ``use_bias``, ``kernel_initializer``),
    Glorot-uniform and zero bias by default."""
    units = positive(p, "units")
    linear = nn.Linear(width(shape, "Dense", p), units, bias=p.get("use_bias", True, type=bool))
    init_linear(linear, initializer(p, "kernel_initializer", "glorot_uniform"))
    zeros_only(p, "bias_initializer")
    act = activation(p, "activation", None)
    return linear if act == "linear" else nn.Sequential(linear, get_activation(act, units))


def _norm_options(p: Params) -> tuple[float, bool]:
    """``epsilon`` and whether the layer is affine (Keras' ``center`` and ``scale``, both or neither)."""
    if p.get("axis", -1, type=int) != -1:
        raise ConfigError(f"{p.where('axis')}: only the last axis (-1) is supported")
    center, scale = p.get("center", True, type=bool), p.get("scale", True, type=bool)
    if center != scale:
        raise ConfigError(f"{p.where('center')}: center and scale must be equal here, got {center} and {scale}")
    return p.get("epsilon", 1e-3, type=float), center


@component("LayerNormalization")
def layer_normalization(p: Params, shape: InputShape) -> nn.Module:
    """Keras' ``LayerNormalization`` over the last axis (``epsilon`` 1e-3)."""
    eps, affine = _norm_options(p)
    return nn.LayerNorm(width(shape, "LayerNormalization", p), eps=eps, elementwise_affine=affine)


@component("BatchNormalization")
def batch_normalization(p: Params, shape: InputShape) -> nn.Module:
    """Keras' ``BatchNormalization`` over the last axis (``momentum`` 0.99 = torch's 0.01, ``epsilon`` 1e-3)."""
    dims = tensor_shape(shape, "BatchNormalization", where(p))
    momentum = p.get("momentum", 0.99, type=float)
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"{p.where('momentum')}: must be in [0, 1), got {momentum}")
    eps, affine = _norm_options(p)
    norm = nn.BatchNorm1d(width(shape, "BatchNormalization", p), eps=eps, momentum=1.0 - momentum, affine=affine)
    return last_axis(norm, dims)


# ------------------------------------------------------------------------------------------------- interaction
@component("FM", params="fm")
def fm(p: Params, shape: InputShape) -> nn.Module:
    """``use_variant``: the per-dimension terms ``(B, D)`` instead of their sum ``(B, 1)``. ``l2_regularization``
    is read and not used, as by EasyRec's component (regularise with ``model_params.l2_regularization``)."""
    equal_dims(shape, "FM", p)
    p.get("l2_regularization", 1e-4, type=float)
    return StackFields(FactorizationMachine(sum_dims=not p.get("use_variant", False, type=bool)))


@component("DotInteraction")
def dot_interaction(p: Params, shape: InputShape) -> nn.Module:
    """DLRM's pairwise dot products: ``F`` features of width ``D`` → ``(B, F (F - 1) / 2)`` (see the layer)."""
    dims = equal_dims(shape, "DotInteraction", p)
    return StackFields(DotInteraction(len(dims), self_interaction=p.get("self_interaction", False, type=bool),
                                      skip_gather=p.get("skip_gather", False, type=bool)))


def one_or_pair(shape: InputShape, who: str, what: str, p: Params) -> tuple[Shape, Shape]:
    """The two ``(D,)`` shapes of a component that reads ``x`` (both are ``x``) or a pair ``[a, b]`` (``what``
    names the pair for the error)."""
    a, b = list_of(shape, 2, who, what, p) if isinstance(shape, list) else (shape, shape)
    if len(a) != 1 or len(b) != 1:
        raise ConfigError(f"{where(p)}: {who} takes (B, D) tensors, got {describe(shape)}")
    return a, b


@component("Cross")
def cross(p: Params, shape: InputShape) -> nn.Module:
    """DCN-V2's cross layer on ``x`` or ``[x0, x]`` (the ``recurrent`` block's stack)."""
    x0, x = one_or_pair(shape, "Cross", "[x0, x] of two (B, D) tensors", p)
    if x0 != x:
        raise ConfigError(f"{where(p)}: Cross takes (B, D) tensors of one width, got {describe(shape)}")
    p.hints.update({k: "per-layer regularizers are not supported: use model_params.l2_regularization"
                    for k in ("kernel_regularizer", "bias_regularizer")})
    zeros_only(p, "bias_initializer")
    diag = p.get("diag_scale", 0.0, type=float)
    if diag < 0:
        raise ConfigError(f"{p.where('diag_scale')}: must be >= 0, got {diag}")
    return Cross(x[0], projection_dim=positive(p, "projection_dim", None), diag_scale=diag,
                 use_bias=p.get("use_bias", True, type=bool),
                 init=initializer(p, "kernel_initializer", "truncated_normal"))


@component("CIN", params="cin")
def cin(p: Params, shape: InputShape) -> nn.Module:
    """xDeepFM's CIN over a ``(F, D)`` input / feature list; every layer's maps go to the output (no split)."""
    dims = equal_dims(shape, "CIN", p)
    sizes = p.get_list("hidden_feature_sizes", int)
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"{p.where('hidden_feature_sizes')}: expected a non-empty list of integers >= 1, "
                          f"got {sizes!r}")
    return StackFields(CIN(len(dims), sizes, split_half=False))


def _bilinear(p: Params, dims: list[int]) -> BilinearInteraction:
    """A ``Bilinear`` message read for features of widths ``dims``."""
    kind = choice(p, "type", "interaction", BilinearInteraction.TYPES)
    if kind != "interaction" and len(set(dims)) > 1:
        raise ConfigError(f"{p.where('type')}: type {kind!r} needs features of equal width, got widths {dims} "
                          "(use 'interaction')")
    if len(dims) < 2:
        raise ConfigError(f"{where(p)}: BiLinear needs at least 2 features, got {len(dims)}")
    return BilinearInteraction(dims, positive(p, "num_output_units"), kind, p.get("use_plus", True, type=bool))


@component("BiLinear", params="bilinear")
def bilinear(p: Params, shape: InputShape) -> nn.Module:
    """FiBiNet's bilinear interaction: ``F`` features → ``(B, num_output_units)``."""
    return _bilinear(p, feature_dims(shape, "BiLinear", where(p)))


def _senet(p: Params, dims: list[int]) -> SENet:
    """A ``SENet`` message read for features of widths ``dims``."""
    groups = positive(p, "num_squeeze_group", 2)
    if any(d % groups for d in dims):
        raise ConfigError(f"{p.where('num_squeeze_group')}: every feature width must be a multiple of {groups}, "
                          f"got widths {dims}")
    return SENet(dims, reduction_ratio=positive(p, "reduction_ratio", 4), num_squeeze_group=groups,
                 use_skip_connection=p.get("use_skip_connection", True, type=bool),
                 use_output_layer_norm=p.get("use_output_layer_norm", True, type=bool))


@component("FiBiNet", params="fibinet")
def fibinet(p: Params, shape: InputShape) -> nn.Module:
    """``mlp([SENet(x), BiLinear(x)])`` over ``F`` features (``bilinear`` and ``mlp`` optional)."""
    dims = feature_dims(shape, "FiBiNet", where(p))
    senet_node = p.node("senet")
    senet_layer = _senet(senet_node, dims)
    senet_node.finish()
    bilinear_layer = None
    if "bilinear" in p:
        node = p.node("bilinear")
        bilinear_layer = _bilinear(node, dims)
        node.finish()
    width_out = senet_layer.output_dim + (bilinear_layer.output_dim if bilinear_layer is not None else 0)
    top = MLPParams.node(p, "mlp").build(width_out) if "mlp" in p else None
    return FiBiNet(senet_layer, bilinear_layer, top)


# -------------------------------------------------------------------------------------------- feature importance
@component("SENet", params="senet")
def senet(p: Params, shape: InputShape) -> nn.Module:
    """SENet over ``F`` features of widths ``D_i`` → ``(B, sum D_i)``."""
    return _senet(p, feature_dims(shape, "SENet", where(p)))


def _mask_block(p: Params, input_dim: int, mask_input_dim: int) -> MaskBlock:
    """A ``MaskBlock`` message read for the given input and mask-input widths."""
    if "reduction_factor" in p:
        factor = p.get("reduction_factor", type=float)
        size = int(mask_input_dim * factor)
        if size < 1:
            raise ConfigError(f"{p.where('reduction_factor')}: gives an aggregation size of {size} for a mask input "
                              f"of width {mask_input_dim}")
        if "aggregation_size" in p:
            raise ConfigError(f"{p.where('aggregation_size')}: set reduction_factor or aggregation_size, not both")
    elif "aggregation_size" in p:
        size = positive(p, "aggregation_size")
    else:
        raise ConfigError(f"{where(p)}: MaskBlock needs reduction_factor or aggregation_size")
    return MaskBlock(input_dim, mask_input_dim, size, output_size=positive(p, "output_size", None),
                     input_layer_norm=p.get("input_layer_norm", False, type=bool),
                     projection_dim=positive(p, "projection_dim", None))


@component("MaskBlock", params="mask_block")
def mask_block(p: Params, shape: InputShape) -> nn.Module:
    """A MaskBlock on ``x`` (its own mask input) or on ``[x, mask_input]``."""
    x, u = one_or_pair(shape, "MaskBlock", "[x, mask_input] of two (B, D) tensors", p)
    return _mask_block(p, x[0], u[0])


@component("MaskNet", params="masknet")
def masknet(p: Params, shape: InputShape) -> nn.Module:
    """MaskBlocks in parallel or serially over ``(B, D)``, then ``mlp``."""
    dims = tensor_shape(shape, "MaskNet", where(p))
    if len(dims) != 1:
        raise ConfigError(f"{where(p)}: MaskNet takes a (B, D) tensor, got {describe(dims)}")
    d = dims[0]
    parallel = p.get("use_parallel", True, type=bool)
    blocks, width_in = [], d
    for node in p.nodes("mask_blocks"):
        block = _mask_block(node, d if parallel else width_in, d)
        node.finish()
        blocks.append(block)
        width_in = block.output_dim
    if not blocks:
        raise ConfigError(f"{p.where('mask_blocks')}: MaskNet needs at least one mask block")
    width_out = sum(b.output_dim for b in blocks) if parallel else blocks[-1].output_dim
    top = MLPParams.node(p, "mlp").build(width_out) if "mlp" in p else None
    return MaskNet(d, blocks, use_parallel=parallel, top=top,
                   input_layer_norm=p.get("input_layer_norm", True, type=bool))


@component("PPNet", params="ppnet")
def ppnet(p: Params, shape: InputShape) -> nn.Module:
    """PEPNet's PPNet on ``[x, personal features]``; ``gate_params`` is EasyRec's GateNN message."""
    x, personal = list_of(shape, 2, "PPNet", "[x, personal features] of two (B, D) tensors", p)
    if len(x) != 1 or len(personal) != 1:
        raise ConfigError(f"{where(p)}: PPNet takes (B, D) tensors, got {describe(shape)}")
    mode = choice(p, "mode", "eager", ("eager", "lazy"))
    full = p.get("full_gate_input", True, type=bool)
    spec = MLPParams.node(p, "mlp")
    g = p.node("gate_params")
    gate_in = x[0] + personal[0] if full else personal[0]
    output_dim = positive(g, "output_dim", None)
    hidden_dim = positive(g, "hidden_dim", None)
    act, use_bn, drop = activation(g, "activation", "relu"), g.get("use_bn", False, type=bool), rate(g, "dropout_rate")
    g.finish()
    widths = [x[0], *spec.hidden_units[:-1]] if mode == "eager" else list(spec.hidden_units)
    if mode == "eager" and output_dim is not None and output_dim != x[0]:
        raise ConfigError(f"{g.where('output_dim')}: in eager mode the first gate scales the input, so output_dim "
                          f"must be the input's width {x[0]}, got {output_dim}")
    gates = [GateNN(gate_in, w, hidden_dim, act, use_bn, drop) for w in widths]
    return PPNet(spec.layers(x[0]), gates, mode=mode, full_gate_input=full)


# ------------------------------------------------------------------------------------------------------ sequence
def _sequence_input(shape: InputShape, who: str, p: Params, target: bool) -> tuple[int, int, int | None]:
    """``(L, D, D_t)`` of a ``[sequence (B, L, D), lengths (B,), target (B, D_t)]`` input (``D_t`` None if absent)."""
    what = "[sequence (B, L, D), lengths (B,), target (B, D_t)]" + ("" if target else " (target optional)")
    items = list_of(shape, (3,) if target else (2, 3), who, what, p)
    seq, lengths = items[0], items[1]
    tgt = items[2] if len(items) > 2 else None
    if len(seq) != 2 or lengths != () or (tgt is not None and len(tgt) != 1):
        raise ConfigError(f"{where(p)}: {who} takes {what} (input_layer output_seq_and_normal_feature), "
                          f"got {describe(shape)}")
    return seq[0], seq[1], None if tgt is None else tgt[0]


@component("DIN", params="din")
def din(p: Params, shape: InputShape) -> nn.Module:
    """DIN's target attention; ``attention_dnn`` ends in one unit, linear, with a bias and no BatchNorm (EasyRec sets
    those final options itself)."""
    _, d, dt = _sequence_input(shape, "DIN", p, target=True)
    spec = MLPParams.node(p, "attention_dnn")
    if spec.hidden_units[-1] != 1:
        raise ConfigError(f"{p.where('attention_dnn.hidden_units')}: the last layer gives the attention score and "
                          f"must have 1 unit, got {list(spec.hidden_units)}")
    if dt > d:
        raise ConfigError(f"{where(p)}: DIN's target item (width {dt}) is wider than the sequence (width {d})")
    scorer = dataclasses.replace(spec, use_final_bn=False, use_final_bias=True, final_activation="linear")
    unit = LocalActivationUnit(d, mlp=scorer.build(4 * d))
    return DINEncoder(d, dt, unit, attention_normalizer=choice(p, "attention_normalizer", "softmax",
                                                               ("softmax", "sigmoid")),
                      need_target_feature=p.get("need_target_feature", True, type=bool))


@component("BST", params="bst")
def bst(p: Params, shape: InputShape) -> nn.Module:
    """BST over ``[sequence, lengths(, target)]`` → ``(B, (max [+ 1]) * hidden_size)`` or ``(B, hidden_size)``."""
    _, d, dt = _sequence_input(shape, "BST", p, target=False)
    position = choice(p, "target_item_position", "head", ("head", "tail", "ignore"))
    if dt is not None and position != "ignore" and dt != d:
        raise ConfigError(f"{where(p)}: BST puts the target item into the sequence, so their widths must be equal, "
                          f"got sequence {d} and target {dt} (or set target_item_position: ignore)")
    hidden, heads = positive(p, "hidden_size"), positive(p, "num_attention_heads")
    if hidden % heads:
        raise ConfigError(f"{p.where('hidden_size')}: {hidden} is not a multiple of num_attention_heads {heads}")
    return BST(d, dt, hidden, positive(p, "num_hidden_layers"), heads, positive(p, "intermediate_size"),
               hidden_act=activation(p, "hidden_act", "gelu"), hidden_dropout_prob=rate(p, "hidden_dropout_prob", 0.1),
               attention_probs_dropout_prob=rate(p, "attention_probs_dropout_prob", 0.1),
               max_position_embeddings=positive(p, "max_position_embeddings", 512),
               use_position_embeddings=p.get("use_position_embeddings", True, type=bool),
               initializer_range=p.get("initializer_range", 0.02, type=float),
               output_all_token_embeddings=p.get("output_all_token_embeddings", True, type=bool),
               target_item_position=position, reserve_target_position=p.get("reserve_target_position", True, type=bool))


def _attention_input(shape: InputShape, who: str, p: Params) -> tuple[list[Shape], Shape | None]:
    """The ``(L, D)`` sequences of an attention input and its mask's shape (``()`` lengths or ``(S,)``)."""
    original = shape
    if not isinstance(shape, list):
        shape = [shape]
    seqs = [s for s in shape if isinstance(s, tuple) and len(s) == 2]
    masks = [s for s in shape if isinstance(s, tuple) and len(s) < 2]
    if not seqs or len(masks) > 1 or len(seqs) + len(masks) != len(shape) or (masks and shape[-1] != masks[0]):
        raise ConfigError(f"{where(p)}: {who} takes (B, L, D) sequences and optionally a mask last ((B,) lengths or "
                          f"(B, L)), got {describe(original)}")
    return seqs, masks[0] if masks else None


@component("MultiHeadAttention", params="multi_head_attention")
def multi_head_attention(p: Params, shape: InputShape) -> nn.Module:
    """Keras' MultiHeadAttention on ``x`` or ``[query, value(, key)(, mask)]``."""
    seqs, _ = _attention_input(shape, "MultiHeadAttention", p)
    if len(seqs) > 3:
        raise ConfigError(f"{where(p)}: MultiHeadAttention takes at most [query, value, key], got {len(seqs)} "
                          "sequences")
    axes = p.get_list("attention_axes", int, [])
    if axes not in ([], [1], [-2]):
        raise ConfigError(f"{p.where('attention_axes')}: only attention over the sequence axis is supported, "
                          f"got {axes}")
    value_in = seqs[1][-1] if len(seqs) > 1 else seqs[0][-1]
    layer = MultiHeadAttention(seqs[0][-1], positive(p, "num_heads"), positive(p, "key_dim"),
                               value_dim=positive(p, "value_dim", None), dropout=rate(p, "dropout"),
                               use_bias=p.get("use_bias", True, type=bool),
                               output_dim=positive(p, "output_shape", None),
                               use_causal_mask=p.get("use_causal_mask", False, type=bool),
                               return_attention_scores=p.get("return_attention_scores", False, type=bool),
                               key_input_dim=seqs[2][-1] if len(seqs) > 2 else None, value_input_dim=value_in)
    scheme = initializer(p, "kernel_initializer", "glorot_uniform")
    zeros_only(p, "bias_initializer")
    for linear in (layer.query, layer.key, layer.value, layer.output):
        init_linear(linear, scheme)
    return layer


#: keys of EasyRec's ``Transformer`` message that a TransformerBlock has no use for (the message is shared with
#: TransformerEncoder, and proto2 makes some of them required)
_ENCODER_ONLY = ("num_hidden_layers", "vocab_size", "max_position_embeddings", "use_position_embeddings",
                 "output_all_token_embeddings")


def _transformer_layer(p: Params) -> dict[str, Any]:
    """The per-layer keys of EasyRec's ``Transformer`` message, as :class:`TransformerBlock` arguments."""
    hidden, heads = positive(p, "hidden_size"), positive(p, "num_attention_heads")
    if hidden % heads:
        raise ConfigError(f"{p.where('hidden_size')}: {hidden} is not a multiple of num_attention_heads {heads}")
    return {"hidden_size": hidden, "num_heads": heads, "intermediate_size": positive(p, "intermediate_size", hidden),
            "hidden_act": activation(p, "hidden_act", "relu"),
            "hidden_dropout_prob": rate(p, "hidden_dropout_prob", 0.1),
            "attention_probs_dropout_prob": rate(p, "attention_probs_dropout_prob", 0.0)}


@component("TransformerBlock", params="transformer")
def transformer_block(p: Params, shape: InputShape) -> nn.Module:
    """One Transformer layer on ``(B, L, hidden_size)`` or ``[x, mask]`` → ``(B, L, hidden_size)``."""
    seqs, _ = _attention_input(shape, "TransformerBlock", p)
    if len(seqs) != 1:
        raise ConfigError(f"{where(p)}: TransformerBlock takes x or [x, mask], got {len(seqs)} sequences")
    options = _transformer_layer(p)
    if seqs[0][-1] != options["hidden_size"]:
        raise ConfigError(f"{p.where('hidden_size')}: TransformerBlock's input width {seqs[0][-1]} must equal "
                          f"hidden_size {options['hidden_size']} (project it first, e.g. with a Dense block)")
    ignored = [k for k in _ENCODER_ONLY if k in p]
    for key in ignored:
        p.get(key)
    if ignored:
        logger.info("%s: %s ignored by TransformerBlock (TransformerEncoder's)", where(p), ", ".join(ignored))
    return TransformerBlock(**options)


@component("TransformerEncoder", params="transformer")
def transformer_encoder(p: Params, shape: InputShape) -> nn.Module:
    """Token ids ``(B, L)`` (or ``[ids, mask]``) → ``(B, L, H)`` or the first token's ``(B, H)``."""
    ids = shape[0] if isinstance(shape, list) else shape
    if (isinstance(shape, list) and len(shape) != 2) or not isinstance(ids, tuple) or len(ids) != 1:
        raise ConfigError(f"{where(p)}: TransformerEncoder takes token ids (B, L) or [ids, mask], "
                          f"got {describe(shape)}")
    options = _transformer_layer(p)
    if options["hidden_size"] % 2:
        raise ConfigError(f"{p.where('hidden_size')}: must be even (sinusoidal positions), "
                          f"got {options['hidden_size']}")
    return TransformerEncoder(positive(p, "vocab_size"), options.pop("hidden_size"),
                              positive(p, "num_hidden_layers", 1), options.pop("num_heads"),
                              max_position_embeddings=positive(p, "max_position_embeddings", 512),
                              output_all_token_embeddings=p.get("output_all_token_embeddings", True, type=bool),
                              use_position_embeddings=p.get("use_position_embeddings", True, type=bool), **options)


# --------------------------------------------------------------------------------------------------- multi-task
@component("MMoE", params="mmoe")
def mmoe(p: Params, shape: InputShape) -> nn.Module:
    """MMoE's experts and gates; a list of ``num_task`` outputs (tower ``i`` takes element ``i``)."""
    tasks, experts = positive(p, "num_task"), positive(p, "num_expert")
    if "expert_mlp" in p:
        (d,) = _flat(shape, "MMoE", p)
        spec = MLPParams.node(p, "expert_mlp")
        bank = spec.bank(d, experts)
        return MMoE(d, tasks, experts, bank if bank is not None else [spec.build(d) for _ in range(experts)])
    items = list_of(shape, experts + 1, "MMoE",
                    f"of {experts} expert outputs (B, H) and the gates' input (B, D) (or set expert_mlp)", p)
    if any(len(s) != 1 for s in items) or len(set(items[:experts])) > 1:
        raise ConfigError(f"{where(p)}: MMoE's expert outputs must be (B, H) tensors of one width, "
                          f"got {describe(items)}")
    return MMoE(items[-1][0], tasks, experts)


def _flat(shape: InputShape, who: str, p: Params) -> Shape:
    """The ``(D,)`` shape of a ``(B, D)`` tensor input."""
    dims = tensor_shape(shape, who, where(p))
    if len(dims) != 1:
        raise ConfigError(f"{where(p)}: {who} takes a (B, D) tensor, got {describe(dims)}")
    return dims


@component("AITMTower", params="aitm")
def aitm_tower(p: Params, shape: InputShape) -> nn.Module:
    """AITM's information transfer on ``[this tower, dependency, ...]``; a single tensor passes unchanged."""
    project = positive(p, "project_dim", None)
    stop = p.get("stop_gradient", True, type=bool)
    transfer_spec = MLPParams.node(p, "transfer_mlp") if "transfer_mlp" in p else None
    if not isinstance(shape, list):
        _flat(shape, "AITMTower", p)
        return nn.Identity()
    if len(shape) < 2 or any(not isinstance(s, tuple) or len(s) != 1 for s in shape):
        raise ConfigError(f"{where(p)}: AITMTower takes [this tower (B, D), dependencies (B, D_i) ...], "
                          f"got {describe(shape)}")
    dims = [s[0] for s in shape]
    transfer = None
    if transfer_spec is not None:
        if len(set(dims[1:])) > 1:
            raise ConfigError(f"{p.where('transfer_mlp')}: one transfer MLP for dependencies of widths {dims[1:]}")
        transfer = transfer_spec.build(dims[1])
        dims = [dims[0]] + [transfer.output_dim] * (len(dims) - 1)
    return AITMTower(dims, project_dim=project, transfer=transfer, stop_gradient=stop)

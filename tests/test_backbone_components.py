"""The backbone's component library (recstack/backbone/library.py and the layers it builds).

Every registered component: built from EasyRec-named parameters for a given input shape, traced (TorchScript)
and exported to ONNX with parity on a batch of another size (and sequence length); an unknown parameter is
an error naming it. Each component's formula is checked on small seeded tensors against a direct
computation from its own weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstack.backbone.components import COMPONENTS
from recstack.backbone.engine import Backbone, shape_of
from recstack.backbone.library import MLPParams
from recstack.backbone.spec import parse_backbone
from recstack.config import ConfigError
from recstack.easyrec.schema import Node
from recstack.layers.multitask import MLPExperts


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))


def build(name: str, params: dict | None, x, message: str | None = None) -> nn.Module:
    """The component ``name`` built as the engine does: params node, build for ``x``'s shape, finish, eval."""
    torch.manual_seed(0)
    comp = COMPONENTS.get(name)
    key = message or comp.params or "st_params"
    node = Node(None, f"backbone.blocks[1].keras_layer.{key}", dict(params or {}))
    module = comp.build(node, shape_of(x))
    node.finish()
    return module.eval()


def perturb(module: nn.Module, seed: int = 1) -> nn.Module:
    """Random values in every parameter and running statistic (zero biases and BatchNorm at init hide mistakes)."""
    g = gen(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()):
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.5)
        for name, buffer in module.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.1)
    return module


def sequence(rows: int, length: int, dim: int, target: int | None = None, seed: int = 0):
    """``[seq (B, L, D), lengths (B,), target (B, D_t)]`` with a zero-length row and zero padding."""
    g = gen(seed)
    lengths = torch.randint(1, length + 1, (rows,), generator=g)
    lengths[0] = 0 if rows > 2 else lengths[0]
    lengths[-1] = length
    seq = torch.randn(rows, length, dim, generator=g) * (torch.arange(length) < lengths[:, None]).unsqueeze(-1)
    items = [seq, lengths]
    if target is not None:
        items.append(torch.randn(rows, target, generator=g))
    return items


def fields(rows: int, dims, seed: int = 0) -> list[torch.Tensor]:
    g = gen(seed)
    return [torch.randn(rows, d, generator=g) for d in dims]


# name -> (params, input maker (rows, length, seed) -> input, message name when not the component's)
CASES = {
    "MLP": ({"hidden_units": [8, 4], "dropout_ratio": [0.5]}, lambda b, n, s: randn(b, 6, seed=s)),
    "Highway": ({"emb_size": 5, "num_layers": 2}, lambda b, n, s: randn(b, 6, seed=s)),
    "Gate": ({"weight_index": 0, "mlp": {"hidden_units": [3]}},
             lambda b, n, s: [torch.softmax(randn(b, 2, seed=s), -1), randn(b, 4, seed=s + 1),
                              randn(b, 4, seed=s + 2)]),
    "PeriodicEmbedding": ({"embedding_dim": 4, "sigma": 0.5, "output_tensor_list": True},
                          lambda b, n, s: randn(b, 3, seed=s)),
    "AutoDisEmbedding": ({"embedding_dim": 4, "num_bins": 5, "temperature": 0.5, "output_3d_tensor": True},
                         lambda b, n, s: randn(b, 3, seed=s)),
    "Add": ({}, lambda b, n, s: [randn(b, 4, seed=s), randn(b, 4, seed=s + 1), randn(b, 4, seed=s + 2)]),
    "Concatenate": ({"axis": -1}, lambda b, n, s: [randn(b, 4, seed=s), randn(b, 3, seed=s + 1)]),
    "Dropout": ({"rate": 0.5}, lambda b, n, s: randn(b, 4, seed=s)),
    "Dense": ({"units": 3, "activation": "relu"}, lambda b, n, s: randn(b, n, 4, seed=s)),
    "LayerNormalization": ({"epsilon": 1e-3}, lambda b, n, s: randn(b, 4, seed=s)),
    "BatchNormalization": ({"momentum": 0.9}, lambda b, n, s: randn(b, n, 4, seed=s)),
    "FM": ({"use_variant": True}, lambda b, n, s: fields(b, [4, 4, 4], s)),
    "DotInteraction": ({"self_interaction": True}, lambda b, n, s: randn(b, 4, 3, seed=s)),
    "Cross": ({"projection_dim": 2, "diag_scale": 0.5}, lambda b, n, s: [randn(b, 5, seed=s), randn(b, 5, seed=s + 1)]),
    "CIN": ({"hidden_feature_sizes": [3, 2]}, lambda b, n, s: randn(b, 4, 3, seed=s)),
    "BiLinear": ({"type": "interaction", "use_plus": False, "num_output_units": 3},
                 lambda b, n, s: fields(b, [2, 4, 3], s)),
    "FiBiNet": ({"senet": {"reduction_ratio": 2}, "bilinear": {"type": "each", "num_output_units": 3},
                 "mlp": {"hidden_units": [4]}}, lambda b, n, s: fields(b, [4, 4, 4], s)),
    "SENet": ({"reduction_ratio": 2, "num_squeeze_group": 2}, lambda b, n, s: fields(b, [4, 2, 6], s)),
    "MaskBlock": ({"aggregation_size": 6, "output_size": 3, "input_layer_norm": True, "projection_dim": 2},
                  lambda b, n, s: [randn(b, 5, seed=s), randn(b, 4, seed=s + 1)]),
    "MaskNet": ({"mask_blocks": [{"aggregation_size": 6, "output_size": 3}, {"reduction_factor": 2.0}],
                 "use_parallel": False, "mlp": {"hidden_units": [4]}}, lambda b, n, s: randn(b, 5, seed=s)),
    "PPNet": ({"mlp": {"hidden_units": [6, 3]}, "gate_params": {"hidden_dim": 4}, "mode": "eager"},
              lambda b, n, s: [randn(b, 5, seed=s), randn(b, 2, seed=s + 1)]),
    "DIN": ({"attention_dnn": {"hidden_units": [6, 1], "activation": "dice"}},
            lambda b, n, s: sequence(b, n, 4, 4, s)),
    "BST": ({"hidden_size": 4, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 6,
             "max_position_embeddings": 6}, lambda b, n, s: sequence(b, n, 3, 3, s)),
    "MultiHeadAttention": ({"num_heads": 2, "key_dim": 3, "value_dim": 2, "output_shape": 5,
                            "return_attention_scores": True},
                           lambda b, n, s: [randn(b, 2, 4, seed=s), randn(b, n, 3, seed=s + 1),
                                            torch.randint(1, n + 1, (b,), generator=gen(s))]),
    "TransformerBlock": ({"hidden_size": 4, "num_attention_heads": 2, "intermediate_size": 6},
                         lambda b, n, s: sequence(b, n, 4, None, s)),
    "TransformerEncoder": ({"vocab_size": 11, "hidden_size": 4, "num_hidden_layers": 2, "num_attention_heads": 2,
                            "intermediate_size": 6, "max_position_embeddings": 8},
                           lambda b, n, s: [torch.randint(0, 11, (b, n), generator=gen(s)),
                                            torch.randint(1, n + 1, (b,), generator=gen(s + 1))]),
    "MMoE": ({"num_task": 2, "num_expert": 3, "expert_mlp": {"hidden_units": [4]}},
             lambda b, n, s: randn(b, 5, seed=s)),
    "AITMTower": ({"project_dim": 3, "transfer_mlp": {"hidden_units": [4]}},
                  lambda b, n, s: [randn(b, 5, seed=s), randn(b, 6, seed=s + 1), randn(b, 6, seed=s + 2)]),
}


def flat(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for v in value for t in flat(v)]


def rebuild(template, tensors: list[torch.Tensor]):
    if isinstance(template, torch.Tensor):
        return tensors.pop(0)
    return [rebuild(t, tensors) for t in template]


class Flat(nn.Module):
    """A component over flat tensor arguments, returning a flat tuple (what trace / ONNX export see)."""

    def __init__(self, module: nn.Module, template) -> None:
        super().__init__()
        self.module, self.template = module, template

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flat(self.module(rebuild(self.template, list(tensors)))))


def dynamic_axes(a: list[torch.Tensor], b: list[torch.Tensor], prefix: str) -> dict[str, dict[int, str]]:
    """Axes whose size differs between two batches, named (batch, sequence length, ...)."""
    return {f"{prefix}{i}": {ax: f"d{ax}" for ax in range(x.dim()) if x.shape[ax] != y.shape[ax]}
            for i, (x, y) in enumerate(zip(a, b))}


def test_every_registered_component_has_a_case():
    assert sorted(COMPONENTS.names()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_trace_and_onnx_parity(name, tmp_path):
    import onnxruntime as ort

    params, make = CASES[name]
    x, other = make(5, 4, 0), make(3, 6, 7)
    module = perturb(build(name, params, x))
    wrapped = Flat(module, x).eval()
    inputs, other_inputs = tuple(flat(x)), tuple(flat(other))
    with torch.no_grad():
        eager, eager_other = wrapped(*inputs), wrapped(*other_inputs)
        traced = torch.jit.trace(wrapped, inputs, check_trace=False)
        for got, want in zip(traced(*other_inputs), eager_other):
            assert torch.allclose(got, want, atol=1e-6), name
        path = tmp_path / f"{name}.onnx"
        in_names = [f"in{i}" for i in range(len(inputs))]
        out_names = [f"out{i}" for i in range(len(eager))]
        axes = {**dynamic_axes(list(inputs), list(other_inputs), "in"), **dynamic_axes(eager, eager_other, "out")}
        torch.onnx.export(wrapped, inputs, str(path), input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: other_inputs[int(i.name[2:])].numpy() for i in session.get_inputs()}
    for got, want in zip(session.run(None, feed), eager_other):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_unknown_parameter_is_an_error_naming_it(name):
    params, make = CASES[name]
    with pytest.raises(ConfigError, match=r"unknown key 'backbone\.blocks\[1\]\.keras_layer\.\w+\.reduction_rate'"):
        build(name, {**params, "reduction_rate": 2}, make(2, 3, 0))


@pytest.mark.parametrize("name, params, message", [
    ("FiBiNet", {"senet": {"reduction_rate": 2}}, r"unknown key '.*\.fibinet\.senet\.reduction_rate'"),
    ("MMoE", {"num_task": 2, "num_expert": 2, "expert_mlp": {"hidden_unit": [4]}},
     r"'.*\.mmoe\.expert_mlp': missing key 'hidden_units'"),
    ("MaskNet", {"mask_blocks": [{"aggregation_size": 4, "output": 2}]},
     r"unknown key '.*\.masknet\.mask_blocks\[0\]\.output'; did you mean '.*\.output_size'"),
    ("PPNet", {"mlp": {"hidden_units": [4]}, "gate_params": {"hiden_dim": 3}},
     r"unknown key '.*gate_params\.hiden_dim'"),
    ("BiLinear", {"type": "pairwise", "num_output_units": 2}, r"'.*\.bilinear\.type': must be one of all, each"),
    ("MLP", {"hidden_units": [4], "activation": "relux"}, r"'.*\.mlp\.activation': unsupported activation 'relux'"),
    ("MLP", {"hidden_units": [4], "initializer": "orthogonal"}, r"'.*\.mlp\.initializer': unsupported initializer"),
    ("MLP", {"hidden_units": [4, 2], "dropout_ratio": [0.1, 0.2, 0.3]}, r"at most one rate in \[0, 1\) per hidden"),
    ("Cross", {"kernel_regularizer": "l2"}, r"per-layer regularizers are not supported"),
    ("MaskBlock", {"output_size": 2}, r"MaskBlock needs reduction_factor or aggregation_size"),
    ("MMoE", {"num_task": 0, "num_expert": 2}, r"'.*\.mmoe\.num_task': must be an integer >= 1, got 0"),
    ("MMoE", {"num_task": 2}, r"'.*\.mmoe': missing key 'num_expert'"),
    ("DIN", {"attention_dnn": {"hidden_units": [4, 2]}},
     r"din\.attention_dnn\.hidden_units': .* must have 1 unit, got \[4, 2\]"),
])
def test_nested_and_invalid_parameters_name_their_key(name, params, message):
    x = {"FiBiNet": fields(2, [4, 4]), "MMoE": randn(2, 3), "MaskNet": randn(2, 4), "BiLinear": fields(2, [2, 2]),
         "PPNet": [randn(2, 3), randn(2, 2)], "MLP": randn(2, 3), "Cross": randn(2, 3), "MaskBlock": randn(2, 3),
         "DIN": sequence(2, 3, 4, 4)}[name]
    with pytest.raises(ConfigError, match=message):
        build(name, params, x)


# ---------------------------------------------------------------------- list/tensor mismatches through the engine
class StandIn(nn.Module):
    """A feature group's input layer: the batch tensor, or (``only_output_feature_list``) its columns in pairs."""

    def __init__(self, group: str, options: Node | None) -> None:
        super().__init__()
        self.input_names = [group]
        self.group = group
        self.as_list = bool(options.get("only_output_feature_list", False, type=bool)) if options is not None else False
        if options is not None:
            options.finish()

    def forward(self, batch):
        x = batch[self.group]
        return list(x.split(2, dim=1)) if self.as_list else x


def backbone(blocks) -> Backbone:
    torch.manual_seed(0)
    spec = parse_backbone(Node(None, "backbone", {"blocks": blocks}), ["a"])
    return Backbone(spec, StandIn, {"a": randn(2, 6)})


@pytest.mark.parametrize("layer, as_list, message", [
    ({"class_name": "SENet", "senet": {}}, False,
     r"'backbone\.blocks\[1\]\.keras_layer\.senet': SENet takes a feature list or a \(B, F, D\) tensor, got \(B, 6\)"),
    ({"class_name": "MLP", "mlp": {"hidden_units": [4]}}, True,
     r"'backbone\.blocks\[1\]\.keras_layer\.mlp': MLP takes one tensor, got a list of 3"),
    ({"class_name": "PPNet", "ppnet": {"mlp": {"hidden_units": [4]}, "gate_params": {}}}, False,
     r"'backbone\.blocks\[1\]\.keras_layer\.ppnet': PPNet takes a list \[x, personal features\].*got one tensor"),
    ({"class_name": "DIN", "din": {"attention_dnn": {"hidden_units": [1]}}}, True,
     r"'backbone\.blocks\[1\]\.keras_layer\.din': DIN takes \[sequence \(B, L, D\), lengths.*"
     r"got \[\(B, 2\), \(B, 2\), \(B, 2\)\]"),
    ({"class_name": "TransformerBlock", "transformer": {"hidden_size": 4, "num_attention_heads": 2}}, False,
     r"'backbone\.blocks\[1\]\.keras_layer\.transformer': TransformerBlock takes \(B, L, D\) sequences .*"
     r"got \(B, 6\)"),
])
def test_a_list_or_tensor_mismatch_names_the_block(layer, as_list, message):
    blocks = [{"name": "feats", "inputs": [{"feature_group_name": "a"}],
               "input_layer": {"only_output_feature_list": as_list}},
              {"name": "comp", "inputs": [{"block_name": "feats"}], "keras_layer": layer}]
    with pytest.raises(ConfigError, match=message):
        backbone(blocks)


def test_components_run_in_a_backbone():
    """SENet over the feature list, then MMoE: EasyRec's MMoE-on-backbone example, a list of task outputs."""
    net = backbone([
        {"name": "feats", "inputs": [{"feature_group_name": "a"}], "input_layer": {"only_output_feature_list": True}},
        {"name": "senet", "inputs": [{"block_name": "feats"}], "keras_layer": {"class_name": "SENet", "senet": {}}},
        {"name": "mmoe", "inputs": [{"block_name": "senet"}],
         "keras_layer": {"class_name": "MMoE", "mmoe": {"num_task": 2, "num_expert": 3,
                                                        "expert_mlp": {"hidden_units": [5, 4]}}}},
    ]).eval()
    assert net.output_shape == [(4,), (4,)]
    out = net({"a": randn(3, 6)})
    assert [o.shape for o in out] == [(3, 4), (3, 4)]


def test_cross_in_a_recurrent_block_is_dcn_v2():
    net = backbone([
        {"name": "x", "inputs": [{"feature_group_name": "a"}]},
        {"name": "cross", "inputs": [{"block_name": "x", "input_fn": "lambda x: [x, x]"}],
         "recurrent": {"num_steps": 3, "fixed_input_index": 0,
                       "keras_layer": {"class_name": "Cross", "st_params": {"diag_scale": 0.1}}}},
    ]).eval()
    x = randn(4, 6)
    steps = [b.module for b in net.graph.blocks["cross"].layers[0].steps]
    want = x
    for step in steps:
        want = x * (step.up(want) + 0.1 * want) + want
    assert torch.allclose(net({"a": x}), want, atol=1e-6)


# ---------------------------------------------------------------------- basic components
def test_mlp_has_easyrec_defaults_and_formula():
    p = MLPParams.read(Node(None, "mlp", {"hidden_units": [4, 3]}))
    assert (p.use_bn, p.use_final_bn, p.use_bias, p.use_final_bias, p.activation, p.final_activation, p.initializer) \
        == (True, True, False, False, "relu", "relu", "he_uniform")
    default = build("MLP", {"hidden_units": [4, 3]}, randn(2, 5))
    assert [type(m) for m in default] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2
    assert all(m.bias is None for m in default if isinstance(m, nn.Linear))
    mlp = perturb(build("MLP", {"hidden_units": [4, 3], "use_bn": False, "use_final_bn": False, "use_bias": True,
                                "use_final_bias": True, "activation": "tanh", "final_activation": "linear"},
                        randn(2, 5)))
    x = randn(6, 5)
    l1, l2 = [m for m in mlp if isinstance(m, nn.Linear)]
    assert torch.allclose(mlp(x), l2(torch.tanh(l1(x))), atol=1e-6)
    after = build("MLP", {"hidden_units": [4], "use_bn_after_activation": True}, randn(2, 5))
    assert [type(m) for m in after] == [nn.Linear, nn.ReLU, nn.BatchNorm1d]


def test_mlp_on_a_sequence_normalises_per_position():
    mlp = perturb(build("MLP", {"hidden_units": [3]}, randn(2, 4, 5)))
    x = randn(2, 4, 5)
    assert torch.allclose(mlp(x), mlp.layer(x.reshape(8, 5)).reshape(2, 4, 3), atol=1e-6)


def test_highway_formula():
    hw = perturb(build("Highway", {"emb_size": 3, "num_layers": 2, "activation": "tanh"}, randn(2, 5)))
    fresh = build("Highway", {"emb_size": 3}, randn(2, 5))
    assert torch.equal(fresh.gates[0].bias, torch.full((3,), -3.0))
    x = randn(4, 5)
    v = hw.project(x)
    for gate, transform in zip(hw.gates, hw.transforms):
        t = torch.sigmoid(gate(v))
        v = t * torch.tanh(transform(v)) + (1 - t) * v
    assert torch.allclose(hw(x), v, atol=1e-6)
    assert build("Highway", {}, randn(2, 5)).project is None


def test_gate_is_a_weighted_sum():
    x = [torch.softmax(randn(4, 2), -1), randn(4, 3, seed=1), randn(4, 3, seed=2)]
    gate = build("Gate", {"weight_index": 0}, x)
    assert torch.allclose(gate(x), x[0][:, :1] * x[1] + x[0][:, 1:] * x[2])
    moved = build("Gate", {"weight_index": 2}, [x[1], x[2], x[0]])
    assert torch.allclose(moved([x[1], x[2], x[0]]), gate(x))


def test_periodic_embedding_formula():
    layer = perturb(build("PeriodicEmbedding", {"embedding_dim": 4, "sigma": 0.1, "add_linear_layer": False},
                          randn(2, 3)))
    x = randn(5, 3)
    c = layer.coefficients                                           # (N, 2)
    v = 2 * math.pi * c * x.unsqueeze(-1)
    assert torch.allclose(layer(x), torch.cat([v.sin(), v.cos()], -1).flatten(1), atol=1e-6)
    linear = perturb(build("PeriodicEmbedding", {"embedding_dim": 4, "sigma": 0.1, "output_tensor_list": True},
                           randn(2, 3)))
    flat_out, per_feature = linear(x)
    v = 2 * math.pi * linear.coefficients * x.unsqueeze(-1)
    e = torch.cat([v.sin(), v.cos()], -1)
    w, b = linear.linear.weight, linear.linear.bias                  # (N, D, D), (N, D): feature i's own Linear
    want = torch.relu(torch.einsum("bnd,nde->bne", e, w) + b)
    assert torch.allclose(flat_out, want.flatten(1), atol=1e-5)
    assert len(per_feature) == 3 and torch.allclose(per_feature[1], want[:, 1], atol=1e-5)


def test_autodis_formula():
    layer = perturb(build("AutoDisEmbedding", {"embedding_dim": 2, "num_bins": 3, "temperature": 0.7,
                                               "keep_prob": 0.5}, randn(2, 2)))
    x = randn(4, 2)
    out = layer(x).view(4, 2, 2)
    for b in range(4):
        for n in range(2):
            h = F.leaky_relu(layer.project_w[n] * x[b, n], 0.2)              # (K,)
            s = layer.project_mat[n] @ h + 0.5 * h
            want = torch.softmax(s / 0.7, 0) @ layer.meta_embedding[n]
            assert torch.allclose(out[b, n], want, atol=1e-6)


def test_keras_layers():
    x = [randn(3, 4), randn(3, 4, seed=1)]
    assert torch.allclose(build("Add", None, x)(x), x[0] + x[1])
    assert torch.equal(build("Concatenate", {"axis": 1}, x)(x), torch.cat(x, 1))
    dense = perturb(build("Dense", {"units": 2, "activation": "sigmoid"}, x[0]))
    assert torch.allclose(dense(x[0]), torch.sigmoid(x[0] @ dense[0].weight.T + dense[0].bias))
    assert build("Dense", {"units": 2, "use_bias": False}, x[0]).bias is None
    ln = perturb(build("LayerNormalization", {}, x[0]))
    assert ln.eps == 1e-3 and torch.allclose(ln(x[0]), F.layer_norm(x[0], (4,), ln.weight, ln.bias, 1e-3))
    bn = build("BatchNormalization", {}, x[0])
    assert (bn.momentum, bn.eps) == (pytest.approx(0.01), 1e-3)
    drop = build("Dropout", {"rate": 0.3}, x[0])
    assert drop.p == 0.3 and torch.equal(drop(x[0]), x[0])


# ---------------------------------------------------------------------- interaction components
def test_fm_and_its_variant():
    x = fields(3, [4, 4, 4])
    pairs = sum(x[i] * x[j] for i in range(3) for j in range(i + 1, 3))
    assert torch.allclose(build("FM", {}, x)(x), pairs.sum(1, keepdim=True), atol=1e-6)
    assert torch.allclose(build("FM", {"use_variant": True}, x)(x), pairs, atol=1e-6)
    stacked = torch.stack(x, 1)
    assert torch.allclose(build("FM", {"use_variant": True}, stacked)(stacked), pairs, atol=1e-6)


def test_dot_interaction():
    x = randn(2, 3, 4)
    gram = x @ x.transpose(1, 2)
    strict = build("DotInteraction", {}, x)(x)
    assert torch.allclose(strict, torch.stack([gram[:, 0, 1], gram[:, 0, 2], gram[:, 1, 2]], 1), atol=1e-6)
    assert build("DotInteraction", {"self_interaction": True}, x)(x).shape == (2, 6)
    skip = build("DotInteraction", {"skip_gather": True}, x)(x).view(2, 3, 3)
    assert torch.allclose(skip, gram.tril(-1), atol=1e-6)
    full = build("DotInteraction", {"skip_gather": True, "self_interaction": True}, x)(x).view(2, 3, 3)
    assert torch.allclose(full, gram.tril(), atol=1e-6)


def test_cross_formula_with_diag_scale_and_low_rank():
    x0, x = randn(4, 5), randn(4, 5, seed=1)
    full = perturb(build("Cross", {"diag_scale": 0.5}, [x0, x]))
    w, b = full.up.weight, full.up.bias
    assert torch.allclose(full([x0, x]), x0 * ((w + 0.5 * torch.eye(5)) @ x.T + b[:, None]).T + x, atol=1e-5)
    assert torch.allclose(full(x0), full([x0, x0]))
    low = perturb(build("Cross", {"projection_dim": 2, "use_bias": False}, x0))
    assert low.up.bias is None and low.down.weight.shape == (2, 5)
    assert torch.allclose(low([x0, x]), x0 * (x @ low.down.weight.T @ low.up.weight.T) + x, atol=1e-5)
    with pytest.raises(ConfigError, match=r"diag_scale': must be >= 0"):
        build("Cross", {"diag_scale": -1}, x0)


def test_cin_formula():
    x = randn(2, 3, 4)
    cin = perturb(build("CIN", {"hidden_feature_sizes": [2, 2]}, x))
    layers = cin.layer.layers
    hidden, pooled = x, []
    for layer in layers:  # X^k_h = relu(sum_ij W_h,ij X^{k-1}_i ∘ X^0_j + b_h)
        w = layer.weight.view(layer.out_features, hidden.shape[1], 3)
        hidden = torch.relu(torch.einsum("hij,bid,bjd->bhd", w, hidden, x) + layer.bias[None, :, None])
        pooled.append(hidden.sum(-1))
    assert torch.allclose(cin(x), torch.cat(pooled, 1), atol=1e-5)


@pytest.mark.parametrize("kind", ["all", "each", "interaction"])
@pytest.mark.parametrize("plus", [True, False])
def test_bilinear_types(kind, plus):
    dims = [3, 3, 3] if kind != "interaction" else [2, 4, 3]
    x = fields(2, dims)
    layer = perturb(build("BiLinear", {"type": kind, "use_plus": plus, "num_output_units": 2}, x))
    w, b = layer.weight, layer.bias
    parts = []
    for p, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        k = {"all": 0, "each": i, "interaction": p}[kind]
        left = x[i] @ w[k, :dims[i], :dims[j]] + b[k, :dims[j]]     # v_i W (+ b), D_j wide
        product = left * x[j]
        parts.append(product.sum(-1, keepdim=True) if plus else product)
    want = layer.output(torch.cat(parts, -1))
    assert torch.allclose(layer(x), want, atol=1e-5)


def test_bilinear_needs_equal_widths_except_interaction():
    with pytest.raises(ConfigError, match=r"bilinear\.type': type 'each' needs features of equal width"):
        build("BiLinear", {"type": "each", "num_output_units": 2}, fields(2, [2, 3]))


def test_fibinet_composes_senet_bilinear_and_mlp():
    x = fields(3, [4, 4, 4])
    net = perturb(build("FiBiNet", CASES["FiBiNet"][0], x))
    want = net.top(torch.cat([net.senet(x), net.bilinear(x)], -1))
    assert torch.allclose(net(x), want) and net(x).shape == (3, 4)
    only = build("FiBiNet", {"senet": {}}, x)
    assert only.bilinear is None and only(x).shape == (3, 12)


# ---------------------------------------------------------------------- feature importance
def test_senet_squeeze_excitation_reweight():
    x = fields(3, [4, 2, 6])
    layer = perturb(build("SENet", {"reduction_ratio": 3, "num_squeeze_group": 2}, x))
    assert layer.reduce.out_features == max(1, 3 * 2 * 2 // 3)
    z = torch.cat([torch.stack([v.view(3, 2, -1).amax(-1), v.view(3, 2, -1).mean(-1)], 1).flatten(1) for v in x], 1)
    assert torch.allclose(layer.squeeze(x), z)
    a = layer.excite(torch.relu(layer.reduce(z)))
    cat = torch.cat(x, -1)
    want = F.layer_norm(cat * a + cat, (12,), layer.norm.weight, layer.norm.bias, 1e-3)
    assert torch.allclose(layer(x), want, atol=1e-5)
    bare = perturb(build("SENet", {"use_skip_connection": False, "use_output_layer_norm": False}, x))
    assert torch.allclose(bare(x), cat * bare.excite(torch.relu(bare.reduce(bare.squeeze(x)))), atol=1e-6)
    stacked = torch.stack(fields(3, [4, 4]), 1)
    same = build("SENet", {}, stacked)
    assert torch.allclose(same(stacked), same(list(stacked.unbind(1))), atol=1e-6)
    with pytest.raises(ConfigError, match=r"num_squeeze_group': every feature width must be a multiple of 4"):
        build("SENet", {"num_squeeze_group": 4}, fields(2, [4, 6]))


def test_maskblock_instance_guided_mask():
    x, u = randn(3, 5), randn(3, 4, seed=1)
    block = perturb(build("MaskBlock", {"reduction_factor": 1.5, "output_size": 2, "input_layer_norm": True}, [x, u]))
    assert block.aggregate.out_features == 6                          # int(4 * 1.5)
    mask = block.mask(torch.relu(block.aggregate(u)))
    h = block.input_norm(x) * mask
    linear, norm = block.output[0], block.output[1]
    assert linear.bias is None
    assert torch.allclose(block([x, u]), torch.relu(F.layer_norm(h @ linear.weight.T, (2,), norm.weight, norm.bias,
                                                                 1e-3)), atol=1e-5)
    plain = perturb(build("MaskBlock", {"aggregation_size": 3}, x))
    assert torch.allclose(plain(x), x * plain.mask(torch.relu(plain.aggregate(x))), atol=1e-6)


def test_masknet_parallel_and_serial():
    x = randn(3, 5)
    blocks = [{"aggregation_size": 4, "output_size": 3}, {"aggregation_size": 2}]
    par = perturb(build("MaskNet", {"mask_blocks": blocks}, x))
    xn = par.input_norm(x)
    assert torch.allclose(par(x), torch.cat([par.blocks[0]([xn, xn]), par.blocks[1]([xn, xn])], -1), atol=1e-6)
    ser = perturb(build("MaskNet", {"mask_blocks": blocks, "use_parallel": False, "input_layer_norm": False}, x))
    assert torch.allclose(ser(x), ser.blocks[1]([ser.blocks[0]([x, x]), x]), atol=1e-6)
    assert ser(x).shape == (3, 3)


@pytest.mark.parametrize("mode", ["eager", "lazy"])
def test_ppnet_two_sigmoid_gates(mode):
    x, p = randn(4, 5), randn(4, 2, seed=1)
    net = perturb(build("PPNet", {"mlp": {"hidden_units": [6, 3], "use_bn": False, "use_final_bn": False},
                                  "gate_params": {"hidden_dim": 4}, "mode": mode}, [x, p]))
    z = torch.cat([x, p], -1)
    for gate in net.gates:
        g = gate(z)
        assert torch.allclose(g, 2 * torch.sigmoid(gate.weight(torch.relu(gate.hidden[0](z)))), atol=1e-6)
        assert bool((g > 0).all() and (g < 2).all())
    h = x
    for layer, gate in zip(net.layers, net.gates):
        h = layer(h * gate(z)) if mode == "eager" else layer(h) * gate(z)
    assert torch.allclose(net([x, p]), h, atol=1e-6)
    assert [g.output_dim for g in net.gates] == ([5, 6] if mode == "eager" else [6, 3])
    # full_gate_input: the gates see x with its gradient stopped
    xg = x.clone().requires_grad_()
    net([xg, p]).sum().backward()
    want = xg.detach().clone().requires_grad_()
    h = want
    for layer, gate in zip(net.layers, net.gates):
        g = gate(z)
        h = layer(h * g) if mode == "eager" else layer(h) * g
    h.sum().backward()
    assert torch.allclose(xg.grad, want.grad, atol=1e-6)


def test_ppnet_eager_gate_must_match_the_input():
    with pytest.raises(ConfigError, match=r"gate_params\.output_dim': in eager mode .* width 5, got 3"):
        build("PPNet", {"mlp": {"hidden_units": [4]}, "gate_params": {"output_dim": 3}}, [randn(2, 5), randn(2, 2)])


# ---------------------------------------------------------------------- sequence components
@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
def test_din_target_attention(normalizer):
    seq, lengths, target = sequence(4, 5, 4, 4)
    din = perturb(build("DIN", {"attention_dnn": {"hidden_units": [3, 1], "use_bn": False},
                                "attention_normalizer": normalizer}, [seq, lengths, target]))
    scorer = din.unit.mlp
    assert scorer[-1].__class__ is nn.Identity and scorer[-2].bias is not None   # linear final layer with bias
    out = din([seq, lengths, target])
    for b in range(4):
        n = int(lengths[b])
        if n == 0:
            assert torch.allclose(out[b], torch.cat([torch.zeros(4), target[b]]))
            continue
        k, q = seq[b, :n], target[b].expand(n, 4)
        s = scorer(torch.cat([q, k, q - k, q * k], -1)).squeeze(-1)
        w = torch.softmax(s, 0) if normalizer == "softmax" else torch.sigmoid(s / 2.0)
        assert torch.allclose(out[b], torch.cat([w @ k, target[b]]), atol=1e-5)
    padded = seq.clone()
    padded[0] = 7.0                                                   # row 0 is all padding: no effect
    assert torch.allclose(din([padded, lengths, target]), out)


def test_din_narrow_target_is_padded():
    seq, lengths, target = sequence(3, 4, 5, 3)
    din = build("DIN", {"attention_dnn": {"hidden_units": [1]}, "need_target_feature": False}, [seq, lengths, target])
    assert din([seq, lengths, target]).shape == (3, 3)


def test_multi_head_attention_formula():
    q, v, lengths = randn(2, 3, 4), randn(2, 5, 6, seed=1), torch.tensor([2, 5])
    mha = perturb(build("MultiHeadAttention", {"num_heads": 2, "key_dim": 3, "value_dim": 2, "use_causal_mask": True},
                        [q, v, lengths]))
    out = mha([q, v, lengths])
    Q = (q @ mha.query.weight.T + mha.query.bias).view(2, 3, 2, 3)
    K = (v @ mha.key.weight.T + mha.key.bias).view(2, 5, 2, 3)
    V = (v @ mha.value.weight.T + mha.value.bias).view(2, 5, 2, 2)
    heads = torch.zeros(2, 3, 2, 2)
    for b in range(2):
        for h in range(2):
            for t in range(3):
                s = min(int(lengths[b]), t + 1)                      # real keys, causal
                w = torch.softmax(K[b, :s, h] @ Q[b, t, h] / math.sqrt(3), 0)
                heads[b, t, h] = w @ V[b, :s, h]
    assert torch.allclose(out, mha.output(heads.reshape(2, 3, 4)), atol=1e-5)
    self_attn = build("MultiHeadAttention", {"num_heads": 1, "key_dim": 4}, q)
    assert self_attn(q).shape == (2, 3, 4)


def test_transformer_block_formula_and_padding():
    x, lengths = sequence(3, 4, 4)[:2]
    block = perturb(build("TransformerBlock", {"hidden_size": 4, "num_attention_heads": 2, "intermediate_size": 5,
                                                "hidden_act": "gelu"}, [x, lengths]))
    attended, _ = block.attention.attend(x, x, None, lengths)
    h = F.layer_norm(x + attended, (4,), block.norm1.weight, block.norm1.bias, 1e-6)
    inner = F.gelu(h @ block.intermediate.weight.T + block.intermediate.bias)
    ffn = inner @ block.project.weight.T + block.project.bias
    want = F.layer_norm(h + ffn, (4,), block.norm2.weight, block.norm2.bias, 1e-6)
    assert torch.allclose(block([x, lengths]), want, atol=1e-5)
    row = 1
    n = int(lengths[row])
    changed = x.clone()
    changed[row, n:] = 9.0                                          # padding does not reach the real positions
    assert torch.allclose(block([changed, lengths])[row, :n], want[row, :n], atol=1e-5)
    with pytest.raises(ConfigError, match=r"input width 4 must equal hidden_size 6"):
        build("TransformerBlock", {"hidden_size": 6, "num_attention_heads": 2}, x)


def test_transformer_encoder():
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    enc = build("TransformerEncoder", {"vocab_size": 6, "hidden_size": 4, "num_attention_heads": 2,
                                       "output_all_token_embeddings": False}, ids)
    assert enc.positions[1, 0] == pytest.approx(math.sin(1.0)) and enc.positions[1, 2] == pytest.approx(math.cos(1.0))
    x = enc.embedding(ids) * 2.0 + enc.positions[:3]
    assert torch.allclose(enc(ids), enc.layers[0].encode(x)[:, 0], atol=1e-6)
    long = torch.randint(0, 6, (2, 700))
    assert build("TransformerEncoder", {"vocab_size": 6, "hidden_size": 4, "num_attention_heads": 2},
                 long)(long).shape == (2, 512, 4)


def test_bst_target_token_positions_and_output():
    seq, lengths, target = sequence(3, 4, 3, 3)
    params = {"hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 6,
              "max_position_embeddings": 5}
    bst = perturb(build("BST", params, [seq, lengths, target]))
    out = bst([seq, lengths, target])
    assert out.shape == (3, 6 * 4)                                  # (max + target) * H, padded to max
    s = bst.seq_project(F.pad(seq, (0, 0, 0, 1)))
    x = torch.cat([bst.target_project(target).unsqueeze(1), s], 1) + bst.positions
    x = F.layer_norm(x, (4,), bst.norm.weight, bst.norm.bias, 1e-12)
    mask = torch.cat([torch.ones(3, 1, dtype=torch.bool), torch.arange(5) < lengths[:, None]], 1)
    assert torch.allclose(out, bst.layers[0].encode(x, mask).flatten(1), atol=1e-5)
    head = perturb(build("BST", {**params, "output_all_token_embeddings": False}, [seq, lengths, target]))
    changed = seq.clone()
    changed[0] = 5.0                                                 # row 0 is all padding
    assert head([seq, lengths, target]).shape == (3, 4)
    assert torch.allclose(head([changed, lengths, target]), head([seq, lengths, target]), atol=1e-5)
    tail = build("BST", {**params, "target_item_position": "ignore"}, [seq, lengths])
    assert tail([seq, lengths]).shape == (3, 6 * 4)                  # a reserved (zero) token keeps the width
    with pytest.raises(ConfigError, match=r"widths must be equal, got sequence 3 and target 2"):
        build("BST", params, sequence(2, 3, 3, 2))


# ---------------------------------------------------------------------- multi-task
@pytest.mark.parametrize("expert_mlp, fused", [
    ({"hidden_units": [4, 3]}, True),                                 # EasyRec's defaults: one bank (MLPExperts)
    ({"hidden_units": [4], "use_bn": False, "use_bias": True, "use_final_bn": False, "use_final_bias": True}, True),
    ({"hidden_units": [4], "final_activation": "linear"}, False),       # last layer unlike the others: one MLP each
    ({"hidden_units": [4], "use_bn": False}, False),                    # no bias and no BatchNorm: one MLP each
])
def test_mmoe_gates_mix_experts(expert_mlp, fused):
    x = randn(4, 5)
    mmoe = perturb(build("MMoE", {"num_task": 2, "num_expert": 3, "expert_mlp": expert_mlp}, x))
    assert isinstance(mmoe.bank, MLPExperts) == fused and (mmoe.experts is None) == fused
    outs = mmoe(x)
    experts = mmoe.bank(x) if fused else torch.stack([e(x) for e in mmoe.experts], 1)   # (B, E, H)
    logits = (x @ mmoe.gates.linear.weight.T + mmoe.gates.linear.bias).view(4, 2, 3)
    for t in range(2):
        w = torch.softmax(logits[:, t], -1)
        assert torch.allclose(outs[t], (w.unsqueeze(-1) * experts).sum(1), atol=1e-6)
    if fused and not expert_mlp.get("use_bn", True):  # expert e: relu(x W_e + b_e), rows 4e..4e+3 of the fused Linear
        first = mmoe.bank.first
        assert torch.allclose(experts[:, 1], torch.relu(x @ first.weight[4:8].T + first.bias[4:8]), atol=1e-6)
    given = [randn(4, 3, seed=i) for i in range(3)] + [x]
    external = perturb(build("MMoE", {"num_task": 2, "num_expert": 3}, given))
    assert [o.shape for o in external(given)] == [(4, 3), (4, 3)]


def test_aitm_tower_attention():
    z = [randn(3, 4), randn(3, 5, seed=1)]
    tower = perturb(build("AITMTower", {"project_dim": 2, "transfer_mlp": {"hidden_units": [4], "use_bn": False}}, z))
    towers = [z[0], tower.transfer(z[1])]
    q = tower.query(z[0])
    keys = [k(t) for k, t in zip(tower.keys, towers)]
    values = [v(t) for v, t in zip(tower.values, towers)]
    w = torch.softmax(torch.stack([(k * q).sum(-1) for k in keys], 1) / math.sqrt(2), -1)
    assert torch.allclose(tower(z), w[:, :1] * values[0] + w[:, 1:] * values[1], atol=1e-6)
    dep = z[1].clone().requires_grad_()
    tower([z[0], dep]).sum().backward()
    assert dep.grad is None or not dep.grad.abs().sum()              # stop_gradient
    assert isinstance(build("AITMTower", {}, z[0]), nn.Identity)

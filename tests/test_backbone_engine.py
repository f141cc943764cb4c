"""The backbone engine (recstack/backbone/spec.py, engine.py, expressions.py) on stand-in input layers.

The input layers here are tiny modules that read one batch key per feature group, so these tests check
the DAG itself: validation errors (naming block and key), merge rules, every block kind, packages that
share parameters, the outputs, shape errors found at build time, and trace/ONNX parity.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from recstack.backbone.engine import Backbone, merge
from recstack.backbone.expressions import compile_lambda, parse_slice
from recstack.backbone.spec import find_cycle, parse_backbone
from recstack.config import ConfigError
from recstack.easyrec.schema import Node

GROUPS = {"a": 4, "b": 3, "seq": 6}


class StandInInput(nn.Module):
    """The group's tensor from the batch, times ``options.scale`` (an input layer's stand-in)."""

    def __init__(self, group: str, options: Node | None) -> None:
        super().__init__()
        self.input_names = [group]
        self.group = group
        self.scale = float(options.get("scale", 1.0, type=float)) if options is not None else 1.0
        if options is not None:
            options.finish()

    def forward(self, batch):
        return batch[self.group] * self.scale


class AddPair(nn.Module):
    """``x0 + W x`` on a list ``[x0, x]`` (a Cross-like step for the recurrent tests)."""

    def __init__(self, input_shape) -> None:
        super().__init__()
        width = input_shape[0][0]
        self.linear = nn.Linear(width, width)

    def forward(self, pair):
        x0, x = pair
        return x0 + self.linear(x)


def batch(rows: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(rows, width, generator=g) for name, width in GROUPS.items()}


def build(blocks, **extra) -> Backbone:
    torch.manual_seed(0)
    node = Node(None, "backbone", {"blocks": blocks, **extra})
    spec = parse_backbone(node, list(GROUPS))
    return Backbone(spec, StandInInput, batch(2))


def linear(out: int) -> dict:
    return {"class_name": "torch.nn.LazyLinear", "st_params": {"out_features": out}}


# ---------------------------------------------------------------------- expressions
@pytest.mark.parametrize("text, value", [("[1]", 1), ("[0:2]", slice(0, 2)), ("[-1]", -1), ("[:, 0]", (slice(None), 0)),
                                         ("[..., 1:3]", (Ellipsis, slice(1, 3))), ("[::2]", slice(None, None, 2))])
def test_input_slice_is_parsed_not_evaluated(text, value):
    assert parse_slice(text, "k") == value


@pytest.mark.parametrize("text", ["1", "[x]", "[__import__('os')]", "[1.5]", "[0:n]", "[", "[f()]"])
def test_bad_input_slices_name_the_key(text):
    with pytest.raises(ConfigError, match=r"^blocks\[0\]\.input_slice: "):
        parse_slice(text, "blocks[0].input_slice")


def test_lambdas_see_torch_and_their_arguments_only():
    fn = compile_lambda("lambda x: torch.stack([v * 2 for v in x], 0).sum(0)", "k")
    assert torch.equal(fn([torch.ones(2), torch.ones(2)]), torch.full((2,), 4.0))
    for text, why in [("lambda x: __import__('os')", "names starting with '_'"),
                      ("lambda x: x.__class__", "attributes starting with '_'"),
                      ("lambda x: open('f')", "unknown name 'open'"),
                      ("lambda x: len(x)", "unknown name 'len'"),
                      ("lambda x: (y := x)", "assignment expressions"),
                      ("x + 1", "must be a lambda"),
                      ("lambda x: x +", "not valid Python")]:
        with pytest.raises(ConfigError, match=rf"^blocks\[1\]\.input_fn: .*{why}"):
            compile_lambda(text, "blocks[1].input_fn")


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("blocks, message", [
    ([{"name": "x", "inputs": [{"feature_group_name": "a"}]}, {"name": "x", "inputs": [{"block_name": "x"}]}],
     r"duplicate block name 'x'"),
    ([{"name": "x", "inputs": [{"block_name": "y"}]}, {"name": "yy", "inputs": [{"feature_group_name": "a"}]}],
     r"unknown block 'y'; did you mean 'yy'\?"),
    ([{"name": "x", "inputs": [{"feature_group_name": "aa"}]}], r"unknown feature group 'aa'; did you mean 'a'\?"),
    ([{"name": "x", "inputs": [{"block_name": "z"}]}, {"name": "y", "inputs": [{"block_name": "x"}]},
      {"name": "z", "inputs": [{"block_name": "y"}]}], r"the blocks form a cycle: (x -> z -> y -> x|.*)"),
    ([{"name": "a", "inputs": [{"feature_group_name": "a"}], "lambda": {"expression": "lambda x: x"}}],
     r"block 'a' is named like a feature group; only an input_layer block"),
    ([{"name": "x", "inputs": [{"feature_group_name": "a"}]},
      {"name": "y", "inputs": [{"block_name": "x"}], "input_layer": {}}],
     r"input_layer block 'y' takes exactly one input, a feature_group_name"),
    ([{"name": "x", "inputs": [{"feature_group_name": "a"}], "lambda": {"expression": "lambda x: x"},
       "keras_layer": linear(2)}], r"one of input_layer, lambda, keras_layer, recurrent, repeat per block"),
    ([{"name": "x", "inputs": [{"feature_group_name": "a", "block_name": "b"}]}], r"exactly one of feature_group_name"),
    ([{"name": "x", "inputs": [{"package_name": "p"}]}], r"unknown package 'p'"),
    ([{"name": "x.y", "inputs": [{"feature_group_name": "a"}]}], r"contain no '\.'"),
    ([{"name": "x", "inputs": []}], r"block 'x' has no inputs"),
    ([{"name": "x", "inputs": [{"feature_group_name": "a"}], "colour": 1}],
     r"unknown key 'backbone\.blocks\[0\]\.colour'"),
    ([{"name": "x", "inputs": [{"feature_group_name": "a", "input_fn": "lambda v: _v"}]}], r"input_fn': .*'_'"),
    ([{"name": "x", "inputs": [{"feature_group_name": "a", "reset_input": {}}]}], r"reset_input is not supported"),
])
def test_invalid_graphs_name_the_block_and_key(blocks, message):
    with pytest.raises(ConfigError, match=message):
        parse_backbone(Node(None, "backbone", {"blocks": blocks}), list(GROUPS))


def test_find_cycle_reports_the_loop_in_order():
    assert find_cycle({"x": ["y"], "y": ["z"], "z": ["x"], "w": ["x"]}) in (["x", "y", "z", "x"],)
    assert find_cycle({"x": ["y"], "y": []}) is None


def test_a_block_nothing_reads_is_a_warning_and_skipped(caplog):
    with caplog.at_level(logging.WARNING):
        net = build([{"name": "x", "inputs": [{"feature_group_name": "a"}]},
                     {"name": "unused", "inputs": [{"feature_group_name": "b"}]}], concat_blocks=["x"])
    assert "block 'unused' is not read by any block nor an output" in caplog.text
    assert net.graph.order == ["x"]


# ---------------------------------------------------------------------- merging and block kinds
def test_merge_rules():
    a, b = torch.ones(2, 3), torch.zeros(2, 2)
    assert merge([a], -1, False) is a
    assert merge([a, b], -1, False).shape == (2, 5)
    assert [t.shape for t in merge([[a, b], a], -1, False)] == [(2, 3), (2, 2), (2, 3)]  # a list input: flattened
    assert [t.shape for t in merge([a, b], -1, True)] == [(2, 3), (2, 2)]


def test_input_layers_merge_slice_lambda_and_component():
    net = build([
        {"name": "a", "inputs": [{"feature_group_name": "a"}], "input_layer": {"scale": 2.0}},
        {"name": "ab", "inputs": [{"block_name": "a"}, {"feature_group_name": "b"}]},           # concat (B, 7)
        {"name": "pair", "inputs": [{"block_name": "a"}, {"feature_group_name": "b"}], "merge_inputs_into_list": True},
        {"name": "second", "inputs": [{"block_name": "pair", "input_slice": "[1]"}],
         "lambda": {"expression": "lambda x: x * 3"}},
        {"name": "dense", "inputs": [{"block_name": "ab"}], "keras_layer": linear(5)},
    ], concat_blocks=["dense", "second"])
    x = batch()
    out = net(x)
    dense = net.graph.blocks["dense"].layers[0].module
    expected = torch.cat([dense(torch.cat([x["a"] * 2, x["b"]], -1)), x["b"] * 3], -1)
    assert out.shape == (5, 8) and torch.allclose(out, expected)
    assert net.input_names == ["a", "b"] and net.output_shape == (8,)


def test_recurrent_keeps_the_fixed_input_and_steps_own_layers():
    net = build([
        {"name": "cross", "inputs": [{"feature_group_name": "a", "input_fn": "lambda x: [x, x]"}],
         "recurrent": {"num_steps": 3, "fixed_input_index": 0,
                       "keras_layer": {"class_name": "test_backbone_engine.AddPair"}}},
    ])
    x = batch()["a"]
    steps = [s.module for s in net.graph.blocks["cross"].layers[0].steps]
    assert len({id(s.linear.weight) for s in steps}) == 3  # one layer per step, not shared
    expected = x
    for s in steps:
        expected = x + s.linear(expected)
    assert torch.allclose(net(batch()), expected)


def test_repeat_builds_one_layer_per_repeat_and_concatenates():
    net = build([{"name": "heads", "inputs": [{"feature_group_name": "seq"}],
                  "repeat": {"num_repeat": 3, "output_concat_axis": -1, "input_slice": "[:, {i}]",
                             "input_fn": "lambda x: x.unsqueeze(-1)", "keras_layer": linear(2)}}])
    x = batch()["seq"]
    layers = [r.module for r in net.graph.blocks["heads"].layers[0].layers]
    expected = torch.cat([layers[i](x[:, i].unsqueeze(-1)) for i in range(3)], -1)
    assert torch.allclose(net(batch()), expected)
    listed = build([{"name": "heads", "inputs": [{"feature_group_name": "a"}],
                     "repeat": {"num_repeat": 2, "keras_layer": linear(3)}}], output_blocks=["heads"])
    assert [t.shape for t in listed(batch())] == [(5, 3), (5, 3)]


def test_layers_run_in_sequence():
    net = build([{"name": "stack", "inputs": [{"feature_group_name": "a"}],
                  "layers": [{"keras_layer": linear(6)}, {"lambda": {"expression": "lambda x: torch.relu(x)"}},
                             {"keras_layer": linear(2)}]}])
    first, _, last = net.graph.blocks["stack"].layers
    x = batch()["a"]
    assert torch.allclose(net(batch()), last(torch.relu(first(x))))


def test_packages_share_their_parameters_across_calls():
    net = build([{"name": "twice", "inputs": [{"package_name": "enc"}, {"package_name": "enc"}]}],
                packages=[{"name": "enc", "blocks": [
                    {"name": "x", "inputs": [{"feature_group_name": "a"}], "input_layer": {}},
                    {"name": "h", "inputs": [{"block_name": "x"}], "keras_layer": linear(3)}]}])
    assert sum(p.numel() for p in net.parameters()) == 4 * 3 + 3  # one Linear, called twice
    out = net(batch())
    assert out.shape == (5, 6) and torch.equal(out[:, :3], out[:, 3:])


def test_output_blocks_and_leaves():
    net = build([{"name": "x", "inputs": [{"feature_group_name": "a"}]},
                 {"name": "y", "inputs": [{"feature_group_name": "b"}]}], output_blocks=["y", "x"])
    y, x = net(batch())
    assert torch.equal(x, batch()["a"]) and torch.equal(y, batch()["b"])
    leaves = build([{"name": "x", "inputs": [{"feature_group_name": "a"}]},
                    {"name": "y", "inputs": [{"feature_group_name": "b"}]}])
    assert leaves(batch()).shape == (5, 7)


# ---------------------------------------------------------------------- errors at build time
def test_a_shape_that_does_not_fit_names_the_block_and_shapes():
    with pytest.raises(ConfigError, match=r"block 'dense' \(torch.nn.Linear\) does not fit its input \(B, 4\)"):
        build([{"name": "dense", "inputs": [{"feature_group_name": "a"}],
                "keras_layer": {"class_name": "torch.nn.Linear", "st_params": {"in_features": 7, "out_features": 2}}}])
    with pytest.raises(ConfigError, match=r"block 'bad' cannot merge its inputs \(B, 4\), \(B, 6\)"):
        build([{"name": "bad", "inputs": [{"feature_group_name": "a"}, {"feature_group_name": "seq"}],
                "input_concat_axis": 0, "extra_input_fn": "lambda x: x.view(-1, 3)"}])


def test_unknown_component_and_foreign_parameters():
    with pytest.raises(ConfigError, match=r"unsupported backbone component 'SENett'; did you mean 'SENet'\?"):
        build([{"name": "x", "inputs": [{"feature_group_name": "a"}], "keras_layer": {"class_name": "SENett"}}])
    with pytest.raises(ConfigError, match=r"'senet' parameters do not belong to MLP \(its parameters go in 'mlp' or "
                                          r"st_params\)"):
        build([{"name": "x", "inputs": [{"feature_group_name": "a"}],
                "keras_layer": {"class_name": "MLP", "senet": {"reduction_ratio": 2}}}])
    with pytest.raises(ConfigError, match=r"unknown key 'backbone\.blocks\[0\]\.keras_layer\.mlp\.hidden_unit'"):
        build([{"name": "x", "inputs": [{"feature_group_name": "a"}],
                "keras_layer": {"class_name": "MLP", "mlp": {"hidden_units": [4], "hidden_unit": [4]}}}])


def test_top_mlp_on_the_output():
    net = build([{"name": "x", "inputs": [{"feature_group_name": "a"}, {"feature_group_name": "b"}]}],
                top_mlp={"hidden_units": [8, 4]})
    assert net.output_shape == (4,) and net(batch()).shape == (5, 4)


# ---------------------------------------------------------------------- export
class Exported(nn.Module):
    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, a, b, seq):
        return self.backbone({"a": a, "b": b, "seq": seq})


def test_trace_and_onnx_parity(tmp_path):
    import onnxruntime as ort

    net = build([
        {"name": "ab", "inputs": [{"feature_group_name": "a"}, {"feature_group_name": "b"}]},
        {"name": "cross", "inputs": [{"block_name": "ab", "input_fn": "lambda x: [x, x]"}],
         "recurrent": {"num_steps": 2, "fixed_input_index": 0,
                       "keras_layer": {"class_name": "test_backbone_engine.AddPair"}}},
        {"name": "dense", "inputs": [{"block_name": "cross"}, {"feature_group_name": "seq"}],
         "keras_layer": linear(3)},
    ]).eval()
    module = Exported(net).eval()
    x = batch(7)
    inputs = (x["a"], x["b"], x["seq"])
    eager = module(*inputs)
    traced = torch.jit.trace(module, inputs)
    assert torch.allclose(traced(*batch(3).values()), module(*batch(3).values()), atol=1e-6)
    path = tmp_path / "bb.onnx"
    torch.onnx.export(module, inputs, str(path), input_names=["a", "b", "seq"], output_names=["out"],
                      dynamic_axes={n: {0: "B"} for n in ["a", "b", "seq", "out"]}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"a": x["a"].numpy(), "b": x["b"].numpy(), "seq": x["seq"].numpy()})
    np.testing.assert_allclose(got, eager.detach().numpy(), atol=1e-5)

"""The backbone as an ``nn.Module``: blocks built from a :class:`~recstack.backbone.spec.BackboneSpec`, run in a
precomputed order.

Building walks the blocks once in execution order on a small example batch: each block's input is
merged from the example outputs of the blocks before it, its component is built for that input's
shape (:mod:`recstack.backbone.components`) and run once, so the next block knows its input shape and
a shape that does not fit fails here, naming the block and the shapes, not in the first training
step. ``forward`` then repeats the same walk over the plan (a list of block names); nothing is
looked up by name in the config per batch.

Merging a block's inputs (EasyRec's rules): one input passes as it is; several tensors are
concatenated on ``input_concat_axis`` (default -1); if any input is a list, all are flattened into
one list in order; ``merge_inputs_into_list: true`` keeps the inputs as a list. Each input may first
be cut with ``input_slice`` and transformed with ``input_fn``; ``extra_input_fn`` transforms the merged
input; ``ignore_input: true`` orders the block after that input without passing it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recstack.backbone.components import InputShape, lookup
from recstack.backbone.expressions import apply_slice, compile_lambda, parse_slice
from recstack.backbone.spec import BackboneSpec, BlockSpec, GraphSpec, LayerSpec
from recstack.config import ConfigError
from recstack.easyrec.schema import Node, source

#: ``(group name, input_layer options or None) -> module`` whose ``forward(batch)`` returns the group's
#: output and whose ``input_names`` lists the batch keys it reads
InputLayerFactory = Callable[[str, Node | None], nn.Module]


def shape_of(value: Any) -> InputShape:
    """The shape (without the batch axis) of a tensor, or the list of shapes of a list."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape[1:])
    if isinstance(value, (list, tuple)):
        return [shape_of(v) for v in value]
    raise TypeError(f"a block produced {type(value).__name__}, expected a tensor or a list of tensors")


def describe(value: Any) -> str:
    """``(B, 16)`` or ``[(B, 8), (B, 8)]`` for error messages."""
    shape = shape_of(value)

    def text(s: Any) -> str:
        return "[" + ", ".join(text(x) for x in s) + "]" if isinstance(s, list) else f"(B, {', '.join(map(str, s))})"

    return text(shape)


def flatten(values: Sequence[Any]) -> list[torch.Tensor]:
    """Nested lists of tensors as one flat list, in order."""
    out: list[torch.Tensor] = []
    for v in values:
        out.extend(flatten(v) if isinstance(v, (list, tuple)) else [v])
    return out


def merge(parts: Sequence[Any], axis: int, into_list: bool) -> Any:
    """A block's merged input from its (sliced, transformed) inputs; see the module docstring."""
    if into_list:
        return list(parts)
    if len(parts) == 1:
        return parts[0]
    if any(isinstance(p, (list, tuple)) for p in parts):
        return flatten(parts)
    return torch.cat(list(parts), dim=axis)


def gather(spec: BlockSpec, values: Mapping[str, Any], group: Callable[[str], Any],
           package: Callable[[str], Any]) -> list[Any]:
    """A block's inputs in order: earlier blocks' outputs from ``values``, ``group(name)`` for a feature group's
    default input layer, ``package(name)`` for a package call (the build walk and ``forward`` differ only there)."""
    return [values[i.name] if i.kind == "block" else group(i.name) if i.kind == "feature_group" else package(i.name)
            for i in spec.inputs]


class Lambda(nn.Module):
    """A compiled backbone expression as a module (no parameters)."""

    def __init__(self, text: str, where: str) -> None:
        super().__init__()
        self.text = text
        self.fn = compile_lambda(text, where)

    def forward(self, x: Any) -> Any:
        return self.fn(x)

    def extra_repr(self) -> str:
        return repr(self.text)


class Component(nn.Module):
    """A registered component's module; a list input goes in as one argument or spread (``list_input``)."""

    def __init__(self, module: nn.Module, list_input: bool, class_name: str) -> None:
        super().__init__()
        self.module = module
        self.list_input = list_input
        self.class_name = class_name

    def forward(self, x: Any) -> Any:
        if isinstance(x, (list, tuple)) and not self.list_input:
            return self.module(*x)
        return self.module(x)


class Recurrent(nn.Module):
    """``recurrent``: ``num_steps`` layers (not shared), each applied to the previous one's output.

    With ``fixed_input_index`` the input is a list whose element at that index stays fixed while the
    other element is replaced by each step's output (DCN's cross stack: ``x_{k+1} = Cross([x0, x_k])``);
    the output is the last step's.
    """

    def __init__(self, steps: Sequence[nn.Module], fixed_input_index: int | None) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.fixed = fixed_input_index

    def forward(self, x: Any) -> Any:
        if self.fixed is None:
            for step in self.steps:
                x = step(x)
            return x
        items = list(x)
        out = items[-1]
        for step in self.steps:
            out = step(items)
            items = [v if i == self.fixed else out for i, v in enumerate(items)]
        return out


class Repeat(nn.Module):
    """``repeat``: ``num_repeat`` layers on the same input (each may take its own slice / transform, ``{i}``
    in their text is the repeat's index); a list of outputs, or concatenated on ``output_concat_axis``."""

    def __init__(self, layers: Sequence[nn.Module], slices: Sequence[Any], fns: Sequence[Lambda | None],
                 output_concat_axis: int | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.slices = list(slices)
        self.fns = nn.ModuleList(f if f is not None else nn.Identity() for f in fns)
        self.axis = output_concat_axis

    def forward(self, x: Any) -> Any:
        outs = []
        for layer, index, fn in zip(self.layers, self.slices, self.fns):
            xi = apply_slice(x, index) if index is not None else x
            outs.append(layer(fn(xi)))
        return torch.cat(outs, dim=self.axis) if self.axis is not None else outs


class Block(nn.Module):
    """One block: input slices / functions, the merge, ``extra_input_fn``, then its layers in sequence.

    The expressions run as plain functions and a :class:`Component` / :class:`Lambda` layer through its
    ``forward`` (the component's own module is called as a module): the adapters hold no parameters, and a
    module call each per batch was a measurable part of a small model's step (doc/backbone.md, "Overhead").
    """

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        self.input_fns = nn.ModuleList(Lambda(i.input_fn, i.where) if i.input_fn else nn.Identity()
                                       for i in spec.inputs)
        self.extra = Lambda(spec.extra_input_fn, spec.where) if spec.extra_input_fn else nn.Identity()
        self.layers = nn.ModuleList()
        self._fns = [fn.fn if isinstance(fn, Lambda) else None for fn in self.input_fns]
        self._extra = self.extra.fn if isinstance(self.extra, Lambda) else None

    def merged(self, values: Sequence[Any]) -> Any:
        parts = []
        for inp, fn, value in zip(self.spec.inputs, self._fns, values):
            if inp.ignore_input:
                continue
            if inp.input_slice is not None:
                value = apply_slice(value, inp.input_slice)
            parts.append(fn(value) if fn is not None else value)
        if not parts:
            raise ConfigError(f"{self.spec.where}: block {self.spec.name!r} ignores all its inputs")
        x = merge(parts, self.spec.input_concat_axis, self.spec.merge_inputs_into_list)
        return self._extra(x) if self._extra is not None else x

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x) if isinstance(layer, (Component, Lambda)) else layer(x)
        return x


class Graph(nn.Module):
    """The blocks of the backbone or of a package, in execution order, and the graph's output rule."""

    def __init__(self, spec: GraphSpec) -> None:
        super().__init__()
        self.spec = spec
        self.order = list(spec.order)
        self.blocks = nn.ModuleDict()

    def output(self, values: Mapping[str, Any]) -> Any:
        outs = [values[n] for n in self.spec.outputs]
        if self.spec.output_blocks:
            return flatten(outs)
        if len(outs) == 1:
            return outs[0]
        return torch.cat(flatten(outs), dim=-1)


class Backbone(nn.Module):
    """EasyRec's backbone over a batch of feature-group inputs.

    Args:
        spec: the parsed ``backbone`` (:func:`recstack.backbone.spec.parse_backbone`).
        input_layer: builds a feature group's input layer (recstack's :class:`recstack.easyrec.input_layer.InputLayer`
            over the model's feature embedding); a block reading a feature group directly gets the group's
            default input layer (options ``None``: its 2-D concatenation), one per group.
        example: a small batch (at least 2 rows) of every key the input layers read, for the build walk.

    Shapes:
        ``forward(batch)``: ``batch`` maps the input layers' :attr:`input_names` to tensors; the output is the
        backbone's tensor ``(B, D)`` (after ``top_mlp`` when set) or a list of them (``output_blocks``, or a
        single output block that returns a list, such as ``MMoE``'s per-task outputs).
    """

    def __init__(self, spec: BackboneSpec, input_layer: InputLayerFactory, example: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self._factory = input_layer
        self.input_layers = nn.ModuleDict()  # input_layer blocks, by block name ("<package>/<block>" in packages)
        self.group_layers = nn.ModuleDict()  # default input layers, by feature group
        self.packages = nn.ModuleDict()
        self._package_specs = spec.packages
        self._package_examples: dict[str, Any] = {}
        self.graph = Graph(spec.graph)
        was_training = self.training
        with torch.no_grad():
            out = self._build_graph(self.graph, dict(example), "")
            self.top_mlp = self._build_top(spec.top_mlp, out)
        self.train(was_training)
        names: list[str] = []
        for layer in [*self.input_layers.values(), *self.group_layers.values()]:
            names += [n for n in layer.input_names if n not in names]
        self.input_names = names
        self.output_shape = shape_of(self.top_mlp(out) if self.top_mlp is not None else out)

    # ------------------------------------------------------------------ build
    def _group(self, group: str, batch: Mapping[str, torch.Tensor]) -> Any:
        if group not in self.group_layers:
            layer = self._factory(group, None)
            layer.eval()
            self.group_layers[group] = layer
        return self.group_layers[group](batch)

    def _package(self, name: str, batch: Mapping[str, torch.Tensor]) -> Any:
        if name not in self.packages:
            graph = Graph(self._package_specs[name])
            self.packages[name] = graph
            self._package_examples[name] = self._build_graph(graph, batch, f"{name}/")
        return self._package_examples[name]

    def _build_graph(self, graph: Graph, batch: dict[str, torch.Tensor], prefix: str) -> Any:
        values: dict[str, Any] = {}
        for name in graph.order:
            spec = graph.spec.blocks[name]
            block = Block(spec)
            graph.blocks[name] = block
            if spec.is_input_layer:
                layer = self._factory(spec.inputs[0].name, spec.layers[0].node)
                layer.eval()
                self.input_layers[prefix + name] = layer
                values[name] = layer(batch)
                continue
            inputs = gather(spec, values, lambda g: self._group(g, batch), lambda p: self._package(p, batch))
            try:
                x = block.merged(inputs)
            except ConfigError:
                raise
            except Exception as err:  # a concatenation or an expression that does not fit its inputs
                shapes = ", ".join(describe(v) for v in inputs)
                raise ConfigError(f"{spec.where}: block {name!r} cannot merge its inputs {shapes}: {err}") from None
            for layer_spec in spec.layers:
                module = self._build_layer(layer_spec, x, spec)
                block.layers.append(module)
                x = self._run(module, x, spec, layer_spec)
            values[name] = x
        return graph.output(values)

    def _run(self, module: nn.Module, x: Any, block: BlockSpec, layer: LayerSpec) -> Any:
        module.eval()
        try:
            return module(x)
        except ConfigError:
            raise
        except Exception as err:
            what = getattr(module, "class_name", layer.kind)
            raise ConfigError(f"{block.where}: block {block.name!r} ({what}) does not fit its input "
                              f"{describe(x)}: {err}") from None

    def _build_layer(self, layer: LayerSpec, x: Any, block: BlockSpec) -> nn.Module:
        node = layer.node
        if layer.kind == "lambda":
            expression = node.get("expression", type=str)
            node.finish()
            return Lambda(expression, node.where("expression"))
        if layer.kind == "keras_layer":
            return self._build_component(node, x, block)
        if layer.kind == "recurrent":
            steps = node.get("num_steps", 1, type=int)
            if steps < 1:
                raise ConfigError(f"{node.where('num_steps')}: must be >= 1, got {steps}")
            fixed = node.get("fixed_input_index", None, type=int)
            if fixed is not None and (not isinstance(x, (list, tuple)) or not -len(x) <= fixed < len(x)):
                raise ConfigError(f"{node.where('fixed_input_index')}: needs a list input with that index, got "
                                  f"{describe(x)}")
            keras = node.node("keras_layer")
            node.finish()
            modules = []
            current = x
            for _ in range(steps):
                step = self._build_component(Node(keras.config, keras.key, keras.value), current, block)
                modules.append(step)
                out = self._run(step, current, block, layer)
                current = out if fixed is None else [v if i == fixed % len(x) else out for i, v in enumerate(current)]
            return Recurrent(modules, None if fixed is None else fixed % len(x))
        if layer.kind == "repeat":
            count = node.get("num_repeat", 1, type=int)
            if count < 1:
                raise ConfigError(f"{node.where('num_repeat')}: must be >= 1, got {count}")
            axis = node.get("output_concat_axis", None, type=int)
            slice_text = node.get("input_slice", None, type=str)
            fn_text = node.get("input_fn", None, type=str)
            keras = node.node("keras_layer")
            node.finish()
            layers, slices, fns = [], [], []
            for i in range(count):
                index = parse_slice(slice_text.replace("{i}", str(i)), node.where("input_slice")) \
                    if slice_text is not None else None
                fn = Lambda(fn_text.replace("{i}", str(i)), node.where("input_fn")) if fn_text is not None else None
                xi = apply_slice(x, index) if index is not None else x
                xi = fn(xi) if fn is not None else xi
                layer_i = self._build_component(Node(keras.config, keras.key, keras.value), xi, block)
                self._run(layer_i, xi, block, layer)
                layers.append(layer_i)
                slices.append(index)
                fns.append(fn)
            return Repeat(layers, slices, fns, axis)
        raise ConfigError(f"{node.key}: {layer.kind} is only allowed as a block's single input layer")

    def _build_component(self, node: Node, x: Any, block: BlockSpec) -> Component:
        class_name = node.get("class_name", type=str)
        component = lookup(class_name, node.where("class_name"))
        keys = [k for k in node.value if k != "class_name"]
        if len(keys) > 1:
            raise ConfigError(f"{source(node.config, node.key)}: one parameter message per keras_layer, got "
                              f"{', '.join(keys)}")
        if keys and keys[0] not in ("st_params", component.params):
            raise ConfigError(f"{node.where(keys[0])}: '{keys[0]}' parameters do not belong to {class_name} (its "
                              f"parameters go in '{component.params or 'st_params'}'"
                              f"{' or st_params' if component.params else ''})")
        key = keys[0] if keys else (component.params or "st_params")
        params = node.node(key, {})
        node.finish()
        try:
            module = component.build(params, shape_of(x))
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{block.where}: block {block.name!r} ({class_name}) cannot be built for its input "
                              f"{describe(x)}: {err}") from None
        params.finish()
        return Component(module, component.list_input, class_name)

    def _build_top(self, node: Node | None, out: Any) -> Component | None:
        if node is None:
            return None
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"{source(node.config, node.key)}: top_mlp needs the backbone's output to be one "
                              f"tensor, got {describe(out)}")
        top = Node(node.config, node.key.rsplit(".", 1)[0], {"class_name": "MLP", "mlp": node.value})
        top.read.add("class_name")
        dummy = BlockSpec("top_mlp", source(node.config, node.key), [], [])
        module = self._build_component(top, out, dummy)
        self._run(module, out, dummy, LayerSpec("keras_layer", node))
        return module

    # ------------------------------------------------------------------ run
    def _run_graph(self, graph: Graph, batch: Mapping[str, torch.Tensor], prefix: str,
                   groups: dict[str, Any]) -> Any:
        values: dict[str, Any] = {}

        def group(g: str) -> Any:  # a feature group's default input layer, once per batch
            if g not in groups:
                groups[g] = self.group_layers[g](batch)
            return groups[g]

        def package(p: str) -> Any:  # a package call: every call shares the package's parameters
            return self._run_graph(self.packages[p], batch, f"{p}/", groups)

        for name in graph.order:
            block = graph.blocks[name]
            spec = block.spec
            if spec.is_input_layer:
                values[name] = self.input_layers[prefix + name](batch)
                continue
            inputs = gather(spec, values, group, package)
            values[name] = block(block.merged(inputs))
        return graph.output(values)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        out = self._run_graph(self.graph, batch, "", {})
        return self.top_mlp(out) if self.top_mlp is not None else out

"""The backbone's blocks as read from ``model_config.backbone``, checked before anything is built.

The YAML form is EasyRec's ``BackboneTower`` message (doc/backbone.md)::

    backbone:
      packages: [{name, blocks, concat_blocks | output_blocks}]     # optional named sub-DAGs
      blocks:
        - name: all
          inputs: [{feature_group_name: all}]
          input_layer: {only_output_feature_list: true}
        - name: senet
          inputs: [{block_name: all}]
          keras_layer: {class_name: SENet, senet: {reduction_ratio: 4}}
      concat_blocks: [senet]          # or output_blocks: [...]; neither: every leaf block
      top_mlp: {hidden_units: [64]}   # optional

Checked here, each error naming the block and key: duplicate names, names with a ``.``, an input
that names no feature group / block / package, a cycle (named in order), a block that is not an
input layer but is named like a feature group, an input layer whose input is not exactly one feature
group, a block with more than one kind (``layers``, ``input_layer``, ``lambda``, ``keras_layer``,
``recurrent``, ``repeat``), and the syntax of every ``input_slice`` and lambda. Components and shapes
are checked when the graph is built (:mod:`recstack.backbone.engine`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from recstack.backbone.expressions import Index, compile_lambda, parse_slice
from recstack.config import ConfigError, did_you_mean
from recstack.easyrec.schema import Node, source

logger = logging.getLogger(__name__)

#: what a block may run (at most one; none: the block only merges its inputs)
KINDS = ("input_layer", "lambda", "keras_layer", "recurrent", "repeat")
_INPUT_HINTS = {
    "use_package_input": "use_package_input is not supported: give the package's input block its own inputs",
    "reset_input": "reset_input is not supported: give the package's input layer its options directly",
    "package_input": "package_input is not supported: a package reads the feature groups of its own blocks",
    "package_input_fn": "package_input_fn is not supported",
}


@dataclass(frozen=True)
class BlockInput:
    """One entry of a block's ``inputs``."""

    kind: str  # "feature_group" | "block" | "package"
    name: str
    where: str
    input_slice: Index | None = None
    input_fn: str | None = None
    ignore_input: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """What a block (or one step of its ``layers``) runs: ``kind`` and its config node."""

    kind: str  # one of KINDS
    node: Node


@dataclass
class BlockSpec:
    """A parsed block: inputs, merge settings and the layers it runs (empty: merge only)."""

    name: str
    where: str
    inputs: list[BlockInput]
    layers: list[LayerSpec]
    input_concat_axis: int = -1
    merge_inputs_into_list: bool = False
    extra_input_fn: str | None = None

    @property
    def is_input_layer(self) -> bool:
        return len(self.layers) == 1 and self.layers[0].kind == "input_layer"


@dataclass
class GraphSpec:
    """A DAG of blocks (the backbone, or a package) in execution order, and what it outputs."""

    name: str
    where: str
    blocks: dict[str, BlockSpec]
    order: list[str]
    concat_blocks: list[str] = field(default_factory=list)
    output_blocks: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> list[str]:
        """The blocks whose outputs form the graph's output (every leaf when none are named)."""
        if self.output_blocks or self.concat_blocks:
            return self.output_blocks or self.concat_blocks
        read = {i.name for b in self.blocks.values() for i in b.inputs if i.kind == "block"}
        return [n for n in self.order if n not in read]


@dataclass
class BackboneSpec:
    """The whole ``backbone`` section: the main graph, its packages and the optional ``top_mlp``."""

    graph: GraphSpec
    packages: dict[str, GraphSpec]
    top_mlp: Node | None = None


def _parse_input(node: Node, groups: Sequence[str]) -> BlockInput:
    names = [k for k in ("feature_group_name", "block_name", "package_name") if k in node]
    for key, hint in _INPUT_HINTS.items():
        if key in node:
            raise ConfigError(f"{node.where(key)}: {hint}")
    if len(names) != 1:
        raise ConfigError(f"{source(node.config, node.key)}: an input names exactly one of feature_group_name, "
                          f"block_name, package_name (got {names or 'none'})")
    key = names[0]
    name = node.get(key, type=str)
    text = node.get("input_slice", None, type=str)
    index = parse_slice(text, node.where("input_slice")) if text is not None else None
    fn = node.get("input_fn", None, type=str)
    if fn is not None:
        compile_lambda(fn, node.where("input_fn"))
    ignore = node.get("ignore_input", False, type=bool)
    node.finish()
    kind = {"feature_group_name": "feature_group", "block_name": "block", "package_name": "package"}[key]
    if kind == "feature_group" and name not in groups:
        raise ConfigError(f"{node.where(key)}: unknown feature group {name!r}{did_you_mean(name, groups)} "
                          f"(model_config.feature_groups: {', '.join(groups)})")
    return BlockInput(kind, name, node.where(key), index, fn, ignore)


def _parse_layer(node: Node, allowed: Sequence[str], where: str) -> LayerSpec | None:
    present = [k for k in allowed if k in node]
    if len(present) > 1:
        raise ConfigError(f"{where}: one of {', '.join(allowed)} per block, got {', '.join(present)}")
    if not present:
        return None
    kind = present[0]
    return LayerSpec(kind, node.node(kind))


def parse_block(node: Node, groups: Sequence[str]) -> BlockSpec:
    """One ``blocks[i]`` entry (its layers' own parameters are read when the block is built)."""
    name = node.get("name", type=str)
    where = node.where("name")
    if not name or "." in name:
        raise ConfigError(f"{where}: a block name must be non-empty and contain no '.', got {name!r}")
    inputs = [_parse_input(n, groups) for n in node.nodes("inputs", [])]
    axis = node.get("input_concat_axis", -1, type=int)
    merge = node.get("merge_inputs_into_list", False, type=bool)
    extra = node.get("extra_input_fn", None, type=str)
    if extra is not None:
        compile_lambda(extra, node.where("extra_input_fn"))
    layers: list[LayerSpec] = []
    if "layers" in node:
        if any(k in node for k in KINDS):
            raise ConfigError(f"{node.where('layers')}: a block has either 'layers' or one of {', '.join(KINDS)}")
        for i, item in enumerate(node.nodes("layers")):
            layer = _parse_layer(item, [k for k in KINDS if k != "input_layer"], f"{node.where('layers')}[{i}]")
            if layer is None:
                raise ConfigError(f"{node.where('layers')}[{i}]: expected one of lambda, keras_layer, recurrent, "
                                  "repeat")
            layers.append(layer)
            item.finish()
    else:
        layer = _parse_layer(node, KINDS, f"{node.key} (block {name!r})")
        if layer is not None:
            layers.append(layer)
    node.finish()
    block = BlockSpec(name, where, inputs, layers, axis, merge, extra)
    if not inputs:
        raise ConfigError(f"{where}: block {name!r} has no inputs")
    if block.is_input_layer and (len(inputs) != 1 or inputs[0].kind != "feature_group"):
        raise ConfigError(f"{node.where('inputs')}: input_layer block {name!r} takes exactly one input, a "
                          f"feature_group_name (got {[f'{i.kind} {i.name}' for i in inputs]})")
    if name in groups and not block.is_input_layer:
        raise ConfigError(f"{where}: block {name!r} is named like a feature group; only an input_layer block may "
                          "share a feature group's name")
    return block


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``edges`` (node -> the nodes it reads) in reading order, ``None`` when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in edges.get(v, []):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in edges:
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def parse_graph(node: Node, groups: Sequence[str], packages: Sequence[str], name: str,
                top_level: bool) -> GraphSpec:
    """``blocks`` + ``concat_blocks`` / ``output_blocks`` of the backbone or of a package, checked."""
    blocks: dict[str, BlockSpec] = {}
    for item in node.nodes("blocks"):
        block = parse_block(item, groups)
        if block.name in blocks:
            raise ConfigError(f"{block.where}: duplicate block name {block.name!r}")
        if block.name in packages:
            raise ConfigError(f"{block.where}: block {block.name!r} has the name of a package")
        blocks[block.name] = block
    if not blocks:
        raise ConfigError(f"{node.where('blocks')}: no blocks")
    for block in blocks.values():
        for inp in block.inputs:
            if inp.kind == "block" and inp.name not in blocks:
                raise ConfigError(f"{inp.where}: unknown block {inp.name!r}{did_you_mean(inp.name, list(blocks))} "
                                  f"(blocks: {', '.join(blocks)})")
            if inp.kind == "package" and inp.name not in packages:
                raise ConfigError(f"{inp.where}: unknown package {inp.name!r}{did_you_mean(inp.name, list(packages))} "
                                  f"(packages: {', '.join(packages) or 'none'})")
    edges = {n: [i.name for i in b.inputs if i.kind == "block"] for n, b in blocks.items()}
    cycle = find_cycle(edges)
    if cycle:
        raise ConfigError(f"{node.where('blocks')}: the blocks form a cycle: {' -> '.join(reversed(cycle))}")
    order: list[str] = []
    done: set[str] = set()

    def place(n: str) -> None:  # depth-first, inputs first, config order otherwise
        if n in done:
            return
        for dep in edges[n]:
            place(dep)
        done.add(n)
        order.append(n)

    for n in blocks:
        place(n)
    concat = [str(x) for x in node.get_list("concat_blocks", str, [])]
    output = [str(x) for x in node.get_list("output_blocks", str, [])]
    if concat and output:
        raise ConfigError(f"{node.where('output_blocks')}: set concat_blocks or output_blocks, not both")
    for key, names in (("concat_blocks", concat), ("output_blocks", output)):
        for n in names:
            if n not in blocks:
                raise ConfigError(f"{node.where(key)}: unknown block {n!r}{did_you_mean(n, list(blocks))}")
    graph = GraphSpec(name, node.key, blocks, order, concat, output)
    reachable: set[str] = set()
    todo = list(graph.outputs)
    while todo:
        n = todo.pop()
        if n not in reachable:
            reachable.add(n)
            todo += edges[n]
    for n in order:
        if n not in reachable:
            logger.warning("%s: block %r is not read by any block nor an output of %s; it is skipped",
                           blocks[n].where, n, name)
    graph.order = [n for n in order if n in reachable]
    return graph


def parse_backbone(node: Node, groups: Sequence[str]) -> BackboneSpec:
    """The ``model_config.backbone`` node: packages, blocks, outputs and ``top_mlp``, all checked.

    Raises:
        ConfigError: the first problem found, naming the block and key.
    """
    package_names = [p.get("name", type=str) for p in node.nodes("packages", [])]
    dup = {n for n in package_names if package_names.count(n) > 1}
    if dup:
        raise ConfigError(f"{node.where('packages')}: duplicate package name {sorted(dup)[0]!r}")
    packages: dict[str, GraphSpec] = {}
    for item in node.nodes("packages", []):
        name = item.get("name", type=str)
        packages[name] = parse_graph(item, groups, [], f"package {name!r}", top_level=False)
        item.finish()
        for block in packages[name].blocks.values():
            for inp in block.inputs:
                if inp.kind == "package":
                    raise ConfigError(f"{inp.where}: a package cannot call a package")
    graph = parse_graph(node, groups, package_names, "the backbone", top_level=True)
    top = node.node("top_mlp") if node.get("top_mlp", None) is not None else None
    node.finish()
    return BackboneSpec(graph, packages, top)

"""The package's shape: the import graph of ``recstack/`` has no cycle, serving and inference do not load
the training loop, and the training loop leaves distribution and test hooks to others.

The graph is read from the source (``ast``), every ``import`` counted, at module level or inside a
function (a function-level import that closes a loop is a cycle all the same, only deferred), except
under ``if TYPE_CHECKING:``. Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so it
depends on those packages too (unless the importer is inside them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recstack"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """module → the recstack modules it imports (directly, and their packages' ``__init__``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule, or a name
        edges = set()
        for target in targets & modules.keys():
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in modules and not (name == ancestor or name.startswith(ancestor + ".")):
                    edges.add(ancestor)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_import_graph_is_read_whole():
    graph = import_graph()
    assert {"recstack.trainer", "recstack.evaluator", "recstack.wrapper", "recstack.dist.strategy"} <= graph.keys()
    assert "recstack.wrapper" in graph["recstack.trainer"]
    assert "recstack.dist" in graph["recstack.trainer"]  # importing recstack.dist.strategy runs recstack.dist
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    detail = "; ".join(" <-> ".join(c) + " (" + ", ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) + ")"
                       for c in found)
    assert not found, f"import cycles in recstack/: {detail}"


def test_serving_and_inference_do_not_import_the_training_loop():
    code = ("import sys, recstack.serving, recstack.inference, recstack.export; "
            "print(sorted(m for m in sys.modules if m in ('recstack.trainer', 'recstack.evaluator')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_training_loop_has_no_distributed_or_test_branches():
    """Distribution is the strategy's (recstack/dist/strategy.py), test hooks are callbacks (recstack/testing.py):
    the trainer's code (docstrings aside) names neither the distributed settings nor the environment."""
    tree = ast.parse((PACKAGE / "trainer.py").read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
    for word in ("use_fleet", "embedding_sharding", "is_sharded", "RECSTACK_TEST", "environ"):
        assert not [w for w in words if word in w], word
    assert not words & {"ctx", "dist", "ddp", "DistContext"}  # the strategy alone holds the process group


def test_layers_import_nothing_above_them():
    """``recstack/layers/`` sits at the bottom (DESIGN.md, principle 12): it imports only other layers and the
    registry (no config, tasks, losses, optimizers or EasyRec specs; those live in ``recstack.easyrec``)."""
    graph = import_graph()
    allowed = ("recstack.layers", "recstack.registry")
    layers = [m for m in graph if m == "recstack.layers" or m.startswith("recstack.layers.")]
    assert "recstack.layers.field_inputs" in layers
    above = {m: sorted(t for t in graph[m] if not any(t == a or t.startswith(a + ".") for a in allowed))
             for m in layers}
    assert not {m: t for m, t in above.items() if t}, f"recstack/layers imports modules above it: {above}"


def test_http_client_tools_start_without_torch():
    """tools/rec_client.py and tools/serve_benchmark.py talk HTTP: their ``--help`` (and argument errors) must not
    pay torch's import (about a second here); the tools' error reporting imports the error types lazily."""
    code = ("import runpy, sys\nsys.argv = [sys.argv[1], '--help']\ntry:\n    runpy.run_path(sys.argv[0], "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    for tool in ("rec_client.py", "serve_benchmark.py"):
        proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "tools" / tool)], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().splitlines()[-1] == "False", tool

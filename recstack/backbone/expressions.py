"""The backbone's small languages: ``input_slice`` text (parsed, never evaluated) and lambda expressions.

``input_slice`` selects from a block input the way a Python subscript does: ``"[1]"``, ``"[0:2]"``,
``"[-1]"``, ``"[:, 0]"``, ``"[..., 1:3]"``. The text is read with :mod:`ast` and turned into the index
object (ints, slices, ``Ellipsis``, tuples of them); nothing in it runs.

``input_fn``, ``extra_input_fn`` and ``lambda.expression`` are Python lambdas over **torch**
(``lambda x: torch.stack(x, 0).sum(0)``, ``lambda x: [x, x]``), compiled once when the model is built.
They are code in the same sense as a model file: a config that holds them is trusted like one. To
keep mistakes (and the obvious escapes) out, the expression must be a single ``lambda``; it sees no
builtins and no names but its own parameters, the variables of its comprehensions and ``torch``; and
no name or attribute may start with ``_`` (which rules out ``__import__``, ``__class__``,
``__subclasses__`` and every other dunder walk).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import torch

from recstack.config import ConfigError

Index = Any  # int | slice | type(Ellipsis) | tuple of those


def _int(node: ast.expr, where: str, text: str) -> int | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    raise ConfigError(f"{where}: {text!r}: slice bounds must be integers")


def _index(node: ast.expr, where: str, text: str) -> Index:
    if isinstance(node, ast.Slice):
        return slice(_int(node.lower, where, text), _int(node.upper, where, text), _int(node.step, where, text))
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return Ellipsis
    if isinstance(node, ast.Tuple):
        return tuple(_index(e, where, text) for e in node.elts)
    return _int(node, where, text)


def parse_slice(text: str, where: str) -> Index:
    """The index object of an ``input_slice`` text such as ``"[1]"`` or ``"[0:2]"``.

    Raises:
        ConfigError: not a bracketed index of integers, slices and ``...`` (names the key).
    """
    source = text.strip()
    if not (source.startswith("[") and source.endswith("]")):
        raise ConfigError(f"{where}: {text!r}: expected a Python index in brackets such as '[1]' or '[0:2]'")
    try:
        tree = ast.parse(f"x{source}", mode="eval")
    except SyntaxError:
        raise ConfigError(f"{where}: {text!r} is not a valid index such as '[1]' or '[0:2]'") from None
    if not isinstance(tree.body, ast.Subscript) or not isinstance(tree.body.value, ast.Name):
        raise ConfigError(f"{where}: {text!r} is not a valid index such as '[1]' or '[0:2]'")
    return _index(tree.body.slice, where, text)


def apply_slice(value: Any, index: Index) -> Any:
    """``value[index]`` for a tensor or a list (a slice of a list stays a list)."""
    return value[index]


class _Checker(ast.NodeVisitor):
    """Rejects what a backbone expression may not hold (see the module docstring)."""

    def __init__(self, where: str, text: str) -> None:
        self.where, self.text = where, text
        self.bound: list[set[str]] = []

    def fail(self, why: str) -> None:
        raise ConfigError(f"{self.where}: expression {self.text!r}: {why}")

    def _bind(self, args: ast.arguments) -> set[str]:
        names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        return set(names)

    def visit_Lambda(self, node: ast.Lambda) -> None:  # noqa: N802
        for default in (*node.args.defaults, *node.args.kw_defaults):
            if default is not None:
                self.visit(default)
        self.bound.append(self._bind(node.args))
        self.visit(node.body)
        self.bound.pop()

    def _comprehension(self, node: ast.AST, results: list[ast.expr]) -> None:
        scope: set[str] = set()
        self.bound.append(scope)
        for gen in node.generators:
            self.visit(gen.iter)
            for target in ast.walk(gen.target):
                if isinstance(target, ast.Name):
                    self._name(target.id)
                    scope.add(target.id)
            for cond in gen.ifs:
                self.visit(cond)
        for result in results:
            self.visit(result)
        self.bound.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:  # noqa: N802
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp  # noqa: N815

    def visit_DictComp(self, node: ast.DictComp) -> None:  # noqa: N802
        self._comprehension(node, [node.key, node.value])

    def _name(self, name: str) -> None:
        if name.startswith("_"):
            self.fail(f"names starting with '_' are not allowed ({name!r})")

    def visit_Name(self, node: ast.Name) -> None:  # noqa: N802
        self._name(node.id)
        if isinstance(node.ctx, ast.Load) and node.id != "torch" and not any(node.id in s for s in self.bound):
            self.fail(f"unknown name {node.id!r} (an expression sees its parameters and 'torch' only; "
                      "no builtins)")

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        if node.attr.startswith("_"):
            self.fail(f"attributes starting with '_' are not allowed ({node.attr!r})")
        self.visit(node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:  # noqa: N802
        self.fail("assignment expressions (:=) are not allowed")

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, (ast.Await, ast.Yield, ast.YieldFrom)):
            self.fail(f"{type(node).__name__} is not allowed")
        super().generic_visit(node)


def compile_lambda(text: str, where: str) -> Callable[..., Any]:
    """The function of a backbone lambda expression, compiled once (see the module docstring).

    Raises:
        ConfigError: not a lambda, a syntax error, or a name / attribute the rules forbid; names the key.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a lambda expression string, got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"{where}: expression {text!r} is not valid Python ({err.msg})") from None
    if not isinstance(tree.body, ast.Lambda):
        raise ConfigError(f"{where}: expression {text!r} must be a lambda, such as 'lambda x: torch.cat(x, -1)'")
    _Checker(where, text).visit(tree.body)
    code = compile(tree, f"<{where}>", "eval")
    return eval(code, {"__builtins__": {}, "torch": torch})  # noqa: S307 (checked above; no builtins)

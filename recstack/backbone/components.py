"""The component registry of the backbone: EasyRec's class names → builders of recstack layers.

A backbone block runs one component (``keras_layer: {class_name: SENet, senet: {reduction_ratio: 4}}``).
The layer itself is an ordinary ``nn.Module`` in :mod:`recstack.layers` with explicit sizes; what
lives here is the bridge from EasyRec's names to it: a *builder* registered under EasyRec's class
name reads the block's parameters (EasyRec's parameter names and defaults) and the shape of the
block's input, and returns the module::

    @component("SENet", params="senet")
    def senet(p: Params, shape: InputShape) -> nn.Module:
        dims = feature_dims(shape, "SENet")           # a list input: one (B, D_i) tensor per feature
        return SENetLayer(dims, reduction_ratio=p.get("reduction_ratio", 4, type=int), ...)

Shapes are given without the batch axis: ``(D,)`` for a ``(B, D)`` tensor, ``(F, D)`` for
``(B, F, D)``; a block whose input is a list gets a list of shapes. The engine
(:mod:`recstack.backbone.engine`) learns each block's output shape by running the built module once
on a small zero batch, so a builder never computes output sizes.

``params`` is the name of the parameter message in EasyRec's config (``senet`` for ``SENet``); the
block may also give the keyword arguments directly as ``st_params: {...}``. Either way the builder
reads them through a :class:`Params` (a :class:`recstack.easyrec.schema.Node`): a key it does not
read is an error naming the block, so a misspelt parameter never passes silently.

A user's own module is named by dotted path (``class_name: mypkg.layers.MyLayer``): it is imported and
called with the parameters as keyword arguments plus ``input_shape`` when its ``__init__`` takes it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from recstack.config import ConfigError
from recstack.easyrec.schema import Node
from recstack.registry import Registry

#: one tensor's shape without the batch axis
Shape = tuple[int, ...]
#: a block's input: one tensor, or a list of tensors (and, nested, lists)
InputShape = Shape | list
#: the block's parameters (``keras_layer.<params>`` or ``st_params``), read key by key
Params = Node


@dataclass(frozen=True)
class Component:
    """A registered component: EasyRec's class name, its parameter message's name and its builder."""

    name: str
    params: str | None
    build: Callable[[Params, InputShape], nn.Module]
    #: the module's forward takes the block's input as one argument even when it is a list
    #: (``SENet`` over a feature list); otherwise a list input is passed as positional arguments
    list_input: bool = True


#: EasyRec class name (case-sensitive, as EasyRec writes them) → :class:`Component`
COMPONENTS: Registry[Component] = Registry("backbone component", case_sensitive=True)


def component(name: str, params: str | None = None, list_input: bool = True) -> Callable:
    """Register a builder under EasyRec's class ``name`` (decorator); ``params``: the parameter message's name."""
    def add(build: Callable[[Params, InputShape], nn.Module]) -> Callable[[Params, InputShape], nn.Module]:
        COMPONENTS.register(name, Component(name, params, build, list_input))
        return build

    return add


def tensor_shape(shape: InputShape, who: str, where: str) -> Shape:
    """The shape of a single-tensor input; a list input is an error naming the block."""
    if isinstance(shape, list):
        raise ConfigError(f"{where}: {who} takes one tensor, got a list of {len(shape)} "
                          "(merge the inputs into one tensor, or select one with input_slice)")
    return shape


def feature_dims(shape: InputShape, who: str, where: str) -> list[int]:
    """Per-feature widths of a feature-list input (``[(D_1,), (D_2,), ...]``) or of a ``(F, D)`` tensor."""
    if isinstance(shape, list):
        if not all(isinstance(s, tuple) and len(s) == 1 for s in shape):
            raise ConfigError(f"{where}: {who} takes a list of (B, D_i) tensors, got shapes "
                              f"{[('B', *s) if isinstance(s, tuple) else 'list' for s in shape]}")
        return [s[0] for s in shape]
    if len(shape) == 2:
        return [shape[1]] * shape[0]
    raise ConfigError(f"{where}: {who} takes a feature list or a (B, F, D) tensor, "
                      f"got (B, {', '.join(map(str, shape))})")


def user_component(path: str, where: str) -> Component:
    """A user's ``nn.Module`` named by dotted path, called with the block's parameters as keyword arguments."""
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}: cannot import {path!r} ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where}: {path!r} is not an nn.Module class")
    takes_shape = "input_shape" in inspect.signature(cls.__init__).parameters

    def build(p: Params, shape: InputShape) -> nn.Module:
        kwargs = dict(p.value)
        p.read.update(kwargs)
        return cls(**kwargs, input_shape=shape) if takes_shape else cls(**kwargs)

    return Component(path, None, build)


def lookup(class_name: str, where: str) -> Component:
    """The component of a block's ``class_name``: registered, or a dotted path to a user's module.

    The built-in components are registered by :mod:`recstack.backbone.library`, which the package's
    ``__init__`` imports (so they are there whenever this module is; importing the library from here would
    make the two modules import each other).
    """
    if class_name not in COMPONENTS and "." in class_name:
        return user_component(class_name, where)
    return COMPONENTS.lookup(class_name, where)

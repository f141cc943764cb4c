"""EasyRec's component backbone: a DAG of blocks declared in ``model_config.backbone`` (doc/backbone.md).

:mod:`recstack.backbone.components` registers the components under EasyRec's class names,
:mod:`recstack.backbone.library` holds their builders over :mod:`recstack.layers`,
:mod:`recstack.backbone.spec` parses and validates the blocks, :mod:`recstack.backbone.engine` runs them.
"""

from recstack.backbone import library  # noqa: F401  (registers the built-in components)

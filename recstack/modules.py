"""Load a model folder's modules by path, under a unique package name.

PaddleRec appends the model folder to ``sys.path`` and runs ``import net``,
which breaks as soon as two models load in one process (the second ``net`` is
the first one's). recstack registers each model folder as its own package
(``recstack_models.<folder>_<hash>``) so ``dygraph_model.py`` can write
``from .net import DeepFM`` and any number of models coexist.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType


def model_package(folder: str | Path) -> str:
    """Register ``folder`` as a package and return its unique name."""
    folder = Path(folder).resolve()
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    name = f"recstack_models.{re.sub(r'[^0-9A-Za-z_]', '_', folder.name)}_{digest}"
    if "recstack_models" not in sys.modules:
        root = importlib.util.module_from_spec(importlib.machinery.ModuleSpec("recstack_models", None, is_package=True))
        root.__path__ = []
        sys.modules["recstack_models"] = root
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return name


def load_module(folder: str | Path, module: str) -> ModuleType:
    """Import ``<folder>/<module>.py`` as a submodule of the folder's package.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(folder) / f"{module}.py"
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist")
    return importlib.import_module(f"{model_package(folder)}.{module}")

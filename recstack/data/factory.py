"""Reader and loader construction from a config (see :mod:`recstack.data`)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from recstack.config import Config, ConfigError, did_you_mean
from recstack.data import aitm as _aitm  # noqa: F401
from recstack.data import aliccp as _aliccp  # noqa: F401
from recstack.data import alimama as _alimama  # noqa: F401
from recstack.data import bst as _bst  # noqa: F401
from recstack.data import csv as _csv  # noqa: F401  (registers core readers)
from recstack.data import din as _din  # noqa: F401
from recstack.data import libsvm as _libsvm  # noqa: F401
from recstack.data import slot as _slot  # noqa: F401
from recstack.data import slot_parquet as _slot_parquet  # noqa: F401
from recstack.data.base import BlockReader, list_data_files
from recstack.data.loader import BatchLoader
from recstack.easyrec import group_rtp as _group_rtp  # noqa: F401
from recstack.easyrec import tabular as _tabular  # noqa: F401
from recstack.modules import load_module
from recstack.registry import READERS

_MODES = {
    "train": ("runner.train_reader_path", "runner.train_data_dir", "runner.train_batch_size"),
    "infer": ("runner.infer_reader_path", "runner.test_data_dir", "runner.infer_batch_size"),
}


#: ``hyper_parameters.data_config.input_type`` -> the core reader that reads it (ParquetInput: the tabular reader
#: in its Parquet mode); the reader when ``runner.train_reader_path`` / ``infer_reader_path`` is not set
INPUT_TYPE_READERS = {"CSVInput": "tabular", "ParquetInput": "tabular", "GroupRTPInput": "group_rtp",
                      "LibSVMInput": "libsvm"}
INPUT_TYPE_KEY = "hyper_parameters.data_config.input_type"


class UntrustedCodeError(ConfigError):
    """A reader module of the model folder is code that was not trusted (``trust_code=False``)."""


#: ``from recstack.data.<module> import <Class> as RecDataset`` (or ``recstack.easyrec.<module>``, the EasyRec
#: readers): the module may name only a core reader module
_CORE_MODULE = re.compile(r"recstack\.(?:data|easyrec)\.[a-z_][a-z0-9_]*")


def core_reader_alias(path: str | Path) -> type[BlockReader] | None:
    """The core reader that a model folder's reader module only re-exports, found without running the module.

    Every shipped model folder's reader file is a docstring, ``from recstack.data.<module> import <Reader> as
    RecDataset`` (``recstack.easyrec.<module>`` for the EasyRec readers) and ``__all__``; this reads the file's
    syntax tree (:mod:`ast`: nothing in it runs) and returns that reader when the module holds nothing else
    and the reader is a registered core reader
    (:data:`recstack.registry.READERS`); ``None`` for anything else (a module with code of its own).
    """
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    found = None
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "__future__":
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _CORE_MODULE.fullmatch(node.module or "") \
                and len(node.names) == 1 and node.names[0].asname == "RecDataset" and found is None:
            found = (node.module, node.names[0].name)
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"] \
                and isinstance(node.value, (ast.List, ast.Tuple)) \
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts):
            continue
        return None
    if found is None:
        return None
    try:
        reader = getattr(importlib.import_module(found[0]), found[1], None)  # a core reader module
    except ImportError:
        return None
    return reader if any(READERS.get(n) is reader for n in READERS.names()) else None


def resolve_reader(config: Config, key: str, trust_code: bool = True) -> type[BlockReader]:
    """The reader class named by a config key (model-folder module or core reader name).

    Args:
        config: the config (model-folder modules are looked for in its ``config_dir``).
        key: the key naming the reader (``runner.train_reader_path`` / ``runner.infer_reader_path``).
        trust_code: import a model-folder module (training, offline inference: the user's own folder).
            ``False`` (the prediction service, whose export JSON names the folder): never run code from
            the folder; a module that only re-exports a core reader (:func:`core_reader_alias`: every shipped
            model) resolves to that core reader, a core reader name to itself, anything else is an
            :class:`UntrustedCodeError` (``tools/serve.py --trust_export_code`` trusts it).
    """
    name = config.get(key, None)
    input_type = _input_type(config)
    if not name and input_type is not None:
        return READERS.get(INPUT_TYPE_READERS[input_type])
    if not name:
        raise ConfigError(f"{config.source(key)}: no reader given; set it to a module of the model folder "
                          f"(e.g. criteo_reader) or a core reader ({', '.join(READERS.names())})")
    module = name[:-3] if name.endswith(".py") else name
    if (Path(config.config_dir) / f"{module}.py").is_file():
        if not trust_code:
            reader = core_reader_alias(Path(config.config_dir) / f"{module}.py")
            if reader is None:
                raise UntrustedCodeError(f"the reader module {module}.py of the model folder is code of its own (not "
                                         "a re-export of a core reader); it is imported only when trusted "
                                         "(tools/serve.py --trust_export_code)")
            return _agrees(config, key, reader, input_type)
        reader = getattr(load_module(config.config_dir, module), "RecDataset", None)
        if reader is None:
            raise ConfigError(f"{config.source(key)}: {config.config_dir / (module + '.py')} defines no RecDataset")
        return _agrees(config, key, reader, input_type)
    if name in READERS:
        return _agrees(config, key, READERS.get(name), input_type)
    raise ConfigError(f"{config.source(key)}: '{name}' is neither {config.config_dir / (module + '.py')} "
                      f"nor a core reader{did_you_mean(name, READERS.names())} (known: {', '.join(READERS.names())})")


def _input_type(config: Config) -> str | None:
    """``hyper_parameters.data_config.input_type`` when the config sets it (``None`` otherwise).

    Raises:
        ConfigError: a value that no reader reads.
    """
    data = config.get("hyper_parameters.data_config", None)
    if not isinstance(data, dict) or data.get("input_type") is None:
        return None
    value = data["input_type"]
    if value not in INPUT_TYPE_READERS:
        raise ConfigError(f"{config.source(INPUT_TYPE_KEY)}: expected one of {', '.join(INPUT_TYPE_READERS)}, got "
                          f"{value!r}{did_you_mean(str(value), list(INPUT_TYPE_READERS))}")
    return value


def _agrees(config: Config, key: str, reader: type[BlockReader], input_type: str | None) -> type[BlockReader]:
    """``reader``, after checking that it does not read another input type than ``input_type`` (when set): the
    core reader of the input type, a subclass of it, or a reader of no input type (a model folder's own reader,
    the Python API's ``memory`` reader) pass.

    Raises:
        ConfigError: naming both keys, when the reader is the reader of another input type.
    """
    if input_type is None or not isinstance(reader, type):
        return reader
    expected = READERS.get(INPUT_TYPE_READERS[input_type])
    others = {READERS.get(name) for name in INPUT_TYPE_READERS.values()} - {expected}
    if issubclass(reader, expected) or not any(issubclass(reader, other) for other in others):
        return reader
    raise ConfigError(f"{config.source(key)} ({config.get(key)!r}, reader {getattr(reader, '__name__', reader)}) "
                      f"disagrees with {config.source(INPUT_TYPE_KEY)} ({input_type}, read by the core reader "
                      f"'{INPUT_TYPE_READERS[input_type]}'); set one of them so that they agree, or leave "
                      f"{key} unset and let the input type choose")


def create_reader(config: Config, mode: str, files: list[str] | None = None) -> BlockReader:
    """The reader of ``train`` (``train_data_dir``) or ``infer`` (``test_data_dir``) data; of ``files``
    instead of the folder's, when given (the online trainer reads one time partition)."""
    reader_key, dir_key, _ = _MODES[mode]
    if files is not None:
        return resolve_reader(config, reader_key)(list(files), config)
    folder = config.get(dir_key, None)
    if folder is None:
        raise ConfigError(f"{config.source(dir_key)}: not set; the {mode} data folder is needed")
    files = list_data_files(folder, key=config.source(dir_key))
    return resolve_reader(config, reader_key)(files, config)


def create_loader(config: Config, mode: str, reader: BlockReader | None = None) -> BatchLoader:
    """Batches of ``train`` or ``infer`` data with the runner's batch size, shuffling and workers."""
    reader = reader if reader is not None else create_reader(config, mode)
    train = mode == "train"
    return BatchLoader(reader, config.get(_MODES[mode][2]),
                       shuffle=train and config.get("runner.shuffle"),
                       seed=config.get("runner.seed"),
                       num_workers=config.get("runner.num_workers"),
                       cache_dir=config.get("runner.cache_dir"),
                       bucket_by_length=config.get("runner.bucket_by_length", False))

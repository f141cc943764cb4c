"""Reader and loader construction from a config (see :mod:`recstack.data`)."""

from __future__ import annotations

from pathlib import Path

from recstack.config import Config, ConfigError, did_you_mean
from recstack.data import aliccp as _aliccp  # noqa: F401
from recstack.data import csv as _csv  # noqa: F401  (registers core readers)
from recstack.data import din as _din  # noqa: F401
from recstack.data import group_rtp as _group_rtp  # noqa: F401
from recstack.data import slot as _slot  # noqa: F401
from recstack.data import tabular as _tabular  # noqa: F401
from recstack.data.base import BlockReader, list_data_files
from recstack.data.loader import BatchLoader
from recstack.modules import load_module
from recstack.registry import READERS


_MODES = {
    "train": ("runner.train_reader_path", "runner.train_data_dir", "runner.train_batch_size"),
    "infer": ("runner.infer_reader_path", "runner.test_data_dir", "runner.infer_batch_size"),
}


def resolve_reader(config: Config, key: str) -> type[BlockReader]:
    """The reader class named by a config key (model-folder module or core reader name)."""
    name = config.get(key, None)
    if not name:
        raise ConfigError(f"{config.source(key)}: no reader given; set it to a module of the model folder "
                          f"(e.g. criteo_reader) or a core reader ({', '.join(READERS.names())})")
    module = name[:-3] if name.endswith(".py") else name
    if (Path(config.config_dir) / f"{module}.py").is_file():
        reader = getattr(load_module(config.config_dir, module), "RecDataset", None)
        if reader is None:
            raise ConfigError(f"{config.source(key)}: {config.config_dir / (module + '.py')} defines no RecDataset")
        return reader
    if name in READERS:
        return READERS.get(name)
    raise ConfigError(f"{config.source(key)}: '{name}' is neither {config.config_dir / (module + '.py')} "
                      f"nor a core reader{did_you_mean(name, READERS.names())} (known: {', '.join(READERS.names())})")


def create_reader(config: Config, mode: str) -> BlockReader:
    """The reader of ``train`` (``train_data_dir``) or ``infer`` (``test_data_dir``) data."""
    reader_key, dir_key, _ = _MODES[mode]
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

"""The item corpus of a retrieval model: every item's features, read once from the item table.

A retrieval config describes its items apart from the interactions (``hyper_parameters.item_config``)::

    item_config:
      data_path: data/sample_data/items          # a file or folder (relative to the config)
      item_id: item_id                           # the feature that identifies an item
      data_config: {separator: ",", input_fields: [{input_name: item_id, input_type: INT64}, ...]}
      feature_config: {features: [{input_names: [item_id], feature_type: IdFeature, num_buckets: 3953, ...}, ...]}
      feature_groups: [{group_name: item, feature_names: [item_id, genres, year]}]

The item table is read with the core tabular reader (the same hashing, bucketing and tag parsing as the
interactions) into tensors held by :class:`ItemCorpus` (buffers, not saved in checkpoints: the table is data,
read again wherever the model is built). The item-id feature must use ``num_buckets`` (the ids themselves, no
hashing: two items must not share a row), and the interactions' item ids (target, history, seen items) must use
the same ``num_buckets``, so that an id means the same item on both sides; ``rows(ids)`` maps ids to corpus rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recstack.config import Config, ConfigError
from recstack.data.base import RaggedArray
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.schema import Node, source

logger = logging.getLogger(__name__)

ITEM_CONFIG = "hyper_parameters.item_config"


def data_files(path: Path) -> list[str]:
    """The files of a data path: the file itself, or a folder's files (sorted; hidden files skipped)."""
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if files:
            return files
        raise FileNotFoundError(f"{path}: the item table folder holds no files")
    raise FileNotFoundError(f"{path}: no such item table (file or folder)")


class ItemCorpus(nn.Module):
    """Every item's feature tensors, in corpus order (the item table's order), and the id -> row map.

    Attributes:
        spec: the item table's features and its one feature group.
        group: that group's name.
        input_names: the item group's batch keys (what the item tower takes), in order.
        item_feature: the item-id feature's name.
        num_items: ``N``.

    Shapes:
        ``features(rows)``: rows ``(R,)`` int64 -> one tensor per :attr:`input_names` key with ``R`` rows
        (variable-length keys padded to the corpus's longest row). ``rows(ids)``: ids of any shape -> corpus rows
        of the same shape, ``-1`` for an id not in the corpus. :attr:`item_ids`: ``(N,)`` int64.
    """

    def __init__(self, config: Config, at: str = ITEM_CONFIG) -> None:
        super().__init__()
        node = Node.at(config, at)
        self.spec = spec = TabularSpec.from_config(config, at=at)
        if len(spec.groups) != 1:
            raise ConfigError(f"{source(config, at + '.feature_groups')}: the item table has one feature group (the "
                              f"item tower's input), got {[g.name for g in spec.groups]}")
        self.group = spec.groups[0].name
        self.item_feature = node.get("item_id", type=str)
        members = spec.group(self.group).feature_names
        if self.item_feature not in members:
            raise ConfigError(f"{node.where('item_id')}: {self.item_feature!r} is not a feature of group "
                              f"{self.group!r} ({list(members)})")
        f = spec.feature(self.item_feature)
        if f.feature_type != "IdFeature" or not f.num_buckets:
            raise ConfigError(f"{node.where('item_id')}: the item id feature must be an IdFeature with num_buckets "
                              "(ids used as they are: two items must not share an embedding row), got "
                              f"{f.feature_type} with hash_bucket_size {f.hash_bucket_size}")
        self.num_buckets = int(f.num_buckets)
        path = node.get("data_path", type=str)
        node.get("data_config")
        node.get("feature_config")
        node.get("feature_groups")
        node.finish()
        full = Path(path) if Path(path).is_absolute() else config.config_dir / path
        #: the item table's files (the export copies their lines: the raw item features a rank stage joins)
        self.files = data_files(full)
        blocks = self._read(self.files, config)
        self.input_names = spec.group_inputs(self.group)
        self.num_items = len(next(iter(blocks.values())))
        if self.num_items == 0:
            raise ConfigError(f"{full}: the item table holds no items")
        self._keys: list[tuple[str, str]] = []
        for i, key in enumerate(self.input_names):
            value = blocks[key]
            array = value.to_padded() if isinstance(value, RaggedArray) else np.asarray(value)
            if array.ndim == 2 and array.shape[1] == 0 and isinstance(value, RaggedArray):
                array = np.zeros((len(value), 1), dtype=array.dtype)  # no item has a value: one padding column
            self.register_buffer(f"_input_{i}", torch.from_numpy(np.ascontiguousarray(array)), persistent=False)
            self._keys.append((key, f"_input_{i}"))
        ids = self._item_ids(blocks)
        counts = np.bincount(ids, minlength=self.num_buckets)
        if (counts > 1).any():
            dup = int(np.argmax(counts > 1))
            raise ConfigError(f"{full}: item id {dup} appears {int(counts[dup])} times in the item table; each item "
                              "is one line")
        id_to_row = np.full(self.num_buckets, -1, dtype=np.int64)
        id_to_row[ids] = np.arange(len(ids))
        self.register_buffer("item_ids", torch.from_numpy(ids), persistent=False)
        self.register_buffer("_id_to_row", torch.from_numpy(id_to_row), persistent=False)
        logger.info("item corpus: %d items from %s", self.num_items, full)

    def _read(self, files: list[str], config: Config) -> dict[str, np.ndarray | RaggedArray]:
        from recstack.easyrec.tabular import TabularReader

        reader = TabularReader(files, config, self.spec)
        merged: dict[str, list] = {}
        for block in reader.iter_blocks():
            for key, value in block.items():
                merged.setdefault(key, []).append(value)
        if not merged:
            raise ConfigError(f"{files[0]}: the item table holds no items")
        out: dict[str, np.ndarray | RaggedArray] = {}
        for key, parts in merged.items():
            out[key] = RaggedArray.concatenate(parts) if isinstance(parts[0], RaggedArray) else np.concatenate(parts)
        return out

    def _item_ids(self, blocks: dict[str, np.ndarray | RaggedArray]) -> np.ndarray:
        """The item-id feature's column of the group's ``.ids`` block."""
        id_features = [f.name for f in self.spec.id_features(self.group)]
        column = id_features.index(self.item_feature)
        return np.asarray(blocks[f"{self.group}.ids"])[:, column].astype(np.int64)

    def features(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """The item tower's inputs for corpus ``rows`` (module docstring)."""
        return [getattr(self, name).index_select(0, rows) for _, name in self._keys]

    def all_features(self) -> list[torch.Tensor]:
        """The item tower's inputs for the whole corpus."""
        return [getattr(self, name) for _, name in self._keys]

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Corpus rows of item ids (``-1``: not in the corpus; ids outside ``[0, num_buckets)`` too)."""
        inside = (ids >= 0) & (ids < self.num_buckets)
        return torch.where(inside, self._id_to_row[ids.clamp(0, self.num_buckets - 1)], torch.full_like(ids, -1))

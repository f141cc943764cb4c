"""In-memory data for the Python API: DataFrames and dicts of numpy arrays → the file readers' blocks.

:func:`encode` turns a table (anything with ``columns`` and ``to_numpy``, e.g. a pandas DataFrame, or a
``dict`` of arrays) into the block the model's file reader would parse from the same rows, vectorised
(pyarrow / numpy, no per-row Python): for a feature-config model the labels and ``<group>.ids`` /
``<group>.values`` of :class:`recstack.easyrec.tabular.TabularReader` (same hashing, defaults, float32
rounding, scaling and bucketing), and the keys of its tag and sequence features (a column of the file's cells,
``"a|b"``, or of lists), for DIN the columns of :class:`recstack.data.din.DINReader` (histories as
:class:`~recstack.data.base.RaggedArray`). :class:`MemoryReader` (core reader name ``memory``) hands that
block to the ordinary :class:`~recstack.data.loader.BatchLoader`, so batching, shuffling and padding are
the file path's. :func:`write_text` writes rows back in the file format (for export, whose JSON must name a
reader that serving can run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recstack.config import Config
from recstack.data.base import Block, BlockReader, RaggedArray
from recstack.easyrec.features import INT_RANGES, TabularSpec
from recstack.easyrec.tabular import feature_column, ragged_feature_arrays
from recstack.registry import READERS

#: marker file → block, for the blocks of this process (see :func:`register`)
_TABLES: dict[str, Block] = {}
MARKER = "data.memory"


def _column(data: Any, name: str) -> np.ndarray:
    try:
        column = data[name]
    except (KeyError, IndexError):
        have = list(data.columns) if hasattr(data, "columns") else list(data)
        raise KeyError(f"the data has no column '{name}' (columns: {have})") from None
    if hasattr(column, "to_numpy"):
        array = column.to_numpy()
    else:
        try:
            array = np.asarray(column)
        except ValueError:  # rows of different lengths (a tag list per row): one object per row
            array = np.empty(len(column), dtype=object)
            array[:] = list(column)
    # pandas' copy-on-write hands out read-only views; batches become tensors, which want writable memory
    return array if array.flags.writeable else array.copy()


def num_rows(data: Any) -> int:
    return len(data) if hasattr(data, "columns") else len(next(iter(data.values())))


def _arrow(values: np.ndarray, arrow_type: pa.DataType, default: Any, name: str) -> np.ndarray | pa.Array:
    """One column as the CSV reader converts it: missing → default, numbers through the declared type."""
    array = pa.array(values, from_pandas=True)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            array = array.cast(pa.string())
        return pc.fill_null(array.cast(pa.string()), pa.scalar(default, pa.string()))
    try:
        array = pc.fill_null(array.cast(arrow_type), pa.scalar(default, arrow_type))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"column '{name}' does not convert to {arrow_type}: {err}") from None
    return array.to_numpy(zero_copy_only=False)


_ARROW = {"INT32": pa.int32(), "INT64": pa.int64(), "FLOAT": pa.float32(), "DOUBLE": pa.float64(),
          "STRING": pa.string()}


def encode_tabular(data: Any, spec: TabularSpec, with_labels: bool = True) -> Block:
    """The block :class:`~recstack.easyrec.tabular.TabularReader` parses from the same rows (see module doc).

    Without labels (``with_labels=False``: prediction) the label columns are zeros.
    """
    n = num_rows(data)
    block: Block = {}
    for name in spec.label_fields:
        label = np.asarray(_column(data, name), dtype=np.float32).reshape(-1, 1) if with_labels \
            else np.zeros((n, 1), np.float32)
        if not np.isin(label, (0.0, 1.0)).all():
            raise ValueError(f"label '{name}' must be 0 or 1")
        block[name] = label
    cache: dict[str, np.ndarray] = {}

    def feature_array(name: str) -> np.ndarray:
        if name in cache:
            return cache[name]
        f = spec.feature(name)
        field = spec.input_field(f.input_name)
        column = _arrow(_column(data, f.input_name), _ARROW[field.type], field.default, f.input_name)
        out = feature_column(f, field.type, column, f"column '{f.input_name}'",
                             lambda row, message: ValueError(f"{message} (row {row})"))
        cache[name] = out
        return out

    for group in spec.groups:
        ids = [feature_array(f.name) for f in spec.id_features(group.name)]
        values = [feature_array(f.name) for f in spec.value_features(group.name)]
        if ids:
            block[f"{group.name}.ids"] = np.stack(ids, axis=1) if n else np.zeros((0, len(ids)), np.int64)
        if values:
            block[f"{group.name}.values"] = (np.stack(values, axis=1).astype(np.float32) if n
                                             else np.zeros((0, len(values)), np.float32))
        lengths: dict[str, np.ndarray] = {}
        for f in spec.ragged_features(group.name):
            arrays = ragged_feature_arrays(f, _cells(_column(data, f.input_name), f.separator, f.input_name),
                                           f"column '{f.input_name}' (feature '{f.name}')",
                                           lambda row, message: ValueError(f"{message} (row {row})"))
            for role, key in spec.ragged_keys(group.name, f).items():
                block[key] = arrays[role]
            if f.is_sequence:
                lengths[f.name] = arrays["lengths"][:, 0]
        for name, other in list(lengths.items())[1:]:  # a group's sequences are read side by side
            first, row_lengths = next(iter(lengths.items()))
            if (row_lengths != other).any():
                row = int(np.argmax(row_lengths != other))
                raise ValueError(f"sequence features '{first}' and '{name}' of group '{group.name}' hold "
                                 f"{row_lengths[row]} and {other[row]} values (row {row}); they need the same number")
    return block


def _cells(values: Any, separator: str, name: str) -> pa.Array:
    """A tag or sequence column as the file's cells: strings as they are (``"a|b"``, ``"k:0.5|m:2"``), a list
    of values per row joined with the feature's separator; missing rows empty."""
    array = pa.array(values, from_pandas=True)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        try:
            array = pc.binary_join(array.cast(pa.list_(pa.string())), separator)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ValueError(f"column '{name}': a list per row must hold strings or numbers: {err}") from None
    elif not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        if not pa.types.is_null(array.type):
            raise ValueError(f"column '{name}': expected the values of each row as one '{separator}'-separated "
                             f"string or a list, got {array.type}")
        array = array.cast(pa.string())
    return pc.fill_null(array.cast(pa.string()), "")


def _ragged(values: np.ndarray, name: str) -> RaggedArray:
    """A column of id sequences (lists / arrays, or strings of space-separated ids) as a RaggedArray."""
    if isinstance(values, RaggedArray):
        return values
    array = pa.array(values, from_pandas=True)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = pc.ascii_split_whitespace(array)
    if not pa.types.is_list(array.type) and not pa.types.is_large_list(array.type):
        raise ValueError(f"column '{name}': expected a sequence of ids per row, got {array.type}")
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(array)
    try:
        ids = np.array(flat.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"column '{name}': the history holds a value that is not an integer id: {err}") from None
    return RaggedArray.from_lengths(ids, lengths)


def encode_din(data: Any, pairs: Sequence[tuple[Any, Any]], label: str, user_column: str,
               with_labels: bool = True) -> Block:
    """The block :class:`~recstack.data.din.DINReader` parses: ``pairs`` are DIN's ``(history, target)`` features
    of the item and of the category (:func:`recstack.api.models.DIN`)."""
    n = num_rows(data)
    block: Block = {}
    for key, (history, target) in zip(("item", "cat"), pairs):
        hist = _ragged(_column(data, history.name), history.name)
        tgt = np.asarray(_column(data, target.input_name), dtype=np.int64).reshape(-1, 1)
        for what, ids in ((history.name, hist.values), (target.input_name, tgt)):
            if ids.size and (ids.min() < 0 or ids.max() >= target.vocab_size):
                raise ValueError(f"column '{what}': ids must lie in [0, vocab_size={target.vocab_size})")
        block[f"hist_{key}"], block[f"target_{key}"] = hist, tgt
    if (block["hist_item"].lengths != block["hist_cat"].lengths).any():
        raise ValueError(f"'{pairs[0][0].name}' and '{pairs[1][0].name}' must have the same length in every row")
    block["hist_len"] = block["hist_item"].lengths.reshape(-1, 1)
    block["label"] = np.asarray(_column(data, label), dtype=np.float32).reshape(-1, 1) if with_labels \
        else np.zeros((n, 1), np.float32)
    if not np.isin(block["label"], (0.0, 1.0)).all():
        raise ValueError(f"label '{label}' must be 0 or 1")
    has_user = hasattr(data, "columns") and user_column in data.columns or isinstance(data, Mapping) and \
        user_column in data
    block["user"] = (np.asarray(_column(data, user_column), dtype=np.int64).reshape(-1, 1) if has_user
                     else np.full((n, 1), -1, np.int64))
    order = ("hist_item", "hist_cat", "hist_len", "target_item", "target_cat", "label", "user")  # DINReader's
    return {k: block[k] for k in order}


# ---------------------------------------------------------------------- the reader
def register(block: Block, folder: str | os.PathLike) -> str:
    """Make ``block`` the data of ``folder`` for :class:`MemoryReader` (in this process): writes the marker file
    ``data.memory`` there (the loader lists a data folder's files) and returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    marker.write_text(json.dumps({"rows": len(next(iter(block.values()))), "columns": sorted(block)}))
    _TABLES[str(marker.resolve())] = block
    return str(folder.resolve())


def release(folder: str | os.PathLike) -> None:
    """Forget the block of ``folder`` (the marker file stays)."""
    _TABLES.pop(str((Path(folder) / MARKER).resolve()), None)


@READERS.register("memory")
class MemoryReader(BlockReader):
    """Reader of blocks held in memory by :func:`register` (``runner.*_reader_path: memory``): each data file is a
    marker whose block is handed out whole, as a file reader hands out one parsed block; the
    :class:`~recstack.data.loader.BatchLoader` shuffles, cuts and pads it as any block."""

    cacheable = False

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        blocks = [self._block(f) for f in self.file_list]
        self.columns = {k: (v.dtype, 0 if isinstance(v, RaggedArray) else v.shape[1]) for k, v in blocks[0].items()}

    @staticmethod
    def _block(path: str) -> Block:
        try:
            return _TABLES[str(Path(path).resolve())]
        except KeyError:
            raise FileNotFoundError(f"{path}: no in-memory data registered for it in this process (the 'memory' "
                                    "reader serves the data given to recstack.api.Trainer)") from None

    def iter_blocks(self, files: Sequence[str] | None = None, cache_dir: str | None = None,
                    pool: Any = None) -> Iterator[Block]:
        for path in self.file_list if files is None else files:
            block = self._block(path)
            self.bytes_read += os.path.getsize(path)
            yield block


# ---------------------------------------------------------------------- back to text
def write_text(block_source: Any, path: str | os.PathLike, kind: str, spec: TabularSpec | None = None,
               pairs: Sequence[tuple[Any, Any]] = (), label: str = "label", user_column: str = "user",
               rows: int | None = None) -> Path:
    """Write the first ``rows`` rows of a table in the model's file format (CSV of ``spec.input_fields`` for a
    feature-config model, DIN's ``hist;cats;item;cat;label;user`` lines for DIN), vectorised with pyarrow."""
    n = num_rows(block_source) if rows is None else min(rows, num_rows(block_source))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "tabular":
        assert spec is not None
        columns = {}
        for field in spec.input_fields:
            values = pa.array(_column(block_source, field.name)[:n], from_pandas=True)
            if field.type in INT_RANGES and pa.types.is_floating(values.type):
                values = values.cast(pa.int64())  # (a pandas int column with missing entries is float)
            columns[field.name] = values.cast(pa.string())
        table = pa.table(columns)
        pacsv.write_csv(table, str(path), pacsv.WriteOptions(include_header=False, delimiter=spec.separator,
                                                              quoting_style="none"))
        # pyarrow writes a null as an empty field: the reader's default, as in the table
        return path
    block = encode_din({k: _column(block_source, k)[:n] for k in _din_columns(block_source, pairs, label, user_column)},
                       pairs, label, user_column)
    parts = []
    for key in ("hist_item", "hist_cat"):
        ragged = block[key]
        lists = pa.ListArray.from_arrays(pa.array(ragged.offsets.astype(np.int32)), pa.array(ragged.values))
        parts.append(pc.binary_join(lists.cast(pa.list_(pa.string())), " "))
    parts += [pa.array(block[k][:, 0]).cast(pa.string()) for k in ("target_item", "target_cat")]
    parts.append(pa.array(block["label"][:, 0].astype(np.int64)).cast(pa.string()))
    parts.append(pa.array(block["user"][:, 0]).cast(pa.string()))
    lines = pc.binary_join_element_wise(*parts, ";")
    path.write_text("\n".join(lines.to_pylist()) + "\n")
    return path


def _din_columns(data: Any, pairs: Sequence[tuple[Any, Any]], label: str, user_column: str) -> list[str]:
    names = [n for h, t in pairs for n in (h.name, t.input_name)] + [label]
    have = list(data.columns) if hasattr(data, "columns") else list(data)
    return names + ([user_column] if user_column in have else [])

"""In-memory data for the Python API: DataFrames and dicts of numpy arrays → the file readers' blocks.

:func:`encode_tabular` / :func:`encode_din` turn a table (anything with ``columns`` and ``to_numpy``, e.g. a
pandas DataFrame, or a ``dict`` of arrays) into the block the model's file reader would parse from the same rows,
vectorised (pyarrow / numpy, no per-row Python): for a feature-config model the block of
:class:`recstack.easyrec.tabular.TabularReader`, by its own :meth:`~recstack.easyrec.tabular.TabularReader.table_block`
(labels, ``<group>.ids`` / ``<group>.values``, and the keys of its tag and sequence features: a column of the
file's cells, ``"a|b"``, or of lists), for DIN the columns of :class:`recstack.data.din.DINReader` (histories as
:class:`~recstack.data.base.RaggedArray`). :class:`MemoryReader` (core reader name ``memory``) hands that
block to the ordinary :class:`~recstack.data.loader.BatchLoader`, so batching, shuffling and padding are
the file path's. :func:`write_text` writes rows back in the file format (for export, whose JSON must name a
reader that serving can run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recstack.config import Config
from recstack.data.base import Block, BlockReader, DataFormatError, RaggedArray
from recstack.easyrec.features import INT_RANGES, InputField, TabularSpec
from recstack.easyrec.tabular import TabularReader, is_list_type, parquet_column
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


def encode_tabular(data: Any, config: Config, with_labels: bool = True) -> Block:
    """The block :class:`~recstack.easyrec.tabular.TabularReader` parses from the same rows (see module doc): the
    used columns as a table of their fields' Arrow types (:func:`_table_column`), converted by the reader's
    :meth:`~recstack.easyrec.tabular.TabularReader.table_block`, the file readers' one conversion.

    Args:
        data: a table (``columns`` and ``to_numpy``) or a dict of arrays.
        config: the model's config (:func:`recstack.api.make_config`).
        with_labels: ``False`` (prediction): the label columns are zeros, and need not be in ``data``.

    Raises:
        ValueError: (:class:`~recstack.data.base.DataFormatError`) naming the column and the row of a bad value, or
            a label (the API's models learn 0 / 1 labels) that is not 0 or 1.
    """
    reader = TabularReader([], config)
    labels = reader.spec.label_fields

    def fail(row: int, message: str) -> DataFormatError:
        return DataFormatError(f"row {row}: {message}")

    columns = [_table_column(np.zeros(num_rows(data), np.int8) if f.name in labels and not with_labels
                             else _column(data, f.name), f, f.name in reader.list_fields, fail) for f in reader.used]
    block = reader.table_block(pa.Table.from_arrays(columns, names=[f.name for f in reader.used]), fail)
    for name in labels:
        bad = (block[name][:, 0] != 0) & (block[name][:, 0] != 1)
        if bad.any():
            row = int(np.argmax(bad))
            raise fail(row, f"label '{name}' must be 0 or 1, got {block[name][row, 0]:g}")
    return block


def _table_column(values: Any, field: InputField, list_ok: bool, fail: Callable[[int, str], Exception]) -> pa.Array:
    """One column as its field's Arrow type, as a Parquet column (:func:`~recstack.easyrec.tabular.parquet_column`:
    numbers through the declared type, missing values null, to take the ``default_val``); a field read only by
    tag and sequence features (``list_ok``) takes the file's cells (``"a|b"``, ``"k:0.5|m:2"``) or a list per row."""
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataFormatError(f"column '{field.name}' ({field.type}) does not convert to a column: {err}") from None
    if pa.types.is_null(array.type):  # no value at all
        array = array.cast(pa.string() if field.type == "STRING" else pa.int64())
    if list_ok and not (is_list_type(array.type) or pa.types.is_string(array.type)
                        or pa.types.is_large_string(array.type) or pa.types.is_dictionary(array.type)):
        raise DataFormatError(f"column '{field.name}': expected the values of each row as one separated string or a "
                              f"list, got {array.type}")
    return parquet_column(array, field, list_ok, fail)


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

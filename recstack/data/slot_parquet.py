"""PaddleRec's slot format (Criteo) as Parquet columns: the slot readers' blocks from columnar files.

Column layout (doc/custom_reader.md#parquet), one row per sample, the columns named like the slots of
the text format (``click:0 dense_feature:0.05 ... 1:737395 ... 26:306163``):

* ``click``: the label, an integer (or float) column of 0 / 1;
* the dense values: one list column ``dense_feature`` (``list<float>`` / ``list<double>``, exactly
  ``dense_input_dim`` values a row), or ``dense_input_dim`` number columns ``dense_feature_0`` ..
  ``dense_feature_<dense_input_dim - 1>``;
* one integer column per sparse slot, named by the slot: ``1`` .. ``<sparse_inputs_slots - 1>``.

Other columns are not read. Nulls are errors (the slot format has no defaults). Blocks are exactly the slot
reader's (:class:`recstack.data.slot.SlotReader`): ``label`` float32 ``(n, 1)``, ``sparse`` int64 ``(n, S)``,
``dense`` float32 ``(n, Dn)``, so every slot-format model (DeepFM, DCN, ...) trains on these files with
``runner.train_reader_path: slot_parquet``. Files are streamed a record batch at a time
(:func:`recstack.data.parquet.iter_parquet`); an error names the file, the row (0-based over the file) and
the column. ``python datasets/synthetic/generate.py criteo --format parquet`` and ``tools/to_parquet.py``
write this layout.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.config import Config, ConfigError
from recstack.data.base import Block, BlockReader, ColumnChunk, DataFormatError, FeatureUnit
from recstack.data.parquet import iter_parquet, open_parquet, row_error
from recstack.registry import READERS

LABEL_COLUMN = "click"
DENSE_COLUMN = "dense_feature"


def slot_schema(num_sparse: int, dense_dim: int) -> pa.Schema:
    """The schema this module's writers use: ``click`` int64, ``dense_feature`` ``list<float>``, ``1`` ..
    ``num_sparse`` int64."""
    return pa.schema([(LABEL_COLUMN, pa.int64()), (DENSE_COLUMN, pa.list_(pa.float32())),
                      *((str(i), pa.int64()) for i in range(1, num_sparse + 1))])


def slot_batch(label: np.ndarray, dense: np.ndarray, sparse: np.ndarray) -> pa.RecordBatch:
    """A record batch of :func:`slot_schema` from a slot block's arrays (``label`` (n, 1), ``dense`` (n, Dn),
    ``sparse`` (n, S))."""
    n, dim = dense.shape
    dense_list = pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)),
                                          pa.array(np.ascontiguousarray(dense, dtype=np.float32).reshape(-1)))
    arrays = [pa.array(np.asarray(label).reshape(-1).astype(np.int64)), dense_list,
              *(pa.array(np.ascontiguousarray(sparse[:, j], dtype=np.int64)) for j in range(sparse.shape[1]))]
    return pa.RecordBatch.from_arrays(arrays, schema=slot_schema(sparse.shape[1], dim))


@READERS.register("slot_parquet")
class SlotParquetReader(BlockReader):
    """Reader of the slot format's Parquet layout (see the module docstring).

    Config keys (``hyper_parameters``): those of the slot reader, ``sparse_inputs_slots`` (label + sparse
    slots, PaddleRec: 27), ``dense_input_dim`` (13), ``sparse_feature_number`` (ids must be below it).

    Args:
        file_list: Parquet files.
        config: the run's config.
    """

    def __init__(self, file_list, config: Config) -> None:
        super().__init__(file_list, config)
        self.num_sparse = config.get("hyper_parameters.sparse_inputs_slots", type=int) - 1
        self.dense_dim = config.get("hyper_parameters.dense_input_dim", type=int)
        self.id_bound = config.get("hyper_parameters.sparse_feature_number", None, type=int)
        if self.num_sparse < 1 or self.dense_dim < 0:
            raise ConfigError(f"{config.source('hyper_parameters.sparse_inputs_slots')}: need at least one "
                              "sparse slot besides the label")
        self.sparse_slots = [str(i) for i in range(1, self.num_sparse + 1)]
        self.columns = {"label": (np.dtype(np.float32), 1), "sparse": (np.dtype(np.int64), self.num_sparse),
                        "dense": (np.dtype(np.float32), self.dense_dim)}

    def feature_units(self) -> list[FeatureUnit]:
        """As the slot reader's: each sparse slot its own group, each dense value in group ``dense_feature``."""
        sparse = [FeatureUnit(slot, slot, (("sparse", j),)) for j, slot in enumerate(self.sparse_slots)]
        return sparse + [FeatureUnit(f"{DENSE_COLUMN}[{j}]", DENSE_COLUMN, (("dense", j),))
                         for j in range(self.dense_dim)]

    def dense_columns(self, path: str) -> list[str]:
        """``[dense_feature]`` when the file has that list column, else ``dense_feature_0`` ..."""
        if not self.dense_dim:
            return []
        names = open_parquet(path, []).schema_arrow.names
        if DENSE_COLUMN in names:
            return [DENSE_COLUMN]
        return [f"{DENSE_COLUMN}_{j}" for j in range(self.dense_dim)]

    def chunks(self, path: str) -> Iterator[tuple[ColumnChunk, int]]:
        return iter_parquet(path, [LABEL_COLUMN, *self.dense_columns(path), *self.sparse_slots])

    def parse_block(self, chunk: ColumnChunk, path: str, first_line: int) -> Block:
        """The block of a record batch (``first_line``: its first row in the file, from 0)."""
        if not isinstance(chunk, ColumnChunk):
            raise DataFormatError(f"{path}: the slot_parquet reader reads Parquet files (the slot text format is "
                                  "read by the slot / criteo readers)")
        batch, n = chunk.batch, chunk.batch.num_rows

        def fail(row: int, message: str) -> DataFormatError:
            return row_error(path, first_line + row, message)

        label = self._numbers(batch.column(LABEL_COLUMN), LABEL_COLUMN, False, fail).astype(np.float32)
        bad = (label != 0) & (label != 1)
        if bad.any():
            row = int(np.argmax(bad))
            raise fail(row, f"column '{LABEL_COLUMN}' (the label) must be 0 or 1, got {label[row]:g}")
        sparse = np.empty((n, self.num_sparse), dtype=np.int64)
        for j, slot in enumerate(self.sparse_slots):
            ids = self._numbers(batch.column(slot), slot, True, fail)
            bad = (ids < 0) | (ids >= self.id_bound) if self.id_bound else ids < 0
            if bad.any():
                row = int(np.argmax(bad))
                raise fail(row, f"column '{slot}' (sparse slot): id {int(ids[row])} outside [0, sparse_feature_number"
                                + (f"={self.id_bound})" if self.id_bound else ")"))
            sparse[:, j] = ids
        dense = np.empty((n, self.dense_dim), dtype=np.float32)
        if self.dense_dim and DENSE_COLUMN in batch.schema.names:
            dense[:] = self._dense_list(batch.column(DENSE_COLUMN), fail)
        else:
            for j in range(self.dense_dim):
                name = f"{DENSE_COLUMN}_{j}"
                dense[:, j] = self._numbers(batch.column(name), name, False, fail)
        bad = ~np.isfinite(dense).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            raise fail(row, f"column '{DENSE_COLUMN}': value {int(np.argmax(~np.isfinite(dense[row])))} is not finite "
                            "(nan, inf, or beyond float32's 3.4e38)")
        return {"label": label.reshape(-1, 1), "sparse": sparse, "dense": dense}

    @staticmethod
    def _numbers(column: pa.Array, name: str, integer: bool, fail) -> np.ndarray:
        """int64 or float64 values of a number column (no nulls; an integer column for ids)."""
        kind = column.type
        if column.null_count:
            raise fail(int(np.argmax(~np.asarray(column.is_valid()))), f"column '{name}' is null (the slot format "
                                                                       "has no defaults)")
        if integer and not pa.types.is_integer(kind) or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                                              or pa.types.is_boolean(kind)):
            raise fail(0, f"column '{name}' is {kind}; expected {'an integer' if integer else 'a number'} column")
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64 if integer else np.float64)

    def _dense_list(self, column: pa.Array, fail) -> np.ndarray:
        """``(n, dense_input_dim)`` of the ``dense_feature`` list column (each row exactly that many numbers)."""
        kind = column.type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) \
                or not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
            raise fail(0, f"column '{DENSE_COLUMN}' is {kind}; expected a list of numbers (list<float>)")
        if column.null_count:
            raise fail(int(np.argmax(~np.asarray(column.is_valid()))), f"column '{DENSE_COLUMN}' is null")
        lengths = np.asarray(pc.list_value_length(column).to_numpy(zero_copy_only=False))
        bad = lengths != self.dense_dim
        if bad.any():
            row = int(np.argmax(bad))
            raise fail(row, f"column '{DENSE_COLUMN}' holds {lengths[row]} values, expected dense_input_dim="
                            f"{self.dense_dim}")
        values = pc.list_flatten(column)
        if values.null_count:
            rows = np.asarray(pc.list_parent_indices(column).to_numpy(zero_copy_only=False))
            raise fail(int(rows[np.argmax(~np.asarray(values.is_valid()))]), f"column '{DENSE_COLUMN}' holds a null")
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, self.dense_dim)

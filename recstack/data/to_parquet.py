"""Text data to Parquet through the readers' own parsing (``tools/to_parquet.py``, ``generate.py --format parquet``).

* **Feature-config data** (the ``tabular`` reader, CSVInput): every input field of ``data_config.input_fields``
  becomes a column of its field's type, parsed and checked by :meth:`recstack.easyrec.tabular.TabularReader.read_table`
  (empty numeric fields are nulls, which the Parquet reader reads as the ``default_val`` again). A STRING field
  read only by ``TagFeature`` / ``SequenceFeature`` features is written as a list column of its values
  (``list<string>``; ``list<int64>`` when every value is an integer id of a ``num_buckets`` feature), split
  at the feature's separator, empty values dropped. The result is read with ``input_type: ParquetInput``.
* **Slot-format data** (the ``slot`` / ``criteo`` readers): the slot reader's blocks in the layout of
  :mod:`recstack.data.slot_parquet` (``click``, ``dense_feature`` ``list<float>``, ``1`` .. ``26`` int64), read
  with ``train_reader_path: slot_parquet``.

Either way the Parquet reader gives the same blocks as the text reader (tests/test_parquet.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.config import Config, ConfigError
from recstack.data.base import BlockReader, list_data_files, read_chunks
from recstack.data.parquet import ROW_GROUP_ROWS, write_parquet
from recstack.data.slot import CriteoReader, SlotReader
from recstack.data.slot_parquet import slot_batch, slot_schema
from recstack.easyrec.tabular import _ARROW_TYPES, TabularReader

logger = logging.getLogger(__name__)


def list_column(column: pa.Array, separator: str, integer: bool) -> pa.Array:
    """A string column's cells split at ``separator`` into a list column, empty values dropped (``list<string>``;
    ``list<int64>`` with ``integer`` when every value is an integer)."""
    lists = pc.split_pattern(column, pattern=separator)
    values = pc.list_flatten(lists)
    rows = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = np.asarray(pc.not_equal(values, "").to_numpy(zero_copy_only=False), dtype=bool)
    values, rows = values.filter(pa.array(keep)), rows[keep]
    if integer:
        try:
            values = pc.cast(pc.utf8_trim(values, " \t"), pa.int64())
        except (pa.ArrowInvalid, OverflowError):
            pass  # not all integers: kept as strings
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(column)))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class TabularConverter:
    """CSVInput files of a feature config → Parquet tables of all input fields (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self.reader = TabularReader([], config, all_columns=True)
        spec = self.reader.spec
        readers: dict[str, list] = {}
        for feature in spec.features:
            readers.setdefault(feature.input_name, []).append(feature)
        #: field -> (separator, integer ids) of the STRING fields written as list columns
        self.lists = {}
        for name, features in readers.items():
            if spec.input_field(name).type == "STRING" and all(f.is_ragged for f in features) \
                    and len({f.separator for f in features}) == 1:
                integer = all(not f.is_weighted and (f.is_tag or f.sub_feature_type == "IdFeature")
                              and not f.hash_bucket_size and not f.vocab for f in features)
                self.lists[name] = (features[0].separator, integer)
        self.fields = list(spec.input_fields)

    def table(self, chunk: bytes, path: str, first_line: int) -> pa.Table:
        """All input fields of a chunk of lines, tag and sequence fields as list columns."""
        table = self.reader.read_table(chunk, path, first_line)
        columns = []
        for field in self.fields:
            column = table.column(field.name).combine_chunks()
            if field.name in self.lists:
                column = list_column(column, *self.lists[field.name])
            columns.append(column)
        return pa.Table.from_arrays(columns, names=[f.name for f in self.fields])

    def schema(self, first: pa.Table | None) -> pa.Schema:
        if first is not None:
            return first.schema
        return pa.schema([(f.name, _ARROW_TYPES[f.type]) for f in self.fields])


def converter_for(config: Config, reader_cls: type[BlockReader]) -> str:
    """``"tabular"`` or ``"slot"``: the layout a config's text reader converts to.

    Raises:
        ConfigError: a reader without a Parquet layout.
    """
    if isinstance(reader_cls, type) and issubclass(reader_cls, TabularReader):
        return "tabular"
    if isinstance(reader_cls, type) and issubclass(reader_cls, SlotReader):
        return "slot"
    if reader_cls is CriteoReader and config.get("hyper_parameters.num_field", None) is None:
        return "slot"
    raise ConfigError(f"no Parquet layout for the reader {getattr(reader_cls, '__name__', reader_cls)}: "
                      "tools/to_parquet.py converts feature-config data (the tabular reader, CSVInput) and the "
                      "slot format (slot / criteo readers)")


def parquet_parts(config: Config, layout: str, chunks: Iterable[tuple[bytes, int]],
                  name: str) -> tuple[pa.Schema, Iterator[pa.Table | pa.RecordBatch]]:
    """The schema and the record batches of text chunks (``(chunk of complete lines, first line number)``, as
    :func:`recstack.data.base.read_chunks` gives them; ``name`` names them in errors), parsed by the layout's
    reader: ``"tabular"`` (a feature config's CSVInput) or ``"slot"``."""
    if layout == "tabular":
        converter = TabularConverter(config)
        tables = (converter.table(chunk, name, line) for chunk, line in chunks)
        first = next(tables, None)
        schema = converter.schema(first)

        def parts() -> Iterator[pa.Table]:
            if first is not None:
                yield first.cast(schema)
            for table in tables:
                yield table.cast(schema)

        return schema, parts()
    if layout != "slot":
        raise ValueError(f"layout must be 'tabular' or 'slot', got {layout!r}")
    reader = SlotReader([], config)
    return (slot_schema(reader.num_sparse, reader.dense_dim),
            (slot_batch(b["label"], b["dense"], b["sparse"]) for b in
             (reader.parse_block(chunk, name, line) for chunk, line in chunks) if len(b["label"])))


def convert_file(config: Config, layout: str, src: str | Path, dst: str | Path,
                 row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """Convert one text file to one Parquet file (written atomically, streamed); returns its rows."""
    schema, parts = parquet_parts(config, layout, read_chunks(str(src)), str(src))
    return write_parquet(dst, parts, schema, row_group_rows)


def convert(config: Config, layout: str, src: str | Path, dst: str | Path) -> list[tuple[str, int]]:
    """Convert every data file of ``src`` (a folder, a file or a glob) into ``dst/<name>.parquet``."""
    out = []
    for path in list_data_files(src, key="--src"):
        target = Path(dst) / (Path(path).stem + ".parquet")
        rows = convert_file(config, layout, path, target)
        logger.info("%s -> %s (%d rows)", path, target, rows)
        out.append((str(target), rows))
    return out

"""Parquet files for the readers: streamed record batches, errors naming file, row and column, and a
deterministic writer.

A reader of Parquet (``data_config.input_type: ParquetInput`` in the tabular reader, the ``slot_parquet``
reader) yields :class:`~recstack.data.base.ColumnChunk` chunks from :func:`iter_parquet`: record batches of
at most ``batch_rows`` rows of only the columns it uses (``ParquetFile.iter_batches`` over one row group at a
time: a reader never holds a whole file, so memory stays flat as files grow). Rows are counted from 0 over
the whole file (``row 0`` is the file's first row) in every error message.

:func:`write_parquet` writes what the generators, preprocessors and ``tools/to_parquet.py`` produce:
fixed row-group size and compression, no timestamps: the same rows give byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recstack.data.base import ColumnChunk, DataFormatError
from recstack.fileio import atomic_path

#: rows per record batch read (one block each; a row group's last batch may be shorter)
BATCH_ROWS = 65536
#: rows per row group written (readers hold about one row group's compressed columns at a time)
ROW_GROUP_ROWS = 100_000
#: compression of written files (fixed: byte-identical output)
COMPRESSION = "zstd"


def row_error(path: str, row: int, message: str) -> DataFormatError:
    """A :class:`DataFormatError` naming a Parquet file's row (0-based, counted over the whole file)."""
    return DataFormatError(f"{path}: row {row}: {message}")


def open_parquet(path: str, columns: Sequence[str]) -> pq.ParquetFile:
    """The file, after checking that it is Parquet, has rows and holds ``columns``.

    Raises:
        DataFormatError: not a Parquet file, no rows, or a missing column (named, with the file's columns).
    """
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataFormatError(f"{path}: not a readable Parquet file ({err})") from None
    names = pf.schema_arrow.names
    for name in columns:
        if name not in names:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise DataFormatError(f"{path}: no column '{name}' (the file's columns: {shown})")
    if pf.metadata.num_rows == 0:
        raise DataFormatError(f"{path}: file holds no rows")
    return pf


def iter_parquet(path: str, columns: Sequence[str], batch_rows: int = BATCH_ROWS) -> Iterator[tuple[ColumnChunk, int]]:
    """``(ColumnChunk, first row)`` of ``columns``, one record batch at a time, in file order.

    Each chunk's ``nbytes`` is its share of the file size by rows (the loader's progress estimate).
    """
    pf = open_parquet(path, columns)
    total, size = pf.metadata.num_rows, os.path.getsize(path)
    row = 0
    try:
        for group in range(pf.metadata.num_row_groups):  # one row group at a time (iter_batches alone may join them)
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=list(columns),
                                         use_threads=False):
                n = batch.num_rows
                if n:
                    yield ColumnChunk(batch, size * (row + n) // total - size * row // total), row
                row += n
    except (pa.ArrowException, OSError) as err:
        raise DataFormatError(f"{path}: row {row}: cannot read the row group starting here ({err})") from None
    finally:
        pf.close()


def write_parquet(path: str | os.PathLike, batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema,
                  row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """Write record batches (or tables) of ``schema`` to ``path`` atomically; returns the rows written.

    Fixed row-group size and compression, no pandas metadata and no timestamps: identical rows give a
    byte-identical file (with the same pyarrow version, whose name the file records).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(str(tmp), schema, compression=COMPRESSION, write_statistics=False,
                                  store_schema=False)
        pending: list[pa.RecordBatch] = []
        held = 0
        try:
            for part in batches:
                for batch in (part.to_batches() if isinstance(part, pa.Table) else [part]):
                    pending.append(batch)
                    held += batch.num_rows
                    while held >= row_group_rows:  # row groups of exactly row_group_rows rows
                        table = pa.Table.from_batches(pending, schema)
                        writer.write_table(table.slice(0, row_group_rows), row_group_size=row_group_rows)
                        rest = table.slice(row_group_rows)
                        pending, held = rest.to_batches(), rest.num_rows
                        rows += row_group_rows
            if held or rows == 0:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=row_group_rows)
                rows += held
        finally:
            writer.close()
    return rows

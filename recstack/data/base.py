"""Block readers: parse whole blocks of text lines into column arrays.

A reader turns the files of a data folder into a stream of *blocks*: dicts of
numpy arrays with one row per sample (``{"label": (n, 1), "sparse": (n, 26),
"dense": (n, 13)}``). Subclasses implement :meth:`BlockReader.parse_block` for
one chunk of complete lines, vectorised (pyarrow's CSV parser, numpy), never a
Python loop per line on the fast path; when the fast path rejects a block, the
subclass re-reads it line by line only to name the first bad line.

A column of variable-length rows (DIN's behaviour histories) is a :class:`RaggedArray`
(values and row boundaries, unpadded); the loader pads each batch of it to the batch's
longest row.

A block of *grouped* rows (one row per group of samples, e.g. GroupRTPInput's one line
per item with its ``group_size`` impressions) holds per-group arrays (``(n, ...)``)
and :class:`BatchColumn` columns: :class:`GroupedRows` (each group's samples, concatenated
in a batch, never padded) and :class:`GroupIndex` (each sample's group within the
batch). The loader cuts, shuffles and joins such blocks by groups, so a group is
never split across batches.

The loader (:mod:`recstack.data.loader`) cuts blocks into batches.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recstack.config import Config
from recstack.fileio import owner_tag, remove_tree, stale_folders

logger = logging.getLogger(__name__)

Block = dict[str, np.ndarray]

#: bytes read per block (cut at the last newline)
BLOCK_BYTES = 4 << 20


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and line."""


# ---------------------------------------------------------------------- numbers and blank lines
# One grammar for numbers in every core reader (doc/custom_reader.md#numbers): exactly what pyarrow's
# CSV conversion accepts, which the vectorised fast paths use, minus hexadecimal integers; the per-line
# paths check the same with these patterns, so a value never parses on one path and fails on the other.
# Not accepted: Python-only forms such as ``1_000`` or non-ASCII digits, ``0x1f`` / ``0o7`` / ``0b1``,
# whitespace inside a number, ``+`` before an integer.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
#: an integer: an optional ``-`` and ASCII digits (spaces and tabs around it are ignored)
INTEGER = re.compile(r"[ \t]*-?[0-9]+[ \t]*")
#: a decimal number: optional sign, digits with an optional fraction, an optional exponent; or inf,
#: infinity, nan (any case; readers refuse them where a value must be finite)
DECIMAL = re.compile(r"[ \t]*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)[ \t]*",
                     re.IGNORECASE)
_WHITESPACE_LINE = re.compile(rb"^[ \t\r\x0b\x0c]+$", re.MULTILINE)


class NumberRangeError(ValueError):
    """An integer of the reader grammar outside the int64 range."""


def parse_int(text: str | bytes) -> int:
    """An integer of the readers' grammar (``-?[0-9]+``, in int64).

    Raises:
        NumberRangeError: outside ``[-2**63, 2**63 - 1]``.
        ValueError: not an integer of the grammar (``1_2``, ``0x4``, ``+4``, ``1.0``, ``1 2``).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if INTEGER.fullmatch(text) is None:
        raise ValueError(f"not an integer: {text!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise NumberRangeError(f"{text.strip()} is outside the int64 range [-2^63, 2^63-1]")
    return value


def parse_float(text: str | bytes) -> float:
    """A number of the readers' grammar (see :data:`DECIMAL`).

    Raises:
        ValueError: not a number of the grammar (``1_0``, ``0x1p-1``, ``1 0``).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if DECIMAL.fullmatch(text) is None:
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def may_hold_hex(chunk: bytes) -> bool:
    """Whether a chunk may hold a hexadecimal integer (``0x1f``), which pyarrow's integer parser accepts and
    the readers' grammar does not; a fast path then checks further or leaves the chunk to its per-line parse.

    One ``memchr`` per case (``x``, ``X``): a fraction of a millisecond for 4 MiB.
    """
    return b"x" in chunk or b"X" in chunk


def holds_hex(chunk: bytes) -> bool:
    """Whether ``0x`` or ``0X`` occurs in the chunk (exact; a few milliseconds for 4 MiB)."""
    if not may_hold_hex(chunk):
        return False
    data = np.frombuffer(chunk, dtype=np.uint8)
    at = np.flatnonzero((data[1:] | 32) == ord("x"))
    return bool((data[at] == ord("0")).any())


def blank_whitespace_lines(chunk: bytes) -> bytes:
    """The chunk with each whitespace-only line (spaces, tabs, ``\\r``, ...) made empty: the same lines and
    line numbers, and blank lines that pyarrow's ``ignore_empty_lines`` skips (it keeps lines of spaces).

    A regular-expression pass (about 15 ms for 4 MiB): for the paths taken after a fast parse failed.
    """
    return _WHITESPACE_LINE.sub(b"", chunk)


def list_data_files(folder: str | os.PathLike, key: str = "data folder") -> list[str]:
    """All regular files of ``folder`` (sorted; hidden files and names starting with ``_`` skipped: Hadoop's and
    Spark's markers ``_SUCCESS``, ``_metadata``, the online trainer's done-files); ``folder`` may also be one file, or a
    glob pattern (``*``, ``?``, ``[...]``; ``**`` for any depth) whose matching files are read, sorted.

    Raises:
        DataFormatError: the folder does not exist or holds no files; a pattern matches no file.
    """
    path = Path(folder)
    if path.is_file():
        return [str(path)]
    if not path.is_dir() and any(c in str(folder) for c in "*?["):
        files = sorted(p for p in glob.glob(str(folder), recursive=True)
                       if os.path.isfile(p) and not os.path.basename(p).startswith((".", "_")))
        if not files:
            raise DataFormatError(f"{key}: pattern '{folder}' matches no data files")
        return files
    if not path.is_dir():
        raise DataFormatError(f"{key}: folder '{path}' does not exist")
    files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    if not files:
        raise DataFormatError(f"{key}: folder '{path}' holds no data files")
    return files


def read_chunks(path: str, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield ``(chunk, first_line_number)`` with chunks of complete lines.

    Raises:
        DataFormatError: the file is empty.
    """
    line_no = 1
    rest = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no newline yet: keep reading
                rest = data
                continue
            chunk, rest = data[:cut], data[cut:]
            yield chunk, line_no
            line_no += chunk.count(b"\n")
    if rest.strip():
        yield rest + b"\n", line_no
    elif line_no == 1 and not rest:
        raise DataFormatError(f"{path}: file is empty")


def bad_line(path: str, line_no: int, line: bytes, problem: str) -> DataFormatError:
    """A :class:`DataFormatError` quoting the start of the offending line."""
    text = line.decode("utf-8", "replace").rstrip("\n")
    if len(text) > 120:
        text = text[:117] + "..."
    return DataFormatError(f"{path}:{line_no}: {problem}: {text!r}")


def row_error(chunk: bytes, path: str, first_line: int, row: int, problem: str) -> DataFormatError:
    """Error naming the ``row``-th sample (non-blank line, 0-based) of a chunk."""
    seen = -1
    for offset, line in enumerate(chunk.split(b"\n")):
        if line.strip():
            seen += 1
            if seen == row:
                return bad_line(path, first_line + offset, line, problem)
    return DataFormatError(f"{path}: {problem}")


class Malformed(Exception):
    """Raised inside a reader's vectorised fast path: the chunk needs the per-line parse (which names the first
    bad line)."""


def numbered_lines(chunk: bytes, first_line: int) -> tuple[list[bytes], list[int]]:
    """The chunk's non-blank lines (``\\r`` stripped) and their line numbers in the file: what the per-line parses
    read and their errors name."""
    lines, numbers = [], []
    for offset, line in enumerate(chunk.split(b"\n")):
        line = line.rstrip(b"\r")
        if line.strip():
            lines.append(line)
            numbers.append(first_line + offset)
    return lines, numbers


@dataclass(frozen=True)
class ColumnChunk:
    """A chunk of a columnar file (Parquet) for :meth:`BlockReader.parse_block`: a record batch of the columns
    the reader reads, and the bytes of the file it stands for (its share of the file size, by rows: what
    :attr:`BlockReader.bytes_read` counts).

    Attributes:
        batch: a ``pyarrow.RecordBatch``.
        nbytes: its share of the file's bytes.
    """

    batch: object
    nbytes: int


@dataclass(frozen=True)
class FeatureUnit:
    """One input of a reader's blocks as a person names it: what ``tools/feature_importance.py`` shuffles
    across the samples as a whole (:mod:`recstack.importance`).

    Attributes:
        name: the feature's name (a slot ``6``, a feature-config feature ``item_ctr``, DIN's ``history``).
        group: the group it belongs to (``dense_feature``, a feature group ``all``, DIN's ``target``); a
            feature without one is its own group.
        columns: the block columns that hold it, ``(key, column index)``; index ``None``: the whole key
            (a ``(n, 1)`` array, or every row of a :class:`RaggedArray`). Columns listed together are
            permuted with one permutation, so they stay consistent with each other (a history's items,
            categories and length).
    """

    name: str
    group: str
    columns: tuple[tuple[str, int | None], ...]


class BlockReader:
    """Base class of readers: files → blocks of column arrays.

    Subclasses set :attr:`columns` (name → (dtype, width)) and implement
    :meth:`parse_block`. Construction reads what the reader needs from the
    config (``hyper_parameters`` keys such as ``sparse_inputs_slots``).

    Args:
        file_list: data files, read in order.
        config: the run's config.
    """

    #: column name → (numpy dtype, row width; 0 for a variable-length :class:`RaggedArray` column); filled by subclasses
    columns: dict[str, tuple[np.dtype, int]] = {}
    #: whether :class:`BinaryCache` can store the blocks (readers whose blocks hold :class:`BatchColumn` columns
    #: set False)
    cacheable: bool = True

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        self.file_list = list(file_list)
        self.config = config

    # -------------------------------------------------------------- subclass API
    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        """Parse a chunk of complete lines into column arrays.

        Raises:
            DataFormatError: naming ``path`` and the line number of the first bad line.
        """
        raise NotImplementedError

    def signature(self) -> str:
        """What determines the parsed arrays besides the file (for the binary cache)."""
        return f"{type(self).__module__}.{type(self).__qualname__}:{sorted(self.columns.items())}"

    def feature_units(self) -> list[FeatureUnit]:
        """The features of the blocks, for feature importance (:class:`FeatureUnit`).

        Default, from :attr:`columns`: a column of width 1 or of variable length is one feature named like
        it; each column ``j`` of a wider array ``key`` is a feature ``key[j]`` of group ``key``. Labels are
        listed too: the caller keeps the features the model reads (its wrapper's ``feed_names``). A reader
        whose columns hold named features, or features spread over several columns that belong together,
        overrides this (the slot, DIN, Ali-CCP and feature-config readers).
        """
        units = []
        for key, (_, width) in self.columns.items():
            if width > 1:
                units.extend(FeatureUnit(f"{key}[{j}]", key, ((key, j),)) for j in range(width))
            else:
                units.append(FeatureUnit(key, key, ((key, None),)))
        return units

    # -------------------------------------------------------------- iteration
    def chunks(self, path: str) -> Iterator[tuple[bytes, int]]:
        """``(chunk, first_line_number)`` of complete lines to parse (default :func:`read_chunks`); a columnar
        reader yields ``(ColumnChunk, first row)`` instead."""
        return read_chunks(path)

    #: bytes of the data files parsed so far (all files and passes; the binary cache counts the source
    #: file's bytes as it reads an entry): the loader's estimate of an epoch's progress
    bytes_read: int = 0

    def iter_file(self, path: str, pool: Executor | None = None) -> Iterator[Block]:
        """Blocks of one file parsed from text, in order; ``pool`` parses chunks in parallel."""
        sizes: deque[int] = deque()  # each chunk's bytes, counted in bytes_read when its block comes out

        def counted(chunks: Iterator[tuple[bytes, int]]) -> Iterator[tuple[bytes, int]]:
            for chunk, line in chunks:
                sizes.append(chunk.nbytes if isinstance(chunk, ColumnChunk) else len(chunk))
                yield chunk, line

        chunks = counted(self.chunks(path))
        if pool is None:
            blocks: Iterator[Block] = (self.parse_block(chunk, path, line) for chunk, line in chunks)
        else:
            blocks = _in_order(pool, self.parse_block, ((chunk, path, line) for chunk, line in chunks))
        any_rows = False
        for block in blocks:
            self.bytes_read += sizes.popleft() if sizes else 0
            if len(next(iter(block.values()))):
                any_rows = True
                yield block
        if not any_rows:
            raise DataFormatError(f"{path}: file holds no samples (only blank lines)")

    def iter_blocks(self, files: Sequence[str] | None = None, cache_dir: str | None = None,
                    pool: Executor | None = None) -> Iterator[Block]:
        """Blocks of all files in order, through the binary cache when ``cache_dir`` is set."""
        if cache_dir and not self.cacheable:
            logger.warning("%s: runner.cache_dir is ignored (this reader's blocks are not cacheable)",
                           type(self).__name__)
            cache_dir = None
        for path in self.file_list if files is None else files:
            if cache_dir:
                yield from BinaryCache(cache_dir, self).blocks(path, pool)
            else:
                yield from self.iter_file(path, pool)


def _in_order(pool: Executor, fn, args: Iterator[tuple]) -> Iterator:
    """``fn(*a)`` for each ``a``, computed by ``pool`` with bounded look-ahead, yielded in order."""
    pending: deque = deque()
    depth = 2 * max(1, getattr(pool, "_max_workers", 1))
    for a in args:
        pending.append(pool.submit(fn, *a))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class BinaryCache:
    """Parsed columns of each file stored as raw binary arrays (memory-mapped) for later epochs and runs.

    The cache folder of a file is keyed by its absolute path, size, mtime and the
    reader's signature, so an edited file or a changed reader setting is parsed
    again. Writing is atomic: arrays go to a temporary folder renamed into place
    once complete; an interrupted first pass leaves no half-written cache (and the
    next write removes the temporary folders of killed processes). An entry whose
    array files do not have the sizes its ``meta.json`` gives is parsed again.
    """

    ROWS_PER_BLOCK = 16384

    def __init__(self, root: str, reader: BlockReader) -> None:
        self.root = Path(root)
        self.reader = reader

    def key(self, path: str) -> str:
        st = os.stat(path)
        ident = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{self.reader.signature()}"
        return f"{Path(path).name}-{hashlib.sha1(ident.encode()).hexdigest()[:16]}"

    def blocks(self, path: str, pool: Executor | None = None) -> Iterator[Block]:
        folder = self.root / self.key(path)
        if (folder / "meta.json").is_file():
            try:
                meta, offsets = self._meta(folder)
            except (OSError, ValueError, KeyError, TypeError) as err:  # damaged (a disk error, a copy cut short)
                logger.warning("%s: damaged cache entry (%s); parsing %s again", folder, err, path)
                shutil.rmtree(folder, ignore_errors=True)
            else:
                size, rows = os.path.getsize(path), max(1, int(meta["rows"]))
                for block in self._read(folder, meta, offsets):
                    self.reader.bytes_read += size * len(next(iter(block.values()))) // rows  # (progress)
                    yield block
                return
        yield from self._write(path, folder, pool)

    @staticmethod
    def _meta(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
        """The entry's ``meta.json`` and the offsets of its ragged columns, after checking each array file
        has the size they describe."""
        meta = json.loads((folder / "meta.json").read_text())
        rows, ragged = int(meta["rows"]), set(meta.get("ragged", ()))
        offsets = {}
        for name, (dtype, width) in meta["columns"].items():
            itemsize = np.dtype(dtype).itemsize
            if name in ragged:  # values of all rows, one after another, and each row's length
                lengths = folder / f"{name}.lengths.bin"
                if lengths.stat().st_size != rows * 8:
                    raise ValueError(f"{lengths.name} holds {lengths.stat().st_size} bytes, not {rows * 8}")
                offsets[name] = np.concatenate([[0], np.cumsum(np.fromfile(lengths, dtype=np.int64))])
                expected = int(offsets[name][-1]) * itemsize
            else:
                expected = rows * int(width) * itemsize
            size = (folder / f"{name}.bin").stat().st_size
            if size != expected:
                raise ValueError(f"{name}.bin holds {size} bytes, not {expected}")
        return meta, offsets

    def _read(self, folder: Path, meta: dict, ragged_offsets: dict[str, np.ndarray]) -> Iterator[Block]:
        rows = meta["rows"]
        ragged = set(meta.get("ragged", ()))
        arrays = {name: np.memmap(folder / f"{name}.bin", dtype=np.dtype(dtype), mode="r", shape=(rows, width))
                  for name, (dtype, width) in meta["columns"].items() if name not in ragged}
        for name in ragged:
            offsets = ragged_offsets[name]
            arrays[name] = (_memmap_1d(folder / f"{name}.bin", meta["columns"][name][0], int(offsets[-1])), offsets)
        for start in range(0, rows, self.ROWS_PER_BLOCK):
            stop = min(rows, start + self.ROWS_PER_BLOCK)
            block = {}
            for name in meta["columns"]:
                if name in ragged:
                    values, offsets = arrays[name]
                    block[name] = RaggedArray(np.array(values[offsets[start]:offsets[stop]]),
                                              offsets[start:stop + 1] - offsets[start])
                else:
                    block[name] = np.array(arrays[name][start:stop])
            yield block

    def _write(self, path: str, folder: Path, pool: Executor | None) -> Iterator[Block]:
        self.root.mkdir(parents=True, exist_ok=True)
        for _, _, stale in stale_folders(self.root):  # left by killed first passes
            remove_tree(stale, "left by a killed cache write")
        tmp = self.root / f".tmp-{folder.name}-{owner_tag()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files: dict[str, object] = {}
        columns: dict[str, tuple[str, int]] = {}
        rows = 0
        try:
            ragged: list[str] = []
            for block in self.reader.iter_file(path, pool):
                for name, array in block.items():
                    is_ragged = isinstance(array, RaggedArray)
                    if name not in files:
                        files[name] = open(tmp / f"{name}.bin", "wb")
                        columns[name] = (array.dtype.str, 0 if is_ragged else array.shape[1])
                        if is_ragged:
                            ragged.append(name)
                            files[name + ".lengths"] = open(tmp / f"{name}.lengths.bin", "wb")
                    if is_ragged:  # values row after row, plus the lengths
                        np.ascontiguousarray(array.values).tofile(files[name])
                        array.lengths.astype(np.int64).tofile(files[name + ".lengths"])
                    else:
                        np.ascontiguousarray(array).tofile(files[name])
                rows += len(next(iter(block.values())))
                yield block
            for f in files.values():
                f.close()
            (tmp / "meta.json").write_text(json.dumps({"source": os.path.abspath(path), "rows": rows,
                                                       "columns": columns, "ragged": ragged}))
            try:
                os.replace(tmp, folder)
                logger.info("cached %s (%d rows) in %s", path, rows, folder)
            except OSError:  # another process cached it first
                pass
        finally:
            for f in files.values():
                f.close()
            shutil.rmtree(tmp, ignore_errors=True)


class RowSegments:
    """Rows that each own a run of consecutive ``values``: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    The row machinery shared by :class:`RaggedArray` and :class:`GroupedRows`: ``len`` in rows, slicing
    and integer-array (or boolean) indexing of rows, :meth:`concatenate`, each returning the same class.

    Args:
        values: ``(total, ...)`` array of all rows' values, row 0's first (1-D for :class:`RaggedArray`).
        offsets: int64 ``(n + 1,)`` from 0 to ``len(values)``.
    """

    __slots__ = ("values", "offsets")
    #: the dimensions ``values`` must have (``None``: any, at least 1)
    values_ndim: int | None = None

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values = np.asarray(values)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        ndim_ok = self.values.ndim == self.values_ndim if self.values_ndim else self.values.ndim >= 1
        if not ndim_ok or self.offsets.ndim != 1 or not len(self.offsets) or self.offsets[0] != 0 \
                or self.offsets[-1] != len(self.values):
            shape = f"{self.values_ndim}-D" if self.values_ndim else ">= 1-D"
            raise ValueError(f"{type(self).__name__}: expected {shape} values and offsets from 0 to len(values)")

    @classmethod
    def from_lengths(cls, values: np.ndarray, lengths: np.ndarray):
        """Rows of ``lengths[i]`` consecutive ``values`` each."""
        return cls(values, np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]))

    @property
    def lengths(self) -> np.ndarray:
        """Each row's number of values, int64 ``(n,)``."""
        return np.diff(self.offsets)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: slice | np.ndarray):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                stop = max(start, stop)
                lo, hi = self.offsets[start], self.offsets[stop]
                return type(self)(self.values[lo:hi], self.offsets[start:stop + 1] - lo)
            index = np.arange(start, stop, step)
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        starts = self.offsets[:-1][index]
        lengths = self.offsets[1:][index] - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return type(self)(self.values[positions], offsets)

    @classmethod
    def concatenate(cls, parts: Sequence[RowSegments]):
        """The rows of ``parts``, in order."""
        return cls.from_lengths(np.concatenate([p.values for p in parts]), np.concatenate([p.lengths for p in parts]))


class RaggedArray(RowSegments):
    """A column of variable-length rows (DIN's behaviour histories): all values, one row after another,
    and the row boundaries.

    A block may hold one in place of a 2-D array. It supports what the loader does to
    columns (``len``, slicing and integer-array indexing of rows, :meth:`concatenate`);
    the loader turns each batch's into a 0-padded ``(B, longest row of the batch)``
    array (:meth:`to_padded`), so rows are never padded to a global maximum, and the
    binary cache stores its values and lengths.

    Args:
        values: 1-D array of all values (row 0's, then row 1's, ...).
        offsets: int64 ``(n + 1,)``; row ``i`` is ``values[offsets[i]:offsets[i + 1]]``; starts at 0.
    """

    __slots__ = ()
    values_ndim = 1

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence], dtype: np.dtype | type = np.int64) -> RaggedArray:
        """From a list of rows (slow; for tests and per-line parsers)."""
        values = np.fromiter((v for row in rows for v in row), dtype=dtype)
        return cls.from_lengths(values, [len(row) for row in rows])

    def to_padded(self, width: int | None = None, fill: int = 0) -> np.ndarray:
        """``(n, width)`` array, row ``i``'s values first, then ``fill``; ``width`` defaults to the longest row."""
        lengths = self.lengths
        longest = int(lengths.max()) if len(lengths) else 0
        width = longest if width is None else width
        if width < longest:
            raise ValueError(f"RaggedArray.to_padded: width {width} is shorter than the longest row ({longest})")
        out = np.full((len(lengths), width), fill, dtype=self.values.dtype)
        out[np.arange(width) < lengths[:, None]] = self.values
        return out

    def __repr__(self) -> str:
        return f"RaggedArray({len(self)} rows, {len(self.values)} values, dtype={self.dtype})"


def _memmap_1d(path: Path, dtype: str, count: int) -> np.ndarray:
    """A read-only 1-D memory map of ``count`` values (an empty array for 0: mmap refuses empty files)."""
    if count == 0:
        return np.zeros(0, dtype=np.dtype(dtype))
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=(count,))


class BatchColumn:
    """A per-row column whose batch tensor is not the rows stacked (see :class:`GroupedRows`, :class:`GroupIndex`).

    Like :class:`RaggedArray` it supports what the loader does to a block's columns
    (``len`` in rows, slicing and integer-array indexing of rows, :meth:`concatenate`);
    :meth:`to_batch` gives the array the batch holds.
    """

    __slots__ = ()

    def to_batch(self) -> np.ndarray:
        raise NotImplementedError


class GroupedRows(RowSegments, BatchColumn):
    """Per-sample values of grouped rows: row ``i`` (a group) owns samples ``offsets[i]:offsets[i + 1]``.

    In a batch of groups the samples are concatenated (``(N, ...)``, N = the sum of the
    batch's group sizes), in group order, never padded.

    Args:
        values: ``(N, ...)`` array, the samples of group 0, then group 1, ...
        offsets: int64 ``(n + 1,)`` from 0 to ``N``.
    """

    __slots__ = ()

    def to_batch(self) -> np.ndarray:
        """``(N, ...)``: the samples of all rows, in order."""
        return self.values

    def __repr__(self) -> str:
        return f"GroupedRows({len(self)} groups, {len(self.values)} samples, dtype={self.dtype})"


class GroupIndex(BatchColumn):
    """Each sample's group within its batch: ``repeat(arange(n), group_sizes)``, int64 ``(N,)`` in a batch.

    Args:
        lengths: the group sizes, ``(n,)``.
    """

    __slots__ = ("lengths",)

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: slice | np.ndarray) -> GroupIndex:
        return GroupIndex(self.lengths[index])

    @staticmethod
    def concatenate(parts: Sequence[GroupIndex]) -> GroupIndex:
        return GroupIndex(np.concatenate([p.lengths for p in parts]))

    def to_batch(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.lengths), dtype=np.int64), self.lengths)

    def __repr__(self) -> str:
        return f"GroupIndex({len(self)} groups, {int(self.lengths.sum())} samples)"

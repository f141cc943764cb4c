"""PaddleRec's AITM CSV (Ali-CCP, ``models/multitask/aitm``): a header line, then one exposure per line.

::

    click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,216,508,509,702,853,301
    0,0,85077,60,5,2,5,0,1,2,1,303983,3751,249750,4124,5565,0,0,6260,2

The header names the label columns (``hyper_parameters.task_names``, default ``[click, purchase]``: the steps
of the conversion funnel in order) and then the feature columns, exactly as ``hyper_parameters.feature_vocabulary``
lists them (PaddleRec's key: ``[[name, vocabulary size], ...]``). Each feature column holds one integer id per
exposure, in ``[0, vocabulary size)``; PaddleRec's preprocessing (``datasets/ali-cpp_aitm``) numbers each field's
frequent values from 1 and writes 0 for a rare or absent value, so 0 is an ordinary id with its own embedding.
PaddleRec's reader drops each file's first line as the header and takes the columns by position. Here a first
line of names must match the config, so a file whose columns are in another order, or a config listing other
fields, stops with both lists instead of feeding each id to the wrong table; a first line of integers is a sample
(PaddleRec's own ``sample_data/test/test.csv`` has no header: its reader loses that file's first sample, this one
reads all 50).

Checks: every line has ``len(task_names) + len(feature_vocabulary)`` integers; labels are 0 or 1; ids lie in
their field's vocabulary. The first bad line stops the run with its file, line and what was expected. A later step
without the earlier one (``0,1,...``: a purchase without a click) is read as it is: PaddleRec's preprocessing of
the full data drops such lines, but its bundled sample files hold some (5 of 99), and they must load unchanged.

Blocks: one float32 ``(n, 1)`` column per task (``click``, ``purchase``) and ``features`` int64 ``(n, F)`` in
the ``feature_vocabulary`` order.

Fast path: pyarrow's CSV parser (int64 columns); a chunk it refuses, or one holding spaces, tabs or an ``x``
(a hexadecimal id pyarrow would take, :func:`recstack.data.base.may_hold_hex`), is parsed line by line with
the readers' grammar (:func:`recstack.data.base.parse_int`), which names the first bad line.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recstack.config import Config, ConfigError, task_names
from recstack.data.base import (
    Block,
    BlockReader,
    DataFormatError,
    FeatureUnit,
    Malformed,
    NumberRangeError,
    bad_line,
    may_hold_hex,
    numbered_lines,
    parse_int,
    row_error,
)
from recstack.registry import READERS

#: PaddleRec's AITM tasks: the steps of the funnel, in order.
AITM_TASKS = ("click", "purchase")
#: PaddleRec's ``feature_vocabulary`` (models/multitask/aitm/config.yaml): the 18 Ali-CCP fields and the number
#: of ids of each after its preprocessing (ids seen more than 10 times in the training split, numbered from 1;
#: 0 for the others).
ALICCP_AITM_VOCABULARY: tuple[tuple[str, int], ...] = (
    ("101", 238635), ("121", 98), ("122", 14), ("124", 3), ("125", 8), ("126", 4), ("127", 4), ("128", 3),
    ("129", 5), ("205", 467298), ("206", 6929), ("207", 263942), ("216", 106399), ("508", 5888), ("509", 104830),
    ("702", 51878), ("853", 37148), ("301", 4))


def feature_vocabulary(config: Config) -> list[tuple[str, int]]:
    """``hyper_parameters.feature_vocabulary``: ``[[name, size], ...]`` → ``[(name, size), ...]``.

    Names may be written as strings (``'101'``) or ints (``101``); they are compared with the header as text.

    Raises:
        ConfigError: not a non-empty list of ``[name, positive int]`` pairs with distinct names.
    """
    key = "hyper_parameters.feature_vocabulary"
    value = config.get(key, type=list)
    pairs = []
    for item in value:
        ok = (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (str, int))
              and not isinstance(item[0], bool) and isinstance(item[1], int) and not isinstance(item[1], bool)
              and item[1] > 0 and str(item[0]).strip() == str(item[0]) and str(item[0]) != "")
        if not ok:
            raise ConfigError(f"{config.source(key)}: expected a list of [feature name, vocabulary size] pairs "
                              f"(a positive int size), e.g. [['101', 238635], ['121', 98]]; got the item {item!r}")
        pairs.append((str(item[0]), int(item[1])))
    names = [n for n, _ in pairs]
    if not pairs or len(set(names)) != len(names):
        raise ConfigError(f"{config.source(key)}: expected a non-empty list of distinct feature names, got {names}")
    return pairs



@READERS.register("aitm")
class AITMReader(BlockReader):
    """Reader of PaddleRec's AITM CSV (see the module docstring).

    Config keys (``hyper_parameters``): ``feature_vocabulary`` (required), ``task_names`` (default
    ``[click, purchase]``).

    Args:
        file_list: data files, each starting with its header line (or, without one, with a sample).
        config: the run's config.
    """


    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        self.tasks = task_names(config, AITM_TASKS)
        vocabulary = feature_vocabulary(config)
        self.feature_names = [n for n, _ in vocabulary]
        clash = set(self.tasks) & set(self.feature_names)
        if clash or "features" in self.tasks:
            raise ConfigError(f"{config.source('hyper_parameters.task_names')}: task names must differ from the "
                              f"feature names and from 'features', got {sorted(clash or {'features'})}")
        self.sizes = np.array([s for _, s in vocabulary], dtype=np.int64)
        self._header_names = [*self.tasks, *self.feature_names]
        self.header = ",".join(self._header_names)
        self.width = len(self.tasks) + len(self.feature_names)
        self.columns = {**{t: (np.dtype(np.float32), 1) for t in self.tasks},
                        "features": (np.dtype(np.int64), len(self.feature_names))}
        names = [f"c{i}" for i in range(self.width)]
        self._read_options = dict(column_names=names, use_threads=False)
        self._parse_options = pacsv.ParseOptions(delimiter=",", ignore_empty_lines=True)
        self._convert_options = pacsv.ConvertOptions(column_types={c: pa.int64() for c in names}, null_values=[],
                                                     strings_can_be_null=False)

    def signature(self) -> str:
        return f"{super().signature()}|{self.header}|{self.sizes.tolist()}"

    def feature_units(self) -> list[FeatureUnit]:
        """The labels, then each feature by its header name (one column of ``features``)."""
        return ([FeatureUnit(t, t, ((t, None),)) for t in self.tasks]
                + [FeatureUnit(n, n, (("features", j),)) for j, n in enumerate(self.feature_names)])

    # ------------------------------------------------------------------ parsing
    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        if first_line == 1:
            stripped = self._strip_header(chunk, path)
            if stripped is not chunk:
                chunk, first_line = stripped, 2
        matrix = None
        if b" " not in chunk and b"\t" not in chunk and not may_hold_hex(chunk):
            try:
                matrix = self._fast(chunk)
            except (Malformed, pa.ArrowInvalid, pa.ArrowTypeError):
                matrix = None
        if matrix is None:
            lines, numbers = numbered_lines(chunk, first_line)
            matrix = self._slow(lines, numbers, path)
            locate: Callable[[int, str], DataFormatError] = \
                lambda row, problem: bad_line(path, numbers[row], lines[row], problem)  # noqa: E731
        else:
            locate = lambda row, problem: row_error(chunk, path, first_line, row, problem)  # noqa: E731
        self._check_values(matrix, locate)
        tasks = len(self.tasks)
        block: Block = {t: matrix[:, i:i + 1].astype(np.float32) for i, t in enumerate(self.tasks)}
        block["features"] = np.ascontiguousarray(matrix[:, tasks:])
        return block

    def _strip_header(self, chunk: bytes, path: str) -> bytes:
        """The chunk without its header line ``click,purchase,<feature names>``; a first line of integers only is a
        sample, kept (a file without a header)."""
        cut = chunk.find(b"\n")
        line, rest = (chunk, b"") if cut < 0 else (chunk[:cut], chunk[cut + 1:])
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            raise bad_line(path, 1, line, "the header is not valid UTF-8 text") from None
        if text.startswith("\ufeff"):  # a byte-order mark, as spreadsheet programs write it
            text = text[1:]
        if not text.strip() or not self.is_header(text):
            return chunk  # a blank line or a sample
        found = [t.strip() for t in text.split(",")]
        if found != self._header_names:
            hint = ""
            if sorted(found) == sorted(self._header_names):
                hint = " (the same names in another order: list feature_vocabulary in the file's column order)"
            raise bad_line(path, 1, line, f"expected the header '{self.header}' (task_names, then the names of "
                           f"hyper_parameters.feature_vocabulary in order){hint}; got")
        return rest

    @staticmethod
    def is_header(line: bytes | str) -> bool:
        """Whether a file's first line is a header: a value that is not an integer (a sample holds only integers)."""
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        text = text.rstrip("\r\n").lstrip("\ufeff")
        return not all(_is_integer(t) for t in text.split(","))

    def _fast(self, chunk: bytes) -> np.ndarray:
        table = pacsv.read_csv(io.BytesIO(chunk),
                               read_options=pacsv.ReadOptions(block_size=len(chunk) + 1, **self._read_options),
                               parse_options=self._parse_options, convert_options=self._convert_options)
        if table.num_columns != self.width:
            raise Malformed
        if not table.num_rows:
            return np.zeros((0, self.width), np.int64)
        return np.column_stack([c.to_numpy() for c in table.columns]).astype(np.int64, copy=False)

    def _slow(self, lines: list[bytes], numbers: list[int], path: str) -> np.ndarray:
        """Per-line parse with the readers' grammar; raises naming the first malformed line."""
        matrix = np.zeros((len(lines), self.width), np.int64)
        for row, (line, line_no) in enumerate(zip(lines, numbers)):
            tokens = line.split(b",")
            if len(tokens) != self.width:
                raise bad_line(path, line_no, line, f"expected {self.width} comma-separated integers "
                               f"({len(self.tasks)} labels, then {len(self.feature_names)} feature ids, as the "
                               f"header '{self.header}'), got {len(tokens)} values")
            for column, token in enumerate(tokens):
                name = self._header_names[column]
                try:
                    matrix[row, column] = parse_int(token)
                except NumberRangeError as err:
                    raise bad_line(path, line_no, line, f"column {column + 1} ({name}): {err}") from None
                except ValueError:
                    raise bad_line(path, line_no, line, f"column {column + 1} ({name}) is not an integer: "
                                   f"{token.decode('utf-8', 'replace')!r}") from None
        return matrix

    def _check_values(self, matrix: np.ndarray, locate: Callable[[int, str], DataFormatError]) -> None:
        """Labels 0/1, ids in their vocabularies; raises naming the first bad row."""
        tasks = len(self.tasks)
        labels, ids = matrix[:, :tasks], matrix[:, tasks:]
        found: list[tuple[int, str]] = []
        bad = ~np.isin(labels, (0, 1))
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            col = int(np.argmax(bad[row]))
            found.append((row, f"label '{self.tasks[col]}' (column {col + 1}) must be 0 or 1"))
        outside = (ids < 0) | (ids >= self.sizes)
        if outside.any():
            row = int(np.argmax(outside.any(axis=1)))
            col = int(np.argmax(outside[row]))
            found.append((row, f"id {int(ids[row, col])} of feature '{self.feature_names[col]}' (column "
                          f"{tasks + col + 1}) is outside [0, {int(self.sizes[col])}) (its feature_vocabulary "
                          "size)"))
        if found:
            row, problem = min(found, key=lambda item: item[0])
            raise locate(row, problem)


def _is_integer(text: str) -> bool:
    """Whether ``text`` is an integer of the readers' grammar."""
    try:
        parse_int(text)
    except ValueError:
        return False
    return True


__all__ = ["AITMReader", "AITM_TASKS", "ALICCP_AITM_VOCABULARY", "DataFormatError", "feature_vocabulary"]

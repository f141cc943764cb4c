"""Numeric CSV readers: a generic one, and PaddleRec's census format for multi-task models.

Census (MMoE / PLE / Share-Bottom): 501 comma-separated numbers per line,
``marital`` label, ``income`` label, then ``feature_size`` (499) features.

Numbers follow the readers' grammar (:data:`recstack.data.base.DECIMAL`,
doc/custom_reader.md#numbers): ``1_0``, ``0x1p-1``, ``1 0`` or an empty field are
errors naming the line and column; lines of only whitespace are blank.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recstack.config import Config, ConfigError, task_names
from recstack.data.base import (
    Block,
    BlockReader,
    DataFormatError,
    bad_line,
    blank_whitespace_lines,
    parse_float,
    row_error,
)
from recstack.registry import READERS


class NumericCSVReader(BlockReader):
    """Lines of ``width`` numbers split into named column groups.

    Args:
        file_list: data files.
        config: the run's config.
        groups: ``(name, first_column, width, is_label)`` for each output array;
            label arrays must hold 0/1.
        delimiter: field separator.
    """

    def __init__(self, file_list: Sequence[str], config: Config,
                 groups: Sequence[tuple[str, int, int, bool]], delimiter: str = ",") -> None:
        super().__init__(file_list, config)
        self.groups = list(groups)
        self.width = max(first + width for _, first, width, _ in self.groups)
        self.delimiter = delimiter
        self.columns = {name: (np.dtype(np.float32), width) for name, _, width, _ in self.groups}
        names = [f"c{i}" for i in range(self.width)]
        self._read_options = dict(column_names=names, use_threads=False)
        self._parse_options = pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=True)
        # no null values: an empty field (or 'NA') is an error naming its column, not a NaN
        self._convert_options = pacsv.ConvertOptions(column_types={c: pa.float32() for c in names}, null_values=[],
                                                     strings_can_be_null=False)

    def signature(self) -> str:
        return f"{super().signature()}|{self.groups}|{self.delimiter!r}"

    def _read(self, chunk: bytes) -> np.ndarray:
        table = pacsv.read_csv(io.BytesIO(chunk),
                               read_options=pacsv.ReadOptions(block_size=len(chunk) + 1, **self._read_options),
                               parse_options=self._parse_options, convert_options=self._convert_options)
        return np.column_stack([c.to_numpy() for c in table.columns]) if table.num_rows else \
            np.zeros((0, self.width), np.float32)

    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        try:
            matrix = self._read(chunk)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            self._raise_first_bad_line(chunk, path, first_line)
            try:  # no bad line: lines of only whitespace, which pyarrow does not skip (same line numbers)
                matrix = self._read(blank_whitespace_lines(chunk))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise DataFormatError(f"{path}:{first_line}: cannot parse the block starting here: {err}") from None
        bad = ~np.isfinite(matrix).all(axis=1)
        if bad.any():
            raise row_error(chunk, path, first_line, int(np.argmax(bad)), "value is not finite")
        block = {}
        for name, first, width, is_label in self.groups:
            part = np.ascontiguousarray(matrix[:, first:first + width])
            if is_label:
                bad = ~np.isin(part, (0.0, 1.0)).all(axis=1)
                if bad.any():
                    raise row_error(chunk, path, first_line, int(np.argmax(bad)),
                                    f"label '{name}' (column {first + 1}) must be 0 or 1")
            block[name] = part
        return block

    def _raise_first_bad_line(self, chunk: bytes, path: str, first_line: int) -> None:
        sep = self.delimiter.encode()
        for offset, line in enumerate(chunk.split(b"\n")):
            if not line.strip():
                continue
            fields = line.rstrip(b"\r").split(sep)
            if len(fields) != self.width:
                raise bad_line(path, first_line + offset, line,
                               f"expected {self.width} {self.delimiter!r}-separated values, got {len(fields)}")
            for i, field in enumerate(fields):
                try:
                    parse_float(field)
                except ValueError:
                    raise bad_line(path, first_line + offset, line,
                                   f"column {i + 1} is not a number: {field.decode('utf-8', 'replace')!r} "
                                   "(doc/custom_reader.md#numbers)") from None


#: Task names of the census data in the models' output order (PaddleRec's): income, then marital.
CENSUS_TASKS = ("income", "marital")


@READERS.register("census")
class CensusReader(NumericCSVReader):
    """PaddleRec's census format: ``marital, income, features...``.

    Config keys: ``hyper_parameters.feature_size`` (PaddleRec: 499) and
    ``hyper_parameters.task_names`` (default ``[income, marital]``, see
    :func:`recstack.config.task_names`): the two tasks in the models' output order,
    whose labels the file holds in the **reverse** order, as PaddleRec's census
    (``marital,income,...``, tasks income, marital) and short-video
    (``completion,like,...``, tasks like, completion) files do.

    Blocks: ``features`` float32 ``(n, feature_size)``, one float32 ``(n, 1)`` per task
    (``income`` = column 2, ``marital`` = column 1 by default).
    """

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        feature_size = config.get("hyper_parameters.feature_size", type=int)
        first, second = task_names(config, CENSUS_TASKS, count=2)
        if "features" in (first, second):
            raise ConfigError(f"{config.source('hyper_parameters.task_names')}: 'features' names the feature "
                              "columns; choose another task name")
        super().__init__(file_list, config, [(second, 0, 1, True), (first, 1, 1, True),
                                             ("features", 2, feature_size, False)])

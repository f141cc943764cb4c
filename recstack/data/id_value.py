"""The base of the readers whose lines hold one (feature id, value) pair per field and a label.

Three text layouts give the same blocks: PaddleRec's logistic-regression ``feat_idx:`` / ``feat_value:`` tokens
(reader ``lr``), PaddleRec's AutoInt ``<label> <ids> <values>`` (``index_value``) and libSVM / libFM
``<label> <id>:<value> ...`` (``libsvm``). Each layout supplies its vectorised parse (:meth:`IdValueReader._fast`,
pyarrow's CSV parser over the whole chunk) and its per-line parse (:meth:`IdValueReader._slow`, which names the
first bad line); the base holds what they share: the block columns, the fast -> blank-lines -> per-line order,
and the checks of labels, ids and values.

Config keys (``hyper_parameters``): ``num_field`` (``F``) and the layout's id bound (:attr:`IdValueReader.ID_KEY`:
``feature_number``, or ``sparse_feature_number`` for ``lr``). Blocks: ``feat_idx`` int64 ``(n, F)``,
``feat_value`` float32 ``(n, F)``, ``label`` float32 ``(n, 1)``.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recstack.config import Config
from recstack.data.base import Block, BlockReader, DataFormatError, FeatureUnit, blank_whitespace_lines, row_error

#: ``id:value`` tokens read as two space-separated columns
COLON_TO_SPACE = bytes.maketrans(b":", b" ")


class IdValueReader(BlockReader):
    """Blocks of ``feat_idx`` / ``feat_value`` / ``label`` (see the module docstring).

    Subclasses set the class attributes below and implement :meth:`_fast` and :meth:`_slow`.

    Args:
        file_list: data files.
        config: the run's config.
        column_types: the pyarrow type of each column of the fast parse, in the order of a line's columns.
        split_colons: whether the fast parse reads ``a:b`` as two columns.
    """

    #: the ``hyper_parameters`` key that bounds the feature ids
    ID_KEY = "feature_number"
    #: the label values a line may hold (a negative one is read as 0: libSVM's ``-1``)
    LABELS: tuple[float, ...] = (0.0, 1.0)
    #: the error of a label outside :attr:`LABELS`
    LABEL_PROBLEM = "label must be 0 or 1"
    #: what the errors call a feature id
    ID_NAME = "feature id"
    #: the error of a value that is not finite
    VALUE_PROBLEM = "value is not finite (nan, inf, or beyond float32)"

    def __init__(self, file_list, config: Config, column_types: dict[str, pa.DataType],
                 split_colons: bool = False) -> None:
        super().__init__(file_list, config)
        self.num_field = config.get("hyper_parameters.num_field", type=int)
        self.id_bound = config.get(f"hyper_parameters.{self.ID_KEY}", None, type=int)
        if self.num_field < 1:
            raise DataFormatError(f"{config.source('hyper_parameters.num_field')}: expected at least one field, "
                                  f"got {self.num_field}")
        f = self.num_field
        self.columns = {"feat_idx": (np.dtype(np.int64), f), "feat_value": (np.dtype(np.float32), f),
                        "label": (np.dtype(np.float32), 1)}
        self._names = list(column_types)
        self._split_colons = split_colons
        self._read_options = dict(column_names=self._names, use_threads=False)
        self._parse_options = pacsv.ParseOptions(delimiter=" ", ignore_empty_lines=True)
        self._convert_options = pacsv.ConvertOptions(column_types=column_types, null_values=[],
                                                     strings_can_be_null=False)

    def feature_units(self) -> list[FeatureUnit]:
        """Field ``j``'s id and value together, as ``field[j]`` (0-based, the line's order)."""
        return [FeatureUnit(f"field[{j}]", f"field[{j}]", (("feat_idx", j), ("feat_value", j)))
                for j in range(self.num_field)]

    # ------------------------------------------------------------------ layout API
    def _fast(self, chunk: bytes) -> Block | None:
        """Vectorised parse of the chunk; ``None`` when it is not in the layout's canonical form."""
        raise NotImplementedError

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        """Per-line parse; names the first bad line."""
        raise NotImplementedError

    def _fast_allowed(self) -> bool:
        """Whether :meth:`_fast` can read this reader's lines at all (libSVM with a field map cannot)."""
        return True

    # ------------------------------------------------------------------ shared parts
    def _table(self, chunk: bytes) -> pa.Table | None:
        """The chunk through pyarrow's CSV parser with the layout's columns; ``None`` when it does not parse."""
        data = chunk.translate(COLON_TO_SPACE) if self._split_colons else chunk
        try:
            return pacsv.read_csv(io.BytesIO(data),
                                  read_options=pacsv.ReadOptions(block_size=len(chunk) + 1, **self._read_options),
                                  parse_options=self._parse_options, convert_options=self._convert_options)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None

    def _block(self, table: pa.Table, ids: list[str], values: list[str], label: str) -> Block:
        """The block of a parsed table from the names of its id, value and label columns."""
        if not table.num_rows:
            return {k: np.zeros((0, w), d) for k, (d, w) in self.columns.items()}
        return {"feat_idx": np.column_stack([table.column(c).to_numpy() for c in ids]).astype(np.int64),
                "feat_value": np.column_stack([table.column(c).to_numpy() for c in values]).astype(np.float32),
                "label": table.column(label).to_numpy().astype(np.float32).reshape(-1, 1)}

    def _rows(self, ids: list, values: list, labels: list) -> Block:
        """The block of per-line lists (the per-line parses)."""
        f = self.num_field
        return {"feat_idx": np.asarray(ids, np.int64).reshape(-1, f),
                "feat_value": np.asarray(values, np.float32).reshape(-1, f),
                "label": np.asarray(labels, np.float32).reshape(-1, 1)}

    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        fast = self._fast_allowed()
        block = self._fast(chunk) if fast else None
        if block is None:
            blanked = blank_whitespace_lines(chunk)  # lines of spaces are blank lines (same line numbers)
            block = self._fast(blanked) if fast and blanked != chunk else None
            if block is None:
                block = self._slow(chunk, path, first_line)
        ids = block["feat_idx"]
        outside = (ids < 0) | (ids >= self.id_bound) if self.id_bound else ids < 0
        bound = f"={self.id_bound})" if self.id_bound else ")"
        checks = [(~np.isin(block["label"][:, 0], self.LABELS), self.LABEL_PROBLEM),
                  (outside.any(axis=1), f"{self.ID_NAME} outside [0, {self.ID_KEY}{bound}"),
                  (~np.isfinite(block["feat_value"]).all(axis=1), self.VALUE_PROBLEM)]
        for bad, problem in checks:
            if bad.any():
                raise row_error(chunk, path, first_line, int(np.argmax(bad)), problem)
        if min(self.LABELS) < 0:
            block["label"] = np.maximum(block["label"], 0.0).astype(np.float32)
        return block

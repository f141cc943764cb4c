"""PaddleRec's slot format (Criteo): ``click:0 dense_feature:0.05 ... 1:737395 ... 26:306163``.

One sample per line, space-separated ``slot:value`` tokens: the label slot
(``click``), ``dense_input_dim`` dense values (``dense_feature``) and
``sparse_inputs_slots - 1`` sparse slots named ``1`` .. ``N`` with one id each
(PaddleRec counts the label among ``sparse_inputs_slots``).

Fast path: lines in this canonical order are parsed by pyarrow's CSV parser
(``:`` turned into a column break), about 170-200 MB/s on one core. Lines with
the slots in another order (which PaddleRec's reader accepts) fall back to a
per-line parse of that block, with identical results; a malformed line is an
error naming file, line and problem. Numbers follow the readers' grammar
(:func:`recstack.data.base.parse_int`, doc/custom_reader.md#numbers): ``26:1_2``,
``26:0x1f`` or an id beyond int64 are errors on both paths, and lines of only
whitespace are blank.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recstack.config import Config
from recstack.data.base import (
    Block,
    BlockReader,
    DataFormatError,
    FeatureUnit,
    NumberRangeError,
    bad_line,
    blank_whitespace_lines,
    may_hold_hex,
    parse_float,
    parse_int,
    row_error,
)
from recstack.data.id_value import COLON_TO_SPACE, IdValueReader
from recstack.registry import READERS


@READERS.register("slot")
class SlotReader(BlockReader):
    """Reader of PaddleRec's Criteo slot format.

    Config keys (``hyper_parameters``): ``sparse_inputs_slots`` (label + sparse
    slots, PaddleRec: 27), ``dense_input_dim`` (13), ``sparse_feature_number``
    (ids must be below it).

    Blocks: ``label`` float32 ``(n, 1)``, ``sparse`` int64 ``(n, S)``, ``dense``
    float32 ``(n, Dn)``.

    Args:
        file_list: data files.
        config: the run's config.
        label_slot: name of the label slot.
        dense_slot: name of the dense slot.
    """

    def __init__(self, file_list, config: Config, label_slot: str = "click",
                 dense_slot: str = "dense_feature") -> None:
        super().__init__(file_list, config)
        self.num_sparse = config.get("hyper_parameters.sparse_inputs_slots", type=int) - 1
        self.dense_dim = config.get("hyper_parameters.dense_input_dim", type=int)
        self.id_bound = config.get("hyper_parameters.sparse_feature_number", None, type=int)
        if self.num_sparse < 1 or self.dense_dim < 0:
            raise DataFormatError(f"{config.source('hyper_parameters.sparse_inputs_slots')}: need at least one "
                                  "sparse slot besides the label")
        self.label_slot, self.dense_slot = label_slot, dense_slot
        self.sparse_slots = [str(i) for i in range(1, self.num_sparse + 1)]
        self.columns = {"label": (np.dtype(np.float32), 1), "sparse": (np.dtype(np.int64), self.num_sparse),
                        "dense": (np.dtype(np.float32), self.dense_dim)}
        tokens = 1 + self.dense_dim + self.num_sparse
        names = [f"c{i}" for i in range(2 * tokens)]
        dense_values = names[3:2 + 2 * self.dense_dim:2]
        first_sparse = 2 + 2 * self.dense_dim
        self._sparse_keys = names[first_sparse::2]
        self._sparse_values = names[first_sparse + 1::2]
        types = {names[1]: pa.int64(), **{c: pa.float32() for c in dense_values},
                 **{c: pa.int64() for c in self._sparse_keys + self._sparse_values}}
        self._label_col, self._dense_cols = names[1], dense_values
        self._read_options = dict(column_names=names, use_threads=False)
        self._parse_options = pacsv.ParseOptions(delimiter=" ", ignore_empty_lines=True)
        self._convert_options = pacsv.ConvertOptions(include_columns=list(types), column_types=types,
                                                     null_values=[], strings_can_be_null=False)
        self._expected_keys = np.arange(1, self.num_sparse + 1, dtype=np.int64)
        self._label_prefix = f"{label_slot}:".encode()
        self._dense_prefix = f"{dense_slot}:".encode()

    def signature(self) -> str:
        return f"{super().signature()}|{self.label_slot}|{self.dense_slot}"

    def feature_units(self) -> list[FeatureUnit]:
        """The sparse slots by their names (``1`` .. ``26``), each its own group, and each value of the dense slot,
        ``dense_feature[0]`` .. ``dense_feature[12]`` (Criteo's I1 .. I13), in group ``dense_feature``."""
        sparse = [FeatureUnit(slot, slot, (("sparse", j),)) for j, slot in enumerate(self.sparse_slots)]
        return sparse + [FeatureUnit(f"{self.dense_slot}[{j}]", self.dense_slot, (("dense", j),))
                         for j in range(self.dense_dim)]

    # ------------------------------------------------------------------ parsing
    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        block = self._fast(chunk)
        if block is None:
            blanked = blank_whitespace_lines(chunk)  # lines of spaces are blank lines (same line numbers)
            block = self._fast(blanked) if blanked != chunk else None
            if block is None:
                block = self._slow(chunk, path, first_line)
        self._check_values(block, chunk, path, first_line)
        return block

    def _fast(self, chunk: bytes) -> Block | None:
        """Vectorised parse of canonical lines; ``None`` when the chunk is not canonical (or may hold a
        hexadecimal number, which pyarrow accepts and the grammar does not: no slot name holds an ``x``)."""
        if may_hold_hex(chunk):
            return None
        try:
            table = pacsv.read_csv(io.BytesIO(chunk.translate(COLON_TO_SPACE)),
                                   read_options=pacsv.ReadOptions(block_size=len(chunk) + 1, **self._read_options),
                                   parse_options=self._parse_options, convert_options=self._convert_options)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        n = table.num_rows
        starts_with_label = chunk.count(b"\n" + self._label_prefix) + chunk.startswith(self._label_prefix)
        # every line starts with the label slot, and the 13 tokens after it are dense slots
        # (the sparse keys are checked below; a misplaced token fails the int64 parse)
        if starts_with_label != n or chunk.count(self._dense_prefix) != self.dense_dim * n:
            return None
        keys = np.column_stack([table.column(c).to_numpy() for c in self._sparse_keys])
        if n and not (keys == self._expected_keys).all():
            return None
        sparse = np.column_stack([table.column(c).to_numpy() for c in self._sparse_values]) if n else \
            np.zeros((0, self.num_sparse), np.int64)
        dense = np.column_stack([table.column(c).to_numpy() for c in self._dense_cols]) if n and self.dense_dim \
            else np.zeros((n, self.dense_dim), np.float32)
        label = table.column(self._label_col).to_numpy().astype(np.float32).reshape(-1, 1)
        return {"label": label, "sparse": np.ascontiguousarray(sparse, dtype=np.int64),
                "dense": np.ascontiguousarray(dense, dtype=np.float32)}

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        """Per-line parse (any slot order, PaddleRec semantics); names the first bad line."""
        slot_index = {s: i for i, s in enumerate(self.sparse_slots)}
        labels, sparse, dense = [], [], []
        for offset, line in enumerate(chunk.split(b"\n")):
            if not line.strip():
                continue
            line_no = first_line + offset
            label, ids, values = None, [None] * self.num_sparse, []
            for token in line.split():
                slot, sep, value = token.decode("utf-8", "replace").partition(":")
                if not sep:
                    raise bad_line(path, line_no, line, f"token '{slot}' is not slot:value")
                try:
                    if slot == self.label_slot:
                        if label is not None:
                            raise bad_line(path, line_no, line, f"slot '{slot}' appears twice")
                        label = parse_int(value)
                    elif slot == self.dense_slot:
                        values.append(parse_float(value))
                    elif slot in slot_index:
                        if ids[slot_index[slot]] is not None:
                            raise bad_line(path, line_no, line, f"sparse slot '{slot}' appears twice")
                        ids[slot_index[slot]] = parse_int(value)
                    else:
                        raise bad_line(path, line_no, line,
                                       f"unknown slot '{slot}' (expected {self.label_slot}, {self.dense_slot}, "
                                       f"1..{self.num_sparse})")
                except NumberRangeError as err:
                    raise bad_line(path, line_no, line, f"slot '{slot}': {err}") from None
                except ValueError as err:
                    if isinstance(err, DataFormatError):
                        raise
                    kind = "a number" if slot == self.dense_slot else "an integer"
                    raise bad_line(path, line_no, line, f"slot '{slot}' has non-numeric value '{value}' (expected "
                                   f"{kind}, doc/custom_reader.md#numbers)") from None
            if label is None:
                raise bad_line(path, line_no, line, f"missing label slot '{self.label_slot}'")
            if len(values) != self.dense_dim:
                raise bad_line(path, line_no, line,
                               f"expected {self.dense_dim} '{self.dense_slot}' values, got {len(values)}")
            missing = [self.sparse_slots[i] for i, v in enumerate(ids) if v is None]
            if missing:
                raise bad_line(path, line_no, line, f"missing sparse slot(s) {', '.join(missing[:5])}"
                               f" (expected {1 + self.dense_dim + self.num_sparse} tokens)")
            labels.append(label)
            sparse.append(ids)
            dense.append(values)
        return {"label": np.asarray(labels, np.float32).reshape(-1, 1),
                "sparse": np.asarray(sparse, np.int64).reshape(-1, self.num_sparse),
                "dense": np.asarray(dense, np.float32).reshape(-1, self.dense_dim)}

    def _check_values(self, block: Block, chunk: bytes, path: str, first_line: int) -> None:
        """Labels 0/1, ids in ``[0, sparse_feature_number)``, finite dense values."""
        checks = [
            (~np.isin(block["label"][:, 0], (0.0, 1.0)), f"label '{self.label_slot}' must be 0 or 1"),
            ((block["sparse"] < 0).any(axis=1) if self.id_bound is None else
             ((block["sparse"] < 0) | (block["sparse"] >= self.id_bound)).any(axis=1),
             "sparse id outside [0, sparse_feature_number" + (f"={self.id_bound})" if self.id_bound else ")")),
            (~np.isfinite(block["dense"]).all(axis=1),
             "dense value is not finite (nan, inf, or beyond float32's 3.4e38)"),
        ]
        for bad, problem in checks:
            if bad.any():
                row = int(np.argmax(bad))
                raise row_error(chunk, path, first_line, row, problem)



@READERS.register("lr")
class FeatIdxValueReader(IdValueReader):
    """PaddleRec's logistic-regression format: ``feat_idx:<id>`` x F, ``feat_value:<v>`` x F, ``label:<0/1>``.

    Config keys (``hyper_parameters``): ``num_field`` (PaddleRec: 39), ``sparse_feature_number``
    (ids must be below it).

    Blocks: ``feat_idx`` int64 ``(n, F)``, ``feat_value`` float32 ``(n, F)``, ``label`` float32 ``(n, 1)``
    (:class:`recstack.data.id_value.IdValueReader`). Lines in this canonical order are parsed by pyarrow; any
    other order falls back to a per-line parse (ids and values keep their order of appearance).
    """

    KEYS = ("feat_idx", "feat_value", "label")
    ID_KEY = "sparse_feature_number"
    ID_NAME = "feat_idx"
    VALUE_PROBLEM = "feat_value is not finite"

    def __init__(self, file_list, config: Config) -> None:
        f = config.get("hyper_parameters.num_field", type=int)
        names = [f"c{i}" for i in range(2 * (2 * f + 1))]
        key_type = pa.dictionary(pa.int32(), pa.string())
        values = names[1::2]
        types = {c: key_type if i % 2 == 0 else pa.int64() for i, c in enumerate(names)}
        types.update({c: pa.float32() for c in values[f:2 * f]})
        super().__init__(file_list, config, types, split_colons=True)
        self._keys, self._values = names[0::2], values
        self._expected = ["feat_idx"] * f + ["feat_value"] * f + ["label"]

    def _fast(self, chunk: bytes) -> Block | None:
        table = self._table(chunk)
        if table is None:
            return None
        for column, key in zip(self._keys, self._expected):
            if table.num_rows and table.column(column).unique().dictionary.to_pylist() != [key]:
                return None
        # a hexadecimal number (pyarrow takes 0x1f, the grammar does not): an x besides those of 'feat_idx'
        if b"X" in chunk or chunk.count(b"x") != self.num_field * table.num_rows:
            return None
        f = self.num_field
        return self._block(table, self._values[:f], self._values[f:2 * f], self._values[-1])

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        rows: dict[str, list] = {k: [] for k in self.KEYS}
        for offset, line in enumerate(chunk.split(b"\n")):
            if not line.strip():
                continue
            line_no = first_line + offset
            found: dict[str, list] = {k: [] for k in self.KEYS}
            for token in line.split():
                key, sep, value = token.decode("utf-8", "replace").partition(":")
                if not sep or key not in found:
                    raise bad_line(path, line_no, line, f"token '{token.decode('utf-8', 'replace')}' is not "
                                   "feat_idx:<id>, feat_value:<v> or label:<0/1>")
                try:
                    found[key].append(parse_float(value) if key == "feat_value" else parse_int(value))
                except NumberRangeError as err:
                    raise bad_line(path, line_no, line, f"{key}: {err}") from None
                except ValueError:
                    kind = "a number" if key == "feat_value" else "an integer"
                    raise bad_line(path, line_no, line, f"{key} has non-numeric value '{value}' (expected {kind}, "
                                   "doc/custom_reader.md#numbers)") from None
            for key, want in (("feat_idx", self.num_field), ("feat_value", self.num_field), ("label", 1)):
                if len(found[key]) != want:
                    raise bad_line(path, line_no, line, f"expected {want} '{key}' value(s), got {len(found[key])}")
                rows[key].append(found[key])
        return self._rows(rows["feat_idx"], rows["feat_value"], rows["label"])


@READERS.register("index_value")
class IndexValueReader(IdValueReader):
    """PaddleRec's AutoInt Criteo format: ``<label> <idx_1> .. <idx_F> <value_1> .. <value_F>``.

    One sample per line, ``1 + 2F`` space-separated numbers without keys (the layout of the AutoInt authors'
    preprocessed Criteo, which PaddleRec's AutoInt reads): the 0/1 label, then each field's global feature id
    (one id space over all fields), then each field's value (the dense value of a numeric field, 1 for a
    categorical one). The rank nets read it as fields ``x_f * e[idx_f]``
    (:class:`recstack.layers.field_inputs.IndexValueFields`).

    Config keys (``hyper_parameters``, PaddleRec's AutoInt names): ``num_field`` (``F``, PaddleRec: 39),
    ``feature_number`` (ids must be below it).

    Blocks: ``feat_idx`` int64 ``(n, F)``, ``feat_value`` float32 ``(n, F)``, ``label`` float32 ``(n, 1)``
    (:class:`recstack.data.id_value.IdValueReader`).
    """

    LABEL_PROBLEM = "label (first number) must be 0 or 1"

    def __init__(self, file_list, config: Config) -> None:
        f = config.get("hyper_parameters.num_field", type=int)
        names = [f"c{i}" for i in range(1 + 2 * f)]
        super().__init__(file_list, config, {c: pa.float32() if i > f else pa.int64() for i, c in enumerate(names)})

    def _fast(self, chunk: bytes) -> Block | None:
        """Vectorised parse; ``None`` when a line has another number of tokens, a token is not a number, or the
        chunk may hold a hexadecimal number (pyarrow accepts ``0x1f``, the readers' grammar does not)."""
        table = None if may_hold_hex(chunk) else self._table(chunk)
        if table is None:
            return None
        f = self.num_field
        return self._block(table, self._names[1:1 + f], self._names[1 + f:], self._names[0])

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        """Per-line parse naming the first bad line."""
        f = self.num_field
        labels, ids, values = [], [], []
        for offset, line in enumerate(chunk.split(b"\n")):
            if not line.strip():
                continue
            line_no = first_line + offset
            tokens = line.split()
            if len(tokens) != 1 + 2 * f:
                raise bad_line(path, line_no, line, f"expected {1 + 2 * f} numbers (label, {f} feature ids, {f} "
                               f"values; num_field={f}), got {len(tokens)}")
            for j, token in enumerate(tokens):
                text = token.decode("utf-8", "replace")
                what = ("label" if j == 0 else f"feature id of field {j - 1}" if j <= f
                        else f"value of field {j - 1 - f}")
                try:
                    number = parse_float(text) if j > f else parse_int(text)
                    (values if j > f else ids if j else labels).append(number)
                except NumberRangeError as err:
                    raise bad_line(path, line_no, line, f"{what}: {err}") from None
                except ValueError:
                    kind = "a number" if j > f else "an integer"
                    raise bad_line(path, line_no, line, f"{what} is '{text}' (expected {kind}, "
                                   "doc/custom_reader.md#numbers)") from None
        return self._rows(ids, values, labels)


@READERS.register("criteo")
class CriteoReader(BlockReader):
    """Either Criteo layout of the rank models, chosen by the config's keys: ``num_field`` (PaddleRec's AutoInt
    keys) reads the id/value layout (:class:`IndexValueReader`), otherwise the slot format (:class:`SlotReader`).

    A model folder whose ``criteo_reader`` re-exports this class reads both PaddleRec layouts with PaddleRec's
    reader name; constructing it returns the chosen reader itself.
    """

    def __new__(cls, file_list, config: Config) -> BlockReader:  # type: ignore[misc]
        if config.get("hyper_parameters.num_field", None) is not None:
            return IndexValueReader(file_list, config)
        return SlotReader(file_list, config)

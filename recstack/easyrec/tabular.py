"""Config-driven reader of delimited text with named columns (EasyRec's ``CSVInput``).

The columns, their types and defaults, the labels, the features built from the
columns and the feature groups come from the config (``hyper_parameters.data_config``,
``feature_config``, ``model_config.feature_groups``; see :mod:`recstack.easyrec.features`),
not from a fixed format. One line is one sample, fields separated by
``data_config.separator`` (no quoting, as EasyRec's ``CSVInput``), exactly
``len(input_fields)`` fields per line.

Per block (pyarrow's CSV parser over the whole chunk, then numpy):

* empty fields take the field's ``default_val`` (0, 0.0 or "" when not set);
* numbers follow the readers' grammar (:data:`recstack.data.base.INTEGER` for INT32 / INT64,
  :data:`recstack.data.base.DECIMAL` for FLOAT / DOUBLE; doc/custom_reader.md#numbers): ``1_0``,
  ``0x1f`` or ``1 0`` are errors; lines of only whitespace are blank;
* labels -> ``<label>`` float32 ``(n, 1)``, finite; 0 or 1 for a label that a ``CLASSIFICATION``
  task tower learns (``model_config.<model>.task_towers``, see :func:`classification_labels`);
* ``IdFeature`` with ``hash_bucket_size``: CRC-32 of the value's UTF-8 text (an
  integer field's canonical decimal text) modulo the bucket count
  (:func:`recstack.data.hashing.stable_hash`: the same id in every process and on
  every machine); each distinct value of a block is hashed once;
* ``IdFeature`` with ``num_buckets``: the integer itself, which must lie in ``[0, num_buckets)``;
  with ``vocab_list``: the value's index in the list, 0 for a value not in it (EasyRec's rule);
* ``TagFeature`` / ``SequenceFeature``: a STRING cell split at the feature's ``separator`` (empty values
  dropped; an empty cell holds none), each value an id as above (a raw sequence: a number as a
  ``RawFeature``), a tag value ``key<kv_separator>weight`` with a weight; a sequence keeps its first
  ``sequence_length`` values (the most recent). Vectorised over the block (pyarrow's split, one
  hash per distinct value); see :func:`ragged_feature_arrays`;
* ``RawFeature``: the number, normalised when ``max_val > min_val``, finite; with
  ``boundaries`` its bucket index ``i`` such that ``boundaries[i-1] <= x < boundaries[i]``;
* feature group ``g`` -> ``g.ids`` int64 ``(n, k)`` and ``g.values`` float32 ``(n, m)``, and per tag or
  sequence feature ``f`` of ``g`` its variable-length keys ``g.f.ids`` / ``g.f.values`` (``g.f.weights``) and
  ``g.f.lengths`` (:meth:`recstack.easyrec.features.TabularSpec.ragged_keys`).

Only the columns that labels and features use are converted; the others are
counted but not type-checked. A malformed line is an error naming the file,
the line and the field, e.g.
``/data/train/part-0.txt:7: field 'fans_num' (INT64) is not an integer: 'abc': '1,3.5,...'``.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recstack.config import Config, ConfigError
from recstack.data.base import (
    DECIMAL,
    INTEGER,
    Block,
    BlockReader,
    DataFormatError,
    FeatureUnit,
    RaggedArray,
    bad_line,
    blank_whitespace_lines,
    holds_hex,
    parse_int,
    row_error,
)
from recstack.easyrec.features import DATA_CONFIG, INT_RANGES, Feature, InputField, TabularSpec
from recstack.easyrec.schema import source
from recstack.registry import READERS

_ARROW_TYPES = {"INT32": pa.int32(), "INT64": pa.int64(), "FLOAT": pa.float32(), "DOUBLE": pa.float64(),
                "STRING": pa.string()}


def hash_ids(values: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Stable hashed ids of a string column: ``crc32(utf8(value)) % buckets``, one hash per distinct value.

    The same rule as :func:`recstack.data.hashing.stable_hash`.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    table = np.fromiter((zlib.crc32(v.encode("utf-8")) % buckets for v in encoded.dictionary.to_pylist()),
                        dtype=np.int64, count=len(encoded.dictionary))
    return table[encoded.indices.to_numpy(zero_copy_only=False)]


def feature_column(feature: Feature, field_type: str, column: np.ndarray, where: str,
                   fail: Callable[[int, str], Exception]) -> np.ndarray:
    """A feature's model input from its input column (the reader's and the Python API's one rule).

    ``IdFeature``: ids hashed into ``hash_bucket_size`` buckets, indices in ``vocab_list`` (0 for other
    values), or int64 ids checked against ``num_buckets``; ``RawFeature``: finite float64 values, min-max
    normalised and/or bucketised by ``boundaries`` (then int64 bucket ids). A bad row raises
    ``fail(row index, message)``; the message starts with ``where`` (the field or column it came from).
    """
    if feature.feature_type == "IdFeature":
        if feature.hash_bucket_size or feature.vocab:
            text = column if field_type == "STRING" else pa.array(column).cast(pa.string())
            if feature.vocab:
                return value_ids(feature, text if isinstance(text, pa.Array) else text.combine_chunks(), where, fail)
            return hash_ids(text, feature.hash_bucket_size)
        out = column.astype(np.int64)
        bad = (out < 0) | (out >= feature.num_buckets)
        if bad.any():
            row = int(np.argmax(bad))
            raise fail(row, f"{where}: id {int(out[row])} outside [0, num_buckets={feature.num_buckets})")
        return out
    values = column.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise fail(int(np.argmax(bad)), f"{where} is not a finite number")
    if feature.normalized:
        values = (values - feature.min_val) / (feature.max_val - feature.min_val)
    if feature.boundaries:
        return np.searchsorted(np.asarray(feature.boundaries), values, side="right").astype(np.int64)
    return values


# --------------------------------------------------------------------- tag and sequence features
_INTEGER_RE2 = f"^(?:{INTEGER.pattern})$"
_DECIMAL_RE2 = f"^(?:{DECIMAL.pattern})$"


def split_cells(column: pa.Array | pa.ChunkedArray, separator: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The values of each cell of a string column, split at ``separator``, empty values dropped (``a||b`` holds
    ``a`` and ``b``; an empty cell holds none).

    Returns:
        ``(values, rows, lengths)``: all values, row 0's first (a string array); each value's row, int64;
        each row's number of values, int64 ``(n,)``.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    lists = pc.split_pattern(column, pattern=separator)
    values = pc.list_flatten(lists)
    rows = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = pc.not_equal(values, "")
    values = values.filter(keep)
    rows = rows[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    return values, rows, np.bincount(rows, minlength=len(column)).astype(np.int64)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _numbers(values: pa.Array, integer: bool, what: str, fail: Callable[[int, str], Exception]) -> np.ndarray:
    """int64 or float64 numbers of a string array, in the readers' grammar; ``fail(index of the value, message)``
    for the first bad one (not a number, beyond int64, not finite)."""
    ok = pc.match_substring_regex(values, _INTEGER_RE2 if integer else _DECIMAL_RE2, ignore_case=not integer)
    bad = ~np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
    if bad.any():
        i = int(np.argmax(bad))
        kind = "an integer" if integer else "a number"
        raise fail(i, f"{what} {_shown(values[i].as_py())} is not {kind} (doc/custom_reader.md#numbers)")
    trimmed = pc.utf8_trim(values, " \t")
    if integer:
        try:
            return np.asarray(pc.cast(trimmed, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        except (pa.ArrowInvalid, OverflowError):  # the error path only: find the value beyond int64
            for i, text in enumerate(trimmed.to_pylist()):
                try:
                    parse_int(text)
                except ValueError:
                    raise fail(i, f"{what} {_shown(text)} is outside the int64 range") from None
            raise
    out = np.asarray(pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.argmax(bad))
        raise fail(i, f"{what} {_shown(values[i].as_py())} is not a finite number")
    return out


def value_ids(feature: Feature, values: pa.Array, where: str, fail: Callable[[int, str], Exception]) -> np.ndarray:
    """int64 ids of a string array of one feature's values (``fail(index of the value, message)``).

    ``hash_bucket_size``: CRC-32 of the text modulo the buckets (as :func:`hash_ids`); ``vocab_list``: the index in
    the list, 0 for a value not in it (EasyRec's ``default_value=0``); ``num_buckets``: the integer, in
    ``[0, num_buckets)``.
    """
    if feature.hash_bucket_size:
        return hash_ids(values, feature.hash_bucket_size)
    if feature.vocab:
        index = pc.index_in(values, value_set=pa.array(list(feature.vocab), pa.string()))
        return np.asarray(pc.fill_null(index, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    ids = _numbers(values, True, f"{where}: id", fail)
    bad = (ids < 0) | (ids >= feature.num_buckets)
    if bad.any():
        i = int(np.argmax(bad))
        raise fail(i, f"{where}: id {int(ids[i])} outside [0, num_buckets={feature.num_buckets})")
    return ids


def ragged_feature_arrays(feature: Feature, column: pa.Array | pa.ChunkedArray, where: str,
                          fail: Callable[[int, str], Exception]) -> dict[str, np.ndarray | RaggedArray]:
    """A ``TagFeature``'s or ``SequenceFeature``'s model inputs from its string column, by role of
    :meth:`recstack.easyrec.features.TabularSpec.ragged_keys` (the reader's and the Python API's one rule).

    Each cell is split at ``separator`` (empty values dropped). A sequence keeps its first ``sequence_length``
    values (the most recent: sequences are written newest first). Tag values ``key<kv_separator>weight`` give
    a weight each (a finite number). Ids as :func:`value_ids`; the values of a raw sequence as a
    ``RawFeature``'s (:func:`feature_column`: normalised, or bucket ids with ``boundaries``).

    Returns:
        ``{"ids" | "values": RaggedArray (int64 | float32), ["weights": RaggedArray float32,]
        "lengths": int64 (n, 1)}``. A bad value raises ``fail(row, message)``, the message starting with ``where``.
    """
    values, rows, lengths = split_cells(column, feature.separator)
    if feature.sequence_length:
        starts = np.cumsum(lengths) - lengths
        keep = np.arange(len(rows)) - starts[rows] < feature.sequence_length
        if not keep.all():
            values, rows = values.filter(pa.array(keep)), rows[keep]
            lengths = np.minimum(lengths, feature.sequence_length)

    def at_value(i: int, message: str) -> Exception:
        return fail(int(rows[i]), message)

    out: dict[str, np.ndarray | RaggedArray] = {}
    if feature.is_weighted:
        parts = pc.split_pattern(values, pattern=feature.kv_separator)
        bad = np.asarray(pc.list_value_length(parts).to_numpy(zero_copy_only=False)) != 2
        if bad.any():
            i = int(np.argmax(bad))
            raise at_value(i, f"{where}: tag {_shown(values[i].as_py())} is not key{feature.kv_separator}weight")
        values = pc.list_element(parts, 0)
        weights = _numbers(pc.list_element(parts, 1), False, f"{where}: weight", at_value)
        out["weights"] = RaggedArray.from_lengths(weights.astype(np.float32), lengths)
    if feature.is_tag or feature.sub_feature_type == "IdFeature":
        out["ids"] = RaggedArray.from_lengths(value_ids(feature, values, where, at_value), lengths)
    else:
        numbers = feature_column(feature, "DOUBLE", _numbers(values, False, f"{where}: value", at_value), where,
                                 at_value)
        key = "ids" if feature.boundaries else "values"
        out[key] = RaggedArray.from_lengths(numbers if feature.boundaries else numbers.astype(np.float32), lengths)
    out["lengths"] = lengths.reshape(-1, 1)
    return {role: out[role] for role in ("ids", "values", "weights", "lengths") if role in out}


def classification_labels(config: Config, label_fields: Sequence[str]) -> dict[str, str]:
    """Label field -> the first ``CLASSIFICATION`` task tower that learns it.

    Read from the ``task_towers`` lists of ``hyper_parameters.model_config.<model>`` (DBMTL's ``dbmtl``,
    MMoE's ``mmoe``, ...) as :func:`recstack.easyrec.tasks.parse_task_towers` reads them (``loss_type`` defaults to
    ``CLASSIFICATION``, ``label_name`` to the label field at the tower's position); the towers themselves
    are validated by the model. Such a label must be 0 or 1 in the data (binary cross-entropy and AUC).
    """
    model = config.get("hyper_parameters.model_config", None)
    found: dict[str, str] = {}
    for section in model.values() if isinstance(model, dict) else ():
        towers = section.get("task_towers") if isinstance(section, dict) else None
        for i, tower in enumerate(towers if isinstance(towers, list) else ()):
            if not isinstance(tower, dict) or tower.get("loss_type", "CLASSIFICATION") != "CLASSIFICATION":
                continue
            label = tower.get("label_name", label_fields[i] if i < len(label_fields) else None)
            if label in label_fields:
                found.setdefault(label, str(tower.get("tower_name", label)))
    return found


@READERS.register("tabular")
class TabularReader(BlockReader):
    """Reader of delimited text described by ``data_config`` / ``feature_config`` / ``feature_groups``.

    Config keys (``hyper_parameters``): ``data_config`` (``input_fields``,
    ``label_fields``, ``separator``), ``feature_config.features`` and
    ``model_config.feature_groups``; see :mod:`recstack.easyrec.features` and ``doc/yaml.md``.

    Blocks: one float32 ``(n, 1)`` array per label field; per feature group ``g``,
    ``g.ids`` int64 ``(n, k)`` and ``g.values`` float32 ``(n, m)`` (when ``k``, ``m`` > 0), and the
    keys of its tag and sequence features (:func:`ragged_feature_arrays`).

    Args:
        file_list: data files.
        config: the run's config.
        spec: the spec to read (default: parsed from ``config``; the grouped reader passes its per-sample part).
    """

    def __init__(self, file_list: Sequence[str], config: Config, spec: TabularSpec | None = None) -> None:
        super().__init__(file_list, config)
        self.spec = spec = TabularSpec.from_config(config) if spec is None else spec
        if spec.group_input is not None:
            raise ConfigError(f"{source(config, DATA_CONFIG + '.input_type')}: GroupRTPInput (one line per group) is "
                              "read by the core reader group_rtp, not tabular")
        self.columns = {name: (np.dtype(dtype), width) for name, (dtype, width) in spec.block_columns().items()}
        used = list(spec.label_fields)
        for group in spec.groups:
            for name in group.feature_names:
                if spec.feature(name).input_name not in used:
                    used.append(spec.feature(name).input_name)
        self.used = [f for f in spec.input_fields if f.name in used]
        self.width = len(spec.input_fields)
        self.binary_labels = classification_labels(config, spec.label_fields)
        self._int_fields = any(f.type in INT_RANGES for f in self.used)
        # with a whitespace separator, pyarrow reads a line of only separators as a row of empty fields
        self._blank_first = spec.separator.encode() if spec.separator.isspace() else None
        self._read_options = dict(column_names=[f.name for f in spec.input_fields], use_threads=False)
        self._parse_options = pacsv.ParseOptions(delimiter=spec.separator, quote_char=False, ignore_empty_lines=True)
        self._convert_options = pacsv.ConvertOptions(
            include_columns=[f.name for f in self.used],
            column_types={f.name: _ARROW_TYPES[f.type] for f in self.used},
            null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False)

    def signature(self) -> str:
        return f"{super().signature()}|{self.spec!r}"

    def feature_units(self) -> list[FeatureUnit]:
        """Each feature of each group by its ``feature_config`` name, in its group: its column of ``<g>.ids`` or
        ``<g>.values``, or all the keys of a tag or sequence feature (ids, weights, lengths together). A feature
        of two groups is listed once per group."""
        spec, units = self.spec, []
        for group in spec.groups:
            g = group.name
            columns = {f.name: ((f"{g}.ids", j),) for j, f in enumerate(spec.id_features(g))}
            columns.update({f.name: ((f"{g}.values", j),) for j, f in enumerate(spec.value_features(g))})
            columns.update({f.name: tuple((key, None) for key in spec.ragged_keys(g, f).values())
                            for f in spec.ragged_features(g)})
            units.extend(FeatureUnit(name, g, columns[name]) for name in group.feature_names if name in columns)
        return units

    # ------------------------------------------------------------------ parsing
    def _read(self, chunk: bytes) -> pa.Table:
        return pacsv.read_csv(io.BytesIO(chunk),
                              read_options=pacsv.ReadOptions(block_size=len(chunk) + 1, **self._read_options),
                              parse_options=self._parse_options, convert_options=self._convert_options)

    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        sep = self._blank_first
        if sep is not None and (chunk.startswith(sep) or b"\n" + sep in chunk):
            chunk = blank_whitespace_lines(chunk)  # a line of only whitespace is blank, also of separators
        try:
            table = self._read(chunk)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            error = self._first_bad_line(chunk, path, first_line)
            if error is not None:
                raise error from None
            try:  # no bad line: lines of only whitespace, which pyarrow does not skip (same line numbers)
                table = self._read(blank_whitespace_lines(chunk))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise DataFormatError(f"{path}:{first_line}: cannot parse the block starting here: {err}") from None
        if self._int_fields and holds_hex(chunk):  # pyarrow's integer parser takes 0x1f, the grammar does not
            error = self._first_bad_line(chunk, path, first_line)
            if error is not None:
                raise error
        columns = {f.name: self._with_default(table.column(f.name), f) for f in self.used}
        spec = self.spec
        block: Block = {}
        for name in spec.label_fields:
            label = np.array(columns[name], dtype=np.float32).reshape(-1, 1)  # a copy: arrow's buffers are read-only
            bad = ~np.isfinite(label[:, 0])
            if bad.any():
                raise row_error(chunk, path, first_line, int(np.argmax(bad)), f"label '{name}' is not a finite number")
            if name in self.binary_labels:
                bad = (label[:, 0] != 0) & (label[:, 0] != 1)
                if bad.any():
                    row = int(np.argmax(bad))
                    raise row_error(chunk, path, first_line, row,
                                    f"label '{name}' must be 0 or 1, got {label[row, 0]:g} (task tower "
                                    f"'{self.binary_labels[name]}' is CLASSIFICATION; use loss_type: L2_LOSS "
                                    "for a regression target)")
            block[name] = label
        cache: dict[str, np.ndarray] = {}
        for group in spec.groups:
            ids = [self._feature_array(f, columns, cache, chunk, path, first_line)
                   for f in spec.id_features(group.name)]
            values = [self._feature_array(f, columns, cache, chunk, path, first_line)
                      for f in spec.value_features(group.name)]
            n = table.num_rows
            if ids:
                block[f"{group.name}.ids"] = np.stack(ids, axis=1) if n else np.zeros((0, len(ids)), np.int64)
            if values:
                block[f"{group.name}.values"] = (np.stack(values, axis=1).astype(np.float32) if n
                                                 else np.zeros((0, len(values)), np.float32))
            for feature in spec.ragged_features(group.name):
                arrays = self._ragged_arrays(feature, columns, cache, chunk, path, first_line)
                for role, key in spec.ragged_keys(group.name, feature).items():
                    block[key] = arrays[role]
            self._check_aligned(group.name, cache, chunk, path, first_line)
        return block

    def _ragged_arrays(self, feature: Feature, columns: dict, cache: dict, chunk: bytes, path: str,
                       first_line: int) -> dict[str, np.ndarray | RaggedArray]:
        """A tag or sequence feature's arrays (computed once per block)."""
        if feature.name not in cache:
            def fail(row: int, message: str) -> DataFormatError:
                return row_error(chunk, path, first_line, row, message)

            cache[feature.name] = ragged_feature_arrays(feature, columns[feature.input_name],
                                                        f"field '{feature.input_name}' (feature '{feature.name}')",
                                                        fail)
        return cache[feature.name]

    def _check_aligned(self, group: str, cache: dict, chunk: bytes, path: str, first_line: int) -> None:
        """The sequence features of a group hold as many values in each line (one per behaviour)."""
        sequences = self.spec.sequence_features(group)
        for other in sequences[1:]:
            a, b = cache[sequences[0].name]["lengths"][:, 0], cache[other.name]["lengths"][:, 0]
            bad = a != b
            if bad.any():
                row = int(np.argmax(bad))
                raise row_error(chunk, path, first_line, row,
                                f"sequence features '{sequences[0].name}' and '{other.name}' of group '{group}' hold "
                                f"{a[row]} and {b[row]} values; a group's sequences are read side by side (one "
                                "value each per behaviour) and need the same number")

    @staticmethod
    def _with_default(column: pa.ChunkedArray, field: InputField) -> pa.ChunkedArray | np.ndarray:
        """The column with empty fields replaced by the default; numbers as a numpy array."""
        if field.type == "STRING":
            if field.default != "":
                column = pc.if_else(pc.equal(column, ""), pa.scalar(field.default, pa.string()), column)
            return column
        column = pc.fill_null(column, pa.scalar(field.default, _ARROW_TYPES[field.type]))
        return column.to_numpy()

    def _feature_array(self, feature: Feature, columns: dict, cache: dict[str, np.ndarray], chunk: bytes,
                       path: str, first_line: int) -> np.ndarray:
        """One feature's column: int64 ids or float64 values (computed once per block)."""
        if feature.name in cache:
            return cache[feature.name]
        field = self.spec.input_field(feature.input_name)

        def fail(row: int, message: str) -> DataFormatError:
            return row_error(chunk, path, first_line, row, message)

        out = feature_column(feature, field.type, columns[feature.input_name],
                             f"field '{field.name}' (feature '{feature.name}')", fail)
        cache[feature.name] = out
        return out

    def _first_bad_line(self, chunk: bytes, path: str, first_line: int) -> DataFormatError | None:
        """Slow path, only after the fast path failed (or a chunk holds ``0x``): the error naming the first bad
        line and field, ``None`` when no line is bad."""
        sep = self.spec.separator.encode()
        used = {i: f for i, f in enumerate(self.spec.input_fields) if f in self.used}
        for offset, line in enumerate(chunk.split(b"\n")):
            line = line.rstrip(b"\r")
            if not line.strip():  # blank, also when only whitespace
                continue
            fields = line.split(sep)
            if len(fields) != self.width:
                return bad_line(path, first_line + offset, line,
                                f"expected {self.width} {self.spec.separator!r}-separated fields "
                                f"({', '.join(f.name for f in self.spec.input_fields[:4])}"
                                f"{', ...' if self.width > 4 else ''}), got {len(fields)}")
            for i, field in used.items():
                problem = _field_problem(fields[i], field)
                if problem:
                    return bad_line(path, first_line + offset, line, problem)
        return None


def _field_problem(raw: bytes, field: InputField) -> str | None:
    """What is wrong with one field's text, or ``None``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"field '{field.name}' is not valid UTF-8"
    if field.type == "STRING" or text == "":
        return None
    shown = text if len(text) <= 40 else text[:37] + "..."
    if field.type in INT_RANGES:
        if INTEGER.fullmatch(text) is None:
            return f"field '{field.name}' ({field.type}) is not an integer: {shown!r} (doc/custom_reader.md#numbers)"
        value = int(text)
        low, high = INT_RANGES[field.type]
        if not low <= value <= high:
            return f"field '{field.name}' ({field.type}) is out of range [{low}, {high}]: {shown!r}"
        return None
    if DECIMAL.fullmatch(text) is None:
        return f"field '{field.name}' ({field.type}) is not a number: {shown!r} (doc/custom_reader.md#numbers)"
    return None

"""Config-driven reader of delimited text with named columns (EasyRec's ``CSVInput``), or of Parquet files
(``data_config.input_type: ParquetInput``).

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
  with a vocabulary (``vocab_list``, ``vocab_file``, a fitted ``vocab``): the value's index in it, a value not in
  it 0 (``vocab_list``, EasyRec's rule) or an out-of-vocabulary id after the entries (:func:`value_ids`);
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

ParquetInput: each file is streamed one row group at a time (:func:`recstack.data.parquet.iter_parquet`, only the
used columns); each record batch's columns are cast to their fields' types (:func:`parquet_column`: nulls take the
``default_val``; a tag or sequence field may be a list column) and converted by the same
:meth:`TabularReader.table_block` as a CSV chunk's table. Errors name the file, the row (0-based over the file)
and the column, e.g.
``/data/train/part-0.parquet: row 7: column 'fans_num' (INT64) 'abc' is not an integer``.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator, Sequence

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
    ColumnChunk,
    DataFormatError,
    FeatureUnit,
    RaggedArray,
    bad_line,
    blank_whitespace_lines,
    holds_hex,
    parse_int,
    row_error,
)
from recstack.data.parquet import iter_parquet
from recstack.data.parquet import row_error as parquet_row_error
from recstack.easyrec.features import DATA_CONFIG, INT_RANGES, Feature, InputField, TabularSpec
from recstack.easyrec.schema import source
from recstack.easyrec.vocab import value_set as vocab_value_set
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

    ``IdFeature``: ids hashed into ``hash_bucket_size`` buckets, indices in the vocabulary (other values as
    :func:`value_ids`), or int64 ids checked against ``num_buckets``; ``RawFeature``: finite float64 values, min-max
    normalised and/or bucketised by ``boundaries`` (then int64 bucket ids). A bad row raises
    ``fail(row index, message)``; the message starts with ``where`` (the field or column it came from).
    """
    if feature.feature_type == "IdFeature":
        if feature.hash_bucket_size or feature.vocab or feature.vocab_counter is not None:
            text = column if field_type == "STRING" else pa.array(column).cast(pa.string())
            if not feature.hash_bucket_size:
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


def is_list_type(data_type: pa.DataType) -> bool:
    """Whether an Arrow type is a list column (``list<...>``, ``large_list<...>``, ``fixed_size_list<...>``)."""
    return pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type)


def split_cells(column: pa.Array | pa.ChunkedArray, separator: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The values of each cell of a string column, split at ``separator``, empty values dropped (``a||b`` holds
    ``a`` and ``b``; an empty cell holds none); or of each cell of a list column (Parquet's ``list<string>``,
    ``list<int64>``, ``list<double>``...), null and empty-string values dropped, a null list holding none:
    the same values and rows as the separated text of the same values.

    Returns:
        ``(values, rows, lengths)``: all values, row 0's first (a string array; a list column's element type);
        each value's row, int64; each row's number of values, int64 ``(n,)``.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    lists = column if is_list_type(column.type) else pc.split_pattern(column, pattern=separator)
    values = pc.list_flatten(lists)
    rows = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_large_string(values.type) or pa.types.is_dictionary(values.type):
        values = values.cast(pa.string())
    keep = pc.and_kleene(pc.is_valid(values), pc.not_equal(values, "")) if pa.types.is_string(values.type) \
        else pc.is_valid(values)
    keep = pc.fill_null(keep, False)
    if values.null_count or not pc.all(keep).as_py():
        values = values.filter(keep)
        rows = rows[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    return values, rows, np.bincount(rows, minlength=len(column)).astype(np.int64)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _numbers(values: pa.Array, integer: bool, what: str, fail: Callable[[int, str], Exception]) -> np.ndarray:
    """int64 or float64 numbers of a string array, in the readers' grammar, or of a numeric array (a Parquet list
    column's values); ``fail(index of the value, message)`` for the first bad one (not a number, not an integer,
    beyond int64, not finite)."""
    if pa.types.is_integer(values.type) or pa.types.is_boolean(values.type):
        return np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64 if integer
                          else np.float64)
    if pa.types.is_floating(values.type):
        out = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = ~np.isfinite(out) | ((out != np.floor(out)) | (np.abs(out) >= 2.0 ** 63) if integer else False)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise fail(i, f"{what} {out[i]!r} is not {'an integer' if integer else 'a finite number'}")
        return out.astype(np.int64) if integer else out
    if not pa.types.is_string(values.type):
        raise fail(0, f"{what}: values of type {values.type} are not numbers")
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

    ``hash_bucket_size``: CRC-32 of the text modulo the buckets (as :func:`hash_ids`); a vocabulary (``vocab_list``,
    ``vocab_file``, fitted ``vocab``; :mod:`recstack.easyrec.vocab`) of ``V`` entries: the index in it, and for a
    value not in it 0 with ``num_oov_buckets`` 0 (``vocab_list``'s default, EasyRec's ``default_value=0``), else
    the out-of-vocabulary id ``V + crc32(value) % num_oov_buckets`` (``V`` with one bucket): always in
    ``[0, V + num_oov_buckets)``; ``num_buckets``: the integer, in ``[0, num_buckets)``. Inside
    :func:`recstack.easyrec.vocab.counting` (``tools/build_vocab.py``) a fitted feature counts its values (as
    text) and gives ids 0.
    """
    if feature.hash_bucket_size or feature.vocab or feature.vocab_counter is not None:
        values = values if pa.types.is_string(values.type) else _as_text(values)
    if feature.hash_bucket_size:
        return hash_ids(values, feature.hash_bucket_size)
    if feature.vocab_counter is not None:
        feature.vocab_counter.add(values)
        return np.zeros(len(values), dtype=np.int64)
    if feature.vocab:
        index = pc.index_in(values, value_set=vocab_value_set(feature.vocab))
        if not feature.num_oov_buckets:
            return np.asarray(pc.fill_null(index, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        ids = np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        unknown = ids < 0
        if unknown.any():
            size = len(feature.vocab)
            ids[unknown] = size if feature.num_oov_buckets == 1 else \
                size + hash_ids(values.filter(pa.array(unknown)), feature.num_oov_buckets)
        return ids
    ids = _numbers(values, True, f"{where}: id", fail)
    bad = (ids < 0) | (ids >= feature.num_buckets)
    if bad.any():
        i = int(np.argmax(bad))
        raise fail(i, f"{where}: id {int(ids[i])} outside [0, num_buckets={feature.num_buckets})")
    return ids


def _as_text(values: pa.Array) -> pa.Array:
    """A numeric array's values as text (integers: their canonical decimal text, as hashed from CSV)."""
    return values.cast(pa.string())


def ragged_feature_arrays(feature: Feature, column: pa.Array | pa.ChunkedArray, where: str,
                          fail: Callable[[int, str], Exception]) -> dict[str, np.ndarray | RaggedArray]:
    """A ``TagFeature``'s or ``SequenceFeature``'s model inputs from its string (or list) column, by role of
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
        if not pa.types.is_string(values.type):
            raise at_value(0, f"{where}: a weighted tag needs key{feature.kv_separator}weight strings, got "
                              f"values of type {values.type}")
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


# --------------------------------------------------------------------- Parquet columns
def parquet_column(column: pa.Array, field: InputField, list_ok: bool,
                   fail: Callable[[int, str], Exception]) -> pa.Array:
    """A Parquet column as its input field's Arrow type (nulls kept: they take the ``default_val``).

    Numbers cast between Arrow types when every value fits (an integer field takes a float column of whole
    numbers; INT32 checks the range); a string column of a numeric field is parsed in the readers' grammar
    (empty strings are nulls, as empty CSV fields); a STRING field takes string and integer columns (an
    integer's canonical decimal text). ``list_ok`` (a STRING field read only by tag / sequence features): a
    list column of strings or numbers is kept as it is (:func:`split_cells`). Anything else (a list for a
    scalar field, a timestamp, binary...) raises ``fail(row, message)`` naming the column.
    """
    where = f"column '{field.name}' ({field.type})"
    target = _ARROW_TYPES[field.type]
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    if kind == target:
        return column
    if is_list_type(kind):
        value = kind.value_type
        if list_ok and (pa.types.is_string(value) or pa.types.is_large_string(value) or pa.types.is_integer(value)
                        or pa.types.is_floating(value) or pa.types.is_dictionary(value)):
            return column
        what = "a STRING field read only by TagFeature / SequenceFeature features" if not list_ok else \
            "a list of strings or numbers"
        raise fail(_first_valid(column), f"{where} is a list column ({kind}); a list column must be {what}")
    if field.type == "STRING":
        if pa.types.is_large_string(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
            return column.cast(pa.string())
        raise fail(_first_valid(column), f"{where}: a column of type {kind} cannot be read as STRING")
    integer = field.type in INT_RANGES
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = column.cast(pa.string())
        present = np.asarray(pc.fill_null(pc.not_equal(text, ""), False).to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.flatnonzero(present)
        numbers = _numbers(text.filter(pa.array(present)), integer, where,
                           lambda i, message: fail(int(rows[i]), message))
        out = np.zeros(len(text), dtype=np.int64 if integer else np.float64)
        out[rows] = numbers
        column = pa.array(out, mask=~present)
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise fail(_first_valid(column), f"{where}: a column of type {kind} cannot be read as {field.type}")
    if integer:
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        low, high = INT_RANGES[field.type]
        if pa.types.is_floating(column.type):
            bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < low) | (values >= -float(low))
        elif pa.types.is_boolean(column.type):
            bad = np.zeros(len(values), dtype=bool)
        else:
            bad = (values < low) | (values > high) if values.dtype != np.uint64 else values > np.uint64(high)
        if bad.any():
            row = int(np.argmax(bad))
            raise fail(row, f"{where}: {values[row].item()!r} is not an integer in [{low}, {high}]")
    return column.cast(target, safe=False)


def _first_valid(column: pa.Array) -> int:
    """The first non-null row (0 when all are null)."""
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return int(np.argmax(valid)) if valid.any() else 0


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
    """Reader of delimited text (or, with ``input_type: ParquetInput``, Parquet files) described by ``data_config`` /
    ``feature_config`` / ``feature_groups``.

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
        all_columns: read every input field, not only those the labels and features use (:meth:`read_table`).
    """

    def __init__(self, file_list: Sequence[str], config: Config, spec: TabularSpec | None = None,
                 all_columns: bool = False) -> None:
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
        #: the columns read: those the labels and features use (``all_columns``: every input field, for
        #: converters such as tools/to_parquet.py, which read with :meth:`read_table`)
        self.used = list(spec.input_fields) if all_columns else [f for f in spec.input_fields if f.name in used]
        self.width = len(spec.input_fields)
        self.binary_labels = classification_labels(config, spec.label_fields)
        #: ParquetInput: files are Parquet, columns read by name (:meth:`chunks`)
        self.parquet = spec.input_type == "ParquetInput"
        #: fields that may be list columns (Parquet's, the Python API's): STRING fields read only by tag and sequence
        #: features
        readers = {}
        for feature in spec.features:
            readers.setdefault(feature.input_name, []).append(feature.is_ragged)
        self.list_fields = {name for name, ragged in readers.items() if all(ragged)}
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

    def chunks(self, path: str) -> Iterator[tuple[bytes | ColumnChunk, int]]:
        """Chunks of complete lines (CSVInput), or record batches of the used columns (ParquetInput)."""
        if self.parquet:
            return iter_parquet(path, [f.name for f in self.used])
        return super().chunks(path)

    def parse_block(self, chunk: bytes | ColumnChunk, path: str, first_line: int) -> Block:
        """A block from a chunk of lines (``first_line``: its first line's number) or, for ParquetInput, a
        :class:`~recstack.data.base.ColumnChunk` (``first_line``: its first row in the file, from 0)."""
        if isinstance(chunk, ColumnChunk):
            return self._parquet_block(chunk.batch, path, first_line)
        table = self.read_table(chunk, path, first_line)

        def fail(row: int, message: str) -> DataFormatError:
            return row_error(chunk, path, first_line, row, message)

        return self.table_block(table, fail)

    def read_table(self, chunk: bytes, path: str, first_line: int) -> pa.Table:
        """The used columns of a chunk of lines, each of its field's Arrow type (empty fields: nulls for numbers,
        ``""`` for strings), every value checked against the readers' grammar.

        Raises:
            DataFormatError: naming the file, the first bad line and the field.
        """
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
        return table

    def _parquet_block(self, batch: pa.RecordBatch, path: str, first_row: int) -> Block:
        """A record batch's used columns cast to their fields' types (list columns kept for tag and sequence
        features), then :meth:`table_block`; errors name the file, the row (0-based over the file) and the column."""
        def fail(row: int, message: str) -> DataFormatError:
            return parquet_row_error(path, first_row + row, message)

        columns = [parquet_column(batch.column(f.name), f, f.name in self.list_fields, fail) for f in self.used]
        return self.table_block(pa.Table.from_arrays(columns, names=[f.name for f in self.used]), fail)

    def table_block(self, table: pa.Table, fail: Callable[[int, str], Exception]) -> Block:
        """The block of a table of the used columns, each of its field's Arrow type (nulls allowed: they take
        the field's ``default_val``; a tag or sequence feature's column may be a list column): the one
        conversion of CSV chunks and Parquet record batches. A bad row raises ``fail(row of the table, message)``."""
        columns = {f.name: self._with_default(table.column(f.name), f) for f in self.used}
        spec = self.spec
        block: Block = {}
        for name in spec.label_fields:
            label = np.array(columns[name], dtype=np.float32).reshape(-1, 1)  # a copy: arrow's buffers are read-only
            bad = ~np.isfinite(label[:, 0])
            if bad.any():
                raise fail(int(np.argmax(bad)), f"label '{name}' is not a finite number")
            if name in self.binary_labels:
                bad = (label[:, 0] != 0) & (label[:, 0] != 1)
                if bad.any():
                    row = int(np.argmax(bad))
                    raise fail(row, f"label '{name}' must be 0 or 1, got {label[row, 0]:g} (task tower "
                                    f"'{self.binary_labels[name]}' is CLASSIFICATION; use loss_type: L2_LOSS "
                                    "for a regression target)")
            block[name] = label
        cache: dict[str, np.ndarray] = {}
        n = table.num_rows
        for group in spec.groups:
            ids = [self._feature_array(f, columns, cache, fail) for f in spec.id_features(group.name)]
            values = [self._feature_array(f, columns, cache, fail) for f in spec.value_features(group.name)]
            if ids:
                block[f"{group.name}.ids"] = np.stack(ids, axis=1) if n else np.zeros((0, len(ids)), np.int64)
            if values:
                block[f"{group.name}.values"] = (np.stack(values, axis=1).astype(np.float32) if n
                                                 else np.zeros((0, len(values)), np.float32))
            for feature in spec.ragged_features(group.name):
                arrays = self._ragged_arrays(feature, columns, cache, fail)
                for role, key in spec.ragged_keys(group.name, feature).items():
                    block[key] = arrays[role]
            self._check_aligned(group.name, cache, fail)
        return block

    def _ragged_arrays(self, feature: Feature, columns: dict, cache: dict,
                       fail: Callable[[int, str], Exception]) -> dict[str, np.ndarray | RaggedArray]:
        """A tag or sequence feature's arrays (computed once per block)."""
        if feature.name not in cache:
            cache[feature.name] = ragged_feature_arrays(feature, columns[feature.input_name],
                                                        f"field '{feature.input_name}' (feature '{feature.name}')",
                                                        fail)
        return cache[feature.name]

    def _check_aligned(self, group: str, cache: dict, fail: Callable[[int, str], Exception]) -> None:
        """The sequence features of a group hold as many values in each line (one per behaviour)."""
        sequences = self.spec.sequence_features(group)
        for other in sequences[1:]:
            a, b = cache[sequences[0].name]["lengths"][:, 0], cache[other.name]["lengths"][:, 0]
            bad = a != b
            if bad.any():
                row = int(np.argmax(bad))
                raise fail(row, f"sequence features '{sequences[0].name}' and '{other.name}' of group '{group}' hold "
                                f"{a[row]} and {b[row]} values; a group's sequences are read side by side (one "
                                "value each per behaviour) and need the same number")

    @staticmethod
    def _with_default(column: pa.ChunkedArray, field: InputField) -> pa.ChunkedArray | np.ndarray:
        """The column with empty fields (nulls, and empty strings in a STRING field) replaced by the default;
        numbers as a numpy array; a list column as it is (a null list holds no values)."""
        if is_list_type(column.type):
            return column
        if field.type == "STRING":
            if column.null_count:
                column = pc.fill_null(column, pa.scalar(field.default, pa.string()))
            if field.default != "":
                column = pc.if_else(pc.equal(column, ""), pa.scalar(field.default, pa.string()), column)
            return column
        column = pc.fill_null(column, pa.scalar(field.default, _ARROW_TYPES[field.type]))
        return column.to_numpy()

    def _feature_array(self, feature: Feature, columns: dict, cache: dict[str, np.ndarray],
                       fail: Callable[[int, str], Exception]) -> np.ndarray:
        """One feature's column: int64 ids or float64 values (computed once per block)."""
        if feature.name in cache:
            return cache[feature.name]
        field = self.spec.input_field(feature.input_name)
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

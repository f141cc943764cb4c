"""Request validation of the prediction service: JSON rows / columns and uploaded data files → model inputs.

Every check names what is wrong and where (the field, the row, the line of an uploaded file), so a
client can fix its request; nothing that fails a check reaches the model. What is checked, for each
input of the export description (``tostatic.json``):

- presence (a missing input) and no unknown keys (a misspelt input name is an error, not ignored);
- type: integers for integer inputs (no floats, booleans or strings), numbers for float inputs;
- shape: each row's value has the input's per-row shape (``[26]``), a dynamic axis (DIN's history
  length) takes any length ≥ 1 and is padded with 0 to the request's longest row, as the loader
  pads a batch; a per-row shape ``[1]`` also takes a bare number;
- values: finite floats (no NaN / inf), integers within int64, ids within ``[0, rows)`` of the
  embedding table the input indexes (the export's ``embedding_tables``);
- size: at least one row, at most ``max_rows``; before parsing, a body that holds more JSON values than
  ``max_rows`` rows of the model's inputs can hold is refused (:func:`check_json_size`), so the Python
  objects that parsing makes (~5-25x the body) stay bounded by the model's shape, not the body's size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


class RequestError(ValueError):
    """A bad request: HTTP ``status`` (4xx) and a message naming the field / row / line.

    Attributes:
        status: the HTTP status code to answer with.
        field: the JSON path of the offending value (``rows[3].sparse[25]``) or ``None``.
        line: the 1-based line of an uploaded file, or ``None``.
    """

    def __init__(self, message: str, status: int = 400, field: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.line = status, field, line


@dataclass
class InputSpec:
    """One model input as the service checks it (from the export description)."""

    name: str
    dtype: np.dtype
    row_shape: tuple[int | str, ...]  # the shape after the batch axis; a string is a dynamic axis
    column: str | None
    num_embeddings: int | list[int] | None = None  # one bound for every id, or one per column

    @property
    def is_int(self) -> bool:
        return self.dtype.kind in "iu"

    @property
    def dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.row_shape)

    def describe(self) -> str:
        shape = ", ".join(str(d) for d in self.row_shape)
        if isinstance(self.num_embeddings, list):
            bound = f", column j's ids in [0, {self.num_embeddings}[j])"
        else:
            bound = f", ids in [0, {self.num_embeddings})" if self.num_embeddings else ""
        return f"{self.dtype.name} [{shape}]{bound}"


def input_specs(spec: dict[str, Any]) -> list[InputSpec]:
    """The inputs of an export description, with the embedding table bound of each id input."""
    tables = spec.get("embedding_tables") or {}
    return [InputSpec(s["name"], np.dtype(s["dtype"]), tuple(s["shape"][1:]), s.get("column"), tables.get(s["name"]))
            for s in spec["inputs"]]


class HugeInt(int):
    """An integer literal with more digits than Python converts (``sys.get_int_max_str_digits()``, 4300): kept as
    a marker whose value (±10**40) is outside int64 and float32, so the checks name its field; it prints as
    ``a 5000-digit integer (123456789012...)``."""

    def __new__(cls, text: str) -> HugeInt:
        negative = text.startswith("-")
        value = super().__new__(cls, -(10 ** 40) if negative else 10 ** 40)
        value.text = f"a {len(text) - negative}-digit integer ({text[:13]}...)"
        return value

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past the int-parsing digit limit
        return HugeInt(text)


def json_value_bound(specs: Sequence[InputSpec], max_rows: int) -> int | None:
    """The most JSON values (numbers, lists, objects, keys) a request of ``max_rows`` rows holds, in either layout;
    ``None`` when an input has a dynamic axis (no bound from the shape)."""
    if any(s.dynamic for s in specs):
        return None
    per_row = 1  # the row's object
    for s in specs:
        shape = [int(d) for d in s.row_shape]
        lists = sum(math.prod(shape[:k]) for k in range(len(shape)))  # the nested lists of one row's value
        key_marks = sum(s.name.count(c) for c in ",[{")  # (input names never hold these; counted to be exact)
        per_row += 1 + key_marks + lists + math.prod(shape)
    return max_rows * per_row + 4 * len(specs) + 16


def check_json_size(body: bytes, specs: Sequence[InputSpec], max_rows: int) -> None:
    """Refuse, before parsing, a body with more JSON values than :func:`json_value_bound` (413).

    The count is an upper bound found at C speed: every value but the outermost follows a ``,`` or opens its
    container's ``[`` / ``{``.

    Raises:
        RequestError: 413 naming both counts.
    """
    bound = json_value_bound(specs, max_rows)
    if bound is None or len(body) <= bound:
        return
    values = body.count(b",") + body.count(b"[") + body.count(b"{")
    if values > bound:
        raise RequestError(f"the request holds about {values} JSON values; {max_rows} rows (--max_rows) of this "
                           f"model's inputs hold at most {bound}; split the request", status=413)


def parse_json(body: bytes) -> Any:
    """The JSON document of a request body (NaN / Infinity literals parse; :func:`to_arrays` rejects them).

    An integer literal too long for Python to convert (4300 digits) parses as a :class:`HugeInt`, which the
    checks report as outside int64 / float32 at its field.

    Raises:
        RequestError: empty body, not UTF-8, or not JSON (the message gives line and column).
    """
    if not body.strip():
        raise RequestError("empty request body; send a JSON object {\"rows\": [{<input name>: <value>, ...}, ...]}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"request body is not UTF-8 (byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    except ValueError:  # an integer literal past Python's digit limit: again, keeping such literals as markers
        try:
            return json.loads(text, parse_int=_parse_int)
        except ValueError as err:
            raise RequestError(f"malformed JSON: {str(err)[:200]}") from None
        except RecursionError:
            raise RequestError("malformed JSON: nested too deeply") from None


def _kind(value: Any) -> str:
    if isinstance(value, HugeInt):
        return repr(value)
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float):
        return f"the float {value!r}"
    return type(value).__name__


def _check_value(value: Any, spec: InputSpec, path: str) -> None:
    """Type and range of one scalar (slow path, only to name the offending element)."""
    if spec.is_int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestError(f"{path}: expected an integer ({spec.describe()}), got {_kind(value)}", field=path)
        if not INT64_MIN <= value <= INT64_MAX:
            raise RequestError(f"{path}: {value} is outside int64", field=path)
        if isinstance(spec.num_embeddings, int) and not 0 <= value < spec.num_embeddings:
            raise RequestError(f"{path}: id {value} is outside the embedding table of '{spec.name}' "
                               f"(ids in [0, {spec.num_embeddings}))", field=path)  # dynamic inputs
    else:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RequestError(f"{path}: expected a number ({spec.describe()}), got {_kind(value)}", field=path)
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(f"{path}: {value!r} is not a finite number", field=path)
        if abs(value) > FLOAT32_MAX:
            raise RequestError(f"{path}: {value!r} overflows float32", field=path)


def _check_nested(value: Any, shape: Sequence[int | str], spec: InputSpec, path: str) -> None:
    """Shape, then type and range, of one row's value (slow path naming the first problem)."""
    if not shape:
        if isinstance(value, list):
            raise RequestError(f"{path}: expected a number, got a list (input '{spec.name}' is "
                               f"{spec.describe()})", field=path)
        _check_value(value, spec, path)
        return
    if not isinstance(value, list):
        raise RequestError(f"{path}: expected a list of {shape[0]} (input '{spec.name}' is {spec.describe()}), "
                           f"got {_kind(value)}", field=path)
    size = shape[0]
    if isinstance(size, str):
        if not value:
            raise RequestError(f"{path}: empty list; the variable-length axis '{size}' of '{spec.name}' needs at "
                               "least one value", field=path)
    elif len(value) != size:
        raise RequestError(f"{path}: expected {size} values (input '{spec.name}' is {spec.describe()}), got "
                           f"{len(value)}", field=path)
    for j, item in enumerate(value):
        _check_nested(item, shape[1:], spec, f"{path}[{j}]")


def column_array(values: Sequence[Any], spec: InputSpec, paths: Sequence[str], booleans: bool = True) -> np.ndarray:
    """The ``(n, *row_shape)`` array of one input from each row's value, every value checked.

    Args:
        values: one JSON value per row.
        spec: the input.
        paths: the JSON path of each row's value, for messages.
        booleans: whether the document may hold ``true`` / ``false`` (numpy takes them as 1 / 0, so they
            are looked for one by one).

    Raises:
        RequestError: naming the first offending row and element.
    """
    values = list(values)
    if spec.row_shape == (1,):  # a bare number for a one-value row
        values = [[v] if not isinstance(v, list) else v for v in values]
    if spec.dynamic:
        if len(spec.row_shape) != 1:
            raise RequestError(f"input '{spec.name}' has shape {list(spec.row_shape)}; only a dynamic axis 1 is "
                               "served", status=422)
        for v, path in zip(values, paths):
            _check_nested(v, spec.row_shape, spec, path)
        longest = max(len(v) for v in values)
        array = np.zeros((len(values), longest), dtype=spec.dtype)
        for i, v in enumerate(values):
            array[i, :len(v)] = v
        return array
    # fast path: numpy builds the array; any surprise (ragged, wrong types) re-checks row by row to name it
    try:
        array = np.array(values)
    except (ValueError, OverflowError):
        array = None
    wanted = (len(values), *spec.row_shape)
    ok = array is not None and array.shape == wanted and (
        array.dtype.kind in "iu" if spec.is_int else array.dtype.kind in "iuf")
    if ok and booleans and any(isinstance(x, bool) for x in _leaves(values)):
        ok = False
    if ok and spec.is_int and array.dtype.kind == "u" and array.size and array.max() > INT64_MAX:
        ok = False
    if ok and array.dtype.kind == "f" and array.size:
        with np.errstate(invalid="ignore"):
            ok = bool(np.isfinite(array).all() and np.abs(array).max() <= FLOAT32_MAX)
    if not ok:
        for v, path in zip(values, paths):
            _check_nested(v, spec.row_shape, spec, path)
        raise RequestError(f"input '{spec.name}': values do not form a {spec.describe()} batch")  # not reached
    array = array.astype(spec.dtype, copy=False)
    bad = first_bad_value(array, spec)
    if bad is not None:
        row, col, problem = bad
        path = f"{paths[row]}[{col}]" if spec.row_shape else paths[row]
        raise RequestError(f"{path}: {problem}", field=path)
    return array


def _leaves(values: Sequence[Any]):
    for v in values:
        if isinstance(v, list):
            yield from _leaves(v)
        else:
            yield v


def first_bad_value(array: np.ndarray, spec: InputSpec) -> tuple[int, int, str] | None:
    """The first value of a parsed input that must not reach the model: ``(row, position in the row,
    problem)``, or ``None``. Floats must be finite; ids must be inside the embedding table."""
    flat = array.reshape(len(array), -1)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(flat)
        problem = "{value} is not a finite number"
    elif isinstance(spec.num_embeddings, list) and array.size and flat.shape[1] == len(spec.num_embeddings):
        bounds = np.asarray(spec.num_embeddings, dtype=np.int64)
        bad = (flat < 0) | (flat >= bounds)
        problem = f"id {{value}} is outside the embedding table of '{spec.name}' column {{col}} (ids in [0, {{bound}}))"
    elif isinstance(spec.num_embeddings, int) and array.size:
        bad = (flat < 0) | (flat >= spec.num_embeddings)  # padding zeros (dynamic axes) are inside the table
        problem = f"id {{value}} is outside the embedding table of '{spec.name}' (ids in [0, {spec.num_embeddings}))"
    else:
        return None
    if not bad.any():
        return None
    row, col = (int(x) for x in np.argwhere(bad)[0])
    bound = spec.num_embeddings[col] if isinstance(spec.num_embeddings, list) else spec.num_embeddings
    return row, col, problem.format(value=flat[row, col].item(), col=col, bound=bound)


def to_arrays(document: Any, specs: Sequence[InputSpec], max_rows: int, booleans: bool = True) -> dict[str, np.ndarray]:
    """Model inputs of a ``/predict`` JSON document, all checked.

    Two layouts: rows ``{"rows": [{"sparse": [...], "dense": [...]}, ...]}`` or columns
    ``{"inputs": {"sparse": [[...], ...], "dense": [[...], ...]}}`` (each a list with one value per row).

    ``booleans=False`` tells that the body holds no ``true`` / ``false`` (skips looking for them).

    Raises:
        RequestError: 400 naming the field / row; 413 for more than ``max_rows`` rows.
    """
    if not isinstance(document, dict):
        raise RequestError(f"the request body must be a JSON object with 'rows' (or 'inputs'), got {_kind(document)}")
    keys = set(document)
    if keys - {"rows", "inputs"}:
        extra = sorted(keys - {"rows", "inputs"})
        raise RequestError(f"unknown top-level field(s) {extra}; send 'rows' (a list of objects) or 'inputs' "
                           "(an object of columns)", field=extra[0])
    if len(keys) != 1:
        raise RequestError("send exactly one of 'rows' (a list of objects keyed by input name) or 'inputs' "
                           "(an object of columns)", field="rows")
    names = [s.name for s in specs]
    if "rows" in document:
        rows = document["rows"]
        if not isinstance(rows, list):
            raise RequestError(f"rows: expected a list of objects, got {_kind(rows)}", field="rows")
        _check_size(len(rows), "rows", max_rows)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(f"rows[{i}]: expected an object keyed by input name ({', '.join(names)}), got "
                                   f"{_kind(row)}", field=f"rows[{i}]")
            _check_keys(row, names, f"rows[{i}]")
        return {s.name: column_array([row[s.name] for row in rows], s, [f"rows[{i}].{s.name}" for i in
                                                                          range(len(rows))], booleans) for s in specs}
    columns = document["inputs"]
    if not isinstance(columns, dict):
        raise RequestError(f"inputs: expected an object of columns keyed by input name, got {_kind(columns)}",
                           field="inputs")
    _check_keys(columns, names, "inputs")
    lengths = {}
    for s in specs:
        if not isinstance(columns[s.name], list):
            raise RequestError(f"inputs.{s.name}: expected a list with one value per row, got "
                               f"{_kind(columns[s.name])}", field=f"inputs.{s.name}")
        lengths[s.name] = len(columns[s.name])
    n = lengths[names[0]]
    for name, length in lengths.items():
        if length != n:
            raise RequestError(f"inputs.{name}: {length} rows, but inputs.{names[0]} has {n}", field=f"inputs.{name}")
    _check_size(n, "inputs", max_rows)
    return {s.name: column_array(columns[s.name], s, [f"inputs.{s.name}[{i}]" for i in range(n)], booleans)
            for s in specs}


def _check_size(n: int, field: str, max_rows: int) -> None:
    if n == 0:
        raise RequestError(f"{field}: empty batch; send at least one row", field=field)
    if n > max_rows:
        raise RequestError(f"{field}: {n} rows is more than this server takes in one request ({max_rows}, "
                           "--max_rows); split the request", status=413, field=field)


def _check_keys(row: dict, names: Sequence[str], path: str) -> None:
    missing = [n for n in names if n not in row]
    if missing:
        raise RequestError(f"{path}: missing input(s) {missing} (the model takes {list(names)})",
                           field=f"{path}.{missing[0]}")
    extra = sorted(k for k in row if k not in names)
    if extra:
        raise RequestError(f"{path}: unknown field(s) {extra} (the model takes {list(names)})",
                           field=f"{path}.{extra[0]}")

"""libSVM / libFM lines: ``<label> <id>:<value> <id>:<value> ...`` (the CTR sets of the NFM and AFM papers).

Frappe and MovieLens-tag as He & Chua ship them (``frappe.train.libfm``: ``-1 451:1 4149:1 ...``) hold one
feature per field, each with a global id (one id space over all fields). The rank nets read them as fields
``x_f * e[id_f]`` through :class:`recstack.layers.field_inputs.IndexValueFields`, the producer of PaddleRec's
AutoInt id/value layout, so every rank model whose wrapper builds its inputs with
:func:`recstack.rank_inputs.field_inputs` trains on these files from a config, with no model change.

Which field a token belongs to:

* **by position** (default): token ``j`` of a line is field ``j``; every line has ``num_field`` tokens;
* **by a field map** (``hyper_parameters.field_map``: a file of ``<id> <field>`` lines, field in
  ``[0, num_field)``): each token goes to its id's field, in any order; a field appears at most once per line,
  and a field the line lacks gets value 0 (id 0), which contributes nothing (its vector is scaled by 0).

Labels ``-1`` / ``1`` (as the papers' files) or ``0`` / ``1``; ``-1`` is read as 0.

Config keys (``hyper_parameters``): ``num_field``, ``feature_number`` (ids must be below it), ``field_map``
(optional, relative to the config's folder). Blocks: ``feat_idx`` int64 ``(n, F)``, ``feat_value`` float32
``(n, F)``, ``label`` float32 ``(n, 1)`` (those of the ``index_value`` reader).
"""

from __future__ import annotations

import io
from pathlib import Path

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
from recstack.registry import READERS

_COLON_TO_SPACE = bytes.maketrans(b":", b" ")


def read_field_map(path: Path, num_field: int, feature_number: int | None) -> np.ndarray:
    """``field[id]`` from a field-map file (``<id> <field>`` per line; -1 for ids it does not list).

    Raises:
        DataFormatError: naming the file and line (not two numbers, a field outside ``[0, num_field)``, an id
            outside ``[0, feature_number)``, an id listed twice).
    """
    pairs: list[tuple[int, int]] = []
    listed: set[int] = set()
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as err:
        raise DataFormatError(f"hyper_parameters.field_map: cannot read {path}: {err.strerror}") from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        tokens = line.split()
        try:
            if len(tokens) != 2:
                raise ValueError
            pairs.append((parse_int(tokens[0]), parse_int(tokens[1])))
        except ValueError:
            raise bad_line(str(path), line_no, line, "expected '<feature id> <field>' (two integers)") from None
        fid, field = pairs[-1]
        if not 0 <= field < num_field:
            raise bad_line(str(path), line_no, line, f"field {field} outside [0, num_field={num_field})")
        if fid < 0 or (feature_number is not None and fid >= feature_number):
            raise bad_line(str(path), line_no, line, f"feature id {fid} outside [0, feature_number={feature_number})")
        if fid in listed:
            raise bad_line(str(path), line_no, line, f"feature id {fid} is listed more than once")
        listed.add(fid)
    if not pairs:
        raise DataFormatError(f"hyper_parameters.field_map: {path} lists no feature")
    ids = np.array([p[0] for p in pairs], np.int64)
    fields = np.array([p[1] for p in pairs], np.int64)
    table = np.full(int(ids.max()) + 1, -1, np.int64)
    table[ids] = fields
    return table


@READERS.register("libsvm")
class LibSVMReader(BlockReader):
    """Reader of libSVM / libFM lines (see the module docstring)."""

    def __init__(self, file_list, config: Config) -> None:
        super().__init__(file_list, config)
        self.num_field = config.get("hyper_parameters.num_field", type=int)
        self.id_bound = config.get("hyper_parameters.feature_number", None, type=int)
        if self.num_field < 1:
            raise DataFormatError(f"{config.source('hyper_parameters.num_field')}: expected at least one field, "
                                  f"got {self.num_field}")
        map_path = config.get("hyper_parameters.field_map", None, type=str)
        self.field_map = None
        if map_path:
            path = Path(map_path)
            path = path if path.is_absolute() else Path(config.config_dir) / path
            self.field_map = read_field_map(path, self.num_field, self.id_bound)
        f = self.num_field
        self.columns = {"feat_idx": (np.dtype(np.int64), f), "feat_value": (np.dtype(np.float32), f),
                        "label": (np.dtype(np.float32), 1)}
        names = [f"c{i}" for i in range(1 + 2 * f)]
        self._names = names
        types = {names[0]: pa.int64(), **{c: pa.int64() for c in names[1::2]},
                 **{c: pa.float32() for c in names[2::2]}}
        self._read_options = dict(column_names=names, use_threads=False)
        self._parse_options = pacsv.ParseOptions(delimiter=" ", ignore_empty_lines=True)
        self._convert_options = pacsv.ConvertOptions(column_types=types, null_values=[], strings_can_be_null=False)

    def signature(self) -> str:
        mapped = "" if self.field_map is None else f"|map:{hash(self.field_map.tobytes())}"
        return f"{super().signature()}{mapped}"

    def feature_units(self) -> list[FeatureUnit]:
        """Field ``j``'s id and value together, as ``field[j]``."""
        return [FeatureUnit(f"field[{j}]", f"field[{j}]", (("feat_idx", j), ("feat_value", j)))
                for j in range(self.num_field)]

    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        block = self._fast(chunk) if self.field_map is None else None
        if block is None:
            blanked = blank_whitespace_lines(chunk)
            block = self._fast(blanked) if blanked != chunk and self.field_map is None else None
            if block is None:
                block = self._slow(chunk, path, first_line)
        labels = block["label"][:, 0]
        bad = ~np.isin(labels, (-1.0, 0.0, 1.0))
        if bad.any():
            raise row_error(chunk, path, first_line, int(np.argmax(bad)), "label must be -1, 0 or 1")
        block["label"] = np.where(labels < 0, 0.0, labels).astype(np.float32).reshape(-1, 1)
        ids = block["feat_idx"]
        bad = ((ids < 0) | (ids >= self.id_bound)).any(axis=1) if self.id_bound else (ids < 0).any(axis=1)
        if bad.any():
            raise row_error(chunk, path, first_line, int(np.argmax(bad)),
                            "feature id outside [0, feature_number" + (f"={self.id_bound})" if self.id_bound else ")"))
        bad = ~np.isfinite(block["feat_value"]).all(axis=1)
        if bad.any():
            raise row_error(chunk, path, first_line, int(np.argmax(bad)), "value is not finite")
        return block

    def _fast(self, chunk: bytes) -> Block | None:
        """Vectorised parse of lines of exactly ``num_field`` tokens by position; ``None`` otherwise."""
        if may_hold_hex(chunk):
            return None
        try:
            table = pacsv.read_csv(io.BytesIO(chunk.translate(_COLON_TO_SPACE)),
                                   read_options=pacsv.ReadOptions(block_size=len(chunk) + 1, **self._read_options),
                                   parse_options=self._parse_options, convert_options=self._convert_options)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        n = table.num_rows
        # the colons: exactly one per token (a label written '1:0' or a token '3:4:5' changes the count)
        if chunk.count(b":") != self.num_field * n:
            return None
        if not n:
            return {k: np.zeros((0, w), d) for k, (d, w) in self.columns.items()}
        values = [table.column(c).to_numpy() for c in self._names]
        return {"feat_idx": np.column_stack(values[1::2]).astype(np.int64),
                "feat_value": np.column_stack(values[2::2]).astype(np.float32),
                "label": values[0].astype(np.float32).reshape(-1, 1)}

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        """Per-line parse (by position or through the field map), naming the first bad line."""
        f = self.num_field
        labels: list[float] = []
        ids = []
        values = []
        for offset, line in enumerate(chunk.split(b"\n")):
            if not line.strip():
                continue
            line_no = first_line + offset
            tokens = line.split()
            if self.field_map is None and len(tokens) != 1 + f:
                raise bad_line(path, line_no, line, f"expected a label and {f} '<id>:<value>' tokens (num_field={f}), "
                               f"got {len(tokens) - 1} tokens")
            try:
                labels.append(parse_float(tokens[0]))
            except (ValueError, NumberRangeError):
                raise bad_line(path, line_no, line, f"label '{tokens[0].decode('utf-8', 'replace')}' is not a "
                               "number (-1, 0 or 1)") from None
            row_ids = np.zeros(f, np.int64)
            row_values = np.zeros(f, np.float32)
            seen = np.zeros(f, bool)
            for j, token in enumerate(tokens[1:]):
                text = token.decode("utf-8", "replace")
                fid_text, sep, value_text = text.partition(":")
                try:
                    if not sep:
                        raise ValueError
                    fid, value = parse_int(fid_text), parse_float(value_text)
                except NumberRangeError as err:
                    raise bad_line(path, line_no, line, f"token '{text}': {err}") from None
                except ValueError:
                    raise bad_line(path, line_no, line, f"token '{text}' is not '<id>:<value>' (an integer id, a "
                                   "number; doc/custom_reader.md#numbers)") from None
                if self.field_map is None:
                    field = j
                else:
                    field = int(self.field_map[fid]) if 0 <= fid < len(self.field_map) else -1
                    if field < 0:
                        raise bad_line(path, line_no, line, f"feature id {fid} is not in the field map")
                    if seen[field]:
                        raise bad_line(path, line_no, line, f"two features of field {field} (ids "
                                       f"{row_ids[field]} and {fid}); each field holds one feature per line")
                seen[field] = True
                row_ids[field], row_values[field] = fid, value
            ids.append(row_ids)
            values.append(row_values)
        return {"feat_idx": np.asarray(ids, np.int64).reshape(-1, f),
                "feat_value": np.asarray(values, np.float32).reshape(-1, f),
                "label": np.asarray(labels, np.float32).reshape(-1, 1)}

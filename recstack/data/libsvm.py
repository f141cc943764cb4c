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

from pathlib import Path

import numpy as np
import pyarrow as pa

from recstack.config import Config
from recstack.data.base import (
    Block,
    DataFormatError,
    NumberRangeError,
    bad_line,
    may_hold_hex,
    parse_float,
    parse_int,
)
from recstack.data.id_value import IdValueReader
from recstack.registry import READERS


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
class LibSVMReader(IdValueReader):
    """Reader of libSVM / libFM lines (see the module docstring)."""

    LABELS = (-1.0, 0.0, 1.0)
    LABEL_PROBLEM = "label must be -1, 0 or 1"
    VALUE_PROBLEM = "value is not finite"

    def __init__(self, file_list, config: Config) -> None:
        f = config.get("hyper_parameters.num_field", type=int)
        names = [f"c{i}" for i in range(1 + 2 * f)]
        super().__init__(file_list, config, {c: pa.float32() if i and i % 2 == 0 else pa.int64()
                                             for i, c in enumerate(names)}, split_colons=True)
        map_path = config.get("hyper_parameters.field_map", None, type=str)
        self.field_map = None
        if map_path:
            path = Path(map_path)
            path = path if path.is_absolute() else Path(config.config_dir) / path
            self.field_map = read_field_map(path, self.num_field, self.id_bound)

    def signature(self) -> str:
        mapped = "" if self.field_map is None else f"|map:{hash(self.field_map.tobytes())}"
        return f"{super().signature()}{mapped}"

    def _fast_allowed(self) -> bool:
        return self.field_map is None

    def _fast(self, chunk: bytes) -> Block | None:
        """Vectorised parse of lines of exactly ``num_field`` tokens by position; ``None`` otherwise."""
        table = None if may_hold_hex(chunk) else self._table(chunk)
        # the colons: exactly one per token (a label written '1:0' or a token '3:4:5' changes the count)
        if table is None or chunk.count(b":") != self.num_field * table.num_rows:
            return None
        return self._block(table, self._names[1::2], self._names[2::2], self._names[0])

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
        return self._rows(ids, values, labels)

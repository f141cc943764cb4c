"""PaddleRec's Ali-CCP format (ESMM): ``sample_id,click,conversion,field_id:feat_id,...``.

One exposure per line, comma-separated: a sample id (ignored), the click label,
the conversion label (``ctcvr``: clicked *and* bought), then any number of
``field_id:feat_id`` tokens in any order. A field may occur several times (a
multi-valued field, e.g. ``150_14`` with hundreds of values) or not at all. As in
PaddleRec's ``esmm_reader.py``, the 23 fields of :data:`FIELDS` are kept, each as
its first ``max_len`` values in order of appearance, padded with id ``0``; tokens
of other fields are skipped. Example (real line, shortened)::

    1,1,1,210:1,210:2,210:3,216:4,301:5,...,150_14:18,150_14:19,...

Blocks: ``ctr`` and ``ctcvr`` float32 ``(n, 1)``; ``sparse`` int64
``(n, num_field * max_len)``: field ``f``'s values in columns ``f*max_len`` ..
``f*max_len + max_len - 1`` (reshape to ``(n, num_field, max_len)``).

Fast path: the lines of a block are split by pyarrow (``,`` then ``:``), and the
tokens are grouped per (line, field) and truncated with numpy, with no Python
loop over tokens. Blocks the fast path cannot take (whitespace around tokens,
malformed lines) are parsed line by line with the same rules, which name the
file and line of the first bad line. Numbers follow the readers' grammar
(:func:`recstack.data.base.parse_int`, doc/custom_reader.md#numbers) on both paths:
``210:1_2``, ``210:0x1f`` or an id beyond int64 are errors; lines of only whitespace
are blank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.config import Config, ConfigError
from recstack.data.base import (
    Block,
    BlockReader,
    DataFormatError,
    FeatureUnit,
    Malformed,
    NumberRangeError,
    bad_line,
    blank_whitespace_lines,
    may_hold_hex,
    numbered_lines,
    parse_int,
)
from recstack.registry import READERS

#: The 23 Ali-CCP fields PaddleRec's ESMM reads, in its order (user fields, then ad fields).
FIELDS: tuple[str, ...] = ("101", "109_14", "110_14", "127_14", "150_14", "121", "122", "124", "125", "126",
                           "127", "128", "129", "205", "206", "207", "210", "216", "508", "509", "702", "853",
                           "301")
#: The id that pads a field with fewer than ``max_len`` values.
PADDING_ID = 0
_HEADER = "expected '<sample_id>,<click>,<conversion>,<field_id>:<feat_id>,...'"



@READERS.register("aliccp")
class AliCCPReader(BlockReader):
    """Reader of PaddleRec's Ali-CCP (ESMM) CSV.

    Config keys (``hyper_parameters``): ``num_field`` (must be 23, the fields of
    :data:`FIELDS`), ``max_len`` (values kept per field, PaddleRec's default 3),
    ``sparse_feature_number`` (feature ids must be below it; optional).

    Checks: click and conversion are 0 or 1, a conversion only with a click, feature
    ids in ``[0, sparse_feature_number)``; id ``0`` is the padding (a feature with id
    0 is indistinguishable from an absent one, as in PaddleRec, whose table has
    ``padding_idx=0``).

    Args:
        file_list: data files.
        config: the run's config.
    """

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        num_field = config.get("hyper_parameters.num_field", len(FIELDS), type=int)
        if num_field != len(FIELDS):
            raise ConfigError(f"{config.source('hyper_parameters.num_field')}: the Ali-CCP reader keeps the "
                              f"{len(FIELDS)} fields {', '.join(FIELDS)}; num_field must be {len(FIELDS)}, "
                              f"got {num_field}")
        self.max_len = config.get("hyper_parameters.max_len", 3, type=int)
        if self.max_len < 1:
            raise ConfigError(f"{config.source('hyper_parameters.max_len')}: must be at least 1, got {self.max_len}")
        self.id_bound = config.get("hyper_parameters.sparse_feature_number", None, type=int)
        self.fields = FIELDS
        self.columns = {"ctr": (np.dtype(np.float32), 1), "ctcvr": (np.dtype(np.float32), 1),
                        "sparse": (np.dtype(np.int64), len(FIELDS) * self.max_len)}
        self._field_set = pa.array([f.encode() for f in FIELDS], pa.binary())
        self._field_index = {f: i for i, f in enumerate(FIELDS)}

    def signature(self) -> str:
        return f"{super().signature()}|{','.join(self.fields)}|max_len={self.max_len}|ids<{self.id_bound}"

    def feature_units(self) -> list[FeatureUnit]:
        """Each field by its id (``101``, ``150_14``, ...): its ``max_len`` columns of ``sparse`` together."""
        m = self.max_len
        return [FeatureUnit(f, f, tuple(("sparse", i * m + k) for k in range(m))) for i, f in enumerate(self.fields)]

    # ------------------------------------------------------------------ parsing
    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        block = None
        if b" " in chunk or b"\t" in chunk:
            chunk = blank_whitespace_lines(chunk)  # lines of only whitespace are blank (same line numbers)
        # (pyarrow's integer cast takes 0x1f, the grammar does not: such a chunk takes the per-line parse)
        if b" " not in chunk and b"\t" not in chunk and not may_hold_hex(chunk):
            try:
                block, ids, id_rows, locate = self._fast(chunk, first_line)
            except (Malformed, pa.ArrowInvalid, pa.ArrowTypeError):
                block = None
        if block is None:
            lines, numbers = numbered_lines(chunk, first_line)
            block, ids, id_rows = self._slow(lines, numbers, path)
            locate = lambda row: (numbers[row], lines[row])  # noqa: E731
        self._check_values(block, ids, id_rows, locate, path)
        return block

    def _fast(self, chunk: bytes, first_line: int) -> tuple[Block, np.ndarray, np.ndarray, Callable]:
        """Vectorised parse; raises :class:`Malformed` (or an Arrow error) when a line needs the slow path.

        Returns the block; the ids of all kept-field tokens (before truncation) with their
        rows, for the range check; and ``row -> (line number, line)`` for error messages.
        """
        width, num_fields = self.max_len, len(self.fields)
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")  # same lines, same line numbers
        lines = pc.list_flatten(pc.split_pattern(pa.array([chunk], pa.binary()), "\n"))
        line_index = np.flatnonzero(pc.binary_length(lines).to_numpy() > 0)
        lines = lines.take(pa.array(line_index))
        n = len(lines)
        tokens = pc.split_pattern(lines, ",")
        counts = pc.list_value_length(tokens).to_numpy()
        if (counts < 3).any():
            raise Malformed
        flat = pc.list_flatten(tokens)
        starts = tokens.offsets.to_numpy()[:-1].astype(np.int64)
        click = pc.cast(flat.take(pa.array(starts + 1)), pa.int64()).to_numpy()
        conversion = pc.cast(flat.take(pa.array(starts + 2)), pa.int64()).to_numpy()
        is_feature = np.ones(len(flat), dtype=bool)
        for k in range(3):
            is_feature[starts + k] = False
        rows = np.repeat(np.arange(n, dtype=np.int64), counts)[is_feature]
        pairs = pc.split_pattern(flat.filter(pa.array(is_feature)), ":")
        if len(pairs) and (pc.list_value_length(pairs).to_numpy() != 2).any():
            raise Malformed
        field = pc.fill_null(pc.index_in(pc.list_element(pairs, 0), value_set=self._field_set), -1).to_numpy()
        known = field >= 0
        ids = pc.cast(pc.list_element(pairs, 1).filter(pa.array(known)), pa.int64()).to_numpy()
        rows, field = rows[known], field[known].astype(np.int64)
        # rank of each token within its (line, field) group, in order of appearance
        key = rows * num_fields + field
        # (a stable sort of 16-bit keys is a radix sort: the usual case of long real lines, ~500 per chunk)
        order = np.argsort(key.astype(np.uint16) if n * num_fields <= 1 << 16 else key, kind="stable")
        sorted_key = key[order]
        position = np.arange(len(key))
        group_start = np.r_[True, sorted_key[1:] != sorted_key[:-1]] if len(key) else np.zeros(0, bool)
        rank = position - np.maximum.accumulate(np.where(group_start, position, 0))
        keep = rank < width
        sparse = np.full(n * num_fields * width, PADDING_ID, dtype=np.int64)
        chosen = order[keep]
        sparse[key[chosen] * width + rank[keep]] = ids[chosen]
        block = {"ctr": click.astype(np.float32).reshape(-1, 1),
                 "ctcvr": conversion.astype(np.float32).reshape(-1, 1),
                 "sparse": sparse.reshape(n, num_fields * width)}
        return block, ids, rows, lambda row: (first_line + int(line_index[row]), lines[row].as_py())

    def _slow(self, lines: list[bytes], numbers: list[int], path: str) -> tuple[Block, np.ndarray, np.ndarray]:
        """Per-line parse with PaddleRec's rules; raises naming the first malformed line."""
        width, num_fields = self.max_len, len(self.fields)
        clicks, conversions = [], []
        sparse = np.full((len(lines), num_fields * width), PADDING_ID, dtype=np.int64)
        all_ids: list[int] = []
        all_rows: list[int] = []
        for row, (line, line_no) in enumerate(zip(lines, numbers)):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise bad_line(path, line_no, line, "not valid UTF-8 text") from None
            tokens = [t.strip() for t in text.strip().split(",")]
            if len(tokens) < 3:
                raise bad_line(path, line_no, line, f"{_HEADER}; got {len(tokens)} comma-separated field(s)")
            labels = []
            for name, token in (("click", tokens[1]), ("conversion", tokens[2])):
                try:
                    labels.append(parse_int(token))
                except ValueError:
                    raise bad_line(path, line_no, line, f"{name} label (column {len(labels) + 2}) is not an "
                                   f"integer: {token!r}") from None
            clicks.append(labels[0])
            conversions.append(labels[1])
            filled = [0] * num_fields
            for column, token in enumerate(tokens[3:], start=4):
                field, sep, value = token.partition(":")
                if not sep or ":" in value:
                    raise bad_line(path, line_no, line, f"column {column} is not <field_id>:<feat_id>: {token!r}")
                index = self._field_index.get(field)
                if index is None:
                    continue  # a field ESMM does not read (PaddleRec skips these too)
                try:
                    feat = parse_int(value)
                except NumberRangeError as err:
                    raise bad_line(path, line_no, line, f"feature id of column {column}: {err}") from None
                except ValueError:
                    raise bad_line(path, line_no, line, f"feature id of column {column} is not an integer: "
                                   f"{token!r}") from None
                all_ids.append(feat)
                all_rows.append(row)
                if filled[index] < width:
                    sparse[row, index * width + filled[index]] = feat
                    filled[index] += 1
        block = {"ctr": np.asarray(clicks, np.float32).reshape(-1, 1),
                 "ctcvr": np.asarray(conversions, np.float32).reshape(-1, 1), "sparse": sparse}
        return block, np.asarray(all_ids, np.int64), np.asarray(all_rows, np.int64)

    def _check_values(self, block: Block, ids: np.ndarray, id_rows: np.ndarray,
                      locate: Callable[[int], tuple[int, bytes]], path: str) -> None:
        """Labels 0/1, a conversion only after a click, feature ids in range; names the first bad line."""
        click, conversion = block["ctr"][:, 0], block["ctcvr"][:, 0]
        bound = f"[0, sparse_feature_number={self.id_bound})" if self.id_bound else "[0, ...)"
        bad_ids = (ids < 0) | (ids >= self.id_bound) if self.id_bound else ids < 0
        checks = [
            (np.flatnonzero(~np.isin(click, (0.0, 1.0)))[:1], "click label (column 2) must be 0 or 1"),
            (np.flatnonzero(~np.isin(conversion, (0.0, 1.0)))[:1], "conversion label (column 3) must be 0 or 1"),
            (np.flatnonzero(conversion > click)[:1],
             "conversion (column 3) is 1 but click (column 2) is 0: a conversion needs a click"),
            (id_rows[bad_ids][:1], f"feature id outside {bound}"),
        ]
        found = [(int(rows[0]), problem) for rows, problem in checks if len(rows)]
        if found:
            row, problem = min(found, key=lambda item: item[0])
            raise bad_line(path, *locate(row), problem)


__all__ = ["AliCCPReader", "DataFormatError", "FIELDS", "PADDING_ID"]

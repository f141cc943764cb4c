"""PaddleRec's DIN format (Amazon Electronics): ``hist_item_ids;hist_cat_ids;target_item;target_cat;label``.

One impression per line, five ``;``-separated fields: the user's behaviour history
(item ids, space-separated, oldest first), the categories of those items (as many),
the candidate item, its category and the click label (0/1). Real line
(``models/rank/din/data/train_data/sample_data.txt`` of PaddleRec)::

    3647 4342 6855 3805;281 463 558 674;4206;463;1

recstack extension: an optional sixth field, an integer user id
(``...;target_cat;label;user_id``), which per-user metrics (GAUC) need; PaddleRec's
5-field lines stay valid (their user is -1, "unknown", and GAUC skips them). Files
may mix both.

Histories have any length (also 0). A block holds them unpadded
(:class:`recstack.data.base.RaggedArray`) with their lengths beside them; the loader
pads each batch to its own longest history (see :mod:`recstack.data.loader`), so
nothing is padded to a global maximum, and no temporary file is written anywhere
(PaddleRec's DIN reader scans every file first to write the global maximum length
into ``tmp.txt`` in the working directory).

Blocks: ``hist_item``, ``hist_cat`` int64 :class:`~recstack.data.base.RaggedArray`
(batches: ``(B, L)``, 0-padded, ``L`` the batch's longest history), ``hist_len`` int64
``(n, 1)``, ``target_item``, ``target_cat`` int64 ``(n, 1)``, ``label`` float32 ``(n, 1)``,
``user`` int64 ``(n, 1)`` (-1 without a user field).

Fast path: pyarrow splits and converts the whole chunk (lines, ``;``, whitespace)
with no Python loop over lines; a chunk it cannot take is parsed line by line, only
to name the file and line of the first bad one. Numbers follow the readers' grammar
(:func:`recstack.data.base.parse_int`, doc/custom_reader.md#numbers) on both paths:
``1_2``, ``0x1f`` or an id beyond int64 are errors; lines of only (ASCII) whitespace
are blank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.config import Config
from recstack.data.base import (
    Block,
    BlockReader,
    DataFormatError,
    FeatureUnit,
    Malformed,
    NumberRangeError,
    RaggedArray,
    bad_line,
    may_hold_hex,
    parse_float,
    parse_int,
    row_error,
)
from recstack.registry import READERS

FIELDS = ("hist_item_ids", "hist_cat_ids", "target_item", "target_cat", "label")
_EXPECTED = ("expected 5 ';'-separated fields hist_item_ids;hist_cat_ids;target_item;target_cat;label "
             "(or 6, with a user id)")


def text_lines(chunk: bytes) -> pa.Array:
    """The chunk's non-blank lines, trimmed of ASCII whitespace, as an Arrow string array (the fast paths' start).

    Raises:
        Malformed: the chunk may hold a hexadecimal number (pyarrow's integer cast takes ``0x1f``, the readers'
            grammar does not).
        pyarrow.ArrowInvalid: the chunk is not UTF-8.
    """
    if may_hold_hex(chunk):
        raise Malformed
    text = pa.array([chunk], pa.binary()).cast(pa.string())  # checks UTF-8
    lines = pc.ascii_trim_whitespace(pc.list_flatten(pc.split_pattern(text, "\n")))
    return lines.filter(pc.greater(pc.utf8_length(lines), 0))


def rows_out_of_range(ids: np.ndarray | RaggedArray, bound: int | None, n: int) -> np.ndarray:
    """``(n,)`` bool: the rows holding an id below 0 or at / above ``bound`` (a ``(n, 1)`` column or the values of a
    :class:`~recstack.data.base.RaggedArray`)."""
    values = ids.values if isinstance(ids, RaggedArray) else ids[:, 0]
    bad = (values < 0) if bound is None else (values < 0) | (values >= bound)
    if not isinstance(ids, RaggedArray):
        return bad
    rows = np.zeros(n, dtype=bool)
    rows[np.repeat(np.arange(n), ids.lengths)[bad]] = True
    return rows


def raise_first_bad_row(checks: list[tuple[np.ndarray, str]], chunk: bytes, path: str, first_line: int) -> None:
    """Raise the error of the earliest row any check flags (``(n,) bool, problem`` pairs), naming its line."""
    found = [(int(np.argmax(bad)), problem) for bad, problem in checks if len(bad) and bad.any()]
    if found:
        row, problem = min(found, key=lambda item: item[0])
        raise row_error(chunk, path, first_line, row, problem)


class BehaviourLineReader(BlockReader):
    """Base of the behaviour-sequence readers (DIN's and BST's formats): a vectorised :meth:`_fast` parse of the
    whole chunk, the per-line :meth:`_slow` parse when it raises :class:`Malformed` or an Arrow error (only to
    name the first bad line), then :meth:`_check_values`."""

    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        try:
            block = self._fast(chunk)
        except (Malformed, pa.ArrowInvalid, pa.ArrowTypeError):
            block = self._slow(chunk, path, first_line)
        self._check_values(block, chunk, path, first_line)
        return block

    def _fast(self, chunk: bytes) -> Block:
        raise NotImplementedError

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        raise NotImplementedError

    def _check_values(self, block: Block, chunk: bytes, path: str, first_line: int) -> None:
        raise NotImplementedError


@READERS.register("din")
class DINReader(BehaviourLineReader):
    """Reader of PaddleRec's DIN (Amazon Electronics) format, with an optional user id field.

    Config keys (``hyper_parameters``, optional here): ``item_count`` and ``cat_count``:
    item and category ids must lie in ``[0, item_count)`` / ``[0, cat_count)``.

    Checks, naming file and line: the number of fields, as many categories as items in
    the history, integer ids in range, a 0/1 label, a non-negative user id.

    Args:
        file_list: data files.
        config: the run's config.
    """

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        self.item_count = config.get("hyper_parameters.item_count", None, type=int)
        self.cat_count = config.get("hyper_parameters.cat_count", None, type=int)
        i64, f32 = np.dtype(np.int64), np.dtype(np.float32)
        self.columns = {"hist_item": (i64, 0), "hist_cat": (i64, 0), "hist_len": (i64, 1),
                        "target_item": (i64, 1), "target_cat": (i64, 1), "label": (f32, 1), "user": (i64, 1)}

    def signature(self) -> str:
        return f"{super().signature()}|items<{self.item_count}|cats<{self.cat_count}"

    def feature_units(self) -> list[FeatureUnit]:
        """``history`` (items, categories and length together: a row's categories belong to its items) and the
        candidate's ``target_item`` and ``target_cat`` (group ``target``)."""
        return [FeatureUnit("history", "history", (("hist_item", None), ("hist_cat", None), ("hist_len", None))),
                FeatureUnit("target_item", "target", (("target_item", None),)),
                FeatureUnit("target_cat", "target", (("target_cat", None),))]

    # ------------------------------------------------------------------ parsing
    def _fast(self, chunk: bytes) -> Block:
        """Vectorised parse of a chunk; raises :class:`Malformed` or an Arrow error when a line is bad."""
        lines = text_lines(chunk)
        n = len(lines)
        fields = pc.split_pattern(lines, ";")
        counts = pc.list_value_length(fields).to_numpy()
        if n and not np.isin(counts, (5, 6)).all():
            raise Malformed
        flat = pc.list_flatten(fields)
        starts = fields.offsets.to_numpy()[:-1].astype(np.int64) - fields.offsets[0].as_py()

        def field(k: int, rows: np.ndarray | None = None) -> pa.Array:
            return flat.take(pa.array(starts[rows] + k if rows is not None else starts + k))

        def ints(array: pa.Array) -> np.ndarray:
            # a writable copy (Arrow's buffers are read-only; torch.from_numpy warns about those)
            return np.array(pc.cast(pc.utf8_trim(array, " \t"), pa.int64()).to_numpy(zero_copy_only=False))

        hist = pc.ascii_split_whitespace(field(0))
        cats = pc.ascii_split_whitespace(field(1))
        lengths = pc.list_value_length(hist).to_numpy()
        if n and (lengths != pc.list_value_length(cats).to_numpy()).any():
            raise Malformed
        user = np.full(n, -1, dtype=np.int64)
        has_user = counts == 6
        if has_user.any():
            user[has_user] = ints(field(5, np.flatnonzero(has_user)))
        label = pc.cast(pc.utf8_trim(field(4), " \t"), pa.float64()).to_numpy(zero_copy_only=False)
        return {
            "hist_item": RaggedArray.from_lengths(ints(pc.list_flatten(hist)), lengths),
            "hist_cat": RaggedArray.from_lengths(ints(pc.list_flatten(cats)), lengths),
            "hist_len": lengths.astype(np.int64).reshape(-1, 1),
            "target_item": ints(field(2)).reshape(-1, 1),
            "target_cat": ints(field(3)).reshape(-1, 1),
            "label": label.astype(np.float32).reshape(-1, 1),
            "user": user.reshape(-1, 1),
        }

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        """Per-line parse with the same rules; raises naming the first malformed line."""
        rows: dict[str, list] = {k: [] for k in ("hist_item", "hist_cat", "target_item", "target_cat", "label", "user")}
        for offset, raw in enumerate(chunk.split(b"\n")):
            if not raw.strip():
                continue
            line_no = first_line + offset
            try:
                parts = raw.strip().decode("utf-8").split(";")
            except UnicodeDecodeError:
                raise bad_line(path, line_no, raw, "not valid UTF-8 text") from None
            if len(parts) not in (5, 6):
                raise bad_line(path, line_no, raw, f"{_EXPECTED}; got {len(parts)}")
            names = FIELDS + ("user_id",)
            values = []
            for k, part in enumerate(parts):
                try:
                    if k < 2:
                        values.append([parse_int(t) for t in part.encode().split()])
                    elif k == 4:
                        values.append(parse_float(part))
                    else:
                        values.append(parse_int(part))
                except NumberRangeError as err:
                    raise bad_line(path, line_no, raw, f"field {k + 1} ({names[k]}): {err}") from None
                except ValueError:
                    kind = "a number" if k == 4 else "space-separated integers" if k < 2 else "an integer"
                    raise bad_line(path, line_no, raw, f"field {k + 1} ({names[k]}) is not {kind}: {part!r}") from None
            if len(values[0]) != len(values[1]):
                raise bad_line(path, line_no, raw, f"the history has {len(values[0])} item ids but "
                               f"{len(values[1])} category ids")
            for key, value in zip(rows, values + ([] if len(values) == 6 else [-1])):
                rows[key].append(value)
        lengths = np.array([len(h) for h in rows["hist_item"]], dtype=np.int64)
        column = lambda key, dtype: np.array(rows[key], dtype=dtype).reshape(-1, 1)  # noqa: E731
        return {"hist_item": RaggedArray.from_rows(rows["hist_item"]),
                "hist_cat": RaggedArray.from_rows(rows["hist_cat"]),
                "hist_len": lengths.reshape(-1, 1), "target_item": column("target_item", np.int64),
                "target_cat": column("target_cat", np.int64), "label": column("label", np.float32),
                "user": column("user", np.int64)}

    def _check_values(self, block: Block, chunk: bytes, path: str, first_line: int) -> None:
        """Labels 0/1, ids in range, user ids >= 0; names the first bad line."""
        n = len(block["label"])
        items = f"[0, item_count={self.item_count})" if self.item_count else "[0, ...)"
        cats = f"[0, cat_count={self.cat_count})" if self.cat_count else "[0, ...)"
        checks = [
            (~np.isin(block["label"][:, 0], (0.0, 1.0)), "label (field 5) must be 0 or 1"),
            (rows_out_of_range(block["hist_item"], self.item_count, n), f"a history item id outside {items}"),
            (rows_out_of_range(block["hist_cat"], self.cat_count, n), f"a history category id outside {cats}"),
            (rows_out_of_range(block["target_item"], self.item_count, n), f"target_item outside {items}"),
            (rows_out_of_range(block["target_cat"], self.cat_count, n), f"target_cat outside {cats}"),
            (block["user"][:, 0] < -1, "user id (field 6) must be >= 0 (or -1: unknown)"),
        ]
        raise_first_bad_row(checks, chunk, path, first_line)


__all__ = ["DINReader", "DataFormatError", "FIELDS"]

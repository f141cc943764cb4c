"""Behaviour sequences with positions, for BST: PaddleRec's BST slot format, and DIN's format with positions.

**PaddleRec's BST format** (``models/rank/bst/data/train_data/paddle_train.txt`` of PaddleRec, written by its
``build_dataset.py``): one impression per line, whitespace-separated ``slot:value`` tokens, a sequence slot
repeated once per behaviour (oldest first)::

    userid:103944 history:17704 history:37473 cate:6 cate:770 position:31 position:31 target:53346 \
target_cate:347 target_position:0 label:0

``position`` is the behaviour's time gap to the impression in days (capped at 5000 by PaddleRec's script),
``target_position`` the candidate's (0). Rules (:class:`BSTReader`): the slot names are exactly PaddleRec's
(``label userid history cate position target target_cate target_position``; any other name is an error,
where PaddleRec's reader skips it silently); ``history``, ``cate`` and ``position`` appear equally often
(0 times: an empty history); ``target``, ``target_cate`` and ``label`` exactly once; ``userid`` and
``target_position`` at most once (absent: user -1, "unknown", which GAUC skips; position 0); values are
integers of the readers' grammar (:func:`recstack.data.base.parse_int`), labels 0 or 1. Tokens may come in
any order; a sequence slot's values keep their order in the line.

**DIN's format with positions** (:class:`DINPositionReader`): :class:`recstack.data.din.DINReader`'s lines
unchanged, plus the position PaddleRec's BST data would carry, here the *reverse index*: the most recent
behaviour is at position 1, the one before at 2, ..., the oldest at ``L`` (capped at ``position_count - 1``);
the candidate at 0. The index depends on the sample's own history only, never on its batch's padding.

Both readers give the same blocks: ``hist_item``, ``hist_cat``, ``hist_pos`` int64
:class:`~recstack.data.base.RaggedArray` (batches ``(B, L)``, 0-padded to the batch's longest history),
``hist_len``, ``target_item``, ``target_cat``, ``target_pos``, ``user`` int64 ``(n, 1)`` and ``label``
float32 ``(n, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.config import Config
from recstack.data.base import (
    Block,
    DataFormatError,
    FeatureUnit,
    NumberRangeError,
    RaggedArray,
    bad_line,
    parse_int,
)
from recstack.data.din import (
    BehaviourLineReader,
    DINReader,
    Malformed,
    raise_first_bad_row,
    rows_out_of_range,
    text_lines,
)
from recstack.registry import READERS

#: PaddleRec's slot names, in its reader's order
SLOTS = ("label", "userid", "history", "cate", "position", "target", "target_cate", "target_position")
_SEQUENCE = ("history", "cate", "position")
_ONCE = ("target", "target_cate", "label")
_OPTIONAL = {"userid": -1, "target_position": 0}  # at most once; the value when absent
_COLUMNS = {"hist_item": "history", "hist_cat": "cate", "hist_pos": "position", "target_item": "target",
            "target_cat": "target_cate", "target_pos": "target_position", "user": "userid", "label": "label"}


def _block_columns() -> dict[str, tuple[np.dtype, int]]:
    i64, f32 = np.dtype(np.int64), np.dtype(np.float32)
    return {"hist_item": (i64, 0), "hist_cat": (i64, 0), "hist_pos": (i64, 0), "hist_len": (i64, 1),
            "target_item": (i64, 1), "target_cat": (i64, 1), "target_pos": (i64, 1), "label": (f32, 1),
            "user": (i64, 1)}


def _feature_units() -> list[FeatureUnit]:
    """``history`` (items, categories, positions and length permuted together) and the candidate's features."""
    return [FeatureUnit("history", "history", (("hist_item", None), ("hist_cat", None), ("hist_pos", None),
                                               ("hist_len", None))),
            FeatureUnit("target_item", "target", (("target_item", None),)),
            FeatureUnit("target_cat", "target", (("target_cat", None),)),
            FeatureUnit("target_pos", "target", (("target_pos", None),))]


@READERS.register("bst")
class BSTReader(BehaviourLineReader):
    """Reader of PaddleRec's BST format (``slot:value`` tokens; module docstring).

    Config keys (``hyper_parameters``, optional here): ``item_count``, ``cat_count``, ``position_count``: ids
    and positions must lie in ``[0, count)``.

    Errors name the file and line: an unknown slot, a token without ``:``, a non-integer value, unequal
    counts of ``history`` / ``cate`` / ``position``, a missing or repeated ``target`` / ``target_cate`` /
    ``label``, a repeated ``userid`` / ``target_position``, a label other than 0/1, an id out of range.

    Args:
        file_list: data files.
        config: the run's config.
    """

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        self.bounds = {key: config.get(f"hyper_parameters.{key}", None, type=int)
                       for key in ("item_count", "cat_count", "position_count")}
        self.columns = _block_columns()

    def signature(self) -> str:
        return f"{super().signature()}|{sorted(self.bounds.items())}"

    def feature_units(self) -> list[FeatureUnit]:
        return _feature_units()

    # ------------------------------------------------------------------ parsing
    def _fast(self, chunk: bytes) -> Block:
        """Vectorised parse of a chunk; raises :class:`~recstack.data.base.Malformed` or an Arrow error when a line
        is bad."""
        lines = text_lines(chunk)
        n = len(lines)
        tokens = pc.ascii_split_whitespace(lines)
        offsets = tokens.offsets.to_numpy().astype(np.int64)
        row = np.repeat(np.arange(n), np.diff(offsets))  # each token's line
        parts = pc.split_pattern(pc.list_flatten(tokens), ":", max_splits=1)
        if len(row) and (pc.list_value_length(parts).to_numpy(zero_copy_only=False) != 2).any():
            raise Malformed
        names, raw = pc.list_element(parts, 0), pc.list_element(parts, 1)
        code = pc.index_in(names, value_set=pa.array(SLOTS))
        if code.null_count or pc.any(pc.invert(pc.match_substring_regex(raw, r"^-?[0-9]+$"))).as_py():
            raise Malformed  # an unknown slot, or a value outside the grammar (1_2, +4, 1.0)
        code = code.to_numpy(zero_copy_only=False).astype(np.int64)
        values = np.array(pc.cast(raw, pa.int64()).to_numpy(zero_copy_only=False))
        counts = np.bincount(row * len(SLOTS) + code, minlength=n * len(SLOTS)).reshape(n, len(SLOTS))
        count = {slot: counts[:, k] for k, slot in enumerate(SLOTS)}
        lengths = count["history"]
        if n and ((count["cate"] != lengths).any() or (count["position"] != lengths).any()
                  or any((count[s] != 1).any() for s in _ONCE) or any((count[s] > 1).any() for s in _OPTIONAL)):
            raise Malformed
        block: Block = {}
        for key, slot in _COLUMNS.items():
            taken = code == SLOTS.index(slot)
            if slot in _SEQUENCE:  # tokens are in line order, so each line's values stay together, in order
                block[key] = RaggedArray.from_lengths(values[taken], lengths)
            else:
                column = np.full(n, _OPTIONAL.get(slot, 0), dtype=np.int64)
                column[row[taken]] = values[taken]
                block[key] = column.reshape(-1, 1)
        block["hist_len"] = lengths.astype(np.int64).reshape(-1, 1)
        block["label"] = block["label"].astype(np.float32)
        return block

    def _slow(self, chunk: bytes, path: str, first_line: int) -> Block:
        """Per-line parse with the same rules; raises naming the first malformed line."""
        rows: dict[str, list] = {slot: [] for slot in SLOTS}
        for offset, raw in enumerate(chunk.split(b"\n")):
            if not raw.strip():
                continue
            line_no = first_line + offset
            try:
                tokens = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise bad_line(path, line_no, raw, "not valid UTF-8 text") from None
            found: dict[str, list[int]] = {slot: [] for slot in SLOTS}
            for token in tokens:
                name, colon, value = token.partition(":")
                if not colon:
                    raise bad_line(path, line_no, raw, f"expected slot:value tokens, got {token!r}")
                if name not in found:
                    raise bad_line(path, line_no, raw, f"unknown slot {name!r} (expected one of {', '.join(SLOTS)})")
                try:
                    found[name].append(parse_int(value))
                except NumberRangeError as err:
                    raise bad_line(path, line_no, raw, f"slot {name}: {err}") from None
                except ValueError:
                    raise bad_line(path, line_no, raw, f"slot {name} is not an integer: {value!r}") from None
            sizes = [len(found[s]) for s in _SEQUENCE]
            if len(set(sizes)) != 1:
                raise bad_line(path, line_no, raw, "history, cate and position must appear equally often, got "
                               + ", ".join(f"{n} {s}" for n, s in zip(sizes, _SEQUENCE)))
            for slot in _ONCE:
                if len(found[slot]) != 1:
                    raise bad_line(path, line_no, raw, f"expected exactly one {slot}:<int>, got {len(found[slot])}")
            for slot, default in _OPTIONAL.items():
                if len(found[slot]) > 1:
                    raise bad_line(path, line_no, raw, f"expected at most one {slot}:<int>, got {len(found[slot])}")
                if not found[slot]:
                    found[slot].append(default)
            for slot in SLOTS:
                rows[slot].append(found[slot] if slot in _SEQUENCE else found[slot][0])
        block: Block = {}
        for key, slot in _COLUMNS.items():
            block[key] = (RaggedArray.from_rows(rows[slot]) if slot in _SEQUENCE
                          else np.array(rows[slot], dtype=np.int64).reshape(-1, 1))
        block["hist_len"] = np.array([len(h) for h in rows["history"]], dtype=np.int64).reshape(-1, 1)
        block["label"] = block["label"].astype(np.float32)
        return block

    def _check_values(self, block: Block, chunk: bytes, path: str, first_line: int) -> None:
        """Labels 0/1, ids and positions in range, user ids >= -1; names the first bad line."""
        n = len(block["label"])
        checks = [(~np.isin(block["label"][:, 0], (0.0, 1.0)), "label must be 0 or 1"),
                  (block["user"][:, 0] < -1, "userid must be >= 0")]
        for keys, bound in ((("hist_item", "target_item"), "item_count"), (("hist_cat", "target_cat"), "cat_count"),
                            (("hist_pos", "target_pos"), "position_count")):
            limit = self.bounds[bound]
            for key in keys:
                checks.append((rows_out_of_range(block[key], limit, n),
                               f"{_COLUMNS[key]} outside [0, {f'{bound}={limit}' if limit else '...'})"))
        raise_first_bad_row(checks, chunk, path, first_line)


def reverse_positions(lengths: np.ndarray, position_count: int | None = None) -> np.ndarray:
    """The flat reverse index of histories of ``lengths``: ``L, L-1, ..., 1`` per row (the most recent
    behaviour, last in the row, at 1), capped at ``position_count - 1``."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    starts = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    index = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)  # 0 .. L-1 within each row
    positions = np.repeat(lengths, lengths) - index
    return positions if position_count is None else np.minimum(positions, position_count - 1)


@READERS.register("din_position")
class DINPositionReader(DINReader):
    """:class:`recstack.data.din.DINReader` plus BST's positions: the reverse index (module docstring).

    Config keys (``hyper_parameters``): those of :class:`~recstack.data.din.DINReader`, and ``position_count``
    (optional; positions are capped at ``position_count - 1``).

    Args:
        file_list: data files.
        config: the run's config.
    """

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        self.position_count = config.get("hyper_parameters.position_count", None, type=int)
        if self.position_count is not None and self.position_count < 2:
            raise DataFormatError(f"hyper_parameters.position_count must be >= 2, got {self.position_count}")
        self.columns = _block_columns()

    def signature(self) -> str:
        return f"{super().signature()}|positions<{self.position_count}"

    def feature_units(self) -> list[FeatureUnit]:
        return _feature_units()

    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        block = super().parse_block(chunk, path, first_line)
        lengths = block["hist_len"][:, 0]
        block["hist_pos"] = RaggedArray.from_lengths(reverse_positions(lengths, self.position_count), lengths)
        block["target_pos"] = np.zeros((len(lengths), 1), dtype=np.int64)
        return block


__all__ = ["BSTReader", "DINPositionReader", "SLOTS", "reverse_positions"]

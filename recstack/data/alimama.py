"""PaddleRec's Alimama format (DMR): 267 comma-separated numbers per line.

The preprocessed Ali_Display_Ad_Click data of PaddleRec's ``datasets/Ali_Display_Ad_Click`` (and its
``models/rank/dmr/data/sample_data``): one ad impression per line, the user's last 50 behaviours before it
(oldest first, left-padded with 0), the user profile, the ad and the click. Columns (0-based), as PaddleRec's
DMR ``net.py`` slices them:

=========  ====================  ==========================================================
0-49       ``btag_his``          behaviour type of each behaviour (pv / cart / fav / buy: 1-4; 0 pads)
50-99      ``cate_his``          category of each behaviour's item
100-149    ``brand_his``         brand of each behaviour's item
150-199    ``mask``              1 at a real behaviour, 0 at padding
200-249    ``match_mask``        1 where a behaviour may be predicted from the ones before it (the auxiliary
                                 match loss reads column 248, the second last behaviour)
250-258    ``uid``, ``cms_segid``, ``cms_group_id``, ``final_gender_code``, ``age_level``, ``pvalue_level``,
           ``shopping_level``, ``occupation``, ``new_user_class_level`` (user_profile.csv)
259-263    ``adgroup_id`` (PaddleRec's ``mid``), ``cate_id``, ``campaign_id``, ``customer``, ``brand``
           (ad_feature.csv)
264        ``price``             a float (PaddleRec's preprocessing scales it)
265        ``pid``               the ad position (0/1)
266        ``label``             the click (0/1)
=========  ====================  ==========================================================

As in PaddleRec's ``alimama_reader.py`` a line is stripped of surrounding whitespace, and an empty field or
``NULL`` (any case) reads as 0 (the raw profile table leaves fields such as ``pvalue_level`` empty). Unlike
PaddleRec, which casts every value through float32 to int64, values are checked: ids and masks must be
non-negative integers (masks and the label 0 or 1), ids below the table sizes the config gives
(``hyper_parameters.<field>_size``, PaddleRec's keys), the price finite. A bad line raises
:class:`~recstack.data.base.DataFormatError` naming the file, the line and the column.

Blocks: each name above is one array: the five histories ``(n, 50)`` (ids int64, masks float32), the other ids
int64 ``(n, 1)``, ``price`` and ``label`` float32 ``(n, 1)``.

Fast path: pyarrow's CSV parser on the whole chunk (float64, exact for ids below 2^53); chunks it cannot take
(whitespace, a ``NULL`` in another case, a malformed line) are parsed line by line with the same rules.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recstack.config import Config
from recstack.data.base import (
    Block,
    BlockReader,
    DataFormatError,
    FeatureUnit,
    bad_line,
    may_hold_hex,
    parse_float,
    row_error,
)
from recstack.registry import READERS

#: behaviours per line (PaddleRec's ``history_length``)
HISTORY_LENGTH = 50
#: ``(name, first column, width, kind)``; kind: ``id`` (int64 ids), ``mask`` (0/1 float32), ``float``, ``label``
LAYOUT: tuple[tuple[str, int, int, str], ...] = (
    ("btag_his", 0, HISTORY_LENGTH, "id"),
    ("cate_his", 50, HISTORY_LENGTH, "id"),
    ("brand_his", 100, HISTORY_LENGTH, "id"),
    ("mask", 150, HISTORY_LENGTH, "mask"),
    ("match_mask", 200, HISTORY_LENGTH, "mask"),
    ("uid", 250, 1, "id"),
    ("cms_segid", 251, 1, "id"),
    ("cms_group_id", 252, 1, "id"),
    ("final_gender_code", 253, 1, "id"),
    ("age_level", 254, 1, "id"),
    ("pvalue_level", 255, 1, "id"),
    ("shopping_level", 256, 1, "id"),
    ("occupation", 257, 1, "id"),
    ("new_user_class_level", 258, 1, "id"),
    ("adgroup_id", 259, 1, "id"),
    ("cate_id", 260, 1, "id"),
    ("campaign_id", 261, 1, "id"),
    ("customer", 262, 1, "id"),
    ("brand", 263, 1, "id"),
    ("price", 264, 1, "float"),
    ("pid", 265, 1, "id"),
    ("label", 266, 1, "label"),
)
#: values per line
WIDTH = 267
#: the ``hyper_parameters`` key bounding each id field (PaddleRec's DMR keys): ids lie in ``[0, size)``
SIZE_KEYS = {"btag_his": "btag_size", "cate_his": "cate_size", "brand_his": "brand_size", "uid": "user_size",
             "cms_segid": "cms_segid_size", "cms_group_id": "cms_group_id_size",
             "final_gender_code": "final_gender_code_size", "age_level": "age_level_size",
             "pvalue_level": "pvalue_level_size", "shopping_level": "shopping_level_size",
             "occupation": "occupation_size", "new_user_class_level": "new_user_class_level_size",
             "adgroup_id": "adgroup_id_size", "cate_id": "cate_size", "campaign_id": "campaign_id_size",
             "customer": "customer_size", "brand": "brand_size", "pid": "pid_size"}
_NULLS = ["", "NULL", "null", "Null"]  # the fast path's; the line-by-line parse takes any case


def _column_name(column: int) -> str:
    for name, first, width, _ in LAYOUT:
        if first <= column < first + width:
            return f"{name}[{column - first}]" if width > 1 else name
    return "?"


@READERS.register("alimama")
class AlimamaReader(BlockReader):
    """Reader of PaddleRec's Alimama (DMR) CSV, 267 values per line (see the module docstring).

    Config keys (``hyper_parameters``, optional): the table sizes of :data:`SIZE_KEYS`; an id at or above its
    table's size is an error naming the line.

    Args:
        file_list: data files.
        config: the run's config.
    """

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        i64, f32 = np.dtype(np.int64), np.dtype(np.float32)
        self.columns = {name: (i64 if kind == "id" else f32, width) for name, _, width, kind in LAYOUT}
        self.sizes = {name: config.get(f"hyper_parameters.{key}", None, type=int) for name, key in SIZE_KEYS.items()}
        names = [f"c{i}" for i in range(WIDTH)]
        self._read_options = dict(column_names=names, use_threads=False)
        self._parse_options = pacsv.ParseOptions(delimiter=",", ignore_empty_lines=True)
        self._convert_options = pacsv.ConvertOptions(column_types={c: pa.float64() for c in names},
                                                     null_values=_NULLS, strings_can_be_null=False)

    def signature(self) -> str:
        return f"{super().signature()}|sizes={sorted(self.sizes.items())}"

    def feature_units(self) -> list[FeatureUnit]:
        """``history`` (the five 50-wide arrays together: a behaviour's type, category, brand and masks belong
        together), then each user, ad and context field by its name (groups ``user``, ``ad``, ``context``)."""
        units = [FeatureUnit("history", "history", tuple((name, None) for name, *_ in LAYOUT[:5]))]
        for name, first, _, kind in LAYOUT[5:]:
            if kind != "label":
                group = "user" if first < 259 else "ad" if first < 265 else "context"
                units.append(FeatureUnit(name, group, ((name, None),)))
        return units

    # ------------------------------------------------------------------ parsing
    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        matrix = None
        if b" " not in chunk and b"\t" not in chunk and not may_hold_hex(chunk):
            try:
                matrix = self._fast(chunk)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                matrix = None
        if matrix is None:
            matrix = self._slow(chunk, path, first_line)
        return self._split(matrix, chunk, path, first_line)

    def _fast(self, chunk: bytes) -> np.ndarray:
        table = pacsv.read_csv(io.BytesIO(chunk),
                               read_options=pacsv.ReadOptions(block_size=len(chunk) + 1, **self._read_options),
                               parse_options=self._parse_options, convert_options=self._convert_options)
        if not table.num_rows:
            return np.zeros((0, WIDTH))
        return np.column_stack([c.fill_null(0.0).to_numpy() for c in table.columns])

    def _slow(self, chunk: bytes, path: str, first_line: int) -> np.ndarray:
        """PaddleRec's rules line by line: strip, split on ``,``, empty / NULL → 0; errors name the line."""
        rows = []
        for offset, raw in enumerate(chunk.split(b"\n")):
            line = raw.strip()
            if not line:
                continue
            fields = line.split(b",")
            if len(fields) != WIDTH:
                raise bad_line(path, first_line + offset, raw,
                               f"expected {WIDTH} ','-separated values (PaddleRec's Alimama format), got "
                               f"{len(fields)}")
            values = []
            for i, field in enumerate(fields):
                if field == b"" or field.upper() == b"NULL":
                    values.append(0.0)
                    continue
                try:
                    values.append(parse_float(field))
                except ValueError:
                    raise bad_line(path, first_line + offset, raw,
                                   f"column {i + 1} ({_column_name(i)}) is not a number: "
                                   f"{field.decode('utf-8', 'replace')!r} (doc/custom_reader.md#numbers)") from None
            rows.append(values)
        return np.array(rows, dtype=np.float64).reshape(len(rows), WIDTH)

    def _split(self, matrix: np.ndarray, chunk: bytes, path: str, first_line: int) -> Block:
        """The named arrays of a parsed ``(n, 267)`` float64 matrix, with the values checked."""

        def fail(bad: np.ndarray, problem: str) -> DataFormatError:
            row, col = np.argwhere(bad)[0]
            return row_error(chunk, path, first_line, int(row), f"column {col + 1} ({_column_name(col)}) "
                             f"{problem}, got {matrix[row, col]!r}")

        finite = np.isfinite(matrix)
        if not finite.all():
            raise fail(~finite, "must be finite")
        block: Block = {}
        for name, first, width, kind in LAYOUT:
            part = matrix[:, first:first + width]
            if kind == "float":
                block[name] = part.astype(np.float32)
                continue
            bad = (part < 0) | (part != np.floor(part))
            if kind in ("mask", "label"):
                bad |= part > 1
            if bad.any():
                raise fail(np.pad(bad, ((0, 0), (first, WIDTH - first - width))),
                           "must be 0 or 1" if kind != "id" else "must be a non-negative integer id")
            if kind == "id":
                ids = part.astype(np.int64)
                size = self.sizes.get(name)
                if size is not None and (ids >= size).any():
                    raise fail(np.pad(ids >= size, ((0, 0), (first, WIDTH - first - width))),
                               f"must be below hyper_parameters.{SIZE_KEYS[name]} = {size}")
                block[name] = ids
            else:
                block[name] = part.astype(np.float32)
        return block


__all__ = ["HISTORY_LENGTH", "LAYOUT", "SIZE_KEYS", "WIDTH", "AlimamaReader"]

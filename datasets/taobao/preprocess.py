"""Join Alimama's taobao display-ad files into EasyRec's taobao CSV (what ``config_backbone_bigdata.yaml`` reads).

Input: the files of Tianchi data set 56 ("Ad Display/Click Data on Taobao.com"), with their headers:

* ``raw_sample.csv``    ``user,time_stamp,adgroup_id,pid,nonclk,clk``: 26 million ad impressions of 8 days;
* ``ad_feature.csv``    ``adgroup_id,cate_id,campaign_id,customer,brand,price`` (``brand`` may be ``NULL``);
* ``user_profile.csv``  ``userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,
  occupation,new_user_class_level`` (the real header ends with a space; names are compared stripped);
* optional ``behavior_log.csv``  ``user,time_stamp,btag,cate,brand`` (btag ``pv`` / ``cart`` / ``fav`` /
  ``buy``; 723 million rows of 22 days).

Output, one line per impression of ``raw_sample.csv``, no header, the 20 columns of EasyRec's taobao sample::

    clk,buy,pid,adgroup_id,cate_id,campaign_id,customer,brand,user_id,cms_segid,cms_group_id,final_gender_code,
    age_level,pvalue_level,shopping_level,occupation,new_user_class_level,tag_category_list,tag_brand_list,price

* ``clk``, ``pid``, ``user_id`` (``user``) and ``adgroup_id`` come from ``raw_sample.csv``; ``cate_id``,
  ``campaign_id``, ``customer``, ``brand`` (``NULL`` -> empty) and ``price`` from ``ad_feature.csv`` by
  ``adgroup_id``; the eight profile columns from ``user_profile.csv`` by ``user`` = ``userid``. A user
  without a profile (about 5% of the real impressions) or an ad without features keeps its row with
  empty fields (the config's ``default_val`` applies), unless ``--drop_missing``.
* ``price`` is written as a half-octave level ``min(49, floor(2 * log2(1 + price)))``: EasyRec's taobao
  configs read price as an integer id below 50 (``IdFeature`` with ``num_buckets: 50``); ``--raw_price``
  writes ad_feature.csv's number instead.
* ``buy``, ``tag_category_list`` and ``tag_brand_list`` are in none of the three files; EasyRec does not
  publish how it made them. Here they come from ``behavior_log.csv``:

  - ``tag_category_list`` / ``tag_brand_list``: the user's most frequent categories / brands (any btag)
    in the ``--tag_days`` days before the first impression day (at most ``--max_tags``, most frequent
    first, ties by smaller id), ``|``-separated; the same for all of a user's rows, and from before every
    impression, so nothing leaks from the future;
  - ``buy = 1`` when ``clk = 1`` and the user has a ``buy`` behaviour of the ad's category and brand (the
    category alone for an ad without a brand) at most ``--buy_window_hours`` after the impression. So
    ``buy = 1`` implies ``clk = 1`` (ESMM's relation). Purchases after the log's end are not seen, so the
    last day's labels are slightly low.

  Without ``--behavior_log`` both lists are empty and ``buy`` is 0 on every row (a warning says so):
  a model's cvr task then has no positives.

Split by time, as the DIN / EasyRec papers use the data: the last ``--test_days`` calendar days (Beijing
time, UTC+8; default 1, i.e. 2017-05-13) go to ``DIR/test/part-0.txt`` in raw_sample.csv's order, the
earlier days to ``DIR/train/part-<k>.txt``. raw_sample.csv is ordered by ad, so train rows are shuffled
(seeded): scattered at random over ``--train_parts`` files, then each file permuted in memory
(``--no_shuffle``: one file in the input's order). ``DIR/meta.json`` records counts and options. Each
split folder is written in a temporary folder and renamed into place.

Memory: raw_sample.csv and behavior_log.csv are streamed in blocks of ``--block_mb`` MB; ad_feature.csv and
user_profile.csv are held whole (sorted id columns, looked up with ``searchsorted``); the behaviour pass
holds the (user, category) and (user, brand) counts of the tag window and the buy events after the first
impression day. Everything is vectorised (pyarrow / numpy): no Python loop over rows.

Usage::

    python datasets/taobao/preprocess.py --raw_sample raw/raw_sample.csv --ad_feature raw/ad_feature.csv \\
        --user_profile raw/user_profile.csv --behavior_log raw/behavior_log.csv --output datasets/taobao/data
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recstack.data.base import DataFormatError
from recstack.fileio import owner_tag, remove_tree, stale_folders

logger = logging.getLogger("datasets.taobao.preprocess")
REPO = Path(__file__).resolve().parents[2]

RAW_SAMPLE_COLUMNS = ("user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk")
AD_FEATURE_COLUMNS = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price")
USER_PROFILE_COLUMNS = ("userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
                        "shopping_level", "occupation", "new_user_class_level")
BEHAVIOR_LOG_COLUMNS = ("user", "time_stamp", "btag", "cate", "brand")
#: the output's columns, in order (EasyRec's taobao sample; datasets/synthetic/generate.py's taobao world)
OUTPUT_COLUMNS = (
    "clk", "buy", "pid", "adgroup_id", "cate_id", "campaign_id", "customer", "brand", "user_id", "cms_segid",
    "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level", "occupation",
    "new_user_class_level", "tag_category_list", "tag_brand_list", "price",
)  # fmt: skip
DAY = 86_400
TIMEZONE = 8 * 3600  # the logs' days are Beijing days (UTC+8): 1494032110 is 2017-05-06 08:55:10
PRICE_LEVELS = 50
ID_LIMIT = 1 << 31  # ids are packed two to an int64 key


def price_level(price: np.ndarray) -> np.ndarray:
    """Half-octave price levels ``min(49, floor(2 * log2(1 + price)))`` (negative prices count as 0)."""
    return np.minimum(np.floor(2.0 * np.log2(1.0 + np.maximum(price, 0.0))), PRICE_LEVELS - 1).astype(np.int64)


def day_of(ts: np.ndarray | int) -> np.ndarray | int:
    """Beijing calendar day number (days since 1970-01-01, UTC+8) of Unix time stamps."""
    return (ts + TIMEZONE) // DAY


def day_start(day: int) -> int:
    """Unix time stamp of the start (00:00 Beijing time) of a day number."""
    return day * DAY - TIMEZONE


def day_text(day: int) -> str:
    """``YYYY-MM-DD`` of a day number."""
    return str(np.datetime64(int(day), "D"))


# ----------------------------------------------------------------------------- reading
def check_header(path: Path, expected: Sequence[str]) -> None:
    """Raise :class:`DataFormatError` unless the first line of ``path`` names exactly ``expected``
    (comma-separated, each name stripped of spaces; a UTF-8 byte-order mark is ignored)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e.strerror})") from None
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    names = [name.strip() for name in text.split(",")]
    if names != list(expected):
        raise DataFormatError(f"{path}:1: expected the header {','.join(expected)!r} (Alimama's {path.name} "
                              f"layout), got {text!r}")


def read_csv(path: Path, columns: Sequence[str], types: dict[str, pa.DataType], block_mb: float,
             ) -> Iterator[pa.RecordBatch]:
    """Stream the record batches of an Alimama CSV file (header checked, then skipped).

    Only the columns of ``types`` are converted; empty fields and ``NULL`` are nulls. Raises
    :class:`DataFormatError` naming the file for a header or value that does not parse.
    """
    check_header(path, columns)
    read = pacsv.ReadOptions(skip_rows=1, column_names=list(columns), block_size=max(1 << 16, int(block_mb * 2**20)))
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(types), null_values=["", "NULL"],
                                   strings_can_be_null=True)
    try:
        with pacsv.open_csv(path, read_options=read, convert_options=convert) as reader:
            yield from reader
    except pa.ArrowInvalid as e:
        raise DataFormatError(locate_error(path, columns, types) or f"{path}: {e}") from None


def locate_error(path: Path, columns: Sequence[str], types: dict[str, pa.DataType]) -> str | None:
    """The first line of ``path`` that does not parse, as ``file:line: what`` (a slow scan, run only after the
    vectorised reader failed); None if no line is found at fault."""
    index = {name: columns.index(name) for name in types}
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no == 1 or not row:
                continue
            if len(row) != len(columns):
                return f"{path}:{line_no}: expected {len(columns)} fields ({','.join(columns)}), got {len(row)}"
            for name, kind in types.items():
                value = row[index[name]]
                if value in ("", "NULL") or pa.types.is_string(kind):
                    continue
                try:
                    int(value) if pa.types.is_integer(kind) else float(value)
                except ValueError:
                    what = "an integer" if pa.types.is_integer(kind) else "a number"
                    return f"{path}:{line_no}: {name}: expected {what}, got {value!r}"
    return None


def read_table(path: Path, columns: Sequence[str], types: dict[str, pa.DataType]) -> pa.Table:
    """The whole file as a table (the small files: ad_feature.csv, user_profile.csv)."""
    batches = list(read_csv(path, columns, types, 64))
    schema = pa.schema([(name, types[name]) for name in types])
    return pa.Table.from_batches(batches, schema=schema)


def int_column(table: pa.Table | pa.RecordBatch, name: str, missing: int = -1) -> np.ndarray:
    """An integer column as int64 numpy, nulls as ``missing``."""
    column = table.column(name)
    return pc.fill_null(column, missing).to_numpy().astype(np.int64, copy=False)


def first_bad(mask: np.ndarray) -> int:
    """Index of the first true entry of ``mask``."""
    return int(np.flatnonzero(mask)[0])


class Lookup:
    """Rows of a table by a unique integer key (sorted keys + ``searchsorted``).

    Args:
        keys: ``(n,)`` the key of each row.
        path: the file, for errors.
        name: the key column's name, for errors.
    """

    def __init__(self, keys: np.ndarray, path: Path, name: str) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]
        repeated = self.sorted[1:] == self.sorted[:-1]
        if repeated.any():
            key = int(self.sorted[1:][repeated][0])
            line = 2 + int(np.flatnonzero(keys == key)[1])
            raise DataFormatError(f"{path}:{line}: {name} {key} appears twice (each id must have one row)")

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """``(m,)`` row index of each key, -1 where the key is unknown."""
        if not len(self.sorted):
            return np.full(len(keys), -1, dtype=np.int64)
        position = np.minimum(np.searchsorted(self.sorted, keys), len(self.sorted) - 1)
        return np.where(self.sorted[position] == keys, self.order[position], -1)

    @classmethod
    def of_sorted(cls, keys: np.ndarray) -> Lookup:
        """A lookup over keys that are already sorted and unique (row ``i`` is ``keys[i]``)."""
        lookup = cls.__new__(cls)
        lookup.order, lookup.sorted = np.arange(len(keys)), keys
        return lookup


def take_text(column: pa.Array, rows: np.ndarray) -> pa.Array:
    """``column[rows]`` as strings, null where ``rows`` is -1."""
    return column.take(pa.array(rows, mask=rows < 0))


def as_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one string array (numbers in their shortest form)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())


# ----------------------------------------------------------------------------- behaviour log
class PairCounter:
    """Counts of ``(user, value)`` pairs over many blocks, as sorted unique int64 keys ``user << 32 | value``.

    Blocks are counted on arrival; pending counts are merged when they hold over ``compact_at`` keys,
    so memory follows the number of distinct pairs.
    """

    def __init__(self, compact_at: int = 1 << 24) -> None:
        self.keys: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.pending = 0
        self.compact_at = compact_at

    def add(self, user: np.ndarray, value: np.ndarray) -> None:
        """Count the pairs ``(user[i], value[i])`` (both in ``[0, 2**31)``)."""
        keys, counts = np.unique((user << 32) | value, return_counts=True)
        self.keys.append(keys)
        self.counts.append(counts)
        self.pending += len(keys)
        if self.pending > self.compact_at:
            self._compact()

    def _compact(self) -> None:
        if len(self.keys) > 1:
            keys, inverse = np.unique(np.concatenate(self.keys), return_inverse=True)
            counts = np.bincount(inverse, weights=np.concatenate(self.counts))
            self.keys, self.counts = [keys], [counts.astype(np.int64)]
        self.pending = len(self.keys[0]) if self.keys else 0
        self.compact_at = max(self.compact_at, 2 * self.pending)

    def top(self, limit: int) -> tuple[np.ndarray, pa.Array]:
        """Users with counts and the ``|``-joined ``limit`` most frequent values of each (ties: smaller value
        first): ``(users (u,) sorted, texts (u,))``."""
        self._compact()
        keys = self.keys[0] if self.keys else np.zeros(0, dtype=np.int64)
        counts = self.counts[0] if self.counts else np.zeros(0, dtype=np.int64)
        user, value = keys >> 32, keys & 0xFFFFFFFF
        order = np.lexsort((value, -counts, user))
        user, value = user[order], value[order]
        starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, dtype=np.int64)
        rank = np.arange(len(user)) - np.repeat(starts, np.diff(np.r_[starts, len(user)]))
        keep = rank < limit
        user, value = user[keep], value[keep]
        starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, dtype=np.int64)
        offsets = pa.array(np.r_[starts, len(user)].astype(np.int32))
        lists = pa.ListArray.from_arrays(offsets, pc.cast(pa.array(value), pa.string()))
        return user[starts], pc.binary_join(lists, "|")


@dataclass
class Behaviour:
    """What the behaviour log gives the join: tag texts per user and the buy events."""

    tag_users: dict[str, Lookup] = field(default_factory=dict)  # "category" / "brand" -> users with tags
    tag_texts: dict[str, pa.Array] = field(default_factory=dict)  # -> their |-joined tags
    buy_user: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    buy_cate: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    buy_brand: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    buy_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rows: int = 0

    def tags(self, kind: str, users: np.ndarray) -> pa.Array:
        """``(n,)`` tag texts of ``users`` (null for a user without tags)."""
        if kind not in self.tag_users:
            return pa.nulls(len(users), pa.string())
        return take_text(self.tag_texts[kind], self.tag_users[kind].rows(users))


def read_behaviour(path: Path, tag_from: int, tag_to: int, buy_from: int, buy_to: int, max_tags: int,
                   block_mb: float) -> Behaviour:
    """One streamed pass over behavior_log.csv: tag counts of ``[tag_from, tag_to)`` and ``buy`` events of
    ``[buy_from, buy_to]`` (Unix time stamps)."""
    types = {"user": pa.int64(), "time_stamp": pa.int64(), "btag": pa.string(), "cate": pa.int64(),
             "brand": pa.int64()}
    counters = {"category": PairCounter(), "brand": PairCounter()}
    buys: list[tuple[np.ndarray, ...]] = []
    result = Behaviour()
    for batch in read_csv(path, BEHAVIOR_LOG_COLUMNS, types, block_mb):
        user, ts = int_column(batch, "user"), int_column(batch, "time_stamp", -1)
        cate, brand = int_column(batch, "cate"), int_column(batch, "brand")
        bad = (user < 0) | (user >= ID_LIMIT) | (cate >= ID_LIMIT) | (brand >= ID_LIMIT)
        if bad.any():
            i = first_bad(bad)
            raise DataFormatError(f"{path}:{result.rows + i + 2}: user / cate / brand must be integers in "
                                  f"[0, 2**31) (user empty?), got {user[i]}, {cate[i]}, {brand[i]}")
        window = (ts >= tag_from) & (ts < tag_to)
        for kind, value in (("category", cate), ("brand", brand)):
            use = window & (value >= 0)
            counters[kind].add(user[use], value[use])
        buy = pc.fill_null(pc.equal(batch.column("btag"), "buy"), False).to_numpy(zero_copy_only=False)
        buy &= (ts >= buy_from) & (ts <= buy_to) & (cate >= 0)
        buys.append((user[buy], cate[buy], brand[buy], ts[buy]))
        result.rows += batch.num_rows
    for kind, counter in counters.items():
        users, result.tag_texts[kind] = counter.top(max_tags)
        result.tag_users[kind] = Lookup.of_sorted(users)
    if buys:
        result.buy_user, result.buy_cate, result.buy_brand, result.buy_ts = (np.concatenate(c) for c in zip(*buys))
    return result


class BuyMatcher:
    """Whether a user bought a category (and brand) within a window after a time (vectorised).

    Events are grouped by ``(user, category)`` and by ``(user, category, brand)`` (dense group numbers); a
    query finds the first event of its group at or after its time with one ``searchsorted`` over the
    sorted ``group * span + (time - start)``.

    Args:
        behaviour: the buy events.
        start: the earliest event time kept (no query is earlier).
        span: ``latest - start + 1`` of the event times kept.
    """

    def __init__(self, behaviour: Behaviour, start: int, span: int) -> None:
        self.start, self.span = start, span
        user, cate, brand, ts = behaviour.buy_user, behaviour.buy_cate, behaviour.buy_brand, behaviour.buy_ts
        self.pairs = np.unique((user << 32) | cate)
        self.brands = np.unique(brand)
        pair = np.searchsorted(self.pairs, (user << 32) | cate)
        triple = self._triple(pair, np.searchsorted(self.brands, brand))
        self.triples = np.unique(triple)
        if max(len(self.pairs), 1) * span >= 1 << 62:
            raise DataFormatError(f"buy events: {len(self.pairs)} groups over {span} s do not fit int64 keys")
        self.index = {"category": np.sort(pair * span + (ts - start)),
                      "brand": np.sort(np.searchsorted(self.triples, triple) * span + (ts - start))}

    def _triple(self, pair: np.ndarray, brand_index: np.ndarray) -> np.ndarray:
        """Key of ``(pair index, brand index)`` (both below the number of events)."""
        return pair * (len(self.brands) + 1) + brand_index

    @staticmethod
    def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of each key in ``sorted_keys`` (unique) and whether it is there."""
        if not len(sorted_keys):
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        i = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return i, sorted_keys[i] == keys

    def bought(self, user: np.ndarray, cate: np.ndarray, brand: np.ndarray, ts: np.ndarray, window: int,
               ) -> np.ndarray:
        """``(n,)`` whether each query's user bought its category (and its brand, when ``brand >= 0``) in
        ``[ts, ts + window]`` (``cate < 0``: never)."""
        pair, found = self._find(self.pairs, (user << 32) | np.maximum(cate, 0))
        found &= cate >= 0
        brand_index, brand_found = self._find(self.brands, brand)
        triple, triple_found = self._find(self.triples, self._triple(pair, brand_index))
        branded = brand >= 0
        group = np.where(branded, triple, pair)
        found &= ~branded | (brand_found & triple_found)
        offset = np.clip(ts - self.start, 0, self.span - 1)
        result = np.zeros(len(user), dtype=bool)
        for kind, mask in (("brand", found & branded), ("category", found & ~branded)):
            index = self.index[kind]
            if not mask.any() or not len(index):
                continue
            lo = group[mask] * self.span + offset[mask]
            event = index[np.minimum(np.searchsorted(index, lo), len(index) - 1)]
            result[mask] = (event >= lo) & (event // self.span == group[mask]) & (event - lo <= window)
        return result


# ----------------------------------------------------------------------------- writing
def write_lines(out, lines: pa.Array) -> None:
    """Write a string array whose entries end with a newline, straight from its data buffer."""
    if not len(lines):
        return
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], dtype=width)[lines.offset:lines.offset + len(lines) + 1]
    out.write(memoryview(lines.buffers()[2])[int(offsets[0]):int(offsets[-1])])


def shuffle_file(path: Path, rng: np.random.Generator) -> int:
    """Permute the lines of ``path`` in memory (one file of the train split); return the line count."""
    data = path.read_bytes()
    if not data:
        return 0
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    shuffled = lines.take(pa.array(rng.permutation(len(ends))))
    del data, lines
    with open(path, "wb") as out:
        write_lines(out, shuffled)
    return len(ends)


def publish(staging: Path, output: Path, names: Sequence[str]) -> None:
    """Move ``staging/<name>`` onto ``output/<name>`` for each name (an old one is moved aside, then removed)."""
    output.mkdir(parents=True, exist_ok=True)
    for name in names:
        target, old = output / name, output / f".old-{name}-{owner_tag()}"
        if target.exists():
            os.replace(target, old)
        os.replace(staging / name, target)
        if old.is_dir():
            remove_tree(old, "replaced")
        elif old.exists():
            old.unlink()


# ----------------------------------------------------------------------------- the join
@dataclass
class Options:
    """Preprocessing options (the command line's flags)."""

    test_days: int = 1
    train_parts: int = 16
    shuffle: bool = True
    seed: int = 0
    tag_days: int = 3
    max_tags: int = 10
    buy_window_hours: float = 24.0
    raw_price: bool = False
    drop_missing: bool = False
    block_mb: float = 2.0
    #: ``--format parquet``: the config whose ``data_config`` converts the lines to Parquet (else text)
    parquet_config: Path | None = None


def time_range(path: Path, block_mb: float) -> tuple[int, int, int]:
    """``(rows, earliest, latest)`` time stamps of raw_sample.csv (a pass over one column)."""
    rows, low, high = 0, None, None
    for batch in read_csv(path, RAW_SAMPLE_COLUMNS, {"time_stamp": pa.int64()}, block_mb):
        ts = batch.column("time_stamp")
        if ts.null_count:
            i = first_bad(ts.is_null().to_numpy(zero_copy_only=False))
            raise DataFormatError(f"{path}:{rows + i + 2}: time_stamp is empty")
        if batch.num_rows:
            stats = pc.min_max(ts)
            low = stats["min"].as_py() if low is None else min(low, stats["min"].as_py())
            high = stats["max"].as_py() if high is None else max(high, stats["max"].as_py())
        rows += batch.num_rows
    if low is None:
        raise DataFormatError(f"{path}: no rows after the header")
    return rows, low, high


class Sides:
    """The ads (ad_feature.csv) and users (user_profile.csv), held whole, as the output's text columns.

    Args:
        ad_feature, user_profile: the files.
        raw_price: keep ad_feature.csv's price instead of its level.
    """

    def __init__(self, ad_feature: Path, user_profile: Path, raw_price: bool) -> None:
        ads = read_table(ad_feature, AD_FEATURE_COLUMNS, {**{n: pa.int64() for n in AD_FEATURE_COLUMNS},
                                                          "price": pa.float64()})
        if ads.column("adgroup_id").null_count:
            raise DataFormatError(f"{ad_feature}: an empty adgroup_id")
        self.ads = Lookup(int_column(ads, "adgroup_id"), ad_feature, "adgroup_id")
        self.ad_cate, self.ad_brand = int_column(ads, "cate_id"), int_column(ads, "brand")
        price = ads.column("price").combine_chunks()
        if not raw_price:
            valid = pc.is_valid(price).to_numpy(zero_copy_only=False)
            price = pa.array(price_level(pc.fill_null(price, 0.0).to_numpy()), mask=~valid)
        self.ad_text = [as_text(ads.column(name)) for name in ("cate_id", "campaign_id", "customer", "brand")]
        self.price_text = as_text(price)
        users = read_table(user_profile, USER_PROFILE_COLUMNS, {name: pa.int64() for name in USER_PROFILE_COLUMNS})
        if users.column("userid").null_count:
            raise DataFormatError(f"{user_profile}: an empty userid")
        self.users = Lookup(int_column(users, "userid"), user_profile, "userid")
        self.user_text = [as_text(users.column(name)) for name in USER_PROFILE_COLUMNS[1:]]


@dataclass
class Joined:
    """One block of output lines (each ending with a newline) and what they hold."""

    lines: pa.Array
    test: np.ndarray  # (n,) bool: the line belongs to the test split
    clk: int
    buy: int
    missing_user: int
    missing_ad: int
    dropped: int
    with_tags: tuple[int, int]  # lines with a tag_category_list / a tag_brand_list


def join_block(batch: pa.RecordBatch, sides: Sides, behaviour: Behaviour, matcher: BuyMatcher, window: int,
               test_from: int, drop_missing: bool, where: str) -> Joined:
    """The output lines of a block of raw_sample.csv (``where``: ``file:first line``, for errors)."""
    user, ts = int_column(batch, "user"), int_column(batch, "time_stamp")
    ad, clk = int_column(batch, "adgroup_id"), int_column(batch, "clk")
    empty = [batch.column(n).is_null().to_numpy(zero_copy_only=False) for n in ("user", "adgroup_id")]
    bad = empty[0] | empty[1] | ((clk != 0) & (clk != 1))
    if bad.any():
        path, first = where.rsplit(":", 1)
        raise DataFormatError(f"{path}:{int(first) + first_bad(bad)}: user and adgroup_id must be integers and "
                              f"clk 0 or 1")
    ad_row, user_row = sides.ads.rows(ad), sides.users.rows(user)
    missing_ad, missing_user = int((ad_row < 0).sum()), int((user_row < 0).sum())
    dropped = 0
    if drop_missing:
        keep = (ad_row >= 0) & (user_row >= 0)
        dropped = int((~keep).sum())
        batch, user, ts, ad, clk = batch.filter(pa.array(keep)), user[keep], ts[keep], ad[keep], clk[keep]
        ad_row, user_row = ad_row[keep], user_row[keep]
    cate = np.where(ad_row >= 0, sides.ad_cate[ad_row], -1)
    brand = np.where(ad_row >= 0, sides.ad_brand[ad_row], -1)
    buy = (clk == 1) & matcher.bought(user, cate, brand, ts, window)
    tags = [behaviour.tags("category", user), behaviour.tags("brand", user)]
    columns = [as_text(pa.array(clk)), as_text(pa.array(buy.astype(np.int64))), batch.column("pid"),
               as_text(pa.array(ad)), *(take_text(c, ad_row) for c in sides.ad_text), as_text(pa.array(user)),
               *(take_text(c, user_row) for c in sides.user_text), *tags, take_text(sides.price_text, ad_row)]
    lines = pc.binary_join_element_wise(*columns, ",", null_handling="replace", null_replacement="")
    lines = pc.binary_join_element_wise(lines, pa.scalar(""), "\n")  # each line ends with a newline
    return Joined(lines, ts >= test_from, int(clk.sum()), int(buy.sum()), missing_user, missing_ad, dropped,
                  (len(tags[0]) - tags[0].null_count, len(tags[1]) - tags[1].null_count))


def write_splits(raw_sample: Path, folder: Path, join: Callable[[pa.RecordBatch, str], Joined], o: Options,
                 ) -> dict[str, int]:
    """Stream raw_sample.csv through ``join`` into ``folder/test/part-0.txt`` (input order) and
    ``folder/train/part-<k>.txt`` (scattered at random, then each file shuffled; one file in input order
    without ``o.shuffle``); return the counts."""
    parts = o.train_parts if o.shuffle else 1
    rng = np.random.default_rng(o.seed)
    counts = Counter()
    types = {"user": pa.int64(), "time_stamp": pa.int64(), "adgroup_id": pa.int64(), "pid": pa.string(),
             "clk": pa.int64()}
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    with contextlib.ExitStack() as files:
        train_files = [files.enter_context(open(folder / "train" / f"part-{k}.txt", "wb")) for k in range(parts)]
        test_file = files.enter_context(open(folder / "test" / "part-0.txt", "wb"))
        for batch in read_csv(raw_sample, RAW_SAMPLE_COLUMNS, types, o.block_mb):
            block = join(batch, f"{raw_sample}:{counts['rows'] + 2}")
            counts.update(rows=batch.num_rows, test=int(block.test.sum()), clk=block.clk, buy=block.buy,
                          missing_user_profile=block.missing_user, missing_ad_feature=block.missing_ad,
                          dropped=block.dropped, tag_category_rows=block.with_tags[0],
                          tag_brand_rows=block.with_tags[1])
            write_lines(test_file, block.lines.filter(pa.array(block.test)))
            train = block.lines.filter(pa.array(~block.test))
            counts["train"] += len(train)
            if parts == 1:
                write_lines(train_files[0], train)
                continue
            part = rng.integers(0, parts, len(train))  # scatter: one take, then a slice per file
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(parts + 1))
            grouped = train.take(pa.array(order))
            for k in range(parts):
                write_lines(train_files[k], grouped.slice(bounds[k], bounds[k + 1] - bounds[k]))
    if o.shuffle:
        for k in range(parts):
            shuffle_file(folder / "train" / f"part-{k}.txt", rng)
    return counts


def preprocess(raw_sample: Path, ad_feature: Path, user_profile: Path, output: Path,
               behavior_log: Path | None = None, options: Options | None = None) -> dict:
    """Join the files into ``output/{train,test}`` (see the module docstring); return the summary written to
    ``output/meta.json``.

    Raises:
        DataFormatError: a wrong header, a value that does not parse, a repeated id, or too few days.
        ValueError: an option out of range.
    """
    o = options or Options()
    if o.test_days < 1 or o.train_parts < 1 or o.max_tags < 1 or o.tag_days < 0 or o.buy_window_hours < 0:
        raise ValueError("test_days, train_parts and max_tags must be >= 1, tag_days and buy_window_hours >= 0")
    start = time.perf_counter()
    inputs = [(raw_sample, RAW_SAMPLE_COLUMNS), (ad_feature, AD_FEATURE_COLUMNS), (user_profile, USER_PROFILE_COLUMNS)]
    for path, columns in inputs + ([(behavior_log, BEHAVIOR_LOG_COLUMNS)] if behavior_log else []):
        check_header(path, columns)  # every file's layout, before the long passes
    rows, earliest, latest = time_range(raw_sample, o.block_mb)
    first_day, last_day = day_of(earliest), day_of(latest)
    test_day = last_day - o.test_days + 1
    if test_day <= first_day:
        raise DataFormatError(f"{raw_sample}: impressions span {last_day - first_day + 1} day(s) "
                              f"({day_text(first_day)}..{day_text(last_day)}): --test_days {o.test_days} leaves "
                              f"no train day")
    cut, test_from, window = day_start(first_day), day_start(test_day), int(round(o.buy_window_hours * 3600))
    logger.info("%d impressions from %s to %s (Beijing days); test: from %s", rows, day_text(first_day),
                day_text(last_day), day_text(test_day))
    sides = Sides(ad_feature, user_profile, o.raw_price)
    if behavior_log is not None:
        tag_from = cut - o.tag_days * DAY if o.tag_days else np.iinfo(np.int64).min
        behaviour = read_behaviour(behavior_log, tag_from, cut, cut, latest + window, o.max_tags, o.block_mb)
        logger.info("%s: %d behaviours; tags of %d users (categories), %d (brands); %d buy events",
                    behavior_log, behaviour.rows, len(behaviour.tag_users["category"].sorted),
                    len(behaviour.tag_users["brand"].sorted), len(behaviour.buy_ts))
    else:
        behaviour = Behaviour()
        logger.warning("no --behavior_log: buy is 0 on every row and tag_category_list / tag_brand_list are empty")
    matcher = BuyMatcher(behaviour, cut, latest + window - cut + 1)

    def join(batch: pa.RecordBatch, where: str) -> Joined:
        return join_block(batch, sides, behaviour, matcher, window, test_from, o.drop_missing, where)

    output.parent.mkdir(parents=True, exist_ok=True)
    for _, _, stale in stale_folders(output.parent):
        remove_tree(stale, "left by a dead run")
    staging = output.parent / f".tmp-{output.name}-{owner_tag()}"
    if staging.exists():  # left by an earlier call of this process
        shutil.rmtree(staging)
    try:
        counts = write_splits(raw_sample, staging, join, o)
        kept = max(counts["rows"] - counts["dropped"], 1)
        summary = {
            "columns": list(OUTPUT_COLUMNS),
            "rows": {"train": counts["train"], "test": counts["test"]},
            "days": {"first": day_text(first_day), "last": day_text(last_day), "test_from": day_text(test_day)},
            "rates": {"clk": counts["clk"] / kept, "buy": counts["buy"] / kept},
            "missing": {"user_profile": counts["missing_user_profile"], "ad_feature": counts["missing_ad_feature"],
                        "dropped_rows": counts["dropped"]},
            "rows_with_tags": {"tag_category_list": counts["tag_category_rows"],
                               "tag_brand_list": counts["tag_brand_rows"]},
            "behavior_log": behavior_log is not None,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in o.__dict__.items()},
        }
        if o.parquet_config is not None:
            to_parquet(staging, o.parquet_config)
        with open(staging / "meta.json", "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        publish(staging, output, ("train", "test", "meta.json"))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %d train and %d test lines to %s in %.1f s (clk rate %.4f, buy rate %.5f); peak RSS %.0f MB",
                counts["train"], counts["test"], output, time.perf_counter() - start, summary["rates"]["clk"],
                summary["rates"]["buy"], peak_rss_mb())
    return summary


def to_parquet(folder: Path, config: Path) -> None:
    """Replace each ``folder/{train,test}/part-<k>.txt`` by ``part-<k>.parquet``: the same rows through the tabular
    reader's parsing of ``config`` (tag lists as ``list<string>`` columns; read with ``input_type: ParquetInput``,
    doc/custom_reader.md#parquet)."""
    from recstack.config import load_config
    from recstack.data.to_parquet import convert_file

    parsed = load_config(config)
    for split in ("train", "test"):
        for text in sorted((folder / split).glob("part-*.txt")):
            rows = convert_file(parsed, "tabular", text, text.with_suffix(".parquet"))
            text.unlink()
            logger.info("%s -> %s (%d rows)", text.name, text.with_suffix(".parquet").name, rows)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw_sample", type=Path, required=True, help="raw_sample.csv")
    parser.add_argument("--ad_feature", type=Path, required=True, help="ad_feature.csv")
    parser.add_argument("--user_profile", type=Path, required=True, help="user_profile.csv")
    parser.add_argument("--behavior_log", type=Path, help="behavior_log.csv (buy labels and tag lists; else empty)")
    parser.add_argument("--output", type=Path, required=True, help="folder that receives train/, test/, meta.json")
    d = Options()
    parser.add_argument("--test_days", type=int, default=d.test_days, help="last calendar days for test (default 1)")
    parser.add_argument("--train_parts", type=int, default=d.train_parts, help="train files (default 16)")
    parser.add_argument("--no_shuffle", action="store_true", help="keep raw_sample.csv's order (one train file)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the shuffle (default 0)")
    parser.add_argument("--tag_days", type=int, default=d.tag_days,
                        help="days of behaviour before the first impression day for the tags (0: all; default 3)")
    parser.add_argument("--max_tags", type=int, default=d.max_tags, help="most tags per list (default 10)")
    parser.add_argument("--buy_window_hours", type=float, default=d.buy_window_hours,
                        help="a buy counts this long after the click (default 24)")
    parser.add_argument("--raw_price", action="store_true", help="write ad_feature.csv's price, not its level")
    parser.add_argument("--drop_missing", action="store_true", help="drop rows without user profile or ad features")
    parser.add_argument("--block_mb", type=float, default=d.block_mb, help="MB read per block (default 2)")
    parser.add_argument("--format", choices=("text", "parquet"), default="text", dest="fmt",
                        help="'parquet': write part-<k>.parquet files (tag lists as list columns) instead of text")
    parser.add_argument("--config", type=Path, default=REPO / "models/multitask/mmoe/config_taobao.yaml",
                        help="--format parquet: the config whose data_config types the columns (default: MMoE's "
                             "config_taobao.yaml; with --raw_price give one whose price field is FLOAT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = Options(test_days=args.test_days, train_parts=args.train_parts, shuffle=not args.no_shuffle,
                      seed=args.seed, tag_days=args.tag_days, max_tags=args.max_tags,
                      buy_window_hours=args.buy_window_hours, raw_price=args.raw_price,
                      drop_missing=args.drop_missing, block_mb=args.block_mb,
                      parquet_config=args.config if args.fmt == "parquet" else None)
    try:
        preprocess(args.raw_sample, args.ad_feature, args.user_profile, args.output, args.behavior_log, options)
    except (DataFormatError, ValueError) as e:  # (a ConfigError of --config is a ValueError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

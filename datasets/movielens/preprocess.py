"""Turn GroupLens's MovieLens-1M files into CSVs for the retrieval and the ranking stage: leave-last-one-out
train / test, items, and the rank_train / rank_test rows with a rating label.

Input: the three files of ``ml-1m.zip``, ``::``-separated, latin-1 encoded, no header:

* ``ratings.dat``  ``UserID::MovieID::Rating::Timestamp`` (1,000,209 ratings; the rating an integer 1..5);
* ``users.dat``    ``UserID::Gender::Age::Occupation::Zip-code`` (6,040 users; gender ``M`` / ``F``, age a code
  of 1, 18, 25, 35, 45, 50, 56, occupation a code 0..20);
* ``movies.dat``   ``MovieID::Title::Genres`` (3,883 movies; the title ends with `` (YYYY)``, genres
  ``|``-separated).

Protocol (leave-last-one-out, as torch-rechub's MovieLens examples): each user's ratings are sorted by
(timestamp, movie id); users with fewer than ``--min_ratings`` ratings are dropped (counted on stderr). The
last rating is the user's test target; every earlier one is a training target whose history is the ratings
before it (the first has an empty history and is still written, so a user with ``n`` ratings gives ``n - 1``
train rows and one test row; torch-rechub skips that first row).

Output, comma-separated, no header, one folder per split with ``part-0.txt``:

* ``DIR/train/part-0.txt`` and ``DIR/test/part-0.txt``::

      user_id,gender,age,occupation,zip,hist_item_id,item_id,seen_item_id

  ``user_id``, ``gender``, ``age``, ``occupation``: users.dat's values as they are (raw codes); ``zip``: the
  first 3 characters of the zip code; ``hist_item_id``: the movies rated before the target, newest first,
  ``|``-separated, at most ``--max_history`` (empty when none); ``item_id``: the target movie;
  ``seen_item_id``: test rows: every movie the user rated before the target (newest first, not truncated), so
  evaluation can mask already-seen items; train rows: empty. Train rows are in (user, time) order, test rows
  in user order (user ids ascending).
* ``DIR/train_sequences/part-0.txt``: the same columns, one row per user: its last training row (the whole
  training sequence as history + target), for sequence models that train on every position of a sequence at
  once (SASRec's ``positions: all``), where the prefix rows of ``train/`` would repeat each position.
* ``DIR/items/part-0.txt``: ``item_id,genres,year``, one line per movie of movies.dat in id order (genres as
  in the file, year from the title's `` (YYYY)``, 0 without one).
* ``DIR/rank_train/part-0.txt`` and ``DIR/rank_test/part-0.txt``, for a ranking model (pointwise, on the rating)::

      label,rating,user_id,gender,age,occupation,zip,hist_item_id,item_id,genres,year

  ``label``: 1 if ``rating >= --like_threshold`` (default 4), else 0; ``rating``: ratings.dat's value (1..5);
  ``user_id`` .. ``item_id``: the values of the matching train/ / test/ row (same history rule, same
  ``--max_history``); ``genres``, ``year``: the target movie's, as in items/. rank_train has one row per
  train/ row, in the same order; rank_test one per test/ row (each user's held-out last rating).

Each file is written to a temporary sibling and renamed into place once all six are complete. The output is
deterministic (byte-identical across runs). A malformed line (wrong field count, a non-integer id, a rating
outside 1..5, a movie or user that the other files do not define, a repeated id) stops the run with exit
status 2 and ``file:line: what was expected``. Everything past the parse of users.dat / movies.dat (a few
thousand lines) is vectorised (pyarrow / numpy): ML-1M takes a few seconds (see README.md).

Usage::

    python datasets/movielens/preprocess.py --ratings raw/ml-1m/ratings.dat --users raw/ml-1m/users.dat \\
        --movies raw/ml-1m/movies.dat --output datasets/movielens/data [--like_threshold 4]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recstack.data.base import DataFormatError
from recstack.fileio import atomic_path

RATINGS_FIELDS = ("UserID", "MovieID", "Rating", "Timestamp")
USERS_FIELDS = ("UserID", "Gender", "Age", "Occupation", "Zip-code")
MOVIES_FIELDS = ("MovieID", "Title", "Genres")
#: the columns of train/ and test/, in order
OUTPUT_COLUMNS = ("user_id", "gender", "age", "occupation", "zip", "hist_item_id", "item_id", "seen_item_id")
#: the columns of items/, in order
ITEM_COLUMNS = ("item_id", "genres", "year")
#: the columns of rank_train/ and rank_test/, in order
RANK_COLUMNS = ("label", "rating", "user_id", "gender", "age", "occupation", "zip", "hist_item_id", "item_id",
                "genres", "year")
#: the output folders, each with one part-0.txt
SPLITS = ("train", "train_sequences", "test", "items", "rank_train", "rank_test")
RATINGS = range(1, 6)  # ML-1M's star ratings
SEPARATOR = "::"
ENCODING = "latin-1"  # GroupLens's encoding of the .dat files (titles such as "Cité des enfants perdus")
GENDERS = ("M", "F")
ZIP_PREFIX = 3  # characters of the zip code kept
BLOCK_ROWS = 200_000  # train rows joined per block (bounds the memory of the history lists)
_UNSIGNED = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"[+-]?[0-9]+")
_YEAR = re.compile(r"\((\d{4})\)$")


# ----------------------------------------------------------------------------- reading
def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_no, text)`` of each non-empty line of a latin-1 file (line endings stripped)."""
    try:
        with open(path, encoding=ENCODING, newline="") as f:
            for line_no, line in enumerate(f, start=1):
                text = line.rstrip("\r\n")
                if text:
                    yield line_no, text
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e.strerror})") from None


def split_fields(path: Path, line_no: int, text: str, names: Sequence[str]) -> list[str]:
    """The ``::``-separated fields of a line; raises :class:`DataFormatError` unless there are ``len(names)``."""
    fields = text.split(SEPARATOR)
    if len(fields) != len(names):
        raise DataFormatError(f"{path}:{line_no}: expected {len(names)} fields {SEPARATOR.join(names)}, got "
                              f"{len(fields)}: {text[:80]!r}")
    return fields


def parse_int(path: Path, line_no: int, name: str, text: str, signed: bool = False) -> int:
    """An integer field (ASCII digits; ``signed``: an optional sign), else :class:`DataFormatError`."""
    if (_SIGNED if signed else _UNSIGNED).fullmatch(text) is None:
        kind = "an integer" if signed else "a non-negative integer"
        raise DataFormatError(f"{path}:{line_no}: {name}: expected {kind}, got {text!r}")
    return int(text)


def check_text(path: Path, line_no: int, name: str, text: str) -> str:
    """A text field written to the CSV output: non-empty and without a comma."""
    if not text or "," in text:
        raise DataFormatError(f"{path}:{line_no}: {name}: expected a non-empty value without a comma, got {text!r}")
    return text


def repeated(path: Path, name: str, ids: Sequence[int], lines: Sequence[int]) -> None:
    """Raise :class:`DataFormatError` at the first id of ``ids`` that an earlier line already defined."""
    first: dict[int, int] = {}
    for value, line_no in zip(ids, lines):
        if value in first:
            raise DataFormatError(f"{path}:{line_no}: {name} {value} repeats line {first[value]}: expected each "
                                  f"{name} once")
        first[value] = line_no


@dataclass
class Users:
    """users.dat, sorted by id: ``ids`` (n,) int64 and ``prefix``, each user's first five output columns
    (``user_id,gender,age,occupation,zip``) as a string array aligned with ``ids``."""

    ids: np.ndarray
    prefix: pa.Array


def read_users(path: Path) -> Users:
    """Parse users.dat (see the module docstring); raises :class:`DataFormatError` on a malformed line."""
    rows, lines = [], []
    for line_no, text in read_lines(path):
        uid, gender, age, occupation, zip_code = split_fields(path, line_no, text, USERS_FIELDS)
        uid = parse_int(path, line_no, "UserID", uid)
        if gender not in GENDERS:
            raise DataFormatError(f"{path}:{line_no}: Gender: expected M or F, got {gender!r}")
        age = parse_int(path, line_no, "Age", age)
        occupation = parse_int(path, line_no, "Occupation", occupation)
        zip_prefix = check_text(path, line_no, "Zip-code", zip_code)[:ZIP_PREFIX]
        rows.append((uid, f"{uid},{gender},{age},{occupation},{zip_prefix}"))
        lines.append(line_no)
    if not rows:
        raise DataFormatError(f"{path}: no users")
    repeated(path, "UserID", [r[0] for r in rows], lines)
    rows.sort()
    return Users(np.array([r[0] for r in rows], dtype=np.int64), pa.array([r[1] for r in rows], pa.string()))


@dataclass
class Movies:
    """movies.dat, sorted by id: ``ids`` (n,) int64, ``lines``, the items/ output (newline-terminated), and
    ``features``, each movie's ``genres,year`` (the rank files' last two columns) aligned with ``ids``."""

    ids: np.ndarray
    lines: list[str]
    features: pa.Array


def title_year(title: str) -> int:
    """The year of a title ending with `` (YYYY)`` (trailing spaces ignored), else 0."""
    match = _YEAR.search(title.rstrip())
    return int(match.group(1)) if match else 0


def read_movies(path: Path) -> Movies:
    """Parse movies.dat (see the module docstring); raises :class:`DataFormatError` on a malformed line."""
    rows, lines = [], []
    for line_no, text in read_lines(path):
        mid, title, genres = split_fields(path, line_no, text, MOVIES_FIELDS)
        mid = parse_int(path, line_no, "MovieID", mid)
        if "," in genres:
            raise DataFormatError(f"{path}:{line_no}: Genres: expected |-separated names without a comma, got "
                                  f"{genres!r}")
        rows.append((mid, f"{genres},{title_year(title)}"))
        lines.append(line_no)
    if not rows:
        raise DataFormatError(f"{path}: no movies")
    repeated(path, "MovieID", [r[0] for r in rows], lines)
    rows.sort()
    return Movies(np.array([r[0] for r in rows], dtype=np.int64), [f"{mid},{features}\n" for mid, features in rows],
                  pa.array([r[1] for r in rows], pa.string()))


@dataclass
class Ratings:
    """ratings.dat's columns, in file order."""

    user: np.ndarray
    movie: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray


def read_ratings(path: Path) -> Ratings:
    """Parse ratings.dat: pyarrow's CSV parser on the text with ``::`` turned into tabs; when that rejects the
    file, a line-by-line scan names the first bad line. Raises :class:`DataFormatError`."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e.strerror})") from None
    if not data.strip(b"\r\n"):
        raise DataFormatError(f"{path}: no ratings")
    if b"\t" not in data:  # a tab would be taken for a separator: such a file takes the slow path
        read = pacsv.ReadOptions(column_names=list(RATINGS_FIELDS), block_size=16 << 20)
        parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False)
        convert = pacsv.ConvertOptions(column_types={name: pa.int64() for name in RATINGS_FIELDS})
        try:
            table = pacsv.read_csv(pa.py_buffer(data.replace(b"::", b"\t")), read_options=read, parse_options=parse,
                                   convert_options=convert)
        except pa.ArrowInvalid:
            table = None
        if table is not None and not any(table.column(name).null_count for name in RATINGS_FIELDS):
            return Ratings(*(table.column(name).to_numpy() for name in RATINGS_FIELDS))
    del data
    columns: list[list[int]] = [[], [], [], []]
    for line_no, text in read_lines(path):  # the slow path: a tab, or a line the fast one rejected
        uid, mid, rating, ts = split_fields(path, line_no, text, RATINGS_FIELDS)
        columns[0].append(parse_int(path, line_no, "UserID", uid))
        columns[1].append(parse_int(path, line_no, "MovieID", mid))
        columns[2].append(parse_int(path, line_no, "Rating", rating, signed=True))
        columns[3].append(parse_int(path, line_no, "Timestamp", ts, signed=True))
    return Ratings(*(np.array(c, dtype=np.int64) for c in columns))


def line_of_row(path: Path, row: int) -> int:
    """The line number of the ``row``-th (0-based) non-empty line of ``path`` (for error messages)."""
    for k, (line_no, _) in enumerate(read_lines(path)):
        if k == row:
            return line_no
    return row + 1


def check_known(path: Path, name: str, values: np.ndarray, known: np.ndarray, where: Path) -> np.ndarray:
    """Rows of ``known`` (sorted ids) that hold ``values``; raises :class:`DataFormatError` naming the first
    line of ``path`` whose value ``where`` does not define."""
    rows = np.minimum(np.searchsorted(known, values), len(known) - 1)
    unknown = known[rows] != values
    if unknown.any():
        row = int(np.argmax(unknown))
        raise DataFormatError(f"{path}:{line_of_row(path, row)}: {name} {int(values[row])} is not in {where}: "
                              f"expected an id that {where.name} defines")
    return rows


def check_ratings(path: Path, rating: np.ndarray) -> None:
    """Raise :class:`DataFormatError` naming the first line of ``path`` whose rating is not in 1..5."""
    bad = (rating < RATINGS.start) | (rating >= RATINGS.stop)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataFormatError(f"{path}:{line_of_row(path, row)}: Rating: expected an integer "
                              f"{RATINGS.start}..{RATINGS.stop - 1}, got {int(rating[row])}")


# ----------------------------------------------------------------------------- joining
def write_lines(out, lines: pa.Array) -> None:
    """Write a string array whose entries end with a newline, straight from its data buffer.
    (Adapted from datasets/taobao/preprocess.py's ``write_lines``.)"""
    if not len(lines):
        return
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], dtype=width)[lines.offset:lines.offset + len(lines) + 1]
    out.write(memoryview(lines.buffers()[2])[int(offsets[0]):int(offsets[-1])])


def histories(item_text: pa.Array, rows: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """``|``-joined ids of the ``lengths[i]`` rows before ``rows[i]``, newest first (``item_text``: the sorted
    ratings' movie ids as text; the rows before one of a user's ratings are its user's earlier ratings)."""
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    back = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)  # 0, 1, .. within a row
    flat = np.repeat(rows, lengths) - back - 1
    width = pa.int32() if offsets[-1] < 2**31 else pa.int64()
    make = pa.ListArray if width == pa.int32() else pa.LargeListArray
    lists = make.from_arrays(pa.array(offsets, width), item_text.take(pa.array(flat)))
    return pc.binary_join(lists, "|")


def csv_lines(*columns: pa.Array | pa.Scalar) -> pa.Array:
    """Output lines: the columns (string arrays of one length, or scalars) joined with commas, each line ending
    with a newline (train/ and test/: ``prefix,hist,item,seen``; the rank files:
    ``label_rating,prefix,hist,item,features``)."""
    lines = pc.binary_join_element_wise(*columns, ",")
    return pc.binary_join_element_wise(lines, pa.scalar(""), "\n")


def preprocess(ratings: Path, users: Path, movies: Path, output: Path, max_history: int = 50,
               min_ratings: int = 2, like_threshold: int = 4) -> dict[str, int]:
    """Write ``output/{train,train_sequences,test,items,rank_train,rank_test}/part-0.txt`` (see the module
    docstring); return the counts (``users``, ``dropped_users``, ``items``, ``rated_items``, ``train``, ``test``,
    and ``train_positives`` / ``test_positives``, the rank rows with label 1).

    Raises:
        DataFormatError: a malformed input line (the message names the file and line).
        ValueError: ``max_history`` < 0, ``min_ratings`` < 1 or ``like_threshold`` outside 1..5.
    """
    if max_history < 0 or min_ratings < 1:
        raise ValueError(f"max_history must be >= 0 and min_ratings >= 1, got {max_history} and {min_ratings}")
    if like_threshold not in RATINGS:
        raise ValueError(f"like_threshold must be a rating {RATINGS.start}..{RATINGS.stop - 1}, got {like_threshold}")
    user_table, movie_table = read_users(users), read_movies(movies)
    r = read_ratings(ratings)
    user_row = check_known(ratings, "UserID", r.user, user_table.ids, users)
    movie_row = check_known(ratings, "MovieID", r.movie, movie_table.ids, movies)
    check_ratings(ratings, r.rating)

    order = np.lexsort((r.movie, r.timestamp, r.user))  # by user, then time, then movie id
    uid, counts = np.unique(r.user[order], return_counts=True)
    keep_user = counts >= min_ratings
    order = order[np.repeat(keep_user, counts)]
    counts = counts[keep_user]
    dropped = int((~keep_user).sum())
    n = len(order)
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    position = np.arange(n, dtype=np.int64) - np.repeat(starts, counts)  # index within the user's ratings
    last = starts + counts - 1
    is_last = np.zeros(n, dtype=bool)
    is_last[last] = True
    item_text = pc.cast(pa.array(r.movie[order]), pa.string())
    prefix = user_table.prefix.take(pa.array(user_row[order]))
    movie_row = movie_row[order]
    rating = r.rating[order]
    # the rank files' first two columns, "label,rating", one string per rating value
    label_rating = pa.array([f"{int(v >= like_threshold)},{v}" for v in RATINGS], pa.string())
    empty = pa.scalar("")

    def rank_lines(rows: np.ndarray, hist: pa.Array, head: pa.Array, item: pa.Array) -> pa.Array:
        """The rank lines of the sorted ratings ``rows`` (``head``, ``item``: their user columns and ids)."""
        return csv_lines(label_rating.take(pa.array(rating[rows] - RATINGS.start)), head, hist, item,
                         movie_table.features.take(pa.array(movie_row[rows])))

    output.mkdir(parents=True, exist_ok=True)
    folders = {name: output / name for name in SPLITS}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:  # the renames happen together, after every file is complete
        tmp = {name: stack.enter_context(atomic_path(folder / "part-0.txt")) for name, folder in folders.items()}
        train_rows = np.flatnonzero(~is_last)
        with open(tmp["train"], "wb") as out, open(tmp["rank_train"], "wb") as rank_out:
            for a in range(0, len(train_rows), BLOCK_ROWS):
                rows = train_rows[a:a + BLOCK_ROWS]
                hist = histories(item_text, rows, np.minimum(position[rows], max_history))
                head, item = prefix.take(pa.array(rows)), item_text.take(pa.array(rows))
                write_lines(out, csv_lines(head, hist, item, empty))
                write_lines(rank_out, rank_lines(rows, hist, head, item))
        with open(tmp["train_sequences"], "wb") as out:  # each user's last training line: its whole sequence
            rows = (last - 1)[counts > 1]  # users with one rating have no training row
            hist = histories(item_text, rows, np.minimum(position[rows], max_history))
            write_lines(out, csv_lines(prefix.take(pa.array(rows)), hist, item_text.take(pa.array(rows)), empty))
        with open(tmp["test"], "wb") as out, open(tmp["rank_test"], "wb") as rank_out:
            hist = histories(item_text, last, np.minimum(position[last], max_history))
            seen = histories(item_text, last, position[last])
            head, item = prefix.take(pa.array(last)), item_text.take(pa.array(last))
            write_lines(out, csv_lines(head, hist, item, seen))
            write_lines(rank_out, rank_lines(last, hist, head, item))
        with open(tmp["items"], "w", encoding="utf-8", newline="\n") as out:
            out.writelines(movie_table.lines)
    liked = rating >= like_threshold
    return {"users": len(counts), "dropped_users": dropped, "items": len(movie_table.ids),
            "rated_items": len(np.unique(r.movie[order])), "train": len(train_rows), "test": len(last),
            "train_positives": int(liked[train_rows].sum()), "test_positives": int(liked[last].sum())}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=Path, required=True, help="ratings.dat (UserID::MovieID::Rating::Timestamp)")
    parser.add_argument("--users", type=Path, required=True, help="users.dat (UserID::Gender::Age::Occupation::Zip)")
    parser.add_argument("--movies", type=Path, required=True, help="movies.dat (MovieID::Title::Genres)")
    parser.add_argument("--output", type=Path, required=True,
                        help="folder that receives train/, train_sequences/, test/, items/, rank_train/, rank_test/")
    parser.add_argument("--max_history", type=int, default=50, help="most ids in hist_item_id (default 50)")
    parser.add_argument("--min_ratings", type=int, default=2, help="drop users with fewer ratings (default 2)")
    parser.add_argument("--like_threshold", type=int, default=4,
                        help="rank files: label 1 for a rating >= this (1..5, default 4)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        counts = preprocess(args.ratings, args.users, args.movies, args.output, args.max_history, args.min_ratings,
                            args.like_threshold)
    except (DataFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if counts["dropped_users"]:
        print(f"dropped {counts['dropped_users']} users with fewer than {args.min_ratings} ratings", file=sys.stderr)
    print(f"users: {counts['users']}, items: {counts['items']} ({counts['rated_items']} rated), train rows: "
          f"{counts['train']}, test rows: {counts['test']} -> {args.output} ({time.perf_counter() - start:.1f} s)")
    print(f"rank labels (rating >= {args.like_threshold}): {counts['train_positives']} of {counts['train']} train "
          f"rows, {counts['test_positives']} of {counts['test']} test rows are 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())

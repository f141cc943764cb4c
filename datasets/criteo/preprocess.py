"""Convert raw Criteo display-ads lines into PaddleRec's slot format.

Reads raw lines on stdin (``label \\t I1..I13 \\t C1..C26``: 40 tab-separated
columns, an empty field is a missing value) and writes one line per record on
stdout::

    click:<label> dense_feature:<v1> ... dense_feature:<v13> 1:<id> ... 26:<id>

This is PaddleRec's ``get_slot_data.py`` transform with one deliberate change:
PaddleRec hashes with Python's salted ``hash()``, so its ids differ from one
process to the next; here ids come from :func:`recstack.data.hashing.criteo_hash`
(CRC-32), which is stable across processes and machines.

* dense ``I<i>``: ``(x - cont_min[i]) / cont_diff[i]`` (not clipped, as in
  PaddleRec); missing -> ``0.0``. Floats are written with 12 significant digits
  (what PaddleRec's Python 2 ``str()`` printed), integral values with ``.0``.
* sparse slot ``k`` (1..26) = raw column ``13 + k``: ``criteo_hash(13 + k, value)``,
  the empty string (missing) hashed too, as PaddleRec does.

Example::

    head -n 41256555 train.txt | python datasets/criteo/preprocess.py > train_slot.txt
    head -n 41256555 train.txt | python datasets/criteo/preprocess.py --format parquet --output train.parquet

``--format parquet`` writes the same records in the ``slot_parquet`` layout (doc/custom_reader.md#parquet).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from recstack.data.hashing import CRITEO_HASH_DIM, criteo_hash

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_COLUMNS = 1 + NUM_DENSE + NUM_SPARSE  # label, I1..I13, C1..C26
CONT_MIN = (0, -3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
CONT_DIFF = (20, 603, 100, 50, 64000, 500, 100, 50, 500, 10, 10, 10, 50)
_CHUNK_LINES = 10_000
_MAX_CACHE = 20_000  # entries per column memo (cleared when full): bounds memory to ~100 MB


class InputError(ValueError):
    """A malformed input line; the message names the line and the column."""


def format_float(value: float) -> str:
    """Deterministic short float text: 12 significant digits, ``0.0`` / ``1.0`` for integers."""
    text = format(value, ".12g")
    return text if any(c in text for c in ".en") else text + ".0"


def dense_token(column: int, raw: str) -> str:
    """``dense_feature:<v>`` for raw dense column ``column`` (1..13) holding ``raw``.

    Raises:
        ValueError: ``raw`` is neither empty nor a number.
    """
    if raw == "":
        return "dense_feature:0.0"
    value = (float(raw) - CONT_MIN[column - 1]) / CONT_DIFF[column - 1]
    return "dense_feature:" + format_float(value)


def convert_line(
    fields: list[str], caches: list[dict[str, str]], hash_dim: int, line_no: int
) -> str:
    """Convert the 40 raw fields of one record into one slot-format line (no newline).

    Args:
        fields: the tab-separated raw fields.
        caches: 40 ``raw text -> token`` memos, one per column (values repeat a lot,
            so most tokens are looked up rather than recomputed); index 0 is unused.
        hash_dim: number of hash buckets.
        line_no: 1-based input line number, for error messages.

    Raises:
        InputError: wrong column count, non-integer label or non-numeric dense value.
    """
    if len(fields) != NUM_COLUMNS:
        raise InputError(
            f"stdin line {line_no}: expected {NUM_COLUMNS} tab-separated columns, got {len(fields)}"
        )
    try:
        tokens = [f"click:{int(fields[0])}"]
    except ValueError:
        raise InputError(
            f"stdin line {line_no}: column 0 (label): expected an integer, got {fields[0]!r}"
        ) from None
    for i in range(1, NUM_COLUMNS):
        raw, cache = fields[i], caches[i]
        token = cache.get(raw)
        if token is None:
            if i <= NUM_DENSE:
                try:
                    token = dense_token(i, raw)
                except ValueError:
                    raise InputError(
                        f"stdin line {line_no}: column {i} (I{i}): expected a number, got {raw!r}"
                    ) from None
            else:
                token = f"{i - NUM_DENSE}:{criteo_hash(i, raw, hash_dim)}"
            if len(cache) >= _MAX_CACHE:
                cache.clear()
            cache[raw] = token
        tokens.append(token)
    return " ".join(tokens)


def converted_chunks(lines: Iterable[bytes], hash_dim: int) -> Iterator[str]:
    """Slot-format text of raw lines, :data:`_CHUNK_LINES` lines a chunk (see :func:`convert_stream`)."""
    caches: list[dict[str, str]] = [{} for _ in range(NUM_COLUMNS)]
    chunk: list[str] = []
    for count, raw in enumerate(lines, start=1):
        try:
            fields = raw.decode("utf-8").rstrip("\r\n").split("\t")
        except UnicodeDecodeError:
            raise InputError(f"stdin line {count}: not valid UTF-8 text") from None
        chunk.append(convert_line(fields, caches, hash_dim, count))
        if len(chunk) >= _CHUNK_LINES:
            yield "\n".join(chunk) + "\n"
            chunk.clear()
    if chunk:
        yield "\n".join(chunk) + "\n"


def convert_to_parquet(lines: Iterable[bytes], output: str, hash_dim: int) -> int:
    """Convert raw lines to one Parquet file in the ``slot_parquet`` layout (doc/custom_reader.md#parquet), parsed
    by the slot reader from the slot text of :func:`converted_chunks`; streamed, written atomically.

    Returns:
        The number of records written.
    """
    from recstack.config import from_dict  # (the text path needs no more than the hashing)
    from recstack.data.parquet import write_parquet
    from recstack.data.to_parquet import parquet_parts

    def chunks() -> Iterator[tuple[bytes, int]]:
        line = 1
        for text in converted_chunks(lines, hash_dim):
            data = text.encode("utf-8")
            yield data, line
            line += data.count(b"\n")

    config = from_dict({"hyper_parameters": {"sparse_inputs_slots": NUM_SPARSE + 1, "dense_input_dim": NUM_DENSE}})
    schema, parts = parquet_parts(config, "slot", chunks(), "converted stdin")
    return write_parquet(output, parts, schema)


def convert_stream(lines: Iterable[bytes], out: BinaryIO, hash_dim: int) -> int:
    """Convert raw lines (bytes, UTF-8) to slot-format text written to ``out`` in chunks.

    Args:
        lines: raw Criteo lines, e.g. ``sys.stdin.buffer``.
        out: a binary stream (``sys.stdout.buffer``).
        hash_dim: number of hash buckets.

    Returns:
        The number of records written.

    Raises:
        InputError: a malformed line (see :func:`convert_line`) or one that is not UTF-8.
    """
    count = 0
    for text in converted_chunks(lines, hash_dim):
        out.write(text.encode("utf-8"))
        count += text.count("\n")
    return count


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: raw Criteo on stdin -> slot format on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--hash-dim", type=int, default=CRITEO_HASH_DIM, help="id buckets (default 1000001)"
    )
    parser.add_argument("--format", choices=("text", "parquet"), default="text", dest="fmt",
                        help="'parquet': write the slot_parquet layout (click, dense_feature list<float>, 1..26) "
                             "to --output instead of slot text to stdout")
    parser.add_argument("--output", help="--format parquet: the .parquet file to write")
    args = parser.parse_args(argv)
    if args.hash_dim < 1:
        parser.error("--hash-dim must be positive")
    if args.fmt == "parquet" and not args.output:
        parser.error("--format parquet needs --output FILE.parquet")
    try:
        if args.fmt == "parquet":
            convert_to_parquet(sys.stdin.buffer, args.output, args.hash_dim)
            return 0
        convert_stream(sys.stdin.buffer, sys.stdout.buffer, args.hash_dim)
    except InputError as err:
        print(f"{sys.argv[0]}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Deterministic feature hashing.

PaddleRec hashes Criteo's categorical values with Python's built-in ``hash()``,
which is salted per process (``PYTHONHASHSEED``), so the same raw line maps to
different ids from one run to the next. recstack uses CRC-32 instead: stable
across processes, machines and Python versions, and fast (C implementation).
"""

from __future__ import annotations

import zlib

CRITEO_HASH_DIM = 1000001


def stable_hash(text: str, hash_dim: int) -> int:
    """Hash ``text`` into ``[0, hash_dim)`` with CRC-32 (process-independent).

    Args:
        text: the string to hash (UTF-8 encoded before hashing).
        hash_dim: number of buckets.

    Returns:
        ``zlib.crc32(text.encode("utf-8")) % hash_dim``.
    """
    return zlib.crc32(text.encode("utf-8")) % hash_dim


def criteo_hash(column_index: int, value: str, hash_dim: int = CRITEO_HASH_DIM) -> int:
    """PaddleRec's Criteo id, ``hash(str(column_index) + value) % hash_dim``, made stable.

    Args:
        column_index: the raw column index (14..39 for C1..C26; column 0 is the label).
        value: the raw categorical value; the empty string (missing) is hashed too,
            exactly as PaddleRec does.
        hash_dim: number of buckets (PaddleRec: 1000001).
    """
    return stable_hash(str(column_index) + value, hash_dim)

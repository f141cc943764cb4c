"""Batches from block readers, prepared ahead of the model in a background thread.

Parsing (pyarrow, numpy) releases the GIL, so a background thread overlaps
reading with the training step without a second process. Batches are torch
tensors sharing memory with the parsed blocks (no copy for full batches).

Variable-length columns (:class:`recstack.data.base.RaggedArray`, e.g. DIN's
behaviour history) are padded per batch: each batch's rows are padded with 0 to the
length of its own longest row, never to a global maximum. With ``bucket_by_length`` the rows of each block are
grouped by length into batches (whose order is then shuffled with the training shuffle), so a
batch holds rows of similar length and pads little.

Grouped blocks (rows are groups of samples, per-sample columns are
:class:`~recstack.data.base.GroupedRows`, e.g. GroupRTPInput) are cut, shuffled and
joined by rows like any block, so ``batch_size`` counts groups, a group is never split
across batches, and a batch holds the concatenated samples of its groups.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from recstack.data.base import BatchColumn, Block, BlockReader, RaggedArray

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]

_DONE = object()


class BatchLoader:
    """Iterable over batches (``dict[str, Tensor]``) of a reader's files.

    Args:
        reader: the block reader (its ``file_list`` is read in order).
        batch_size: rows per batch (samples, or groups for grouped blocks); the last batch may be smaller
            unless ``drop_last``.
        shuffle: shuffle file order and rows within each block, differently each epoch.
        seed: base seed of the shuffling (combined with the epoch from :meth:`set_epoch`).
        drop_last: drop a final incomplete batch.
        num_workers: 0 parses in the consuming thread; ``n >= 1`` prepares batches in a
            background thread with ``n`` parsing threads.
        cache_dir: binary cache folder (see :class:`recstack.data.base.BinaryCache`).
        prefetch: batches kept ready ahead of the consumer.
        bucket_by_length: for blocks with :class:`~recstack.data.base.RaggedArray` columns: sort each
            block's rows by length, cut them into batches and (when shuffling) shuffle their order.
    """

    def __init__(self, reader: BlockReader, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, num_workers: int = 1, cache_dir: str | None = None,
                 prefetch: int = 16, bucket_by_length: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.reader, self.batch_size = reader, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_workers, self.cache_dir, self.prefetch = num_workers, cache_dir, prefetch
        self.bucket_by_length = bucket_by_length
        self.epoch = 0
        self.shard_rank, self.shard_count = 0, 1
        #: batches the current pass is expected to yield, for a progress bar: the previous complete pass's
        #: count, else (first pass) an estimate from the rows per byte of the data parsed so far; None
        #: before anything is known. Updated by the producing thread as it reads.
        self.expected_batches: int | None = None
        self._last_count: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of an epoch (same seed + epoch → same order)."""
        self.epoch = epoch

    def set_shard(self, rank: int, count: int) -> None:
        """Read only shard ``rank`` of ``count`` (distributed training, :mod:`recstack.dist`).

        With at least ``count`` files, shard ``r`` reads files ``r, r + count, ...`` of the (epoch-shuffled)
        file list; with fewer files, every shard reads all files and keeps rows ``r, r + count, ...`` of the
        (shuffled) row stream, so the ranks' batches ``k`` together are the rows of one process's batch ``k``
        with ``count`` times the batch size. Every rank shuffles with the same seed, so the shards are disjoint.
        """
        if not 0 <= rank < count:
            raise ValueError(f"shard {rank} of {count}")
        self.shard_rank, self.shard_count = rank, count

    def _shard_by_file(self) -> bool:
        return self.shard_count > 1 and len(self.reader.file_list) >= self.shard_count

    def shard_description(self) -> str:
        """What this shard reads, for the log."""
        if self.shard_count == 1:
            return "all data"
        if self._shard_by_file():
            return (f"files {self.shard_rank}, {self.shard_rank} + {self.shard_count}, ... of "
                    f"{len(self.reader.file_list)} (file sharding)")
        return (f"rows {self.shard_rank}, {self.shard_rank} + {self.shard_count}, ... of all "
                f"{len(self.reader.file_list)} file(s) (row sharding: fewer files than ranks)")

    # ------------------------------------------------------------------ blocks
    def _files(self, rng: np.random.Generator | None) -> list[str]:
        files = list(self.reader.file_list)
        if rng is not None:
            rng.shuffle(files)
        if self._shard_by_file():
            files = files[self.shard_rank::self.shard_count]
        return files

    def _estimate(self, rows: int, start_bytes: int, total_bytes: int, yielded: int) -> None:
        """First pass: ``expected_batches`` from the rows kept so far and the share of the bytes parsed."""
        done = getattr(self.reader, "bytes_read", 0) - start_bytes
        if self._last_count is not None or total_bytes <= 0 or done <= 0:
            return
        rows_total = rows * total_bytes / min(done, total_bytes)
        batches = rows_total / self.batch_size
        self.expected_batches = max(yielded, math.floor(batches) if self.drop_last else math.ceil(batches))

    def _batches(self, pool: ThreadPoolExecutor | None) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        bs = self.batch_size
        carry: Block | None = None
        by_row, rows_seen = self.shard_count > 1 and not self._shard_by_file(), 0
        files = self._files(rng)
        self.expected_batches = self._last_count
        try:
            total_bytes = sum(os.path.getsize(f) for f in files)
        except OSError:
            total_bytes = 0
        start_bytes, rows_kept, yielded = getattr(self.reader, "bytes_read", 0), 0, 0
        for block in self.reader.iter_blocks(files, self.cache_dir, pool):
            if rng is not None:
                perm = rng.permutation(len(next(iter(block.values()))))
                block = {k: v[perm] for k, v in block.items()}
            if by_row:  # this shard's rows of the global row stream (see set_shard)
                n = len(next(iter(block.values())))
                keep = np.arange((self.shard_rank - rows_seen) % self.shard_count, n, self.shard_count)
                rows_seen += n
                block = {k: v[keep] for k, v in block.items()}
                if len(keep) == 0:
                    continue
            rows_kept += len(next(iter(block.values())))
            self._estimate(rows_kept, start_bytes, total_bytes, yielded)
            if carry is not None:
                block = {k: self._join(k, carry[k], v) for k, v in block.items()}
                carry = None
            n = len(next(iter(block.values())))
            if self.bucket_by_length and any(isinstance(v, RaggedArray) for v in block.values()):
                block = self._bucket(block, n, rng)
            full = n - n % bs
            for start in range(0, full, bs):
                yielded += 1
                yield self._tensors({k: v[start:start + bs] for k, v in block.items()})
            if full < n:
                carry = {k: v[full:] for k, v in block.items()}
        if carry is not None and not self.drop_last:
            yielded += 1
            yield self._tensors(carry)
        self._last_count = self.expected_batches = yielded  # a complete pass: the next one's total

    # ------------------------------------------------------------------ ragged columns
    @staticmethod
    def _join(name: str, a: np.ndarray | RaggedArray, b: np.ndarray | RaggedArray) -> np.ndarray | RaggedArray:
        """Rows of ``a`` then ``b``."""
        if isinstance(a, (RaggedArray, BatchColumn)):
            return type(a).concatenate([a, b])
        return np.concatenate([a, b])

    @staticmethod
    def _lengths(block: Block) -> np.ndarray:
        """Each row's longest variable-length column ``(n,)``."""
        return np.max([v.lengths for v in block.values() if isinstance(v, RaggedArray)], axis=0)

    def _bucket(self, block: Block, n: int, rng: np.random.Generator | None) -> Block:
        """Rows sorted by length (stable: ties keep the shuffled order), cut into batches whose order is
        shuffled by ``rng``. The ``n % batch_size`` remaining rows come last (carried to the next block):
        a run of adjacent lengths at a random place when shuffling (so the longest rows are not always
        the ones carried to the end of the epoch), the longest ones otherwise."""
        order = np.argsort(self._lengths(block), kind="stable")
        rest = n % self.batch_size
        start = int(rng.integers(0, n - rest + 1)) if rng is not None and rest else n - rest
        remainder = order[start:start + rest]
        order = np.concatenate([order[:start], order[start + rest:]])
        groups = order.reshape(-1, self.batch_size)
        if rng is not None:
            groups = groups[rng.permutation(len(groups))]
        order = np.concatenate([groups.reshape(-1), remainder])
        return {k: v[order] for k, v in block.items()}

    @staticmethod
    def _tensors(batch: Block) -> Batch:
        """Torch tensors of a batch; a :class:`RaggedArray` padded with 0 to the batch's longest row; a
        :class:`~recstack.data.base.BatchColumn` (grouped rows) as its :meth:`to_batch` array."""
        return {k: torch.from_numpy(v.to_padded() if isinstance(v, RaggedArray)
                                    else np.ascontiguousarray(v.to_batch() if isinstance(v, BatchColumn) else v))
                for k, v in batch.items()}

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Batch]:
        if self.num_workers <= 0:
            yield from self._batches(None)
            return
        yield from self._background()

    def _background(self) -> Iterator[Batch]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="recstack-parse") \
                if self.num_workers > 1 else None
            try:
                for batch in self._batches(pool):
                    if not put(batch):
                        return
                put(_DONE)
            except BaseException as err:  # re-raised in the consumer
                put(err)
            finally:
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)

        thread = threading.Thread(target=produce, name="recstack-loader", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)


"""Batches from block readers, prepared ahead of the model in a background thread.

Parsing (pyarrow, numpy) releases the GIL, so a background thread overlaps
reading with the training step without a second process. Batches are torch
tensors sharing memory with the parsed blocks (no copy for full batches).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from recstack.data.base import Block, BlockReader

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]

_DONE = object()


class BatchLoader:
    """Iterable over batches (``dict[str, Tensor]``) of a reader's files.

    Args:
        reader: the block reader (its ``file_list`` is read in order).
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: shuffle file order and rows within each block, differently each epoch.
        seed: base seed of the shuffling (combined with the epoch from :meth:`set_epoch`).
        drop_last: drop a final incomplete batch.
        num_workers: 0 parses in the consuming thread; ``n >= 1`` prepares batches in a
            background thread with ``n`` parsing threads.
        cache_dir: binary cache folder (see :class:`recstack.data.base.BinaryCache`).
        prefetch: batches kept ready ahead of the consumer.
    """

    def __init__(self, reader: BlockReader, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, num_workers: int = 1, cache_dir: str | None = None,
                 prefetch: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.reader, self.batch_size = reader, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_workers, self.cache_dir, self.prefetch = num_workers, cache_dir, prefetch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of an epoch (same seed + epoch → same order)."""
        self.epoch = epoch

    # ------------------------------------------------------------------ blocks
    def _files(self, rng: np.random.Generator | None) -> list[str]:
        files = list(self.reader.file_list)
        if rng is not None:
            rng.shuffle(files)
        return files

    def _batches(self, pool: ThreadPoolExecutor | None) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        bs = self.batch_size
        carry: Block | None = None
        for block in self.reader.iter_blocks(self._files(rng), self.cache_dir, pool):
            if rng is not None:
                perm = rng.permutation(len(next(iter(block.values()))))
                block = {k: v[perm] for k, v in block.items()}
            if carry is not None:
                block = {k: np.concatenate([carry[k], v]) for k, v in block.items()}
                carry = None
            n = len(next(iter(block.values())))
            full = n - n % bs
            for start in range(0, full, bs):
                yield {k: torch.from_numpy(v[start:start + bs]) for k, v in block.items()}
            if full < n:
                carry = {k: v[full:] for k, v in block.items()}
        if carry is not None and not self.drop_last:
            yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in carry.items()}

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


"""Micro-batching: concurrent requests share one inference call.

Each request's checked inputs are queued. A worker task takes the first queued request, then keeps
taking requests until the merged batch holds ``max_batch_size`` rows or ``max_wait_ms`` has passed
since it took the first (``0``: only what is already queued), concatenates their rows, runs one
inference call in a dedicated thread, and splits the outputs back by each request's row count, in
order. Requests are merged only when their per-row shapes agree (DIN's padded history lengths can
differ between requests; those go into a later call), so padding never changes a prediction, and a
request larger than ``max_batch_size`` runs alone. If a merged call fails, each of its requests is
retried alone, so one bad request cannot fail the others. While the worker runs a call, new
requests queue up and form the next batch: under load, batches grow by themselves.

With batching off (``enabled=False``), each request runs its own call in the thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Predict = Callable[[Arrays], list[np.ndarray]]


@dataclass
class BatchStats:
    """Counters of the service (``GET /stats`` and ``/metadata``)."""

    requests: int = 0
    rows: int = 0
    inference_calls: int = 0
    merged_calls: int = 0  # calls that served more than one request
    max_requests_per_call: int = 0
    max_rows_per_call: int = 0
    failed_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, requests: int, rows: int) -> None:
        with self._lock:
            self.requests += requests
            self.rows += rows
            self.inference_calls += 1
            self.merged_calls += requests > 1
            self.max_requests_per_call = max(self.max_requests_per_call, requests)
            self.max_rows_per_call = max(self.max_rows_per_call, rows)

    def to_dict(self) -> dict[str, float]:
        with self._lock:
            data = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        data["mean_requests_per_call"] = round(data["requests"] / data["inference_calls"], 3) \
            if data["inference_calls"] else 0.0
        return data


@dataclass
class _Item:
    arrays: Arrays
    rows: int
    key: tuple
    future: asyncio.Future


def _shape_key(arrays: Arrays) -> tuple:
    return tuple((name, a.shape[1:], a.dtype.str) for name, a in arrays.items())


class MicroBatcher:
    """Merges concurrent requests into shared inference calls (module docstring).

    Args:
        predict: inputs → outputs (one ``(n, ...)`` array per output); called from one worker thread.
        max_batch_size: most rows merged into one call.
        max_wait_ms: longest wait for more requests after the first of a batch arrived.
        enabled: ``False``: every request runs its own call (in a thread pool of ``threads``).
        threads: inference threads when batching is off.
    """

    def __init__(self, predict: Predict, max_batch_size: int = 256, max_wait_ms: float = 0.0,
                 enabled: bool = True, threads: int = 4) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict = predict
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1e3
        self.enabled = enabled
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(1 if enabled else max(1, threads), thread_name_prefix="inference")
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: list[_Item] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.enabled:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker and the threads."""
        if self._worker is not None:
            while (self._queue is not None and not self._queue.empty()) or self._carry:
                await asyncio.sleep(0.005)
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ requests
    async def submit(self, arrays: Arrays, alone: bool = False) -> list[np.ndarray]:
        """Outputs for one request's rows (exactly its rows, in order); ``alone``: never merged with another
        request (inputs with more than one batch axis, e.g. grouped samples and their groups' images)."""
        rows = len(next(iter(arrays.values())))
        loop = asyncio.get_running_loop()
        if not self.enabled:
            outputs = await loop.run_in_executor(self._executor, self.predict, arrays)
            self.stats.record(1, rows)
            return outputs
        if self._worker is None or self._worker.done():
            raise RuntimeError("the micro-batcher is not running")
        future = loop.create_future()
        item = _Item(arrays, rows, ("alone", id(future)) if alone else _shape_key(arrays), future)
        self._queue.put_nowait(item)
        return await item.future

    # ------------------------------------------------------------------ worker
    async def _collect(self) -> list[_Item]:
        """The requests of the next call: the oldest waiting one and those that fit with it."""
        pending, self._carry = self._carry, []  # left over from the last round: looked at first, without waiting
        first = pending.pop(0) if pending else await self._queue.get()
        batch, rows, skipped = [first], first.rows, []

        def take(item: _Item) -> bool:
            """Add ``item`` when it fits; ``False`` once the batch is full."""
            nonlocal rows
            if item.key != first.key or rows + item.rows > self.max_batch_size:
                skipped.append(item)
            else:
                batch.append(item)
                rows += item.rows
            return rows < self.max_batch_size

        full = rows >= self.max_batch_size
        while pending and not full:
            full = not take(pending.pop(0))
        deadline = time.monotonic() + self.max_wait
        while not full:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:  # past the wait: only what is already queued
                    item = self._queue.get_nowait()
                else:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            full = not take(item)
        self._carry = skipped + pending
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            batch = [item for item in batch if not item.future.done()]  # a client that went away
            if not batch:
                continue
            await self._call(loop, batch)

    async def _call(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        rows = sum(item.rows for item in batch)
        try:
            if len(batch) == 1:
                merged = batch[0].arrays
            else:
                merged = {name: np.concatenate([item.arrays[name] for item in batch]) for name in batch[0].arrays}
            outputs = await loop.run_in_executor(self._executor, self.predict, merged)
        except Exception as err:  # noqa: BLE001 - handed to the requests
            self.stats.failed_calls += 1
            if len(batch) > 1:
                logger.warning("a merged call of %d requests failed (%s); retrying each alone", len(batch), err)
                for item in batch:
                    await self._call(loop, [item])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(err)
            return
        self.stats.record(len(batch), rows)
        start = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result([out[start:start + item.rows] for out in outputs])
            start += item.rows

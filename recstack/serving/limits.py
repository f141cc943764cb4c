"""Resource limits of the prediction service: slow clients, connections, request-body memory.

uvicorn (0.54, with its h11 protocol: ``httptools`` is not a dependency) has a keep-alive timeout,
``limit_concurrency`` (a 503 once a request's header is complete) and a header size limit
(``h11_max_incomplete_event_size``), but no header-read or body-read timeout: a client that
trickles its header or stalls its body holds a connection for ever. This module adds, around
uvicorn and the FastAPI application (doc/serving.md, "Limits"):

- :func:`guarded_protocol`: uvicorn's h11 protocol with a **header timeout** (a request's header must
  be complete ``timeout_header`` s after its first byte, or after the connection opened: else 408 and
  close; a connection that sent nothing is closed silently), a **connection cap** (beyond
  ``max_connections`` open connections a new one gets a 503 with ``Retry-After`` and is closed at
  once), and a bounded **lingering close**: after an answer given before the request's body was read
  (a 413, 415, 503 ...) the rest of the body is read and dropped for at most :data:`LINGER_SECONDS`
  and ``linger_bytes`` (so the client, still sending, reads the answer instead of a connection reset),
  then the connection is closed unless the body ended in time;
- :class:`BodyTimeoutMiddleware`: the **body timeout** (the whole body must arrive within
  ``timeout_body`` s of the application's first read: else 408 and ``Connection: close``);
- :class:`MemoryGate`: the **memory of request bodies**: at most ``max_buffered_bytes`` of bodies held
  at once (a request waits up to ``queue_timeout`` s for room, then 503 + ``Retry-After``), and at most
  ``max_parallel_parsing`` large bodies parsed at once (JSON parsing makes Python objects of ~5-25x
  the body's size); after a large parse the C heap is trimmed (:func:`trim_memory`, glibc's
  ``malloc_trim``), so the RSS returns to where it was.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from recstack.serving.validation import RequestError

logger = logging.getLogger("recstack.serving")


class ServiceBusy(RequestError):
    """The server has no room for the request now (503, with ``Retry-After``)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, status=503)
        self.retry_after = retry_after


def raw_response(status: int, reason: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 answer in the service's error format (written to the socket
    directly, where no request was parsed)."""
    body = json.dumps({"code": status, "error": {"message": message}}, separators=(",", ":")).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", "connection: close",
            f"content-length: {len(body)}"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------- the HTTP protocol
#: longest a connection is read (and the data dropped) after an answer given before its request's body was read
LINGER_SECONDS = 2.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a connection cap and a bounded lingering close after an
    answer given before the request's body was read. The class attributes are set by :func:`guarded_protocol`."""

    timeout_header: float = 10.0
    max_connections: int | None = None
    linger_bytes: int = 16 << 20

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._linger_left = 0
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            logger.warning("connection refused: %d open connections (--max_connections %d)",
                           len(self.connections) - 1, self.max_connections)
            transport.write(raw_response(503, "Service Unavailable",
                                         f"too many open connections (--max_connections {self.max_connections}); "
                                         "retry later", retry_after=1))
            transport.close()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:  # the rest of an answered request's body: dropped, within bounds
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._close_lingering()
                return
        elif self.conn.their_state is h11.IDLE:
            self._header_bytes += len(data)
            if self._header_timer is None:  # the first byte of the next request on a kept-alive connection
                self._arm_header_timer()
        super().data_received(data)
        if self._linger_timer is not None and self.conn.their_state is h11.IDLE:  # the body ended in time
            self._linger_timer.cancel()
            self._linger_timer = None
            self._arm_header_timer()  # (uvicorn's keep-alive timer was cancelled by the data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()
            self._header_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
            # answered before the body was read: read and drop the rest for a while, so the client (still sending)
            # reads the answer; kept alive only if the body ends in time
            self._unset_keepalive_if_required()
            self._linger_left = self.linger_bytes
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._close_lingering)

    def _close_lingering(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.timeout_header, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._header_bytes:  # a request started and its header did not complete in time
            logger.info("closed a connection whose request header was not complete in %.3g s (--timeout_header)",
                        self.timeout_header)
            self.transport.write(raw_response(408, "Request Timeout",
                                              f"request header not complete within {self.timeout_header:g} s "
                                              "(--timeout_header)"))
        self.transport.close()


def guarded_protocol(timeout_header: float, max_connections: int | None,
                     linger_bytes: int = 16 << 20) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these settings (uvicorn builds one protocol per connection
    from a class: ``uvicorn.Config(http=...)``)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"timeout_header": float(timeout_header), "max_connections": max_connections,
                 "linger_bytes": int(linger_bytes)})


# ---------------------------------------------------------------------- ASGI middleware: the body
def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
    return False


class BodyTimeoutMiddleware:
    """ASGI middleware: the request body must arrive within ``timeout_body`` s of the application's first read
    (:class:`RequestError` 408 from ``receive`` beyond, which the endpoint answers with ``Connection: close``)."""

    def __init__(self, app: Any, timeout_body: float) -> None:
        self.app, self.timeout_body = app, timeout_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        state = {"deadline": None, "complete": not _has_body(scope), "timed_out": False}

        async def timed_receive() -> dict[str, Any]:
            if state["complete"]:
                return await receive()
            if state["deadline"] is None:
                state["deadline"] = loop.time() + self.timeout_body
            try:
                message = await asyncio.wait_for(receive(), max(0.0, state["deadline"] - loop.time()))
            except asyncio.TimeoutError:
                state["timed_out"] = True
                raise RequestError(f"request body not received within {self.timeout_body:g} s (--timeout_body)",
                                   status=408) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["complete"] = True
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and state["timed_out"]:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, timed_receive, guarded_send)


# ---------------------------------------------------------------------- memory of request bodies
_LIBC: Any = None

#: a body at least this large trims the C heap after its parse, and when it is the last one out
TRIM_BYTES = 1 << 20


def trim_memory() -> bool:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim(0)``); ``False`` elsewhere.

    Parsing a large JSON body allocates (and frees) many Python objects; glibc keeps the freed memory in its
    arenas (one per thread), so without this the RSS stays at its peak for good.
    """
    global _LIBC
    if _LIBC is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC = libc if hasattr(libc, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


class MemoryGate:
    """Bounds the memory that request bodies take: bytes held, and parses at once.

    Args:
        max_buffered_bytes: most body bytes held at once over all requests (from the start of reading to the
            end of the request).
        max_parallel_parsing: most large bodies (above :data:`recstack.serving.app.OFF_LOOP_BYTES`) parsed at
            once.
        queue_timeout: seconds a request waits for room (either) before a 503.
        trim: :func:`trim_memory` after a large parse when no other parse runs.
    """

    def __init__(self, max_buffered_bytes: int, max_parallel_parsing: int, queue_timeout: float,
                 trim: bool = True) -> None:
        self.max_buffered_bytes, self.max_parallel_parsing = max_buffered_bytes, max_parallel_parsing
        self.queue_timeout, self.trim = queue_timeout, trim
        self.buffered = 0
        self.parsing = 0
        self.peak_parsing = 0
        self.refused = 0
        self._room = asyncio.Condition()
        self._parse_slots = asyncio.Semaphore(max_parallel_parsing)

    async def reserve(self, size: int) -> int:
        """Reserve ``size`` bytes (at most the whole budget) of the body budget; returns what to :meth:`release`.

        Raises:
            ServiceBusy: no room within ``queue_timeout`` s.
        """
        size = min(size, self.max_buffered_bytes)
        async with self._room:
            if self.buffered + size > self.max_buffered_bytes:
                try:
                    await asyncio.wait_for(self._room.wait_for(lambda: self.buffered + size <= self.max_buffered_bytes),
                                           self.queue_timeout)
                except asyncio.TimeoutError:
                    self.refused += 1
                    raise ServiceBusy(f"the server holds {self.buffered} bytes of request bodies (--max_buffered_bytes "
                                      f"{self.max_buffered_bytes}); retry later") from None
            self.buffered += size
        return size

    async def release(self, size: int) -> None:
        """Give back what :meth:`reserve` gave; the last large body out trims the C heap (:func:`trim_memory`)."""
        if size:
            async with self._room:
                self.buffered -= size
                self._room.notify_all()
                idle = self.buffered == 0 and self.parsing == 0
            if idle and self.trim and size >= TRIM_BYTES:
                trim_memory()

    @asynccontextmanager
    async def parse_slot(self) -> AsyncIterator[None]:
        """One of the ``max_parallel_parsing`` slots for parsing a large body.

        Raises:
            ServiceBusy: none free within ``queue_timeout`` s.
        """
        try:
            await asyncio.wait_for(self._parse_slots.acquire(), self.queue_timeout)
        except asyncio.TimeoutError:
            self.refused += 1
            raise ServiceBusy(f"{self.max_parallel_parsing} large request(s) are being parsed "
                              "(--max_parallel_parsing); retry later") from None
        self.parsing += 1
        self.peak_parsing = max(self.peak_parsing, self.parsing)
        try:
            yield
        finally:
            self.parsing -= 1
            self._parse_slots.release()

    def stats(self) -> dict[str, int]:
        return {"buffered_bytes": self.buffered, "parsing": self.parsing, "peak_parsing": self.peak_parsing,
                "refused_busy": self.refused}

"""The HTTP prediction service (FastAPI on uvicorn) over an exported model; ``tools/serve.py`` runs it.

Endpoints (doc/serving.md has examples):

=================== =========================================================================
``GET /health``     ``{"status": "ok", "model": ...}`` once the model is loaded
``GET /metadata``   model name, inputs (name, dtype, shape, id bounds), outputs per task, versions,
                    backend and settings, limits, micro-batching counters
``GET /stats``      the micro-batching counters (requests, inference calls, merged calls, ...)
``POST /predict``   JSON ``{"rows": [{<input>: <value>, ...}, ...]}`` or ``{"inputs": {<input>: [...]}}``
``POST /upload``    the raw body is a data file in the model's reader format (PaddleRec's tutorial)
``POST /recall``    a retrieval export: the user inputs as for ``/predict`` (+ ``k``, ``exclude``) -> the
                    top-K item ids and scores per row (:mod:`recstack.serving.recall`)
=================== =========================================================================

Both prediction endpoints answer PaddleRec's shape, ``{"code": 200, "dtype": "float32", "data":
[[...], ...]}`` (one row per sample: the outputs side by side, named by ``columns``), plus
``outputs`` (each output by name, ``(n, ...)`` lists) and ``rows``. Errors answer ``{"code": <status>,
"error": {"message", "field", "line", "error_id"}}``: 4xx for bad requests (the message names the
field / row / line), 5xx for failures of the server, with an ``error_id`` that the log line of the
failure carries too.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from recstack.serving.batcher import MicroBatcher
from recstack.serving.limits import (
    TRIM_BYTES,
    BodyTimeoutMiddleware,
    MemoryGate,
    ServiceBusy,
    guarded_protocol,
    trim_memory,
)
from recstack.serving.validation import RequestError, check_json_size, parse_json, to_arrays

logger = logging.getLogger("recstack.serving")


@dataclass
class ServingOptions:
    """Service settings (``tools/serve.py`` flags).

    Attributes:
        batching: merge concurrent requests into shared inference calls.
        max_batch_size: most rows of one merged call.
        max_wait_ms: longest wait for more requests after the first of a batch.
        max_body_bytes: largest request body (413 beyond).
        max_rows: most rows (samples) in one request (413 beyond).
        threads: inference threads when batching is off.
        timeout_header: seconds for a request's header to arrive (408 and close beyond).
        timeout_body: seconds for a request's body to arrive, from the first read (408 and close beyond).
        timeout_keep_alive: seconds an idle kept-alive connection stays open.
        max_connections: most open connections (a new one beyond gets 503 and is closed).
        max_buffered_bytes: most request-body bytes held at once over all requests (503 after
            ``queue_timeout`` beyond).
        max_parallel_parsing: most large bodies parsed at once (503 after ``queue_timeout`` beyond).
        queue_timeout: seconds a request waits for room under the two limits above.
        trim_memory: give freed C-heap memory back after large parses (glibc ``malloc_trim``).
    """

    batching: bool = True
    max_batch_size: int = 256
    max_wait_ms: float = 0.0
    max_body_bytes: int = 8 << 20
    max_rows: int = 4096
    threads: int = 4
    timeout_header: float = 10.0
    timeout_body: float = 20.0
    timeout_keep_alive: float = 5.0
    max_connections: int = 512
    max_buffered_bytes: int = 64 << 20
    max_parallel_parsing: int = 1
    queue_timeout: float = 10.0
    trim_memory: bool = True


def _json(content: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(content, separators=(",", ":"), allow_nan=False), status_code=status,
                    media_type="application/json", headers=headers)


def error_response(status: int, message: str, field: str | None = None, line: int | None = None,
                   error_id: str | None = None, headers: dict[str, str] | None = None) -> Response:
    error = {"message": message}
    error.update({k: v for k, v in (("field", field), ("line", line), ("error_id", error_id)) if v is not None})
    return _json({"code": status, "error": error}, status, headers)


def predictions(model: Any, outputs: list[np.ndarray], rows: int) -> dict[str, Any]:
    """The response body of a prediction: PaddleRec's ``code/dtype/data`` plus outputs by name.

    Raises:
        RuntimeError: an output holds NaN / inf (a server failure: never answered as a 200).
    """
    flat = [np.asarray(o, dtype=np.float32).reshape(rows, -1) for o in outputs]
    for name, values in zip(model.output_names, flat):
        if not np.isfinite(values).all():
            raise RuntimeError(f"output {name} holds non-finite values")
    columns = [name if f.shape[1] == 1 else f"{name}[{j}]" for name, f in zip(model.output_names, flat)
               for j in range(f.shape[1])]
    return {"code": 200, "model": model.name, "rows": rows, "dtype": "float32", "columns": columns,
            "data": np.concatenate(flat, axis=1).tolist(),
            "outputs": {name: np.asarray(o, dtype=np.float32).tolist() for name, o in zip(model.output_names, outputs)}}


async def read_body(request: Request, limit: int, gate: MemoryGate | None = None,
                    held: list[int] | None = None) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond, checked before and while reading).

    With a ``gate``, the body's bytes are reserved in its budget before they are read (the declared
    ``Content-Length`` at once, waiting for room; a chunked body as it comes), and the reserved size is
    appended to ``held`` for the caller to release when the request is done.

    Raises:
        RequestError: 413 too large; :class:`~recstack.serving.limits.ServiceBusy` (503) no room.
    """
    held = held if held is not None else []
    declared = request.headers.get("content-length")
    size, reserved = None, 0
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(f"bad Content-Length header {declared[:40]!r}") from None
        if size > limit:
            raise RequestError(f"request body of {size} bytes is larger than this server takes ({limit} bytes, "
                               "--max_body_bytes); split the request", status=413)
        if gate is not None and size > 0:
            reserved = await gate.reserve(size)
            held.append(reserved)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(f"request body is larger than this server takes ({limit} bytes, --max_body_bytes); "
                               "split the request", status=413)
        if gate is not None and size is None and total > reserved:  # chunked: reserved as it comes, 1 MiB at a time
            step = await gate.reserve(max(total - reserved, 1 << 20))
            held.append(step)
            reserved += step
        chunks.append(chunk)
    return b"".join(chunks)


#: bodies larger than this are parsed and checked in a worker thread, so the event loop keeps serving
OFF_LOOP_BYTES = 64 << 10


async def off_loop(body: bytes, work: Callable[[], Any], gate: MemoryGate | None = None) -> Any:
    """``work()``: inline for small bodies, in Starlette's thread pool for large ones (one of the ``gate``'s
    parse slots held: ``--max_parallel_parsing``; the freed memory given back after a large one)."""
    if len(body) <= OFF_LOOP_BYTES:
        return work()
    if gate is None:
        return await run_in_threadpool(work)
    async with gate.parse_slot():
        def parse_then_trim() -> Any:
            try:
                return work()
            finally:
                if gate.trim and len(body) >= TRIM_BYTES and gate.parsing == 1:
                    trim_memory()
        return await run_in_threadpool(parse_then_trim)


#: media types /predict takes (any ``+json`` type too; a request without Content-Type is taken as JSON)
JSON_TYPES = ("application/json",)


def check_json_content_type(request: Request) -> None:
    """415 for a ``/predict`` body declared as something other than JSON."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise RequestError(f"Content-Type {declared[:80]!r} is not JSON; send the rows as application/json "
                           "(a data file goes to /upload)", status=415)


def drop_tracebacks(err: BaseException) -> None:
    """Clear the tracebacks of an answered exception and of those it chains. Their frames hold the request's body
    and its parsed objects, and an exception that crossed a thread or a future sits in a reference cycle (frame →
    future → exception → traceback → frame) that only a full garbage collection frees: without this, every
    refused large body stayed in memory for minutes."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        err.__traceback__ = None
        err = err.__cause__ or err.__context__


def create_app(load_model: Callable[[], Any], options: ServingOptions | None = None,
               load_recall: Callable[[], Any] | None = None,
               load_rank: Callable[[], tuple[Any, Any]] | None = None) -> FastAPI:
    """The FastAPI application.

    Args:
        load_model: builds the :class:`recstack.serving.model.ServedModel` (called at startup, in the
            lifespan, so the server answers only once the model is loaded).
        options: service settings.
        load_recall: for a retrieval export, builds its :class:`recstack.serving.recall.RecallIndex` (``/recall``).
        load_rank: the two-stage service (``/recommend``): builds ``(ranking ServedModel, TwoStage)``
            (:mod:`recstack.serving.pipeline`); ``/predict`` and ``/upload`` then answer with the ranking model.
    """
    options = options or ServingOptions()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        model = load_model()
        model.warmup()
        batcher = MicroBatcher(model.predict, options.max_batch_size, options.max_wait_ms, options.batching,
                               options.threads)
        await batcher.start()
        gate = MemoryGate(options.max_buffered_bytes, options.max_parallel_parsing, options.queue_timeout,
                          options.trim_memory)
        state.update(model=model, batcher=batcher, gate=gate,
                     recall=load_recall() if load_recall is not None else None)
        if load_rank is not None:
            rank, pipeline = load_rank()
            rank.warmup()
            pipeline.warmup(model, rank)
            rank_batcher = MicroBatcher(rank.predict, options.max_batch_size, options.max_wait_ms, options.batching,
                                        options.threads)
            await rank_batcher.start()
            state.update(rank=rank, rank_batcher=rank_batcher, pipeline=pipeline)
            logger.info("two stages: /recommend retrieves with %s and ranks with %s", model.name, rank.name)
        logger.info("serving %s (%s backend); micro-batching %s", model.name, model.backend.name,
                    f"on (max_batch_size {options.max_batch_size}, max_wait_ms {options.max_wait_ms})"
                    if options.batching else "off")
        try:
            yield
        finally:
            await batcher.stop()
            if "rank_batcher" in state:
                await state["rank_batcher"].stop()
            logger.info("stopped; %s", batcher.stats.to_dict())

    app = FastAPI(title="recstack prediction service", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(BodyTimeoutMiddleware, timeout_body=options.timeout_body)
    app.state.serving = state

    async def guarded(work: Callable[[], Awaitable[Response]]) -> Response:
        """Run an endpoint: bad requests → 4xx naming the field / line; anything else → 5xx with an error id."""
        try:
            return await work()
        except Exception as err:  # noqa: BLE001 - the server must answer, and log a failure with its id
            try:
                return failure_response(err)
            finally:
                drop_tracebacks(err)

    def failure_response(err: Exception) -> Response:
        if isinstance(err, ServiceBusy):
            return error_response(err.status, str(err), headers={"Retry-After": str(err.retry_after)})
        if isinstance(err, RequestError):
            return error_response(err.status, str(err), err.field, err.line)
        if isinstance(err, ClientDisconnect):  # the client went away mid-body: nobody reads the answer
            logger.debug("client disconnected before its request body was complete")
            return error_response(400, "client disconnected")
        error_id = uuid.uuid4().hex[:12]
        logger.error("error_id=%s: internal error while serving a request", error_id, exc_info=err)
        return error_response(500, f"internal error (error_id {error_id}; the server log has the details)",
                              error_id=error_id)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no endpoint {request.url.path} (GET /health, /metadata, /stats; POST /predict, /upload, "
                        "/recall, /recommend)",
                   405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                           str(exc.detail))
        return error_response(exc.status_code, message)

    @app.get("/health")
    async def health() -> Response:
        model = state.get("model")
        if model is None:
            return error_response(503, "model not loaded")
        return _json({"status": "ok", "model": model.name})

    @app.get("/stats")
    async def stats() -> Response:
        if "rank" in state:
            return _json({"recall": state["batcher"].stats.to_dict(), "rank": state["rank_batcher"].stats.to_dict()})
        return _json(state["batcher"].stats.to_dict())

    @app.get("/metadata")
    async def metadata() -> Response:
        answer = describe(state["model"], options, state["batcher"], state["gate"], state.get("recall"))
        if "rank" in state:
            rank = describe(state["rank"], options, state["rank_batcher"])
            answer["rank"] = {key: rank[key] for key in ("model", "backend", "export", "inputs", "outputs",
                                                         "upload_reader", "batching")}
            answer["pipeline"] = state["pipeline"].describe()
        return _json(answer)

    def served() -> tuple[Any, MicroBatcher]:
        """The model (and its batcher) of ``/predict`` and ``/upload``: the ranking model of a two-stage service."""
        if "rank" in state:
            return state["rank"], state["rank_batcher"]
        return state["model"], state["batcher"]

    async def parsed_body(request: Request, parse: Callable[[bytes], Any], answer: Callable[[Any], Awaitable[Response]]
                          ) -> Response:
        """Read the body (within the memory gate), parse it (off the event loop when large), answer from what was
        parsed; the body's bytes are released before the answer is computed and the gate at the end."""
        gate: MemoryGate = state["gate"]
        held: list[int] = []
        try:
            body = await read_body(request, options.max_body_bytes, gate, held)
            parsed = await off_loop(body, functools.partial(parse, body), gate)
            del body
            return await answer(parsed)
        finally:
            await gate.release(sum(held))

    async def predict_body(request: Request, parse: Callable[[bytes], dict[str, np.ndarray]]) -> Response:
        """Parse the body into model inputs and predict."""
        async def answer(arrays: dict[str, np.ndarray]) -> Response:
            rows = len(next(iter(arrays.values())))
            model, batcher = served()
            outputs = await batcher.submit(arrays, alone=model.grouped)
            return _json(predictions(model, outputs, rows))
        return await parsed_body(request, parse, answer)

    async def retrieve(arrays: dict[str, np.ndarray], k: int, exclude: list[list[int]] | None,
                       exclude_history: bool) -> tuple[np.ndarray, np.ndarray]:
        """The user tower on the retrieval inputs, then the top ``k`` of the corpus (ids, scores) per row."""
        index, model = state["recall"], state["model"]
        users = (await state["batcher"].submit(arrays, alone=model.grouped))[0]
        history = arrays.get(index.history_input) if exclude_history and index.history_input else None
        excluded = index.excluded_rows(len(next(iter(arrays.values()))), exclude, history)
        return await run_in_threadpool(index.top_k, np.asarray(users, dtype=np.float32), k, excluded)

    def parse_predict(body: bytes) -> dict[str, np.ndarray]:
        model = served()[0]
        check_json_size(body, model.inputs, options.max_rows)  # before json.loads makes its objects
        return to_arrays(parse_json(body), model.inputs, options.max_rows,
                         booleans=b"true" in body or b"false" in body)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        async def work() -> Response:
            check_json_content_type(request)
            return await predict_body(request, parse_predict)
        return await guarded(work)

    @app.post("/recall")
    async def recall(request: Request) -> Response:
        async def work() -> Response:
            index = state.get("recall")
            if index is None:
                raise RequestError("/recall answers for a retrieval export (model.json with its towers); this "
                                   "export is a ranking model: use /predict", status=404)
            check_json_content_type(request)
            model = state["model"]

            def parse(raw: bytes) -> tuple[dict[str, np.ndarray], tuple]:
                check_json_size(raw, model.inputs, options.max_rows)
                document = parse_json(raw)
                choice = index.parse_options(document, _rows_of(document))
                return to_arrays(document, model.inputs, options.max_rows,
                                 booleans=b"true" in raw or b"false" in raw), choice

            async def answer(parsed: tuple) -> Response:
                arrays, (k, exclude, exclude_history) = parsed
                ids, scores = await retrieve(arrays, k, exclude, exclude_history)
                return _json({"code": 200, "k": k, "items": ids.tolist(),
                              "scores": [[float(s) if np.isfinite(s) else None for s in row] for row in scores]})
            return await parsed_body(request, parse, answer)
        return await guarded(work)

    @app.post("/recommend")
    async def recommend(request: Request) -> Response:
        async def work() -> Response:
            pipeline = state.get("pipeline")
            if pipeline is None:
                raise RequestError("/recommend answers when the server runs both stages (tools/serve.py --recall "
                                   "<retrieval export> --rank <ranking export>)", status=404)
            check_json_content_type(request)
            return await parsed_body(request, parse_recommend, functools.partial(two_stages, pipeline))
        return await guarded(work)

    def parse_recommend(raw: bytes) -> tuple:
        pipeline, index = state["pipeline"], state["recall"]
        document = parse_json(raw)
        users, k, candidates = pipeline.parse(document)
        document["k"] = candidates  # the retrieval stage's k, checked against --max_k
        _, exclude, exclude_history = index.parse_options(document, len(users))
        if document:
            raise RequestError(f"unknown key(s) {sorted(document)}; /recommend takes users, k, candidates, exclude, "
                               "exclude_history", field=sorted(document)[0])
        return users, k, candidates, exclude, exclude_history

    async def two_stages(pipeline: Any, request: tuple) -> Response:
        users, k, candidates, exclude, exclude_history = request
        model, rank = state["model"], state["rank"]
        start = time.perf_counter()
        lines = pipeline.recall_lines(users)
        try:
            arrays = model.parse_upload(lines, len(users))
        except RequestError as err:
            raise pipeline.user_error(err, "retrieval") from None
        ids, recall_scores = await retrieve(arrays, candidates, exclude, exclude_history)
        retrieved = time.perf_counter()
        lines, where = pipeline.rank_lines(users, ids)
        scores = np.zeros(0, dtype=np.float32)
        if where:
            try:
                rank_arrays = await run_in_threadpool(rank.parse_upload, lines, pipeline.max_rank_rows)
            except RequestError as err:
                raise pipeline.user_error(err, "ranking", where, ids) from None
            outputs = await state["rank_batcher"].submit(rank_arrays, alone=rank.grouped)
            scores = np.asarray(outputs[pipeline.rank_output], dtype=np.float32).reshape(len(where), -1)[:, 0]
            if not np.isfinite(scores).all():
                raise RuntimeError(f"ranking output {rank.output_names[pipeline.rank_output]} holds non-finite values")
        items, ranked, recalled = pipeline.order(scores, where, ids, recall_scores, k)
        done = time.perf_counter()
        return _json({"code": 200, "k": k, "candidates": candidates, "items": items, "scores": ranked,
                      "recall_scores": recalled,
                      "took_ms": {"recall": round(1000 * (retrieved - start), 3),
                                  "rank": round(1000 * (done - retrieved), 3)}})

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        async def work() -> Response:
            model = served()[0]
            if model.upload_unavailable:
                raise RequestError(f"/upload is not available: {model.upload_unavailable}; use /predict",
                                   status=501)
            return await predict_body(request, lambda body: model.parse_upload(body, options.max_rows))
        return await guarded(work)

    return app


def _rows_of(document: Any) -> int:
    """The number of rows of a ``/predict``-style body (0 when its layout is wrong: ``to_arrays`` names that)."""
    if isinstance(document, dict) and isinstance(document.get("rows"), list):
        return len(document["rows"])
    if isinstance(document, dict) and isinstance(document.get("inputs"), dict):
        first = next(iter(document["inputs"].values()), None)
        return len(first) if isinstance(first, list) else 0
    return 0


def uvicorn_config(app: Any, options: ServingOptions, **kwargs: Any) -> Any:
    """The ``uvicorn.Config`` of the service: its h11 protocol with the header timeout and the connection cap
    (:func:`recstack.serving.limits.guarded_protocol`) and the keep-alive timeout; ``kwargs`` go to uvicorn
    (host, port, log settings, ...)."""
    import uvicorn

    return uvicorn.Config(app, http=guarded_protocol(options.timeout_header, options.max_connections,
                                                     linger_bytes=2 * options.max_body_bytes + (1 << 20)),
                          timeout_keep_alive=options.timeout_keep_alive, **kwargs)


def describe(model: Any, options: ServingOptions, batcher: MicroBatcher, gate: MemoryGate | None = None,
             recall: Any = None) -> dict[str, Any]:
    """``GET /metadata`` (no absolute paths: the export and config by file / folder name only)."""
    import fastapi
    import torch
    import uvicorn

    import recstack

    versions = {"recstack": recstack.__version__, "torch": torch.__version__, "fastapi": fastapi.__version__,
                "uvicorn": uvicorn.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a TorchScript-only installation
        pass
    settings = model.settings
    return {
        "model": model.name,
        "backend": model.backend.name,
        "device": f"gpu {settings.gpu_id}" if settings.use_gpu else "cpu",
        "cpu_threads": settings.cpu_threads,
        "export": {"directory": Path(model.model.directory).name, "exported_at": model.spec.get("exported_at"),
                   "config": Path(model.spec["config"]).name if model.spec.get("config") else None},
        "inputs": [{"name": s.name, "dtype": s.dtype.name,
                    "shape": ["batch", *s.row_shape], "column": s.column,
                    **({"num_embeddings": s.num_embeddings} if s.num_embeddings is not None else {})}
                   for s in model.inputs],
        "outputs": model.outputs,
        "upload_reader": model.reader_name,
        **({"recall": recall.describe()} if recall is not None else {}),
        **({"upload_unavailable": model.upload_unavailable} if model.upload_unavailable else {}),
        "versions": versions,
        "limits": {"max_body_bytes": options.max_body_bytes, "max_rows": options.max_rows,
                   "timeout_header": options.timeout_header, "timeout_body": options.timeout_body,
                   "timeout_keep_alive": options.timeout_keep_alive, "max_connections": options.max_connections,
                   "max_buffered_bytes": options.max_buffered_bytes,
                   "max_parallel_parsing": options.max_parallel_parsing, "queue_timeout": options.queue_timeout,
                   **({"state": gate.stats()} if gate is not None else {})},
        "batching": {"enabled": options.batching, "max_batch_size": options.max_batch_size,
                     "max_wait_ms": options.max_wait_ms, "threads_when_off": options.threads,
                     "stats": batcher.stats.to_dict()},
    }


"""The HTTP prediction service (FastAPI on uvicorn) over an exported model; ``tools/serve.py`` runs it.

Endpoints (doc/serving.md has examples):

=================== =========================================================================
``GET /health``     ``{"status": "ok", "model": ...}`` once the model is loaded
``GET /metadata``   model name, inputs (name, dtype, shape, id bounds), outputs per task, versions,
                    backend and settings, limits, micro-batching counters
``GET /stats``      the micro-batching counters (requests, inference calls, merged calls, ...)
``POST /predict``   JSON ``{"rows": [{<input>: <value>, ...}, ...]}`` or ``{"inputs": {<input>: [...]}}``
``POST /upload``    the raw body is a data file in the model's reader format (PaddleRec's tutorial)
=================== =========================================================================

Both prediction endpoints answer PaddleRec's shape, ``{"code": 200, "dtype": "float32", "data":
[[...], ...]}`` (one row per sample: the outputs side by side, named by ``columns``), plus
``outputs`` (each output by name, ``(n, ...)`` lists) and ``rows``. Errors answer ``{"code": <status>,
"error": {"message", "field", "line", "error_id"}}``: 4xx for bad requests (the message names the
field / row / line), 5xx for failures of the server, with an ``error_id`` that the log line of the
failure carries too.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from recstack.serving.batcher import MicroBatcher
from recstack.serving.validation import RequestError, parse_json, to_arrays

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
    """

    batching: bool = True
    max_batch_size: int = 256
    max_wait_ms: float = 0.0
    max_body_bytes: int = 8 << 20
    max_rows: int = 4096
    threads: int = 4


def _json(content: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(content, separators=(",", ":"), allow_nan=False), status_code=status,
                    media_type="application/json")


def error_response(status: int, message: str, field: str | None = None, line: int | None = None,
                   error_id: str | None = None) -> Response:
    error = {"message": message}
    error.update({k: v for k, v in (("field", field), ("line", line), ("error_id", error_id)) if v is not None})
    return _json({"code": status, "error": error}, status)


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


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond, checked before and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(f"bad Content-Length header {declared!r}") from None
        if size > limit:
            raise RequestError(f"request body of {size} bytes is larger than this server takes ({limit} bytes, "
                               "--max_body_bytes); split the request", status=413)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(f"request body is larger than this server takes ({limit} bytes, --max_body_bytes); "
                               "split the request", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


#: bodies larger than this are parsed and checked in a worker thread, so the event loop keeps serving
OFF_LOOP_BYTES = 64 << 10


async def off_loop(body: bytes, work: Callable[[], Any]) -> Any:
    """``work()``: inline for small bodies, in Starlette's thread pool for large ones."""
    if len(body) <= OFF_LOOP_BYTES:
        return work()
    return await run_in_threadpool(work)


def create_app(load_model: Callable[[], Any], options: ServingOptions | None = None) -> FastAPI:
    """The FastAPI application.

    Args:
        load_model: builds the :class:`recstack.serving.model.ServedModel` (called at startup, in the
            lifespan, so the server answers only once the model is loaded).
        options: service settings.
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
        state.update(model=model, batcher=batcher)
        logger.info("serving %s (%s backend); micro-batching %s", model.name, model.backend.name,
                    f"on (max_batch_size {options.max_batch_size}, max_wait_ms {options.max_wait_ms})"
                    if options.batching else "off")
        try:
            yield
        finally:
            await batcher.stop()
            logger.info("stopped; %s", batcher.stats.to_dict())

    app = FastAPI(title="recstack prediction service", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.serving = state

    async def guarded(work: Callable[[], Awaitable[Response]]) -> Response:
        """Run an endpoint: bad requests → 4xx naming the field / line; anything else → 5xx with an error id."""
        try:
            return await work()
        except RequestError as err:
            return error_response(err.status, str(err), err.field, err.line)
        except Exception:  # noqa: BLE001 - the server must answer, and log the failure with its id
            error_id = uuid.uuid4().hex[:12]
            logger.exception("error_id=%s: internal error while serving a request", error_id)
            return error_response(500, f"internal error (error_id {error_id}; the server log has the details)",
                                  error_id=error_id)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no endpoint {request.url.path} (GET /health, /metadata, /stats; POST /predict, /upload)",
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
        return _json(state["batcher"].stats.to_dict())

    @app.get("/metadata")
    async def metadata() -> Response:
        return _json(describe(state["model"], options, state["batcher"]))

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        async def work() -> Response:
            model = state["model"]
            body = await read_body(request, options.max_body_bytes)
            arrays = await off_loop(body, lambda: to_arrays(parse_json(body), model.inputs, options.max_rows,
                                                            booleans=b"true" in body or b"false" in body))
            outputs = await state["batcher"].submit(arrays)
            return _json(predictions(model, outputs, len(next(iter(arrays.values())))))
        return await guarded(work)

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        async def work() -> Response:
            model = state["model"]
            body = await read_body(request, options.max_body_bytes)
            arrays = await off_loop(body, lambda: model.parse_upload(body, options.max_rows))
            outputs = await state["batcher"].submit(arrays)
            return _json(predictions(model, outputs, len(next(iter(arrays.values())))))
        return await guarded(work)

    return app


def describe(model: Any, options: ServingOptions, batcher: MicroBatcher) -> dict[str, Any]:
    """``GET /metadata``."""
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
        "export": {"directory": str(model.model.directory), "exported_at": model.spec.get("exported_at"),
                   "config": model.spec.get("config")},
        "inputs": [{"name": s.name, "dtype": s.dtype.name,
                    "shape": ["batch", *s.row_shape], "column": s.column,
                    **({"num_embeddings": s.num_embeddings} if s.num_embeddings is not None else {})}
                   for s in model.inputs],
        "outputs": model.outputs,
        "upload_reader": model.reader_name,
        "versions": versions,
        "limits": {"max_body_bytes": options.max_body_bytes, "max_rows": options.max_rows},
        "batching": {"enabled": options.batching, "max_batch_size": options.max_batch_size,
                     "max_wait_ms": options.max_wait_ms, "threads_when_off": options.threads,
                     "stats": batcher.stats.to_dict()},
    }


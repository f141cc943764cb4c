"""tools/serve.py / recstack.serving: real HTTP over loopback against offline predictions, a bad-input
corpus, concurrency with micro-batching, graceful shutdown, the client, the TorchScript and GPU paths."""

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
import uvicorn

from recstack.backends import InferenceSettings, create_backend
from recstack.benchmark import run_benchmark
from recstack.config import load_config
from recstack.export import export_model
from recstack.export_spec import ExportedModel
from recstack.inference import load_batches
from recstack.serving import ServingOptions, create_app, uvicorn_config
from recstack.serving.model import ServedModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_export import checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
DIN = REPO / "models/rank/din/config.yaml"
MMOE = REPO / "models/multitask/mmoe/config.yaml"
DEEPFM_DATA = REPO / "models/rank/deepfm/data/sample_data/test/part-0.txt"
MAX_ROWS = 1500
MAX_BODY = 1 << 20


def exported(config: Path, folder: Path) -> ExportedModel:
    checkpoint(config, folder)
    export_model(load_config(config, [f"runner.model_save_path={folder}"]))
    return ExportedModel.locate(folder)


@pytest.fixture(scope="module")
def deepfm(tmp_path_factory):
    return exported(DEEPFM, tmp_path_factory.mktemp("deepfm_serving"))


def offline(model: ExportedModel, batch_size: int, backend: str = "onnxruntime", data_dir=None):
    """tools/infer_benchmark.py's predictions (recstack.inference) and the batches' inputs, in file order
    (deployed inference never buckets rows by length, even for DIN whose config does for training)."""
    batches, _ = load_batches(model, batch_size, data_dir)
    predictions = run_benchmark(create_backend(model, InferenceSettings(backend, cpu_threads=1)), batches).predictions
    inputs = {name: np.concatenate([b.inputs[name].numpy() for b in batches]) for name in batches[0].inputs}
    return predictions, inputs


@pytest.fixture(scope="module")
def deepfm_offline(deepfm):
    return offline(deepfm, 1000)


@contextlib.contextmanager
def serving(model: ExportedModel, backend: str = "onnxruntime", use_gpu: bool = False, load_recall=None,
            load_rank=None, **options):
    """The service on a free loopback port, in a thread (uvicorn installs no signal handlers there)."""
    options = ServingOptions(**{"max_rows": MAX_ROWS, "max_body_bytes": MAX_BODY, **options})
    served = ServedModel(model, InferenceSettings(backend, use_gpu=use_gpu, cpu_threads=1))
    app = create_app(lambda: served, options, load_recall, load_rank)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(app, options, log_level="warning", access_log=False, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def server(deepfm):
    with serving(deepfm, max_wait_ms=5.0) as (url, app):
        yield url, app


def rows_json(inputs: dict, start: int, stop: int) -> dict:
    return {"rows": [{name: values[i].tolist() for name, values in inputs.items()} for i in range(start, stop)]}


# ---------------------------------------------------------------------- predictions equal offline ones
def test_upload_and_predict_equal_offline_predictions(server, deepfm_offline):
    url, _ = server
    (reference,), inputs = deepfm_offline
    with httpx.Client(base_url=url, timeout=60) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok", "model": "deepfm"}
        meta = client.get("/metadata").json()
        assert meta["model"] == "deepfm" and meta["backend"] == "onnxruntime"
        assert meta["inputs"] == [
            {"name": "sparse", "dtype": "int64", "shape": ["batch", 26], "column": "sparse", "num_embeddings": 1000001},
            {"name": "dense", "dtype": "float32", "shape": ["batch", 13], "column": "dense"}]
        assert [o["name"] for o in meta["outputs"]] == ["prob"]
        assert {"recstack", "torch", "onnxruntime", "fastapi", "uvicorn"} <= set(meta["versions"])

        # PaddleRec's tutorial: post the data file, get {"code": 200, "dtype": "float32", "data": [[p], ...]}
        body = client.post("/upload", content=DEEPFM_DATA.read_bytes()).json()
        assert body["code"] == 200 and body["dtype"] == "float32" and body["columns"] == ["prob"]
        assert body["rows"] == 1000 and np.asarray(body["data"]).shape == (1000, 1)
        assert np.abs(np.asarray(body["data"]) - reference).max() <= 1e-6
        assert body["outputs"]["prob"] == body["data"]

        body = client.post("/predict", json=rows_json(inputs, 0, 1000)).json()
        assert np.abs(np.asarray(body["data"]) - reference).max() <= 1e-6
        columnar = {"inputs": {name: values[:5].tolist() for name, values in inputs.items()}}
        body = client.post("/predict", json=columnar).json()
        assert np.abs(np.asarray(body["data"]) - reference[:5]).max() <= 1e-6


def test_din_variable_length_and_mmoe_tasks(tmp_path):
    din = exported(DIN, tmp_path / "din")
    # the export records the table each id input indexes (hist_len is a length, not an id)
    assert din.spec["embedding_tables"] == {"hist_item": 63001, "hist_cat": 801, "target_item": 63001,
                                            "target_cat": 801}
    (reference,), inputs = offline(din, 100000)  # one batch: padded to the file's longest history, as one upload
    data = Path(din.config().get("runner.test_data_dir"))
    with serving(din, max_rows=4096) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        body = client.post("/upload", content=b"".join(p.read_bytes() for p in sorted(data.iterdir()))).json()
        assert body["code"] == 200, body
        assert np.abs(np.asarray(body["data"]) - reference).max() <= 1e-6
        lengths = inputs["hist_len"][:, 0]
        row = {name: values[0][:lengths[0]].tolist() if name.startswith("hist_") and name != "hist_len"
               else values[0].tolist() for name, values in inputs.items()}
        single = client.post("/predict", json={"rows": [row]}).json()
        assert abs(single["data"][0][0] - reference[0, 0]) <= 1e-5  # padded to its own length only
        row["hist_item"] = [63001] * len(row["hist_item"])
        bad = client.post("/predict", json={"rows": [row]})
        assert bad.status_code == 400
        assert bad.json()["error"]["message"].startswith("rows[0].hist_item[0]: id 63001 is outside the embedding "
                                                         "table of 'hist_item' (ids in [0, 63001))")
    mmoe = exported(MMOE, tmp_path / "mmoe")
    predictions, inputs = offline(mmoe, 100000)
    with serving(mmoe) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        body = client.post("/predict", json=rows_json(inputs, 0, 20)).json()
        assert body["columns"] == ["prob_income", "prob_marital"]
        assert np.abs(np.asarray(body["data"]) - np.concatenate(predictions, axis=1)[:20]).max() <= 1e-6
        assert np.abs(np.asarray(body["outputs"]["prob_marital"]) - predictions[1][:20]).max() <= 1e-6
        data = Path(mmoe.config().get("runner.test_data_dir"))
        body = client.post("/upload", content=b"".join(p.read_bytes() for p in sorted(data.iterdir()))).json()
        assert body["rows"] == len(predictions[0]) == 500, body
        assert np.abs(np.asarray(body["data"]) - np.concatenate(predictions, axis=1)).max() <= 1e-6


def test_torchscript_backend_predicts_the_same(deepfm, deepfm_offline):
    (reference,), _ = deepfm_offline
    (scripted,), _ = offline(deepfm, 1000, "torchscript")
    with serving(deepfm, backend="torchscript") as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/metadata").json()["backend"] == "torchscript"
        body = client.post("/upload", content=DEEPFM_DATA.read_bytes()).json()
    assert np.abs(np.asarray(body["data"]) - scripted).max() <= 1e-6
    assert np.abs(np.asarray(body["data"]) - reference).max() <= 1e-5  # and ONNX Runtime's, within export parity


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()),
                    reason="needs a CUDA GPU and onnxruntime-gpu")
def test_gpu_backends_predict_like_the_cpu(deepfm, deepfm_offline):  # pragma: no cover - GPU machines
    (reference,), _ = deepfm_offline
    for backend in ("onnxruntime", "torchscript"):
        with serving(deepfm, backend=backend, use_gpu=True) as (url, _), httpx.Client(base_url=url) as client:
            assert client.get("/metadata").json()["device"] == "gpu 0"
            body = client.post("/upload", content=DEEPFM_DATA.read_bytes()).json()
        assert np.abs(np.asarray(body["data"]) - reference).max() <= 1e-4, backend


# ---------------------------------------------------------------------- bad input
LINES = DEEPFM_DATA.read_bytes().splitlines(keepends=True)[:3]
GOOD = {"sparse": [1] * 26, "dense": [0.5] * 13}


def with_value(name, index, value, row=0, rows=3):
    body = [json.loads(json.dumps(GOOD)) for _ in range(rows)]
    if index is None:
        body[row][name] = value
    else:
        body[row][name][index] = value
    return json.dumps({"rows": body}, allow_nan=True)


def columns(**overrides):
    cols = {"sparse": [[1] * 26] * 3, "dense": [[0.5] * 13] * 3}
    cols.update(overrides)
    return json.dumps({"inputs": {k: v for k, v in cols.items() if v is not None}})


def upload_with(line_no, text):
    lines = list(LINES)
    lines[line_no - 1] = text.encode() + b"\n"
    return b"".join(lines)


def huge_rows(n):
    return json.dumps({"rows": [GOOD] * n})


# (id, method, path, body, status, message pattern, field, line)
CORPUS = [
    ("malformed-json", "POST", "/predict", b'{"rows": [', 400, r"malformed JSON at line 1 column 11", None, None),
    ("trailing-garbage", "POST", "/predict", b'{"rows": []} x', 400, r"malformed JSON .*Extra data", None, None),
    ("empty-body", "POST", "/predict", b"", 400, r"empty request body", None, None),
    ("not-utf8", "POST", "/predict", b'{"rows": "\xff\xfe"}', 400, r"not UTF-8", None, None),
    ("top-level-list", "POST", "/predict", b"[1, 2]", 400, r"must be a JSON object .* got a list", None, None),
    ("unknown-top-level", "POST", "/predict", json.dumps({"rows": [GOOD], "model": "x"}).encode(), 400,
     r"unknown top-level field\(s\) \['model'\]", "model", None),
    ("no-rows", "POST", "/predict", b"{}", 400, r"exactly one of 'rows'", "rows", None),
    ("rows-not-list", "POST", "/predict", b'{"rows": {"sparse": 1}}', 400, r"rows: expected a list of objects, got an "
     r"object", "rows", None),
    ("empty-batch", "POST", "/predict", b'{"rows": []}', 400, r"rows: empty batch", "rows", None),
    ("row-not-object", "POST", "/predict", b'{"rows": [[1, 2]]}', 400, r"rows\[0\]: expected an object", "rows[0]",
     None),
    ("missing-input", "POST", "/predict", json.dumps({"rows": [{"sparse": [1] * 26}]}).encode(), 400,
     r"rows\[0\]: missing input\(s\) \['dense'\]", "rows[0].dense", None),
    ("extra-input", "POST", "/predict", json.dumps({"rows": [{**GOOD, "age": 3}]}).encode(), 400,
     r"rows\[0\]: unknown field\(s\) \['age'\]", "rows[0].age", None),
    ("short-sparse", "POST", "/predict", with_value("sparse", None, [1] * 25, row=1).encode(), 400,
     r"rows\[1\]\.sparse: expected 26 values .* got 25", "rows[1].sparse", None),
    ("long-dense", "POST", "/predict", with_value("dense", None, [0.5] * 14, row=2).encode(), 400,
     r"rows\[2\]\.dense: expected 13 values .* got 14", "rows[2].dense", None),
    ("float-id", "POST", "/predict", with_value("sparse", 3, 1.5).encode(), 400,
     r"rows\[0\]\.sparse\[3\]: expected an integer .* got the float 1\.5", "rows[0].sparse[3]", None),
    ("string-id", "POST", "/predict", with_value("sparse", 0, "7").encode(), 400,
     r"rows\[0\]\.sparse\[0\]: expected an integer .* got a string", "rows[0].sparse[0]", None),
    ("bool-id", "POST", "/predict", with_value("sparse", 5, True, row=1).encode(), 400,
     r"rows\[1\]\.sparse\[5\]: expected an integer .* got a boolean", "rows[1].sparse[5]", None),
    ("null-id", "POST", "/predict", with_value("sparse", 25, None).encode(), 400,
     r"rows\[0\]\.sparse\[25\]: expected an integer .* got null", "rows[0].sparse[25]", None),
    ("nested-id", "POST", "/predict", with_value("sparse", 2, [1]).encode(), 400,
     r"rows\[0\]\.sparse\[2\]: expected a number, got a list", "rows[0].sparse[2]", None),
    ("id-past-table", "POST", "/predict", with_value("sparse", 4, 1000001, row=2).encode(), 400,
     r"rows\[2\]\.sparse\[4\]: id 1000001 is outside the embedding table of 'sparse' \(ids in \[0, 1000001\)\)",
     "rows[2].sparse[4]", None),
    ("negative-id", "POST", "/predict", with_value("sparse", 0, -1).encode(), 400,
     r"rows\[0\]\.sparse\[0\]: id -1 is outside the embedding table", "rows[0].sparse[0]", None),
    ("id-past-int64", "POST", "/predict", with_value("sparse", 1, 2 ** 64).encode(), 400,
     r"rows\[0\]\.sparse\[1\]: 18446744073709551616 is outside int64", "rows[0].sparse[1]", None),
    ("nan", "POST", "/predict", with_value("dense", 0, math.nan, row=1).encode(), 400,
     r"rows\[1\]\.dense\[0\]: nan is not a finite number", "rows[1].dense[0]", None),
    ("infinity", "POST", "/predict", with_value("dense", 12, math.inf).encode(), 400,
     r"rows\[0\]\.dense\[12\]: inf is not a finite number", "rows[0].dense[12]", None),
    ("minus-infinity", "POST", "/predict", with_value("dense", 6, -math.inf, row=2).encode(), 400,
     r"rows\[2\]\.dense\[6\]: -inf is not a finite number", "rows[2].dense[6]", None),
    ("float32-overflow", "POST", "/predict", with_value("dense", 6, 1e39).encode(), 400,
     r"rows\[0\]\.dense\[6\]: 1e\+39 overflows float32", "rows[0].dense[6]", None),
    ("string-dense", "POST", "/predict", with_value("dense", 2, "0.5").encode(), 400,
     r"rows\[0\]\.dense\[2\]: expected a number .* got a string", "rows[0].dense[2]", None),
    ("dense-scalar", "POST", "/predict", with_value("dense", None, 0.5).encode(), 400,
     r"rows\[0\]\.dense: expected a list of 13 .* got the float 0\.5", "rows[0].dense", None),
    ("columns-not-object", "POST", "/predict", b'{"inputs": [1]}', 400, r"inputs: expected an object of columns",
     "inputs", None),
    ("column-not-list", "POST", "/predict", columns(dense=5).encode(), 400, r"inputs\.dense: expected a list with one "
     r"value per row", "inputs.dense", None),
    ("column-lengths", "POST", "/predict", columns(dense=[[0.5] * 13] * 2).encode(), 400,
     r"inputs\.dense: 2 rows, but inputs\.sparse has 3", "inputs.dense", None),
    ("column-missing", "POST", "/predict", columns(dense=None).encode(), 400, r"inputs: missing input\(s\) \['dense'\]",
     "inputs.dense", None),
    ("column-bad-value", "POST", "/predict", columns(sparse=[[1] * 26, [1] * 25 + ["x"], [1] * 26]).encode(), 400,
     r"inputs\.sparse\[1\]\[25\]: expected an integer", "inputs.sparse[1][25]", None),
    ("too-many-rows", "POST", "/predict", huge_rows(MAX_ROWS + 1).encode(), 413,
     rf"rows: {MAX_ROWS + 1} rows is more than this server takes in one request \({MAX_ROWS}", "rows", None),
    ("oversized-body", "POST", "/predict", b" " * (MAX_BODY + 1), 413,
     rf"request body of {MAX_BODY + 1} bytes is larger than this server takes \({MAX_BODY} bytes", None, None),
    ("wrong-method", "GET", "/predict", None, 405, r"method GET is not allowed on /predict", None, None),
    ("unknown-path", "POST", "/predictions", b"{}", 404, r"no endpoint /predictions", None, None),
    ("upload-empty", "POST", "/upload", b"", 400, r"empty upload", None, None),
    ("upload-blank-lines", "POST", "/upload", b"\n\n  \n", 400, r"empty upload", None, None),
    ("upload-bad-token", "POST", "/upload", upload_with(3, LINES[2].decode().strip() + " garbage"), 400,
     r"upload:3: .*", None, 3),
    ("upload-non-numeric", "POST", "/upload",
     upload_with(2, re.sub(r"dense_feature:[\d.]+", "dense_feature:abc", LINES[1].decode(), count=1).strip()), 400,
     r"upload:2: .*'abc'", None, 2),
    ("upload-no-label", "POST", "/upload", upload_with(1, LINES[0].decode().split(" ", 1)[1].strip()), 400,
     r"upload:1: missing label slot 'click'", None, 1),
    ("upload-short-line", "POST", "/upload", upload_with(2, "click:0 dense_feature:0.1 1:2"), 400,
     r"upload:2: expected 13 'dense_feature' values, got 1", None, 2),
    ("upload-id-past-table", "POST", "/upload",
     upload_with(3, re.sub(r" 7:\d+", " 7:1000001", LINES[2].decode()).strip()), 400,
     r"upload:3: sparse id outside \[0, sparse_feature_number=1000001\)", None, 3),  # the reader's own check
    ("upload-nan", "POST", "/upload", upload_with(2, re.sub(r"dense_feature:[\d.]+", "dense_feature:nan",
                                                            LINES[1].decode(), count=1).strip()),
     400, r"upload:2: ", None, 2),
    ("upload-binary", "POST", "/upload", b"\x00\x01\x02\xff\n", 400, r"upload:1: ", None, 1),
    ("upload-oversized", "POST", "/upload", b"\n" * (MAX_BODY + 1), 413, r"larger than this server takes", None, None),
]


@pytest.fixture(scope="module")
def corpus_client(server):
    with httpx.Client(base_url=server[0], timeout=60) as client:
        yield client


def send(client: httpx.Client, method: str, path: str, body) -> httpx.Response:
    """A request of the corpus. A body the server answers before reading it (past MAX_BODY, or chunked past it) goes
    on a connection of its own: the server reads and drops the rest for a bounded time and keeps the connection only
    if the rest arrived in that time (recstack.serving.limits), so on a loaded machine the next request on a
    reused connection could find it closed; clients that reuse connections must retry such a request."""
    if body is not None and not isinstance(body, bytes) or len(body or b"") > MAX_BODY:
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            return own.request(method, path, content=body)
    return client.request(method, path, content=body)


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_request_gets_a_4xx_naming_the_problem(corpus_client, case):
    _, method, path, body, status, pattern, field, line = case
    response = send(corpus_client, method, path, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["code"] == status and "data" not in payload
    assert re.search(pattern, payload["error"]["message"]), payload["error"]["message"]
    assert payload["error"].get("field") == field
    assert payload["error"].get("line") == line


def test_a_chunked_body_is_cut_at_the_limit(corpus_client):
    chunks = iter([b" " * (MAX_BODY // 2)] * 3)  # no Content-Length: counted while reading
    response = send(corpus_client, "POST", "/predict", chunks)
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith(f"request body is larger than this server takes ({MAX_BODY}")


def test_server_is_healthy_after_the_corpus_and_an_internal_failure_has_an_error_id(server, corpus_client, caplog):
    assert len(CORPUS) >= 30
    for case in CORPUS:  # again, in one go: nothing accumulates, nothing crashes
        send(corpus_client, case[1], case[2], case[3])
    assert corpus_client.get("/health").json() == {"status": "ok", "model": "deepfm"}
    good = json.dumps({"rows": [GOOD]})
    assert corpus_client.post("/predict", content=good).status_code == 200

    model = server[1].state.serving["model"]
    original = model.backend.predict
    model.backend.predict = lambda batch: (_ for _ in ()).throw(MemoryError("simulated"))
    try:
        with caplog.at_level(logging.ERROR, logger="recstack.serving"):
            response = corpus_client.post("/predict", content=good)
    finally:
        model.backend.predict = original
    assert response.status_code == 500
    error_id = response.json()["error"]["error_id"]
    assert re.fullmatch(r"[0-9a-f]{12}", error_id) and error_id in response.json()["error"]["message"]
    assert any(f"error_id={error_id}" in r.getMessage() and r.exc_info for r in caplog.records)
    assert corpus_client.post("/predict", content=good).status_code == 200


# ---------------------------------------------------------------------- concurrency
async def fire(url: str, requests: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*[client.post("/predict", json=r) for r in requests])


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_200_concurrent_requests_get_their_own_rows(deepfm, deepfm_offline, batching):
    (reference,), inputs = deepfm_offline
    sizes = [1 + i % 3 for i in range(200)]  # requests of 1-3 rows, 399 in all
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    requests = [rows_json(inputs, s, s + n) for s, n in zip(starts, sizes)]
    with serving(deepfm, batching=batching, max_wait_ms=20.0, max_batch_size=64) as (url, _):
        responses = asyncio.run(fire(url, requests))
        stats = httpx.get(f"{url}/stats").json()
    assert [r.status_code for r in responses] == [200] * 200
    for response, s, n in zip(responses, starts, sizes):  # each request got exactly its own rows back
        assert np.abs(np.asarray(response.json()["data"]) - reference[s:s + n]).max() <= 1e-6
    assert stats["requests"] == 200 and stats["rows"] == sum(sizes) and stats["failed_calls"] == 0
    if batching:
        assert stats["merged_calls"] > 0 and stats["inference_calls"] < 200, stats
        assert stats["max_rows_per_call"] <= 64
    else:
        assert stats["inference_calls"] == 200 and stats["merged_calls"] == 0


def test_micro_batcher_merges_only_alike_requests_and_isolates_failures():
    from recstack.serving import MicroBatcher

    calls = []

    def predict(arrays):
        x = arrays["x"]
        calls.append(x.shape)
        if (x < 0).any():
            raise ValueError("negative")
        return [x.sum(axis=1, keepdims=True) * 2.0]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=8, max_wait_ms=50)
        await batcher.start()
        requests = [np.full((1 + i % 3, 2 + i % 2), i, dtype=np.float32) for i in range(12)]
        requests.append(np.full((9, 2), 100, dtype=np.float32))  # larger than max_batch_size: alone
        requests.append(np.full((1, 2), -1, dtype=np.float32))  # fails, alone, without failing the others
        results = await asyncio.gather(*[batcher.submit({"x": r}) for r in requests], return_exceptions=True)
        await batcher.stop()
        return requests, results, batcher.stats.to_dict()

    requests, results, stats = asyncio.run(scenario())
    for request, result in zip(requests[:-1], results[:-1]):
        np.testing.assert_array_equal(result[0], request.sum(axis=1, keepdims=True) * 2.0)
    assert isinstance(results[-1], ValueError)
    assert (9, 2) in calls and all(rows <= 8 for rows, _ in calls if rows != 9)
    assert stats["merged_calls"] > 0 and stats["requests"] == 13 and stats["failed_calls"] >= 1


# ---------------------------------------------------------------------- the real command line
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_in_flight_requests_and_exits_0(deepfm):
    port = free_port()
    # a long max_wait_ms keeps a lone request in flight (waiting for company) when SIGTERM comes
    proc = subprocess.Popen([sys.executable, str(REPO / "tools/serve.py"), "--model_dir", str(deepfm.directory),
                             "--port", str(port), "--max_wait_ms", "1500"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        results = {}

        def send():
            started = time.monotonic()
            results["response"] = httpx.post(f"{url}/predict", json={"rows": [GOOD, GOOD]}, timeout=30)
            results["seconds"] = time.monotonic() - started

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        sender.join(30)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    response = results["response"]
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    assert results["seconds"] >= 1.0  # it was in flight when the signal came, and completed
    assert proc.returncode == 0, output
    assert "Finished server process" in output and "Traceback" not in output


def test_rec_client_compares_with_offline_predictions(server, deepfm):
    url = server[0].removeprefix("http://")
    out = subprocess.run([sys.executable, str(REPO / "tools/rec_client.py"), "--connect", url, "--model_dir",
                          str(deepfm.directory), "--batchsize", "100", "--compare", "--tolerance", "1e-6",
                          "--print", "3", "--concurrency", "2"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10 requests to /upload, 100 samples each; 0 failed" in out.stdout
    assert re.search(r"latency ms p50 [\d.]+ p99 [\d.]+", out.stdout)
    diff = float(re.search(r"max abs diff vs offline onnxruntime predictions over 1000 samples: (\S+)",
                           out.stdout).group(1))
    assert diff <= 1e-6


# ---------------------------------------------------------------------- per-column id bounds (fused tables)
def test_fused_feature_tables_declare_per_column_bounds_and_the_server_checks_them():
    """DBMTL's id features share one fused table at row offsets, so the lookup never sees the raw input;
    FeatureEmbedding declares each column's bucket count and an id past it is a 400 naming the column."""
    from recstack.export import embedding_tables
    from recstack.serving.validation import RequestError, column_array, input_specs
    from recstack.wrapper import build_model

    config = load_config(REPO / "models/multitask/dbmtl/config.yaml")
    _, net = build_model(config, torch.device("cpu"))
    net.eval()
    bounds = net.embedding.id_bounds["all.ids"]
    names = net.input_names
    inputs = [torch.zeros(3, len(bounds), dtype=torch.long) if name.endswith(".ids")
              else torch.zeros(3, _width(config, name)) for name in names]
    tables = embedding_tables(net, inputs, names)
    assert tables["all.ids"] == bounds and len(set(bounds)) > 1

    spec = {"inputs": [{"name": "all.ids", "dtype": "int64", "shape": ["batch", len(bounds)], "column": "all.ids"}],
            "embedding_tables": tables}
    (ids_spec,) = input_specs(spec)
    good = [[b - 1 for b in bounds]]
    assert column_array(good, ids_spec, ["rows[0].all.ids"]).tolist() == good
    col = int(np.argmin(bounds))
    bad = [[0] * len(bounds)]
    bad[0][col] = bounds[col]
    with pytest.raises(RequestError) as err:
        column_array(bad, ids_spec, ["rows[0].all.ids"])
    assert err.value.field == f"rows[0].all.ids[{col}]"
    assert f"column {col} (ids in [0, {bounds[col]}))" in str(err.value)


def _width(config, name: str) -> int:
    from recstack.easyrec.features import TabularSpec

    return TabularSpec.from_config(config).block_columns()[name][1]

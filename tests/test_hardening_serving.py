"""Hardening of tools/serve.py / recstack.serving (issue 14, items 10-14): memory under concurrent large bodies,
slow clients and the connection cap, oversized integers, no code from the export's model folder, image paths
confined to the image folder, Content-Type, no absolute paths in /metadata. All traffic is on 127.0.0.1 and
every loop is bounded in count and time."""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from recstack.backends import InferenceSettings, create_backend
from recstack.benchmark import run_benchmark
from recstack.config import load_config
from recstack.data.factory import UntrustedCodeError, core_reader_alias, resolve_reader
from recstack.export import export_model
from recstack.export_spec import ExportedModel
from recstack.inference import load_batches
from recstack.serving import RequestError, ServingOptions, create_app, uvicorn_config
from recstack.serving.limits import LINGER_SECONDS
from recstack.serving.model import ServedModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_export import checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
E2E = REPO / "models/multitask/e2e_mm_dbmtl/config.yaml"
DEEPFM_LINES = (REPO / "models/rank/deepfm/data/sample_data/test/part-0.txt").read_bytes().splitlines(keepends=True)
GOOD = {"sparse": [1] * 26, "dense": [0.5] * 13}


@pytest.fixture(scope="module")
def deepfm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deepfm_hardening")
    checkpoint(DEEPFM, folder)
    export_model(load_config(DEEPFM, [f"runner.model_save_path={folder}"]))
    return ExportedModel.locate(folder)


@contextlib.contextmanager
def serving(served: ServedModel, **options):
    """The service on a free loopback port in a thread, with the limits of ``options``: (port, app)."""
    options = ServingOptions(**{"max_rows": 1500, "max_body_bytes": 1 << 20, "max_buffered_bytes": 4 << 20,
                                **options})
    app = create_app(lambda: served, options)
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
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def served(deepfm):
    return ServedModel(deepfm, InferenceSettings("onnxruntime", cpu_threads=1))


@pytest.fixture(scope="module")
def server(served):
    with serving(served) as (port, app):
        yield port, app


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection (at most ``limit`` s): (data, seconds)."""
    started = time.monotonic()
    data = b""
    while time.monotonic() - started < limit:
        sock.settimeout(max(0.05, limit - (time.monotonic() - started)))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            return data, time.monotonic() - started
        data += chunk
    return data, float("inf")  # still open


# ---------------------------------------------------------------------- item 10: memory
def test_concurrent_large_bodies_keep_the_rss_bounded_and_give_it_back(deepfm):
    """The issue's probe, smaller: the real tools/serve.py, 8 concurrent 4 MB /predict bodies of rows (more rows
    than --max_rows). Before: 348 -> 526 MiB peak, 526 after (bodies held in exception reference cycles and
    parsed whole); now refused before parsing (a JSON-value count), the RSS back where it was."""
    out = subprocess.run([sys.executable, str(REPO / "tools/serve_probe.py"), "--model_dir", str(deepfm.directory),
                          "--probe", "memory", "--bodies", "8", "--body_mb", "4", "--body_kind", "rows",
                          "--settle", "1"], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["statuses"] == {"413": 8}, result
    assert "JSON values" in result["first_answer"]
    assert result["rss_peak_mib"] - result["rss_before_mib"] < 100, result
    assert result["rss_after_mib"] - result["rss_before_mib"] < 30, result


def test_large_bodies_are_parsed_one_at_a_time_and_the_body_budget_answers_503(served):
    rows = [{"sparse": [i % 1000 + j for j in range(26)], "dense": [0.25] * 13} for i in range(1500)]
    body = json.dumps({"rows": rows}).encode()  # ~0.5 MB: parsed off the event loop, in a parse slot
    with serving(served, max_parallel_parsing=1) as (port, _):
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            results = []
            threads = [threading.Thread(target=lambda: results.append(client.post("/predict", content=body)))
                       for _ in range(4)]
            [t.start() for t in threads]
            [t.join(60) for t in threads]
            assert [r.status_code for r in results] == [200] * 4
            state = client.get("/metadata").json()["limits"]["state"]
            assert state["peak_parsing"] == 1 and state["buffered_bytes"] == 0 and state["parsing"] == 0

    # a body that declares 1 MB and stalls holds 1 MB of the 1.5 MB budget: a second 0.6 MB body gets a 503
    with serving(served, max_buffered_bytes=3 << 19, queue_timeout=0.3, timeout_body=3) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as holder:
            holder.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 1000000\r\n\r\n{\"rows\": [")
            time.sleep(0.3)
            started = time.monotonic()
            busy = httpx.post(f"http://127.0.0.1:{port}/predict", content=b" " * 600_000, timeout=10)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert "--max_buffered_bytes" in busy.json()["error"]["message"]
            assert time.monotonic() - started < 2
            answer, _ = read_until_closed(holder, 6)
            assert answer.startswith(b"HTTP/1.1 408")
        assert httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": [GOOD]}).status_code == 200


def test_a_body_with_more_json_values_than_max_rows_hold_is_refused_before_parsing(server):
    port, _ = server
    body = b"[" + b",".join([b"[]"] * 300_000) + b"]"  # 900k values in 0.9 MB; 1500 DeepFM rows hold ~66k
    response = httpx.post(f"http://127.0.0.1:{port}/predict", content=body, timeout=30)
    assert response.status_code == 413
    assert re.search(r"holds about \d+ JSON values; 1500 rows \(--max_rows\) of this model's inputs hold at most "
                     r"\d+", response.json()["error"]["message"])
    lines = b"".join(DEEPFM_LINES[:3]) * 600  # 1800 lines > 1500 samples: refused before the reader runs
    response = httpx.post(f"http://127.0.0.1:{port}/upload", content=lines, timeout=30)
    assert response.status_code == 413 and response.json()["error"]["message"].startswith("upload: 1800 lines")


# ---------------------------------------------------------------------- item 11: slow clients, connections
def test_slow_header_slow_body_and_the_connection_cap(served):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
    with serving(served, timeout_header=1.0, timeout_body=1.0, max_connections=4) as (port, _):
        # connections beyond the cap: the 5th gets a 503 at once and is closed
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                answer, seconds = read_until_closed(extra, 2)
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower() and seconds < 1
            assert b"--max_connections 4" in answer
            # an idle connection (nothing sent) is closed after --timeout_header, silently
            answer, seconds = read_until_closed(idle[0], 3)
            assert answer == b"" and seconds < 1.5
        finally:
            for s in idle:
                s.close()
        time.sleep(0.1)

        # a header trickled a byte every 0.2 s: 408 and closed after ~1 s
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            for byte in head[:20]:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if time.monotonic() - started > 3:
                    break
                time.sleep(0.2)
            answer, _ = read_until_closed(sock, 3)
            seconds = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408") and b"--timeout_header" in answer and seconds < 3

        # a body stalled after 10 of 100 bytes: 408 naming --timeout_body, and closed
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head + b"\r\n" + b'{"rows": [')
            answer, seconds = read_until_closed(sock, 4)
        assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower() and seconds < 2.5
        assert b"--timeout_body" in answer

        # an answer given before the body was read (415 here): the rest of the body is read and dropped for at most
        # LINGER_SECONDS, then the connection is closed, so a stalled rest cannot hold it
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head.replace(b"application/json", b"text/plain") + b"\r\n" + b"abc")
            answer, seconds = read_until_closed(sock, 5)
        assert answer.startswith(b"HTTP/1.1 415") and LINGER_SECONDS - 0.5 < seconds < LINGER_SECONDS + 1
        # ... and when the client sends the whole body (as clients do), it reads the answer and keeps the connection
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            big = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 << 20)
            sock.sendall(big + b" " * (2 << 20))  # past --max_body_bytes: a 413 before the body is read
            data = b""
            while b"}}" not in data:
                data += sock.recv(4096)
            assert data.startswith(b"HTTP/1.1 413")
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"}" not in data:
                data += sock.recv(4096)
            assert data.startswith(b"HTTP/1.1 200")

        # keep-alive still works: two requests on one connection
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for _ in range(2):
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while b"}" not in data:
                    data += sock.recv(4096)
                assert data.startswith(b"HTTP/1.1 200")


# ---------------------------------------------------------------------- item 12: user input never gives a 500
@pytest.mark.parametrize("body, field, message", [
    ('{"rows": [GOOD, {"sparse": [1, 2, 3, BIG, %s], "dense": %s}]}' % (", ".join(["1"] * 22), [0.5] * 13),  # noqa: UP031
     "rows[1].sparse[3]", r"rows\[1\]\.sparse\[3\]: a 5000-digit integer \(9999999999999\.\.\.\) is outside int64"),
    ('{"rows": [{"sparse": %s, "dense": [-BIG, %s]}]}' % ([1] * 26, ", ".join(["0.5"] * 12)),  # noqa: UP031
     "rows[0].dense[0]", r"rows\[0\]\.dense\[0\]: a 5000-digit integer \(-999999999999\.\.\.\) overflows float32"),
    ('{"inputs": {"sparse": [[BIG, %s]], "dense": [%s]}}' % (", ".join(["1"] * 25), [0.5] * 13),  # noqa: UP031
     "inputs.sparse[0][0]", r"inputs\.sparse\[0\]\[0\]: a 5000-digit integer .* outside int64"),
    ('{"rows": BIG}', "rows", r"rows: expected a list of objects, got a 5000-digit integer"),
])
def test_a_5000_digit_integer_is_a_400_naming_the_field(server, body, field, message):
    port, _ = server
    body = body.replace("GOOD", json.dumps(GOOD)).replace("BIG", "9" * 5000)
    response = httpx.post(f"http://127.0.0.1:{port}/predict", content=body,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    assert re.match(message, response.json()["error"]["message"])


def test_oversized_numbers_in_headers_and_uploads_are_400s(server, served, monkeypatch):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a 5000-digit Content-Length
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
        answer, _ = read_until_closed(sock, 5)
    assert answer.startswith(b"HTTP/1.1 400")
    for big in (str(2 ** 64), "9" * 5000):  # an id beyond int64 in an uploaded line: the reader names the line
        bad = re.sub(rb" 7:\d+", b" 7:" + big.encode(), DEEPFM_LINES[1])
        response = httpx.post(f"http://127.0.0.1:{port}/upload", content=DEEPFM_LINES[0] + bad + DEEPFM_LINES[2])
        assert response.status_code == 400, response.text
        assert response.json()["error"]["line"] == 2 and response.json()["error"]["message"].startswith("upload:2: ")
    # a reader failing outside its own checks (an OverflowError, an IndexError) is still the upload's 400
    for error in (OverflowError("Python int too large to convert to C long"), IndexError("list index out of range")):
        def broken(*args, error=error):
            raise error
        monkeypatch.setattr(served.reader, "parse_block", broken)
        response = httpx.post(f"http://127.0.0.1:{port}/upload", content=DEEPFM_LINES[0])
        assert response.status_code == 400 and "not readable by criteo_reader" in response.json()["error"]["message"]
    monkeypatch.undo()
    assert httpx.post(f"http://127.0.0.1:{port}/upload", content=DEEPFM_LINES[0]).status_code == 200


# ---------------------------------------------------------------------- item 13: no code from the export's folder
def test_every_shipped_reader_module_resolves_to_a_core_reader_without_running():
    for path in sorted(REPO.glob("models/*/*/*eader*.py")):
        reader = core_reader_alias(path)
        assert reader is not None and reader.__module__.startswith(("recstack.data.", "recstack.easyrec.")), path


def test_an_edited_export_json_cannot_make_the_server_import_code(deepfm, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil_model"
    shutil.copytree(REPO / "models/rank/deepfm", folder, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (folder / "criteo_reader.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom recstack.data.slot import SlotReader as RecDataset\n")
    export = tmp_path / "export"
    shutil.copytree(deepfm.directory, export, ignore=shutil.ignore_patterns("0"))
    spec = json.loads((export / "tostatic.json").read_text())
    spec["config_dir"] = str(folder)
    (export / "tostatic.json").write_text(json.dumps(spec))
    model = ExportedModel.locate(export)

    served = ServedModel(model, InferenceSettings("onnxruntime", cpu_threads=1))
    assert not marker.exists() and served.upload_unavailable and "--trust_export_code" in served.upload_unavailable
    with serving(served) as (port, _), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        response = client.post("/upload", content=DEEPFM_LINES[0])
        assert response.status_code == 501 and "--trust_export_code" in response.json()["error"]["message"]
        assert client.post("/predict", json={"rows": [GOOD]}).status_code == 200  # /predict needs no reader
        assert "--trust_export_code" in client.get("/metadata").json()["upload_unavailable"]
    assert not marker.exists()
    with pytest.raises(UntrustedCodeError):  # tools/infer_benchmark.py --trust_export_code False: the same rule
        load_batches(model, 100, REPO / "models/rank/deepfm/data/sample_data/test", trust_code=False)
    assert not marker.exists()
    # trusted (--trust_export_code): the module is imported, as training and offline inference do
    ServedModel(model, InferenceSettings("onnxruntime", cpu_threads=1), trust_code=True)
    assert marker.exists()


def test_infer_benchmark_resolution_without_trust_reads_shipped_exports(deepfm):
    trusted, _ = load_batches(deepfm, 500, trust_code=True)
    untrusted, _ = load_batches(deepfm, 500, trust_code=False)
    assert len(trusted) == len(untrusted) == 2
    for a, b in zip(trusted, untrusted):
        assert all(np.array_equal(a.inputs[k].numpy(), b.inputs[k].numpy()) for k in a.inputs)
    config = load_config(DEEPFM)
    assert resolve_reader(config, "runner.infer_reader_path", trust_code=False) is \
        resolve_reader(config, "runner.infer_reader_path")


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e_hardening")
    checkpoint(E2E, folder)
    export_model(load_config(E2E, [f"runner.model_save_path={folder}"]), tolerance=1e-3)  # untrained: loose parity
    return ExportedModel.locate(folder)


def test_upload_image_paths_stay_in_the_image_folder(e2e, tmp_path):
    images = REPO / "models/multitask/e2e_mm_dbmtl/data/sample_data/images"
    lines = (REPO / "models/multitask/e2e_mm_dbmtl/data/sample_data/test/part-0.txt").read_bytes() \
        .splitlines(keepends=True)[:6]
    relative = [line.replace(b"../images/", b"") for line in lines]  # named relative to --image_root
    served = ServedModel(e2e, InferenceSettings("onnxruntime", cpu_threads=1), image_root=str(images))
    with serving(served) as (port, _), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for bad, problem in ((lines[1], "goes up with '..'"),  # the sample's own ../images/ paths
                             (relative[1].replace(b"item_", b"/etc/item_"), "is absolute"),
                             (relative[1].replace(b"item_", b"sub/../../item_"), "goes up with '..'")):
            response = client.post("/upload", content=relative[0] + bad + relative[2])
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["line"] == 2 and error["message"].startswith("upload:2: image path ") and problem in \
                error["message"] and "--image_root" in error["message"]
            assert str(REPO) not in error["message"]
        response = client.post("/upload", content=b"".join(relative))
        assert response.status_code == 200, response.text
        served_predictions = np.asarray(response.json()["data"])
    # offline inference of the same lines (../images/ from a data folder beside the images) predicts the same
    data = tmp_path / "data" / "test"
    data.mkdir(parents=True)
    (tmp_path / "data" / "images").symlink_to(images)
    (data / "part-0.txt").write_bytes(b"".join(lines))
    batches, _ = load_batches(e2e, 100, data)
    offline = run_benchmark(create_backend(e2e, InferenceSettings("onnxruntime", cpu_threads=1)), batches).predictions
    assert served_predictions.shape == (sum(len(b.inputs["all.ids"]) for b in batches), 2)
    assert np.abs(served_predictions - np.concatenate(offline, axis=1)).max() <= 1e-5
    # the default image folder is the export's test data folder: the sample's ../images/ paths are refused there
    default = ServedModel(e2e, InferenceSettings("onnxruntime", cpu_threads=1))
    assert default.reader.confine_images_to == os.path.realpath(e2e.config().get("runner.test_data_dir"))
    with pytest.raises(RequestError) as err:
        default.parse_upload(lines[0], 10)
    assert err.value.line == 1 and "goes up with '..'" in str(err.value)


# ---------------------------------------------------------------------- item 14: Content-Type, /metadata
@pytest.mark.parametrize("content_type, status", [
    ("application/json", 200), ("application/json; charset=utf-8", 200), ("application/vnd.rows+json", 200),
    (None, 200), ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data", 415),
])
def test_predict_takes_json_only(server, content_type, status):
    port, _ = server
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"http://127.0.0.1:{port}/predict", content=json.dumps({"rows": [GOOD]}), headers=headers)
    assert response.status_code == status, response.text
    if status == 415:
        assert response.json()["error"]["message"].startswith(f"Content-Type '{content_type}' is not JSON")


def test_metadata_holds_no_absolute_paths(server, deepfm):
    port, _ = server
    meta = httpx.get(f"http://127.0.0.1:{port}/metadata").json()
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(meta))
    assert not [s for s in strings if s.startswith("/") or str(REPO) in s or str(deepfm.directory) in s]
    assert meta["export"]["directory"] == deepfm.directory.name and meta["export"]["config"] == "config.yaml"
    assert meta["limits"]["timeout_header"] == 10.0 and meta["limits"]["max_connections"] == 512

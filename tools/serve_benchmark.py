"""Load test of tools/serve.py: requests/s and latency at several concurrencies, with and without micro-batching.

    python tools/serve_benchmark.py --model_dir output_model_deepfm [--concurrency 1,16,64] [--seconds 10] \\
        [--repeats 3] [--rows_per_request 1] [--cpu_threads 1] [--backend onnxruntime] \\
        [--max_batch_size 256] [--max_wait_ms 0]
    python tools/serve_benchmark.py --model_dir output_model_dssm --endpoint recall --k 100 [--index hnsw]
    python tools/serve_benchmark.py --model_dir output_model_dssm --endpoint recommend \\
        --rank output_model_deepfm_movielens --candidates 100 --k 10

For each mode (micro-batching on, then off) it starts ``tools/serve.py`` on a free loopback port
(``OMP_WAIT_POLICY=PASSIVE``, ``--cpu_threads``), and for each concurrency N runs a closed loop: N
clients, each on its own keep-alive connection, send a ``/predict`` request (``--rows_per_request``
rows of the model's test data, in turn), wait for the answer and send the next, for ``--seconds``
after ``--warmup_seconds`` untimed. Every answer must be HTTP 200 (others are counted as errors).
Each cell is run ``--repeats`` times; the table gives the medians (requests/s, p50 and p99 latency
in ms over each run's requests), and the mean number of requests served per inference call
(the server's ``/stats``). ``--endpoint recall`` loads a retrieval export's ``/recall`` instead (the same rows,
``"k": --k``; ``--index`` serves through a FAISS index of ``tools/build_index.py``); ``--endpoint recommend`` the
two-stage ``/recommend`` of ``--model_dir`` (the retrieval export) and ``--rank`` (each request one user's raw
fields from the retrieval config's test lines, ``--candidates`` retrieved, ``--k`` returned; the requests per
inference call are the ranking model's). The clients are one
asyncio loop with a minimal HTTP/1.1 client in this process, so on a small machine they share the CPU with
the server: the table states the machine.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

from recstack.cli import report_user_errors  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="the folder tools/to_static.py wrote")
    parser.add_argument("--data_dir", help="data for the requests (default: the export's runner.test_data_dir)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per run")
    parser.add_argument("--warmup_seconds", type=float, default=1.0, help="untimed seconds before each run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (the table gives medians)")
    parser.add_argument("--rows_per_request", type=int, default=1)
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torchscript"])
    parser.add_argument("--cpu_threads", type=int, default=1)
    parser.add_argument("--max_batch_size", type=int, default=256)
    parser.add_argument("--max_wait_ms", type=float, default=0.0)
    parser.add_argument("--modes", default="batching,no_batching", help="comma-separated: batching, no_batching")
    parser.add_argument("--endpoint", default="predict", choices=["predict", "recall", "recommend"],
                        help="recall: a retrieval export's /recall (top --k items per row); recommend: the two-stage "
                             "/recommend of --model_dir (retrieval) and --rank")
    parser.add_argument("--k", type=int, default=100, help="/recall, /recommend: items per row")
    parser.add_argument("--rank", help="/recommend: the ranking export")
    parser.add_argument("--candidates", type=int, default=100, help="/recommend: items retrieved per user")
    parser.add_argument("--index", choices=["flat", "ivf", "hnsw"],
                        help="/recall through <model_dir>/index/<kind>.faiss")
    return parser.parse_args(argv)


def request_bodies(model_dir: str, data_dir: str | None, rows_per_request: int, count: int = 256,
                   extra: dict | None = None) -> list[bytes]:
    """``/predict`` bodies of the first ``count * rows_per_request`` rows of the data, in turn (with ``extra`` keys:
    ``/recall``'s ``k``)."""
    from recstack.export_spec import ExportedModel
    from recstack.inference import load_batches

    model = ExportedModel.locate(model_dir)
    need = count * rows_per_request
    batches, _ = load_batches(model, min(need, 4096), data_dir)
    columns = {n: [t.numpy() for b in batches for t in [b.inputs[n]]] for n in batches[0].inputs}
    rows = []
    for i, batch in enumerate(batches):
        for r in range(batch.size):
            rows.append({n: columns[n][i][r].tolist() for n in columns})
            if len(rows) == need:
                break
    return [json.dumps({"rows": rows[i:i + rows_per_request], **(extra or {})}).encode()
            for i in range(0, len(rows) - rows_per_request + 1, rows_per_request)]


def recommend_bodies(model_dir: str, data_dir: str | None, users_per_request: int, k: int, candidates: int,
                     count: int = 256) -> list[bytes]:
    """``/recommend`` bodies: the raw fields of the retrieval config's first test lines, one user per line."""
    from recstack.data.base import list_data_files
    from recstack.easyrec.features import TabularSpec
    from recstack.export_spec import ExportedModel

    config = ExportedModel.locate(model_dir).config()
    spec = TabularSpec.from_config(config)
    lists = {f.input_name: f.separator or "|" for f in spec.features if f.is_ragged}
    item_fields = set(json.loads((Path(model_dir) / "model.json").read_text())["retrieval"]["item_table"]["fields"])
    users = []
    for path in list_data_files(data_dir or config.get("runner.test_data_dir"), "--data_dir"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                values = line.rstrip("\r\n").split(spec.separator)
                if len(values) != len(spec.input_fields):
                    continue
                record = {}
                for field, value in zip(spec.input_fields, values):
                    if field.name in spec.label_fields or field.name in item_fields or not value:
                        continue
                    record[field.name] = value.split(lists[field.name]) if field.name in lists else value
                users.append(record)
                if len(users) == count * users_per_request:
                    break
        if len(users) == count * users_per_request:
            break
    return [json.dumps({"users": users[i:i + users_per_request], "k": k, "candidates": candidates}).encode()
            for i in range(0, len(users) - users_per_request + 1, users_per_request)]


def post_bytes(port: int, body: bytes, endpoint: str = "predict") -> bytes:
    return (f"POST /{endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def client(port: int, requests: list[bytes], offset: int, stop_at: float, timed_from: float,
                 latencies: list[float], errors: list[int]) -> None:
    """One closed-loop client on a keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                break
            writer.write(requests[i % len(requests)])
            i += 1
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            end = time.perf_counter()
            if start >= timed_from:
                latencies.append(end - start)
                if not status_line.startswith(b"HTTP/1.1 200"):
                    errors.append(1)
    finally:
        writer.close()


async def run_load(port: int, requests: list[bytes], concurrency: int, seconds: float, warmup: float):
    latencies: list[float] = []
    errors: list[int] = []
    now = time.perf_counter()
    timed_from, stop_at = now + warmup, now + warmup + seconds
    await asyncio.gather(*[client(port, requests, k * 7, stop_at, timed_from, latencies, errors)
                           for k in range(concurrency)])
    return latencies, len(errors)


def get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def start_server(args, batching: bool) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, str(REPO / "tools/serve.py"), "--model_dir", args.model_dir, "--port", str(port),
               "--backend", args.backend, "--cpu_threads", str(args.cpu_threads), "--max_batch_size",
               str(args.max_batch_size), "--max_wait_ms", str(args.max_wait_ms), "--log_level", "warning"]
    if not batching:
        command.append("--no_batching")
    if args.index:
        command += ["--index", args.index]
    if args.endpoint == "recommend":
        command += ["--rank", args.rank, "--candidates", str(args.candidates)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(args.cpu_threads)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"tools/serve.py exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if get_json(port, "/health").get("status") == "ok":
                return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("tools/serve.py did not answer /health within 120 s")
        time.sleep(0.2)


@report_user_errors(plain=True)  # a missing --model_dir or bad data: the message, exit status 2
def main(argv=None) -> int:
    import numpy as np

    args = parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in ("batching", "no_batching") for m in modes) or not levels or min(levels) < 1:
        print("--modes takes batching,no_batching; --concurrency positive integers", file=sys.stderr)
        return 2
    if args.endpoint == "recommend":
        if not args.rank:
            print("--endpoint recommend needs --rank (the ranking export)", file=sys.stderr)
            return 2
        bodies = recommend_bodies(args.model_dir, args.data_dir, args.rows_per_request, args.k, args.candidates)
    else:
        bodies = request_bodies(args.model_dir, args.data_dir, args.rows_per_request,
                                extra={"k": args.k} if args.endpoint == "recall" else None)
    requests = None
    table = []
    for mode in modes:
        proc, port = start_server(args, mode == "batching")
        requests = [post_bytes(port, b, args.endpoint) for b in bodies]
        try:
            meta = get_json(port, "/metadata")
            for level in levels:
                runs = []
                for _ in range(args.repeats):
                    before = get_json(port, "/stats")
                    latencies, errors = asyncio.run(run_load(port, requests, level, args.seconds,
                                                             args.warmup_seconds))
                    after = get_json(port, "/stats")
                    if "rank" in after:  # two stages: the ranking model's calls
                        before, after = before["rank"], after["rank"]
                    calls = after["inference_calls"] - before["inference_calls"]
                    served = after["requests"] - before["requests"]
                    lat = np.asarray(latencies) * 1e3
                    runs.append((len(latencies) / args.seconds, np.percentile(lat, 50), np.percentile(lat, 99),
                                 errors, served / max(calls, 1)))
                    print(f"  {mode} c={level}: {runs[-1][0]:.1f} req/s p50 {runs[-1][1]:.2f} ms p99 "
                          f"{runs[-1][2]:.2f} ms errors {errors}", file=sys.stderr)
                med = [float(np.median([r[k] for r in runs])) for k in range(5)]
                table.append((mode, level, med, sum(r[3] for r in runs)))
        finally:
            proc.terminate()
            proc.wait(60)
    versions = meta["versions"]
    endpoint = {"recall": f"/recall k {args.k} ({args.index or 'exact'})",
                "recommend": f"/recommend ({args.index or 'exact'} retrieval of {args.candidates} candidates, "
                             f"ranked by {Path(args.rank or '').name}, k {args.k})"}.get(args.endpoint, "/predict")
    print(f"\nmodel {meta['model']} {endpoint} ({meta['backend']}, --cpu_threads {args.cpu_threads}, "
          "OMP_WAIT_POLICY=PASSIVE); "
          f"{args.rows_per_request} row(s) per request; closed loop, {args.seconds:g} s per run after "
          f"{args.warmup_seconds:g} s warm-up, median of {args.repeats} runs; micro-batching max_batch_size "
          f"{args.max_batch_size}, max_wait_ms {args.max_wait_ms:g}; {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), clients in the same machine; "
          f"fastapi {versions['fastapi']}, uvicorn {versions['uvicorn']}, onnxruntime {versions.get('onnxruntime')}\n")
    print("| micro-batching | concurrency | requests/s | p50 latency (ms) | p99 latency (ms) "
          "| requests per inference call | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, level, (rps, p50, p99, _, per_call), errors in table:
        print(f"| {'on' if mode == 'batching' else 'off'} | {level} | {rps:.0f} | {p50:.2f} | {p99:.2f} | "
              f"{per_call:.1f} | {errors} |")
    return 1 if any(t[3] for t in table) else 0


if __name__ == "__main__":
    sys.exit(main())

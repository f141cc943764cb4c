"""Client of tools/serve.py (PaddleRec's ``rec_client.py``): send data, print predictions and latency.

    python tools/rec_client.py --connect 127.0.0.1:8867 --data_dir models/rank/deepfm/data/sample_data/test \\
        --batchsize 64 [--mode upload|predict] [--reader_file models/rank/deepfm/criteo_reader.py] \\
        [--model_dir output_model_deepfm --compare]

``--mode upload`` (default) posts the data files' lines, ``--batchsize`` lines per request, to
``/upload`` as they are (the server parses them with the model's reader, as in PaddleRec's serving
tutorial). ``--mode predict`` parses them here with the model's reader (``--reader_file``, or the
reader of ``--config`` / of the export in ``--model_dir``) and posts JSON rows to ``/predict``.
Requests are sent one after another on one keep-alive connection (``--concurrency N``: N such
connections in threads). It prints the first ``--print`` predictions, requests/s and the latency
percentiles, and with ``--compare`` the max abs difference from offline predictions of the export
in ``--model_dir`` (:mod:`recstack.inference`, ONNX Runtime, same batch size). Exit status 1 when a
request fails or the difference exceeds ``--tolerance``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from recstack.cli import report_user_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connect", required=True, help="host:port of tools/serve.py")
    parser.add_argument("--data_dir", help="folder of data files in the model's reader format (default: the "
                                           "export's / config's runner.test_data_dir)")
    parser.add_argument("--reader_file", help="--mode predict: the reader module (models/rank/deepfm/criteo_reader.py)"
                                              " or the model's YAML config")
    parser.add_argument("--config", help="the model's YAML config (its reader and test_data_dir)")
    parser.add_argument("--model_dir", help="the export (tools/to_static.py): its config, and the offline "
                                            "reference for --compare")
    parser.add_argument("--batchsize", type=int, default=64, help="samples per request (default 64)")
    parser.add_argument("--mode", choices=["upload", "predict"], default="upload")
    parser.add_argument("--concurrency", type=int, default=1, help="connections sending at the same time")
    parser.add_argument("--max_requests", type=int, default=0, help="send at most this many requests (0: all data)")
    parser.add_argument("--print", type=int, default=10, dest="print_rows", help="predictions to print")
    parser.add_argument("--compare", action="store_true", help="compare with offline predictions (needs --model_dir)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="--compare: largest allowed max abs diff")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    return parser.parse_args(argv)


def split_lines(files, batch_size: int):
    """Request bodies of ``batch_size`` non-blank lines each, in file order."""
    bodies, lines = [], []
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    lines.append(line if line.endswith(b"\n") else line + b"\n")
                    if len(lines) == batch_size:
                        bodies.append(b"".join(lines))
                        lines = []
    if lines:
        bodies.append(b"".join(lines))
    return bodies


def json_bodies(files, batch_size: int, reader, inputs):
    """``/predict`` bodies (``{"rows": [...]}``) of ``batch_size`` samples each, parsed with ``reader``."""
    import numpy as np

    from recstack.data.base import RaggedArray

    def rows_of(block, start, stop):
        columns = {}
        for spec in inputs:
            column = block[spec["column"]][start:stop]
            if isinstance(column, RaggedArray):
                columns[spec["name"]] = [column.values[column.offsets[i]:column.offsets[i + 1]].tolist()
                                         for i in range(len(column))]
            else:
                columns[spec["name"]] = np.asarray(column).tolist()
        return [{name: columns[name][i] for name in columns} for i in range(stop - start)]

    rows, bodies = [], []
    for path in files:
        for block in reader.iter_file(path):
            n = len(next(iter(block.values())))
            rows.extend(rows_of(block, 0, n))
            while len(rows) >= batch_size:
                bodies.append(json.dumps({"rows": rows[:batch_size]}).encode())
                rows = rows[batch_size:]
    if rows:
        bodies.append(json.dumps({"rows": rows}).encode())
    return bodies


def send_all(host: str, port: int, path: str, bodies, concurrency: int, timeout: float):
    """POST every body (``concurrency`` keep-alive connections); returns (responses in order, latencies s, wall s)."""
    results = [None] * len(bodies)
    latencies = [0.0] * len(bodies)
    lock = threading.Lock()
    next_index = [0]

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(bodies):
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, bodies[i], {"Content-Type": "application/json" if path == "/predict"
                                                       else "text/plain"})
                response = conn.getresponse()
                payload = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                status, payload = 0, json.dumps({"error": {"message": f"{type(err).__name__}: {err}"}}).encode()
            latencies[i] = time.perf_counter() - t0
            try:
                results[i] = (status, json.loads(payload))
            except ValueError:
                results[i] = (status, {"error": {"message": payload[:200].decode("utf-8", "replace")}})
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, latencies, time.perf_counter() - start


@report_user_errors(plain=True)  # a bad --config, --data_dir, --model_dir: the message, exit status 2
def main(argv=None) -> int:
    import numpy as np

    args = parse_args(argv)
    host, _, port = args.connect.rpartition(":")
    if not host or not port.isdigit():
        print(f"--connect: expected host:port, got {args.connect!r}", file=sys.stderr)
        return 2
    if args.batchsize < 1:
        print(f"--batchsize must be positive, got {args.batchsize}", file=sys.stderr)
        return 2
    if args.compare and not args.model_dir:
        print("--compare needs --model_dir (the export to predict offline with)", file=sys.stderr)
        return 2
    conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
    try:
        conn.request("GET", "/metadata")
        metadata = json.loads(conn.getresponse().read())
    except (OSError, http.client.HTTPException, ValueError) as err:
        print(f"cannot reach the server at {args.connect}: {err}", file=sys.stderr)
        return 1
    finally:
        conn.close()

    model = config = None
    if args.model_dir:
        from recstack.export_spec import ExportedModel

        model = ExportedModel.locate(args.model_dir)
        config = model.config(args.reader_file)
    elif args.config or (args.reader_file or "").endswith((".yaml", ".yml")):
        from recstack.config import load_config

        config = load_config(args.config or args.reader_file)
    data_dir = args.data_dir or (config.get("runner.test_data_dir") if config is not None else None)
    if not data_dir:
        print("give --data_dir (or --model_dir / --config with a runner.test_data_dir)", file=sys.stderr)
        return 2
    from recstack.data.base import list_data_files

    files = list_data_files(data_dir, key="--data_dir")
    if args.mode == "upload":
        path, bodies = "/upload", split_lines(files, args.batchsize)
    else:
        if args.reader_file and args.reader_file.endswith(".py"):
            from recstack.modules import load_module

            reader_path = Path(args.reader_file)
            reader_cls = load_module(reader_path.parent, reader_path.stem).RecDataset
        elif config is not None:
            from recstack.data.factory import resolve_reader

            reader_cls = resolve_reader(config, "runner.infer_reader_path")
        else:
            print("--mode predict parses the data here: give --reader_file, --config or --model_dir", file=sys.stderr)
            return 2
        if config is None:
            print("--mode predict needs the model's config for its reader: give --config or --model_dir",
                  file=sys.stderr)
            return 2
        path, bodies = "/predict", json_bodies(files, args.batchsize, reader_cls(files, config), metadata["inputs"])
    if args.max_requests:
        bodies = bodies[:args.max_requests]
    results, latencies, wall = send_all(host, int(port), path, bodies, args.concurrency, args.timeout)
    failed = [(i, status, body) for i, (status, body) in enumerate(results) if status != 200]
    for i, status, body in failed[:5]:
        print(f"request {i}: HTTP {status}: {body.get('error', {}).get('message', body)}")
    ok = [body for status, body in results if status == 200]
    print(f"model {metadata['model']} ({metadata['backend']}) at {args.connect}; {len(bodies)} requests to {path}, "
          f"{args.batchsize} samples each; {len(failed)} failed")
    if ok:
        columns = ok[0]["columns"]
        data = np.concatenate([np.asarray(b["data"], dtype=np.float64).reshape(len(b["data"]), -1) for b in ok])
        print(f"predictions ({', '.join(columns)}), first {min(args.print_rows, len(data))} of {len(data)}:")
        for row in data[:args.print_rows]:
            print("  " + " ".join(f"{v:.6f}" for v in row))
    lat = np.asarray(latencies) * 1e3
    print(f"requests/s {len(bodies) / wall:.1f}; samples/s {sum(len(b['data']) for b in ok) / wall:.1f}; "
          f"latency ms p50 {np.percentile(lat, 50):.2f} p99 {np.percentile(lat, 99):.2f} max {lat.max():.2f} "
          f"(concurrency {args.concurrency})")
    status = 1 if failed else 0
    if args.compare and ok and not failed:
        from recstack.backends import InferenceSettings, create_backend
        from recstack.benchmark import run_benchmark
        from recstack.inference import load_batches

        reader_file = args.reader_file if args.mode == "predict" or (args.reader_file or "").endswith(".py") else None
        batches, _ = load_batches(model, args.batchsize, data_dir, reader_file)
        offline = run_benchmark(create_backend(model, InferenceSettings("onnxruntime")), batches).predictions
        offline_flat = np.concatenate([np.asarray(o, dtype=np.float64).reshape(len(o), -1) for o in offline], axis=1)
        n = len(data)
        if offline_flat.shape[0] < n or offline_flat.shape[1] != data.shape[1]:
            print(f"compare: offline predictions have shape {offline_flat.shape}, the server's {data.shape}")
            return 1
        diff = float(np.abs(offline_flat[:n] - data).max())
        print(f"compare: max abs diff vs offline onnxruntime predictions over {n} samples: {diff:.3g} "
              f"(tolerance {args.tolerance:g})")
        status = 0 if diff <= args.tolerance else 1
    return status


if __name__ == "__main__":
    sys.exit(main())

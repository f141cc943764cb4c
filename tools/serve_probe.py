"""Hardening probes of tools/serve.py on loopback: memory under concurrent large bodies, slow clients.

    python tools/serve_probe.py --model_dir output_model_deepfm --probe memory [--bodies 16] [--body_mb 8] \\
        [--body_kind rows] [-- <tools/serve.py flags>]
    python tools/serve_probe.py --model_dir output_model_deepfm --probe slow [-- <tools/serve.py flags>]

It starts ``tools/serve.py`` on a free 127.0.0.1 port (extra flags after ``--`` go to it) and:

- ``memory``: sends ``--bodies`` concurrent ``/predict`` bodies of ``--body_mb`` MB each (``rows``: DeepFM-like
  rows, more than ``--max_rows`` of them; ``valid``: 4096 such rows, a request that is served; ``lists``:
  ``[[],[],...]``, the JSON of most objects per byte; ``upload``: data-file lines to ``/upload``), samples the
  server's RSS every 10 ms (psutil) and prints RSS before, the peak, and ``--settle`` seconds after the last
  answer, with the answers' status codes;
- ``slow``: a header trickled one byte a second, a body stalled after its first bytes, and connections
  beyond ``--max_connections``: prints how long the server held each and what it answered.

Every target is 127.0.0.1; every loop is bounded in count and time. See doc/serving.md (Limits).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="the folder tools/to_static.py wrote")
    parser.add_argument("--probe", default="memory", choices=["memory", "slow"])
    parser.add_argument("--bodies", type=int, default=16, help="concurrent bodies (memory probe)")
    parser.add_argument("--body_mb", type=float, default=8.0, help="MB (10^6 bytes) per body (memory probe)")
    parser.add_argument("--body_kind", default="rows", choices=["rows", "valid", "lists", "upload"])
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the last answer to read RSS")
    parser.add_argument("--data_file", default=str(REPO / "models/rank/deepfm/data/sample_data/test/part-0.txt"),
                        help="lines for --body_kind upload")
    return parser.parse_args(argv), extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: str, port: int, extra: list[str]) -> subprocess.Popen:
    """tools/serve.py on 127.0.0.1:<port>, once it answers /health (at most 120 s)."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tools/serve.py"), "--model_dir", model_dir, "--host",
                             "127.0.0.1", "--port", str(port), "--log_level", "warning", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()}")
        try:
            if request(port, "GET", "/health", b"", timeout=2)[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start in 120 s")


def request(port: int, method: str, path: str, body: bytes, timeout: float = 120.0,
            content_type: str = "application/json") -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            sock.sendall(head + body)
        except OSError:  # answered (413, 503) and closed before the whole body was sent: read the answer if any
            pass
        data = b""
        try:
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.partition(b"\r\n\r\n")[2]


def make_body(kind: str, size: int, data_file: str) -> tuple[str, bytes]:
    random.seed(0)
    if kind == "upload":
        lines = Path(data_file).read_bytes().splitlines(keepends=True)
        out, total, i = [], 0, 0
        while total + len(lines[i % len(lines)]) <= size:
            out.append(lines[i % len(lines)])
            total += len(out[-1])
            i += 1
        return "/upload", b"".join(out)
    if kind == "lists":
        return "/predict", b"[" + b",".join([b"[]"] * (size // 3 - 1)) + b"]"
    row = {"sparse": [random.randrange(1000000) for _ in range(26)],
           "dense": [round(random.random(), 6) for _ in range(13)]}
    one = json.dumps(row, separators=(",", ":")).encode()
    count = 4096 if kind == "valid" else size // (len(one) + 1) - 1
    return "/predict", b'{"rows":[' + b",".join([one] * count) + b"]}"


def memory_probe(port: int, pid: int, args: argparse.Namespace) -> dict:
    import psutil

    proc = psutil.Process(pid)
    path, body = make_body(args.body_kind, int(args.body_mb * 1e6), args.data_file)
    time.sleep(0.5)
    before = proc.memory_info().rss
    peak, stop = [before], threading.Event()

    def sample() -> None:
        end = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < end:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(args.bodies) as pool:
        answers = list(pool.map(lambda _: request(port, "POST", path, body,
                                                  content_type="text/plain" if path == "/upload"
                                                  else "application/json"), range(args.bodies)))
    seconds = time.monotonic() - started
    time.sleep(args.settle)
    stop.set()
    sampler.join(5)
    after = proc.memory_info().rss
    codes: dict[int, int] = {}
    for status, _ in answers:
        codes[status] = codes.get(status, 0) + 1
    return {"bodies": args.bodies, "body_bytes": len(body), "kind": args.body_kind, "path": path,
            "rss_before_mib": round(before / 2 ** 20), "rss_peak_mib": round(peak[0] / 2 ** 20),
            "rss_after_mib": round(after / 2 ** 20), "seconds": round(seconds, 2), "statuses": codes,
            "first_answer": answers[0][1][:200].decode(errors="replace")}


def held(port: int, send, limit: float = 60.0) -> tuple[float, bytes]:
    """Open a connection, run ``send(sock)`` (bounded), then read until the server closes: (seconds held, answer)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        try:
            send(sock, started + limit)
        except OSError:
            pass
        data = b""
        try:
            sock.settimeout(max(0.1, started + limit - time.monotonic()))
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    return time.monotonic() - started, data


def slow_probe(port: int) -> dict:
    header = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"

    def trickle_header(sock: socket.socket, deadline: float) -> None:
        for byte in header * 10:  # one byte a second, never finishing the header
            if time.monotonic() > deadline:
                return
            sock.sendall(bytes([byte]))
            time.sleep(1.0)

    def stall_body(sock: socket.socket, deadline: float) -> None:
        sock.sendall(header + b"\r\n" + b'{"rows": [')  # 10 of 100 bytes, then nothing

    results = {}
    for name, send in (("trickled header", trickle_header), ("stalled body", stall_body)):
        seconds, answer = held(port, send)
        results[name] = {"held_s": round(seconds, 1), "answer": answer.split(b"\r\n", 1)[0].decode(errors="replace")}
    # 400 idle connections: how many the server refuses at once (beyond --max_connections), whether it answers
    # meanwhile, and when it has closed them all (--timeout_header); at most 60 s
    socks, refused = [], 0
    started = time.monotonic()
    try:
        for _ in range(400):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        for s in socks:
            s.setblocking(False)
            try:
                data = s.recv(256)
                refused += data.startswith(b"HTTP/1.1 503") or data == b""
            except BlockingIOError:
                pass
        status = request(port, "GET", "/health", b"", timeout=10)[0]
        open_socks, closed_after = list(socks), None
        while open_socks and time.monotonic() - started < 60:
            still = []
            for s in open_socks:
                try:
                    if s.recv(256) == b"":
                        continue
                    still.append(s)
                except BlockingIOError:
                    still.append(s)
                except OSError:
                    pass
            open_socks = still
            time.sleep(0.1)
        if not open_socks:
            closed_after = round(time.monotonic() - started, 1)
    finally:
        for s in socks:
            s.close()
    results["400 idle connections"] = {"refused": refused, "health_while_held": status,
                                       "all_closed_after_s": closed_after}
    return results


def main(argv=None) -> int:
    args, extra = parse_args(argv)
    port = free_port()
    proc = start_server(args.model_dir, port, extra)
    try:
        result = memory_probe(port, proc.pid, args) if args.probe == "memory" else slow_probe(port)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

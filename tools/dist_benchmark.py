"""Distributed training figures: samples/s and memory per process, 1 process vs 2-process DDP vs 2-process
sharded tables, for DeepFM with a normal table and with a table too large to hold twice in one process's
share of memory. One command prints the whole Markdown table of doc/distributed.md:

    python tools/dist_benchmark.py                                          # the doc's table (~15-25 min)
    python tools/dist_benchmark.py --rows 20000 --large_rows 2000000 --repeat 1 --epochs 1   # quick check

Each run is ``tools/trainer.py`` as a user starts it (``python tools/trainer.py`` or ``python -m
torch.distributed.run --nproc_per_node=2 tools/trainer.py -o runner.use_fleet=True``) on generated
Criteo-slot data split into ``--files`` files (file sharding: each rank parses only its files). Samples/s
is the trainer's own ``ips`` of the last epoch (all ranks' samples / epoch time), median of ``--repeat``
runs; memory is each process's resident set (RSS) from the trainer's ``memory (RSS)`` line: its peak up to
the end of epoch 0 (before a checkpoint is gathered or written: model build, sharding and training) and
after training. Threads: the one-process run gets ``--threads`` (default: all cores) intra-op threads,
each of the N ranks ``threads / N``; ``OMP_WAIT_POLICY=PASSIVE`` everywhere.

The sharded rows need the TorchRec extra (tools/install_torchrec.sh); without it they are skipped with a note.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "models/rank/deepfm/config.yaml"

EPOCH_RE = re.compile(r"epoch: (\d+) done, .*ips: ([\d.]+) ins/s")
MEMORY_RE = re.compile(r"training peak (\d+) MiB, peak (\d+) MiB, now (\d+) MiB")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(rows: int, files: int, folder: Path) -> None:
    """``rows`` generated Criteo-slot lines (datasets/synthetic/generate.py) in ``files`` files of equal size."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = folder.parent / "all.txt"
    subprocess.run([sys.executable, str(REPO / "datasets/synthetic/generate.py"), "criteo", "--rows", str(rows),
                    "--seed", "1", "--output", str(whole)], check=True)
    lines = whole.read_text().splitlines(keepends=True)
    per = -(-len(lines) // files)
    for i in range(files):
        (folder / f"part-{i}.txt").write_text("".join(lines[i * per:(i + 1) * per]))
    whole.unlink()


def run_once(nproc: int, overrides: list[str], threads: int, workdir: Path, timeout: float) -> dict:
    """One training run; returns ``{"ips": float, "memory": [(train_peak, peak, now) per rank]}`` or ``{"error"}``."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    per_rank = max(1, threads // nproc)
    env["OMP_NUM_THREADS"] = str(per_rank)
    tool = [str(REPO / "tools/trainer.py"), "-m", str(CONFIG), "-o", *overrides, f"runner.cpu_threads={per_rank}"]
    if nproc == 1:
        cmd = [sys.executable, *tool]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *tool, "runner.use_fleet=True"]
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    out = proc.stdout + proc.stderr
    epochs = EPOCH_RE.findall(out)
    memory = [tuple(float(v) for v in m) for m in MEMORY_RE.findall(out)]
    if proc.returncode != 0 or not epochs or not memory:
        errors = [ln for ln in out.splitlines() if "Error" in ln or "ERROR" in ln]
        return {"error": (errors[-1] if errors else out.strip().splitlines()[-1] if out.strip() else
                          f"exit {proc.returncode}")[-300:]}
    return {"ips": float(epochs[-1][1]), "memory": memory}


def measure(label: str, nproc: int, overrides: list[str], args, workdir: Path) -> dict:
    runs = []
    for i in range(args.repeat):
        run_dir = workdir / f"run-{i}"
        run_dir.mkdir(parents=True, exist_ok=True)
        result = run_once(nproc, [*overrides, f"runner.model_save_path={run_dir / 'ckpt'}"], args.threads,
                          run_dir, args.timeout)
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"  {label}, run {i + 1}: " + (f"{result['ips']:,.0f} samples/s, RSS MiB (training peak, peak, now) "
                                             f"per process {result['memory']}" if "error" not in result
                                             else f"FAILED: {result['error']}"), flush=True)
        if "error" in result:
            return result
        runs.append(result)
    ips = statistics.median(r["ips"] for r in runs)
    ranks = len(runs[0]["memory"])
    train_peak = [statistics.median(r["memory"][k][0] for r in runs) for k in range(ranks)]
    now = [statistics.median(r["memory"][k][2] for r in runs) for k in range(ranks)]
    return {"ips": ips, "train_peak": train_peak, "now": now}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="generated training lines")
    parser.add_argument("--files", type=int, default=4, help="training files (>= processes: file sharding)")
    parser.add_argument("--batch_size", type=int, default=512, help="batch size per process")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; samples/s of the last")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; medians are reported")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="cores shared by the processes")
    parser.add_argument("--small_rows", type=int, default=1_000_001, help="table rows of the normal configuration")
    parser.add_argument("--large_rows", type=int, default=25_000_000,
                        help="table rows of the large configuration (x 16 floats: 1.6 GB, + Adagrad's state: 3.2 GB "
                             "per process under DDP)")
    parser.add_argument("--optimizer", default="Adagrad",
                        help="SGD, Adagrad or Adam: each works with sparse DDP gradients and as TorchRec's fused "
                             "optimizer (Adagrad keeps one state value per weight)")
    parser.add_argument("--sharding", nargs="*", default=["table_wise", "row_wise"],
                        help="runner.embedding_sharding values of the sharded rows")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per run")
    args = parser.parse_args()

    try:
        from recstack.dist.sharding import torchrec_available
        sharding_note = None if torchrec_available() else "TorchRec is not installed (tools/install_torchrec.sh)"
    except ImportError as err:
        sharding_note = f"recstack.dist.sharding unavailable ({err})"

    rows_out = []
    with tempfile.TemporaryDirectory(prefix="recstack-dist-bench-") as tmp:
        data = Path(tmp) / "data"
        generate(args.rows, args.files, data)
        base = [f"runner.train_data_dir={data}", f"runner.train_batch_size={args.batch_size}",
                f"runner.epochs={args.epochs}", "runner.print_interval=1000000", "runner.save_optimizer=False",
                "runner.num_workers=1", f"hyper_parameters.optimizer.class={args.optimizer}",
                "hyper_parameters.optimizer.learning_rate=0.01",
                # DeepFM's table width is sparse_feature_dim + 1 = 16: FBGEMM wants widths (and column
                # shards) divisible by 4
                "hyper_parameters.sparse_feature_dim=15"]
        for table_rows in (args.small_rows, args.large_rows):
            table_gb = table_rows * 16 * 4 / 1e9  # DeepFM: 15 + 1 (first-order weight) floats per id
            name = f"{table_rows:,} x 16 ({table_gb:.2f} GB)"
            overrides = [*base, f"hyper_parameters.sparse_feature_number={table_rows}"]
            modes = [("1 process", 1, [])]
            modes.append((f"{args.nproc}-process DDP", args.nproc, []))
            for kind in args.sharding:
                modes.append((f"{args.nproc}-process sharded ({kind})", args.nproc,
                              [f"runner.embedding_sharding={kind}"]))
            for label, nproc, extra in modes:
                print(f"{name}: {label}", flush=True)
                if extra and sharding_note:
                    rows_out.append((name, label, None, f"skipped: {sharding_note}"))
                    continue
                result = measure(label, nproc, [*overrides, *extra], args, Path(tmp) / "runs")
                rows_out.append((name, label, result, result.get("error")))

    print()
    print(f"DeepFM, {args.rows:,} generated lines in {args.files} files, batch {args.batch_size} per process, "
          f"{args.optimizer}, {args.epochs} epoch(s) (samples/s of the last), median of {args.repeat} run(s); "
          f"{args.threads} thread(s) shared by the processes; cores {os.cpu_count()}")
    print()
    print("| table | run | samples/s (all processes) | RSS per process, peak to end of epoch 0 (MiB) "
          "| RSS per process after training (MiB) |")
    print("|---|---|---:|---|---|")
    for name, label, result, note in rows_out:
        if note:
            print(f"| {name} | {label} | - | {note} | |")
            continue
        peaks = " / ".join(f"{v:,.0f}" for v in result["train_peak"])
        nows = " / ".join(f"{v:,.0f}" for v in result["now"])
        print(f"| {name} | {label} | {result['ips']:,.0f} | {peaks} | {nows} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

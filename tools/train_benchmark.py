"""Training speed: end-to-end (the trainer's own ips) vs model-only, measured in one run.

    python tools/train_benchmark.py                    # DeepFM, 200,000 generated lines, batch 512
    python tools/train_benchmark.py --rows 50000 --repeat 1 --cpu_threads 1

It first times the reader alone (text → parsed blocks, MB/s and lines/s).
End-to-end is ``recstack.trainer.train`` over the text files (reader thread,
parsing, batching, metrics, logging). Model-only runs the same ``train_step``
on batches pre-built in memory (no I/O, no parsing). The target is
end-to-end >= 0.95 x model-only (how it is measured: doc/benchmarks.md).
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see tools/trainer.py

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from recstack.cli import report_user_errors  # noqa: E402
from recstack.config import load_config  # noqa: E402
from recstack.data import create_reader  # noqa: E402
from recstack.data.loader import BatchLoader  # noqa: E402
from recstack.trainer import train, train_step  # noqa: E402
from recstack.utils import seed_everything, set_cpu_threads, setup_logging, thread_settings  # noqa: E402
from recstack.wrapper import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def generate(rows: int, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(REPO / "datasets/synthetic/generate.py"), "criteo", "--rows", str(rows),
                    "--seed", "1", "--output", str(folder / "part-0.txt")], check=True)


def reader_speed(config) -> tuple[float, float]:
    """(MB/s, lines/s) of parsing the training files into blocks, one thread, no cache."""
    reader = create_reader(config, "train")
    size = sum(os.path.getsize(f) for f in reader.file_list)
    start = time.perf_counter()
    rows = sum(len(block["label"]) for block in reader.iter_blocks())
    seconds = time.perf_counter() - start
    return size / 1e6 / seconds, rows / seconds


def model_only(config, warmup: int = 5) -> float:
    """Samples/s of train_step over batches pre-built in memory (one pass)."""
    seed_everything(config.get("runner.seed"))
    wrapper, model = build_model(config, torch.device("cpu"))
    optimizer = wrapper.create_optimizer(model, config)
    loader = BatchLoader(create_reader(config, "train"), config.get("runner.train_batch_size"), num_workers=0)
    batches = [{k: v.clone() for k, v in b.items()} for b in loader]
    metrics, _ = wrapper.create_metrics()
    model.train()
    for batch in batches[:warmup]:
        train_step(wrapper, model, optimizer, metrics, batch, config)
    samples = sum(len(b["label"]) for b in batches[warmup:])
    start = time.perf_counter()
    for batch in batches[warmup:]:
        train_step(wrapper, model, optimizer, metrics, batch, config)
    return samples / (time.perf_counter() - start)


@report_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--config", default=str(REPO / "models/rank/deepfm/config.yaml"))
    parser.add_argument("--rows", type=int, default=200_000, help="generated Criteo-slot lines")
    parser.add_argument("--data_dir", help="existing slot-format folder (skips generation)")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--cpu_threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--num_workers", type=int, default=1, help="reader threads of the end-to-end run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians are reported")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="extra config overrides")
    args = parser.parse_args()
    setup_logging(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="recstack-bench-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        if not args.data_dir:
            start = time.perf_counter()
            generate(args.rows, data_dir)
            print(f"generated {args.rows} lines in {time.perf_counter() - start:.1f} s")
        overrides = [f"runner.train_data_dir={data_dir}", f"runner.train_batch_size={args.batch_size}",
                     "runner.epochs=1", "runner.print_interval=1000000", f"runner.model_save_path={tmp}/ckpt",
                     f"runner.num_workers={args.num_workers}", "runner.save_optimizer=false",
                     "hyper_parameters.fc_sizes=[400,400,400]", "hyper_parameters.sparse_feature_number=1000001",
                     "hyper_parameters.sparse_feature_dim=9", "hyper_parameters.optimizer.class=Adam",
                     "hyper_parameters.optimizer.learning_rate=0.001", *args.opt]
        if args.cpu_threads is not None:
            overrides.append(f"runner.cpu_threads={args.cpu_threads}")
        config = load_config(args.config, overrides)
        set_cpu_threads(config.get("runner.cpu_threads"))
        size_mb = sum(f.stat().st_size for f in data_dir.iterdir()) / 1e6
        print(f"settings: {Path(args.config).parent.name}, {size_mb:.0f} MB of text, batch {args.batch_size}, "
              f"fc_sizes [400,400,400], table 1000001x9, Adam 0.001 (optimizer.sparse="
              f"{config.get('hyper_parameters.optimizer.sparse')}), 1 epoch, reader threads {args.num_workers}; "
              f"{thread_settings()}")
        speeds = [reader_speed(config) for _ in range(args.repeat)]
        print(f"reader (slot format -> blocks, one thread): median {statistics.median(s[0] for s in speeds):.0f} MB/s, "
              f"{statistics.median(s[1] for s in speeds):,.0f} lines/s (runs: "
              + ", ".join(f"{mb:.0f}" for mb, _ in speeds) + " MB/s)")
        e2e, only, ratios = [], [], []
        for run in range(args.repeat):
            only.append(model_only(config))
            result = train(load_config(args.config, overrides))
            e2e.append(result.epochs[0].ips)
            ratios.append(e2e[-1] / only[-1])
            print(f"run {run + 1}: end-to-end {e2e[-1]:,.0f} samples/s, model-only {only[-1]:,.0f} samples/s, "
                  f"ratio {ratios[-1]:.3f}, train auc {result.epochs[0].metrics}")
        print(f"median of {args.repeat}: end-to-end {statistics.median(e2e):,.0f} samples/s, "
              f"model-only {statistics.median(only):,.0f} samples/s, "
              f"ratio {statistics.median(ratios):.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

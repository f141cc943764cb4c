"""Compiled vs eager training, as users run them: ``tools/static_trainer.py`` against ``tools/trainer.py``.

    python tools/static_benchmark.py                                   # DeepFM, DCN-V2, xDeepFM, DIN, MMoE
    python tools/static_benchmark.py --models deepfm multitask/mmoe --rows 20000 --repeats 1
    python tools/static_benchmark.py --models din -o runner.compile_dynamic=False

For each model (a folder of ``models/rank`` by name, any other by its path under ``models/``) it generates
``--rows`` lines in the format of the model's sample data (``datasets/synthetic/generate.py``, as
``tools/rank_benchmark.py`` does), then trains the model's ``config.yaml`` for ``--epochs`` epochs at batch
``--batch_size`` with ``tools/trainer.py`` and with ``tools/static_trainer.py``, each a fresh process, alternating
(eager, compiled, eager, ...) ``--repeats`` times, so that a load from elsewhere falls on both alike. From each
run's log lines it takes the first epoch's time (compilation included: the first steps, and again at the epoch's
last, smaller batch), the last epoch's samples/s (the steady speed), and for the compiled runs the first step's
time and the graphs and graph breaks. Prints a Markdown table of the medians. ``-o`` adds overrides to the
compiled runs (``runner.compile_mode=...``). Inductor caches compiled code on disk (``/tmp/torchinductor_<user>``):
the first compiled run of a model on a machine compiles, later ones mostly load; ``--fresh_cache`` gives every
compiled run an empty cache (the cost a first run pays).
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see tools/trainer.py

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from statistics import median  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from rank_benchmark import data, sample_format  # noqa: E402

EPOCH = re.compile(r"epoch: (\d+) done, .*epoch time: ([\d.]+) s, samples: (\d+), ips: ([\d.]+) ins/s")
FIRST_STEP = re.compile(r"runner\.compile: first step \(tracing and code generation\) took ([\d.]+) s")
GRAPHS = re.compile(r"runner\.compile: (\d+) compiled graph\(s\), (\d+) graph break\(s\)")
RETRIED = "trying again with the"
FELL_BACK = "training eagerly (runner.compile_fallback)"


def run(script: str, config: Path, overrides: list[str], env: dict[str, str]) -> dict:
    """One training process; its figures from the log lines."""
    proc = subprocess.run([sys.executable, str(REPO / "tools" / script), "-m", str(config), "-o", *overrides],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{script} -m {config} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    epochs = [(int(e), float(t), int(n), float(ips)) for e, t, n, ips in EPOCH.findall(proc.stdout)]
    first = FIRST_STEP.search(proc.stdout)
    graphs = GRAPHS.search(proc.stdout)
    return {"first_epoch_s": epochs[0][1], "last_ips": epochs[-1][3],
            "all_ips": sum(e[2] for e in epochs) / sum(e[1] for e in epochs),
            "first_step_s": float(first.group(1)) if first else None,
            "graphs": f"{graphs.group(1)} / {graphs.group(2)}" if graphs else "",
            "note": ("sparse tables eager" if RETRIED in proc.stdout else "")
            + ("fell back to eager" if FELL_BACK in proc.stdout else "")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["deepfm", "dcn_v2", "xdeepfm", "din", "multitask/mmoe"])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_root", help="keep generated data here between runs (default: a temporary folder)")
    parser.add_argument("--fresh_cache", action="store_true", help="an empty Inductor cache for every compiled run")
    parser.add_argument("--cpu_threads", type=int, default=None,
                        help="runner.cpu_threads of both variants (default: the trainer's, all cores)")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="overrides of the compiled runs")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the last epoch gives the steady speed")
    rows = []
    with tempfile.TemporaryDirectory(prefix="recstack-static-") as tmp:
        root = Path(args.data_root) if args.data_root else Path(tmp)
        for name in args.models:
            folder = REPO / "models" / (name if "/" in name else f"rank/{name}")
            config = folder / "config.yaml"
            if not config.is_file():
                raise SystemExit(f"--models: no {config.relative_to(REPO)}")
            train_dir = data(root, sample_format(folder), args.rows, 1)
            common = [f"runner.train_data_dir={train_dir}", f"runner.epochs={args.epochs}",
                      f"runner.train_batch_size={args.batch_size}", "runner.print_interval=1000000",
                      "runner.save_optimizer=false", "runner.previous_run=remove",
                      *([f"runner.cpu_threads={args.cpu_threads}"] if args.cpu_threads else [])]
            results: dict[str, list[dict]] = {"eager": [], "compiled": []}
            for repeat in range(args.repeats):
                for variant, script in (("eager", "trainer.py"), ("compiled", "static_trainer.py")):
                    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
                    if variant == "compiled" and args.fresh_cache:
                        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / f"cache_{name.replace('/', '_')}_{repeat}")
                    out = Path(tmp) / "ckpt" / name.replace("/", "_") / variant
                    extra = args.opt if variant == "compiled" else []
                    result = run(script, config, [*common, f"runner.model_save_path={out}", *extra], env)
                    results[variant].append(result)
                    print(f"{name} {variant}: first epoch {result['first_epoch_s']:.1f} s, last epoch "
                          f"{result['last_ips']:,.0f} samples/s" + (f", first step {result['first_step_s']:.1f} s, "
                                                                    f"graphs / breaks {result['graphs']}"
                                                                    if variant == "compiled" else "")
                          + (f" ({result['note']})" if result["note"] else ""), flush=True)
            eager, compiled = results["eager"], results["compiled"]
            med = {v: {k: median(r[k] for r in results[v]) for k in ("first_epoch_s", "last_ips", "all_ips")}
                   for v in results}
            steps = [r["first_step_s"] for r in compiled if r["first_step_s"] is not None]
            rows.append((name, med["eager"], med["compiled"], median(steps) if steps else None,
                         compiled[-1]["graphs"], compiled[-1]["note"] or "-", len(eager)))
    threads = f"runner.cpu_threads {args.cpu_threads}" if args.cpu_threads else "the trainer's threads (all cores)"
    print(f"\n{args.rows} generated lines, batch {args.batch_size}, {args.epochs} epochs; medians of {args.repeats} "
          f"fresh processes per variant, alternating; {os.cpu_count()} CPUs, {threads}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}\n")
    print("| model | eager: first epoch | compiled: first epoch (first step) | eager: last epoch samples/s "
          "| compiled: last epoch samples/s | compiled / eager | graphs / breaks | note |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name, e, c, step, graphs, note, _ in rows:
        first = f"{c['first_epoch_s']:.1f} s" + (f" ({step:.1f} s)" if step is not None else "")
        print(f"| {name} | {e['first_epoch_s']:.1f} s | {first} | {e['last_ips']:,.0f} | {c['last_ips']:,.0f} | "
              f"{c['last_ips'] / e['last_ips']:.2f} | {graphs} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

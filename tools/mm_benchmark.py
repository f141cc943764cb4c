"""Training speed of E2E_MM_DBMTL: grouped batches (one image per item visit, broadcast to its samples)
against the same samples ungrouped (one image per sample), at mean group sizes 1, 4 and 16.

    python tools/mm_benchmark.py [--group_sizes 1,4,16] [--groups 256] [--batch_groups 16] [--steps 12]
                                 [--repeats 3] [--threads 2] [--work /tmp/mm_benchmark]

For each mean group size g it writes, with the repository's generator (datasets/synthetic/generate.py e2e_mm,
the same seed), ``--groups`` item visits as grouped lines and the same samples one per line (``--ungrouped``),
reads ``--steps`` training batches of each into memory (``--batch_groups`` groups per grouped batch; the
ungrouped batches hold the same samples, so both do the same tabular work and differ only in the images the
CNN runs: one per group against one per sample), then times that many optimisation steps of the model of
models/multitask/e2e_mm_dbmtl/config.yaml (``--config``) on each, ``--repeats`` times, after one untimed
warm-up step. It prints a Markdown table of the medians (samples/s = training samples per second of step
time, reading excluded). Torch threads are set to ``--threads``; OMP_WAIT_POLICY is PASSIVE.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "models/multitask/e2e_mm_dbmtl/config.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(CONFIG), help="the model config (default: the folder's config.yaml)")
    parser.add_argument("--group_sizes", default="1,4,16", help="mean group sizes, comma-separated")
    parser.add_argument("--groups", type=int, default=256, help="item visits (groups) generated per setting")
    parser.add_argument("--batch_groups", type=int, default=16, help="groups per grouped batch")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the table shows medians")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--items", type=int, default=300, help="items (images) of the generator")
    parser.add_argument("--work", default="/tmp/mm_benchmark", help="folder for the generated data")
    return parser.parse_args(argv)


def generate(work: Path, g: int, groups: int, items: int) -> dict[str, Path]:
    """Grouped and ungrouped lines of the same samples (same seed), sharing one image folder."""
    out = {}
    for kind in ("grouped", "ungrouped"):
        path = work / f"g{g}" / kind / "part-0.txt"
        cmd = [sys.executable, str(REPO / "datasets/synthetic/generate.py"), "e2e_mm", "--rows", str(groups), "--seed",
               "1", "--output", str(path), "--mean-group-size", str(g), "--items", str(items),
               "--image-dir", str(work / "images")] + (["--ungrouped"] if kind == "ungrouped" else [])
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        out[kind] = path.parent
    return out


def load_batches(config_path: str, folder: Path, batch_size: int, steps: int):
    from recstack.config import load_config
    from recstack.data import create_loader

    config = load_config(config_path, [f"runner.train_data_dir={folder}", f"runner.train_batch_size={batch_size}",
                                       "runner.shuffle=False", "hyper_parameters.data_config.image_root=null"])
    batches = []
    for batch in create_loader(config, "train"):
        batches.append(batch)
        if len(batches) == steps + 1:
            break
    return config, batches


def time_training(config, batches, repeats: int) -> tuple[float, int, int]:
    """Median samples/s over ``repeats`` runs of ``len(batches) - 1`` steps (the first step is a warm-up);
    also the samples and images per timed pass."""
    import torch

    from recstack.trainer import train_step
    from recstack.utils import seed_everything
    from recstack.wrapper import build_model

    rates = []
    for _ in range(repeats):
        seed_everything(0)
        wrapper, model = build_model(config, torch.device("cpu"))
        optimizer = wrapper.create_optimizer(model, config)
        metrics, _ = wrapper.create_metrics()
        model.train()
        train_step(wrapper, model, optimizer, metrics, batches[0], config)
        start = time.perf_counter()
        for batch in batches[1:]:
            train_step(wrapper, model, optimizer, metrics, batch, config)
        rates.append(sum(len(b["sample_num"]) for b in batches[1:]) / (time.perf_counter() - start))
    return (statistics.median(rates), sum(len(b["sample_num"]) for b in batches[1:]),
            sum(len(b["img"]) for b in batches[1:]))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    rows = []
    for g in (int(x) for x in args.group_sizes.split(",")):
        folders = generate(work, g, args.groups, args.items)
        config, grouped = load_batches(args.config, folders["grouped"], args.batch_groups, args.steps)
        # the ungrouped batches hold the same samples: as many lines as the grouped batches have samples
        per_batch = max(1, round(sum(len(b["sample_num"]) for b in grouped) / len(grouped)))
        _, ungrouped = load_batches(args.config, folders["ungrouped"], per_batch, args.steps)
        if len(grouped) < args.steps + 1 or len(ungrouped) < args.steps + 1:
            raise SystemExit(f"g={g}: too few batches for --steps {args.steps}; raise --groups")
        g_rate, g_samples, g_images = time_training(config, grouped, args.repeats)
        u_rate, u_samples, u_images = time_training(config, ungrouped, args.repeats)
        rows.append((g, g_samples / args.steps, g_images / g_samples, g_rate, u_images / u_samples, u_rate))
        print(f"g={g}: grouped {g_rate:.1f} samples/s, ungrouped {u_rate:.1f} samples/s", file=sys.stderr)
    print(f"Training samples/s, medians of {args.repeats} (torch threads {args.threads}, {args.batch_groups} groups "
          f"per grouped batch, {args.steps} timed steps)\n")
    print("| mean group size | samples / batch | images / sample, grouped | samples/s, grouped "
          "| images / sample, ungrouped | samples/s, ungrouped | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for g, samples, g_ratio, g_rate, u_ratio, u_rate in rows:
        print(f"| {g} | {samples:.0f} | {g_ratio:.2f} | {g_rate:.0f} | {u_ratio:.2f} | {u_rate:.0f} | "
              f"{g_rate / u_rate:.2f}x |")
    return 0


if __name__ == "__main__":
    from recstack.cli import report_user_errors

    sys.exit(report_user_errors(main)())

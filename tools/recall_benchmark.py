"""Every retrieval model on the same MovieLens-shaped data, one after another: top-K quality and training speed.

    python tools/recall_benchmark.py                                   # the bundled sample (each folder's config)
    python tools/recall_benchmark.py --rows 200000 --data_root /tmp/ml # a generated world of that many ratings
    python tools/recall_benchmark.py --movielens datasets/movielens/data --config_name config_bigdata.yaml

Without ``--rows`` / ``--movielens`` each model reads its folder's sample. With ``--rows N`` the generator's
``movielens`` world (``datasets/synthetic/generate.py movielens``, seed 1) of about N ratings is written as
GroupLens files and preprocessed by ``datasets/movielens/preprocess.py`` (leave-last-one-out; kept under
``--data_root`` between runs); ``--movielens DIR`` reads a preprocessed folder (the real ML-1M after
``bash datasets/movielens/run.sh``). The id spaces of the configs (``num_buckets``) must cover the data's ids:
the sample configs cover 600 users and items, ``config_bigdata.yaml`` ML-1M's.

Each model trains with its config (``--epochs`` overrides the epochs), then its last checkpoint is evaluated
against the whole corpus (seen items masked): hit_rate@K, ndcg@10, MRR. Training samples/s is the trainer's
own (lines, or users for a model that reads ``train_sequences``) over all epochs. ``--repeats N``: medians.
Prints a Markdown table.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see tools/trainer.py

import argparse  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from statistics import median  # noqa: E402

from recstack.cli import report_user_errors  # noqa: E402
from recstack.config import load_config  # noqa: E402
from recstack.evaluator import infer  # noqa: E402
from recstack.trainer import train  # noqa: E402
from recstack.utils import setup_logging, thread_settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHOWN = ("hit_rate@10", "hit_rate@50", "hit_rate@100", "ndcg@10", "mrr")


def world(root: Path, rows: int) -> Path:
    """A preprocessed generated world of about ``rows`` ratings under ``root`` (made once)."""
    out = root / f"movielens_{rows}"
    if not (out / "test" / "part-0.txt").is_file():
        raw = root / f"movielens_{rows}_raw"
        subprocess.run([sys.executable, str(REPO / "datasets/synthetic/generate.py"), "movielens", "--rows",
                        str(rows), "--seed", "1", "--output", str(raw)], check=True, capture_output=True)
        subprocess.run([sys.executable, str(REPO / "datasets/movielens/preprocess.py"),
                        "--ratings", str(raw / "ratings.dat"), "--users", str(raw / "users.dat"),
                        "--movies", str(raw / "movies.dat"), "--output", str(out)], check=True, capture_output=True)
    return out


@report_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="folders of models/recall (default: all)")
    parser.add_argument("--config_name", default="config.yaml")
    parser.add_argument("--rows", type=int, help="a generated world of about this many ratings")
    parser.add_argument("--movielens", help="a folder written by datasets/movielens/preprocess.py")
    parser.add_argument("--data_root", help="keep generated worlds here (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, help="override each config's epochs")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    setup_logging(logging.WARNING)
    folders = sorted(p.parent for p in REPO.glob(f"models/recall/*/{args.config_name}"))
    if args.models:
        folders = [f for f in folders if f.name in args.models]
    rows = []
    with tempfile.TemporaryDirectory(prefix="recstack-recall-") as tmp:
        data = None
        if args.movielens:
            data = Path(args.movielens).resolve()
        elif args.rows:
            data = world(Path(args.data_root) if args.data_root else Path(tmp), args.rows)
        print(f"settings: {data or 'each folder sample'}, {args.config_name}, "
              f"{'epochs ' + str(args.epochs) if args.epochs else 'each config epochs'}; {thread_settings()}",
              flush=True)
        for folder in folders:
            path = folder / args.config_name
            out = Path(tmp) / "ckpt" / folder.name
            overrides = [f"runner.model_save_path={out}", f"runner.infer_load_path={out}"]
            if args.epochs:
                overrides += [f"runner.epochs={args.epochs}"]
            if data is not None:
                train_sub = Path(load_config(path).get("runner.train_data_dir")).name
                overrides += [f"runner.train_data_dir={data / train_sub}", f"runner.test_data_dir={data / 'test'}",
                              f"hyper_parameters.item_config.data_path={data / 'items'}"]
            runs = []
            for _ in range(args.repeats):
                config = load_config(path, overrides)
                epochs = train(config).epochs
                last = len(epochs) - 1
                test = infer(load_config(path, overrides + [f"runner.infer_start_epoch={last}",
                                                            f"runner.infer_end_epoch={last + 1}"]))[last]
                seconds = sum(e.seconds for e in epochs)
                ips = sum(e.ips * e.seconds for e in epochs) / seconds
                runs.append((test, ips, seconds))
                print(f"{folder.name}: " + ", ".join(f"{k} {test[k]:.4f}" for k in SHOWN)
                      + f", {ips:,.0f} samples/s ({seconds:.1f} s, {len(epochs)} epochs)", flush=True)
            loss = load_config(path).get("hyper_parameters.loss", {}).get("type", "in_batch")
            rows.append((folder.name, loss, {k: median(r[0][k] for r in runs) for k in SHOWN},
                         median(r[1] for r in runs), median(r[2] for r in runs)))
    print(f"\n| model | loss | {' | '.join(SHOWN)} | training samples/s (median of {args.repeats}) | time |")
    print("|---|---|" + "---|" * len(SHOWN) + "---|---|")
    for name, loss, metrics, ips, seconds in rows:
        print(f"| {name} | {loss} | " + " | ".join(f"{metrics[k]:.4f}" for k in SHOWN)
              + f" | {ips:,.0f} | {seconds:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

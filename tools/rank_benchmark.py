"""Test AUC and training speed of every rank model on the same generated data, one model at a time.

    python tools/rank_benchmark.py                       # all models/rank/*/config.yaml
    python tools/rank_benchmark.py --models deepfm dcn --rows 50000
    python tools/rank_benchmark.py --repeats 3          # median of 3 trainings per model
    python tools/rank_benchmark.py --models deepfm --config_name config_tabular.yaml config_backbone.yaml \
        --rows 20000 --repeats 3                         # the native DeepFM vs its backbone config
    python tools/rank_benchmark.py --models multitask/mmoe --config_name config.yaml config_backbone_census.yaml \
        --rows 50000 --test_rows 10000 --batch_size 0 --epochs 2 --repeats 3   # a multi-task folder, per-task AUCs
    python tools/rank_benchmark.py --models din dien bst deepfm/config_amazon.yaml --rows 50000 --test_rows 10000 \
        --batch_size 0 --epochs 2 --repeats 3            # the sequence models on the Amazon-like world

Each model trains 1 epoch with batch 512 on ``--rows`` generated lines (seed 1)
and is evaluated on ``--test_rows`` lines (seed 2) of the same synthetic world,
with the model keys and optimizer of its ``config.yaml``. Data comes from
``datasets/synthetic/generate.py`` in the model's own format and id space (the
LR format for logistic_regression; FFM's smaller id space). The training
samples/s is the trainer's own ips over the epoch (reading, parsing, batching,
training, metrics). With ``--repeats N`` each model trains N times (same data and
seed) and the table gives the median samples/s, its min-max, and the median AUCs;
models run one after another, so the speed ratios between them come from one run.
``--config_name`` picks other configs of the folders than ``config.yaml`` (one or more: each
folder x config is a row; with data in the format of the make_samples.sh line that wrote
that config's ``train_data_dir``, e.g. ``ctr_csv`` for ``config_tabular.yaml``); with
several configs the repeats alternate between them (config A, config B, A, B, ...), so
that a load from elsewhere on the machine falls on both alike.
``--models`` names folders of ``models/rank`` (``deepfm``) or any model folder by its path under
``models/`` (``multitask/mmoe``), or one config of a folder (``deepfm/config_amazon.yaml``: that config only,
whatever ``--config_name`` says); a multi-task model's AUC columns list each task's (``auc_<task>``), and a
model that reports GAUC (DIN, DIEN, BST) has it beside its AUC.
``--override KEY=VALUE ...`` applies to every config (``hyper_parameters.aux_loss_weight=0``: an ablation row).
``--batch_size 0`` keeps each config's own batch size; ``--epochs N`` trains N epochs (samples/s over
all of them, test AUC of the last checkpoint).
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


def sample_format(model_dir: Path, sub: str = "sample_data") -> list[str]:
    """The generate.py arguments that produced the model's sample data in ``data/<sub>``
    (datasets/synthetic/make_samples.sh: ``dataset folder[:sub] ...``)."""
    table = (REPO / "datasets/synthetic/make_samples.sh").read_text().split("<<'SAMPLES'\n", 1)[1]
    for line in table.split("\nSAMPLES", 1)[0].splitlines():
        dataset, folder, _, _, *extra = line.split()
        folder, _, data_sub = folder.partition(":")
        if (REPO / "models" / folder).resolve() == model_dir.resolve() and (data_sub or "sample_data") == sub:
            return [dataset, *extra]
    raise SystemExit(f"{model_dir}/data/{sub} is not in datasets/synthetic/make_samples.sh")


def data_source(config_path: Path) -> tuple[Path, str]:
    """The model folder and data subfolder whose make_samples.sh line wrote the config's ``runner.train_data_dir``:
    ``(deepfm, tabular_sample_data)`` for ``data/tabular_sample_data/train``, ``(din, sample_data)`` for DeepFM's
    config_amazon.yaml (``../din/data/sample_data/train``)."""
    train_dir = Path(load_config(config_path).get("runner.train_data_dir")).resolve()  # resolved against the folder
    if train_dir.parent.parent.name == "data":
        return train_dir.parent.parent.parent, train_dir.parent.name
    return config_path.parent, "sample_data"


def data(root: Path, fmt: list[str], rows: int, seed: int) -> Path:
    folder = root / ("_".join(fmt).replace("-", "") + f"_{rows}_{seed}")
    if not folder.exists():
        subprocess.run([sys.executable, str(REPO / "datasets/synthetic/generate.py"), fmt[0], *fmt[1:],
                        "--rows", str(rows), "--seed", str(seed), "--output", str(folder / "part-0.txt")],
                       check=True, capture_output=True)
    return folder


def aucs(metrics: dict[str, float]) -> dict[str, float]:
    """The AUC metrics of a log (``auc``, or ``auc_<task>`` per task, and ``gauc``), in their order."""
    return {k: float(v) for k, v in metrics.items() if k in ("auc", "gauc") or k.startswith("auc_")}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: median(r[k] for r in runs) for k in runs[0]}


def show(values: dict[str, float]) -> str:
    """``0.7533`` for one AUC, ``auc_ctr 0.66 / auc_cvr 0.65`` for several."""
    if list(values) == ["auc"]:
        return f"{values['auc']:.4f}"
    if list(values) == ["auc", "gauc"]:
        return f"{values['auc']:.4f} (gauc {values['gauc']:.4f})"
    return " / ".join(f"{k} {v:.4f}" for k, v in values.items())


def label(config_path: Path, names: list[str]) -> str:
    """The table's row name: the folder, plus the config's name when not the default config.yaml alone."""
    parts = config_path.parent.relative_to(REPO / "models").parts
    folder = parts[-1] if parts[0] == "rank" else "/".join(parts)
    if config_path.name == "config.yaml" and names == ["config.yaml"]:
        return folder
    return f"{folder} ({config_path.name})"


@report_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="model folder names (default: every models/rank/*)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--test_rows", type=int, default=50_000)
    parser.add_argument("--batch_size", type=int, default=512, help="0: each config's own train_batch_size")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="trainings per model; the table reports medians")
    parser.add_argument("--data_root", help="keep generated data here between runs (default: a temporary folder)")
    parser.add_argument("--config_name", nargs="+", default=["config.yaml"],
                        help="config file(s) of each folder (default config.yaml); several alternate per repeat")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="-o overrides applied to every config (an ablation: hyper_parameters.aux_loss_weight=0)")
    args = parser.parse_args()
    setup_logging(logging.WARNING)
    if args.epochs < 1 or args.batch_size < 0:
        raise SystemExit("--epochs must be >= 1 and --batch_size >= 0")
    paths = [REPO / "models" / m if (REPO / "models" / m).exists() and "/" in m else REPO / "models" / "rank" / m
             for m in args.models] if args.models else sorted(REPO.glob("models/rank/*"))
    for path in paths:
        if not (path.is_dir() or (path.suffix == ".yaml" and path.is_file())):
            raise SystemExit(f"--models: no model folder or config {path.relative_to(REPO)}")
    # groups of configs whose repeats alternate: a folder's --config_name configs, or one named config
    groups = [[path / name for name in args.config_name if (path / name).is_file()] if path.is_dir() else [path]
              for path in paths]
    groups = [g for g in groups if g]
    names = args.config_name if all(p.is_dir() for p in paths) else ["config.yaml"]
    batch = f"batch {args.batch_size}" if args.batch_size else "each config's batch size"
    print(f"settings: {args.rows} train / {args.test_rows} test generated lines, {batch}, {args.epochs} epoch(s), "
          f"each model's {' / '.join(args.config_name)} model keys and optimizer"
          f"{', overrides ' + ' '.join(args.override) if args.override else ''}; {thread_settings()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="recstack-zoo-") as tmp:
        root = Path(args.data_root) if args.data_root else Path(tmp)
        for group in groups:  # a folder's configs alternate per repeat
            folder = group[0].parent
            runs: dict[Path, list[tuple[float, float, float, float]]] = {c: [] for c in group}
            settings = {}
            for config_path in group:
                fmt = sample_format(*data_source(config_path))
                train_dir, test_dir = data(root, fmt, args.rows, 1), data(root, fmt, args.test_rows, 2)
                out = Path(tmp) / "ckpt" / folder.name / config_path.stem
                settings[config_path] = [
                    f"runner.train_data_dir={train_dir}", f"runner.test_data_dir={test_dir}",
                    f"runner.epochs={args.epochs}", "runner.print_interval=1000000",
                    f"runner.model_save_path={out}", f"runner.infer_load_path={out}",
                    f"runner.infer_start_epoch={args.epochs - 1}", f"runner.infer_end_epoch={args.epochs}",
                    "runner.infer_batch_size=2048", "runner.save_optimizer=false", *args.override]
                if args.batch_size:
                    settings[config_path].append(f"runner.train_batch_size={args.batch_size}")
            for _ in range(args.repeats):
                for config_path in group:
                    name = label(config_path, names)
                    overrides = settings[config_path]
                    epochs = train(load_config(config_path, overrides)).epochs
                    test = infer(load_config(config_path, overrides))[args.epochs - 1]
                    seconds = sum(e.seconds for e in epochs)
                    ips = sum(e.ips * e.seconds for e in epochs) / seconds  # samples over all epochs / time
                    runs[config_path].append((aucs(epochs[-1].metrics), aucs(test), ips, seconds))
                    print(f"{name}: train {show(aucs(epochs[-1].metrics))}, test {show(aucs(test))}, "
                          f"{ips:,.0f} samples/s ({seconds:.1f} s)", flush=True)
            for config_path in group:
                opt = load_config(config_path).get("hyper_parameters.optimizer")
                done = runs[config_path]
                ips = [r[2] for r in done]
                rows.append((label(config_path, names), f"{opt['class']} {opt['learning_rate']:g}",
                             medians([r[0] for r in done]), medians([r[1] for r in done]), median(ips), min(ips),
                             max(ips), median([r[3] for r in done])))
    time_name = "epoch time" if args.epochs == 1 else f"time ({args.epochs} epochs)"
    print(f"\n| model | optimizer | train AUC | test AUC | training samples/s (median of {args.repeats}) "
          f"| min-max | {time_name} |")
    print("|---|---|---|---|---|---|---|")
    for name, opt, train_auc, test_auc, ips, low, high, seconds in rows:
        print(f"| {name} | {opt} | {show(train_auc)} | {show(test_auc)} | {ips:,.0f} | {low:,.0f}-{high:,.0f} "
              f"| {seconds:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Grid or random search over ``-o`` overrides: ``python tools/tune.py -m CONFIG.yaml --grid grid.yaml``.

Each trial is ``tools/trainer.py`` then ``tools/infer.py`` in its own processes, with its own
``runner.model_save_path`` under the study folder; the results table is sorted by a test metric
(recstack/tuning.py, doc/tuning.md "Searching").
"""

import os
import sys

# Before torch loads: see tools/trainer.py (the trials' processes get it too).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from recstack.cli import argument_parser, report_user_errors  # noqa: E402

logger = logging.getLogger("recstack")

EPILOG = """\
examples:
  python tools/tune.py -m models/rank/deepfm/config.yaml --grid grid.yaml
  python tools/tune.py -m models/rank/deepfm/config.yaml --grid grid.yaml --parallel 2 -o runner.epochs=2
  python tools/tune.py -m models/rank/deepfm/config.yaml --grid space.yaml --mode random --trials 12 --seed 1
  python tools/tune.py -m models/multitask/mmoe/config.yaml --grid grid.yaml --metric auc_marital --select last
  python tools/tune.py -m models/rank/deepfm/config.yaml --grid grid.yaml --dry_run      # list the trials
  python tools/tune.py -m models/rank/deepfm/config.yaml --grid grid.yaml --retry_failed
  python tools/plot.py tune_deepfm --metrics 'test/*' 'epoch/loss'                      # the trials' curves

grid.yaml maps dotted -o keys to the values to try (every combination is a trial):
  hyper_parameters.optimizer.learning_rate: [0.0005, 0.001, 0.003, 0.01]
  hyper_parameters.optimizer.class: [Adam, Adagrad]
  hyper_parameters.fc_sizes: [[400, 400, 400], [128, 64]]     # a list value: a list in the list
--mode random draws --trials N distinct trials (seeded by --seed) from lists or distributions:
  hyper_parameters.optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}
  hyper_parameters.reg: {uniform: [0, 0.001]}
  runner.train_batch_size: {int_uniform: [64, 512]}
  hyper_parameters.optimizer.class: {choice: [Adam, Adagrad]}

-o sets what all trials share. The study folder (--output, default tune_<model folder>, tune_<model>_<x> for
config_<x>.yaml, in the working directory) holds results.csv, results.md and trials/<id>/ (checkpoints, logs,
TensorBoard scalars, trial.json); <id> hashes the trial's overrides, so the same command resumes a stopped
study without rerunning the trials that ended, and a changed grid adds or drops trials. Every trial's overrides
are checked before the first runs. Exit status: 0 every trial done, 1 some trials failed (their error is in the
table), 2 a bad config, flag or grid file (one ERROR line, nothing run), 130 interrupted (rerun to resume)."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argument_parser("Grid or random search over -o overrides: each trial trained (tools/trainer.py) and "
                             "evaluated (tools/infer.py) in its own processes, sorted by a test metric.", EPILOG)
    parser.add_argument("--grid", required=True, metavar="FILE",
                        help="YAML: dotted -o keys -> lists of values (or distributions, --mode random)")
    parser.add_argument("--mode", choices=("grid", "random"), default="grid",
                        help="grid: every combination (default); random: --trials draws")
    parser.add_argument("--trials", type=_positive, help="--mode random: the number of distinct trials to draw")
    parser.add_argument("--seed", type=int, default=0, help="--mode random: seed of the draws (default 0)")
    parser.add_argument("--output", metavar="DIR", help="the study folder (default tune_<model folder>)")
    parser.add_argument("--parallel", type=_positive, default=1,
                        help="trials at once (default 1); each gets runner.cpu_threads = cores // N unless -o sets it")
    parser.add_argument("--metric", help="the test metric to sort by (default: the first tools/infer.py reports, "
                                         "e.g. auc, auc_ctr)")
    parser.add_argument("--direction", choices=("max", "min"),
                        help="max or min (default from the metric: min for log_loss, mse, loss)")
    parser.add_argument("--select", choices=("best", "last"), default="best",
                        help="each trial's epoch in the table: its best by --metric (default) or its last")
    parser.add_argument("--retry_failed", action="store_true", help="run the failed trials again")
    parser.add_argument("--dry_run", action="store_true",
                        help="check the grid and list the trials (finished or to run), run nothing")
    return parser.parse_args(argv)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # a kill ends the trials' processes as Ctrl-C does (recstack/tuning.py)


@report_user_errors
def main(argv=None) -> int:
    from recstack.tuning import FAILED, Interrupted, best_command, markdown_table, prepare_study, run_study
    from recstack.tuning import summary as best_summary
    from recstack.utils import setup_logging

    args = parse_args(argv)
    setup_logging()
    study = prepare_study(args.config_yaml, args.grid, args.opt, mode=args.mode, trials=args.trials, seed=args.seed,
                          output=args.output, parallel=args.parallel)
    if args.dry_run:
        for trial in study.trials:
            print(f"{trial.id}\t{trial.status}\t{trial.describe()}")
        logger.info("%d trials checked; study folder %s (--dry_run: nothing run)", len(study.trials), study.output)
        return 0
    main_thread = threading.current_thread() is threading.main_thread()  # (signal handlers: the main thread only)
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        ranking = run_study(study, parallel=args.parallel, retry_failed=args.retry_failed, metric=args.metric,
                            direction=args.direction, select=args.select, tools=Path(__file__).resolve().parent)
    except Interrupted as err:
        logger.warning("%s", err)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    print()
    print(markdown_table(ranking, study.keys))
    print()
    print(best_summary(study, ranking))
    command = best_command(study, ranking)
    if command:
        print(f"  {command}")
    logger.info("results: %s, %s; curves: python tools/plot.py %s", study.output / "results.csv",
                study.output / "results.md", study.output)
    statuses = [t.status for t in study.trials]
    return 1 if FAILED in statuses else 0


if __name__ == "__main__":
    sys.exit(main())

"""Permutation feature importance: ``python tools/feature_importance.py -m CONFIG.yaml [--features ...]``.

Loads a trained checkpoint the way ``tools/infer.py`` does (``runner.infer_load_path``; default the last epoch of
``[infer_start_epoch, infer_end_epoch)`` that exists), evaluates the test data (``runner.test_data_dir``, its reader,
batch size, feeds and metrics), then shuffles each feature's values across the test samples in turn, evaluates
again and reports the drop of each metric (baseline - shuffled) as mean ± std over ``--repeats`` shuffles. Prints
the sorted table and writes it as CSV and Markdown, with a bar chart (PNG), into ``--output``
(recstack/importance.py, doc/feature_importance.md).
"""

import os
import sys

# Before torch loads: see tools/trainer.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402

from recstack.cli import argument_parser, report_user_errors  # noqa: E402

logger = logging.getLogger("recstack")

EPILOG = """\
examples:
  python tools/feature_importance.py -m models/rank/deepfm/config.yaml
  python tools/feature_importance.py -m models/rank/deepfm/config.yaml --group_by group --repeats 5
  python tools/feature_importance.py -m models/rank/deepfm/config_tabular.yaml --features item_ctr price weekday
  python tools/feature_importance.py -m models/rank/din/config.yaml --epoch 1 --metric gauc
  python tools/feature_importance.py -m models/multitask/mmoe/config.yaml --group_by group
  python tools/feature_importance.py -m models/multitask/mmoe/config.yaml --features 'features[0]' 'features[1]' \\
      --metric auc_marital -o runner.infer_load_path=output_mmoe_run2
  python tools/feature_importance.py -m models/rank/deepfm/config.yaml --list

Features (--group_by feature): Criteo slots 1..26 and dense_feature[0..12]; a feature config's features by name;
DIN's history (items, categories, length together), target_item, target_cat; otherwise each column of the
model's input arrays, key[j]. --group_by group shuffles a group's features together (dense_feature, a feature
group, DIN's target). Quote names with brackets in the shell. A drop is baseline - shuffled: positive = the model
needs the feature (for log_loss / mse, lower is better: negative = needed). Writes <group_by>_importance.csv, .md
and .png into --output (default <runner.model_save_path>/feature_importance/). Exit status: 0 done, 2 a bad
config, flag, feature name, data or checkpoint (one ERROR line)."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argument_parser("Permutation feature importance of a trained model on its test data.", EPILOG)
    parser.add_argument("--features", nargs="+", metavar="NAME",
                        help="shuffle only these features (or groups, with --group_by group); default: all")
    parser.add_argument("--group_by", choices=("feature", "group"), default="feature",
                        help="shuffle one feature at a time, or a group's features together (default: feature)")
    parser.add_argument("--epoch", type=int,
                        help="evaluate <runner.infer_load_path>/<epoch> (default: the last epoch of "
                             "[infer_start_epoch, infer_end_epoch) that exists, the last tools/infer.py evaluates)")
    parser.add_argument("--repeats", type=_positive, default=3, help="shuffles per feature (default 3)")
    parser.add_argument("--seed", type=int, help="seed of the shuffles (default runner.seed)")
    parser.add_argument("--metric", help="sort by this metric (default: the model's first, e.g. auc or auc_<task>)")
    parser.add_argument("--output", help="folder of the CSV, Markdown and PNG "
                                         "(default <runner.model_save_path>/feature_importance)")
    parser.add_argument("--max_samples", type=_non_negative, default=0,
                        help="use the first N test samples (default 0: all; the test set is held in memory)")
    parser.add_argument("--top", type=_non_negative, default=40,
                        help="features drawn in the chart (default 40; 0: all); the table and CSV hold all")
    parser.add_argument("--list", action="store_true",
                        help="print the features that can be shuffled (names and columns) and exit")
    return parser.parse_args(argv)


@report_user_errors
def main(argv=None) -> int:
    from pathlib import Path

    from recstack.config import load_config
    from recstack.importance import (
        describe_columns,
        list_features,
        markdown_table,
        permutation_importance,
        summary_lines,
        write_report,
    )
    from recstack.runs import check_writable
    from recstack.utils import setup_logging

    args = parse_args(argv)
    setup_logging()
    config = load_config(args.config_yaml, args.opt)
    if args.list:
        for item in list_features(config, args.group_by):
            print(f"{item.name}\t{describe_columns(item.columns)}")
        return 0
    out = Path(args.output) if args.output else Path(config.get("runner.model_save_path")) / "feature_importance"
    check_writable(out, "--output" if args.output else f"{config.source('runner.model_save_path')} "
                   "(feature_importance/ in it)")
    report = permutation_importance(config, features=args.features, group_by=args.group_by, epoch=args.epoch,
                                    repeats=args.repeats, seed=args.seed, metric=args.metric,
                                    max_samples=args.max_samples)
    print("\n".join(summary_lines(report)))
    print()
    print(markdown_table(report))
    paths = write_report(report, out, args.top)
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

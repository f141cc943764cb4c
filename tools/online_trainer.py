"""Train online over time partitions: ``python tools/online_trainer.py -m CONFIG [-o key=value ...]``.

One pass per partition of ``runner.train_data_dir`` (``<dir>/<YYYYMMDD>/<HH>/`` or ``runner.partition_pattern``)
in time order, each evaluated before it is trained (progressive validation), a checkpoint per pass, resumed
from the newest checkpoint after a restart (recstack/online.py, doc/online_training.md).
``--plot OUT.png FILE[=LABEL] ...`` draws the progressive-validation curves of ``online_metrics.jsonl`` files.
"""

import os
import sys

# Before torch loads: see tools/trainer.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EPILOG = """\
examples:
  python datasets/synthetic/online_stream.py --output /tmp/stream --hours 12 --rows 2000
  python tools/online_trainer.py -m models/rank/deepfm/config_online.yaml -o runner.train_data_dir=/tmp/stream
  torchrun --nproc_per_node=2 tools/online_trainer.py -m models/rank/deepfm/config_online.yaml \\
      -o runner.use_fleet=True runner.train_data_dir=/tmp/stream
  python tools/online_trainer.py --plot doc/images/online_auc.png out/online_metrics.jsonl=online \\
      frozen/online_metrics.jsonl=frozen

Keys (partition_pattern, start_partition, end_partition, partition_count, done_file, poll_interval,
wait_timeout, stop_on_timeout, keep_checkpoints, export_every_pass, freeze_after): doc/yaml.md.
Exit status: 0 done, 2 a bad config, partition, or a done-file missing past runner.wait_timeout (one ERROR line)."""


def plot_main(argv) -> int:
    import argparse

    from recstack.cli import report_user_errors
    from recstack.online import plot_progressive
    from recstack.utils import setup_logging

    parser = argparse.ArgumentParser(description="Plot progressive-validation curves of online runs.")
    parser.add_argument("--plot", required=True, metavar="OUT.png", help="the figure to write")
    parser.add_argument("--metric", default="auc", help="the validation metric (auc, logloss, ...)")
    parser.add_argument("--title", default=None)
    parser.add_argument("files", nargs="+", metavar="FILE[=LABEL]", help="online_metrics.jsonl files")
    args = parser.parse_args(argv)
    setup_logging()

    @report_user_errors
    def run() -> int:
        curves = [(f.partition("=")[2] or f.partition("=")[0], f.partition("=")[0]) for f in args.files]
        out = plot_progressive(curves, args.plot, args.metric, args.title)
        print(f"wrote {out}")
        return 0

    return run()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--plot" in argv:
        return plot_main(argv)
    from recstack.cli import _run
    from recstack.online import train_online  # (a missing done-file: PartitionTimeout, one line, exit 2)
    from recstack.testing import from_environment

    return _run("Train a recstack model online over time partitions (PaddleRec's online trainer).", argv,
                lambda config: train_online(config, callbacks=from_environment()), EPILOG)


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())

"""Draw the curves of training runs from their TensorBoard scalars into PNG and SVG pictures.

examples:
  # one run: train with TensorBoard scalars, evaluate (adds test/<metric> per epoch), draw
  python tools/trainer.py -m models/rank/deepfm/config.yaml -o runner.use_visual=True
  python tools/infer.py -m models/rank/deepfm/config.yaml -o runner.use_visual=True
  python tools/plot.py output_model_deepfm            # -> output_model_deepfm/plots/metrics.png, .svg

  # two runs overlaid, into a folder of your choice, PNG only
  python tools/plot.py output_lr1e-3 output_lr5e-3 --output plots/lr --format png

  # every run under a folder (the trials of a search, or a visual_log folder with one subfolder per run)
  python tools/plot.py trials/

  # only some panels (glob patterns; one without '/' matches the name after the group), smoothed
  python tools/plot.py output_model_mmoe --metrics 'train/loss' 'test/*' 'auc_income' --smooth 0.6

A RUN_FOLDER is a run's model_save_path (its run.json names the run's TensorBoard folder), a run's TensorBoard
folder (<visual_log_path>/<run id>/, holding events.out.tfevents.* files), or a folder holding several of
either. The scalars exist only for runs trained with runner.use_visual: True (train/loss, train/<metric>,
train/ips per print_interval; epoch/loss, epoch/<metric> per epoch) and, for test/<metric>, evaluated by
tools/infer.py with runner.use_visual: True. One panel per scalar, one line per run; doc/plots.md.
Exit status: 0 done, 2 a missing folder, a folder without scalars, or --metrics matching nothing (one ERROR line).
"""

import argparse
import logging
import sys
from pathlib import Path

from recstack.cli import report_user_errors

logger = logging.getLogger("recstack")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", metavar="RUN_FOLDER",
                        help="a run's model_save_path or TensorBoard folder, or a folder holding runs")
    parser.add_argument("--output", metavar="DIR",
                        help="folder of the pictures (default: <first RUN_FOLDER>/plots)")
    parser.add_argument("--format", nargs="+", choices=("png", "svg"), default=["png", "svg"],
                        help="picture formats (default: png svg)")
    parser.add_argument("--name", default="metrics", help="file name of the pictures, without suffix "
                                                          "(default: metrics)")
    parser.add_argument("--metrics", nargs="+", metavar="PATTERN",
                        help="glob patterns of the scalars to draw, e.g. 'train/loss' 'test/*' 'auc*' (default: all)")
    parser.add_argument("--smooth", type=float, default=0.0, metavar="WEIGHT",
                        help="smooth the per-step curves (train/*) with TensorBoard's exponential moving average of "
                             "this weight, in [0, 1), the raw values faint behind (default 0: none)")
    parser.add_argument("--title", help="figure title (default: the runs' model names)")
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    args = parser.parse_args(argv)
    if args.dpi < 1:
        parser.error(f"--dpi: expected a positive int, got {args.dpi}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from recstack.utils import setup_logging

    setup_logging()
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event-file reader logs each file at INFO
    from recstack.plots import PlotError

    @report_user_errors(failures=[(PlotError, 2, "")])
    def run() -> int:
        from recstack.plots import find_runs, plot_runs, save_figure

        runs = find_runs(args.folders)
        for run in runs:
            groups = sorted({tag.split("/", 1)[0] for tag in run.scalars})
            logger.info("run %s: %s (%d scalars: %s)", run.label, run.folder, len(run.scalars), ", ".join(groups))
            if run.scalars and not any(tag.startswith("test/") for tag in run.scalars):
                logger.info("run %s has no test/<metric> scalars: tools/infer.py -m <config> -o "
                            "runner.use_visual=True runner.infer_load_path=<its model_save_path> adds them", run.label)
        figure = plot_runs(runs, metrics=args.metrics, smooth=args.smooth, title=args.title)
        output = Path(args.output) if args.output else Path(args.folders[0]) / "plots"
        written = save_figure(figure, output, args.format, name=args.name, dpi=args.dpi)
        logger.info("%d panel(s), %d run(s): %s", len(figure.axes), len(runs), ", ".join(map(str, written)))
        return 0

    return run()


if __name__ == "__main__":
    sys.exit(main())

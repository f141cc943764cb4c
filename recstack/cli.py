"""Command-line entry points behind ``tools/trainer.py`` and ``tools/infer.py``.

Both take PaddleRec's flags: ``-m CONFIG.yaml`` and ``-o key=value ...``.
Expected user errors (bad config, bad data, missing checkpoint) print one clear
line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
from typing import Callable, Sequence

from recstack.checkpoint import CheckpointError
from recstack.config import ConfigError, load_config
from recstack.data.base import DataFormatError
from recstack.utils import setup_logging

logger = logging.getLogger("recstack")

USER_ERRORS = (ConfigError, DataFormatError, FileNotFoundError, CheckpointError)


def argument_parser(description: str) -> argparse.ArgumentParser:
    """PaddleRec's ``-m CONFIG.yaml -o key=value ...`` flags; tools add their own to it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-m", "--config_yaml", "--config", required=True, help="the model's YAML config")
    parser.add_argument("-o", "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides with dotted keys, values typed as YAML: -o runner.epochs=2 "
                             "hyper_parameters.fc_sizes=[64,32]")
    return parser


def parse_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    return argument_parser(description).parse_args(argv)


def _run(description: str, argv: Sequence[str] | None, action: Callable) -> int:
    args = parse_args(description, argv)
    setup_logging()
    try:
        config = load_config(args.config_yaml, args.opt)
        action(config)
    except USER_ERRORS as err:
        logger.error("%s", err)
        return 2
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``tools/trainer.py``: train, one checkpoint per epoch."""
    from recstack.trainer import train

    def action(config):
        result = train(config)
        last = result.epochs[-1] if result.epochs else None
        if last is not None:
            logger.info("done: %d epoch(s); checkpoints in %s (last: %s); %s", len(result.epochs),
                        last.checkpoint.parent, last.checkpoint,
                        ", ".join(f"{k}: {v:.6f}" for k, v in last.metrics.items()))

    return _run("Train a recstack model (PaddleRec's tools/trainer.py).", argv, action)


def infer_main(argv: Sequence[str] | None = None) -> int:
    """``tools/infer.py``: evaluate the saved checkpoints on ``test_data_dir``."""
    from recstack.evaluator import infer

    def action(config):
        results = infer(config)
        for epoch, metrics in results.items():
            logger.info("checkpoint epoch %d: %s", epoch, ", ".join(f"{k}: {v:.6f}" for k, v in metrics.items()))

    return _run("Evaluate saved checkpoints (PaddleRec's tools/infer.py).", argv, action)

"""The tools' shared entry: argument parsing, and expected errors to one line and an exit status.

``tools/trainer.py`` and ``tools/infer.py`` are :func:`train_main` / :func:`infer_main`; every tool with
PaddleRec's ``-m CONFIG.yaml -o key=value ...`` flags builds its parser on :func:`argument_parser`, and every
tool's ``main`` goes through :func:`report_user_errors`: expected user errors (bad config, bad data, missing
checkpoint) print one clear line and exit with status 2 instead of a traceback. The tools run as
``python tools/<tool>.py`` with the package installed (``pip install -e .``); none edits ``sys.path``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence

from recstack.config import ConfigError, load_config

logger = logging.getLogger("recstack")


def user_errors() -> tuple[type[BaseException], ...]:
    """The expected user errors: a bad config, data file or checkpoint, a missing file.

    Imported when an error is being reported, so that the light tools (the HTTP client, the serving
    benchmark) start without torch: :mod:`recstack.checkpoint` imports it.
    """
    from recstack.checkpoint import CheckpointError
    from recstack.data.base import DataFormatError

    return ConfigError, DataFormatError, FileNotFoundError, CheckpointError


#: ``-h`` epilogs of the PaddleRec tools: typical commands, where the keys are documented, exit status.
EPILOGS = {
    "trainer": """\
examples:
  python tools/trainer.py -m models/rank/deepfm/config.yaml
  python tools/trainer.py -m models/rank/deepfm/config.yaml -o runner.epochs=2 runner.train_batch_size=512
  python tools/trainer.py -m models/rank/deepfm/config.yaml -o hyper_parameters.optimizer.learning_rate=0.0005 \\
      -o runner.model_save_path=output_lr5e-4
  python tools/trainer.py -m models/rank/deepfm/config.yaml -o runner.model_init_path=output_model_deepfm/2
  torchrun --nproc_per_node=2 tools/trainer.py -m models/rank/deepfm/config.yaml -o runner.use_fleet=True

Checkpoints go to <runner.model_save_path>/<epoch>/. Every runner key, its type and default, and the
-o rules: doc/yaml.md. Exit status: 0 done, 2 a bad config, data or checkpoint (one ERROR line).""",
    "static_trainer": """\
examples:
  python tools/static_trainer.py -m models/rank/deepfm/config.yaml
  python tools/static_trainer.py -m models/rank/deepfm/config.yaml -o runner.cpu_threads=1   # small machines
  python tools/static_trainer.py -m models/rank/din/config.yaml -o runner.compile_fallback=True
  python tools/static_trainer.py -m models/multitask/mmoe/config.yaml -o runner.compile_mode=max-autotune-no-cudagraphs
  python tools/static_trainer.py -m models/rank/deepfm/config.yaml -o runner.compile_backend=aot_eager

tools/trainer.py with runner.compile: True: the network's forward and backward compiled by torch.compile
(runner.compile_backend, compile_mode, compile_dynamic, compile_fallback: doc/yaml.md, doc/static.md). The
checkpoints are tools/trainer.py's, key for key. On a 2-core CPU, 1 thread is faster than 2 under the tools'
OMP_WAIT_POLICY=PASSIVE (doc/static.md, measured). Exit status: 0 done, 2 a bad config, data or checkpoint, or
compilation impossible without runner.compile_fallback (one ERROR line).""",
    "infer": """\
examples:
  python tools/infer.py -m models/rank/deepfm/config.yaml
  python tools/infer.py -m models/rank/deepfm/config.yaml -o runner.infer_start_epoch=2 runner.infer_end_epoch=3
  python tools/infer.py -m models/rank/deepfm/config.yaml -o runner.infer_load_path=output_lr5e-4 \\
      runner.test_data_dir=/data/criteo/test

Evaluates <runner.infer_load_path>/<epoch>/ for epochs [infer_start_epoch, infer_end_epoch) on
runner.test_data_dir and logs the metrics of each. Keys and -o rules: doc/yaml.md. Exit status: 0 done,
2 a bad config, data or checkpoint (one ERROR line; a damaged checkpoint is logged and skipped, the other
epochs are evaluated and printed, then the run exits 2).""",
    "static_infer": """\
examples:
  python tools/to_static.py -m models/rank/deepfm/config.yaml
  python tools/static_infer.py -m models/rank/deepfm/config.yaml
  python tools/static_infer.py -m models/multitask/mmoe/config.yaml --backend torchscript
  python tools/static_infer.py -m models/rank/din/config.yaml --model_dir output_model_din \\
      -o runner.test_data_dir=/data/din/test

Runs the export (tostatic.onnx or tostatic.pt) over runner.test_data_dir and logs tools/infer.py's metric lines,
computed by the same wrapper code: on the same checkpoint the figures equal infer.py's (within float noise).
Exit status: 0 done, 2 a bad config, data or export, or a backend that cannot run here (one ERROR line).""",
    "to_static": """\
examples:
  python tools/to_static.py -m models/rank/deepfm/config.yaml
  python tools/to_static.py -m models/rank/deepfm/config.yaml -o runner.model_init_path=output_model_deepfm/1
  python tools/to_static.py -m models/multitask/mmoe/config.yaml

Exports the newest <runner.model_save_path>/<epoch>/ (or runner.model_init_path) to tostatic.pt,
tostatic.onnx and tostatic.json in runner.model_save_path (doc/inference.md). Keys and -o rules:
doc/yaml.md. Exit status: 0 done, 1 the parity checks failed (nothing written), 2 a bad config,
checkpoint or data (one ERROR line).""",
}


def argument_parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """PaddleRec's ``-m CONFIG.yaml -o key=value ...`` flags; tools add their own to it.

    ``-o`` may be given more than once: ``-o a=1 -o b=2`` applies both (PaddleRec's own ``-o``
    keeps only the last list; recstack keeps them all, see doc/yaml.md).
    """
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--config_yaml", "--config", required=True, help="the model's YAML config")
    parser.add_argument("-o", "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides with dotted keys, values typed as YAML: -o runner.epochs=2 "
                             "hyper_parameters.fc_sizes=[64,32]; may be repeated (-o a=1 -o b=2 applies both; "
                             "a key given twice takes the last value)")
    return parser


def parse_args(description: str, argv: Sequence[str] | None, epilog: str | None = None) -> argparse.Namespace:
    return argument_parser(description, epilog).parse_args(argv)


#: An error type a tool reports as one line, the exit status, and the line's prefix (:func:`report_user_errors`).
Failure = tuple[type[BaseException] | tuple[type[BaseException], ...], int, str]


def report_user_errors(main: Callable[..., int] | None = None, *, failures: Sequence[Failure] = (),
                       plain: bool = False) -> Callable[..., int]:
    """Wrap a tool's ``main``: every tool's one way from an expected error to its exit status.

    :func:`user_errors` (a bad config, data, checkpoint or missing file) become one ERROR line and exit
    status 2; ``failures`` add ``(error type, exit status, line prefix)``, matched first, e.g.
    ``(ExportError, 1, "export failed: ")`` for the exporters, ``(UnavailableError, 2, "unavailable: ")``
    for the inference tools. Anything else is a bug and keeps its traceback. ``plain``: the line goes to
    stderr as it is, without the log format (the tools that print for people rather than log: the client,
    ``tools/to_triton.py``).

    Use it as ``@report_user_errors`` or ``@report_user_errors(failures=[...])``.
    """
    if main is None:
        return functools.partial(report_user_errors, failures=failures, plain=plain)

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except Exception as err:
            for kind, status, prefix in (*failures, (user_errors(), 2, "")):
                if isinstance(err, kind):
                    if plain:
                        print(f"{prefix}{err}", file=sys.stderr)
                    else:
                        logger.error("%s%s", prefix, err)
                    return status
            raise

    return wrapped


def _run(description: str, argv: Sequence[str] | None, action: Callable, epilog: str | None = None,
         preset: Sequence[str] = ()) -> int:
    """Parse ``-m`` / ``-o``, load the config (``preset`` overrides first: the user's ``-o`` wins) and run."""
    from recstack.utils import setup_logging

    args = parse_args(description, argv, epilog)
    setup_logging()

    @report_user_errors
    def run() -> int:
        action(load_config(args.config_yaml, [*preset, *args.opt]))
        return 0

    return run()


def train_main(argv: Sequence[str] | None = None, static: bool = False) -> int:
    """``tools/trainer.py``: train, one checkpoint per epoch (``static``: ``tools/static_trainer.py``, the step
    compiled: ``runner.compile: True``)."""
    from recstack.testing import from_environment
    from recstack.trainer import train

    def action(config):
        result = train(config, callbacks=from_environment())  # test hooks (recstack/testing.py), off by default
        last = result.epochs[-1] if result.epochs else None
        if last is not None:
            logger.info("done: %d epoch(s); checkpoints in %s (last: %s); %s", len(result.epochs),
                        last.checkpoint.parent, last.checkpoint,
                        ", ".join(f"{k}: {v:.6f}" for k, v in last.metrics.items()))

    if static:
        return _run("Train a recstack model with its step compiled by torch.compile (PaddleRec's "
                    "tools/static_trainer.py).", argv, action, EPILOGS["static_trainer"],
                    preset=["runner.compile=True"])
    return _run("Train a recstack model (PaddleRec's tools/trainer.py).", argv, action, EPILOGS["trainer"])


def static_infer_main(argv: Sequence[str] | None = None) -> int:
    """``tools/static_infer.py``: evaluate the exported graph (TorchScript or ONNX) on ``test_data_dir``."""
    from recstack.backends import BACKENDS, InferenceSettings, UnavailableError
    from recstack.evaluator import evaluate_export
    from recstack.utils import setup_logging

    parser = argument_parser("Evaluate the exported graph of a model on its test data (PaddleRec's "
                             "tools/static_infer.py).", EPILOGS["static_infer"])
    parser.add_argument("--model_dir", help="the export folder (default: runner.model_save_path, where "
                        "tools/to_static.py writes)")
    parser.add_argument("--backend", default="onnxruntime", choices=[b for b in BACKENDS if b != "eager"],
                        help="the exported graph to run: ONNX Runtime (tostatic.onnx) or TorchScript (tostatic.pt)")
    parser.add_argument("--cpu_threads", type=int, default=None,
                        help="intra-op threads (default: runner.cpu_threads, else 1)")
    parser.add_argument("--use_gpu", action="store_true", help="run the graph on CUDA (ONNX Runtime's CUDA provider)")
    args = parser.parse_args(argv)
    setup_logging()

    @report_user_errors(failures=[(UnavailableError, 2, "unavailable: ")])
    def run() -> int:
        config = load_config(args.config_yaml, args.opt)
        threads = args.cpu_threads or config.get("runner.cpu_threads") or 1
        settings = InferenceSettings(args.backend, use_gpu=args.use_gpu, cpu_threads=threads)
        epoch, metrics = evaluate_export(config, args.model_dir, settings)
        logger.info("export%s (%s): %s", f" of checkpoint epoch {epoch}" if epoch is not None else "", args.backend,
                    ", ".join(f"{k}: {v:.6f}" for k, v in metrics.items()))
        return 0

    return run()


def infer_main(argv: Sequence[str] | None = None) -> int:
    """``tools/infer.py``: evaluate the saved checkpoints on ``test_data_dir``."""
    from recstack.evaluator import EpochsFailed, infer

    def action(config):
        from recstack.runs import INFER_LOG, tool_log

        # the log also goes to <infer_load_path>/infer.log, appended per invocation (recstack/runs.py)
        with tool_log(config.get("runner.infer_load_path"), INFER_LOG, f"tools/infer.py {config.path}"):
            failure = None
            try:
                results = infer(config)
            except EpochsFailed as err:  # damaged checkpoints: print the others' results, then exit 2
                results, failure = err.results, err
            for epoch, metrics in results.items():
                logger.info("checkpoint epoch %d: %s", epoch, ", ".join(f"{k}: {v:.6f}" for k, v in metrics.items()))
            if failure is not None:
                raise failure

    return _run("Evaluate saved checkpoints (PaddleRec's tools/infer.py).", argv, action, EPILOGS["infer"])

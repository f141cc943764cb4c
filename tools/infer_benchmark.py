"""Benchmark deployed inference of an exported model (PaddleRec's ``tools/paddle_infer.py`` flags).

    python tools/infer_benchmark.py --model_dir output_model_deepfm \\
        --data_dir models/rank/deepfm/data/sample_data/test \\
        --reader_file models/rank/deepfm/criteo_reader.py --batchsize 512 --cpu_threads 2 --use_gpu False \\
        --enable_tensorRT False --precision fp32 --benchmark True --save_log_path output/logs

Reads the export written by ``tools/to_static.py`` (``tostatic.onnx`` / ``tostatic.pt`` /
``tostatic.json``), reads the data with the model's reader, runs ONNX Runtime (default),
TorchScript or eager, and prints an autolog-style report (environment, settings, model, data,
preprocess / inference / postprocess ms per batch, samples/s, memory, AUC when the data has
labels), also written to ``<save_log_path>/<model_name>.log``. A setting this machine cannot run is
an error that says why (exit status 2), never a silent fallback. See doc/inference.md.
"""

import os
import sys

# Before torch loads: OpenMP (and onnxruntime's intra-op pool, see recstack/backends.py) wait
# passively, so a busy co-process cannot collapse throughput (doc/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

from recstack.backends import UnavailableError  # noqa: E402
from recstack.cli import report_user_errors  # noqa: E402


def str2bool(value: str) -> bool:
    """PaddleRec passes booleans as ``True`` / ``False`` strings."""
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n", "none", "null"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_file", help="the exported .onnx (or .pt) file; its .json beside it")
    parser.add_argument("--params_file", help="accepted for PaddleRec compatibility; parameters live in the model file")
    parser.add_argument("--model_dir", help="the folder tools/to_static.py wrote (runner.model_save_path)")
    parser.add_argument("--use_gpu", type=str2bool, default=False)
    parser.add_argument("--gpu_id", type=int, default=0)
    parser.add_argument("--data_dir", help="data folder (default: the export's runner.test_data_dir)")
    parser.add_argument("--reader_file", help="the reader module (models/rank/deepfm/criteo_reader.py) or the "
                                              "model's YAML config (default: the export's config)")
    parser.add_argument("--batchsize", type=int, help="batch size (default: the config's runner.infer_batch_size)")
    parser.add_argument("--model_name", help="name in the report and of the log file (default: the model folder's)")
    parser.add_argument("--cpu_threads", type=int, default=1, help="intra-op threads (default 1, as PaddleRec)")
    parser.add_argument("--enable_mkldnn", type=str2bool, default=False,
                        help="onnxruntime: the oneDNN provider; torchscript: oneDNN fusion")
    parser.add_argument("--enable_tensorRT", type=str2bool, default=False, help="onnxruntime's TensorRT provider")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--benchmark", type=str2bool, default=False,
                        help="warm up (--warmup batches) before the timed passes")
    parser.add_argument("--save_log_path", help="folder for <model_name>.log (the report)")
    parser.add_argument("--backend", choices=["onnxruntime", "torchscript", "eager"],
                        help="default: onnxruntime (torchscript for a --model_file ending in .pt)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches first (default 10 with "
                                                                  "--benchmark True, else 0)")
    parser.add_argument("--runs", type=int, default=1, help="timed passes over the data (default 1)")
    parser.add_argument("--max_batches", type=int, default=0, help="read at most this many batches (0: all)")
    parser.add_argument("--save_predictions", help="write predictions (and labels) to this tab-separated file")
    parser.add_argument("--trust_export_code", type=str2bool, default=True,
                        help="import the model folder's reader module that the export JSON names (default True: "
                             "your own export); False: core readers only, as tools/serve.py (doc/serving.md)")
    args = parser.parse_args(argv)
    for flag, least in (("batchsize", 1), ("runs", 1), ("warmup", 0), ("max_batches", 0), ("gpu_id", 0)):
        value = getattr(args, flag)
        if value is not None and value < least:
            parser.error(f"--{flag} must be at least {least}, got {value}")  # exit status 2, as a bad config
    return args


@report_user_errors(failures=[(UnavailableError, 2, "unavailable: ")])
def main(argv=None) -> int:
    import logging

    args = parse_args(argv)
    from recstack.autolog import ResourceMonitor
    from recstack.backends import InferenceSettings, create_backend
    from recstack.benchmark import build_report, compute_metrics, run_benchmark, save_predictions
    from recstack.export_spec import ExportedModel
    from recstack.fileio import atomic_open
    from recstack.inference import load_batches
    from recstack.utils import setup_logging

    setup_logging()
    logger = logging.getLogger("recstack")
    if args.params_file:
        logger.info("--params_file %s: accepted for PaddleRec compatibility; recstack's exported files hold "
                    "their parameters", args.params_file)
    model = ExportedModel.locate(args.model_dir, args.model_file)
    suffix = os.path.splitext(args.model_file or "")[1]
    wanted = {".onnx": "onnxruntime", ".pt": "torchscript"}.get(suffix)
    if wanted and args.backend in ("onnxruntime", "torchscript") and args.backend != wanted:
        raise UnavailableError(f"--model_file {args.model_file} is a {suffix} file; it runs with --backend "
                               f"{wanted}, not {args.backend}")
    args.backend = args.backend or wanted or "onnxruntime"
    settings = InferenceSettings(args.backend, args.use_gpu, args.gpu_id, args.cpu_threads, args.enable_mkldnn,
                                 args.enable_tensorRT, args.precision)
    settings.check()
    name = args.model_name or model.model_name
    batch_size = args.batchsize or model.config().get("runner.infer_batch_size")
    backend = create_backend(model, settings)
    batches, data_info = load_batches(model, batch_size, args.data_dir, args.reader_file, args.max_batches,
                                      trust_code=args.trust_export_code)
    monitor = ResourceMonitor(args.gpu_id if args.use_gpu else None)
    warmup = args.warmup if args.warmup is not None else (10 if args.benchmark else 0)
    result = run_benchmark(backend, batches, warmup=warmup, runs=args.runs, monitor=monitor)
    result.metrics = compute_metrics(model.spec["outputs"], result.predictions, result.labels)
    extra = []
    if args.save_predictions:
        path = save_predictions(args.save_predictions, model.spec["outputs"], result.predictions, result.labels)
        extra.append(("predictions", f"saved to {path}"))
    report = build_report(model, backend, settings, batch_size, data_info, result, monitor, name, extra)
    monitor.close()
    sys.stdout.write(report)
    if args.save_log_path:
        path = os.path.join(args.save_log_path, f"{name}.log")
        with atomic_open(path) as f:
            f.write(report)
        logger.info("report saved to %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

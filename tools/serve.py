"""Serve an exported model over HTTP (FastAPI + uvicorn): /health, /metadata, /stats, /predict, /upload.

    python tools/serve.py --model_dir output_model_deepfm [--host 127.0.0.1] [--port 8867] \\
        [--backend onnxruntime|torchscript] [--cpu_threads 1] [--use_gpu] \\
        [--no_batching] [--max_batch_size 256] [--max_wait_ms 0] [--max_body_bytes 8388608] [--max_rows 4096] \\
        [--timeout_header 10] [--timeout_body 20] [--max_connections 512] [--max_buffered_bytes 67108864] \\
        [--max_parallel_parsing 1] [--queue_timeout 10] [--trust_export_code] [--image_root DIR]

    python tools/serve.py --model_dir output_model_dssm/export [--index hnsw]    # + /recall
    python tools/serve.py --recall output_model_dssm/export --rank output_model_deepfm_movielens \\
        [--candidates 100] [--rank_output prob]                                 # + /recall, /recommend

The export is the folder ``tools/to_static.py`` wrote (``tostatic.{onnx,pt,json}``); a retrieval export's
(``model.json``) also answers ``/recall``, and with ``--recall`` / ``--rank`` the server runs both stages of a
recommender (``/recommend``: retrieve candidates, order them with the ranking model; ``/predict`` and ``/upload``
then answer with the ranking model). SIGTERM or
Ctrl-C stops the server gracefully: it stops accepting connections, finishes the requests in flight,
and exits with status 0. See doc/serving.md.
"""

import os
import sys

# Before torch / onnxruntime load: OpenMP waits passively (a spinning pool collapses under a busy
# co-process, doc/benchmarks.md), and its pool has --cpu_threads threads in every thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _i, _arg in enumerate(sys.argv):
    if _arg == "--cpu_threads" and _i + 1 < len(sys.argv):
        os.environ.setdefault("OMP_NUM_THREADS", sys.argv[_i + 1])
    elif _arg.startswith("--cpu_threads="):
        os.environ.setdefault("OMP_NUM_THREADS", _arg.split("=", 1)[1])

import argparse  # noqa: E402
import signal  # noqa: E402
from pathlib import Path  # noqa: E402

from recstack.backends import UnavailableError  # noqa: E402
from recstack.cli import report_user_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", help="the folder tools/to_static.py wrote")
    parser.add_argument("--recall", metavar="DIR",
                        help="two stages: the retrieval export (another name for --model_dir; needs --rank)")
    parser.add_argument("--rank", metavar="DIR", help="two stages: the ranking export that orders the candidates")
    parser.add_argument("--rank_output", default=None,
                        help="two stages: the ranking model's output that orders the candidates (default: its first)")
    parser.add_argument("--candidates", type=int, default=100,
                        help="two stages: items retrieved per user when a request does not say (default 100)")
    parser.add_argument("--max_rank_rows", type=int, default=100_000,
                        help="two stages: most (user, candidate) rows one /recommend request may rank (413 beyond)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8867, help="port (default 8867; 0: any free port)")
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torchscript"])
    parser.add_argument("--cpu_threads", type=int, default=1, help="intra-op threads of ONNX Runtime / torch")
    parser.add_argument("--use_gpu", action="store_true", help="ONNX Runtime's CUDA provider / torch on CUDA")
    parser.add_argument("--gpu_id", type=int, default=0)
    parser.add_argument("--no_batching", action="store_true", help="one inference call per request")
    parser.add_argument("--max_batch_size", type=int, default=256, help="most rows of one merged inference call")
    parser.add_argument("--max_wait_ms", type=float, default=0.0,
                        help="longest wait for more requests after the first of a batch (0: take what is queued)")
    parser.add_argument("--max_body_bytes", type=int, default=8 << 20, help="largest request body (413 beyond)")
    parser.add_argument("--max_rows", type=int, default=4096, help="most samples in one request (413 beyond)")
    parser.add_argument("--threads", type=int, default=4, help="inference threads when batching is off")
    parser.add_argument("--timeout_header", type=float, default=10.0,
                        help="seconds for a request's header to arrive (408 and close beyond)")
    parser.add_argument("--timeout_body", type=float, default=20.0,
                        help="seconds for a request's body to arrive once the server reads it (408 and close beyond)")
    parser.add_argument("--timeout_keep_alive", type=float, default=5.0,
                        help="seconds an idle kept-alive connection stays open")
    parser.add_argument("--max_connections", type=int, default=512,
                        help="most open connections; a new one beyond gets 503 and is closed")
    parser.add_argument("--max_buffered_bytes", type=int, default=64 << 20,
                        help="most request-body bytes held at once over all requests (503 after --queue_timeout)")
    parser.add_argument("--max_parallel_parsing", type=int, default=1,
                        help="most large request bodies (> 64 KiB) parsed at once (503 after --queue_timeout)")
    parser.add_argument("--queue_timeout", type=float, default=10.0,
                        help="seconds a request waits for room under the two limits above")
    parser.add_argument("--no_trim_memory", action="store_true",
                        help="do not give freed memory back to the system after large parses (malloc_trim)")
    parser.add_argument("--trust_export_code", action="store_true",
                        help="import the model folder's own reader module (and wrapper) that the export JSON names; "
                             "default: only core readers, no code from the model folder")
    parser.add_argument("--image_root", default=None,
                        help="folder that image paths of /upload lines resolve against and must stay in (default: "
                             "data_config.image_root, else the export's runner.test_data_dir)")
    parser.add_argument("--timeout_graceful_shutdown", type=int, default=30,
                        help="seconds to finish in-flight requests after SIGTERM")
    parser.add_argument("--index", default=None, choices=["flat", "ivf", "hnsw"],
                        help="retrieval exports: answer /recall through <model_dir>/index/<kind>.faiss "
                             "(tools/build_index.py) instead of exact search")
    parser.add_argument("--max_k", type=int, default=1000, help="retrieval exports: the largest k of /recall")
    parser.add_argument("--log_level", default="info")
    return parser.parse_args(argv)


@report_user_errors(failures=[(UnavailableError, 2, "unavailable: ")])
def main(argv=None) -> int:
    import logging

    args = parse_args(argv)
    if args.recall and args.model_dir and Path(args.recall) != Path(args.model_dir):
        raise UnavailableError("--recall is the retrieval export of a two-stage server; give it or --model_dir, "
                               "not both")
    args.model_dir = args.model_dir or args.recall
    if args.model_dir is None:
        raise UnavailableError("give --model_dir (an export), or --recall and --rank (two stages)")
    if args.recall and not args.rank:
        raise UnavailableError("two stages need --rank (a ranking export) beside --recall (a retrieval export)")
    import uvicorn

    from recstack.backends import InferenceSettings
    from recstack.export_spec import ExportedModel
    from recstack.serving import ServingOptions, create_app, uvicorn_config
    from recstack.serving.model import ServedModel
    from recstack.utils import setup_logging

    setup_logging()
    logger = logging.getLogger("recstack")
    options = ServingOptions(batching=not args.no_batching, max_batch_size=args.max_batch_size,
                             max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes,
                             max_rows=args.max_rows, threads=args.threads, timeout_header=args.timeout_header,
                             timeout_body=args.timeout_body, timeout_keep_alive=args.timeout_keep_alive,
                             max_connections=args.max_connections, max_buffered_bytes=args.max_buffered_bytes,
                             max_parallel_parsing=args.max_parallel_parsing, queue_timeout=args.queue_timeout,
                             trim_memory=not args.no_trim_memory)
    if min(args.max_batch_size, args.max_body_bytes, args.max_rows, args.threads, args.max_connections,
           args.max_parallel_parsing) < 1 or args.max_wait_ms < 0:
        raise UnavailableError("--max_batch_size, --max_body_bytes, --max_rows, --threads, --max_connections and "
                               "--max_parallel_parsing must be positive, --max_wait_ms >= 0")
    if min(args.timeout_header, args.timeout_body, args.timeout_keep_alive, args.queue_timeout) <= 0:
        raise UnavailableError("--timeout_header, --timeout_body, --timeout_keep_alive and --queue_timeout must "
                               "be positive")
    if args.max_buffered_bytes < args.max_body_bytes:
        raise UnavailableError(f"--max_buffered_bytes ({args.max_buffered_bytes}) must be at least "
                               f"--max_body_bytes ({args.max_body_bytes})")
    settings = InferenceSettings(args.backend, use_gpu=args.use_gpu, gpu_id=args.gpu_id,
                                 cpu_threads=args.cpu_threads)
    model = ServedModel(ExportedModel.locate(args.model_dir), settings, trust_code=args.trust_export_code,
                        image_root=args.image_root)
    load_recall = None
    if (Path(args.model_dir) / "model.json").is_file():  # a retrieval export: /recall over its item vectors
        from recstack.serving.recall import RecallIndex

        recall = RecallIndex(args.model_dir, args.index, args.max_k)
        load_recall = lambda: recall  # noqa: E731
        logger.info("/recall: %s", recall.describe())
    elif args.index or args.rank:
        raise UnavailableError(f"--index and --recall / --rank need a retrieval export; {args.model_dir} has no "
                               "model.json "
                               "(export a models/recall/* config with tools/to_static.py)")
    load_rank = None
    if args.rank:
        load_rank = _two_stages(args, model, recall, settings)
        logger.info("/recommend: %s", load_rank()[1].describe())
    app = create_app(lambda: model, options, load_recall, load_rank)
    config = uvicorn_config(app, options, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=args.timeout_graceful_shutdown, log_config=None)
    server = uvicorn.Server(config)
    # uvicorn re-raises a caught SIGTERM after its graceful shutdown; a Python handler makes that a no-op,
    # so a gracefully stopped server exits 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()
    if not server.started:
        logger.error("the server did not start (see above)")
        return 1
    return 0


def _two_stages(args: argparse.Namespace, recall_model, recall, settings):
    """The ranking model and the :class:`recstack.serving.pipeline.TwoStage` of ``--rank`` (checked now, so a
    wrong pair of exports stops the server before it listens)."""
    from recstack.export_spec import ExportedModel
    from recstack.serving.model import ServedModel
    from recstack.serving.pipeline import ItemTable, TwoStage

    if (Path(args.rank) / "model.json").is_file():
        raise UnavailableError(f"--rank {args.rank} is a retrieval export; give a ranking model's export")
    rank = ServedModel(ExportedModel.locate(args.rank), settings, trust_code=args.trust_export_code)
    for what, served in (("--recall", recall_model), ("--rank", rank)):
        if served.upload_unavailable:
            raise UnavailableError(f"{what}: /recommend reads the users' raw fields with the model's reader: "
                                   f"{served.upload_unavailable}")
    output = 0
    if args.rank_output is not None:
        if args.rank_output not in rank.output_names:
            raise UnavailableError(f"--rank_output {args.rank_output!r}: the ranking model's outputs are "
                                   f"{rank.output_names}")
        output = rank.output_names.index(args.rank_output)
    if args.candidates < 1 or args.max_rank_rows < 1:
        raise UnavailableError("--candidates and --max_rank_rows must be positive")
    try:
        pipeline = TwoStage(recall_model.config, rank.config, ItemTable(args.model_dir), recall.max_k,
                            args.candidates, args.max_rows, args.max_rank_rows, output)
    except (ValueError, KeyError) as err:
        raise UnavailableError(f"two stages: {err}") from None
    return lambda: (rank, pipeline)


if __name__ == "__main__":
    sys.exit(main())

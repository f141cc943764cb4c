"""Build an approximate nearest-neighbour index over a retrieval export's item vectors, and measure it.

    python tools/build_index.py --model_dir output_model_dssm --index hnsw [--k 100] [--M 32 --ef_search 128] \\
        [--nlist N --nprobe N] [--threads 1]
    python tools/build_index.py --benchmark [--sizes 100000 1000000] [--dim 64] [--queries 1000]

With ``--model_dir``: reads the export (``item_embeddings.npy`` float32 (N, D), ``item_ids.npy`` int64 (N,),
``model.json`` whose ``"retrieval"`` object names the ``"similarity"``: ``inner_product`` or ``cosine``, and
``query_embeddings.npy`` float32 (Q, D) if present; without it the queries are 1,000 item vectors, chosen with
``--seed``, plus Gaussian noise of 0.1 x their RMS), builds the ``--index`` kind (recstack/retrieval/index.py),
saves it as ``<model_dir>/index/<kind>.faiss`` with ``<kind>.json`` beside it (the index's description and the
figures measured here), and prints the build time, recall@k against exact search over the queries, the latency
of one query at a time (p50 / p99 ms) and the throughput of batches of ``--batch_size`` queries (queries/s),
medians of ``--runs`` runs. The index's labels are row positions in item_embeddings.npy: map them through
item_ids.npy.

With ``--benchmark``: generated vectors (a seeded clustered Gaussian mixture by default, ``--data gaussian`` for
plain Gaussian), for each size and each kind the same figures, as a Markdown table. Nothing is written.

Threads: ``--threads`` (default 1) sizes faiss's OpenMP pool and torch's (the exact search);
``OMP_WAIT_POLICY=PASSIVE`` is set before either loads (doc/benchmarks.md). See doc/retrieval_index.md. Exit
status: 0 done, 2 a missing or malformed export file or a bad flag (one ERROR line naming it).
"""

import os
import sys

# Before faiss and torch load: their OpenMP pools wait passively, so a busy co-process cannot collapse
# throughput (doc/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from recstack.cli import report_user_errors  # noqa: E402
from recstack.retrieval.index import KINDS, METRICS, IndexInputError  # noqa: E402

logger = logging.getLogger("recstack")

#: queries drawn from the items when the export has no query_embeddings.npy
DEFAULT_QUERIES = 1000
#: noise added to those queries, relative to the RMS of the chosen item vectors
QUERY_NOISE = 0.1
#: queries timed one at a time per run with --benchmark (flat over 1M vectors takes ~20 ms each)
BENCHMARK_LATENCY_QUERIES = 200
#: HNSW ef_construction of --benchmark (faiss's default; 200 builds 1M vectors too slowly on 2 cores)
BENCHMARK_EF_CONSTRUCTION = 40


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", help="the retrieval export (item_embeddings.npy, item_ids.npy, model.json)")
    parser.add_argument("--index", choices=KINDS, help="index kind to build from --model_dir")
    parser.add_argument("--benchmark", action="store_true", help="measure every kind on generated vectors")
    parser.add_argument("--k", type=int, default=100, help="neighbours per query, of the recall and the timings "
                                                          "(default 100)")
    parser.add_argument("--nlist", type=int, help="ivf: cells (default about 4 x sqrt(N))")
    parser.add_argument("--nprobe", type=int, help="ivf: cells searched per query (default 16)")
    parser.add_argument("--M", type=int, help="hnsw: links per node (default 32)")
    parser.add_argument("--ef_construction", type=int, help="hnsw: candidate list while building (default 200; "
                                                            f"{BENCHMARK_EF_CONSTRUCTION} with --benchmark)")
    parser.add_argument("--ef_search", type=int, help="hnsw: candidate list while searching (default 128)")
    parser.add_argument("--threads", type=int, default=1, help="faiss and torch threads (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; medians are reported (default 3)")
    parser.add_argument("--batch_size", type=int, default=256, help="queries per batch of the throughput "
                                                                    "(default 256)")
    parser.add_argument("--latency_queries", type=int,
                        help="queries timed one at a time per run (default 1000, 200 with --benchmark; at most the "
                             "queries)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query choice and the generated data")
    bench = parser.add_argument_group("--benchmark")
    bench.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="item counts")
    bench.add_argument("--dim", type=int, default=64, help="vector dimension (default 64)")
    bench.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="queries (default 1000)")
    bench.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="kinds (default all)")
    bench.add_argument("--metric", choices=METRICS, default="inner_product", help="similarity (default "
                                                                                 "inner_product)")
    bench.add_argument("--data", choices=["clustered", "gaussian"], default="clustered",
                       help="clustered: --clusters Gaussian centres N(0, I) plus N(0, --spread^2 I) per item (and "
                            "per query); gaussian: N(0, I)")
    bench.add_argument("--clusters", type=int, default=1000, help="mixture components (default 1000)")
    bench.add_argument("--spread", type=float, default=1.0, help="within-cluster standard deviation (default 1.0)")
    args = parser.parse_args(argv)
    if args.benchmark == bool(args.model_dir):
        parser.error("give either --model_dir (with --index) or --benchmark")
    if args.model_dir and not args.index:
        parser.error(f"--index is required with --model_dir (one of {', '.join(KINDS)})")
    checks = [("k", 1), ("threads", 1), ("runs", 1), ("batch_size", 1), ("latency_queries", 1), ("dim", 1),
              ("queries", 1), ("clusters", 1), ("seed", 0), ("nlist", 1), ("nprobe", 1), ("M", 2),
              ("ef_construction", 1), ("ef_search", 1)]
    for flag, least in checks:
        value = getattr(args, flag)
        if value is not None and value < least:
            parser.error(f"--{flag} must be at least {least}, got {value}")  # exit status 2
    if any(size < 1 for size in args.sizes):
        parser.error(f"--sizes must be positive, got {args.sizes}")
    if not args.spread > 0:
        parser.error(f"--spread must be positive, got {args.spread}")
    if args.latency_queries is None:
        args.latency_queries = BENCHMARK_LATENCY_QUERIES if args.benchmark else DEFAULT_QUERIES
    return args


# ---------------------------------------------------------------------------------------------- the export
def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {what})")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise IndexInputError(f"{path}: expected a .npy file of {what}, cannot read it: {err}") from err


def read_retrieval(model_dir: Path) -> dict:
    """The ``"retrieval"`` object of ``<model_dir>/model.json``, its similarity and score checked."""
    path = model_dir / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected the export's description, with "
                                f'"retrieval": {{"similarity": ...}})')
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexInputError(f"{path}: expected JSON, cannot parse it: {err}") from err
    retrieval = spec.get("retrieval") if isinstance(spec, dict) else None
    if not isinstance(retrieval, dict):
        raise IndexInputError(f'{path}: expected a "retrieval" object (with "similarity": '
                              f'{" or ".join(METRICS)}), got {retrieval!r}')
    similarity = retrieval.get("similarity")
    if similarity not in METRICS:
        raise IndexInputError(f'{path}: expected "retrieval.similarity" to be one of {", ".join(METRICS)}, '
                              f"got {similarity!r}")
    if retrieval.get("score") == "network":
        raise IndexInputError(f'{path}: "retrieval.score" is "network": this model scores (user, item) pairs '
                              f"with a network (its scorer), not by {similarity}, so a vector index does not "
                              f"apply")
    files = retrieval.get("files")
    if files is not None and not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
        raise IndexInputError(f'{path}: expected "retrieval.files" to map names to file names, got {files!r}')
    return retrieval


def _file(model_dir: Path, retrieval: dict, name: str) -> Path:
    """The export file ``name`` (``item_embeddings`` ...): as model.json's ``retrieval.files`` names it, or
    ``<name>.npy``."""
    return model_dir / (retrieval.get("files") or {}).get(name, f"{name}.npy")


def load_export(model_dir: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """The export's item vectors, ids, queries, similarity and where the queries came from, all checked.

    A multi-interest model's queries, ``(Q, K, D)``, are taken as ``Q * K`` queries (one per interest vector).

    Raises:
        FileNotFoundError: the folder, model.json, item_embeddings.npy or item_ids.npy is missing.
        IndexInputError: a file of the wrong type, shape or dtype, non-finite vectors, duplicate ids, or an
            unknown similarity (the message names the file).
    """
    from recstack.retrieval.index import check_vectors

    if not model_dir.is_dir():
        raise FileNotFoundError(f"--model_dir {model_dir}: no such folder")
    retrieval = read_retrieval(model_dir)
    path = _file(model_dir, retrieval, "item_embeddings")
    items = check_vectors(_load_npy(path, "float32 item vectors (N, D)"), str(path))
    if len(items) == 0:
        raise IndexInputError(f"{path}: expected at least one item vector, got shape {items.shape}")
    dimension = retrieval.get("dimension")
    if dimension is not None and dimension != items.shape[1]:
        raise IndexInputError(f"{path}: expected vectors of dimension {dimension} (model.json's "
                              f'"retrieval.dimension"), got shape {items.shape}')
    ids_path = _file(model_dir, retrieval, "item_ids")
    ids = _load_npy(ids_path, "int64 item ids (N,)")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise IndexInputError(f"{ids_path}: expected a 1-D int64 array of item ids, got {ids.dtype} of shape "
                              f"{ids.shape}")
    if len(ids) != len(items):
        raise IndexInputError(f"{ids_path}: expected one id per row of {path.name} ({len(items)}), got {len(ids)}")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        dup = unique[counts > 1][0]
        rows = np.flatnonzero(ids == dup)[:2].tolist()
        raise IndexInputError(f"{ids_path}: expected distinct item ids, id {dup} is at rows {rows} "
                              f"({int((counts > 1).sum())} duplicated id(s))")
    similarity = retrieval["similarity"]
    query_path = _file(model_dir, retrieval, "query_embeddings")
    if query_path.is_file():
        queries = _load_npy(query_path, "float32 query vectors (Q, D)")
        origin = f"{len(queries)} from {query_path.name}"
        if queries.ndim == 3:  # multi-interest: (Q, K, D)
            origin = f"{queries.shape[0]} users x {queries.shape[1]} interest vectors from {query_path.name}"
            queries = queries.reshape(-1, queries.shape[-1])
        queries = check_vectors(queries, str(query_path))
        if len(queries) == 0 or queries.shape[1] != items.shape[1]:
            raise IndexInputError(f"{query_path}: expected query vectors of dimension {items.shape[1]} (as "
                                  f"{path.name}), got shape {queries.shape}")
        return items, ids, queries, similarity, origin
    queries = noisy_items(items, min(DEFAULT_QUERIES, len(items)), seed)
    return items, ids, queries, similarity, (f"{len(queries)} item vectors + Gaussian noise "
                                             f"({QUERY_NOISE} x RMS; no {query_path.name})")


def noisy_items(items: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` distinct item vectors (seeded choice) plus Gaussian noise of :data:`QUERY_NOISE` x their RMS."""
    rng = np.random.default_rng(seed)
    chosen = items[np.sort(rng.choice(len(items), count, replace=False))]
    rms = float(np.sqrt(np.mean(np.square(chosen, dtype=np.float64))))
    return (chosen + rng.normal(0.0, QUERY_NOISE * rms, chosen.shape)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- measuring
def measure(index, queries: np.ndarray, exact: np.ndarray, k: int, metric: str, args) -> dict:
    """Recall@k against ``exact``, single-query latency and batch throughput (medians of ``args.runs``)."""
    from recstack.autolog import timing_stats
    from recstack.retrieval.index import recall_at_k, search

    _, found = search(index, queries, k, metric)  # also the warm-up
    single = queries[:args.latency_queries]
    p50, p99, qps = [], [], []
    for _ in range(args.runs):
        times = []
        for row in range(len(single)):
            start = time.perf_counter()
            search(index, single[row:row + 1], k, metric)
            times.append(time.perf_counter() - start)
        stats = timing_stats(times)
        p50.append(stats["p50"])
        p99.append(stats["p99"])
        start = time.perf_counter()
        for first in range(0, len(queries), args.batch_size):
            search(index, queries[first:first + args.batch_size], k, metric)
        qps.append(len(queries) / (time.perf_counter() - start))
    return {"k": k, "queries": len(queries), f"recall_at_{k}": round(recall_at_k(found, exact), 6),
            "latency_queries": len(single), "latency_p50_ms": round(statistics.median(p50), 4),
            "latency_p99_ms": round(statistics.median(p99), 4), "batch_size": args.batch_size,
            "batch_queries_per_s": round(statistics.median(qps), 1), "runs": args.runs}


def kind_params(kind: str, args, benchmark: bool = False) -> dict:
    """The flags of ``kind`` that were given (``None``: the library's default)."""
    if kind == "ivf":
        return {"nlist": args.nlist, "nprobe": args.nprobe}
    if kind == "hnsw":
        ef_construction = args.ef_construction
        if benchmark and ef_construction is None:
            ef_construction = BENCHMARK_EF_CONSTRUCTION
        return {"M": args.M, "ef_construction": ef_construction, "ef_search": args.ef_search}
    ignored = [f"--{flag}" for flag in ("nlist", "nprobe", "M", "ef_construction", "ef_search")
               if getattr(args, flag) is not None]
    if ignored and not benchmark:
        logger.warning("--index flat takes no parameters; ignoring %s", " ".join(ignored))
    return {}


def describe(params: dict) -> str:
    return " ".join(f"{name}={value}" for name, value in params.items() if name not in ("seed", "train_size")) or "-"


def settings_line(threads: int) -> str:
    import faiss

    from recstack.utils import thread_settings

    config = getattr(faiss, "SIMDConfig", None)
    simd = f" ({config.get_level_name()})" if config is not None and hasattr(config, "get_level_name") else ""
    return f"faiss {faiss.__version__}{simd}, faiss threads {threads}; {thread_settings()}"


def runs_text(runs: int) -> str:
    return f"median of {runs} runs" if runs > 1 else "1 run"


# ---------------------------------------------------------------------------------------------- the two modes
def build_from_export(args) -> int:
    from recstack.retrieval.index import build_index, exact_search, resolve_params, save_index, set_threads
    from recstack.utils import set_cpu_threads

    model_dir = Path(args.model_dir)
    items, _ids, queries, metric, origin = load_export(model_dir, args.seed)
    threads = set_threads(args.threads)
    set_cpu_threads(args.threads)
    k = args.k
    if k > len(items):
        logger.info("--k %d > %d items: every query returns all of them", k, len(items))
        k = len(items)
    params = resolve_params(args.index, len(items), kind_params(args.index, args))
    print(f"export: {model_dir}, {len(items)} x {items.shape[1]} item vectors, similarity {metric}; "
          f"queries: {origin}")
    print(f"settings: {settings_line(threads)}")
    start = time.perf_counter()
    index = build_index(items, args.index, metric, **params)
    build_s = time.perf_counter() - start
    print(f"build: {args.index} ({describe(params)}) in {build_s:.2f} s")
    start = time.perf_counter()
    _, exact = exact_search(queries, items, k, metric)
    print(f"exact search (torch, chunked) over {len(queries)} queries: {time.perf_counter() - start:.2f} s")
    figures = {"build_s": round(build_s, 3), **measure(index, queries, exact, k, metric, args),
               "threads": threads, "query_source": origin}
    print(f"recall@{k}: {figures[f'recall_at_{k}']:.4f} (vs exact search over {len(queries)} queries)")
    print(f"latency, one query at a time ({figures['latency_queries']} queries, {runs_text(args.runs)}): "
          f"p50 {figures['latency_p50_ms']:.3f} ms, p99 {figures['latency_p99_ms']:.3f} ms")
    print(f"throughput, batches of {args.batch_size}: {figures['batch_queries_per_s']:,.0f} queries/s "
          f"({runs_text(args.runs)})")
    path = model_dir / "index" / f"{args.index}.faiss"
    save_index(index, path, metric, params, figures)
    print(f"saved: {path} and {path.with_suffix('.json').name}")
    return 0


def generate(count: int, args, rng: np.random.Generator, centres: np.ndarray | None) -> np.ndarray:
    """``count`` vectors of the benchmark's distribution (float32, generated in blocks)."""
    out = np.empty((count, args.dim), dtype=np.float32)
    for first in range(0, count, 100_000):
        block = rng.standard_normal((min(100_000, count - first), args.dim), dtype=np.float32)
        if centres is not None:
            block *= np.float32(args.spread)
            block += centres[rng.integers(len(centres), size=len(block))]
        out[first:first + len(block)] = block
    return out


def run_benchmark(args) -> int:
    from recstack.autolog import cpu_name
    from recstack.retrieval.index import build_index, exact_search, resolve_params, set_threads
    from recstack.utils import set_cpu_threads

    threads = set_threads(args.threads)
    set_cpu_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    centres = (rng.standard_normal((args.clusters, args.dim), dtype=np.float32) if args.data == "clustered"
               else None)
    data = (f"clustered Gaussian mixture: {args.clusters} centres ~ N(0, I), items and queries = centre + "
            f"N(0, {args.spread:g}^2 I)" if centres is not None else "Gaussian N(0, I) items and queries")
    print(f"data: {data}, dim {args.dim}, {args.queries} queries (fresh draws, not indexed), seed {args.seed}, "
          f"similarity {args.metric}, k {args.k}")
    print(f"settings: {settings_line(threads)}; CPU {cpu_name()}, {os.cpu_count()} cores")
    print(f"timings: build once; latency = one query at a time through recstack's search() ({args.latency_queries}"
          f" queries at most), throughput = batches of {args.batch_size}; {runs_text(args.runs)}")
    queries = generate(args.queries, args, rng, centres)
    rows = []
    for size in args.sizes:
        items = generate(size, args, rng, centres)
        k = min(args.k, size)
        start = time.perf_counter()
        _, exact = exact_search(queries, items, k, args.metric)
        print(f"{size:,} items: exact search (torch, chunked) over {len(queries)} queries in "
              f"{time.perf_counter() - start:.2f} s", flush=True)
        for kind in args.kinds:
            params = resolve_params(kind, size, kind_params(kind, args, benchmark=True))
            start = time.perf_counter()
            index = build_index(items, kind, args.metric, **params)
            build_s = time.perf_counter() - start
            figures = measure(index, queries, exact, k, args.metric, args)
            del index
            rows.append((f"{size:,}", kind, describe(params), f"{build_s:.1f}", f"{figures[f'recall_at_{k}']:.4f}",
                         f"{figures['latency_p50_ms']:.3f}", f"{figures['latency_p99_ms']:.3f}",
                         f"{figures['batch_queries_per_s']:,.0f}"))
            print("  " + " | ".join(rows[-1]), flush=True)
        del items
    print()
    header = ("items", "index", "params", "build s", f"recall@{args.k}", "p50 ms", "p99 ms",
              f"queries/s (batch {args.batch_size})")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


@report_user_errors(failures=[(IndexInputError, 2, "")])
def main(argv=None) -> int:
    from recstack.utils import setup_logging

    args = parse_args(argv)
    setup_logging()
    return run_benchmark(args) if args.benchmark else build_from_export(args)


if __name__ == "__main__":
    sys.exit(main())

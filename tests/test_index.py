"""recstack/retrieval/index.py and tools/build_index.py: exact top-k, the faiss indexes and their recall, the
index files, and the tool on a small export folder written here (issue 17)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from recstack.retrieval import index as ix  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """One faiss thread: HNSW's parallel insertion and k-means give the same index on every run."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def gaussian(rows: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)


def clustered(rows: int, dim: int, seed: int, clusters: int = 50, spread: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1000).standard_normal((clusters, dim), dtype=np.float32)
    return centres[rng.integers(clusters, size=rows)] + np.float32(spread) * rng.standard_normal((rows, dim),
                                                                                                 dtype=np.float32)


def brute_force(queries: np.ndarray, items: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k: every score, then a stable argsort (ties: the smaller index first)."""
    if metric == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
    scores = queries @ items.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


# ---------------------------------------------------------------------------------------------- exact search
@pytest.mark.parametrize("metric", ix.METRICS)
@pytest.mark.parametrize("chunk", [97, ix.DEFAULT_CHUNK])
def test_exact_search_matches_brute_force(metric, chunk):
    queries, items = gaussian(40, 12, 1), gaussian(1500, 12, 2)
    scores, indices = ix.exact_search(queries, items, 10, metric, chunk=chunk)
    ref_scores, ref_indices = brute_force(queries, items, 10, metric)
    assert scores.dtype == np.float32 and indices.dtype == np.int64 and scores.shape == indices.shape == (40, 10)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [7, 64, ix.DEFAULT_CHUNK])
def test_exact_search_breaks_ties_by_the_smaller_index(chunk):
    # small integers: every score is exact in float32, so duplicates and equal sums tie exactly
    rng = np.random.default_rng(3)
    base = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    items = base[rng.integers(30, size=400)]  # many duplicate rows
    queries = rng.integers(-2, 3, size=(25, 4)).astype(np.float32)
    _, indices = ix.exact_search(queries, items, 40, "inner_product", chunk=chunk)
    np.testing.assert_array_equal(indices, brute_force(queries, items, 40, "inner_product")[1])


def test_exact_search_cosine_duplicates_in_index_order_and_padding():
    v, w = np.array([1.0, 2.0, 0.5], np.float32), np.array([-1.0, 0.0, 3.0], np.float32)
    items = np.stack([w, v, w, v, v * 3]).astype(np.float32)
    _, indices = ix.exact_search(v[None] * 2, items, 3, "cosine")
    top = indices[0].tolist()
    assert sorted(top) == [1, 3, 4] and top.index(1) < top.index(3)  # the duplicates of v tie: by index
    scores, indices = ix.exact_search(v[None], items[:2], 4, "inner_product")
    assert indices.tolist() == [[1, 0, -1, -1]] and np.isneginf(scores[0, 2:]).all()


def test_bad_inputs_are_value_errors_that_say_what_was_expected():
    items = gaussian(20, 4, 0)
    with pytest.raises(ValueError, match="flat, ivf, hnsw"):
        ix.build_index(items, "lsh", "inner_product")
    with pytest.raises(ValueError, match="inner_product, cosine"):
        ix.exact_search(items, items, 3, "l2")
    with pytest.raises(ValueError, match="float32"):
        ix.build_index(items.astype(np.float64), "flat", "cosine")
    with pytest.raises(ValueError, match="2-D"):
        ix.exact_search(items[0], items, 3, "cosine")
    bad = items.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7 holds NaN"):
        ix.build_index(bad, "hnsw", "inner_product")
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        ix.exact_search(items, items, 0, "cosine")
    with pytest.raises(ValueError, match="dimension 3, items has 4"):
        ix.exact_search(items[:, :3].copy(), items, 2, "cosine")
    with pytest.raises(ValueError, match="takes no parameter nprobe"):
        ix.build_index(items, "hnsw", "cosine", nprobe=4)
    with pytest.raises(ValueError, match="nlist=50 exceeds the 20 vectors"):
        ix.build_index(items, "ivf", "cosine", nlist=50)


# ---------------------------------------------------------------------------------------------- faiss indexes
@pytest.mark.parametrize("metric", ix.METRICS)
def test_flat_index_recall_is_one(metric):
    items, queries = gaussian(3000, 16, 4), gaussian(100, 16, 5)
    index = ix.build_index(items, "flat", metric)
    scores, found = ix.search(index, queries, 10, metric)
    exact_scores, exact = ix.exact_search(queries, items, 10, metric)
    assert ix.recall_at_k(found, exact) == 1.0
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ix.METRICS)
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_reach_recall_at_10_of_0_9_with_defaults(kind, metric):
    items, queries = clustered(5000, 32, 6), clustered(200, 32, 7)
    index = ix.build_index(items, kind, metric)
    _, found = ix.search(index, queries, 10, metric)
    _, exact = ix.exact_search(queries, items, 10, metric)
    recall = ix.recall_at_k(found, exact)
    assert recall >= 0.9, (kind, metric, recall, ix.index_params(index))
    assert found.shape == (200, 10) and found.dtype == np.int64 and (found >= 0).all()


def test_ivf_defaults_follow_the_item_count():
    assert ix.default_nlist(5000) == 128 and ix.default_nlist(1_000_000) == 4000 and ix.default_nlist(10) == 1
    params = ix.resolve_params("ivf", 5000, {"nprobe": 500})
    assert params == {"nlist": 128, "nprobe": 128, "train_size": 5000, "seed": 1234}
    assert ix.resolve_params("ivf", 10_000_000, {})["train_size"] == 256 * ix.default_nlist(10_000_000) < 10_000_000


@pytest.mark.parametrize("kind", ix.KINDS)
def test_cosine_ignores_vector_lengths(kind):
    rng = np.random.default_rng(8)
    items, queries = clustered(2000, 16, 9), clustered(50, 16, 10)
    scaled_items = items * rng.uniform(0.1, 10.0, size=(len(items), 1)).astype(np.float32)
    scaled_queries = queries * rng.uniform(0.1, 10.0, size=(len(queries), 1)).astype(np.float32)
    _, exact = ix.exact_search(queries, items, 10, "cosine")
    _, exact_scaled = ix.exact_search(scaled_queries, scaled_items, 10, "cosine")
    np.testing.assert_array_equal(exact, exact_scaled)
    _, found = ix.search(ix.build_index(items, kind, "cosine"), queries, 10, "cosine")
    _, found_scaled = ix.search(ix.build_index(scaled_items, kind, "cosine"), scaled_queries, 10, "cosine")
    assert ix.recall_at_k(found_scaled, found) >= (1.0 if kind == "flat" else 0.98)
    # inner product does see the lengths: the long items win
    assert ix.recall_at_k(ix.exact_search(scaled_queries, scaled_items, 10, "inner_product")[1], exact) < 0.9


@pytest.mark.parametrize("kind", ix.KINDS)
def test_save_and_load_give_identical_results(kind, tmp_path):
    items, queries = clustered(3000, 8, 11), clustered(60, 8, 12)
    params = ix.resolve_params(kind, len(items), {"nprobe": 4} if kind == "ivf" else {})
    index = ix.build_index(items, kind, "cosine", **params)
    before = ix.search(index, queries, 10, "cosine")
    path = tmp_path / "index" / f"{kind}.faiss"
    saved = ix.save_index(index, path, "cosine", params, {"recall_at_10": 0.97})
    loaded, info = ix.load_index(path)
    after = ix.search(loaded, queries, 10, info.metric)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert info == saved and (info.kind, info.metric, info.count, info.dim) == (kind, "cosine", 3000, 8)
    assert info.faiss_version == faiss.__version__ and info.figures == {"recall_at_10": 0.97}
    assert info.params == params
    assert json.loads(path.with_suffix(".json").read_text())["kind"] == kind
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{kind}.faiss", f"{kind}.json"]  # no temporaries


def test_load_refuses_missing_damaged_and_mismatched_files(tmp_path):
    items = gaussian(200, 4, 13)
    path = tmp_path / "flat.faiss"
    ix.save_index(ix.build_index(items, "flat", "inner_product"), path, "inner_product")
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "count": 999}))
    with pytest.raises(ix.IndexInputError, match="describes a flat index of 999 x 4"):
        ix.load_index(path)
    path.with_suffix(".json").write_text(json.dumps({**meta, "metric": "l2"}))
    with pytest.raises(ix.IndexInputError, match="metric must be one of inner_product, cosine"):
        ix.load_index(path)
    path.with_suffix(".json").write_text(json.dumps(meta))
    path.write_bytes(b"not an index")
    with pytest.raises(ix.IndexInputError, match="expected a faiss index file"):
        ix.load_index(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"flat\.json: no such file"):
        ix.load_index(path)


def test_recall_at_k_by_hand():
    approx = np.array([[1, 2, 3], [4, 5, -1]])
    exact = np.array([[3, 2, 9], [4, 6, 7]])
    assert ix.recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert ix.recall_at_k(np.array([[1, -1, -1]]), np.array([[0, 1, -1]])) == pytest.approx(0.5)  # -1 ignored
    assert ix.recall_at_k(exact, exact) == 1.0
    with pytest.raises(ValueError, match="of one shape"):
        ix.recall_at_k(approx[:, :2], exact)


# ---------------------------------------------------------------------------------------------- the tool
def write_export(folder: Path, rows: int = 2000, dim: int = 8, similarity: str = "inner_product",
                 queries: tuple[int, ...] = ()) -> Path:
    """A retrieval export as recstack/retrieval/export.py writes it (the files the index tool reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "item_embeddings.npy", clustered(rows, dim, 14, clusters=20))
    np.save(folder / "item_ids.npy", np.arange(rows, dtype=np.int64) * 3 + 100)
    if queries:
        vectors = clustered(int(np.prod(queries)), dim, 15, clusters=20)
        np.save(folder / "query_embeddings.npy", vectors.reshape(*queries, dim))
    (folder / "model.json").write_text(json.dumps({"model_name": "dssm", "retrieval": {"similarity": similarity}}))
    return folder


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools/build_index.py"), *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("kind", "similarity", "queries", "source"), [
    ("hnsw", "inner_product", (), "1000 item vectors + Gaussian noise"),
    ("ivf", "cosine", (150,), "150 from query_embeddings.npy"),
    ("flat", "inner_product", (50, 3), "50 users x 3 interest vectors from query_embeddings.npy"),  # multi-interest
])
def test_tool_builds_saves_and_reports(tmp_path, kind, similarity, queries, source):
    export = write_export(tmp_path / "export", similarity=similarity, queries=queries)
    done = run_tool("--model_dir", str(export), "--index", kind, "--k", "10", "--runs", "1",
                    "--latency_queries", "20", "--threads", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    recall = float(re.search(r"recall@10: ([0-9.]+)", out).group(1))
    assert recall >= 0.9, out
    for pattern in (r"build: \S+ .* in [0-9.]+ s", r"p50 [0-9.]+ ms, p99 [0-9.]+ ms", r"[0-9,]+ queries/s",
                    r"faiss threads 1", r"OMP_WAIT_POLICY=PASSIVE"):
        assert re.search(pattern, out), (pattern, out)
    assert source in out
    index, info = ix.load_index(export / "index" / f"{kind}.faiss")
    assert (info.kind, info.metric, info.count, info.dim) == (kind, similarity, 2000, 8)
    assert info.figures["recall_at_10"] == pytest.approx(recall, abs=1e-4) and info.figures["threads"] == 1
    assert index.ntotal == 2000


def test_tool_benchmark_prints_a_table():
    done = run_tool("--benchmark", "--sizes", "1500", "--dim", "8", "--queries", "40", "--clusters", "10",
                    "--runs", "1", "--latency_queries", "5", "--k", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clustered Gaussian mixture" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 1,500 |")]
    assert [row.split(" | ")[1] for row in rows] == ["flat", "ivf", "hnsw"], done.stdout
    assert "| items | index | params | build s | recall@10 |" in done.stdout


def _drop_ids(folder: Path) -> None:
    (folder / "item_ids.npy").unlink()


def _short_ids(folder: Path) -> None:
    np.save(folder / "item_ids.npy", np.arange(1999, dtype=np.int64))


def _nan_vector(folder: Path) -> None:
    items = np.load(folder / "item_embeddings.npy")
    items[5, 1] = np.nan
    np.save(folder / "item_embeddings.npy", items)


def _bad_similarity(folder: Path) -> None:
    (folder / "model.json").write_text(json.dumps({"retrieval": {"similarity": "euclidean"}}))


def _network_score(folder: Path) -> None:
    (folder / "model.json").write_text(json.dumps({"retrieval": {"similarity": "inner_product", "score": "network"}}))


def _wrong_query_dim(folder: Path) -> None:
    np.save(folder / "query_embeddings.npy", np.ones((10, 3), np.float32))


@pytest.mark.parametrize(("breaks", "args", "message"), [
    (_drop_ids, (), r"item_ids\.npy: no such file \(expected int64 item ids"),
    (_short_ids, (), r"item_ids\.npy: expected one id per row of item_embeddings\.npy \(2000\), got 1999"),
    (_nan_vector, (), r"item_embeddings\.npy: expected finite values, row 5 holds NaN"),
    (_bad_similarity, (), r"model\.json: expected \"retrieval\.similarity\" to be one of inner_product, cosine"),
    (_network_score, (), r"model\.json: \"retrieval\.score\" is \"network\".* a vector index does not apply"),
    (_wrong_query_dim, (), r"query_embeddings\.npy: expected query vectors of dimension 8"),
    (None, ("--index", "annoy"), r"argument --index: invalid choice: 'annoy'"),
])
def test_tool_errors_exit_2_with_one_clear_line(tmp_path, breaks, args, message):
    export = write_export(tmp_path / "export")
    if breaks is not None:
        breaks(export)
    done = run_tool("--model_dir", str(export), "--runs", "1", *(args or ("--index", "flat")))
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(message, done.stdout + done.stderr), done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not (export / "index").exists()

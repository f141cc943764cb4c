"""Nearest-neighbour search over item vectors: exact top-k, and approximate faiss indexes measured against it.

A two-tower export holds one vector per item (``item_embeddings.npy``); retrieval scores a query (user)
vector against all of them, by inner product or by cosine, and keeps the best ``k``. :func:`exact_search`
does it exactly, in bounded memory; :func:`build_index` builds a faiss index that answers the same question
faster, approximately (kinds in :data:`KINDS`):

========  =========================================================  ==========================================
``flat``  ``IndexFlatIP``: exhaustive, exact (up to float rounding)  no parameters; search cost grows with N
``ivf``   ``IndexIVFFlat``: k-means cells, searches ``nprobe`` of    ``nlist`` (cells), ``nprobe`` (cells searched),
          ``nlist`` cells                                            ``train_size``, ``seed`` (k-means sample)
``hnsw``  ``IndexHNSWFlat``: a navigable small-world graph           ``M`` (links per node), ``ef_construction``,
                                                                     ``ef_search`` (candidate list lengths)
========  =========================================================  ==========================================

Every index stores the raw vectors (no compression) and scores by inner product; for ``cosine`` the
vectors are L2-normalised (copies) before they are added, and :func:`search` normalises the queries. The
labels an index returns are row positions in the item matrix it was built from (``-1``, score ``-inf``:
fewer than ``k`` found); the caller maps them to item ids. :func:`save_index` writes the index and an
:class:`IndexInfo` JSON beside it, atomically; :func:`load_index` reads both back and checks them against
each other.

Threads: faiss runs on its own OpenMP pool, sized by :func:`set_threads` (``threads`` of
:func:`build_index` / :func:`search`); :func:`exact_search` multiplies with torch, on torch's intra-op
threads. On shared 2-core machines set ``OMP_WAIT_POLICY=PASSIVE`` before faiss or torch is imported
(the tools do), or a busy co-process collapses throughput.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recstack.fileio import atomic_open, atomic_path

if TYPE_CHECKING:
    import faiss

logger = logging.getLogger(__name__)

#: index kinds of :func:`build_index`
KINDS = ("flat", "ivf", "hnsw")
#: similarities: ``inner_product`` (raw vectors) or ``cosine`` (both sides L2-normalised)
METRICS = ("inner_product", "cosine")
#: the parameters each kind accepts, and their defaults (``nlist`` and ``train_size`` depend on N: see
#: :func:`default_nlist`)
PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"nlist": None, "nprobe": 16, "train_size": None, "seed": 1234},
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 128},
}
#: items per step of :func:`exact_search` (scores of at most ``QUERY_BLOCK x chunk`` floats at a time)
DEFAULT_CHUNK = 16384
#: queries per step of :func:`exact_search`
QUERY_BLOCK = 1024
#: training points per IVF cell at most (faiss's own cap; more are sampled away)
MAX_POINTS_PER_CELL = 256
#: training points per IVF cell below which faiss's k-means warns
MIN_POINTS_PER_CELL = 39
#: layout version of the JSON written beside an index
INFO_VERSION = 1


class IndexInputError(ValueError):
    """Vectors, parameters or an index file that cannot be used; the message names the input and what was expected."""


@dataclass
class IndexInfo:
    """What an index file holds, written beside it as JSON (``<name>.json`` for ``<name>.faiss``).

    Attributes:
        kind: one of :data:`KINDS`.
        metric: one of :data:`METRICS`; :func:`search` needs it (cosine normalises the queries).
        params: the parameters the index was built with, defaults filled in (``nlist``, ``nprobe``, ...).
        count: vectors in the index (rows of the item matrix; labels are positions in it).
        dim: vector dimension.
        faiss_version: the faiss that wrote the file.
        figures: measurements recorded by the caller (build seconds, recall, latency), free-form.
        version: layout version of this JSON (:data:`INFO_VERSION`).
    """

    kind: str
    metric: str
    params: dict[str, Any]
    count: int
    dim: int
    faiss_version: str
    figures: dict[str, Any] = field(default_factory=dict)
    version: int = INFO_VERSION

    def to_json(self) -> str:
        """The JSON text :func:`save_index` writes."""
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=_json_default) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "index info") -> IndexInfo:
        """Read the JSON's object back; ``source`` names it in errors.

        Raises:
            IndexInputError: a key is missing or has the wrong type, or kind / metric are unknown.
        """
        if not isinstance(data, dict):
            raise IndexInputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        expected = {"kind": str, "metric": str, "params": dict, "count": int, "dim": int, "faiss_version": str}
        for key, kind in expected.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise IndexInputError(f"{source}: expected key {key!r} of type {kind.__name__}, "
                                      f"got {data.get(key)!r}")
        _check_choice(data["kind"], KINDS, f"{source}: kind")
        _check_choice(data["metric"], METRICS, f"{source}: metric")
        return cls(data["kind"], data["metric"], dict(data["params"]), data["count"], data["dim"],
                   data["faiss_version"], dict(data.get("figures") or {}), int(data.get("version", INFO_VERSION)))


# ---------------------------------------------------------------------------------------------- checks
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise IndexInputError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_vectors(vectors: Any, name: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 matrix, checked.

    Args:
        vectors: the array to check.
        name: what it is, for the error message (``"items"``, ``"item_embeddings.npy"``).

    Returns:
        The array itself when already C-contiguous, else a contiguous copy.

    Raises:
        IndexInputError: not a 2-D float32 numpy array with at least one column, or a value is NaN or infinite
        (the message gives the first bad row).
    """
    if not isinstance(vectors, np.ndarray):
        raise IndexInputError(f"{name}: expected a numpy array, got {type(vectors).__name__}")
    if vectors.ndim != 2 or vectors.shape[1] < 1:
        raise IndexInputError(f"{name}: expected a 2-D array (rows, dim) with dim >= 1, got shape {vectors.shape}")
    if vectors.dtype != np.float32:
        raise IndexInputError(f"{name}: expected float32 vectors, got {vectors.dtype} (convert with "
                              f".astype(np.float32))")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise IndexInputError(f"{name}: expected finite values, row {row} holds NaN or infinity "
                              f"({int((~finite).sum())} such row(s))")
    return np.ascontiguousarray(vectors)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise IndexInputError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_dims(queries: np.ndarray, dim: int, what: str) -> None:
    if queries.shape[1] != dim:
        raise IndexInputError(f"queries have dimension {queries.shape[1]}, {what} has {dim}")


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised copy of each row; an all-zero row stays zero (it scores 0 against everything).

    Args:
        vectors: float32 matrix (rows, dim).

    Returns:
        A new float32 matrix of the same shape.
    """
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, np.float32(1e-30))).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------- exact search
def _topk_rows(scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of a torch score matrix, ties broken by the smaller column."""
    import torch

    values, columns = torch.topk(scores, k, dim=1, largest=True, sorted=False)
    threshold = values.min(dim=1, keepdim=True).values
    # topk picks arbitrarily among columns tied with the k-th value: redo those rows with a stable sort
    ambiguous = torch.nonzero((scores >= threshold).sum(dim=1) > k).flatten().tolist()
    values, columns = values.numpy(), columns.numpy().astype(np.int64)
    for row in ambiguous:
        line = scores[row].numpy()
        order = np.argsort(-line, kind="stable")[:k]
        columns[row], values[row] = order, line[order]
    return values, columns


def _best(values: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (value, label) pairs of each row, sorted by value descending, then label ascending."""
    order = np.lexsort((labels, -values), axis=1)[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(labels, order, axis=1)


def exact_search(queries: np.ndarray, items: np.ndarray, k: int, metric: str,
                 chunk: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` items of each query, by inner product or cosine.

    Scores are computed by torch (float32, torch's intra-op threads) for at most :data:`QUERY_BLOCK` queries x
    ``chunk`` items at a time, so memory stays bounded whatever the number of items; each block's best ``k``
    are merged into the running best. Equal scores are ordered by the smaller item index (exactly, whatever
    the chunking), so results are deterministic.

    Args:
        queries: float32 (Q, D).
        items: float32 (N, D).
        k: neighbours per query (>= 1); with ``k > N`` the last columns are padding.
        metric: ``"inner_product"`` or ``"cosine"`` (both sides L2-normalised).
        chunk: items per step.

    Returns:
        ``(scores, indices)``: float32 (Q, k), best first, and int64 (Q, k) row positions in ``items``; padding
        is score ``-inf``, index ``-1``.

    Raises:
        IndexInputError: bad vectors (see :func:`check_vectors`), dimensions that differ, k < 1, chunk < 1 or an
        unknown metric.
    """
    import torch

    _check_choice(metric, METRICS, "metric")
    k = _check_k(k)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise IndexInputError(f"chunk must be an integer >= 1, got {chunk!r}")
    queries = check_vectors(queries, "queries")
    items = check_vectors(items, "items")
    _check_dims(queries, items.shape[1], "items")
    if metric == "cosine":
        queries, items = normalize(queries), normalize(items)
    count = len(items)
    kept = min(k, count)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    indices = np.full((len(queries), k), -1, dtype=np.int64)
    if count == 0:
        return scores, indices
    item_tensor = torch.from_numpy(items)
    with torch.inference_mode():
        for q0 in range(0, len(queries), QUERY_BLOCK):
            block = torch.from_numpy(queries[q0:q0 + QUERY_BLOCK])
            best_values = np.empty((len(block), 0), dtype=np.float32)
            best_labels = np.empty((len(block), 0), dtype=np.int64)
            for c0 in range(0, count, chunk):
                part = block @ item_tensor[c0:c0 + chunk].T
                values, columns = _topk_rows(part, min(kept, part.shape[1]))
                best_values, best_labels = _best(np.concatenate([best_values, values], axis=1),
                                                 np.concatenate([best_labels, columns + c0], axis=1), kept)
            scores[q0:q0 + len(block), :kept] = best_values
            indices[q0:q0 + len(block), :kept] = best_labels
    return scores, indices


# ---------------------------------------------------------------------------------------------- faiss indexes
def _faiss():
    loader = logging.getLogger("faiss.loader")  # one INFO line per SIMD build it tries: keep them out of INFO logs
    if loader.level == logging.NOTSET:
        loader.setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError as err:
        raise ImportError("recstack.retrieval.index needs faiss: pip install faiss-cpu==1.15.1 "
                          "(requirements.txt)") from err
    return faiss


def set_threads(threads: int | None) -> int:
    """Size faiss's OpenMP pool (``None`` keeps it); returns the thread count in use.

    Args:
        threads: threads for faiss's searches, builds and k-means (>= 1), or ``None``.

    Returns:
        ``faiss.omp_get_max_threads()`` after the change.

    Raises:
        IndexInputError: ``threads`` < 1.
    """
    faiss = _faiss()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise IndexInputError(f"threads must be an integer >= 1, got {threads!r}")
        faiss.omp_set_num_threads(int(threads))
    return faiss.omp_get_max_threads()


def default_nlist(count: int) -> int:
    """IVF cells for ``count`` vectors: about ``4 * sqrt(count)``, at most ``count / 39`` (so that k-means
    gets its 39 points per cell), at least 1."""
    return int(max(1, min(round(4 * math.sqrt(count)), count // MIN_POINTS_PER_CELL)))


def resolve_params(kind: str, count: int, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a ``kind`` index over ``count`` vectors: ``params`` over the defaults, checked.

    Args:
        kind: one of :data:`KINDS`.
        count: vectors to index.
        params: the caller's parameters (a ``None`` value means the default).

    Returns:
        Every parameter of the kind, with a value.

    Raises:
        IndexInputError: an unknown kind or parameter, or a value out of range (the message names it).
    """
    _check_choice(kind, KINDS, "index kind")
    allowed = PARAMS[kind]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise IndexInputError(f"index kind {kind!r} takes no parameter {', '.join(unknown)} (accepted: {accepted})")
    values = {name: params.get(name) if params.get(name) is not None else default
              for name, default in allowed.items()}
    if kind == "ivf":
        values["nlist"] = values["nlist"] or default_nlist(count)
        values["train_size"] = values["train_size"] or min(count, MAX_POINTS_PER_CELL * values["nlist"])
    for name, value in values.items():
        least = {"seed": 0, "M": 2}.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise IndexInputError(f"{kind} parameter {name} must be an integer >= {least}, got {value!r}")
        values[name] = int(value)
    if kind == "ivf":
        if values["nlist"] > count:
            raise IndexInputError(f"ivf parameter nlist={values['nlist']} exceeds the {count} vectors to index "
                                  f"(k-means needs at least one vector per cell; default {default_nlist(count)})")
        if not values["nlist"] <= values["train_size"] <= count:
            raise IndexInputError(f"ivf parameter train_size={values['train_size']} must lie in "
                                  f"[nlist={values['nlist']}, {count}]")
        if values["nprobe"] > values["nlist"]:
            logger.info("ivf: nprobe %d > nlist %d; searching all %d cells", values["nprobe"], values["nlist"],
                        values["nlist"])
            values["nprobe"] = values["nlist"]
    return values


def build_index(items: np.ndarray, kind: str, metric: str, threads: int | None = None,
                **params: Any) -> faiss.Index:
    """A faiss index over ``items``, scoring by ``metric``.

    Args:
        items: float32 (N, D); labels of the index are row positions in it.
        kind: ``"flat"``, ``"ivf"`` or ``"hnsw"`` (module docstring).
        metric: ``"inner_product"`` or ``"cosine"`` (the index then holds normalised copies).
        threads: faiss threads for the build (:func:`set_threads`; ``None``: as set).
        **params: ``ivf``: nlist (default about 4*sqrt(N), see :func:`default_nlist`), nprobe (16), train_size
            (k-means sample, default min(N, 256*nlist)), seed (1234, of that sample; faiss's k-means has its
            own fixed seed); ``hnsw``: M (32), ef_construction (200), ef_search (128).

    Returns:
        The trained, filled index (``nprobe`` / ``efSearch`` set).

    Raises:
        IndexInputError: bad vectors, unknown kind, metric or parameter, or a parameter out of range.
    """
    faiss = _faiss()
    _check_choice(kind, KINDS, "index kind")
    _check_choice(metric, METRICS, "metric")
    items = check_vectors(items, "items")
    count, dim = items.shape
    if count == 0:
        raise IndexInputError("items: expected at least one vector, got 0 rows")
    values = resolve_params(kind, count, params)
    set_threads(threads)
    vectors = normalize(items) if metric == "cosine" else items
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, values["nlist"], faiss.METRIC_INNER_PRODUCT)
        if values["train_size"] < MIN_POINTS_PER_CELL * values["nlist"]:
            logger.warning("ivf: %d training vectors for %d cells (k-means wants at least %d per cell); "
                           "lower nlist", values["train_size"], values["nlist"], MIN_POINTS_PER_CELL)
        sample = vectors
        if values["train_size"] < count:
            rows = np.sort(np.random.default_rng(values["seed"]).choice(count, values["train_size"], replace=False))
            sample = vectors[rows]
        index.cp.max_points_per_centroid = max(MAX_POINTS_PER_CELL, -(-len(sample) // values["nlist"]))
        index.train(sample)
        index.nprobe = values["nprobe"]
    else:
        index = faiss.IndexHNSWFlat(dim, values["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = values["ef_construction"]
        index.hnsw.efSearch = values["ef_search"]
    index.add(vectors)
    return index


def index_kind(index: faiss.Index) -> str:
    """The :data:`KINDS` name of an index :func:`build_index` made (or :func:`load_index` read).

    Raises:
        IndexInputError: another faiss index type, or not an inner-product index.
    """
    faiss = _faiss()
    for kind, cls in (("flat", faiss.IndexFlat), ("ivf", faiss.IndexIVFFlat), ("hnsw", faiss.IndexHNSWFlat)):
        if isinstance(index, cls):
            if index.metric_type != faiss.METRIC_INNER_PRODUCT:
                raise IndexInputError(f"expected an inner-product index, got a {type(index).__name__} with "
                                      f"metric type {index.metric_type}")
            return kind
    raise IndexInputError(f"expected a faiss IndexFlatIP, IndexIVFFlat or IndexHNSWFlat, got {type(index).__name__}")


def index_params(index: faiss.Index) -> dict[str, Any]:
    """The search-relevant parameters of an index as built (``nlist``, ``nprobe``; ``M``, ``ef_*``)."""
    kind = index_kind(index)
    if kind == "ivf":
        return {"nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    if kind == "hnsw":
        hnsw = index.hnsw  # M: the links per node of the upper levels (level 0 has 2 * M)
        return {"M": int(hnsw.nb_neighbors(1)), "ef_construction": int(hnsw.efConstruction),
                "ef_search": int(hnsw.efSearch)}
    return {}


def search(index: faiss.Index, queries: np.ndarray, k: int, metric: str,
           threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` items of each query, from a faiss index :func:`build_index` made.

    Args:
        index: the index.
        queries: float32 (Q, D).
        k: neighbours per query (>= 1).
        metric: the metric the index was built with (``cosine`` normalises the queries).
        threads: faiss threads (:func:`set_threads`; ``None``: as set).

    Returns:
        ``(scores, indices)``: float32 (Q, k), best first, and int64 (Q, k) row positions in the indexed item
        matrix; where fewer than ``k`` were found, score ``-inf`` and index ``-1``.

    Raises:
        IndexInputError: bad queries, a dimension other than the index's, k < 1 or an unknown metric.
    """
    _check_choice(metric, METRICS, "metric")
    k = _check_k(k)
    queries = check_vectors(queries, "queries")
    _check_dims(queries, index.d, "the index")
    set_threads(threads)
    if metric == "cosine":
        queries = normalize(queries)
    scores, indices = index.search(queries, k)
    scores[indices < 0] = -np.inf
    return scores, indices.astype(np.int64, copy=False)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of the share of the exact neighbours the approximate search found.

    For each row: ``|approx_row ∩ exact_row| / (valid entries of exact_row)``, where ``-1`` entries (fewer than
    k found) are ignored on both sides; a row whose exact side is all ``-1`` counts as 1.

    Args:
        approx: int (Q, k) indices from :func:`search`.
        exact: int (Q, k) indices from :func:`exact_search`, same shape.

    Returns:
        Recall in [0, 1] (1.0 for zero queries).

    Raises:
        IndexInputError: shapes that differ or are not 2-D.
    """
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.ndim != 2 or approx.shape != exact.shape:
        raise IndexInputError(f"recall_at_k: expected two (queries, k) index arrays of one shape, got "
                              f"{approx.shape} and {exact.shape}")
    if len(exact) == 0:
        return 1.0
    total = 0.0
    for found, truth in zip(approx, exact):
        truth = set(truth[truth >= 0].tolist())
        if truth:
            total += len(truth & set(found[found >= 0].tolist())) / len(truth)
        else:
            total += 1.0
    return total / len(exact)


# ---------------------------------------------------------------------------------------------- files
def info_path(path: str | Path) -> Path:
    """The JSON beside an index file: ``<name>.json`` for ``<name>.faiss``."""
    return Path(path).with_suffix(".json")


def save_index(index: faiss.Index, path: str | Path, metric: str, params: dict[str, Any] | None = None,
               figures: dict[str, Any] | None = None) -> IndexInfo:
    """Write ``index`` to ``path`` and its :class:`IndexInfo` to ``<path stem>.json``, each atomically.

    The index file is written first, then the JSON (an interrupted save leaves the old JSON, which
    :func:`load_index` checks against the index).

    Args:
        index: an index :func:`build_index` made.
        path: the index file (``.faiss`` by convention); its folder is created.
        metric: the metric it was built with.
        params: the build parameters to record (:func:`resolve_params`: ``train_size``, ``seed`` ...); what the
            index itself holds (``nlist``, ``nprobe``, ``M``, ``ef_*``) is read from it and wins.
        figures: measurements to record (build seconds, recall, latency).

    Returns:
        The info written.
    """
    faiss = _faiss()
    _check_choice(metric, METRICS, "metric")
    path = Path(path)
    info = IndexInfo(index_kind(index), metric, {**(params or {}), **index_params(index)}, int(index.ntotal),
                     int(index.d), faiss.__version__, dict(figures or {}))
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_open(info_path(path)) as f:
        f.write(info.to_json())
    return info


def load_index(path: str | Path) -> tuple[faiss.Index, IndexInfo]:
    """Read an index :func:`save_index` wrote, with its info.

    Args:
        path: the index file; ``<path stem>.json`` must be beside it.

    Returns:
        ``(index, info)``; the index's ``nprobe`` / ``efSearch`` are set from the info.

    Raises:
        FileNotFoundError: the index or its JSON is missing.
        IndexInputError: a damaged file, or an index that does not match its JSON (kind, count, dim).
    """
    faiss = _faiss()
    path = Path(path)
    meta = info_path(path)
    for file in (path, meta):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file (an index is <name>.faiss with <name>.json beside it, "
                                    f"written by save_index / tools/build_index.py)")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexInputError(f"{meta}: expected the JSON of an index, cannot parse it: {err}") from err
    info = IndexInfo.from_dict(data, str(meta))
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise IndexInputError(f"{path}: expected a faiss index file, faiss cannot read it: "
                              f"{str(err).splitlines()[-1]}") from err
    found = (index_kind(index), int(index.ntotal), int(index.d))
    if found != (info.kind, info.count, info.dim):
        raise IndexInputError(f"{path}: holds a {found[0]} index of {found[1]} x {found[2]} vectors, but {meta} "
                              f"describes a {info.kind} index of {info.count} x {info.dim} (mixed files?)")
    if info.kind == "ivf" and "nprobe" in info.params:
        index.nprobe = int(info.params["nprobe"])
    if info.kind == "hnsw" and "ef_search" in info.params:
        index.hnsw.efSearch = int(info.params["ef_search"])
    return index, info

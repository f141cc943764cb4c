"""``POST /recall``: a retrieval export's top-K items for each user of a request.

The service runs the export's user tower (the served model, :mod:`recstack.serving.model`) on the request's user
inputs, then ranks the corpus's item vectors (``item_embeddings.npy``) for each user vector: exactly (the default:
one matrix product, the ranking rule of :mod:`recstack.retrieval.ranking`: by score, ties by the smaller corpus
row), or through a FAISS index that ``tools/build_index.py`` wrote (``tools/serve.py --index hnsw``). A
multi-interest model (MIND) scores an item by its best interest; a model whose score is a network (NCF) runs its
exported scorer over the corpus (exact only).

Request: the ``/predict`` body (``{"rows": [...]}`` or ``{"inputs": {...}}``: the user tower's inputs) plus
optional ``"k"`` (default the export's first ``topk``, at most ``--max_k``) and ``"exclude"`` (one list of item ids
per row: items not to return, e.g. the user's already-seen ones). The ids of the user's history input are left
out too unless ``"exclude_history": false``. Answer: ``{"code": 200, "k": k, "items": [[id, ...], ...],
"scores": [[...], ...]}``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from recstack.serving.validation import RequestError

logger = logging.getLogger("recstack.serving")


class RecallIndex:
    """The corpus side of ``/recall``: item vectors and ids, the scoring, and the optional FAISS index.

    Args:
        folder: the export folder (``model.json`` with a ``"retrieval"`` object).
        index: a kind written by ``tools/build_index.py`` (``<folder>/index/<kind>.faiss``), or ``None`` (exact).
        max_k: the largest ``k`` a request may ask for.

    Raises:
        FileNotFoundError, ValueError: a missing or inconsistent file (named).
    """

    def __init__(self, folder: str | Path, index: str | None = None, max_k: int = 1000) -> None:
        self.folder = Path(folder)
        spec = json.loads((self.folder / "model.json").read_text(encoding="utf-8"))
        retrieval = spec["retrieval"]
        files = retrieval["files"]
        self.score_kind = retrieval["score"]
        self.similarity = retrieval["similarity"]
        self.vectors = np.ascontiguousarray(np.load(self.folder / files["item_embeddings"]), dtype=np.float32)
        self.ids = np.load(self.folder / files["item_ids"]).astype(np.int64)
        if len(self.ids) != len(self.vectors):
            raise ValueError(f"{self.folder}: {len(self.ids)} item ids for {len(self.vectors)} item vectors")
        self.rows = np.full(int(self.ids.max()) + 1, -1, dtype=np.int64)
        self.rows[self.ids] = np.arange(len(self.ids))
        self.default_k = int((retrieval.get("topk") or [100])[0])
        self.max_k = min(max_k, len(self.ids))
        self.history_input = retrieval.get("history_input")
        self.scorer = None
        if self.score_kind == "network":
            import onnxruntime as ort

            scorer_spec = json.loads((self.folder / files["scorer"]).read_text(encoding="utf-8"))
            self.scorer = ort.InferenceSession(str(self.folder / scorer_spec["files"]["onnx"]),
                                               providers=["CPUExecutionProvider"])
        self.index = None
        self.index_kind = index
        if index is not None:
            if self.score_kind == "network":
                raise ValueError(f"{self.folder}: the model scores pairs with a network; no vector index applies")
            from recstack.retrieval.index import load_index

            self.index, info = load_index(self.folder / "index" / f"{index}.faiss")
            if info.count != len(self.ids) or info.dim != self.vectors.shape[1]:
                raise ValueError(f"{self.folder}/index/{index}.faiss holds {info.count} vectors of {info.dim}, the "
                                 f"export {len(self.ids)} of {self.vectors.shape[1]}: rebuild it with "
                                 "tools/build_index.py")
            self.metric = info.metric

    def describe(self) -> dict[str, Any]:
        return {"items": int(len(self.ids)), "dimension": int(self.vectors.shape[1]), "score": self.score_kind,
                "index": self.index_kind or "exact", "default_k": self.default_k, "max_k": self.max_k}

    # ------------------------------------------------------------------ requests
    def parse_options(self, document: Any, rows: int) -> tuple[int, list[list[int]] | None, bool]:
        """``k``, ``exclude`` and ``exclude_history`` of a request (removed from ``document``), checked."""
        if not isinstance(document, dict):
            raise RequestError("the request body must be a JSON object")
        k = document.pop("k", self.default_k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise RequestError(f"'k' must be an integer in [1, {self.max_k}] (--max_k, the corpus size), got {k!r}",
                               field="k")
        exclude = document.pop("exclude", None)
        if exclude is not None:
            if not isinstance(exclude, list) or len(exclude) != rows:
                got = f"a list of {len(exclude)}" if isinstance(exclude, list) else type(exclude).__name__
                raise RequestError(f"'exclude' must be a list with one list of item ids per row ({rows}), got {got}",
                                   field="exclude")
            for i, ids in enumerate(exclude):
                if not isinstance(ids, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in ids):
                    raise RequestError(f"'exclude[{i}]' must be a list of integer item ids", field=f"exclude[{i}]")
        history = document.pop("exclude_history", True)
        if not isinstance(history, bool):
            raise RequestError(f"'exclude_history' must be true or false, got {history!r}", field="exclude_history")
        return k, exclude, history

    def excluded_rows(self, rows: int, exclude: list[list[int]] | None,
                      history: np.ndarray | None) -> list[np.ndarray]:
        """Per row, the corpus rows not to return (unknown ids ignored: they cannot be returned anyway)."""
        out = []
        for i in range(rows):
            ids = list(exclude[i]) if exclude is not None else []
            if history is not None:
                ids += [int(v) for v in history[i] if v > 0]
            ids = np.asarray(ids, dtype=np.int64)
            ids = ids[(ids >= 0) & (ids < len(self.rows))]
            found = self.rows[ids]
            out.append(np.unique(found[found >= 0]))
        return out

    def top_k(self, users: np.ndarray, k: int, excluded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(item ids (B, k), scores (B, k))``; ``-1`` / ``-inf`` past the items left."""
        if self.index is not None:
            return self._from_index(users, k, excluded)
        scores = self._scores(users)                                              # (B, N)
        for i, rows in enumerate(excluded):
            scores[i, rows] = -np.inf
        return self._best(scores, k)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        if self.score_kind == "network":
            chunks = [self.scorer.run(None, {"user_embedding": users.astype(np.float32),
                                             "item_embedding": self.vectors[a:a + 4096]})[0]
                      for a in range(0, len(self.vectors), 4096)]
            return np.concatenate(chunks, axis=1)
        if users.ndim == 3:                                                       # interests: the best one
            return np.einsum("bkd,nd->bkn", users, self.vectors).max(axis=1)
        return users @ self.vectors.T

    def _best(self, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        take = min(k, scores.shape[1])
        ids = np.full((len(scores), k), -1, dtype=np.int64)
        best = np.full((len(scores), k), -np.inf, dtype=np.float32)
        for i, row in enumerate(scores):
            part = np.argpartition(-row, take - 1)[:take] if take < len(row) else np.arange(len(row))
            # the ranking rule: by score, ties by the smaller corpus row; a tie at the cut is decided the same way
            cut = row[part].min()
            candidates = np.flatnonzero(row >= cut)
            order = candidates[np.lexsort((candidates, -row[candidates]))][:take]
            keep = np.isfinite(row[order])
            ids[i, :keep.sum()] = self.ids[order[keep]]
            best[i, :keep.sum()] = row[order[keep]]
        return ids, best

    def _from_index(self, users: np.ndarray, k: int, excluded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from recstack.retrieval.index import search

        extra = max((len(r) for r in excluded), default=0)
        want = min(k + extra, len(self.ids))
        queries = users.reshape(-1, users.shape[-1])
        scores, rows = search(self.index, queries, want, self.metric, threads=1)
        per_user = users.shape[1] if users.ndim == 3 else 1
        full = np.full((len(users), len(self.ids)), -np.inf, dtype=np.float32)
        for q in range(len(queries)):                        # merge each user's interests by the best score
            valid = rows[q] >= 0
            target = full[q // per_user]
            np.maximum.at(target, rows[q][valid], scores[q][valid])
        for i, rows_out in enumerate(excluded):
            full[i, rows_out] = -np.inf
        return self._best(full, k)

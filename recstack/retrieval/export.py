"""Export of a retrieval model (``tools/to_static.py`` on a ``models/recall/*`` config): the two towers apart,
and the corpus's item vectors.

Written into the export folder (each file atomically; ``model.json`` last, naming the others):

* ``tostatic_user.{pt,onnx,json}``: the user tower (the interaction batch's user keys -> the user vector
  ``(B, D)``, or ``(B, K, D)`` for a multi-interest model);
* ``tostatic_item.{pt,onnx,json}``: the item tower (the item table's keys -> ``(R, D)``), to embed new items;
* ``tostatic_scorer.{pt,onnx,json}``, for a model whose score is a network (NCF): ``(user (B, W), items (R, W))``
  -> scores ``(B, R)``;
* ``item_embeddings.npy`` (float32 ``(N, D)``, the whole corpus through the item tower) and ``item_ids.npy``
  (int64 ``(N,)``); ``query_embeddings.npy``: user vectors of up to 1,000 evaluation lines, the queries
  ``tools/build_index.py`` measures an index's recall with; ``items.txt``: the item table's lines as they are
  (``retrieval.item_table`` names its fields), the raw item features a ranking stage joins (``/recommend``);
* ``model.json``: ``{"retrieval": {similarity, score, dimension, interests, num_items, files...}, ...}``.

Each tower is checked as every export is (eager vs TorchScript vs ONNX Runtime, ``<= 1e-5`` on real batches), and
the exported towers' scores are checked against the trained model's: ``<user tower(x), item vectors>`` equals
``net.score`` on the example batch (for a scored network, the exported scorer's output).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from recstack.export import (
    ExportError,
    ExportModule,
    ExportResult,
    LoadedModel,
    export_vocabulary_files,
    max_abs_diff,
    write_export,
)
from recstack.export_spec import TensorSpec, numpy_dtype
from recstack.fileio import atomic_path

if TYPE_CHECKING:  # the model module imports this one (its export hook)
    from recstack.retrieval.model import RetrievalNet

logger = logging.getLogger(__name__)

QUERY_ROWS = 1000


class _UserTower(nn.Module):
    def __init__(self, net: RetrievalNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)


class _ItemTower(nn.Module):
    def __init__(self, net: RetrievalNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net.encode_items(*inputs)


class _Scorer(nn.Module):
    def __init__(self, net: RetrievalNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.net.score(user, items)


def _spec(name: str, tensor: torch.Tensor, batch_axis: str, dynamic: set[int] = frozenset(),
          column: str | None = None, meaning: str | None = None) -> TensorSpec:
    shape: list[int | str] = [batch_axis] + [f"{name}_length" if i in dynamic else int(s)
                                             for i, s in enumerate(tensor.shape[1:], start=1)]
    return TensorSpec(name, numpy_dtype(tensor), shape, column=column, meaning=meaning)


def export_retrieval(loaded: LoadedModel, out_dir: Path, prefix: str, head: dict[str, Any],
                     tolerance: float) -> ExportResult:
    """Write the files of the module docstring (``loaded``: the model with its checkpoint, eval mode, and its
    evaluation batches)."""
    net: RetrievalNet = loaded.model
    wrapper = loaded.wrapper
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = getattr(loaded.reader, "columns", {}) or {}
    # ---- user tower: the evaluation batches' user keys
    batches = [loaded.example] + [b for _, b in zip(range(8), loaded.batches)]
    names = list(net.user_input_names)
    ragged = {n for n in names if columns.get(n, (None, 1))[1] == 0}
    user_inputs = [loaded.example[n] for n in names]
    user_specs = [_spec(n, t, "batch", {1} if n in ragged and t.dim() > 1 else set(), column=n)
                  for n, t in zip(names, user_inputs)]
    checks = [(f"batch of {len(user_inputs[0])}", user_inputs)]
    if len(user_inputs[0]) > 1:
        checks.append(("first row alone", [t[:1] for t in user_inputs]))
    for b in batches[1:]:
        other = [b[n] for n in names]
        if any(o.shape[1] != t.shape[1] for o, t in zip(other, user_inputs) if t.dim() > 1):
            checks.append((f"batch of {len(other[0])} with other history lengths", other))
            break
    user_module = ExportModule(_UserTower(net)).eval()
    with torch.no_grad():
        user_vectors = user_module(*user_inputs)[0]
    shape = "(B, K, D): one vector per interest" if user_vectors.dim() == 3 else "(B, D)"
    user_out = [_spec("user_embedding", user_vectors, "batch", meaning=f"the user vector {shape}")]
    vocab_files, vocabularies = export_vocabulary_files(loaded.reader, prefix)  # the user features' vocabularies
    user = write_export(user_module, user_inputs, checks, user_specs, user_out, out_dir, f"{prefix}_user",
                        {**head, "export_part": "user_tower"},
                        {"embedding_tables": _bounds(net, names), **vocabularies}, tolerance, files=vocab_files)
    # ---- item tower: corpus rows (a second check with other rows)
    corpus = net.corpus
    rows = torch.arange(min(corpus.num_items, 256))
    item_inputs = corpus.features(rows)
    item_names = list(corpus.input_names)
    item_specs = [_spec(n, t, "items", {1} if t.dim() > 1 and n.endswith((".ids", ".values", ".weights"))
                        and n not in (f"{corpus.group}.ids", f"{corpus.group}.values") else set(), column=n)
                  for n, t in zip(item_names, item_inputs)]
    tail = torch.arange(max(corpus.num_items - 64, 0), corpus.num_items)
    item_checks = [(f"{len(rows)} corpus rows", item_inputs), (f"{len(tail)} last corpus rows", corpus.features(tail))]
    item_module = ExportModule(_ItemTower(net)).eval()
    with torch.no_grad():
        item_sample = item_module(*item_inputs)[0]
    item_out = [_spec("item_embedding", item_sample, "items", meaning="the item vector (R, D)")]
    item = write_export(item_module, item_inputs, item_checks, item_specs, item_out, out_dir, f"{prefix}_item",
                        {**head, "export_part": "item_tower"}, {}, tolerance)
    # ---- the corpus's vectors, the scorer, the queries
    with torch.no_grad():
        vectors = net.corpus_vectors()
        queries = torch.cat([net(*[b[n] for n in names]) for b in batches])[:QUERY_ROWS]
    dot = getattr(net, "dot_product", True)
    files = {"user_tower": user.spec_file.name, "item_tower": item.spec_file.name,
             "item_embeddings": "item_embeddings.npy", "item_ids": "item_ids.npy",
             "query_embeddings": "query_embeddings.npy"}
    diffs = {"user_tower": user.max_abs_diff, "item_tower": item.max_abs_diff}
    if not dot:
        scorer_inputs = [user_vectors, vectors[:256]]
        scorer_specs = [_spec("user_embedding", user_vectors, "batch"), _spec("item_embedding", vectors, "items")]
        scorer_module = ExportModule(_Scorer(net)).eval()
        with torch.no_grad():
            sample = scorer_module(*scorer_inputs)[0]
        scorer_out = [TensorSpec("score", numpy_dtype(sample), ["batch", "items"],
                                 meaning="the score of each (user, item) pair (B, R)")]
        scorer_checks = [("example users x 256 items", scorer_inputs),
                         ("one user x 256 items", [user_vectors[:1], vectors[:256]])]
        scorer = write_export(scorer_module, scorer_inputs, scorer_checks, scorer_specs, scorer_out, out_dir,
                              f"{prefix}_scorer",
                              {**head, "export_part": "scorer"}, {}, tolerance)
        files["scorer"] = scorer.spec_file.name
        diffs["scorer"] = scorer.max_abs_diff
    score_diff = _check_scores(net, vectors, dict(zip(names, user_inputs)), out_dir / f"{prefix}_user.onnx",
                               tolerance)
    for name, array in (("item_embeddings.npy", vectors.numpy().astype(np.float32)),
                        ("item_ids.npy", corpus.item_ids.numpy().astype(np.int64)),
                        ("query_embeddings.npy", queries.numpy().astype(np.float32))):
        with atomic_path(out_dir / name) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
    files["items"] = _write_item_table(corpus, out_dir / "items.txt")
    interests = int(user_vectors.shape[1]) if user_vectors.dim() == 3 else 1
    score = "network" if not dot else ("max_inner_product" if interests > 1 else net.similarity)
    description = {
        "model_name": head["model_name"], "config": head.get("config"), "checkpoint": head.get("checkpoint"),
        "retrieval": {"similarity": net.similarity, "score": score, "dimension": int(vectors.shape[1]),
                      "interests": interests, "num_items": int(corpus.num_items), "files": files,
                      "user_inputs": names, "item_inputs": item_names, "mask_seen": wrapper.mask_seen,
                      "seen_input": wrapper.roles.seen, "topk": list(wrapper.topk),
                      "history_input": wrapper.roles.history["ids"] if wrapper.roles.history else None,
                      "item_table": {"separator": corpus.spec.separator,
                                     "fields": [f.name for f in corpus.spec.input_fields],
                                     "id_field": corpus.spec.feature(corpus.item_feature).input_name}},
        "parity": {**diffs, "scores_vs_eager": score_diff},
    }
    spec_file = out_dir / "model.json"
    with atomic_path(spec_file) as tmp:
        tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    logger.info("retrieval export: user and item towers, %d item vectors of %d, scores within %.2g of eager",
                len(vectors), vectors.shape[1], score_diff)
    return ExportResult(user.torchscript, user.onnx, spec_file, description, {**user.max_abs_diff,
                                                                              "scores_vs_eager": score_diff})


def _write_item_table(corpus: Any, path: Path) -> str:
    """Copy the item table's lines (every file of ``item_config.data_path``, in order) into ``path``: the raw item
    features a ranking stage joins to each retrieved id (``/recommend``, :mod:`recstack.serving.pipeline`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        for name in corpus.files:
            with open(name, "rb") as f:
                data = f.read()
            out.write(data)
            if data and not data.endswith(b"\n"):
                out.write(b"\n")
    return path.name


def _bounds(net: RetrievalNet, names: list[str]) -> dict[str, Any]:
    """Id bounds of the user tower's inputs (serving checks ids against them)."""
    out: dict[str, Any] = {}
    for module in net.modules():
        for key, bound in (getattr(module, "id_bounds", None) or {}).items():
            if key in names:
                out.setdefault(key, bound)
    if net.roles.history is not None and net.roles.history["ids"] in names:
        out.setdefault(net.roles.history["ids"], net.corpus.num_buckets)
    return out


def _check_scores(net: RetrievalNet, vectors: torch.Tensor, user_inputs: dict[str, torch.Tensor],
                  onnx_path: Path, tolerance: float) -> float:
    """The exported user tower's vectors (ONNX Runtime) scored against the exported item vectors equal the
    trained model's scores of the same users (``net.score`` with its own towers)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {i.name: user_inputs[i.name].numpy() for i in session.get_inputs()}
    exported_users = torch.from_numpy(session.run(None, feed)[0])
    with torch.no_grad():
        eager = net.score(net(*user_inputs.values()), net.corpus_vectors())
        exported = net.score(exported_users, vectors)
    diff = max_abs_diff([eager.numpy()], [exported.numpy()]) / max(1.0, float(eager.abs().max()))
    if not diff <= tolerance:
        raise ExportError(f"{onnx_path.parent}: the exported towers' scores differ from the trained model's by "
                          f"{diff:.3g} (> {tolerance:g}); nothing more was written")
    return diff

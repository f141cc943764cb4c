"""The benchmark of ``tools/infer_benchmark.py`` and its report.

:func:`run_benchmark` times a backend (:mod:`recstack.backends`) over batches held in memory
(:func:`recstack.inference.load_batches`): preprocess, inference and postprocess per batch, over warm-up
and timed passes; :func:`compute_metrics` scores the first pass's predictions against the data's labels;
:func:`build_report` writes PaddleRec's autolog-style report (:mod:`recstack.autolog`);
:func:`save_predictions` the predictions as a table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recstack.backends import Backend, Batch, InferenceSettings
from recstack.export_spec import ExportedModel


@dataclass
class BenchmarkResult:
    """Timings (seconds per batch, all timed passes), the first pass's predictions, and metrics."""

    preprocess: list[float] = field(default_factory=list)
    inference: list[float] = field(default_factory=list)
    postprocess: list[float] = field(default_factory=list)
    pass_seconds: list[float] = field(default_factory=list)
    samples_per_pass: int = 0
    batches_per_pass: int = 0
    warmup: int = 0
    predictions: list[np.ndarray] = field(default_factory=list)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    pass_inference_p50_ms: list[float] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        """Median over the passes of samples / (preprocess + inference + postprocess time)."""
        return float(np.median([self.samples_per_pass / max(s, 1e-12) for s in self.pass_seconds]))


def run_benchmark(backend: Backend, batches: Sequence[Batch], *, warmup: int = 0, runs: int = 1,
                  monitor: Any | None = None) -> BenchmarkResult:
    """Time ``backend`` over ``batches``: ``warmup`` untimed batches, then ``runs`` timed passes.

    Each batch is timed in three parts with ``time.perf_counter``: preprocess (``prepare``: tensors to
    the backend's inputs), inference (``run``) and postprocess (``fetch``: outputs to float32 numpy).
    ``monitor.sample()`` runs between batches, outside the timed parts.
    """
    result = BenchmarkResult(warmup=min(warmup, len(batches)) if warmup else 0)
    for batch in batches[:result.warmup]:
        backend.predict(batch)
    result.samples_per_pass = sum(b.size for b in batches)
    result.batches_per_pass = len(batches)
    clock = time.perf_counter
    for run in range(max(1, runs)):
        outputs: list[list[np.ndarray]] = []
        total = 0.0
        inference = []
        for batch in batches:
            t0 = clock()
            feeds = backend.prepare(batch)
            t1 = clock()
            raw = backend.run(feeds)
            t2 = clock()
            out = backend.fetch(raw)
            t3 = clock()
            result.preprocess.append(t1 - t0)
            result.inference.append(t2 - t1)
            result.postprocess.append(t3 - t2)
            inference.append(t2 - t1)
            total += t3 - t0
            if run == 0:
                outputs.append(out)
            if monitor is not None:
                monitor.sample()
        result.pass_seconds.append(total)
        result.pass_inference_p50_ms.append(float(np.percentile(np.asarray(inference) * 1e3, 50)))
        if run == 0:
            result.predictions = [np.concatenate([o[i] for o in outputs]) for i in range(len(outputs[0]))]
    columns = sorted({c for b in batches for c in b.labels})
    result.labels = {c: np.concatenate([b.labels[c].numpy() for b in batches]) for c in columns
                     if all(c in b.labels for b in batches)}
    return result


def compute_metrics(outputs_spec: Sequence[dict[str, Any]], predictions: Sequence[np.ndarray],
                    labels: dict[str, np.ndarray]) -> dict[str, float]:
    """AUC of each probability output and MSE of each value output that has its label column in the data
    (named like training's metrics: ``auc``, ``auc_<task>``, ``mse_<task>``)."""
    from recstack.metrics import AUC, MSE, warn_undefined

    metrics = {}
    for spec, pred in zip(outputs_spec, predictions):
        column = spec.get("column")
        if column not in labels:
            continue
        metric = AUC() if spec.get("kind") == "probability" else MSE()
        prefix = "auc" if spec.get("kind") == "probability" else "mse"
        label = torch.from_numpy(np.asarray(labels[column], dtype=np.float32).reshape(pred.shape))
        metric.update(torch.from_numpy(pred), label)
        name = f"{prefix}_{spec['task']}" if spec.get("task") else prefix
        metrics[name] = metric.compute()
        warn_undefined([name], [metric])  # nan: one class only, or no samples
    return metrics


def save_predictions(path: str | os.PathLike, outputs_spec: Sequence[dict[str, Any]],
                     predictions: Sequence[np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """Write predictions (and labels, when the data has them) as a tab-separated file with a header, atomically."""
    from recstack.fileio import atomic_open

    path = Path(path)
    columns = [(s["name"], p.reshape(len(p), -1)) for s, p in zip(outputs_spec, predictions)]
    columns += [(f"label:{c}", np.asarray(v).reshape(len(v), -1)) for c, v in labels.items()]
    names = [n if a.shape[1] == 1 else f"{n}[{j}]" for n, a in columns for j in range(a.shape[1])]
    table = np.concatenate([a.astype(np.float64) for _, a in columns], axis=1)
    with atomic_open(path) as f:
        f.write("\t".join(names) + "\n")
        np.savetxt(f, table, fmt="%.8g", delimiter="\t")
    return path


def build_report(model: ExportedModel, backend: Backend, settings: InferenceSettings, batch_size: int,
                 data_info: dict[str, str], result: BenchmarkResult, monitor: Any, model_name: str,
                 extra: Sequence[tuple[str, str]] = ()) -> str:
    """The autolog-style report of a run (see :mod:`recstack.autolog`)."""
    from recstack.autolog import environment, format_ms, format_report, timing_stats

    spec = model.spec
    inputs = "; ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in spec["inputs"])
    outputs = "; ".join(f"{s['name']} {s['dtype']} {s['shape']}: {s.get('meaning', '')}" for s in spec["outputs"])
    last = result.samples_per_pass - (result.batches_per_pass - 1) * batch_size
    passes = len(result.pass_seconds)
    total = sum(result.pass_seconds)
    perf = [
        ("preprocess_time(ms/batch)", format_ms(timing_stats(result.preprocess))),
        ("inference_time(ms/batch)", format_ms(timing_stats(result.inference))),
        ("postprocess_time(ms/batch)", format_ms(timing_stats(result.postprocess))),
        ("samples/s", f"{result.samples_per_second:.1f} (median over passes of samples / (preprocess + inference "
                      "+ postprocess))"),
        ("total time(s)", f"{total:.4f} ({passes} pass(es) of {result.samples_per_pass} samples)"),
    ]
    if passes > 1:
        perf.append(("inference p50 per pass(ms/batch)", ", ".join(f"{v:.4f}" for v in result.pass_inference_p50_ms)
                     + f" (median {float(np.median(result.pass_inference_p50_ms)):.4f})"))
    perf += monitor.lines()
    metrics = [(k, f"{v:.6f}") for k, v in result.metrics.items()] or [("metrics", "none (the data has no labels "
                                                                                   "for the outputs)")]
    sections = [
        ("Environment", environment(settings.gpu_id if settings.use_gpu else None)),
        ("Model info", [("model_name", model_name), ("type", f"exported ({backend.name})"),
                        ("export", f"{model.spec_file} (from {spec.get('config')}, "
                                   f"checkpoint {spec.get('checkpoint')})"),
                        ("inputs", inputs), ("outputs", outputs)]),
        ("Data info", [("batch_size", batch_size),
                       ("samples", f"{result.samples_per_pass} in {result.batches_per_pass} batch(es)"
                                   # (grouped data: batch_size counts groups, so the arithmetic does not apply)
                                   + (f", the last of {last}" if 0 < last < batch_size else "")),
                       ("data_dir", data_info["data_dir"]), ("reader", data_info["reader"]),
                       ("data loading(s)", f"{data_info['loading_seconds']} (reading and batching, before the "
                                           "timed passes)")]),
        ("Conf info", [("backend", backend.name),
                       ("runtime_device", f"gpu {settings.gpu_id}" if settings.use_gpu else "cpu"),
                       ("enable_mkldnn", settings.enable_mkldnn), ("enable_tensorrt", settings.enable_tensorrt),
                       ("precision", settings.precision), *backend.settings(),
                       ("warmup batches", result.warmup), ("timed passes", passes)]),
        ("Perf info", perf),
        ("Metrics", [*metrics, *extra]),
    ]
    return format_report(sections)

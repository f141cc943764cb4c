"""Deployed inference of exported models, offline: the data for the backends, and the pieces in one place.

``tools/infer_benchmark.py`` (PaddleRec's ``paddle_infer.py`` flags) and ``tools/rec_client.py`` (its
offline check of the server) run an export in four steps, one module each:

1. :class:`recstack.export_spec.ExportedModel` finds the export (``tostatic.onnx``, ``tostatic.pt``,
   ``tostatic.json``, written by :mod:`recstack.export`) and reads its files checked against the JSON;
2. :func:`load_batches` (here) reads the data with the model's own reader into batches of model inputs;
3. :func:`recstack.backends.create_backend` sets up ONNX Runtime, TorchScript or eager with
   :class:`recstack.backends.InferenceSettings`;
4. :func:`recstack.benchmark.run_benchmark` times it, :func:`recstack.benchmark.build_report` prints an
   autolog-style report (:mod:`recstack.autolog`).

Those names stay importable from here, where callers found them before the modules were split.
:func:`format_embeddings` / :func:`parse_embeddings` convert image embeddings to and from EasyRec's text form.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

# the names of steps 1, 3 and 4 are re-exported (module docstring)
from recstack.backends import (  # noqa: F401
    BACKENDS,
    PRECISIONS,
    Backend,
    Batch,
    EagerBackend,
    InferenceSettings,
    OnnxRuntimeBackend,
    TorchScriptBackend,
    UnavailableError,
    create_backend,
)
from recstack.benchmark import BenchmarkResult, build_report, compute_metrics, run_benchmark, save_predictions  # noqa: F401
from recstack.config import ConfigError
from recstack.export_spec import ExportedModel

logger = logging.getLogger(__name__)


def load_batches(model: ExportedModel, batch_size: int, data_dir: str | os.PathLike | None = None,
                 reader_file: str | os.PathLike | None = None, max_batches: int = 0,
                 trust_code: bool = True) -> tuple[list[Batch], dict[str, str]]:
    """Read the data into memory as batches of model inputs (so reading is not timed with inference).

    Args:
        model: the export (its JSON names the inputs' reader columns and the outputs' labels).
        batch_size: samples per batch.
        data_dir: data folder (default: the config's ``test_data_dir``).
        reader_file: a reader module file (PaddleRec's ``--reader_file models/rank/deepfm/criteo_reader.py``)
            or a YAML config whose reader is used; default: the export's config.
        max_batches: read at most this many batches (0: all).
        trust_code: import the reader module of the model folder that the export JSON names (default: this
            is the user's own export, as in training); ``False`` resolves it as the prediction service does,
            without running code from the folder (:func:`recstack.data.factory.resolve_reader`). A
            ``reader_file`` given explicitly is always imported.

    Returns:
        The batches and a description of the data for the report.
    """
    from recstack.data.base import list_data_files
    from recstack.data.factory import resolve_reader
    from recstack.data.loader import BatchLoader
    from recstack.modules import load_module

    if batch_size < 1:
        raise ConfigError(f"--batchsize must be positive, got {batch_size}")
    config = model.config(reader_file)
    folder = data_dir or config.get("runner.test_data_dir")
    if not folder:
        raise ConfigError("no data: give --data_dir (the config has no runner.test_data_dir)")
    files = list_data_files(folder, key="--data_dir" if data_dir else config.source("runner.test_data_dir"))
    if reader_file and Path(reader_file).suffix == ".py":
        path = Path(reader_file)
        if not path.is_file():
            raise FileNotFoundError(f"--reader_file '{path}' does not exist")
        reader_cls = getattr(load_module(path.parent, path.stem), "RecDataset", None)
        if reader_cls is None:
            raise ConfigError(f"--reader_file '{path}' defines no RecDataset")
        reader_name = str(path)
    else:
        reader_cls = resolve_reader(config, "runner.infer_reader_path", trust_code=trust_code)
        reader_name = config.get("runner.infer_reader_path")
    reader = reader_cls(files, config)
    # never bucketed by length: deployed predictions (--save_predictions, serving checks) keep the file's row order
    loader = BatchLoader(reader, batch_size, num_workers=config.get("runner.num_workers"))
    inputs_spec, outputs_spec = model.spec["inputs"], model.spec["outputs"]
    computed = [s["name"] for s in inputs_spec if not s.get("column")]
    feeds = None
    part = model.spec.get("export_part")
    if part is not None:
        # one of several parts cut from a checkpoint (recstack.export.export_parts; the wrapper's export_feeds)
        from recstack.checkpoint import load_checkpoint
        from recstack.wrapper import build_model

        wrapper, net = build_model(config, torch.device("cpu"))
        load_checkpoint(model.spec["checkpoint"], net)
        net.eval()
        feeds = lambda b: wrapper.export_feeds(net, b, part)[1]  # noqa: E731
        logger.info("inputs of the %s part come from the wrapper's export_feeds", part)
    elif computed:  # a wrapper computes some inputs in create_feeds: use it (create_model configures some wrappers)
        from recstack.wrapper import build_model

        wrapper, _ = build_model(config, torch.device("cpu"))
        feeds = lambda b: wrapper.create_feeds(b, config)[0]  # noqa: E731
        logger.info("inputs %s are computed by the wrapper's create_feeds", computed)
    label_columns = [s["column"] for s in outputs_spec if s.get("column")]
    batches: list[Batch] = []
    start = time.perf_counter()
    for batch in loader:
        if feeds is not None:
            inputs = dict(zip([s["name"] for s in inputs_spec], feeds(batch)))
        else:
            missing = [s["column"] for s in inputs_spec if s["column"] not in batch]
            if missing:
                raise ConfigError(f"the reader {reader_name} gives columns {sorted(batch)}, the model needs {missing}")
            inputs = {s["name"]: batch[s["column"]] for s in inputs_spec}
        labels = {c: batch[c] for c in label_columns if c in batch}
        batches.append(Batch(inputs, labels, len(next(iter(inputs.values())))))
        if max_batches and len(batches) >= max_batches:
            break
    if not batches:
        raise ConfigError(f"the data in {folder} produced no batches")
    info = {"data_dir": str(Path(folder).resolve()), "reader": reader_name, "files": str(len(files)),
            "loading_seconds": f"{time.perf_counter() - start:.3f}"}
    return batches, info


# ---------------------------------------------------------------------- embeddings as text
def format_embeddings(embeddings: np.ndarray | torch.Tensor) -> list[str]:
    """Rows of a ``(B, D)`` float array as EasyRec's ``img_emb`` strings: ``"%f"`` values (6 decimals)
    joined by commas (what EasyRec's image model outputs and its rec model's ``img_emb`` input reads)."""
    array = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"expected a (batch, dim) array of embeddings, got shape {array.shape}")
    return [",".join(f"{v:f}" for v in row) for row in array]


def parse_embeddings(texts: Sequence[str], dim: int) -> np.ndarray:
    """EasyRec's comma-separated ``img_emb`` strings as a float32 ``(B, dim)`` array.

    Raises:
        ValueError: a row with another number of values than ``dim``, or a value that is not a
            finite number (naming the row).
    """
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        parts = text.split(",")
        if len(parts) != dim:
            raise ValueError(f"img_emb row {i}: expected {dim} comma-separated values, got {len(parts)}")
        try:
            out[i] = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"img_emb row {i}: not a list of numbers: {text[:80]!r}") from None
        if not np.isfinite(out[i]).all():
            raise ValueError(f"img_emb row {i}: non-finite value in {text[:80]!r}")
    return out

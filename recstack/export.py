"""Export a trained model to TorchScript and ONNX, described by a JSON file and verified against eager.

``tools/to_static.py -m CONFIG [-o runner.model_init_path=... runner.model_save_path=...]`` calls
:func:`export_model`, which works for every model folder without per-model code:

1. build the model from the config and load the checkpoint ``runner.model_init_path`` (default:
   the newest ``<model_save_path>/<epoch>/``);
2. read a real batch with the model's infer reader (``test_data_dir``); the wrapper's
   ``create_feeds`` gives the model inputs and ``feed_names`` their names. Dtypes and shapes
   come from those tensors: axis 0 is the dynamic batch axis, inputs read from
   variable-length reader columns (DIN's histories) get a dynamic axis 1, and a wrapper can
   declare more in ``export_dynamic_axes``. Outputs are named per task from the wrapper
   (:meth:`recstack.wrapper.DygraphModel.describe_outputs`): ``prob_<task>`` for
   probabilities, ``value_<task>`` for regression outputs, ``prob`` for a single-task model;
3. trace the model with ``torch.jit.trace`` (``<prefix>.pt``) and export it with the
   TorchScript-based ONNX exporter (``<prefix>.onnx``, opset :data:`OPSET`, dynamic axes as
   above);
4. run eager, the saved TorchScript file and ONNX Runtime on the batch, on its first row alone
   and, for models with variable-length inputs, on a batch of other lengths: every output must
   agree with eager within :data:`TOLERANCE` (max abs difference), else :class:`ExportError`;
5. write ``<prefix>.json`` (inputs, outputs, their meaning, the embedding table size each id input
   indexes (``embedding_tables``, :func:`embedding_tables`), the vocabulary files the features map values
   through, copied to ``<prefix>.vocab/<feature>.txt`` (``vocabularies``, :func:`export_vocabulary_files`),
   the resolved config, the parity
   figures, and each file's size and SHA-256: the JSON is the export's manifest). Every file is written
   under a temporary name and renamed into place only after the checks pass, the JSON last, so a failed
   export leaves the previous one intact; an export killed between the renames can leave new files
   beside the old JSON, which every loader refuses (:func:`recstack.export_spec.verify_export_file`): a
   reader sees the old export, the new one, or a one-line error, never a mix. Temporaries of killed
   exports are removed by the next one (:mod:`recstack.fileio`).

The JSON's keys and the loading side (:class:`recstack.export_spec.ExportedModel`) are
:mod:`recstack.export_spec`'s. :func:`export_parts` writes several exports cut from one checkpoint
through the wrapper's hooks (:attr:`recstack.wrapper.DygraphModel.export_parts`; E2E_MM_DBMTL's image /
rec / total models, ``tools/export_mm_model.py``).

Why tracing and the TorchScript-based ONNX exporter (``dynamo=False``) rather than
``torch.jit.script`` or the ``torch.export``-based exporter: scripting rejects ordinary Python in
the models (``forward(*inputs)`` of the tabular models, typed-container code in the layers), and the
``torch.export`` exporter needs the extra ``onnxscript`` package and symbolic-shape hints for
data-dependent ops (DIN's ``nonzero`` over its history mask). A trace records what the model does
on a real batch, shapes included as dynamic ``size`` ops; the parity checks on batches of other
sizes and lengths catch a trace that baked a shape in. doc/inference.md has the details.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import recstack
from recstack.checkpoint import MODEL_FILE, clean_interrupted_saves, load_checkpoint
from recstack.config import Config

# (ExportFileError, load_spec, torchscript_apis, verify_export_file: importable from here as before the split)
from recstack.export_spec import (  # noqa: F401
    FORMAT_VERSION,
    PREFIX,
    ExportFileError,
    TensorSpec,
    file_sha256,
    load_spec,
    numpy_dtype,
    torchscript_apis,
    verify_export_file,
)
from recstack.fileio import atomic_path
from recstack.wrapper import DygraphModel, as_tasks, model_name

logger = logging.getLogger(__name__)

#: ONNX opset: run by onnxruntime >= 1.14 and TensorRT 8.6 / 10, and covers every op the models use.
OPSET = 17
#: Max abs difference allowed between eager and each exported model (fp32).
TOLERANCE = 1e-5
#: Batches scanned for one whose variable-length axes differ from the example batch.
SCAN_BATCHES = 64

# The exporter's caveat on advanced indexing with negative indices; the models index with
# nonzero() / arange() results, and the parity checks run the exported graph.
_INDEX_CAVEAT = "Exporting aten::index operator of advanced indexing"


class ExportError(RuntimeError):
    """An export failed its checks (parity, names, shapes); the message says what and where."""


# ---------------------------------------------------------------------- description
class ExportModule(nn.Module):
    """The model with its outputs as a tuple (one ``(B, ...)`` tensor per task), as exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(as_tasks(self.model(*inputs)))


def describe_inputs(wrapper: DygraphModel, config: Config, batch: dict[str, torch.Tensor],
                    reader_columns: dict[str, tuple[Any, int]] | None = None
                    ) -> tuple[list[TensorSpec], list[torch.Tensor]]:
    """The model inputs of ``batch`` and their specs (names, dtypes, shapes with dynamic axes).

    Args:
        wrapper: the model's wrapper (after ``create_model``: some set ``feed_names`` there).
        config: the run's config.
        batch: a real batch from the model's reader.
        reader_columns: the reader's ``columns`` (name → (dtype, width)); width 0 marks a
            variable-length column, whose axis 1 becomes dynamic.
    """
    inputs, _ = wrapper.create_feeds(batch, config)
    names = list(wrapper.feed_names)
    if len(names) != len(inputs):
        names = [f"input_{i}" for i in range(len(inputs))]
    reader_columns = reader_columns or {}
    specs = []
    for name, tensor in zip(names, inputs):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
            raise ExportError(f"model input '{name}' is {type(tensor).__name__} {getattr(tensor, 'shape', '')}; "
                              "exported inputs are tensors with a batch axis 0")
        column = name if name in batch and batch[name] is tensor else None
        shape: list[int | str] = ["batch", *tensor.shape[1:]]
        axes = dict(wrapper.export_dynamic_axes.get(name, {}))
        if column is not None and reader_columns.get(column, (None, 1))[1] == 0 and tensor.dim() > 1:
            axes.setdefault(1, f"{name}_length")  # (an axis 0 listed in export_dynamic_axes renames the batch axis)
        for axis, axis_name in axes.items():
            if not 0 <= axis < tensor.dim():
                raise ExportError(f"{type(wrapper).__module__}: export_dynamic_axes['{name}'] names axis {axis}, "
                                  f"but the input has shape {tuple(tensor.shape)}")
            shape[axis] = axis_name
        specs.append(TensorSpec(name, numpy_dtype(tensor), shape, column))
    return specs, list(inputs)


def describe_outputs(wrapper: DygraphModel, outputs: Sequence[torch.Tensor], batch_size: int,
                     input_names: Sequence[str] = ()) -> list[TensorSpec]:
    """Specs of the model's outputs: names ``prob_<task>`` / ``value_<task>`` (``prob`` for one
    unnamed output), dtypes, shapes (batch axis 0), the label column each predicts and its meaning.

    Raises:
        ExportError: an output without the batch axis, or names that clash.
    """
    described = wrapper.describe_outputs(len(outputs))
    labels = list(wrapper.label_names)
    specs = []
    for i, (tensor, (task, kind)) in enumerate(zip(outputs, described)):
        prefix = "prob" if kind == "probability" else "value"
        name = f"{prefix}_{task}" if task else (prefix if len(outputs) == 1 else f"{prefix}_{i}")
        if tensor.dim() == 0 or tensor.shape[0] != batch_size:
            raise ExportError(f"output {i} ({name}) has shape {tuple(tensor.shape)}; exported outputs need the "
                              f"batch axis 0 (batch size {batch_size})")
        what = f"task {task}" if task else "the model"
        meaning = (f"probability of {what} (sigmoid output, in [0, 1])" if kind == "probability"
                   else f"regression value of {what} (raw output)")
        specs.append(TensorSpec(name, numpy_dtype(tensor), ["batch", *tensor.shape[1:]],
                                column=labels[i] if i < len(labels) else None, task=task, kind=kind, meaning=meaning))
    names = [s.name for s in specs]
    clash = sorted({n for n in names if names.count(n) > 1 or n in input_names})
    if clash:
        raise ExportError(f"output names {clash} repeat or clash with an input name; set output_names on the "
                          f"wrapper {type(wrapper).__module__}")
    return specs


# ---------------------------------------------------------------------- checkpoint
def resolve_checkpoint(config: Config) -> Path:
    """``runner.model_init_path``, or else the last epoch of the latest training run in ``model_save_path``.

    The latest run is the one that wrote the newest checkpoint (``run_id`` in each ``meta.json``,
    :mod:`recstack.runs`); epoch folders of other runs beside it are named in a warning, never picked.
    Folders written before run ids existed count as one run: their last epoch. The log says which
    checkpoint, epoch and run is exported.

    Raises:
        FileNotFoundError: no checkpoint there (the message says where it looked).
    """
    from recstack.runs import describe_checkpoint, latest_checkpoint, moved_checkpoint_hint

    init = config.get("runner.model_init_path")
    if init:
        hint = moved_checkpoint_hint(init)
        if hint:  # archived by a later run in its folder (runner.previous_run)
            raise FileNotFoundError(f"no checkpoint at '{init}' (runner.model_init_path){hint}")
        logger.info("exporting %s (runner.model_init_path): %s", init, describe_checkpoint(init))
        return Path(init)
    root = Path(config.get("runner.model_save_path"))
    clean_interrupted_saves(root)  # (puts back a checkpoint that a killed save had moved aside)
    found = latest_checkpoint(root)
    if found is None:
        raise FileNotFoundError(f"no checkpoint to export: runner.model_init_path is not set and "
                                f"runner.model_save_path '{root}' holds no <epoch>/{MODEL_FILE}; train first or set "
                                "-o runner.model_init_path=<checkpoint folder>")
    folder, _ = found
    logger.info("exporting %s, the last epoch of the latest run in %s: %s", folder, root, describe_checkpoint(folder))
    return folder


# ---------------------------------------------------------------------- parity
def max_abs_diff(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Largest absolute difference over all outputs (``inf`` for a shape mismatch or a NaN)."""
    worst = 0.0
    for a, b in zip(reference, other):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            diff = np.abs(a - b)
            worst = max(worst, float("inf") if np.isnan(diff).any() else float(diff.max()))
    return worst


def scaled_diff(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """:func:`max_abs_diff` divided by ``max(1, largest |reference| value)``: absolute for outputs up to 1,
    relative above."""
    scale = max([1.0] + [float(np.abs(np.asarray(a, dtype=np.float64)).max()) for a in reference if np.size(a)])
    return max_abs_diff(reference, other) / scale


def _verification_batches(example: dict[str, torch.Tensor], rest: Iterator[dict[str, torch.Tensor]],
                          specs: Sequence[TensorSpec], wrapper: DygraphModel, config: Config
                          ) -> list[tuple[str, list[torch.Tensor]]]:
    """The example batch, its first row alone and (for variable-length inputs) a batch whose
    variable axes differ from the example's."""
    inputs = wrapper.create_feeds(example, config)[0]
    n = len(inputs[0])
    batches = [(f"batch of {n}", list(inputs))]
    if n > 1:
        batches.append(("first row alone", list(wrapper.create_feeds({k: v[:1] for k, v in example.items()},
                                                                     config)[0])))
    variable = [(i, axis) for i, s in enumerate(specs) for axis in s.dynamic_axes if axis > 0]
    if variable:
        for _, batch in zip(range(SCAN_BATCHES), rest):
            other = wrapper.create_feeds(batch, config)[0]
            if any(other[i].shape[axis] != inputs[i].shape[axis] for i, axis in variable):
                sizes = ", ".join(f"{specs[i].name}.shape[{axis}]={other[i].shape[axis]}" for i, axis in variable)
                batches.append((f"batch of {len(other[0])} with {sizes}", list(other)))
                break
        else:
            logger.warning("no batch among the first %d has other variable-axis sizes than the example batch; "
                           "variable lengths are checked on the example batch only", SCAN_BATCHES)
    return batches


def _report_trace_warnings(caught: Sequence[warnings.WarningMessage]) -> None:
    """Log the tracer's and exporter's caveats once each (the parity checks test what they warn about);
    re-emit any other warning."""
    notes = set()
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning) or _INDEX_CAVEAT in str(w.message):
            notes.add(str(w.message).split(". ")[0])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for note in sorted(notes):
        logger.info("trace note (the parity checks below cover it): %s", note)


def embedding_tables(module: nn.Module, inputs: Sequence[torch.Tensor],
                     names: Sequence[str]) -> dict[str, int | list[int]]:
    """Rows of the embedding table(s) each integer input indexes (ids must be in ``[0, rows)``).

    One eager forward pass records every ``embedding`` / ``embedding_bag`` call whose indices are the
    input or a view of it (same storage); an input looked up in several tables gets the smallest.
    Inputs transformed before the lookup (offsets added) are listed when a submodule declares them in
    an ``id_bounds`` dict (input name -> one bound per column, or one bound for every column of a
    variable-width input, as :class:`recstack.easyrec.feature_embedding.FeatureEmbedding` does). Servers
    check ids against these bounds (:mod:`recstack.serving`).
    """
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    probes = [t.clone() if isinstance(t, torch.Tensor) else t for t in inputs]
    storages = {t.untyped_storage().data_ptr(): name for name, t in zip(names, probes)
                if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.numel()}
    found: dict[str, int] = {}
    lookups = {F.embedding, torch.embedding, F.embedding_bag, torch.embedding_bag}

    class Lookups(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in lookups and len(args) >= 2:
                # F.embedding(input, weight); torch.embedding(weight, input); F.embedding_bag(input, weight)
                first, second = args[0], args[1]
                weight, ids = (first, second) if func is torch.embedding or func is torch.embedding_bag \
                    else (second, first)
                name = storages.get(ids.untyped_storage().data_ptr()) if isinstance(ids, torch.Tensor) else None
                if name is not None and isinstance(weight, torch.Tensor) and weight.dim() == 2:
                    found[name] = min(found.get(name, weight.shape[0]), int(weight.shape[0]))
            return func(*args, **kwargs)

    with torch.no_grad(), Lookups():
        module(*probes)
    declared: dict[str, list[int] | int] = {}
    for sub in module.modules():
        for name, bounds in (getattr(sub, "id_bounds", None) or {}).items():
            declared.setdefault(name, int(bounds) if isinstance(bounds, int) else [int(b) for b in bounds])
    return {n: found.get(n, declared.get(n)) for n in names if n in found or n in declared}


def _numpy(outputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    return [t.detach().cpu().numpy() for t in outputs]


# ---------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    torchscript: Path
    onnx: Path
    spec_file: Path
    spec: dict[str, Any]
    max_abs_diff: dict[str, float] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A model ready to export: its wrapper, the eval-mode network with the checkpoint loaded, and its data."""

    name: str
    checkpoint: Path
    wrapper: DygraphModel
    model: nn.Module
    reader: Any
    batches: Iterator[dict[str, torch.Tensor]]
    example: dict[str, torch.Tensor]


def load_for_export(config: Config, checkpoint: str | Path | None = None,
                    files: list[str] | None = None) -> LoadedModel:
    """Build the config's model, load the checkpoint (default :func:`resolve_checkpoint`), switch to eval
    and read the first batch of the infer reader (``test_data_dir``; ``train_data_dir`` without one; ``files``
    instead, when given: the online trainer's partition).

    Raises:
        ExportError: the data gives no batch.
        FileNotFoundError, CheckpointError, ConfigError, DataFormatError: bad checkpoint, config or data.
    """
    from recstack.config import log_config
    from recstack.prepare import prepare_run

    log_config(config)
    mode = "infer" if config.get("runner.test_data_dir") or files is not None else "train"
    # seed, threads, model, reader, checks, loader: as the trainer and evaluator do, on the CPU
    wrapper, model, _, reader, loader, _ = prepare_run(config, mode, device=torch.device("cpu"), files=files)
    if config.get("runner.use_gpu"):
        logger.info("runner.use_gpu is True; export runs on CPU "
                    "(the exported files run on either, see doc/inference.md)")
    name = model_name(config)
    checkpoint = Path(checkpoint) if checkpoint is not None else resolve_checkpoint(config)
    if mode == "train" and files is None:
        logger.warning("runner.test_data_dir is not set; the export is verified on a batch of train_data_dir")
    load_checkpoint(checkpoint, model)
    logger.info("loaded checkpoint %s", checkpoint)
    model.eval()
    batches = iter(loader)
    try:
        example = next(batches)
    except StopIteration:
        raise ExportError(f"{config.source('runner.test_data_dir' if mode == 'infer' else 'runner.train_data_dir')}: "
                          "the data produced no batch to export with") from None
    return LoadedModel(name, checkpoint, wrapper, model, reader, batches, example)


def export_model(config: Config, out_dir: str | Path | None = None, prefix: str = PREFIX,
                 checkpoint: str | Path | None = None, tolerance: float = TOLERANCE,
                 files: list[str] | None = None) -> ExportResult:
    """Export the config's model (TorchScript + ONNX + JSON), verified against eager on real batches.

    Args:
        config: the model's config (``runner.model_init_path``: the checkpoint; ``runner.model_save_path``:
            the output folder, PaddleRec's layout).
        out_dir: output folder (default ``runner.model_save_path``).
        prefix: file name prefix (``tostatic`` → ``tostatic.pt``, ``tostatic.onnx``, ``tostatic.json``).
        checkpoint: checkpoint folder (default :func:`resolve_checkpoint`).
        tolerance: max abs difference allowed between eager and each export.
        files: data files for the example and parity batches (default: the config's test or train data).

    Returns:
        The written files, the JSON content and the measured differences.

    Raises:
        ExportError: an export disagrees with eager beyond ``tolerance``, or inputs/outputs cannot be described.
        FileNotFoundError, CheckpointError, ConfigError, DataFormatError: bad checkpoint, config or data.
    """
    start = time.perf_counter()
    loaded = load_for_export(config, checkpoint, files)
    name, checkpoint, wrapper, model, reader, batches, example = (
        loaded.name, loaded.checkpoint, loaded.wrapper, loaded.model, loaded.reader, loaded.batches, loaded.example)
    out_dir = Path(out_dir if out_dir is not None else config.get("runner.model_save_path"))
    custom = wrapper.export_model(loaded, out_dir, prefix, export_head(config, name, checkpoint), tolerance)
    if custom is not None:  # the model exports itself otherwise (retrieval: two towers and the corpus's vectors)
        logger.info("exported %s in %.1f s", name, time.perf_counter() - start)
        return custom
    module = ExportModule(model).eval()

    inputs_spec, inputs = describe_inputs(wrapper, config, example, getattr(reader, "columns", None))
    input_names = [s.name for s in inputs_spec]
    with torch.no_grad():
        reference = module(*inputs)
    batch_size = len(inputs[0])
    outputs_spec = describe_outputs(wrapper, reference, batch_size, input_names)
    tables = embedding_tables(module, inputs, input_names)
    checks = _verification_batches(example, batches, inputs_spec, wrapper, config)

    vocab_files, vocabularies = export_vocabulary_files(reader, prefix)
    result = write_export(module, inputs, checks, inputs_spec, outputs_spec, out_dir, prefix,
                          export_head(config, name, checkpoint), {"embedding_tables": tables, **vocabularies},
                          tolerance, relative=wrapper.export_relative_tolerance, files=vocab_files)
    logger.info("exported %s in %.1f s", name, time.perf_counter() - start)
    return result


def export_vocabulary_files(reader: Any, prefix: str = PREFIX) -> tuple[dict[str, Path], dict[str, Any]]:
    """The vocabulary files the reader's feature config maps values through (``vocab_file``, fitted ``vocab``;
    :mod:`recstack.easyrec.vocab`), as ``write_export``'s ``files`` (``<prefix>.vocab/<feature>.txt`` -> the
    source file) and the JSON's ``vocabularies`` (feature -> its copy, config key, entries, OOV buckets): every
    loader of the export reads the copies (:meth:`recstack.export_spec.ExportedModel.config`)."""
    from recstack.easyrec.vocab import export_vocabularies

    entries = export_vocabularies(getattr(reader, "spec", None))
    if not entries:
        return {}, {}
    files = {f"{prefix}.vocab/{name}.txt": Path(entry.pop("source")) for name, entry in entries.items()}
    for entry, file in zip(entries.values(), files):
        entry["file"] = file
    return files, {"vocabularies": entries}


def write_export(module: nn.Module, inputs: Sequence[torch.Tensor], checks: Sequence[tuple[str, list[torch.Tensor]]],
                 inputs_spec: Sequence[TensorSpec], outputs_spec: Sequence[TensorSpec], out_dir: str | Path,
                 prefix: str, head: dict[str, Any], extra: dict[str, Any] | None = None,
                 tolerance: float = TOLERANCE, relative: bool = False,
                 files: dict[str, Path] | None = None) -> ExportResult:
    """Trace ``module`` on ``inputs`` (TorchScript) and export it to ONNX, check both against eager on each of
    ``checks`` (``(label, inputs)``), then write ``<prefix>.pt``, ``.onnx`` and ``.json`` atomically.

    Args:
        module: the eval-mode module returning a tuple of ``(B, ...)`` tensors.
        inputs: the example inputs of the trace.
        checks: the parity batches (label for messages, inputs).
        inputs_spec, outputs_spec: names, dtypes and shapes (dynamic axes) of the inputs and outputs.
        out_dir: output folder.
        prefix: file name prefix.
        head: JSON keys after ``format_version`` (``model_name`` required; ``config``, ``config_dir``,
            ``resolved_config``, ``checkpoint``: what :mod:`recstack.inference` reads).
        extra: JSON keys after ``outputs``.
        tolerance: max abs difference allowed between eager and each export.
        relative: compare :func:`scaled_diff` (the difference over ``max(1, max |eager|)``) with ``tolerance``
            instead of the absolute difference: for outputs far from 1 (image embeddings of 0-255 pixels),
            where float32 round-off alone exceeds an absolute 1e-5.
        files: more files of the export (its vocabularies), name relative to ``out_dir`` -> the file copied there;
            listed with their sizes and SHA-256 in the JSON and renamed into place before it.

    Raises:
        ExportError: an export disagrees with eager beyond ``tolerance`` (nothing is written).
    """
    import onnx
    import onnxruntime as ort

    extra = extra or {}
    name = head["model_name"]
    out_dir = Path(out_dir)
    input_names = [s.name for s in inputs_spec]
    output_names = [s.name for s in outputs_spec]
    dynamic_axes = {s.name: s.dynamic_axes for s in list(inputs_spec) + list(outputs_spec)}
    pt_path, onnx_path, json_path = (out_dir / f"{prefix}.{ext}" for ext in ("pt", "onnx", "json"))
    with atomic_path(json_path) as json_tmp, atomic_path(onnx_path) as onnx_tmp, atomic_path(pt_path) as pt_tmp, \
            contextlib.ExitStack() as more:
        # contexts exit in reverse order: the other files, the .pt, then the .onnx, then the .json is renamed into
        # place
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught, torchscript_apis():
            warnings.simplefilter("always", torch.jit.TracerWarning)
            traced = torch.jit.trace(module, tuple(inputs), check_trace=False)
            torch.jit.save(traced, str(pt_tmp))
            torch.onnx.export(module, tuple(inputs), str(onnx_tmp), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, opset_version=OPSET,
                              do_constant_folding=True, dynamo=False)
        _report_trace_warnings(caught)
        onnx.checker.check_model(str(onnx_tmp))
        with torchscript_apis():
            loaded = torch.jit.load(str(pt_tmp), map_location="cpu")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_tmp), options, providers=["CPUExecutionProvider"])
        onnx_inputs = [i.name for i in session.get_inputs()]
        if [o.name for o in session.get_outputs()] != output_names:
            raise ExportError(f"the ONNX model's outputs {[o.name for o in session.get_outputs()]} are not "
                              f"{output_names}")
        unused = [n for n in input_names if n not in onnx_inputs]
        if unused:
            logger.info("inputs %s do not reach the outputs; the ONNX model has no such inputs", unused)

        diffs = {"torchscript": 0.0, "onnxruntime": 0.0}
        checked = []
        with torch.no_grad():
            for label, batch_inputs in checks:
                eager = _numpy(module(*batch_inputs))
                results = {
                    "torchscript": _numpy(loaded(*batch_inputs)),
                    "onnxruntime": session.run(output_names, {n: t.numpy() for n, t in zip(input_names, batch_inputs)
                                                              if n in onnx_inputs}),
                }
                for backend, got in results.items():
                    diff = scaled_diff(eager, got) if relative else max_abs_diff(eager, got)
                    diffs[backend] = max(diffs[backend], diff)
                    if not diff <= tolerance:
                        raise ExportError(f"{name}: {backend} differs from eager by {diff:.3g} (> {tolerance:g}) on "
                                          f"the {label}; nothing was written to {out_dir}")
                checked.append({"batch": label, "input_shapes": {n: list(t.shape) for n, t in
                                                                zip(input_names, batch_inputs)}})
                logger.info("parity on the %s: max abs diff torchscript %.3g, onnxruntime %.3g (tolerance %g)",
                            label, max_abs_diff(eager, results["torchscript"]),
                            max_abs_diff(eager, results["onnxruntime"]), tolerance)
        del session, loaded

        copies = {}
        for file_name, source in (files or {}).items():
            copies[file_name] = more.enter_context(atomic_path(out_dir / file_name))
            shutil.copyfile(source, copies[file_name])
        spec = {
            "format_version": FORMAT_VERSION,
            **head,
            "files": {"torchscript": pt_path.name, "onnx": onnx_path.name},
            "sizes_bytes": {pt_path.name: pt_tmp.stat().st_size, onnx_path.name: onnx_tmp.stat().st_size,
                            **{n: t.stat().st_size for n, t in copies.items()}},
            # the manifest: loaders check each file against it (verify_export_file), so a reader sees this export
            # whole, or the previous one, or a clear refusal, never a mix (the JSON is renamed into place last)
            "sha256": {pt_path.name: file_sha256(pt_tmp), onnx_path.name: file_sha256(onnx_tmp),
                       **{n: file_sha256(t) for n, t in copies.items()}},
            "opset": OPSET,
            "inputs": [s.to_dict() for s in inputs_spec],
            "onnx_inputs": onnx_inputs,
            "outputs": [s.to_dict() for s in outputs_spec],
            **extra,
            "parity": {"tolerance": tolerance, "max_abs_diff": diffs, "checked": checked,
                       **({"relative": True} if relative else {})},
            "versions": _versions(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        json_tmp.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in spec["sizes_bytes"].items())
    logger.info("exported %s to %s (%s); inputs %s; outputs %s", name, out_dir, sizes,
                ", ".join(f"{s.name} {s.dtype} {s.shape}" for s in inputs_spec),
                ", ".join(f"{s.name} ({s.kind})" for s in outputs_spec))
    return ExportResult(pt_path, onnx_path, json_path, spec, diffs)


def export_parts(config: Config, out_dirs: dict[str, str | Path], checkpoint: str | Path | None = None,
                 tolerance: float = TOLERANCE, prefix: str = PREFIX) -> dict[str, ExportResult]:
    """Export several networks cut from one checkpoint (E2E_MM_DBMTL's image / rec / total models,
    ``tools/export_mm_model.py``), each as :func:`export_model` does (TorchScript + ONNX + JSON with
    ``export_part``: its name, eager / TorchScript / ONNX Runtime parity).

    The core loads the model and its data (:func:`load_for_export`) and checks the names asked for against the
    wrapper's :attr:`~recstack.wrapper.DygraphModel.export_parts`; the wrapper's
    :meth:`~recstack.wrapper.DygraphModel.export_part_models` cuts and writes the parts (with
    :func:`write_export`), so what the parts are lives with the model.

    Args:
        config: the model's config.
        out_dirs: output folder of each part to export, by name.
        checkpoint: checkpoint folder (default :func:`resolve_checkpoint`).
        tolerance: max abs difference allowed.
        prefix: file name prefix in each folder.

    Returns:
        The result of each part, by name.

    Raises:
        ExportError: a name the wrapper does not export, none asked for, or a check failed (nothing written).
    """
    loaded = load_for_export(config, checkpoint)
    kinds = tuple(loaded.wrapper.export_parts)
    unknown = [k for k in out_dirs if k not in kinds]
    if unknown or not out_dirs:
        raise ExportError(f"{loaded.name}: exportable parts are {list(kinds) or 'none'}, asked for {list(out_dirs)}")
    return loaded.wrapper.export_part_models(loaded, {k: Path(v) for k, v in out_dirs.items()},
                                             export_head(config, loaded.name, loaded.checkpoint), tolerance, prefix)


def export_head(config: Config, name: str, checkpoint: Path) -> dict[str, Any]:
    """The JSON keys after ``format_version`` that say what was exported: the model folder's name, the config
    (path, folder, resolved values) and the checkpoint (:mod:`recstack.inference` rebuilds the model from
    them)."""
    return {"model_name": name, "config": str(config.path) if config.path else None,
            "config_dir": str(config.config_dir), "resolved_config": config.to_dict(),
            "checkpoint": str(checkpoint.resolve())}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort

    return {"recstack": recstack.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__}

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
5. write ``<prefix>.json`` (inputs, outputs, their meaning, the resolved config, the parity
   figures). Every file is written under a temporary name and renamed into place only after
   the checks pass, the JSON last, so a failed or interrupted export leaves the previous one intact.

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
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

import recstack
from recstack.checkpoint import MODEL_FILE, load_checkpoint
from recstack.config import Config, ConfigError
from recstack.fileio import atomic_path
from recstack.wrapper import DygraphModel, as_tasks, model_name

logger = logging.getLogger(__name__)

#: ONNX opset: run by onnxruntime >= 1.14 and TensorRT 8.6 / 10, and covers every op the models use.
OPSET = 17
#: Max abs difference allowed between eager and each exported model (fp32).
TOLERANCE = 1e-5
#: File name prefix of the exported files (PaddleRec's ``tostatic.pdmodel``).
PREFIX = "tostatic"
#: Version of the JSON layout.
FORMAT_VERSION = 1
#: Batches scanned for one whose variable-length axes differ from the example batch.
SCAN_BATCHES = 64

# The deprecation warnings of the TorchScript APIs this module uses on purpose (see the module
# docstring); filtered only around those calls.
_DEPRECATIONS = (
    r"`torch\.jit\.(trace|trace_method|save|load|freeze)` is deprecated",
    r"You are using the legacy TorchScript-based ONNX export",
    r"The feature will be removed\. Please remove usage of this function",
)


# The exporter's caveat on advanced indexing with negative indices; the models index with
# nonzero() / arange() results, and the parity checks run the exported graph.
_INDEX_CAVEAT = "Exporting aten::index operator of advanced indexing"


class ExportError(RuntimeError):
    """An export failed its checks (parity, names, shapes); the message says what and where."""


@contextlib.contextmanager
def torchscript_apis() -> Iterator[None]:
    """Silence the deprecation warnings of ``torch.jit.trace/save/load/freeze`` and the legacy ONNX exporter."""
    with warnings.catch_warnings():
        for message in _DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        yield


# ---------------------------------------------------------------------- description
@dataclass
class TensorSpec:
    """One model input or output as the exported files see it.

    Attributes:
        name: the ONNX input/output name (and TorchScript argument position).
        dtype: numpy dtype name (``int64``, ``float32``).
        shape: sizes, with a string naming each dynamic axis (``["batch", 26]``).
        column: inputs: the reader column (batch key) it is read from, ``None`` when the
            wrapper's ``create_feeds`` computes it; outputs: the label column it predicts.
        task: outputs: the task name (``None`` for a single-task model).
        kind: outputs: ``probability`` or ``value``.
        meaning: outputs: one line for people.
    """

    name: str
    dtype: str
    shape: list[int | str]
    column: str | None = None
    task: str | None = None
    kind: str | None = None
    meaning: str | None = None

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: s for i, s in enumerate(self.shape) if isinstance(s, str)}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def numpy_dtype(tensor: torch.Tensor) -> str:
    """The numpy name of a tensor's dtype (``int64``, ``float32``)."""
    return str(torch.empty(0, dtype=tensor.dtype).numpy().dtype)


class ExportModule(nn.Module):
    """The model with its outputs as a tuple (one ``(B, ...)`` tensor per task), as exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(as_tasks(self.model(*inputs)))


def describe_inputs(wrapper: DygraphModel, config: Config, batch: dict[str, torch.Tensor],
                    reader_columns: dict[str, tuple[Any, int]] | None = None) -> tuple[list[TensorSpec], list[torch.Tensor]]:
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
            axes.setdefault(1, f"{name}_length")
        for axis, axis_name in axes.items():
            if not 0 < axis < tensor.dim():
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
    """``runner.model_init_path``, or else the newest ``<model_save_path>/<epoch>/``.

    Raises:
        FileNotFoundError: no checkpoint there (the message says where it looked).
    """
    init = config.get("runner.model_init_path")
    if init:
        return Path(init)
    root = Path(config.get("runner.model_save_path"))
    epochs = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / MODEL_FILE).is_file())) \
        if root.is_dir() else []
    if not epochs:
        raise FileNotFoundError(f"no checkpoint to export: runner.model_init_path is not set and "
                                f"runner.model_save_path '{root}' holds no <epoch>/{MODEL_FILE}; train first or set "
                                "-o runner.model_init_path=<checkpoint folder>")
    return root / str(epochs[-1])


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


def export_model(config: Config, out_dir: str | Path | None = None, prefix: str = PREFIX,
                 checkpoint: str | Path | None = None, tolerance: float = TOLERANCE) -> ExportResult:
    """Export the config's model (TorchScript + ONNX + JSON), verified against eager on real batches.

    Args:
        config: the model's config (``runner.model_init_path``: the checkpoint; ``runner.model_save_path``:
            the output folder, PaddleRec's layout).
        out_dir: output folder (default ``runner.model_save_path``).
        prefix: file name prefix (``tostatic`` → ``tostatic.pt``, ``tostatic.onnx``, ``tostatic.json``).
        checkpoint: checkpoint folder (default :func:`resolve_checkpoint`).
        tolerance: max abs difference allowed between eager and each export.

    Returns:
        The written files, the JSON content and the measured differences.

    Raises:
        ExportError: an export disagrees with eager beyond ``tolerance``, or inputs/outputs cannot be described.
        FileNotFoundError, CheckpointError, ConfigError, DataFormatError: bad checkpoint, config or data.
    """
    import onnx
    import onnxruntime as ort

    from recstack.config import check_hyper_parameters, log_config
    from recstack.data import create_loader, create_reader
    from recstack.trainer import build_model
    from recstack.utils import seed_everything, set_cpu_threads, thread_settings

    start = time.perf_counter()
    log_config(config)
    seed_everything(config.get("runner.seed"))
    set_cpu_threads(config.get("runner.cpu_threads"))
    logger.info("threads: %s", thread_settings())
    if config.get("runner.use_gpu"):
        logger.info("runner.use_gpu is True; export runs on CPU (the exported files run on either, see doc/inference.md)")
    name = model_name(config)
    checkpoint = Path(checkpoint) if checkpoint is not None else resolve_checkpoint(config)
    out_dir = Path(out_dir if out_dir is not None else config.get("runner.model_save_path"))
    wrapper, model = build_model(config, torch.device("cpu"))
    mode = "infer" if config.get("runner.test_data_dir") else "train"
    if mode == "train":
        logger.warning("runner.test_data_dir is not set; the export is verified on a batch of train_data_dir")
    reader = create_reader(config, mode)
    check_hyper_parameters(config, name)
    load_checkpoint(checkpoint, model)
    logger.info("loaded checkpoint %s", checkpoint)
    model.eval()
    module = ExportModule(model).eval()

    batches = iter(create_loader(config, mode, reader))
    try:
        example = next(batches)
    except StopIteration:
        raise ExportError(f"{config.source('runner.test_data_dir' if mode == 'infer' else 'runner.train_data_dir')}: "
                          "the data produced no batch to export with") from None
    inputs_spec, inputs = describe_inputs(wrapper, config, example, getattr(reader, "columns", None))
    input_names = [s.name for s in inputs_spec]
    with torch.no_grad():
        reference = module(*inputs)
    batch_size = len(inputs[0])
    outputs_spec = describe_outputs(wrapper, reference, batch_size, input_names)
    output_names = [s.name for s in outputs_spec]
    dynamic_axes = {s.name: s.dynamic_axes for s in inputs_spec + outputs_spec}
    checks = _verification_batches(example, batches, inputs_spec, wrapper, config)

    pt_path, onnx_path, json_path = (out_dir / f"{prefix}.{ext}" for ext in ("pt", "onnx", "json"))
    with atomic_path(json_path) as json_tmp, atomic_path(onnx_path) as onnx_tmp, atomic_path(pt_path) as pt_tmp:
        # contexts exit in reverse order: the .pt, then the .onnx, then the .json is renamed into place
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
                    diff = max_abs_diff(eager, got)
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

        spec = {
            "format_version": FORMAT_VERSION,
            "model_name": name,
            "config": str(config.path) if config.path else None,
            "config_dir": str(config.config_dir),
            "resolved_config": config.to_dict(),
            "checkpoint": str(checkpoint.resolve()),
            "files": {"torchscript": pt_path.name, "onnx": onnx_path.name},
            "sizes_bytes": {pt_path.name: pt_tmp.stat().st_size, onnx_path.name: onnx_tmp.stat().st_size},
            "opset": OPSET,
            "inputs": [s.to_dict() for s in inputs_spec],
            "onnx_inputs": onnx_inputs,
            "outputs": [s.to_dict() for s in outputs_spec],
            "parity": {"tolerance": tolerance, "max_abs_diff": diffs, "checked": checked},
            "versions": _versions(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        json_tmp.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in spec["sizes_bytes"].items())
    logger.info("exported %s to %s (%s) in %.1f s; inputs %s; outputs %s", name, out_dir, sizes,
                time.perf_counter() - start, ", ".join(f"{s.name} {s.dtype} {s.shape}" for s in inputs_spec),
                ", ".join(f"{s.name} ({s.kind})" for s in outputs_spec))
    return ExportResult(pt_path, onnx_path, json_path, spec, diffs)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort

    return {"recstack": recstack.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__}


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read an export's JSON description.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not an export description of a known format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no export description '{path}' (tools/to_static.py writes <prefix>.json beside "
                                "the .onnx and .pt files)")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(spec, dict) or spec.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: not a recstack export description (format_version {FORMAT_VERSION})")
    return spec

"""Inference engines for an export: ONNX Runtime, TorchScript and eager, and their settings.

:func:`create_backend` turns an export (:class:`recstack.export_spec.ExportedModel`) and
:class:`InferenceSettings` (PaddleRec's ``paddle_infer.py`` flags: device, threads, oneDNN, TensorRT,
precision) into a :class:`Backend` that predicts a :class:`Batch`: ``prepare`` (inputs to the engine's
tensors) → ``run`` → ``fetch`` (outputs as float32 numpy). ``tools/infer_benchmark.py``
(:mod:`recstack.benchmark`) times them, :mod:`recstack.serving` serves them.

What each setting means (an unavailable setting raises :class:`UnavailableError`
with the reason; nothing falls back silently):

=============== ==================================================================================
onnxruntime     ``CPUExecutionProvider`` (``cpu_threads`` intra-op threads, one inter-op thread);
                ``use_gpu``: ``CUDAExecutionProvider``; ``enable_tensorrt``: ``TensorrtExecutionProvider``
                (CUDA then CPU for the nodes TensorRT does not take; ``precision fp16``: TensorRT's fp16
                mode); ``enable_mkldnn``: ``DnnlExecutionProvider`` (oneDNN) when this onnxruntime build
                has it; ``precision int8``: onnxruntime's dynamic quantization (int8 weights, activations
                quantized per batch), CPU only.
torchscript     the traced ``.pt`` file, frozen; ``cpu_threads`` torch threads; ``use_gpu``: CUDA;
                ``enable_mkldnn``: torch's oneDNN fusion (``torch.jit.enable_onednn_fusion``);
                ``precision fp16``: half precision on a GPU.
eager           the model rebuilt from the export's config and checkpoint (for comparisons).
=============== ==================================================================================
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recstack.export_spec import ExportedModel, ExportFileError, load_torchscript, torchscript_apis

logger = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torchscript", "eager")
PRECISIONS = ("fp32", "fp16", "int8")


class UnavailableError(RuntimeError):
    """An asked-for inference setting cannot run with this installation or hardware."""


@dataclass
class InferenceSettings:
    """Runtime settings of an inference run (PaddleRec's ``paddle_infer.py`` flags)."""

    backend: str = "onnxruntime"
    use_gpu: bool = False
    gpu_id: int = 0
    cpu_threads: int = 1
    enable_mkldnn: bool = False
    enable_tensorrt: bool = False
    precision: str = "fp32"

    def check(self) -> None:
        """Reject combinations that have no meaning (each message says what to change).

        Raises:
            UnavailableError: the combination cannot run.
        """
        if self.backend not in BACKENDS:
            raise UnavailableError(f"unknown backend '{self.backend}' (choose {', '.join(BACKENDS)})")
        if self.precision not in PRECISIONS:
            raise UnavailableError(f"unknown precision '{self.precision}' (choose {', '.join(PRECISIONS)})")
        if self.cpu_threads < 1:
            raise UnavailableError(f"--cpu_threads must be at least 1, got {self.cpu_threads}")
        if self.enable_tensorrt and not self.use_gpu:
            raise UnavailableError("--enable_tensorRT True needs --use_gpu True (TensorRT runs on NVIDIA GPUs)")
        if self.enable_mkldnn and self.use_gpu:
            raise UnavailableError("--enable_mkldnn True is a CPU setting; use it with --use_gpu False")
        if self.precision == "int8" and self.backend != "onnxruntime":
            raise UnavailableError("--precision int8 is onnxruntime's dynamic quantization; use --backend onnxruntime")
        if self.precision == "int8" and self.use_gpu:
            raise UnavailableError("--precision int8 (onnxruntime dynamic quantization) runs on CPU only; use "
                                   "--use_gpu False, or fp16 with --enable_tensorRT True on a GPU")
        if self.precision == "fp16" and not self.use_gpu:
            raise UnavailableError("--precision fp16 needs a GPU (--use_gpu True, and --enable_tensorRT True with "
                                   "onnxruntime); CPUs run this model in fp32 or int8")
        if self.precision == "fp16" and self.backend == "onnxruntime" and not self.enable_tensorrt:
            raise UnavailableError("--precision fp16 with onnxruntime is TensorRT's fp16 mode; add "
                                   "--enable_tensorRT True (the CUDA provider runs the fp32 model as fp32)")
        if self.enable_tensorrt and self.backend != "onnxruntime":
            raise UnavailableError("--enable_tensorRT True is onnxruntime's TensorRT provider; "
                                   "use --backend onnxruntime")
        if self.backend == "eager" and (self.enable_mkldnn or self.precision != "fp32"):
            raise UnavailableError("the eager backend runs fp32 without oneDNN fusion; it is the reference for "
                                   "comparisons (use --backend onnxruntime or torchscript for other settings)")


@dataclass
class Batch:
    """One batch as the backends take it: model inputs by input name, labels by column."""

    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    size: int


class Backend:
    """An inference engine: ``prepare`` (preprocess) → ``run`` (inference) → ``fetch`` (postprocess)."""

    name = ""

    def prepare(self, batch: Batch) -> Any:
        raise NotImplementedError

    def run(self, feeds: Any) -> Any:
        raise NotImplementedError

    def fetch(self, raw: Any) -> list[np.ndarray]:
        raise NotImplementedError

    def settings(self) -> list[tuple[str, str]]:
        """Report lines: the settings this backend really runs with."""
        return []

    def predict(self, batch: Batch) -> list[np.ndarray]:
        return self.fetch(self.run(self.prepare(batch)))


def _ort_threads(settings: InferenceSettings):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.cpu_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spinning = os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
    if not spinning:  # the same trap as OpenMP's: spinning threads collapse on a busy small machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options, spinning


class _QuantizerChatter(logging.Filter):
    """Drops what onnxruntime's quantizer logs on the root logger below WARNING (one line per tensor),
    and its advice to run ``quant_pre_process`` first, whose symbolic shape inference does not
    complete on these models (measured on DeepFM)."""

    advice = "Please consider to run pre-processing before quantization"

    def filter(self, record: logging.LogRecord) -> bool:
        inside = f"onnxruntime{os.sep}quantization" in record.pathname
        return not (inside and (record.levelno < logging.WARNING or str(record.msg).startswith(self.advice)))


def quantize_int8(onnx_path: Path) -> Path:
    """onnxruntime's dynamic quantization of an ONNX model (int8 weights of MatMul/Gemm/Gather,
    activations quantized per batch), written once beside it as ``<stem>.int8.onnx`` (atomically)
    and reused while it is newer than the source."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from recstack.fileio import atomic_path

    target = onnx_path.with_name(f"{onnx_path.stem}.int8.onnx")
    if target.is_file() and target.stat().st_mtime >= onnx_path.stat().st_mtime:
        return target
    start = time.perf_counter()
    advice = _QuantizerChatter()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with atomic_path(target) as tmp:
            quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(advice)
    logger.info("int8: quantized %s -> %s (%.1f MB -> %.1f MB) in %.1f s", onnx_path.name, target.name,
                onnx_path.stat().st_size / 1e6, target.stat().st_size / 1e6, time.perf_counter() - start)
    return target


def load_onnx(data: bytes | str, path: Path, options: Any, providers: list) -> Any:
    """An ONNX Runtime session of a model's bytes (or file name); a damaged model is a one-line
    :class:`recstack.export_spec.ExportFileError` naming ``path``."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(data, options, providers=providers)
    except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, InvalidGraph, Fail)
        text = str(err)
        if "Protobuf parsing failed" not in text and "INVALID_PROTOBUF" not in text and "INVALID_GRAPH" not in text:
            raise
        raise ExportFileError(f"{path}: not a loadable ONNX model ({path.stat().st_size} bytes; "
                              f"{text.splitlines()[0][:120]}): re-run tools/to_static.py") from None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with the execution providers the settings ask for (module docstring)."""

    name = "onnxruntime"

    def __init__(self, model: ExportedModel, settings: InferenceSettings) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        device = {"device_id": str(settings.gpu_id)}
        if settings.enable_tensorrt:
            self._require("TensorrtExecutionProvider", available, "--enable_tensorRT True",
                          "install onnxruntime-gpu==" + ort.__version__ + " and TensorRT (see doc/inference.md)")
            self._require("CUDAExecutionProvider", available, "--enable_tensorRT True",
                          "install onnxruntime-gpu==" + ort.__version__)
            trt = {**device, "trt_fp16_enable": "True" if settings.precision == "fp16" else "False",
                   "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(model.directory / "trt_cache")}
            providers: list = [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", device),
                               "CPUExecutionProvider"]
        elif settings.use_gpu:
            self._require("CUDAExecutionProvider", available, "--use_gpu True",
                          "on a CUDA machine install onnxruntime-gpu==" + ort.__version__ + " in place of onnxruntime")
            providers = [("CUDAExecutionProvider", device), "CPUExecutionProvider"]
        elif settings.enable_mkldnn:
            self._require("DnnlExecutionProvider", available, "--enable_mkldnn True",
                          "it needs an onnxruntime built with --use_dnnl; the default CPU provider (MLAS kernels) "
                          "runs without it: --enable_mkldnn False")
            providers = ["DnnlExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.primary = providers[0] if isinstance(providers[0], str) else providers[0][0]
        # the bytes checked against the JSON are the ones loaded: never a file of another export, even one
        # renamed into place meanwhile (TensorRT loads the path: its engine cache is keyed by the model path)
        data = model.read("onnx")
        path = model.onnx
        if settings.precision == "int8":
            path = quantize_int8(model.onnx)
            data = path.read_bytes()
        options, self.spinning = _ort_threads(settings)
        self.session = load_onnx(str(path) if settings.enable_tensorrt else data, path, options, providers)
        self.active = self.session.get_providers()
        if self.primary not in self.active:  # onnxruntime drops a provider that fails to start, with a log line only
            raise UnavailableError(f"onnxruntime could not start {self.primary} (active providers: "
                                   f"{', '.join(self.active)}); check the CUDA/cuDNN/TensorRT libraries and the GPU")
        self.path, self.settings_ = path, settings
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.dtypes = {s["name"]: np.dtype(s["dtype"]) for s in model.spec["inputs"]}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _require(provider: str, available: Sequence[str], flag: str, hint: str) -> None:
        if provider not in available:
            import onnxruntime as ort

            raise UnavailableError(f"{flag}: this onnxruntime {ort.__version__} has no {provider} (its providers: "
                                   f"{', '.join(available)}); {hint}")

    def prepare(self, batch: Batch) -> dict[str, np.ndarray]:
        return {n: np.ascontiguousarray(batch.inputs[n].numpy(), dtype=self.dtypes[n]) for n in self.input_names}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)

    def fetch(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(r, dtype=np.float32) for r in raw]

    def settings(self) -> list[tuple[str, str]]:
        s = self.settings_
        return [("model_file", f"{self.path} ({self.path.stat().st_size / 1e6:.1f} MB)"),
                ("execution providers", f"requested {self.primary}; active {', '.join(self.active)}"),
                ("cpu_threads", f"{s.cpu_threads} intra-op, 1 inter-op, sequential execution, spinning "
                                f"{'on' if self.spinning else 'off (OMP_WAIT_POLICY=PASSIVE)'}"),
                ("graph optimization", "ORT_ENABLE_ALL")]


class _TorchBackend(Backend):
    """Shared by the TorchScript and eager backends: tensors on the device, torch threads."""

    def __init__(self, model: ExportedModel, settings: InferenceSettings) -> None:
        torch.set_num_threads(settings.cpu_threads)
        self.settings_ = settings
        if settings.use_gpu:
            if not torch.cuda.is_available():
                raise UnavailableError(
                    f"--use_gpu True: torch {torch.__version__} sees no CUDA device ("
                    f"{'no CUDA in this build' if torch.version.cuda is None else 'check the driver'})")
            self.device = torch.device("cuda", settings.gpu_id)
        else:
            self.device = torch.device("cpu")
        self.half = settings.precision == "fp16"
        self.names = [s["name"] for s in model.spec["inputs"]]
        self.dtypes = {s["name"]: getattr(torch, s["dtype"]) for s in model.spec["inputs"]}
        if self.half:
            self.dtypes = {n: torch.float16 if d.is_floating_point else d for n, d in self.dtypes.items()}

    def prepare(self, batch: Batch) -> list[torch.Tensor]:
        return [batch.inputs[n].to(self.device, self.dtypes[n], non_blocking=True) for n in self.names]

    def fetch(self, raw: Any) -> list[np.ndarray]:
        from recstack.wrapper import as_tasks

        return [t.float().cpu().numpy() for t in as_tasks(raw)]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def settings(self) -> list[tuple[str, str]]:
        from recstack.utils import thread_settings

        return [("cpu_threads", thread_settings()), ("device", str(self.device))]


class TorchScriptBackend(_TorchBackend):
    """The traced TorchScript file, frozen for inference."""

    name = "torchscript"

    def __init__(self, model: ExportedModel, settings: InferenceSettings) -> None:
        super().__init__(model, settings)
        if settings.enable_mkldnn:
            if not torch.backends.mkldnn.is_available():
                raise UnavailableError(f"--enable_mkldnn True: torch {torch.__version__} was built without oneDNN")
            torch.jit.enable_onednn_fusion(True)
        module = load_torchscript(model.read("torchscript"), model.torchscript, self.device).eval()
        with torchscript_apis():
            if self.half:
                module = module.half()
            self.module = torch.jit.freeze(module)
        self.path = model.torchscript

    def run(self, feeds: list[torch.Tensor]) -> Any:
        with torch.no_grad():
            out = self.module(*feeds)
        self._sync()
        return out

    def settings(self) -> list[tuple[str, str]]:
        return [("model_file", f"{self.path} ({self.path.stat().st_size / 1e6:.1f} MB), frozen"),
                ("oneDNN fusion", str(self.settings_.enable_mkldnn)), *super().settings()]


class EagerBackend(_TorchBackend):
    """The model rebuilt from the export's config and checkpoint, run as in training code."""

    name = "eager"

    def __init__(self, model: ExportedModel, settings: InferenceSettings) -> None:
        super().__init__(model, settings)
        from recstack.checkpoint import load_checkpoint
        from recstack.wrapper import build_model

        config = model.config()
        _, self.model = build_model(config, self.device)
        load_checkpoint(model.spec["checkpoint"], self.model, map_location=self.device)
        self.model.eval()
        self.checkpoint = model.spec["checkpoint"]

    def run(self, feeds: list[torch.Tensor]) -> Any:
        with torch.no_grad():
            out = self.model(*feeds)
        self._sync()
        return out

    def settings(self) -> list[tuple[str, str]]:
        return [("model", f"eager, checkpoint {self.checkpoint}"), *super().settings()]


def create_backend(model: ExportedModel, settings: InferenceSettings) -> Backend:
    """The backend the settings name, set up as asked.

    Raises:
        UnavailableError: a setting cannot run here (the message says why and what to change).
    """
    settings.check()
    cls = {"onnxruntime": OnnxRuntimeBackend, "torchscript": TorchScriptBackend,
           "eager": EagerBackend}[settings.backend]
    return cls(model, settings)

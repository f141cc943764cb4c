"""Deployed inference of exported models: ONNX Runtime, TorchScript and eager backends, and the benchmark.

``tools/infer_benchmark.py`` (PaddleRec's ``paddle_infer.py`` flags) reads an export
(:mod:`recstack.export`: ``tostatic.onnx``, ``tostatic.pt``, ``tostatic.json``), reads the data
with the model's own reader, runs one of the backends and prints an autolog-style report
(:mod:`recstack.autolog`).

Backends and what each setting means (an unavailable setting raises :class:`UnavailableError`
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from recstack.config import Config, ConfigError, from_dict, load_config
from recstack.export import PREFIX, ExportFileError, load_spec, load_torchscript, torchscript_apis, verify_export_file

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
            raise UnavailableError("--enable_tensorRT True is onnxruntime's TensorRT provider; use --backend onnxruntime")
        if self.backend == "eager" and (self.enable_mkldnn or self.precision != "fp32"):
            raise UnavailableError("the eager backend runs fp32 without oneDNN fusion; it is the reference for "
                                   "comparisons (use --backend onnxruntime or torchscript for other settings)")


# ---------------------------------------------------------------------- exported model
@dataclass
class ExportedModel:
    """An export on disk: its JSON description and file paths."""

    spec: dict[str, Any]
    directory: Path
    onnx: Path
    torchscript: Path
    spec_file: Path

    @classmethod
    def locate(cls, model_dir: str | os.PathLike | None = None, model_file: str | os.PathLike | None = None,
               prefix: str = PREFIX) -> "ExportedModel":
        """Find an export from ``--model_dir`` (holding ``<prefix>.json``) or ``--model_file``
        (the ``.onnx`` or ``.pt`` file; the JSON beside it with the same stem).

        Raises:
            FileNotFoundError: neither given, or no export there.
        """
        if model_file:
            path = Path(model_file)
            if not path.is_file():
                raise FileNotFoundError(f"--model_file '{path}' does not exist")
            spec_file = path.with_suffix(".json")
        elif model_dir:
            folder = Path(model_dir)
            if not folder.is_dir():
                raise FileNotFoundError(f"--model_dir '{folder}' does not exist")
            spec_file = folder / f"{prefix}.json"
            if not spec_file.is_file():
                found = sorted(p.name for p in folder.glob("*.json"))
                raise FileNotFoundError(f"--model_dir '{folder}' holds no {spec_file.name} (tools/to_static.py writes "
                                        f"it){'; JSON files there: ' + ', '.join(found) if found else ''}")
        else:
            raise FileNotFoundError("give --model_dir (the folder tools/to_static.py wrote) or --model_file")
        spec = load_spec(spec_file)
        folder = spec_file.parent
        return cls(spec, folder, folder / spec["files"]["onnx"], folder / spec["files"]["torchscript"], spec_file)

    def read(self, kind: str) -> bytes:
        """The content of the ``onnx`` or ``torchscript`` file, checked against the JSON (its manifest).

        Raises:
            FileNotFoundError: the file is missing.
            recstack.export.ExportFileError: it does not match the JSON (an interrupted or mixed export).
        """
        return verify_export_file(self.spec_file, self.spec, kind)

    @property
    def model_name(self) -> str:
        return self.spec["model_name"]

    def config(self, reader_file: str | os.PathLike | None = None) -> Config:
        """The config the model was exported with (or ``reader_file`` when it is a YAML config)."""
        if reader_file and Path(reader_file).suffix in (".yaml", ".yml"):
            return load_config(reader_file)
        return from_dict(self.spec["resolved_config"], self.spec["config_dir"])


# ---------------------------------------------------------------------- data
@dataclass
class Batch:
    """One batch as the backends take it: model inputs by input name, labels by column."""

    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    size: int


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
    if part is not None:  # one of several parts cut from a checkpoint (recstack.export.export_parts)
        from recstack.checkpoint import load_checkpoint
        from recstack.trainer import build_model

        wrapper, net = build_model(config, torch.device("cpu"))
        load_checkpoint(model.spec["checkpoint"], net)
        net.eval()
        feeds = lambda b: wrapper.export_feeds(net, b, part)[1]  # noqa: E731
        logger.info("inputs of the %s part come from the wrapper's export_feeds", part)
    elif computed:  # a wrapper computes some inputs in create_feeds: use it (create_model configures some wrappers)
        from recstack.trainer import build_model

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


# ---------------------------------------------------------------------- backends
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
    :class:`recstack.export.ExportFileError` naming ``path``."""
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
                raise UnavailableError(f"--use_gpu True: torch {torch.__version__} sees no CUDA device ("
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
        from recstack.trainer import build_model

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
    cls = {"onnxruntime": OnnxRuntimeBackend, "torchscript": TorchScriptBackend, "eager": EagerBackend}[settings.backend]
    return cls(model, settings)


# ---------------------------------------------------------------------- benchmark
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
                        ("export", f"{model.spec_file} (from {spec.get('config')}, checkpoint {spec.get('checkpoint')})"),
                        ("inputs", inputs), ("outputs", outputs)]),
        ("Data info", [("batch_size", batch_size),
                       ("samples", f"{result.samples_per_pass} in {result.batches_per_pass} batch(es)"
                                   # (grouped data: batch_size counts groups, so the arithmetic does not apply)
                                   + (f", the last of {last}" if 0 < last < batch_size else "")),
                       ("data_dir", data_info["data_dir"]), ("reader", data_info["reader"]),
                       ("data loading(s)", f"{data_info['loading_seconds']} (reading and batching, before the "
                                           "timed passes)")]),
        ("Conf info", [("backend", backend.name), ("runtime_device", f"gpu {settings.gpu_id}" if settings.use_gpu else "cpu"),
                       ("enable_mkldnn", settings.enable_mkldnn), ("enable_tensorrt", settings.enable_tensorrt),
                       ("precision", settings.precision), *backend.settings(),
                       ("warmup batches", result.warmup), ("timed passes", passes)]),
        ("Perf info", perf),
        ("Metrics", [*metrics, *extra]),
    ]
    return format_report(sections)


# ---------------------------------------------------------------------- embeddings as text
def format_embeddings(embeddings: np.ndarray | torch.Tensor) -> list[str]:
    """Rows of a ``(B, D)`` float array as EasyRec's ``img_emb`` strings: ``"%f"`` values (6 decimals)
    joined by commas (what EasyRec's image model outputs and its rec model's ``img_emb`` input reads)."""
    array = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"expected a (batch, dim) array of embeddings, got shape {array.shape}")
    return [",".join("%f" % v for v in row) for row in array]


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

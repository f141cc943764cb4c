"""An autolog-style report of an inference run (PaddleRec's / PaddleOCR's ``auto_log``).

Sections, in the order :func:`format_report` prints them: environment (OS, Python, CPU, torch,
onnxruntime, CUDA / cuDNN / driver when present), runtime settings, model, data, performance
(preprocess / inference / postprocess ms per batch: mean, p50, p99; samples/s; total time; peak CPU
RSS; GPU memory and utilisation) and metrics. CPU memory comes from psutil, GPU memory and
utilisation from nvidia-ml-py (NVML) when a GPU is in use.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RULE = "-" * 23


def timing_stats(seconds: Sequence[float]) -> dict[str, float]:
    """``mean``, ``p50`` and ``p99`` of per-batch times, in milliseconds."""
    if not len(seconds):
        return {"mean": float("nan"), "p50": float("nan"), "p99": float("nan")}
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def format_ms(stats: dict[str, float]) -> str:
    return f"mean {stats['mean']:.4f}, p50 {stats['p50']:.4f}, p99 {stats['p99']:.4f}"


# ---------------------------------------------------------------------- environment
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvml_info(gpu_id: int = 0) -> dict[str, str] | str:
    """Driver version, GPU name and memory from NVML, or a string saying why there is none."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return f"no NVIDIA driver ({err})"
    try:
        count = pynvml.nvmlDeviceGetCount()
        if gpu_id >= count:
            return f"NVML sees {count} GPU(s); GPU {gpu_id} does not exist"
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_id)
        name = pynvml.nvmlDeviceGetName(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return {"gpu": f"{gpu_id}: {name.decode() if isinstance(name, bytes) else name}, "
                       f"{memory.total / 2**20:.0f} MB",
                "driver": str(pynvml.nvmlSystemGetDriverVersion()),
                "cuda (driver)": _cuda_version(pynvml.nvmlSystemGetCudaDriverVersion())}
    finally:
        pynvml.nvmlShutdown()


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"


def environment(gpu_id: int | None = None) -> list[tuple[str, str]]:
    """The environment lines: OS, Python, CPU, memory, torch, onnxruntime, numpy, CUDA (torch's view),
    the NVIDIA driver and GPU (NVML, when present) and the GPU in use (``gpu_id``; ``None``: none)."""
    import psutil
    import torch

    lines = [
        ("os", platform.platform()),
        ("python", sys.version.split()[0]),
        ("cpu", f"{cpu_name()}, {psutil.cpu_count(logical=True)} logical cores "
                f"({psutil.cpu_count(logical=False)} physical)"),
        ("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GB"),
        ("torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"),
    ]
    try:
        import onnxruntime as ort

        lines.append(("onnxruntime", f"{ort.__version__} (device {ort.get_device()}; providers in this build: "
                                     f"{', '.join(ort.get_available_providers())})"))
    except ImportError:
        lines.append(("onnxruntime", "not installed"))
    lines.append(("numpy", np.__version__))
    if torch.cuda.is_available():
        lines.append(("cuda", f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                              f"{torch.cuda.device_count()} device(s)"))
    info = nvml_info(gpu_id or 0)
    lines.extend(info.items() if isinstance(info, dict) else [("gpu", info)])
    lines.append(("gpu in use", "no" if gpu_id is None else f"GPU {gpu_id}"))
    return lines


# ---------------------------------------------------------------------- monitors
@dataclass
class ResourceMonitor:
    """Samples CPU RSS (psutil) and, with ``gpu_id``, GPU memory and utilisation (NVML).

    Call :meth:`sample` between timed sections (it costs a few microseconds, plus an NVML call on GPUs).
    """

    gpu_id: int | None = None
    rss_peak: int = 0
    gpu_memory_peak: int = 0
    gpu_util: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        import psutil

        self._process = psutil.Process(os.getpid())
        self._nvml = None
        if self.gpu_id is not None:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.gpu_id))
            except Exception:  # no driver: GPU figures stay n/a (the environment section says why)
                self._nvml = None

    def sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self._process.memory_info().rss)
        if self._nvml is not None:
            pynvml, handle = self._nvml
            self.gpu_memory_peak = max(self.gpu_memory_peak, pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            self.gpu_util.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    @staticmethod
    def process_peak_rss() -> int:
        """The process's peak RSS in bytes since it started (``getrusage``; Linux reports KiB)."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024

    def lines(self) -> list[tuple[str, str]]:
        out = [("cpu_rss(MB)", f"peak {self.rss_peak / 2**20:.1f} during the timed batches (psutil); process peak "
                               f"{self.process_peak_rss() / 2**20:.1f} (getrusage)")]
        if self._nvml is not None:
            util = f"mean {np.mean(self.gpu_util):.1f}%, max {np.max(self.gpu_util):.0f}%" if self.gpu_util else "n/a"
            out += [("gpu_mem(MB)", f"peak {self.gpu_memory_peak / 2**20:.1f} used on GPU {self.gpu_id} (NVML, "
                                    "all processes)"), ("gpu_util", util)]
        else:
            out += [("gpu_mem(MB)", "n/a (no GPU in use)"), ("gpu_util", "n/a")]
        return out

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml[0].nvmlShutdown()
            self._nvml = None


# ---------------------------------------------------------------------- report
Section = tuple[str, Iterable[tuple[str, Any]]]


def format_report(sections: Sequence[Section]) -> str:
    """Sections as autolog prints them: a ruled title, then ``key: value`` lines."""
    out = []
    for title, lines in sections:
        out.append(f"{RULE} {title} {RULE}")
        out.extend(f"{key}: {value}" for key, value in lines)
    return "\n".join(out) + "\n"

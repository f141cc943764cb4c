"""Runtime helpers: logging for entry points, seeding, threads, device selection."""

from __future__ import annotations

import logging
import os
import random
import sys

import numpy as np
import torch

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once; called by tool entry points, never by library code."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None`` keeps torch's default); returns the count in use.

    On small shared machines more threads can be slower; with a busy co-process,
    OpenMP's default spin-waiting collapses throughput unless ``OMP_WAIT_POLICY``
    is ``PASSIVE`` (the tools set it before torch is imported).
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"cpu_threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def select_device(use_gpu: bool) -> torch.device:
    """``cuda`` when asked for and present; otherwise CPU, saying why when a GPU was asked for."""
    if not use_gpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda")
        logger.info("using GPU %s", torch.cuda.get_device_name(device))
        return device
    reason = ("this torch build has no CUDA support" if torch.version.cuda is None
              else "no CUDA device is visible (check CUDA_VISIBLE_DEVICES and the driver)")
    logger.warning("runner.use_gpu is True but %s (torch %s); running on CPU", reason, torch.__version__)
    return torch.device("cpu")


def thread_settings() -> str:
    """One line describing the thread settings, for logs and benchmark output."""
    return (f"torch threads {torch.get_num_threads()}, interop {torch.get_num_interop_threads()}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cores {os.cpu_count()}")

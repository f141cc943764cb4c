"""``runner.profile``: a torch.profiler trace of a few training steps (PaddleRec's ``tools/utils/profiler.py``).

With ``runner.profile: True`` the training loop leaves ``runner.profile_wait`` steps untraced (the last of
them is the profiler's warm-up, whose events are dropped), traces the next ``runner.profile_steps``, then
trains on untraced. When the traced window closes it writes, in ``<model_save_path>/profile/``:

- ``trace.json``: a Chrome trace (open it in https://ui.perfetto.dev or chrome://tracing), one
  ``ProfilerStep#N`` span per training step (N counts the training batches from 0, across epochs), the
  wait for the next batch under ``recstack.next_batch``, the optimizer under ``Optimizer.step#...``;
- ``top_ops.txt``: the operators' totals over the traced steps (``key_averages().table``), sorted by
  self CPU time, and on a GPU a second table sorted by self CUDA time; the first table is logged too.

Steps are counted over the whole training, so a window longer than an epoch spans epochs; a training
shorter than the window writes the steps it traced (with a warning), one shorter than ``profile_wait``
writes nothing (with a warning). Under ``runner.use_fleet`` rank 0's steps are traced. See doc/profiling.md.

The loop's side (:mod:`recstack.trainer`)::

    with TrainingProfiler(config, enabled=is_main, run_id=run_id) as profiler:
        profiler.start(device)
        for batch in profiler.batches(loader):
            ...  # one training step
            profiler.step()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from recstack.config import Config
from recstack.fileio import atomic_open, atomic_path

logger = logging.getLogger(__name__)

#: the folder under ``model_save_path`` and its files
PROFILE_DIR = "profile"
TRACE_FILE = "trace.json"
TOP_OPS_FILE = "top_ops.txt"
#: rows of the operator tables
ROW_LIMIT = 20
#: the span of the trace around the wait for the next batch (reader, background threads, collation)
NEXT_BATCH = "recstack.next_batch"


class TrainingProfiler:
    """The training loop's handle on ``runner.profile`` (inert when it is off or ``enabled`` is False).

    Use as a context manager around the training: leaving it stops the profiler (a window cut short
    by the end of training is written; on an error nothing is written).

    Args:
        config: the run's config (``runner.profile``, ``profile_wait``, ``profile_steps``,
            ``model_save_path``).
        enabled: False on the ranks that do not write (the profiler stays off there).
        run_id: the training run's id, named in ``top_ops.txt``.
    """

    def __init__(self, config: Config, *, enabled: bool = True, run_id: str | None = None) -> None:
        self.enabled = bool(enabled and config.get("runner.profile"))
        self.wait = int(config.get("runner.profile_wait"))
        self.steps = int(config.get("runner.profile_steps"))
        self.folder = Path(config.get("runner.model_save_path")) / PROFILE_DIR
        self.run_id = run_id
        self.device = torch.device("cpu")
        self.steps_done = 0  #: training steps seen since start()
        self.written: list[Path] = []
        self._profiler: Any = None
        self._discard = False

    # -------------------------------------------------------------- the loop's calls
    def start(self, device: torch.device) -> None:
        """Start the profiler (before the first batch), with CUDA activity when training on a GPU."""
        if not self.enabled or self._profiler is not None:
            return
        from torch.profiler import ProfilerActivity, profile, schedule

        self.device = device
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda" and torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        # steps 0 .. wait-1 untraced (the last one as warm-up: the profiler runs, its events are dropped),
        # then `steps` traced steps, once
        warmup = 1 if self.wait > 0 else 0
        self._profiler = profile(activities=activities,
                                 schedule=schedule(wait=self.wait - warmup, warmup=warmup, active=self.steps,
                                                   repeat=1),
                                 on_trace_ready=self._trace_ready)
        self._profiler.start()
        logger.info("runner.profile: tracing training steps %d-%d (after %d untraced, runner.profile_wait) on %s, "
                    "into %s", self.wait, self.wait + self.steps - 1, self.wait, device.type, self.folder)

    def batches(self, batches: Iterable) -> Iterable:
        """``batches``, the wait for each one under a ``recstack.next_batch`` span while the profiler runs."""
        if not self.enabled:
            return batches
        return self._timed(batches)

    def _timed(self, batches: Iterable) -> Iterator:
        from torch.profiler import record_function

        it = iter(batches)
        try:
            while self._profiler is not None:
                with record_function(NEXT_BATCH):
                    try:
                        batch = next(it)
                    except StopIteration:
                        return
                yield batch
            yield from it
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def step(self) -> None:
        """After each training step: advance the profiler's schedule; after the traced window, stop it."""
        if self._profiler is None:
            return
        self.steps_done += 1
        self._profiler.step()
        if self.written:  # the window is written: the rest of training runs without the profiler
            self._stop()

    # -------------------------------------------------------------- context
    def __enter__(self) -> TrainingProfiler:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if self._profiler is None:
            return
        self._discard = error is not None
        self._stop()  # a window cut short by the end of training is written here (on_trace_ready)
        if not self.written and not self._discard:
            logger.warning("runner.profile: no trace written: training ran %d step(s), not more than "
                           "runner.profile_wait=%d; lower profile_wait or train longer", self.steps_done, self.wait)

    def _stop(self) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.stop()

    # -------------------------------------------------------------- output
    def traced_steps(self) -> tuple[int, int]:
        """``(first, last)`` training step of the traced window (0-based, inclusive)."""
        last = min(self.wait + self.steps, self.steps_done) - 1
        return self.wait, last

    def _trace_ready(self, profiler: Any) -> None:
        if self._discard:
            return
        first, last = self.traced_steps()
        count = last - first + 1
        if count < self.steps:
            logger.warning("runner.profile: training ended after %d traced step(s) of runner.profile_steps=%d; "
                           "writing those", count, self.steps)
        trace = self.folder / TRACE_FILE
        with atomic_path(trace) as tmp:
            profiler.export_chrome_trace(str(tmp))
        averages = profiler.key_averages()
        cpu_table = averages.table(sort_by="self_cpu_time_total", row_limit=ROW_LIMIT)
        header = (f"recstack profile{f' of run {self.run_id}' if self.run_id else ''}: training steps "
                  f"{first}-{last} ({count} step(s), after {first} untraced), device {self.device.type}, "
                  f"torch {torch.__version__}\ntrace: {trace} (open in https://ui.perfetto.dev or chrome://tracing)\n")
        text = f"{header}\nsorted by self CPU time:\n{cpu_table}\n"
        if self.device.type == "cuda":
            text += ("\nsorted by self CUDA time:\n"
                     f"{averages.table(sort_by='self_device_time_total', row_limit=ROW_LIMIT)}\n")
        top_ops = self.folder / TOP_OPS_FILE
        with atomic_open(top_ops) as f:
            f.write(text)
        self.written = [trace, top_ops]
        logger.info("runner.profile: traced training steps %d-%d; Chrome trace %s (open in https://ui.perfetto.dev "
                    "or chrome://tracing), operator table %s; top operators by self CPU time:\n%s", first, last,
                    trace, top_ops, cpu_table)

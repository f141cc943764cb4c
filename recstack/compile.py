"""``runner.compile``: the training step as a compiled graph (``torch.compile``), PaddleRec's "static graph" mode.

``tools/static_trainer.py`` (``tools/trainer.py`` with ``runner.compile: True``) compiles the network's forward
with ``torch.compile``; AOTAutograd traces its backward from it, so both run as generated kernels (Inductor's C++
/ OpenMP on the CPU, Triton on a GPU). The optimizer step, the loss and the metrics of the wrapper stay eager.
The network's module is not replaced (its ``forward`` is), so checkpoints are the eager ones, key for key:
``tools/trainer.py``, ``tools/infer.py`` and ``tools/to_static.py`` read them unchanged.

Settings (``runner``): ``compile_backend`` (``inductor``; ``aot_eager`` traces without generating code, ``eager``
only captures graphs: both for finding where a failure comes from), ``compile_mode`` (``default``,
``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``), ``compile_dynamic`` (``null``: torch's
automatic dynamic shapes, a second batch shape recompiles once as dynamic; ``true``/``false`` force it), and
``compile_fallback``: where compilation cannot work (no C++ compiler for Inductor on the CPU, an operator it cannot
trace) the run stops with that reason in one line, or with ``compile_fallback: True`` says it and trains eagerly.
Embedding tables with row-wise (sparse) gradients, recstack's default (``optimizer.sparse``), compile for some
models and not others (Inductor cannot always produce a sparse gradient tensor): after a first failure the model
is compiled again with those tables left eager (a warning says so; their lookups become graph breaks), and only a
second failure stops the run (or falls back).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from recstack.config import Config, ConfigError
from recstack.wrapper import unwrap_model

logger = logging.getLogger(__name__)


class CompileError(ConfigError):
    """``runner.compile`` cannot work here (the message says why in one line, and what to do): a user error
    (exit status 2), as a setting the machine cannot honour."""


def compile_blocker(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot compile on ``device`` before trying (``None``: nothing known against it)."""
    if backend == "inductor" and device.type == "cpu":
        compiler = os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
        if compiler is None or not shutil.which(compiler):
            return "no C++ compiler on PATH (g++, c++ or clang++; or set CXX): Inductor generates C++ for the CPU"
    if backend == "inductor" and device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed: Inductor generates Triton kernels for the GPU"
    return None


def _reason(err: BaseException) -> str:
    """The first informative line of a compilation error."""
    text = f"{type(err).__name__}: {err}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


#: where a failure of compilation or of the code it generated is raised from (frames of these files)
_COMPILER_FILES = ("/torch/_inductor/", "/torch/_dynamo/", "/torch/_functorch/", "torchinductor_")


def _compile_failure(err: BaseException) -> bool:
    """Whether ``err`` comes from torch.compile (tracing, code generation, or the generated code: Inductor's
    runtime checks raise plain ``AssertionError``) rather than from the model or the data."""
    if isinstance(err, torch._dynamo.exc.TorchDynamoException):
        return True
    try:
        from torch._inductor.exc import InductorError
    except ImportError:  # pragma: no cover - older torch
        InductorError = ()  # noqa: N806
    if InductorError and isinstance(err, InductorError):
        return True
    tb = err.__traceback__
    while tb is not None:
        if any(part in tb.tb_frame.f_code.co_filename for part in _COMPILER_FILES):
            return True
        tb = tb.tb_next
    return False


class StepCompiler:
    """Compiles a network's forward in place and runs training steps through it, falling back when told to.

    Args:
        config: the run's config (``runner.compile*``).
        model: the network as the training loop holds it (a DDP wrapper's inner module is compiled).
        device: where it trains.

    Use ``step(train_step, *args)`` in place of ``train_step(*args)``.
    """

    def __init__(self, config: Config, model: nn.Module, device: torch.device) -> None:
        self.enabled = bool(config.get("runner.compile"))
        self.fallback = bool(config.get("runner.compile_fallback"))
        self.backend = config.get("runner.compile_backend")
        self.mode = config.get("runner.compile_mode")
        self.dynamic = config.get("runner.compile_dynamic")
        self.steps = 0
        self.compile_seconds = 0.0
        self._module: nn.Module | None = None
        self._eager_tables: list[nn.Module] = []
        if not self.enabled:
            return
        blocker = compile_blocker(self.backend, device)
        if blocker is not None:
            self._give_up(blocker)
            return
        self._module = unwrap_model(model)
        self._compile()
        logger.info("runner.compile: %s's forward and backward compiled by torch.compile (backend %s, mode %s, "
                    "dynamic %s); the first steps compile", type(self._module).__name__, self.backend, self.mode,
                    "auto" if self.dynamic is None else self.dynamic)

    def _compile(self) -> None:
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()  # the graph and graph-break counts of this model only (:meth:`summary`)
        # no profile-guided dynamic shapes carried over from earlier runs (torch keeps them beside its cache): an
        # earlier run's last, smaller batch would make every later run compile dynamic graphs from the start
        torch._dynamo.config.automatic_dynamic_local_pgo = False
        for table in self._eager_tables:
            table.forward = torch.compiler.disable(table.forward)
        self._module.forward = torch.compile(type(self._module).forward.__get__(self._module), backend=self.backend,
                                             mode=None if self.mode == "default" else self.mode, dynamic=self.dynamic)

    def _sparse_tables_eager(self, reason: str) -> bool:
        """After a failure: compile again with the tables of row-wise (sparse) gradients left eager (their lookups
        become graph breaks; everything between them stays compiled), the usual cause. ``False`` when that was
        done already or there is no such table."""
        tables = [m for m in self._module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse]
        if self._eager_tables or not tables:
            return False
        logger.warning("runner.compile: %s; trying again with the %d embedding table(s) of row-wise (sparse) "
                       "gradients left eager (Inductor does not handle them for every model), the rest compiled",
                       reason, len(tables))
        self._eager_tables = tables
        self._compile()
        return True

    @property
    def compiled(self) -> bool:
        return self._module is not None

    def _give_up(self, reason: str) -> None:
        if not self.fallback:
            raise CompileError(f"runner.compile: cannot compile: {reason}; set runner.compile_fallback: True to "
                               "train eagerly instead (or runner.compile_backend: aot_eager to trace without code "
                               "generation)")
        logger.warning("runner.compile: cannot compile (%s); training eagerly (runner.compile_fallback)", reason)
        if self._module is not None:
            del self._module.forward  # the class's forward again
            for table in self._eager_tables:
                del table.forward
            torch._dynamo.reset()
        self._module = None

    def step(self, train_step: Callable[..., Any], *args: Any) -> Any:
        """``train_step(*args)``, through the compiled forward; the first step's compile time is logged.

        A failure of compilation or of the generated code (at any step: a new batch shape compiles again) is
        handled as the module docstring says: the step is then run again, eagerly or with the sparse tables
        eager. It failed before the optimizer step, so only the metrics of the wrapper may have counted that
        batch twice."""
        if self._module is None:
            self.steps += 1
            return train_step(*args)
        start = time.perf_counter()
        try:
            out = train_step(*args)
        except Exception as err:  # noqa: BLE001 - only compilation failures are handled, the rest re-raised
            if not _compile_failure(err):
                raise
            reason = _reason(err)
            if self._sparse_tables_eager(reason):
                return self.step(train_step, *args)
            self._give_up(reason)
            return self.step(train_step, *args)
        self.steps += 1
        if self.steps == 1:
            self.compile_seconds = time.perf_counter() - start
            logger.info("runner.compile: first step (tracing and code generation) took %.1f s", self.compile_seconds)
        return out

    def summary(self) -> str | None:
        """``graphs, graph breaks`` of the compiled forward so far (one log line), or ``None``."""
        if self._module is None:
            return None
        from torch._dynamo.utils import counters

        graphs = counters["stats"].get("unique_graphs", 0)
        breaks = sum(counters["graph_break"].values())
        first = next(iter(counters["graph_break"]), None)
        return (f"runner.compile: {graphs} compiled graph(s), {breaks} graph break(s)"
                + (f" (first: {str(first)[:200]})" if first else ""))

"""Test-only hooks for the training loop, as trainer callbacks (:func:`recstack.trainer.train`'s ``callbacks``).

The training loop knows nothing of tests: it calls the callbacks it is given. ``tools/trainer.py``
(:func:`recstack.cli.train_main`) passes :func:`from_environment`'s, so a test that starts the tool (under
``torchrun``, where it cannot monkeypatch) switches a hook on with an environment variable:

- ``RECSTACK_TEST_FAIL_RANK=1``: rank 1 raises at its second training batch (``=1:kill``: it kills
  itself with SIGKILL there, as a lost process would); ``tests/test_distributed.py`` checks that the job
  then ends with an error naming the rank (doc/distributed.md, "Errors").
- ``RECSTACK_TEST_DUMP_DIR=FOLDER``: every rank saves its final parameters as ``FOLDER/rank<N>.pt``.

A callback is any object with some of the methods ``on_batch(epoch, batch_id)`` (before each training batch)
and ``on_train_end(model)`` (the model as the loop holds it, on every rank, before the process group goes).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

#: ``RECSTACK_TEST_FAIL_RANK=<rank>[:kill]``: :class:`FailRank`
FAIL_RANK_ENV = "RECSTACK_TEST_FAIL_RANK"
#: ``RECSTACK_TEST_DUMP_DIR=<folder>``: :class:`DumpState`
DUMP_DIR_ENV = "RECSTACK_TEST_DUMP_DIR"


def _rank() -> int:
    from recstack import dist

    return dist.rank()


class FailRank:
    """Raise on (or SIGKILL, with ``kill``) rank ``rank`` of a process group at its batch ``batch_id``."""

    def __init__(self, rank: int, kill: bool = False, batch_id: int = 1, source: str = "") -> None:
        self.rank, self.kill, self.batch_id, self.source = rank, kill, batch_id, source

    def on_batch(self, epoch: int, batch_id: int) -> None:
        if batch_id != self.batch_id or not torch.distributed.is_initialized() or _rank() != self.rank:
            return
        if self.kill:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure on rank {self.rank} ({self.source})")


class DumpState:
    """Every rank saves its final parameters (of the unwrapped network) to ``<folder>/rank<N>.pt``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, model: nn.Module) -> None:
        from recstack.wrapper import unwrap_model

        os.makedirs(self.folder, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()},
                   os.path.join(self.folder, f"rank{_rank()}.pt"))


def from_environment() -> list[Any]:
    """The hooks that ``RECSTACK_TEST_FAIL_RANK`` / ``RECSTACK_TEST_DUMP_DIR`` switch on (none by default)."""
    hooks: list[Any] = []
    target = os.environ.get(FAIL_RANK_ENV)
    if target is not None:
        failing, _, how = target.partition(":")
        hooks.append(FailRank(int(failing), kill=how == "kill", source=f"{FAIL_RANK_ENV}={target}"))
    folder = os.environ.get(DUMP_DIR_ENV)
    if folder:
        hooks.append(DumpState(folder))
    return hooks

"""Test-only hooks for the training loop, as trainer callbacks (:func:`recstack.trainer.train`'s ``callbacks``).

The training loop knows nothing of tests: it calls the callbacks it is given. ``tools/trainer.py``
(:func:`recstack.cli.train_main`) passes :func:`from_environment`'s, so a test that starts the tool (under
``torchrun``, where it cannot monkeypatch) switches a hook on with an environment variable:

- ``RECSTACK_TEST_FAIL_RANK=1``: rank 1 raises at its second training batch (``=1:kill``: it kills
  itself with SIGKILL there, as a lost process would); ``tests/test_distributed.py`` checks that the job
  then ends with an error naming the rank (doc/distributed.md, "Errors").
- ``RECSTACK_TEST_DUMP_DIR=FOLDER``: every rank saves its final parameters as ``FOLDER/rank<N>.pt``.
- ``RECSTACK_TEST_ONLINE_KILL=<pass>:<train|save>``: the online trainer (``tools/online_trainer.py``) kills itself
  with SIGKILL in pass ``<pass>``: at its second training batch (``train``), or in its checkpoint save once the
  model file is written and before the checkpoint is renamed into place (``save``); ``tests/test_online.py``.

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
#: ``RECSTACK_TEST_ONLINE_KILL=<pass>:<train|save>``: :class:`KillOnlinePass`
ONLINE_KILL_ENV = "RECSTACK_TEST_ONLINE_KILL"


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


class KillOnlinePass:
    """SIGKILL this process in an online pass (:mod:`recstack.online`): at its second training batch, or in the
    middle of its checkpoint save."""

    def __init__(self, pass_id: int, where: str) -> None:
        if where not in ("train", "save"):
            raise ValueError(f"{ONLINE_KILL_ENV}: expected <pass>:train or <pass>:save, got {pass_id}:{where}")
        self.pass_id, self.where, self.current = pass_id, where, -1

    @staticmethod
    def _kill() -> None:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    def on_pass(self, pass_id: int, partition: str) -> None:
        self.current = pass_id

    def on_batch(self, epoch: int, batch_id: int) -> None:
        if self.where == "train" and self.current == self.pass_id and batch_id == 1:
            self._kill()

    def during_save(self, pass_id: int) -> None:
        if self.where == "save" and pass_id == self.pass_id:
            self._kill()


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
    kill = os.environ.get(ONLINE_KILL_ENV)
    if kill:
        pass_id, _, where = kill.partition(":")
        hooks.append(KillOnlinePass(int(pass_id), where))
    return hooks

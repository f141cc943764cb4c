"""Checkpoints ``<model_save_path>/<epoch>/``: model and optimizer state, written atomically.

A checkpoint folder holds ``model.pt`` (the model's ``state_dict``),
``optimizer.pt`` (when saved) and ``meta.json`` (epoch, metrics, model folder,
versions). It is written to a temporary folder beside the target and renamed
into place, so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import recstack

logger = logging.getLogger(__name__)

class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model built from the config."""


MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "meta.json"


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, optimizer: Any | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        torch.save(model.state_dict(), tmp / MODEL_FILE)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        info = {"recstack": recstack.__version__, "torch": torch.__version__, "time": time.time(), **(meta or {})}
        (tmp / META_FILE).write_text(json.dumps(info, indent=2, default=str))
        old = None
        if folder.exists():
            old = folder.parent / f".old-{folder.name}-{os.getpid()}"
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | os.PathLike, model: nn.Module, optimizer: Any | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint's model (and optimizer, when given and saved) state; returns its meta.

    Raises:
        FileNotFoundError: no checkpoint in ``folder`` (the message lists the epochs beside it).
        CheckpointError: the parameters do not match the model (names the mismatching keys).
    """
    folder = Path(folder)
    model_file = folder / MODEL_FILE
    if not model_file.is_file():
        siblings = sorted((p.name for p in folder.parent.iterdir() if (p / MODEL_FILE).is_file()),
                          key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)) \
            if folder.parent.is_dir() else []
        hint = f"; checkpoints in {folder.parent}: {', '.join(siblings)}" if siblings else ""
        raise FileNotFoundError(f"no checkpoint at '{folder}' (missing {MODEL_FILE}){hint}")
    state = torch.load(model_file, map_location=map_location, weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint '{folder}' does not fit the model built from the config: {err}") from None
    if optimizer is not None and (folder / OPTIMIZER_FILE).is_file():
        optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location=map_location, weights_only=True))
    meta_file = folder / META_FILE
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}

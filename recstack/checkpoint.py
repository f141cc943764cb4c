"""Checkpoints ``<model_save_path>/<epoch>/``: model and optimizer state, written atomically.

A checkpoint folder holds ``model.pt`` (the model's ``state_dict``),
``optimizer.pt`` (when saved) and ``meta.json`` (epoch, metrics, model folder,
versions). It is written to a temporary folder beside the target and renamed
into place, so an interrupted save never leaves a half-written checkpoint; the next save (or a
load that misses the folder) removes the temporary folders of killed saves. Reading a file that
is empty, truncated or not a checkpoint raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

import recstack
from recstack.fileio import is_temporary, owner_tag, remove_tree, stale_folders

logger = logging.getLogger(__name__)

class CheckpointError(RuntimeError):
    """A checkpoint cannot be read (an empty, truncated or damaged file), or does not fit the model
    built from the config; the message names the file."""


MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "meta.json"


def clean_interrupted_saves(root: str | os.PathLike) -> None:
    """Tidy what killed saves left in ``root`` (a ``model_save_path``).

    ``.tmp-<epoch>-<pid>@<host>`` folders of processes that no longer run are removed (a live
    writer's are kept, see :func:`recstack.fileio.owner_alive`). An ``.old-<epoch>-...`` folder is the
    previous checkpoint moved aside while a save replaced it: it is renamed back when the save was
    killed before ``<epoch>/`` was in place again, else removed.
    """
    root = Path(root)
    for prefix, name, path in sorted(stale_folders(root, (".old-", ".tmp-"))):
        target = root / name
        if prefix == ".old-" and not target.exists() and (path / MODEL_FILE).is_file():
            try:
                os.replace(path, target)
                logger.warning("restored checkpoint %s from %s, moved aside by a save that was killed", target,
                               path.name)
                continue
            except OSError:
                pass
        remove_tree(path, "left by a killed checkpoint save")


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, optimizer: Any | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one).

    The files go to ``.tmp-<epoch>-<pid>@<host>/`` beside ``folder``, renamed into place when complete;
    leftovers of killed saves are tidied first (:func:`clean_interrupted_saves`).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    clean_interrupted_saves(folder.parent)
    tmp = folder.parent / f".tmp-{folder.name}-{owner_tag()}"
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
            old = folder.parent / f".old-{folder.name}-{owner_tag()}"
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_state(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` (weights only) of a checkpoint file, with one-line errors.

    Raises:
        CheckpointError: the file is empty, truncated, damaged or not a ``torch.save`` file (the
            message names it and says which).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise CheckpointError(f"{path}: empty file (0 bytes; an interrupted copy?); {_REDO}")
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (CheckpointError, MemoryError, torch.OutOfMemoryError):
        raise
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or _first_line(err)})") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, KeyError, ... for damaged files
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one has no central directory
            what = "not a complete torch.save archive: truncated, damaged or another format"
        elif isinstance(err, pickle.UnpicklingError):
            detail = str(err).split("WeightsUnpickler error:", 1)[-1].strip()
            what = f"holds what a weights-only load refuses: {_first_line(ValueError(detail), 100)}"
        else:
            what = _first_line(err)
    raise CheckpointError(f"{path}: not a readable checkpoint file ({size} bytes; {what}); {_REDO}")


_REDO = "re-create it (tools/trainer.py writes <model_save_path>/<epoch>/) or use another checkpoint"


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``meta.json``.

    Raises:
        CheckpointError: not readable, or not a JSON object (the message names the file).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        meta = json.loads(text)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or _first_line(err)})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        what = "empty file" if not path.stat().st_size else f"not valid JSON: {_first_line(err, 100)}"
        raise CheckpointError(f"{path}: damaged checkpoint description ({what}); {_REDO}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged checkpoint description (a JSON {type(meta).__name__}, not an "
                              f"object); {_REDO}")
    return meta


def list_checkpoints(root: str | os.PathLike) -> list[str]:
    """Names of the checkpoint folders in ``root`` (epochs first, in order), never a temporary one."""
    root = Path(root)
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if not is_temporary(p.name) and (p / MODEL_FILE).is_file()]
    return sorted(names, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))


def load_checkpoint(folder: str | os.PathLike, model: nn.Module, optimizer: Any | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint's model (and optimizer, when given and saved) state; returns its meta.

    Raises:
        FileNotFoundError: no checkpoint in ``folder`` (the message lists the epochs beside it).
        CheckpointError: a file of it is empty, truncated or damaged, or the parameters do not match the
            model (names the file, or the mismatching keys).
    """
    folder = Path(folder)
    model_file = folder / MODEL_FILE
    if not model_file.is_file() and folder.parent.is_dir():
        clean_interrupted_saves(folder.parent)  # a save killed while replacing this folder moved it aside
    if not model_file.is_file():
        siblings = list_checkpoints(folder.parent)
        hint = f"; checkpoints in {folder.parent}: {', '.join(siblings)}" if siblings else ""
        raise FileNotFoundError(f"no checkpoint at '{folder}' (missing {MODEL_FILE}){hint}")
    meta_file = folder / META_FILE
    meta = read_meta(meta_file) if meta_file.is_file() else {}
    state = read_state(model_file, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{model_file}: holds a {type(state).__name__}, not a model state_dict; {_REDO}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint '{folder}' does not fit the model built from the config: {err}") from None
    optimizer_file = folder / OPTIMIZER_FILE
    if optimizer is not None and optimizer_file.is_file():
        try:
            optimizer.load_state_dict(read_state(optimizer_file, map_location))
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{optimizer_file}: does not fit the optimizer built from the config: "
                                  f"{_first_line(err)}") from None
    return meta

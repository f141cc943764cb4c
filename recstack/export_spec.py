"""The export on disk, as every loader reads it: ``tostatic.json`` and the files it names.

:func:`recstack.export.export_model` (``tools/to_static.py``) writes three files under one prefix:
``<prefix>.pt`` (TorchScript), ``<prefix>.onnx`` and ``<prefix>.json``, the description and manifest:

==================  ===================================================================================
``format_version``  :data:`FORMAT_VERSION`
``model_name``      the model folder's name; ``config``, ``config_dir``, ``resolved_config``: the config
                    it was exported with; ``checkpoint``: the checkpoint folder
``files``           ``{"torchscript": "<prefix>.pt", "onnx": "<prefix>.onnx"}``
``sizes_bytes``,    each file's size and SHA-256: :func:`verify_export_file` refuses a file that differs
``sha256``          (an interrupted or mixed export)
``inputs``,         :class:`TensorSpec` of each input and output (name, dtype, shape with named dynamic
``outputs``         axes, reader / label column, task, kind, meaning); ``onnx_inputs``: the inputs the
                    ONNX graph kept
``embedding_tables`` rows of the table each id input indexes (servers check ids against them)
``vocabularies``    the vocabulary files the features map raw values through, copied into the export
                    (feature -> ``{"file": "<prefix>.vocab/<feature>.txt", "key", "entries", "num_oov_buckets",
                    "fitted"}``, the file listed in ``sizes_bytes`` / ``sha256``): :meth:`ExportedModel.config`
                    points the features at these copies
``parity``          the eager / TorchScript / ONNX Runtime differences measured before writing
``export_part``     only in one of several exports cut from one checkpoint (``tools/export_mm_model.py``)
==================  ===================================================================================

:class:`ExportedModel` finds an export (``--model_dir`` / ``--model_file``) and reads its files checked
against the JSON; :mod:`recstack.backends`, :mod:`recstack.serving` and ``tools/to_triton.py`` load
exports only through it. This module imports neither the exporter nor the training code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recstack.config import Config, ConfigError, from_dict, load_config

logger = logging.getLogger(__name__)

#: File name prefix of the exported files (PaddleRec's ``tostatic.pdmodel``).
PREFIX = "tostatic"
#: Version of the JSON layout.
FORMAT_VERSION = 1

# The deprecation warnings of the TorchScript APIs recstack uses on purpose (tracing, see
# :mod:`recstack.export`; loading and freezing, :mod:`recstack.backends`); filtered only around those calls.
_DEPRECATIONS = (
    r"`torch\.jit\.(trace|trace_method|save|load|freeze)` is deprecated",
    r"You are using the legacy TorchScript-based ONNX export",
    r"The feature will be removed\. Please remove usage of this function",
)


class ExportFileError(ConfigError):
    """An export on disk cannot be used: a file is damaged or does not match the JSON beside it
    (an interrupted or mixed export); the message names the folder and the file."""


@contextlib.contextmanager
def torchscript_apis() -> Iterator[None]:
    """Silence the deprecation warnings of ``torch.jit.trace/save/load/freeze`` and the legacy ONNX exporter."""
    with warnings.catch_warnings():
        for message in _DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        yield


@dataclass
class TensorSpec:
    """One model input or output as the exported files see it.

    Attributes:
        name: the ONNX input/output name (and TorchScript argument position).
        dtype: numpy dtype name (``int64``, ``float32``).
        shape: sizes, with a string naming each dynamic axis (``["batch", 26]``).
        column: inputs: the reader column (batch key) it is read from, ``None`` when the
            wrapper's ``create_feeds`` computes it; outputs: the label column it predicts.
        task: outputs: the task name (``None`` for a single-task model).
        kind: outputs: ``probability`` or ``value``.
        meaning: outputs: one line for people.
    """

    name: str
    dtype: str
    shape: list[int | str]
    column: str | None = None
    task: str | None = None
    kind: str | None = None
    meaning: str | None = None

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: s for i, s in enumerate(self.shape) if isinstance(s, str)}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def numpy_dtype(tensor: torch.Tensor) -> str:
    """The numpy name of a tensor's dtype (``int64``, ``float32``)."""
    return str(torch.empty(0, dtype=tensor.dtype).numpy().dtype)


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read an export's JSON description.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not an export description of a known format version (:class:`ExportFileError`:
            an empty or damaged file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no export description '{path}' (tools/to_static.py writes <prefix>.json beside "
                                "the .onnx and .pt files)")
    try:
        raw = path.read_bytes()
        spec = json.loads(raw.decode("utf-8"))
    except OSError as err:
        raise ExportFileError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        what = "an empty file" if not raw.strip() else f"not valid JSON: {str(err).splitlines()[0][:100]}"
        raise ExportFileError(f"{path}: {what} (a damaged export?): {_redo(None)}") from None
    if not isinstance(spec, dict) or spec.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: not a recstack export description (format_version {FORMAT_VERSION})")
    files = spec.get("files")
    if not (isinstance(files, dict) and all(isinstance(files.get(k), str) for k in ("onnx", "torchscript"))):
        raise ExportFileError(f"{path}: no 'files' naming the .onnx and .pt files (a damaged export?): "
                              f"{_redo(spec)}")
    return spec


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _redo(spec: dict[str, Any] | None) -> str:
    tool = "tools/export_mm_model.py" if spec and spec.get("export_part") else "tools/to_static.py"
    return f"re-run {tool}"


#: export descriptions already warned about (no file hashes)
_UNHASHED: set[str] = set()


def verify_export_file(spec_file: str | Path, spec: dict[str, Any], kind: str) -> bytes:
    """The content of the export's ``kind`` file (``onnx`` or ``torchscript``), checked against the JSON.

    The JSON written by :func:`recstack.export.write_export` is the export's manifest: each file's size and SHA-256.
    A file that differs is a mixed or interrupted export (a ``tostatic.pt`` of a newer export beside
    the JSON of an older one) and is refused. Exports written before the hashes existed load with a
    warning (once per description); their recorded sizes are still checked. The bytes returned are
    the ones checked: load them (not the path), so a file replaced meanwhile cannot slip through.

    Raises:
        FileNotFoundError: the file is missing.
        ExportFileError: its size or hash differs from the JSON's (one line naming the folder and file).
    """
    return verify_named_file(spec_file, spec, spec["files"][kind])


def verify_named_file(spec_file: str | Path, spec: dict[str, Any], name: str) -> bytes:
    """The content of the export's file ``name`` (relative to the JSON's folder), checked against the JSON's
    ``sizes_bytes`` and ``sha256`` as :func:`verify_export_file` checks the model files."""
    spec_file = Path(spec_file)
    path = spec_file.parent / name
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist (the export's JSON {spec_file.name} names it)")
    mismatch = f"{spec_file.parent}: {name} does not match {spec_file.name} (an interrupted or mixed export?): " \
               f"{_redo(spec)}"
    size = (spec.get("sizes_bytes") or {}).get(name)
    if size is not None and path.stat().st_size != size:
        raise ExportFileError(mismatch)
    data = path.read_bytes()
    expected = (spec.get("sha256") or {}).get(name)
    if expected is None:
        if str(spec_file) not in _UNHASHED:
            _UNHASHED.add(str(spec_file))
            logger.warning("%s has no file hashes (an export of an older recstack): its files are not checked "
                           "against it; %s to add them", spec_file, _redo(spec))
        if size is not None and len(data) != size:
            raise ExportFileError(mismatch)
    elif hashlib.sha256(data).hexdigest() != expected:
        raise ExportFileError(mismatch)
    return data


def load_torchscript(data: bytes, path: str | Path, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of an export's (verified) ``.pt`` content, one-line :class:`ExportFileError` when damaged."""
    import io

    try:
        with torchscript_apis():
            return torch.jit.load(io.BytesIO(data), map_location=map_location)
    except RuntimeError as err:
        if "PytorchStreamReader" not in str(err) and "zip" not in str(err) and "constants.pkl" not in str(err):
            raise
        raise ExportFileError(f"{path}: not a loadable TorchScript file ({len(data)} bytes; truncated or damaged): "
                              "re-run tools/to_static.py") from None


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
               prefix: str = PREFIX) -> ExportedModel:
        """Find an export from ``--model_dir`` (holding ``<prefix>.json``; a retrieval export's ``model.json``:
        its user tower) or ``--model_file`` (the ``.onnx`` or ``.pt`` file; the JSON beside it with the same stem).

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
            retrieval = folder / "model.json"
            if not spec_file.is_file() and retrieval.is_file():
                # a retrieval export (recstack/retrieval/export.py): its user tower is what runs per request
                files = json.loads(retrieval.read_text(encoding="utf-8")).get("retrieval", {}).get("files", {})
                if "user_tower" in files:
                    spec_file = folder / files["user_tower"]
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
            ExportFileError: it does not match the JSON (an interrupted or mixed export).
        """
        return verify_export_file(self.spec_file, self.spec, kind)

    @property
    def model_name(self) -> str:
        return self.spec["model_name"]

    def config(self, reader_file: str | os.PathLike | None = None) -> Config:
        """The config the model was exported with (or ``reader_file`` when it is a YAML config).

        The features' vocabularies (``vocabularies`` of the JSON) are read from the export's own copies,
        checked against the JSON (:func:`recstack.easyrec.vocab.pin_vocabularies`), so raw values map to the ids
        the model learnt wherever the export is moved.

        Raises:
            ExportFileError: a vocabulary file differs from the JSON's record (FileNotFoundError: missing).
        """
        if reader_file and Path(reader_file).suffix in (".yaml", ".yml"):
            return load_config(reader_file)
        resolved = self.spec["resolved_config"]
        vocabularies = self.spec.get("vocabularies")
        if vocabularies:
            from recstack.easyrec.vocab import pin_vocabularies

            for entry in vocabularies.values():
                verify_named_file(self.spec_file, self.spec, entry["file"])
            resolved = pin_vocabularies(resolved, self.directory.resolve(), vocabularies)
        return from_dict(resolved, self.spec["config_dir"])

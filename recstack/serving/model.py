"""The served model: an export (``tostatic.{onnx,pt,json}``), its backend and its reader.

:class:`ServedModel` turns checked model inputs into predictions with the backends of
:mod:`recstack.backends` (so the service computes exactly what ``tools/infer_benchmark.py``
computes), and parses uploaded data files with the model's own infer reader
(``runner.infer_reader_path``), so an uploaded file is read exactly as offline inference reads it.

The export's JSON names the model folder (``config_dir``) and the reader; serving runs no code from
that folder unless told to (``trust_code``, ``tools/serve.py --trust_export_code``): a reader module
that only re-exports a core reader (every shipped model) is resolved to that core reader without
being imported (:func:`recstack.data.factory.core_reader_alias`); otherwise ``/upload`` is unavailable
(``/predict`` needs no reader). Image paths in uploads stay inside the image folder.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import numpy as np
import torch

from recstack.backends import Batch, InferenceSettings, create_backend
from recstack.data.base import BatchColumn, DataFormatError, RaggedArray, row_error
from recstack.export_spec import ExportedModel
from recstack.serving.validation import InputSpec, RequestError, first_bad_value, input_specs

logger = logging.getLogger(__name__)

#: the file name uploaded data is reported under (``upload:<line>: ...``)
UPLOAD_NAME = "upload"


class ServedModel:
    """An export loaded for serving.

    Args:
        model: the export on disk.
        settings: backend, device and thread settings (:class:`recstack.backends.InferenceSettings`).
        trust_code: import the model folder's own reader module (and wrapper, for inputs it computes) named
            by the export JSON; without it only core readers serve ``/upload``.
        image_root: the folder image paths of uploads resolve against and must stay in (readers with
            images); default: the config's ``data_config.image_root``, else its ``runner.test_data_dir``.

    Attributes:
        upload_unavailable: why ``/upload`` cannot serve this export (``None``: it can).
    """

    def __init__(self, model: ExportedModel, settings: InferenceSettings, trust_code: bool = False,
                 image_root: str | None = None) -> None:
        from recstack.data.factory import UntrustedCodeError, resolve_reader

        self.model, self.settings = model, settings
        self.spec = model.spec
        self.name = model.model_name
        self.inputs: list[InputSpec] = input_specs(self.spec)
        self.outputs: list[dict[str, Any]] = self.spec["outputs"]
        self.output_names = [o["name"] for o in self.outputs]
        #: inputs on more than one batch axis (grouped samples and their groups' images): never micro-batched
        self.grouped = len({str(s["shape"][0]) for s in self.spec["inputs"] if s.get("shape")}) > 1
        self.backend = create_backend(model, settings)
        self.config = model.config()
        self.reader_name = self.config.get("runner.infer_reader_path")
        self.upload_unavailable: str | None = None
        self.reader = None
        try:
            self.reader = resolve_reader(self.config, "runner.infer_reader_path", trust_code=trust_code)([],
                                                                                                        self.config)
        except UntrustedCodeError as err:
            self.upload_unavailable = str(err)
            logger.warning("/upload is not available: %s", err)
        if self.reader is not None and getattr(self.reader, "img_shape", None) is not None:
            root = image_root or self.reader.grouped.image_root or self.config.get("runner.test_data_dir", None)
            self.reader.confine_images_to = os.path.realpath(root) if root else os.path.realpath(os.devnull)
        self._feeds = None
        if any(s.column is None for s in self.inputs) and not trust_code:
            self.upload_unavailable = self.upload_unavailable or (
                "this model's wrapper computes some inputs from the reader's columns (create_feeds), code of the "
                "model folder that is run only when trusted (tools/serve.py --trust_export_code)")
        elif any(s.column is None for s in self.inputs):  # a wrapper computes some inputs from reader columns
            from recstack.wrapper import build_model

            wrapper, _ = build_model(self.config, torch.device("cpu"))
            self._feeds = lambda batch: wrapper.create_feeds(batch, self.config)[0]

    # ------------------------------------------------------------------ inference
    def predict(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Predictions (one float32 ``(n, ...)`` array per output) of checked inputs."""
        n = len(next(iter(arrays.values())))
        batch = Batch({name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}, {}, n)
        outputs = self.backend.predict(batch)
        for name, out in zip(self.output_names, outputs):
            if out.shape[0] != n:
                raise RuntimeError(f"output {name} has {out.shape[0]} rows for {n} input rows")
        return outputs

    def warmup(self) -> None:
        """One prediction on a zero row (loads kernels before the first request)."""
        arrays = {s.name: np.zeros((1, *[1 if isinstance(d, str) else d for d in s.row_shape]), dtype=s.dtype)
                  for s in self.inputs}
        self.predict(arrays)

    # ------------------------------------------------------------------ uploads
    def parse_upload(self, body: bytes, max_rows: int) -> dict[str, np.ndarray]:
        """Model inputs of an uploaded data file in the model's reader format, all checked.

        Raises:
            RequestError: a bad line (the message names ``upload:<line>``), no samples, too many rows, or ids
                outside the embedding tables.
        """
        if self.reader is None:
            raise RequestError(f"/upload is not available: {self.upload_unavailable}", status=501)
        if not body.strip():
            raise RequestError(f"empty upload; post a data file in the format of the model's reader "
                               f"({self.reader_name})")
        if body.count(b"\n") > max_rows + 1:  # before parsing: more lines than samples taken (a header line aside)
            lines = re.sub(rb"(?m)^[ \t\r\f\v]*\n", b"", body).count(b"\n") + (not body.endswith(b"\n"))
            if lines > max_rows + 1:
                raise RequestError(f"{UPLOAD_NAME}: {lines} lines is more than this server takes in one request "
                                   f"({max_rows} samples, --max_rows); split the file", status=413)
        if not body.endswith(b"\n"):
            body += b"\n"
        try:
            block = self.reader.parse_block(body, UPLOAD_NAME, 1)
        except DataFormatError as err:
            match = re.match(rf"{UPLOAD_NAME}:(\d+):", str(err))
            raise RequestError(str(err), line=int(match.group(1)) if match else None) from None
        except (ValueError, UnicodeDecodeError, OverflowError, IndexError, KeyError, TypeError) as err:
            # a reader that fails outside its own checks: still the upload's fault, never a 500
            logger.info("upload not readable by %s: %r", self.reader_name, err)
            raise RequestError(f"{UPLOAD_NAME}: not readable by {self.reader_name}: {str(err)[:300]}") from None
        n = len(next(iter(block.values()))) if block else 0
        if n == 0:
            raise RequestError(f"{UPLOAD_NAME}: the file holds no samples (only blank lines)")
        if n > max_rows:
            raise RequestError(f"{UPLOAD_NAME}: {n} samples is more than this server takes in one request "
                               f"({max_rows}, --max_rows); split the file", status=413)
        if self._feeds is not None:
            tensors = {k: torch.from_numpy(v.to_padded() if isinstance(v, RaggedArray) else np.ascontiguousarray(v))
                       for k, v in block.items()}
            arrays = {s.name: t.numpy() for s, t in zip(self.inputs, self._feeds(tensors))}
        else:
            missing = [s.column for s in self.inputs if s.column not in block]
            if missing:
                raise RequestError(f"{UPLOAD_NAME}: the reader {self.reader_name} gives columns {sorted(block)}, "
                                   f"the model needs {missing}", status=422)
            arrays = {}
            for s in self.inputs:
                column = block[s.column]
                arrays[s.name] = np.ascontiguousarray(
                    column.to_padded() if isinstance(column, RaggedArray)
                    else column.to_batch() if isinstance(column, BatchColumn) else column, dtype=s.dtype)
        for s in self.inputs:
            bad = first_bad_value(arrays[s.name], s)
            if bad is not None:
                row, col, problem = bad
                located = row_error(body, UPLOAD_NAME, 1, row, f"input '{s.name}' position {col}: {problem}")
                match = re.match(rf"{UPLOAD_NAME}:(\d+):", str(located))
                raise RequestError(str(located), field=s.name, line=int(match.group(1)) if match else None)
        return arrays

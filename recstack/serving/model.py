"""The served model: an export (``tostatic.{onnx,pt,json}``), its backend and its reader.

:class:`ServedModel` turns checked model inputs into predictions with the backends of
:mod:`recstack.inference` (so the service computes exactly what ``tools/infer_benchmark.py``
computes), and parses uploaded data files with the model's own infer reader
(``runner.infer_reader_path``), so an uploaded file is read exactly as offline inference reads it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import torch

from recstack.data.base import DataFormatError, RaggedArray, row_error
from recstack.inference import Batch, ExportedModel, InferenceSettings, create_backend
from recstack.serving.validation import InputSpec, RequestError, first_bad_value, input_specs

logger = logging.getLogger(__name__)

#: the file name uploaded data is reported under (``upload:<line>: ...``)
UPLOAD_NAME = "upload"


class ServedModel:
    """An export loaded for serving.

    Args:
        model: the export on disk.
        settings: backend, device and thread settings (:class:`recstack.inference.InferenceSettings`).
    """

    def __init__(self, model: ExportedModel, settings: InferenceSettings) -> None:
        from recstack.data.factory import resolve_reader

        self.model, self.settings = model, settings
        self.spec = model.spec
        self.name = model.model_name
        self.inputs: list[InputSpec] = input_specs(self.spec)
        self.outputs: list[dict[str, Any]] = self.spec["outputs"]
        self.output_names = [o["name"] for o in self.outputs]
        self.backend = create_backend(model, settings)
        self.config = model.config()
        self.reader = resolve_reader(self.config, "runner.infer_reader_path")([], self.config)
        self.reader_name = self.config.get("runner.infer_reader_path")
        self._feeds = None
        if any(s.column is None for s in self.inputs):  # a wrapper computes some inputs from reader columns
            from recstack.trainer import build_model

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
        if not body.strip():
            raise RequestError(f"empty upload; post a data file in the format of the model's reader "
                               f"({self.reader_name})")
        if not body.endswith(b"\n"):
            body += b"\n"
        try:
            block = self.reader.parse_block(body, UPLOAD_NAME, 1)
        except DataFormatError as err:
            match = re.match(rf"{UPLOAD_NAME}:(\d+):", str(err))
            raise RequestError(str(err), line=int(match.group(1)) if match else None) from None
        except (ValueError, UnicodeDecodeError) as err:  # a reader that fails outside its own checks
            raise RequestError(f"{UPLOAD_NAME}: not readable by {self.reader_name}: {err}") from None
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
                    column.to_padded() if isinstance(column, RaggedArray) else column, dtype=s.dtype)
        for s in self.inputs:
            bad = first_bad_value(arrays[s.name], s)
            if bad is not None:
                row, col, problem = bad
                located = row_error(body, UPLOAD_NAME, 1, row, f"input '{s.name}' position {col}: {problem}")
                match = re.match(rf"{UPLOAD_NAME}:(\d+):", str(located))
                raise RequestError(str(located), field=s.name, line=int(match.group(1)) if match else None)
        return arrays

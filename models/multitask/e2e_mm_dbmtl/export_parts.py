"""E2E_MM_DBMTL's three exports from one checkpoint: the image, rec and total models.

``tools/export_mm_model.py`` (EasyRec's ``export_mm_model.py`` flags) calls
:func:`recstack.export.export_parts`, which loads the checkpoint and the data and hands them to the
wrapper's ``export_part_models`` (:class:`recstack.wrapper.DygraphModel`'s hook), which calls
:func:`write_parts` here. The parts themselves are the wrapper's: ``export_module`` (the network of each),
``export_feeds`` (its inputs for a batch), ``export_outputs`` (its outputs' names) and ``check_parts`` (the
parts against the training graph and each other).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recstack.export import ExportResult, LoadedModel, write_export
from recstack.export_spec import TensorSpec, numpy_dtype
from recstack.wrapper import as_tasks


def write_parts(wrapper: Any, loaded: LoadedModel, out_dirs: dict[str, Path], head: dict[str, Any],
                tolerance: float, prefix: str) -> dict[str, ExportResult]:
    """Check the parts against each other and the training graph, then write each asked-for part with
    :func:`recstack.export.write_export` (TorchScript + ONNX + JSON, eager / TorchScript / ONNX Runtime parity).

    The cross checks (``wrapper.check_parts``) run on the first batch and the second (when there is one)
    before anything is written; each part's JSON holds their largest differences under ``part_checks`` and
    its name under ``export_part``. The parity batches of each part: the first batch, its first row alone and
    the second batch.

    Args:
        wrapper: the model's :class:`DygraphModel`.
        loaded: the checkpoint, loaded in eval mode, and the reader's batches.
        out_dirs: output folder of each part, by name (``img``, ``rec``, ``total``).
        head: the JSON keys that say what was exported (:func:`recstack.export.export_head`).
        tolerance: max difference allowed (relative above 1: ``export_relative_tolerance``).
        prefix: file name prefix in each folder.

    Raises:
        recstack.export.ExportError: a check failed (nothing written).
    """
    net = loaded.model
    batches = [loaded.example]
    second = next(loaded.batches, None)
    if second is not None:
        batches.append(second)
    cross: dict[str, float] = {}
    for batch in batches:
        for key, value in wrapper.check_parts(net, batch, tolerance).items():
            cross[key] = max(cross.get(key, 0.0), value)
    results = {}
    for kind, out_dir in out_dirs.items():
        module = wrapper.export_module(net, kind).eval()
        names, inputs = wrapper.export_feeds(net, loaded.example, kind)
        checks = [(f"batch of {len(inputs[0])}", list(inputs))]
        if len(inputs[0]) > 1:
            checks.append(("first row alone", [t[:1] for t in inputs]))
        for batch in batches[1:]:
            other = wrapper.export_feeds(net, batch, kind)[1]
            checks.append((f"second batch of {len(other[0])}", list(other)))
        inputs_spec = [TensorSpec(n, numpy_dtype(t), ["batch", *t.shape[1:]],
                                  n if n in loaded.example and loaded.example[n] is t else None)
                       for n, t in zip(names, inputs)]
        with torch.no_grad():
            outputs = as_tasks(module(*inputs))
        results[kind] = write_export(module, inputs, checks, inputs_spec, wrapper.export_outputs(kind, outputs),
                                     out_dir, prefix, {**head, "export_part": kind}, {"part_checks": cross},
                                     tolerance, relative=wrapper.export_relative_tolerance)
    return results

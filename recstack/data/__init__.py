"""Readers (one per data format) and the batch loader.

A config names its reader with ``runner.train_reader_path`` /
``runner.infer_reader_path``: either a module in the model folder that defines
``RecDataset`` (PaddleRec's convention, e.g. ``criteo_reader``) or the name of
a core reader (``slot``, ``slot_parquet``, ``census``, ``index_value``, ``libsvm``, ``tabular``, ``group_rtp``; the
last two, EasyRec's ``CSVInput`` / ``ParquetInput`` and ``GroupRTPInput``, are in :mod:`recstack.easyrec`). Without
them, ``hyper_parameters.data_config.input_type`` chooses (:func:`recstack.data.factory.resolve_reader`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AITMReader", "AliCCPReader", "AlimamaReader", "BatchLoader", "BlockReader", "DataFormatError", "DINReader",
           "GroupedRows", "GroupIndex", "LibSVMReader", "RaggedArray", "create_loader", "create_reader",
           "resolve_reader"]

_LAZY = {
    "AITMReader": "recstack.data.aitm",
    "AliCCPReader": "recstack.data.aliccp",
    "AlimamaReader": "recstack.data.alimama",
    "BatchLoader": "recstack.data.loader",
    "BlockReader": "recstack.data.base",
    "DataFormatError": "recstack.data.base",
    "DINReader": "recstack.data.din",
    "GroupedRows": "recstack.data.base",
    "GroupIndex": "recstack.data.base",
    "LibSVMReader": "recstack.data.libsvm",
    "RaggedArray": "recstack.data.base",
    "create_loader": "recstack.data.factory",
    "create_reader": "recstack.data.factory",
    "resolve_reader": "recstack.data.factory",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that light modules (recstack.data.hashing, used by the preprocessors)
    # import without torch and pyarrow.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recstack.data' has no attribute '{name}'")

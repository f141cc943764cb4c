"""The notebook trainer: ``Trainer(model).fit(df)`` / ``evaluate`` / ``predict`` / ``export``.

A :class:`Trainer` writes the config that ``tools/trainer.py`` would read (:func:`make_config`: the model
folder as ``config_dir``, ``runner`` keys from its arguments, the model's ``hyper_parameters``) and hands it
to the core: :func:`recstack.trainer.train` (the one training loop: seed, model, optimizer, log lines,
metrics, checkpoints ``<model_path>/<epoch>/``), :func:`recstack.evaluator.evaluate` and
:func:`recstack.export.export_model`. In-memory data (DataFrames, dicts of arrays) reach that loop through
the ``memory`` reader (:mod:`recstack.api.data`); a folder of files through the model's file reader.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recstack.api import data as memory
from recstack.api.models import ModelSpec, make_config
from recstack.config import Config
from recstack.easyrec.features import TabularSpec

#: the model's file reader (a core reader name, or a module of the model folder)
FILE_READERS = {"tabular": "tabular", "din": "dinReader"}

__all__ = ["Trainer", "make_config"]

Data = Any  # a DataFrame (columns + to_numpy), a dict of arrays, or a folder of files (str / PathLike)


class Trainer:
    """Train, evaluate, predict with and export a :class:`~recstack.api.models.ModelSpec`.

    Args:
        model: from :mod:`recstack.api.models` (``DeepFM(...)``, ``DIN(...)``).
        label: the label column (0/1).
        optimizer: ``hyper_parameters.optimizer.class`` (``Adam``, ``AdamW``, ``Adagrad``, ``SGD``).
        optimizer_params: ``lr`` (or ``learning_rate``) and the other ``hyper_parameters.optimizer`` keys
            (``weight_decay``, ``sparse``, ``lr_schedule``).
        epochs: training epochs.
        batch_size: training batch size.
        eval_batch_size: batch size of evaluate / predict / export.
        seed: ``runner.seed`` (initialisation and shuffling).
        model_path: ``runner.model_save_path``: checkpoints go to ``<model_path>/<epoch>/``.
        shuffle: shuffle the training rows each epoch.
        bucket_by_length: DIN: batches of similar history length.
        clip_norm: ``hyper_parameters.clip_by_norm``.
        reg: ``hyper_parameters.reg`` (L2 on the parameters).
        columns: the data files' columns in order, when ``fit`` / ``evaluate`` get a folder of CSV files
            (feature-config models).
        runner: any other ``runner`` keys (``print_interval``, ``cpu_threads``, ``use_gpu``, ``progress_bar``, ...).

    Attributes:
        config: the config of the last ``fit`` (its ``hyper_parameters`` are a YAML's).
        model: the trained network (``None`` before ``fit`` / :meth:`load`).
        wrapper: its training wrapper (``models/.../dygraph_model.py``).
        checkpoint: the last checkpoint folder written or loaded.
    """

    def __init__(self, model: ModelSpec, *, label: str = "label", optimizer: str = "Adam",
                 optimizer_params: Mapping[str, Any] | None = None, epochs: int = 1, batch_size: int = 512,
                 eval_batch_size: int = 1024, seed: int = 12345, model_path: str | os.PathLike = "output_model_api",
                 shuffle: bool = False, bucket_by_length: bool = False, clip_norm: float | None = None,
                 reg: float = 0.0, columns: list[str] | None = None, runner: Mapping[str, Any] | None = None) -> None:
        self.spec, self.label, self.columns = model, label, columns
        params = dict(optimizer_params or {})
        params["learning_rate"] = params.pop("lr", params.get("learning_rate", 0.001))
        self.optimizer = {"class": optimizer, **params}
        self.hyper_parameters = {k: v for k, v in (("clip_by_norm", clip_norm), ("reg", reg)) if v}
        save = str(Path(model_path).resolve())
        self.runner: dict[str, Any] = {
            "train_batch_size": batch_size, "infer_batch_size": eval_batch_size, "epochs": epochs, "seed": seed,
            "model_save_path": save, "infer_load_path": save, "shuffle": shuffle,
            "bucket_by_length": bucket_by_length, "use_auc": True, **dict(runner or {})}
        self.config: Config | None = None
        self.model: torch.nn.Module | None = None
        self.wrapper: Any = None
        self.checkpoint: Path | None = None
        self._workdir = tempfile.mkdtemp(prefix="recstack-api-")
        self._folders: list[str] = []
        self._count = itertools.count()
        self._sample: Data = None  # the last in-memory table given, for export's sample file
        weakref.finalize(self, _cleanup, self._workdir, self._folders)

    # ------------------------------------------------------------------ data
    def _source(self, data: Data, with_labels: bool = True) -> tuple[str, str]:
        """``(data folder, reader name)`` of ``data``: a folder of files as it is, a table through ``memory``."""
        if isinstance(data, (str, os.PathLike)):
            return str(Path(data).resolve()), FILE_READERS[self.spec.kind]
        spec = self.spec
        if spec.kind == "din":
            block = memory.encode_din(data, spec.sequence, self.label, spec.user_column, with_labels)
        else:
            block = memory.encode_tabular(data, self._make({}), with_labels)
        if with_labels:
            self._sample = data
        folder = memory.register(block, Path(self._workdir) / f"data-{next(self._count)}")
        self._folders.append(folder)
        return folder, "memory"

    def _make(self, runner: Mapping[str, Any]) -> Config:
        return make_config(self.spec, {**self.runner, **runner}, self.label, self.optimizer, self.hyper_parameters,
                           self.columns)

    def _data_config(self, mode: str, data: Data, with_labels: bool = True) -> Config:
        folder, reader = self._source(data, with_labels)
        keys = ("train_data_dir", "train_reader_path") if mode == "train" else ("test_data_dir", "infer_reader_path")
        return self._make(dict(zip(keys, (folder, reader))))

    # ------------------------------------------------------------------ training
    def fit(self, data: Data) -> list[Any]:
        """Train for ``epochs`` epochs with :func:`recstack.trainer.train`, writing ``<model_path>/<epoch>/``.

        Returns:
            Each epoch's :class:`recstack.trainer.EpochResult` (training metrics, loss, checkpoint).
        """
        from recstack.trainer import train

        self.config = self._data_config("train", data)
        result = train(self.config)
        self.model, self.wrapper = result.model, result.wrapper
        if result.epochs:
            self.checkpoint = result.epochs[-1].checkpoint
        return result.epochs

    def load(self, checkpoint: str | os.PathLike) -> Trainer:
        """Build the model and load a checkpoint folder (``<model_path>/<epoch>/``) into it, for evaluate / predict /
        export without ``fit``."""
        from recstack.checkpoint import load_checkpoint
        from recstack.utils import seed_everything
        from recstack.wrapper import build_model

        self.config = self.config or self._make({})
        seed_everything(self.config.get("runner.seed"))
        self.wrapper, self.model = build_model(self.config, torch.device("cpu"))
        load_checkpoint(Path(checkpoint), self.model)
        self.checkpoint = Path(checkpoint)
        return self

    def _trained(self) -> tuple[Any, torch.nn.Module]:
        if self.model is None:
            raise RuntimeError("no model yet: call fit(data) or load(checkpoint) first")
        return self.wrapper, self.model

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data: Data, log: bool = False) -> dict[str, float]:
        """Metrics of the model on ``data`` (``{"auc": ...}``; DIN adds ``gauc``), by
        :func:`recstack.evaluator.evaluate` over the infer loader, as ``tools/infer.py`` computes them."""
        from recstack.data import create_loader, create_reader
        from recstack.evaluator import evaluate

        wrapper, model = self._trained()
        config = self._data_config("infer", data)
        loader = create_loader(config, "infer", create_reader(config, "infer"))
        return evaluate(wrapper, model, loader, config, device=_device(model), log=log)

    @torch.no_grad()
    def predict(self, data: Data) -> np.ndarray:
        """Predicted probabilities, one per row of ``data`` in its order: ``(n,)`` (``(n, tasks)`` for several
        outputs). ``data`` needs no label column."""
        from recstack.data import BatchLoader, create_reader
        from recstack.wrapper import as_tasks

        wrapper, model = self._trained()
        config = self._data_config("infer", data, with_labels=False)
        loader = BatchLoader(create_reader(config, "infer"), config.get("runner.infer_batch_size"), num_workers=0)
        model.eval()
        device, outputs = _device(model), []
        for batch in loader:
            inputs, _ = wrapper.create_feeds({k: v.to(device) for k, v in batch.items()}, config)
            outputs.append(torch.cat([p.reshape(len(p), -1) for p in as_tasks(model(*inputs))], dim=1).cpu())
        out = torch.cat(outputs).numpy()
        return out[:, 0] if out.shape[1] == 1 else out

    # ------------------------------------------------------------------ export
    def export(self, out_dir: str | os.PathLike | None = None, data: Data = None, rows: int = 2048) -> Any:
        """TorchScript + ONNX + JSON of the last checkpoint by :func:`recstack.export.export_model` (checked against
        eager on real batches, as ``tools/to_static.py``).

        The export's JSON names the model's file reader (serving parses requests with it), so its sample batches
        come from files: ``data`` as a folder of files, or a table (default: the last one given to
        ``fit`` / ``evaluate``) whose first ``rows`` rows are written to ``<model_path>/export_sample/``.

        Args:
            out_dir: output folder (default ``model_path``, PaddleRec's layout).
            data: the sample data.
            rows: rows of a table written for the sample.
        """
        from recstack.export import export_model

        self._trained()
        if self.checkpoint is None:
            raise RuntimeError("no checkpoint to export: fit with epochs >= 1, or load one")
        data = self._sample if data is None else data
        if data is None:
            raise ValueError("export needs sample data: pass data (a table or a folder of files)")
        if isinstance(data, (str, os.PathLike)):
            folder = str(Path(data).resolve())
        else:
            folder = str(Path(self.runner["model_save_path"]) / "export_sample")
            spec = self.spec
            tabular = TabularSpec.from_config(self._make({})) if spec.kind == "tabular" else None
            memory.write_text(data, Path(folder) / "part-0.txt", spec.kind, tabular, spec.sequence, self.label,
                              spec.user_column, rows)
        reader = FILE_READERS[self.spec.kind]
        config = self._make({"train_data_dir": folder, "train_reader_path": reader, "test_data_dir": folder,
                             "infer_reader_path": reader})
        return export_model(config, out_dir, checkpoint=self.checkpoint)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _cleanup(workdir: str, folders: list[str]) -> None:
    for folder in folders:
        memory.release(folder)
    shutil.rmtree(workdir, ignore_errors=True)

"""The training wrapper contract (PaddleRec's ``DygraphModel``) with defaults.

A model folder's ``dygraph_model.py`` defines ``class DygraphModel(recstack.wrapper.DygraphModel)``
and overrides only what differs from these defaults:

==================  =====================================================================
``create_model``    build the ``nn.Module`` from ``hyper_parameters`` (always overridden)
``create_feeds``    batch dict → (model inputs, labels), by :attr:`feed_names` / :attr:`label_names`
``create_loss``     mean binary cross-entropy, summed over tasks
``create_optimizer`` optimizer by name from ``hyper_parameters.optimizer`` (+ ``reg``, ``clip_by_norm``)
``create_metrics``  one AUC per task: ``auc``, or ``auc_<task>`` for multi-task models
``train_forward``   feeds → forward → loss → metric update; returns (loss, metrics, print_dict)
``infer_forward``   feeds → forward → metric update; returns (metrics, print_dict)
==================  =====================================================================

Models return probabilities: one ``(B, 1)`` tensor, or a list/tuple of them
(one per task, in :attr:`task_names` order).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import Config, ConfigError, did_you_mean
from recstack.metrics import AUC, Metric
from recstack.optim import build_optimizer
from recstack.registry import OPTIMIZERS

Batch = dict[str, torch.Tensor]


def as_tasks(pred: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A model output as a list of per-task tensors."""
    return [pred] if isinstance(pred, torch.Tensor) else list(pred)


class DygraphModel:
    """Base class of every model wrapper.

    Attributes:
        feed_names: batch keys passed to ``model.forward``, in order.
        label_names: batch keys of the labels, one per task, in output order.
        task_names: names of the tasks for metric names (``auc_<task>``); empty for
            single-task models (metric ``auc``).
    """

    feed_names: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ("label",)
    task_names: tuple[str, ...] = ()

    # ------------------------------------------------------------------ model
    def create_model(self, config: Config) -> nn.Module:
        """Build the network, mapping ``hyper_parameters.*`` to its typed arguments."""
        raise NotImplementedError(f"{type(self).__module__}.DygraphModel must define create_model(config)")

    # ------------------------------------------------------------------ data
    def create_feeds(self, batch_data: Batch, config: Config) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Split a batch into model inputs and labels."""
        try:
            inputs = [batch_data[name] for name in self.feed_names]
            labels = [batch_data[name] for name in self.label_names]
        except KeyError as err:
            raise KeyError(f"batch has no column {err}; the reader gives {sorted(batch_data)}, "
                           f"the wrapper expects {list(self.feed_names + self.label_names)}") from None
        return inputs, labels

    # ------------------------------------------------------------------ training
    def create_loss(self, pred: torch.Tensor | Sequence[torch.Tensor], label: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean binary cross-entropy of each task, summed."""
        losses = [F.binary_cross_entropy(p, y.to(p.dtype)) for p, y in zip(as_tasks(pred), label)]
        return losses[0] if len(losses) == 1 else torch.stack(losses).sum()

    def create_optimizer(self, dy_model: nn.Module, config: Config, **options: Any):
        """Optimizer from ``hyper_parameters.optimizer`` (class, learning_rate, sparse, weight_decay),
        ``reg`` and ``clip_by_norm``.

        ``options`` go to :func:`recstack.optim.build_optimizer` and override those keys.
        """
        name = config.get("hyper_parameters.optimizer.class", "Adam", type=str)
        if name not in OPTIMIZERS:
            raise ConfigError(f"{config.source('hyper_parameters.optimizer.class')}: unknown optimizer '{name}'"
                              f"{did_you_mean(name.lower(), OPTIMIZERS.names())} (known: {', '.join(OPTIMIZERS.names())})")
        return build_optimizer(
            dy_model,
            name,
            config.get("hyper_parameters.optimizer.learning_rate", 0.001, type=float),
            reg=config.get("hyper_parameters.reg", 0.0, type=float),
            weight_decay=config.get("hyper_parameters.optimizer.weight_decay", 0.0, type=float),
            sparse=config.get("hyper_parameters.optimizer.sparse", True, type=bool),
            **{"clip_norm": config.get("hyper_parameters.clip_by_norm", None) or None, **options},
        )

    def create_metrics(self) -> tuple[list[Metric], list[str]]:
        """One AUC per task; PaddleRec's ``(metrics_list, metrics_list_name)``."""
        names = [f"auc_{t}" for t in self.task_names] if self.task_names else ["auc"]
        return [AUC() for _ in names], names

    def update_metrics(self, metrics_list: list[Metric], pred: Any, labels: Sequence[torch.Tensor]) -> None:
        """Feed each task's predictions to its metric."""
        for metric, p, y in zip(metrics_list, as_tasks(pred), labels):
            metric.update(p, y)

    def train_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[torch.Tensor, list[Metric], dict[str, Any] | None]:
        inputs, labels = self.create_feeds(batch_data, config)
        pred = dy_model(*inputs)
        loss = self.create_loss(pred, labels)
        self.update_metrics(metrics_list, pred, labels)
        return loss, metrics_list, None

    def infer_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[list[Metric], dict[str, Any] | None]:
        inputs, labels = self.create_feeds(batch_data, config)
        pred = dy_model(*inputs)
        self.update_metrics(metrics_list, pred, labels)
        return metrics_list, None


def load_wrapper(config: Config) -> DygraphModel:
    """The ``DygraphModel`` of the config's model folder (``<config dir>/dygraph_model.py``)."""
    from recstack.modules import load_module

    try:
        module = load_module(config.config_dir, "dygraph_model")
    except FileNotFoundError:
        raise FileNotFoundError(f"{config.config_dir} has no dygraph_model.py; a model folder holds net.py, "
                                "dygraph_model.py and its configs") from None
    cls = getattr(module, "DygraphModel", None)
    if cls is None:
        raise AttributeError(f"{module.__file__} defines no class DygraphModel")
    return cls()


def model_name(config: Config) -> str:
    """The model folder's name (``deepfm``, ``mmoe``)."""
    return config.config_dir.name

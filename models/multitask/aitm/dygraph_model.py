"""AITM training wrapper on PaddleRec's AITM CSV (Ali-CCP: click, then purchase).

Metrics ``auc_click`` and ``auc_purchase`` (``auc_<task>`` of ``hyper_parameters.task_names``); the loss is the
tasks' binary cross-entropies plus ``calibrator_alpha`` times the behavioural expectation calibrator
(:func:`calibrator_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from recstack.config import Bool, Check, Config, ConfigError, ListOf, NonNegativeNumber, OneOf, PositiveInt
from recstack.data.aitm import AITM_TASKS, feature_vocabulary
from recstack.wrapper import DygraphModel as BaseModel

from .net import AITM

Rate = Check("a number in [0, 1)", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
             "numbers in [0, 1)")


def _vocabulary_pair(item: object) -> bool:
    return (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
            and not isinstance(item[0], bool) and isinstance(item[1], int) and not isinstance(item[1], bool)
            and item[1] > 0)


Vocabulary = Check("a non-empty list of [feature name, vocabulary size] pairs, e.g. [['101', 238635], ['121', 98]]",
                   lambda v: isinstance(v, list) and len(v) > 0 and all(_vocabulary_pair(i) for i in v))


def calibrator_loss(pred: Sequence[torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """AITM's behavioural expectation calibrator: ``sum_{t>=2} max(y_t - y_{t-1}, 0)`` per sample, then the
    batch's mean (the paper's ``1/N sum``) or sum (PaddleRec's ``paddle.sum``).

    A sample whose later step is no likelier than the step before it (``y_t <= y_{t-1}``) adds exactly 0.

    Args:
        pred: ``T`` probabilities ``(B, 1)``, funnel order.
        reduction: ``"mean"`` or ``"sum"`` over the batch.
    """
    per_sample = sum(torch.clamp(later - earlier, min=0.0) for earlier, later in zip(pred[:-1], pred[1:]))
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


class DygraphModel(BaseModel):
    feed_names = ("features",)
    label_names = AITM_TASKS
    task_names = AITM_TASKS
    hyper_parameter_schema = {"embedding_size": PositiveInt, "dims": ListOf(PositiveInt, min_len=1),
                              "drop_prob": ListOf(Rate, min_len=1), "calibrator_alpha": NonNegativeNumber,
                              "calibrator_reduction": OneOf("mean", "sum"), "stop_gradient": Bool,
                              "feature_vocabulary": Vocabulary}
    #: calibrator weight and batch reduction (create_model reads them from the config)
    alpha: float = 0.6
    reduction: str = "mean"

    def create_model(self, config: Config) -> AITM:
        tasks = self.configure_tasks(config)
        if len(tasks) < 2:
            raise ConfigError(f"{config.source('hyper_parameters.task_names')}: AITM needs at least two tasks (the "
                              f"steps of a funnel, e.g. [click, purchase]), got {list(tasks)}")
        dims = config.get("hyper_parameters.dims", type=list)
        drop_prob = config.get("hyper_parameters.drop_prob", type=list)
        if len(drop_prob) != len(dims):
            raise ConfigError(f"{config.source('hyper_parameters.drop_prob')}: one rate per tower layer "
                              f"(dims has {len(dims)}), got {drop_prob}")
        self.alpha = config.get("hyper_parameters.calibrator_alpha", 0.6, type=float)
        self.reduction = config.get("hyper_parameters.calibrator_reduction", "mean", type=str).lower()
        return AITM(
            vocabulary_sizes=[size for _, size in feature_vocabulary(config)],
            embedding_size=config.get("hyper_parameters.embedding_size", type=int),
            tower_dims=dims,
            drop_prob=[float(p) for p in drop_prob],
            num_tasks=len(tasks),
            stop_gradient=config.get("hyper_parameters.stop_gradient", False, type=bool),
        )

    def create_loss(self, pred: Sequence[torch.Tensor], label: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_t BCE(y_t, label_t) + calibrator_alpha * calibrator_loss(y)``."""
        loss = torch.stack([F.binary_cross_entropy(p, y.to(p.dtype)) for p, y in zip(pred, label)]).sum()
        if self.alpha > 0:
            loss = loss + self.alpha * calibrator_loss(pred, self.reduction)
        return loss

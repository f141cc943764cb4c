"""EasyRec-style task towers: specs, validation, per-task losses and metrics, and a wrapper.

EasyRec's multi-task models (DBMTL, MMoE, ...) list their tasks as ``task_towers``::

    task_towers:
      - tower_name: is_valid_play
        label_name: is_valid_play
        loss_type: CLASSIFICATION        # BCE on sigmoid(logit); prediction = probability
        metrics_set: [auc]
        dnn: {hidden_units: [32, 16]}
        relation_dnn: {hidden_units: [8]}
        weight: 1.0
      - tower_name: play_time
        label_name: play_time
        loss_type: L2_LOSS               # MSE on the raw output; prediction = the value
        metrics_set: [mean_squared_error]
        dnn: {hidden_units: [32, 16]}
        relation_tower_names: [is_valid_play]
        relation_dnn: {hidden_units: [8]}
        weight: 1.0

:func:`parse_task_towers` reads and validates them (the relation chain
included: a tower may only name earlier towers), :func:`task_losses` gives the
weighted per-task losses (``weight * mean(loss)``, EasyRec's reduction), and
:class:`TaskTowerWrapper` is a :class:`recstack.wrapper.DygraphModel` that
trains and evaluates any net returning one prediction per tower, with metrics
named ``auc_<tower>`` and ``mse_<tower>`` (lower is better).

``loss_type`` and ``metrics_set`` are names looked up in :data:`recstack.registry.LOSSES`
(a :class:`TaskLoss` each, registered below: ``CLASSIFICATION``, ``L2_LOSS``) and
:data:`recstack.registry.METRICS` (the metric classes, registered in :mod:`recstack.metrics`:
``auc``, ``mean_squared_error``, ``accuracy``, ``log_loss``; ``gauc`` needs group keys the
towers do not pass). Registering another name makes it usable from a config (``doc/model_develop.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import Config, ConfigError, did_you_mean
from recstack.data.base import DataFormatError
from recstack.easyrec.schema import Node
from recstack.metrics import Metric  # also registers the metrics in METRICS
from recstack.registry import ACTIVATIONS, LOSSES, METRICS
from recstack.wrapper import Batch, DygraphModel, as_tasks

_TOWER_HINTS = {
    "num_class": "only num_class: 1 is supported",
    "task_space_indicator_label": "task-space weights are not supported yet",
    "in_task_space_weight": "task-space weights are not supported yet",
    "out_task_space_weight": "task-space weights are not supported yet",
    "losses": "multiple losses per tower are not supported yet; use loss_type",
}


@dataclass(frozen=True)
class DNNSpec:
    """EasyRec's ``DNN`` message: Linear -> [BatchNorm] -> activation -> [Dropout] per hidden layer.

    Attributes:
        hidden_units: widths (empty: identity).
        dropout_ratio: one rate per layer (empty: no dropout).
        activation: activation name (``relu``; EasyRec's ``tf.nn.relu`` is accepted).
        use_bn: BatchNorm after each Linear (EasyRec's default: true).
    """

    hidden_units: tuple[int, ...] = ()
    dropout_ratio: tuple[float, ...] = ()
    activation: str = "relu"
    use_bn: bool = True

    @property
    def dropout(self) -> list[float]:
        return list(self.dropout_ratio) if self.dropout_ratio else [0.0] * len(self.hidden_units)

    def output_dim(self, input_dim: int) -> int:
        return self.hidden_units[-1] if self.hidden_units else input_dim

    @classmethod
    def from_node(cls, node: Node) -> DNNSpec:
        """Parse ``{hidden_units, dropout_ratio, activation, use_bn}`` (unknown keys are errors)."""
        units = tuple(node.get_list("hidden_units", int, [], scalar_ok=True))
        if any(u < 1 for u in units):
            raise ConfigError(f"{node.where('hidden_units')}: expected positive widths, got {list(units)}")
        rates = tuple(float(r) for r in node.get_list("dropout_ratio", float, [], scalar_ok=True))
        if rates and len(rates) == 1 and len(units) > 1:
            rates = rates * len(units)
        if rates and len(rates) != len(units):
            raise ConfigError(f"{node.where('dropout_ratio')}: expected one rate per hidden layer "
                              f"({len(units)}), got {list(rates)}")
        if any(not 0 <= r < 1 for r in rates):
            raise ConfigError(f"{node.where('dropout_ratio')}: rates must be in [0, 1), got {list(rates)}")
        activation = node.get("activation", "relu", type=str)
        short = activation.removeprefix("tf.nn.")
        if short not in ACTIVATIONS:
            raise ConfigError(f"{node.where('activation')}: unknown activation {activation!r}"
                              f"{did_you_mean(short, ACTIVATIONS.names())} (known: {', '.join(ACTIVATIONS.names())})")
        use_bn = node.get("use_bn", True, type=bool)
        node.finish()
        return cls(units, rates, short, use_bn)


@dataclass(frozen=True)
class TaskTowerSpec:
    """One EasyRec task tower (``BayesTaskTower``).

    Attributes:
        tower_name: the task's name (metric names ``auc_<tower_name>``, ``mse_<tower_name>``).
        label_name: the label field it learns.
        loss_type: ``CLASSIFICATION`` (BCE, sigmoid output) or ``L2_LOSS`` (MSE, raw output); a name
            in :data:`recstack.registry.LOSSES`.
        metrics: EasyRec metric names (``auc``, ``mean_squared_error``), names in
            :data:`recstack.registry.METRICS`.
        dnn: the tower's own DNN (``None``: identity).
        relation_tower_names: earlier towers whose relation outputs this tower's relation DNN reads.
        relation_dnn: the relation DNN (``None``: identity).
        weight: the loss weight.
        plain_names: log names without the tower suffix (one-task models).
    """

    tower_name: str
    label_name: str
    loss_type: str = "CLASSIFICATION"
    metrics: tuple[str, ...] = ("auc",)
    dnn: DNNSpec | None = None
    relation_tower_names: tuple[str, ...] = ()
    relation_dnn: DNNSpec | None = None
    weight: float = 1.0
    #: metric and loss names without the ``_<tower_name>`` suffix (a single-task model: ``auc``, ``loss``)
    plain_names: bool = False

    @property
    def metric_names(self) -> list[str]:
        if self.plain_names:
            return [metric_log_name(m) for m in self.metrics]
        return [f"{metric_log_name(m)}_{self.tower_name}" for m in self.metrics]

    @property
    def loss(self) -> TaskLoss:
        """The registered :class:`TaskLoss` of :attr:`loss_type`."""
        return LOSSES.get(self.loss_type)

    @property
    def loss_name(self) -> str:
        return self.loss.log_name if self.plain_names else f"{self.loss.log_name}_{self.tower_name}"


@dataclass(frozen=True)
class TaskLoss:
    """What a ``loss_type`` means, registered in :data:`recstack.registry.LOSSES` under that name.

    Attributes:
        log_name: prefix of the tower's weighted loss in the log lines (``cross_entropy_loss_<tower>``).
        probability: the tower outputs ``sigmoid(logit)``, a probability (binary metrics such as ``auc``
            apply); ``False``: the raw value (a regression).
        default_metric: the ``metrics_set`` of a tower that names none.
        fn: ``fn(pred, label, tower)`` -> the tower's unweighted loss, a scalar; ``label`` already has
            ``pred``'s dtype and shape ``(B, 1)``.
    """

    log_name: str
    probability: bool
    default_metric: str
    fn: Callable[[torch.Tensor, torch.Tensor, TaskTowerSpec], torch.Tensor]


def _classification_loss(pred: torch.Tensor, label: torch.Tensor, tower: TaskTowerSpec) -> torch.Tensor:
    """``mean(BCE(p, y))``, ``p`` a probability, ``y`` in [0, 1] (else a DataFormatError: exit status 2)."""
    if bool(((label < 0) | (label > 1)).any()):
        bad = float(label[(label < 0) | (label > 1)][0])
        raise DataFormatError(f"tower '{tower.tower_name}' (CLASSIFICATION): label '{tower.label_name}' must "
                              f"be in [0, 1], got {bad}; use loss_type: L2_LOSS for a regression target")
    return F.binary_cross_entropy(pred, label)


def _l2_loss(pred: torch.Tensor, label: torch.Tensor, tower: TaskTowerSpec) -> torch.Tensor:
    """``mean((y_hat - y) ** 2)``."""
    return F.mse_loss(pred, label)


LOSSES.register("CLASSIFICATION", TaskLoss("cross_entropy_loss", True, "auc", _classification_loss))
LOSSES.register("L2_LOSS", TaskLoss("l2_loss", False, "mean_squared_error", _l2_loss))


def metric_log_name(name: str) -> str:
    """The logged prefix of the metric registered as ``name`` (``mean_squared_error`` -> ``mse``)."""
    return METRICS.get(name).log_name or name


def _metric_keys(node: Node, loss_type: str) -> tuple[str, ...]:
    """``metrics_set`` as EasyRec writes it (``[{auc: {}}]``) or plainly (``[auc]``, ``auc``); each name is
    looked up in :data:`recstack.registry.METRICS`."""
    loss = LOSSES.get(loss_type)
    raw = node.get("metrics_set", None)
    if raw is None:
        return (loss.default_metric,)
    items = raw if isinstance(raw, list) else [raw]
    keys: list[str] = []
    flat: list[tuple[str, Any]] = []
    for i, item in enumerate(items):
        where = node.where(f"metrics_set[{i}]" if isinstance(raw, list) else "metrics_set")
        if isinstance(item, dict) and all(not value for value in item.values()):
            flat.extend((where, key) for key in item)  # EasyRec's {auc: {}}
        else:
            flat.append((where, item))
    for where, item in flat:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: expected a metric name such as auc or mean_squared_error (or "
                              f"{{auc: {{}}}}), got {item!r}; metrics with settings are not supported")
        metric = METRICS.lookup(item, where)
        if metric.binary and not loss.probability:
            raise ConfigError(f"{where}: {item} needs a CLASSIFICATION tower; this tower's loss_type is {loss_type} "
                              "(use mean_squared_error)")
        if metric.needs_groups:
            raise ConfigError(f"{where}: {item} needs each sample's group (user) key, which task towers do not pass "
                              "(use auc)")
        if item in keys:
            raise ConfigError(f"{where}: metric {item} appears twice")
        keys.append(item)
    if not keys:
        raise ConfigError(f"{node.where('metrics_set')}: expected at least one metric")
    return tuple(keys)


def parse_task_towers(node: Node, label_fields: Sequence[str], key: str = "task_towers",
                      relations: bool = True) -> list[TaskTowerSpec]:
    """Read ``node[key]`` (a list of towers) and validate the towers and their relation chain.

    Args:
        node: the model section holding the towers (e.g. ``model_config.dbmtl``).
        label_fields: the data's label fields (``data_config.label_fields``); a tower's
            ``label_name`` defaults to the field at its position, as in EasyRec.
        key: the list's key.
        relations: accept ``relation_tower_names`` / ``relation_dnn`` (DBMTL's
            ``BayesTaskTower``); ``False`` for plain ``TaskTower`` lists.

    Raises:
        ConfigError: unknown or mistyped keys; a duplicate tower name; a label that
            is not a label field; an unsupported loss type or metric; a relation to an
            unknown tower, to itself, to a later tower, or a cycle.
    """
    towers: list[TaskTowerSpec] = []
    nodes = list(node.nodes(key, hints=_TOWER_HINTS))
    if not nodes:
        raise ConfigError(f"{node.where(key)}: expected at least one task tower")
    for i, tower in enumerate(nodes):
        name = tower.get("tower_name", type=str)
        if not name or not name.replace("_", "a").isalnum():
            raise ConfigError(f"{tower.where('tower_name')}: expected a name of letters, digits and _, got {name!r}")
        if name in [t.tower_name for t in towers]:
            raise ConfigError(f"{tower.where('tower_name')}: tower name '{name}' appears twice")
        default_label = label_fields[i] if i < len(label_fields) else None
        label = tower.get("label_name", default_label, type=str)
        if label is None or label not in label_fields:
            raise ConfigError(f"{tower.where('label_name')}: '{label}' is not a label field"
                              f"{did_you_mean(str(label), label_fields)} (data_config.label_fields: "
                              f"{', '.join(label_fields)})")
        loss_type = tower.get("loss_type", "CLASSIFICATION", type=str)
        LOSSES.lookup(loss_type, tower.where("loss_type"))
        metrics = _metric_keys(tower, loss_type)
        dnn = DNNSpec.from_node(tower.node("dnn")) if tower.get("dnn", None) is not None else None
        weight = float(tower.get("weight", 1.0, type=float))
        if weight < 0:
            raise ConfigError(f"{tower.where('weight')}: expected a weight >= 0, got {weight}")
        related: tuple[str, ...] = ()
        relation_dnn = None
        if relations:
            related = tuple(tower.get_list("relation_tower_names", str, [], scalar_ok=True))
            if tower.get("relation_dnn", None) is not None:
                relation_dnn = DNNSpec.from_node(tower.node("relation_dnn"))
        tower.finish()
        towers.append(TaskTowerSpec(name, label, loss_type, metrics, dnn, related, relation_dnn, weight))
    validate_relations(towers, [n.where("relation_tower_names") for n in nodes])
    return towers


def validate_relations(towers: Sequence[TaskTowerSpec], where: Sequence[str]) -> None:
    """Check the Bayesian chain: each ``relation_tower_names`` entry is an earlier tower.

    Towers are computed in config order (EasyRec's), so a tower can only read the
    relation outputs of towers listed before it.

    Raises:
        ConfigError: naming the tower, the bad entry and the problem: unknown tower,
            the tower itself, a cycle (``a -> b -> a``), or a later tower.
    """
    names = [t.tower_name for t in towers]
    graph = {t.tower_name: list(t.relation_tower_names) for t in towers}
    for i, tower in enumerate(towers):
        seen: set[str] = set()
        for other in tower.relation_tower_names:
            if other in seen:
                raise ConfigError(f"{where[i]}: tower '{other}' appears twice")
            seen.add(other)
            if other == tower.tower_name:
                raise ConfigError(f"{where[i]}: tower '{other}' names itself (a cycle)")
            if other not in names:
                raise ConfigError(f"{where[i]}: unknown tower '{other}'{did_you_mean(other, names)} "
                                  f"(towers: {', '.join(names)})")
            cycle = _path(graph, other, tower.tower_name)
            if cycle is not None:
                raise ConfigError(f"{where[i]}: relation cycle {' -> '.join([tower.tower_name, *cycle])}; "
                                  "the relations must form a chain from earlier to later towers")
            if names.index(other) > i:
                raise ConfigError(f"{where[i]}: tower '{tower.tower_name}' names the later tower '{other}'; towers "
                                  f"are computed in config order, so list '{other}' before '{tower.tower_name}'")


def _path(graph: dict[str, list[str]], start: str, goal: str) -> list[str] | None:
    """A path ``start -> ... -> goal`` along relation edges, or ``None``."""
    stack, parents = [start], {start: None}
    while stack:
        node = stack.pop()
        if node == goal:
            path = [node]
            while parents[path[-1]] is not None:
                path.append(parents[path[-1]])
            return path[::-1]
        for nxt in graph.get(node, []):
            if nxt not in parents:
                parents[nxt] = node
                stack.append(nxt)
    return None


# --------------------------------------------------------------------- losses and metrics
def task_losses(preds: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                towers: Sequence[TaskTowerSpec]) -> dict[str, torch.Tensor]:
    """Weighted loss of each tower, keyed by its log name (``cross_entropy_loss_<t>`` / ``l2_loss_<t>``).

    ``weight * fn(pred, label)`` with the tower's registered :class:`TaskLoss`:
    ``weight * mean(BCE(p, y))`` for CLASSIFICATION (``p`` a probability, ``y`` in [0, 1]),
    ``weight * mean((y_hat - y) ** 2)`` for L2_LOSS. The total loss is their sum.

    Raises:
        DataFormatError: a classification label outside [0, 1] (a user error: exit status 2).
    """
    out = {}
    for pred, label, tower in zip(preds, labels, towers):
        label = label.to(pred.dtype).reshape(pred.shape)
        loss = tower.loss.fn(pred, label, tower)
        out[tower.loss_name] = loss if tower.weight == 1.0 else tower.weight * loss
    return out


def _total(losses: Sequence[torch.Tensor]) -> torch.Tensor:
    return losses[0] if len(losses) == 1 else torch.stack(list(losses)).sum()


def task_metrics(towers: Sequence[TaskTowerSpec]) -> tuple[list[Metric], list[str], list[int]]:
    """Fresh metrics of all towers: (metrics, names ``auc_<t>`` / ``mse_<t>``, tower index of each)."""
    metrics, names, index = [], [], []
    for i, tower in enumerate(towers):
        for key, name in zip(tower.metrics, tower.metric_names):
            metrics.append(METRICS.get(key)())
            names.append(name)
            index.append(i)
    return metrics, names, index


class TaskTowerWrapper(DygraphModel):
    """A :class:`DygraphModel` for nets with EasyRec task towers.

    ``create_model`` of a subclass builds the net and calls :meth:`configure_towers`
    with the parsed towers and the batch keys the net takes. The net returns one
    ``(B, 1)`` prediction per tower (probability or value). Loss: the sum of the
    weighted per-task losses (:func:`task_losses`), the wrapper's :meth:`extra_losses`
    (from the net's extra outputs) and its :meth:`regularization_loss` (by default the
    net's own ``regularization_loss(*inputs)``, found inside DDP too); the batch log
    lines show each weighted loss.

    Until :meth:`configure_towers` is called (a model folder with a second, non-EasyRec
    configuration, such as MMoE's PaddleRec keys) every method falls back to
    :class:`DygraphModel`'s: summed BCE, ``auc_<task>`` metrics, no per-task log values.
    """

    towers: tuple[TaskTowerSpec, ...] = ()

    def configure_towers(self, towers: Sequence[TaskTowerSpec], feed_names: Sequence[str]) -> None:
        """Set the towers, the batch keys the net takes, and the labels / task names they imply."""
        self.towers = tuple(towers)
        self.feed_names = tuple(feed_names)
        self.label_names = tuple(t.label_name for t in towers)
        self.task_names = tuple(t.tower_name for t in towers)
        _, _, self._metric_task = task_metrics(self.towers)

    def describe_outputs(self, count: int) -> list[tuple[str | None, str]]:
        """One output per tower: a probability (CLASSIFICATION) or a regression value (L2_LOSS). A tower with
        ``plain_names`` (a one-task model) leaves its output unnamed, so exported metrics read ``auc`` as the
        training log does."""
        kinds = {t.tower_name: "probability" if t.loss.probability else "value" for t in self.towers}
        plain = {t.tower_name for t in self.towers if t.plain_names}
        return [(None if task in plain else task, kinds.get(task, kind) if task else kind)
                for task, kind in super().describe_outputs(count)]

    def create_loss(self, pred: torch.Tensor | Sequence[torch.Tensor], label: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum of the towers' weighted losses (no towers: :meth:`DygraphModel.create_loss`)."""
        if not self.towers:
            return super().create_loss(pred, label)
        return _total(list(task_losses(as_tasks(pred), label, self.towers).values()))

    def create_metrics(self) -> tuple[list[Metric], list[str]]:
        """The towers' metrics, ``auc_<tower>`` / ``mse_<tower>`` (no towers: one AUC per task)."""
        if not self.towers:
            return super().create_metrics()
        metrics, names, self._metric_task = task_metrics(self.towers)
        return metrics, names

    def update_metrics(self, metrics_list: list[Metric], pred: Any, labels: Sequence[torch.Tensor],
                       groups: torch.Tensor | None = None) -> None:
        """Each metric gets its tower's prediction and label (no towers: :meth:`DygraphModel.update_metrics`)."""
        if not self.towers:
            super().update_metrics(metrics_list, pred, labels, groups)
            return
        preds = as_tasks(pred)
        for metric, task in zip(metrics_list, self._metric_task):
            metric.update(preds[task], labels[task])

    def extra_losses(self, extras: dict[str, torch.Tensor], batch_data: Batch) -> dict[str, torch.Tensor]:
        """Weighted losses on the net's extra outputs (:meth:`forward_outputs`), keyed by their log name;
        they join the towers' losses in the total and in the log lines. Default: none."""
        return {}

    def train_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[torch.Tensor, list[Metric], dict[str, Any] | None]:
        """Feeds → :meth:`forward_outputs` → towers' losses + :meth:`extra_losses` + :meth:`regularization_loss`
        → metrics; the print_dict holds each weighted loss (no towers: :meth:`DygraphModel.train_forward`)."""
        if not self.towers:
            return super().train_forward(dy_model, metrics_list, batch_data, config)
        inputs, labels = self.create_feeds(batch_data, config)
        pred, extras = self.forward_outputs(dy_model, inputs)
        losses = task_losses(as_tasks(pred), labels, self.towers)
        losses.update(self.extra_losses(extras, batch_data))
        loss = _total(list(losses.values()))
        regularization = self.regularization_loss(dy_model, inputs)
        if regularization is not None:
            loss = loss + regularization
        self.update_metrics(metrics_list, pred, labels)
        return loss, metrics_list, {name: value.detach() for name, value in losses.items()}

"""EasyRec's task towers, with DBMTL's Bayesian relation step between them.

Specs come from :func:`recstack.easyrec.tasks.parse_task_towers`; a tower without
``relation_tower_names`` / ``relation_dnn`` is EasyRec's plain ``TaskTower``
(``dnn`` then one output unit), so MMoE-style models reuse this module too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from recstack.easyrec.tasks import DNNSpec, TaskTowerSpec
from recstack.layers.init import init_linear
from recstack.layers.mlp import MLP


def easyrec_dnn(input_dim: int, spec: DNNSpec | None) -> MLP:
    """EasyRec's ``DNN`` as an :class:`MLP`: Linear (Xavier-uniform, zero bias, as ``tf.layers.dense``)
    -> [BatchNorm1d] -> activation -> [Dropout] per hidden layer; ``None`` or no ``hidden_units``: identity.

    Shapes:
        ``(B, input_dim)`` -> ``(B, spec.hidden_units[-1])`` (``(B, input_dim)`` for identity).
    """
    if spec is None:
        return MLP(input_dim, [])
    return MLP(input_dim, spec.hidden_units, activation=spec.activation, dropout=spec.dropout,
               batch_norm=spec.use_bn, init="xavier_uniform", bias_init=0.0)


def linear_l2(modules: Iterable[nn.Module]) -> torch.Tensor:
    """``sum(||W||^2) / 2`` over the weights (not biases) of every ``nn.Linear`` in ``modules``
    (EasyRec's ``l2_regularization`` before its coefficient: ``tf.nn.l2_loss`` of each kernel)."""
    terms = [0.5 * m.weight.pow(2).sum() for module in modules for m in module.modules() if isinstance(m, nn.Linear)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class RelationTowers(nn.Module):
    """Task towers, visited in config order, each reading the relation outputs of the towers it names.

    For tower ``t``: ``h_t = dnn_t(x_t)``,
    ``r_t = relation_dnn_t([h_t, r_s for s in relation_tower_names_t])`` (concatenated, in the
    listed order), ``z_t = W_t r_t + b_t`` (one unit), and the prediction is ``sigmoid(z_t)``
    for ``CLASSIFICATION`` or ``z_t`` for ``L2_LOSS`` (the registered
    :class:`~recstack.easyrec.tasks.TaskLoss`'s ``probability``). The relation outputs flow into later
    towers without a stop-gradient, so a later task's loss also trains the earlier towers
    (EasyRec's DBMTL). Relation names must refer to earlier towers (checked by
    :func:`recstack.easyrec.tasks.validate_relations`; checked again here).

    Initialisation: every Linear Xavier-uniform with zero bias (TensorFlow's ``dense``).

    Args:
        input_dim: width of each tower's input, or one width per tower.
        towers: the tower specs, in order.
        logit_layer: ``False``: a tower whose relation output is already one unit wide takes it as its logit,
            without ``W_t, b_t`` (EasyRec's ``RankModel``, which adds its output layer only when the backbone's
            width differs from ``num_class``).

    Shapes:
        ``x``: ``(B, input_dim)`` shared by all towers, or a list of one ``(B, input_dim[i])``
        per tower -> list of one ``(B, 1)`` prediction per tower.
    """

    def __init__(self, input_dim: int | Sequence[int], towers: Sequence[TaskTowerSpec], logit_layer: bool = True
                 ) -> None:
        super().__init__()
        self.names = [t.tower_name for t in towers]
        self.classification = [t.loss.probability for t in towers]  # the registered loss_type's output
        dims = [input_dim] * len(towers) if isinstance(input_dim, int) else list(input_dim)
        if len(dims) != len(towers):
            raise ValueError(f"{len(dims)} input widths for {len(towers)} towers")
        self.dnns = nn.ModuleList(easyrec_dnn(dim, t.dnn) for dim, t in zip(dims, towers))
        widths: list[int] = []
        self.related: list[list[int]] = []
        relation_dnns, outputs = [], []
        for i, tower in enumerate(towers):
            index = []
            for name in tower.relation_tower_names:
                if name not in self.names[:i]:
                    raise ValueError(f"tower '{tower.tower_name}': relation tower '{name}' is not an earlier tower")
                index.append(self.names.index(name))
            self.related.append(index)
            width = self.dnns[i].output_dim + sum(widths[j] for j in index)
            relation_dnns.append(easyrec_dnn(width, tower.relation_dnn))
            widths.append(relation_dnns[-1].output_dim)
            outputs.append(init_linear(nn.Linear(widths[-1], 1), "xavier_uniform", 0.0)
                           if logit_layer or widths[-1] != 1 else nn.Identity())
        self.relation_dnns = nn.ModuleList(relation_dnns)
        self.outputs = nn.ModuleList(outputs)
        self.relation_widths = widths
        # towers without a dnn / relation_dnn skip the empty module's call
        self._has_dnn = [len(d) > 0 for d in self.dnns]
        self._has_relation_dnn = [len(d) > 0 for d in self.relation_dnns]
        self._has_logit_layer = [not isinstance(o, nn.Identity) for o in self.outputs]

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        inputs = [x] * len(self.names) if isinstance(x, torch.Tensor) else list(x)
        relations: list[torch.Tensor] = []
        predictions: list[torch.Tensor] = []
        for i, dnn in enumerate(self.dnns):
            parts = [dnn(inputs[i]) if self._has_dnn[i] else inputs[i]] + [relations[j] for j in self.related[i]]
            relation = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            if self._has_relation_dnn[i]:
                relation = self.relation_dnns[i](relation)
            relations.append(relation)
            logit = self.outputs[i](relation) if self._has_logit_layer[i] else relation
            predictions.append(torch.sigmoid(logit) if self.classification[i] else logit)
        return predictions

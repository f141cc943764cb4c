"""EasyRec's ``RankModel`` and ``MultiTaskModel``: a model that is only a backbone plus its task towers.

A config selects it with ``model_config.model_class: RankModel`` (one task: the backbone's output ->
optional ``top_mlp`` -> one logit: a Linear layer, none when the output is already one unit wide, as EasyRec)
or ``MultiTaskModel`` (the task towers of ``model_params.task_towers``, DBMTL's ``relation_tower_names`` /
``relation_dnn`` included); a built-in class name with a ``backbone`` section (``model_class: DBMTL`` +
``backbone``, EasyRec's DBMTL-on-MaskNet) is read the same way, the backbone taking the place of the model's
bottom. Any model folder can hold such a config: the folders
whose wrappers accept one (``for_config`` → :func:`backbone_wrapper`) say so in their README.

Loss and metrics are the task towers' (:class:`recstack.easyrec.tasks.TaskTowerWrapper`): per tower
``auc_<tower>`` / ``mse_<tower>``; a ``RankModel`` logs them without the suffix (``auc``, ``loss``), as
the rank models do. Regularisation: ``model_params.l2_regularization`` times ``sum ||W||^2 / 2`` over the
Linear weights of the backbone and the towers, plus ``model_config.embedding_regularization`` times
``sum e^2 / 2`` over the id embeddings a batch looks up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from recstack.backbone.components import InputShape, lookup
from recstack.backbone.engine import Backbone, shape_of
from recstack.backbone.spec import parse_backbone
from recstack.config import Config, ConfigError
from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.input_layer import InputLayer, example_inputs
from recstack.easyrec.schema import Node, source
from recstack.easyrec.task_tower import RelationTowers, easyrec_dnn, linear_l2
from recstack.easyrec.tasks import DNNSpec, TaskTowerSpec, TaskTowerWrapper, parse_task_towers
from recstack.layers.multitask import MLPExperts
from recstack.registry import LOSSES

#: model classes read as a backbone + one task
RANK_CLASSES = ("RankModel", "DeepFM", "DCN", "DCNV2", "DLRM", "WideAndDeep", "FiBiNet", "MaskNet", "DNN")
#: model classes read as a backbone + task towers
MULTI_TASK_CLASSES = ("MultiTaskModel", "MMoE", "DBMTL", "PLE", "ESMM")


class Head(nn.Module):
    """What sits on the backbone: an optional shared part (DBMTL's ``bottom_dnn``, MMoE's experts and gates)
    then the task towers.

    Args:
        shape: the backbone's output shape (``(D,)``, or a list of ``(D_i,)``, one per tower).
        towers: the task towers.
        bottom: a module built for ``shape`` whose output feeds the towers (``None``: the backbone's output).
        where: the config location for errors.
        logit_layer: ``False`` (``RankModel``): a one-unit wide backbone output is the logit itself (EasyRec adds
            its output layer only when the width differs from ``num_class``).
    """

    def __init__(self, shape: InputShape, towers: Sequence[TaskTowerSpec], bottom: nn.Module | None,
                 where: str, logit_layer: bool = True) -> None:
        super().__init__()
        self.bottom = bottom
        if bottom is not None:
            with torch.no_grad():
                shape = shape_of(bottom.eval()(example_of(shape)))
            bottom.train()
        shapes = shape if isinstance(shape, list) else [shape] * len(towers)
        if len(shapes) != len(towers):
            raise ConfigError(f"{where}: the backbone outputs a list of {len(shapes)} tensors for {len(towers)} "
                              f"task towers (one each, or one tensor for all)")
        if any(not isinstance(s, tuple) or len(s) != 1 for s in shapes):
            found = ["(B, " + ", ".join(map(str, s)) + ")" if isinstance(s, tuple) else "a list" for s in shapes]
            raise ConfigError(f"{where}: the task towers take (B, D) tensors; they get {found}")
        self.towers = RelationTowers([s[0] for s in shapes], towers, logit_layer=logit_layer)

    def forward(self, x: Any) -> list[torch.Tensor]:
        return self.towers(self.bottom(x) if self.bottom is not None else x)


def example_of(shape: InputShape, rows: int = 2) -> Any:
    """Zeros of a shape (a tensor, or a list for a list shape) with ``rows`` rows."""
    return [example_of(s, rows) for s in shape] if isinstance(shape, list) else torch.zeros((rows, *shape))


class BackboneNet(nn.Module):
    """Feature groups -> input layers -> the backbone's blocks -> [top_mlp] -> :class:`Head` (towers).

    Args:
        spec: features and feature groups.
        backbone: the ``model_config.backbone`` node.
        head: builds the head for the backbone's output shape.
        l2_regularization: coefficient of ``sum ||W||^2 / 2`` over the weights of backbone and head (every
            ``nn.Linear``, and the experts' fused kernels).
        embedding_regularization: coefficient of ``sum e^2 / 2`` over the batch's id embeddings.

    Shapes:
        ``forward(*inputs)`` takes the batch keys :attr:`input_names` in order and returns one ``(B, 1)``
        prediction per tower (probability or value). A backbone that outputs a list feeds element ``i`` to
        tower ``i`` (MMoE's per-task outputs); one tensor feeds every tower.
    """

    def __init__(self, spec: TabularSpec, backbone: Node, head: Callable[[InputShape], Head],
                 l2_regularization: float = 0.0, embedding_regularization: float = 0.0) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec)
        parsed = parse_backbone(backbone, [g.name for g in spec.groups])
        example = example_inputs(spec, self.embedding.input_names)
        self.backbone = Backbone(parsed, lambda group, options: InputLayer(self.embedding, group, options), example)
        self.input_names = list(self.backbone.input_names)
        self.head = head(self.backbone.output_shape)
        self.l2_regularization = l2_regularization
        self.embedding_regularization = embedding_regularization

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.backbone(dict(zip(self.input_names, inputs))))

    def weights_l2(self) -> torch.Tensor:
        """``sum ||W||^2 / 2`` over the Linear weights and expert kernels of backbone and head."""
        terms = [linear_l2([self.backbone, self.head])]
        linear = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}  # counted just above
        terms += [0.5 * w.pow(2).sum() for m in self.modules() if isinstance(m, MLPExperts) for w in m.kernels()
                  if id(w) not in linear]
        return torch.stack(terms).sum()

    def regularization_loss(self, *inputs: torch.Tensor) -> torch.Tensor | None:
        """``l2_regularization * sum ||W||^2 / 2`` (+ the embedding term for this batch); ``None`` when both
        coefficients are 0 (no term to add)."""
        if not self.l2_regularization and not self.embedding_regularization:
            return None
        loss = self.l2_regularization * self.weights_l2() if self.l2_regularization else torch.zeros(())
        if self.embedding_regularization:
            batch = dict(zip(self.input_names, inputs))
            loss = loss + self.embedding_regularization * self.embedding.batch_penalty(batch)
        return loss


def is_backbone_config(config: Config) -> bool:
    """The config's ``model_config`` has a ``backbone`` or names ``RankModel`` / ``MultiTaskModel``."""
    model = config.get("hyper_parameters.model_config", None)
    return isinstance(model, dict) and (model.get("backbone") is not None
                                        or model.get("model_class") in ("RankModel", "MultiTaskModel"))


class BackboneWrapper(TaskTowerWrapper):
    """The training wrapper of a backbone config (any model folder; see the module docstring)."""

    def create_model(self, config: Config) -> BackboneNet:
        spec = TabularSpec.from_config(config)
        model = Node.at(config, "hyper_parameters.model_config")
        model.get("feature_groups")  # parsed by TabularSpec
        model.get("model_name", None, type=str)  # a comment (EasyRec's)
        name = model.get("model_class", type=str)
        if name not in RANK_CLASSES + MULTI_TASK_CLASSES:
            raise ConfigError(f"{model.where('model_class')}: a backbone model is RankModel or MultiTaskModel (or "
                              f"one of {', '.join(RANK_CLASSES[1:] + MULTI_TASK_CLASSES[1:])} with a backbone), "
                              f"got {name!r}")
        if model.get("backbone", None) is None:
            raise ConfigError(f"{model.where('backbone')}: model_class {name} needs a backbone section "
                              "(doc/backbone.md)")
        backbone = model.node("backbone")
        embedding_regularization = float(model.get("embedding_regularization", 0.0, type=float))
        if embedding_regularization < 0:
            raise ConfigError(f"{model.where('embedding_regularization')}: must be >= 0, got "
                              f"{embedding_regularization}")
        # where the towers are: model_params (RankModel / MultiTaskModel) or the model's own message
        own = {"MMoE": "mmoe", "DBMTL": "dbmtl"}.get(name)
        params = model.node(own) if own else model.node("model_params", {})
        where = source(params.config, params.key)
        if name in MULTI_TASK_CLASSES:
            towers = parse_task_towers(params, spec.label_fields)
        else:
            towers = [self._rank_tower(model, spec)]
        bottom = self._bottom(name, params, len(towers))
        l2 = float(params.get("l2_regularization", 1e-4 if own else 0.0, type=float))
        if l2 < 0:
            raise ConfigError(f"{params.where('l2_regularization')}: must be >= 0, got {l2}")

        def head(shape: InputShape) -> Head:
            return Head(shape, towers, bottom(shape) if bottom is not None else None, where,
                        logit_layer=name in MULTI_TASK_CLASSES)

        net = BackboneNet(spec, backbone, head, l2, embedding_regularization)
        params.finish()
        model.finish()
        self.configure_towers(towers, net.input_names)
        return net

    @staticmethod
    def _bottom(name: str, params: Node, num_towers: int) -> Callable[[InputShape], nn.Module] | None:
        """The model's own shared part on the backbone: DBMTL's ``bottom_dnn``, MMoE's experts and gates."""
        if name == "DBMTL" and params.get("bottom_dnn", None) is not None:
            dnn = DNNSpec.from_node(params.node("bottom_dnn"))

            def dbmtl_bottom(shape: InputShape) -> nn.Module:
                if not isinstance(shape, tuple) or len(shape) != 1:
                    raise ConfigError(f"{params.where('bottom_dnn')}: needs a (B, D) backbone output, got {shape}")
                return easyrec_dnn(shape[0], dnn)

            return dbmtl_bottom
        if name == "MMoE":
            experts = params.node("expert_dnn")
            mmoe = Node(params.config, params.key, {"num_task": num_towers,
                                                    "num_expert": params.get("num_expert", type=int),
                                                    "expert_mlp": experts.value})
            experts.read.update(experts.value)

            def mmoe_bottom(shape: InputShape) -> nn.Module:
                return lookup("MMoE", params.where("num_expert")).build(mmoe, shape)

            return mmoe_bottom
        return None

    @staticmethod
    def _rank_tower(model: Node, spec: TabularSpec) -> TaskTowerSpec:
        """One tower on the first label: ``model_config.loss_type`` (default CLASSIFICATION) and its metric."""
        if not spec.label_fields:
            raise ConfigError(f"{model.where('model_class')}: a RankModel needs data_config.label_fields")
        loss_type = model.get("loss_type", "CLASSIFICATION", type=str)
        loss = LOSSES.lookup(loss_type, model.where("loss_type"))
        metrics = ("auc",) if loss.probability else ("mean_squared_error",)
        return TaskTowerSpec(tower_name=spec.label_fields[0], label_name=spec.label_fields[0], loss_type=loss_type,
                             metrics=metrics, plain_names=True)


def backbone_wrapper(config: Config) -> BackboneWrapper | None:
    """A :class:`BackboneWrapper` for a backbone config, ``None`` for any other (a model folder's ``for_config``)."""
    return BackboneWrapper() if is_backbone_config(config) else None


class ReadsBackboneConfigs:
    """Mixin for a model folder's ``DygraphModel`` whose folder also holds backbone configs
    (``config_backbone.yaml``): those are read by :class:`BackboneWrapper`, the folder's own configs as before::

        class DygraphModel(ReadsBackboneConfigs, TaskTowerWrapper): ...
    """

    @classmethod
    def for_config(cls, config: Config) -> TaskTowerWrapper:
        return backbone_wrapper(config) or cls()

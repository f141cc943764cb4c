"""MMoE training wrapper, two ways to configure it (chosen by ``hyper_parameters.model_config``):

* **PaddleRec** (census format, ``config.yaml``, ``config_video.yaml``): ``feature_size``,
  ``expert_num``, ``expert_size``, ``tower_size``, ``gate_num`` and ``task_names`` (default
  income, marital; the short-video data: like, completion); loss = sum of the tasks' BCE,
  metrics ``auc_<task>``. ``gate_type: dselect_k`` (default ``softmax``) swaps the softmax gates for
  DSelect-k gates (``num_selectors``, ``gamma``, ``entropy_reg``, ``entropy_reg_warmup_steps``,
  ``gate_per_example``); their regulariser joins the loss through the net's ``regularization_loss``.
* **EasyRec** (``config_easyrec.yaml``): ``data_config`` / ``feature_config`` / ``model_config``
  with ``model_config.mmoe`` (``expert_dnn``, ``num_expert``, ``task_towers``,
  ``l2_regularization``) and ``model_config.embedding_regularization``; tasks, weighted losses
  and ``auc_<tower>`` / ``mse_<tower>`` metrics from :class:`recstack.easyrec.tasks.TaskTowerWrapper`.

PaddleRec mode configures no towers, so :class:`recstack.easyrec.tasks.TaskTowerWrapper` falls back to the
base wrapper's summed BCE, ``auc_<task>`` metrics and log lines.

The two key sets are exclusive: mixing them is a config error.
"""

from __future__ import annotations

from torch import nn

from recstack.backbone.model import ReadsBackboneConfigs
from recstack.config import (
    Bool,
    Config,
    ConfigError,
    NonNegativeInt,
    NonNegativeNumber,
    OneOf,
    PositiveInt,
    PositiveNumber,
)
from recstack.easyrec.features import easyrec_model_config
from recstack.easyrec.tasks import DNNSpec, TaskTowerWrapper, parse_task_towers

from .net import GATE_TYPES, EasyRecMMoE, MMoE

#: PaddleRec's MMoE keys -> what EasyRec's MMoE writes instead
PADDLEREC_KEYS = {
    "feature_size": "data_config / feature_config (the group 'all' sets the input width)",
    "expert_num": "model_config.mmoe.num_expert",
    "expert_size": "model_config.mmoe.expert_dnn.hidden_units",
    "tower_size": "model_config.mmoe.task_towers[].dnn.hidden_units",
    "gate_num": "one gate per model_config.mmoe.task_towers entry",
    "task_names": "model_config.mmoe.task_towers[].tower_name",
}
EASYREC_SECTIONS = ("data_config", "feature_config")
#: the DSelect-k gate's keys (PaddleRec mode, ``gate_type: dselect_k``) and their defaults
DSELECT_K_KEYS = {"num_selectors": 2, "gamma": 1.0, "entropy_reg": 0.0, "entropy_reg_warmup_steps": 0,
                  "gate_per_example": True}
_MMOE_HINTS = {
    "experts": "EasyRec's deprecated per-expert list (experts) is not supported; use expert_dnn and num_expert",
}


class DygraphModel(ReadsBackboneConfigs, TaskTowerWrapper):
    # PaddleRec mode's keys; EasyRec mode's model_config is read (typed, ranges checked) by recstack.easyrec.schema.Node
    hyper_parameter_schema = {**{key: PositiveInt for key in ("feature_size", "expert_num", "expert_size",
                                                              "tower_size", "gate_num")},
                              "gate_type": OneOf(*GATE_TYPES), "num_selectors": PositiveInt, "gamma": PositiveNumber,
                              "entropy_reg": NonNegativeNumber, "entropy_reg_warmup_steps": NonNegativeInt,
                              "gate_per_example": Bool}
    # PaddleRec mode; EasyRec mode sets these from the task towers (configure_towers)
    feed_names = ("features",)
    label_names = ("income", "marital")
    task_names = ("income", "marital")

    def create_model(self, config: Config) -> nn.Module:
        hp = config.section("hyper_parameters")
        if hp.get("model_config") is None:
            for key in EASYREC_SECTIONS:
                if key in hp:
                    raise ConfigError(f"{config.source('hyper_parameters.' + key)}: EasyRec's {key} needs "
                                      "hyper_parameters.model_config (feature_groups and mmoe) as well; or use "
                                      "PaddleRec's keys (feature_size, expert_num, ...) without it")
            return self._paddlerec_model(config)
        for key in ("gate_type", *DSELECT_K_KEYS):
            if key in hp:
                raise ConfigError(f"{config.source('hyper_parameters.' + key)}: the gate keys (gate_type, "
                                  "num_selectors, ...) apply to PaddleRec's MMoE keys (feature_size, expert_num, ...); "
                                  "EasyRec's MMoE (model_config) has softmax gates")
        for key, instead in PADDLEREC_KEYS.items():
            if key in hp:
                raise ConfigError(f"{config.source('hyper_parameters.' + key)}: PaddleRec's MMoE key '{key}' cannot be "
                                  f"mixed with EasyRec's model_config (the EasyRec MMoE writes {instead}); remove "
                                  "one of the two")
        return self._easyrec_model(config)

    def _paddlerec_model(self, config: Config) -> MMoE:
        tasks = self.configure_tasks(config, count_key="hyper_parameters.gate_num")
        hp = config.section("hyper_parameters")
        gate_type = config.get("hyper_parameters.gate_type", "softmax", type=str)
        gate: dict = {}
        if gate_type == "dselect_k":
            gate = {key: config.get(f"hyper_parameters.{key}", default, type=type(default))
                    for key, default in DSELECT_K_KEYS.items()}
            expert_num = config.get("hyper_parameters.expert_num", type=int)
            if expert_num < 2:
                raise ConfigError(f"{config.source('hyper_parameters.expert_num')}: the dselect_k gate selects among "
                                  f"at least 2 experts, got {expert_num}")
        else:
            for key in DSELECT_K_KEYS:
                if key in hp:
                    raise ConfigError(f"{config.source('hyper_parameters.' + key)}: a key of the DSelect-k gate; set "
                                      f"hyper_parameters.gate_type: dselect_k to use it (gate_type is {gate_type})")
        return MMoE(
            feature_size=config.get("hyper_parameters.feature_size", type=int),
            expert_num=config.get("hyper_parameters.expert_num", type=int),
            expert_size=config.get("hyper_parameters.expert_size", type=int),
            tower_size=config.get("hyper_parameters.tower_size", type=int),
            gate_num=len(tasks),
            gate_type=gate_type,
            **gate,
        )

    def _easyrec_model(self, config: Config) -> EasyRecMMoE:
        spec, model, embedding_regularization = easyrec_model_config(config, "MMoE")
        mmoe = model.node("mmoe", hints=_MMOE_HINTS)
        expert_dnn = DNNSpec.from_node(mmoe.node("expert_dnn"))
        if not expert_dnn.hidden_units:
            raise ConfigError(f"{mmoe.where('expert_dnn.hidden_units')}: an expert needs at least one hidden layer")
        num_expert = mmoe.get("num_expert", type=int)
        if num_expert < 1:
            raise ConfigError(f"{mmoe.where('num_expert')}: expected at least 1 expert, got {num_expert}")
        for i, tower in enumerate(mmoe.get("task_towers", [])):
            for key in ("relation_tower_names", "relation_dnn"):
                if isinstance(tower, dict) and key in tower:
                    raise ConfigError(f"{mmoe.where(f'task_towers[{i}].{key}')}: relations between towers are DBMTL's "
                                      "(models/multitask/dbmtl); EasyRec's MMoE towers have none")
        towers = parse_task_towers(mmoe, spec.label_fields, relations=False)
        l2 = float(mmoe.get("l2_regularization", 1e-4, type=float))
        if l2 < 0:
            raise ConfigError(f"{mmoe.where('l2_regularization')}: must be >= 0, got {l2}")
        mmoe.finish()
        model.finish()
        net = EasyRecMMoE(spec, expert_dnn, num_expert, towers, l2_regularization=l2,
                          embedding_regularization=embedding_regularization)
        self.configure_towers(towers, net.input_names)
        return net

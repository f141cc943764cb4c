"""DBMTL training wrapper: EasyRec's ``model_config`` (feature groups + ``dbmtl``) read from ``hyper_parameters``.

Tasks, losses and metrics come from ``model_config.dbmtl.task_towers``
(:class:`recstack.easyrec.tasks.TaskTowerWrapper`): metrics ``auc_<tower>`` for
CLASSIFICATION towers, ``mse_<tower>`` for L2_LOSS towers.
"""

from __future__ import annotations

from recstack.backbone.model import ReadsBackboneConfigs
from recstack.config import Config, ConfigError
from recstack.easyrec.features import easyrec_model_config
from recstack.easyrec.tasks import DNNSpec, TaskTowerWrapper, parse_task_towers

from .net import DBMTL

_DBMTL_HINTS = {
    "expert_dnn": "DBMTL with MMoE experts (expert_dnn / num_expert) is not supported yet",
    "num_expert": "DBMTL with MMoE experts (expert_dnn / num_expert) is not supported yet",
    "bottom_cmbf": "multimodal bottoms (bottom_cmbf) are not supported",
    "bottom_uniter": "multimodal bottoms (bottom_uniter) are not supported",
}


class DygraphModel(ReadsBackboneConfigs, TaskTowerWrapper):
    def create_model(self, config: Config) -> DBMTL:
        spec, model, embedding_regularization = easyrec_model_config(config, "DBMTL")
        dbmtl = model.node("dbmtl", hints=_DBMTL_HINTS)
        bottom = DNNSpec.from_node(dbmtl.node("bottom_dnn")) if dbmtl.get("bottom_dnn", None) is not None else None
        towers = parse_task_towers(dbmtl, spec.label_fields)
        l2 = float(dbmtl.get("l2_regularization", 1e-4, type=float))
        use_feature_bn = dbmtl.get("use_feature_bn", False, type=bool)
        if l2 < 0:
            raise ConfigError(f"{dbmtl.where('l2_regularization')}: must be >= 0, got {l2}")
        dbmtl.finish()
        model.finish()
        net = DBMTL(spec, bottom, towers, l2_regularization=l2, embedding_regularization=embedding_regularization,
                    use_feature_bn=use_feature_bn)
        self.configure_towers(towers, net.input_names)
        return net

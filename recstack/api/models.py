"""Model constructors over Python features (torch-rechub's ``DeepFM(deep_features, fm_features, mlp_params)``).

Each constructor returns a :class:`ModelSpec`: the model folder (``models/rank/<name>``) and the
``hyper_parameters`` its YAML would hold. The network itself is built by that folder's wrapper
(:func:`recstack.wrapper.build_model`, which loads ``dygraph_model.py`` / ``net.py`` by path): the same
class, parameters and initialisation draws as ``tools/trainer.py -m models/rank/<name>/config_tabular.yaml``.

Rank models from a feature config: :func:`DeepFM`, :func:`xDeepFM`, :func:`DCN`, :func:`DCNv2`,
:func:`WideDeep`, :func:`DNN`. Sequence model: :func:`DIN`. Not offered: FM, FFM, DeepFEFM, DLRM, GateNet and
logistic regression, whose folders read only PaddleRec's slot format (their wrappers do not build from a
feature config yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from recstack.api.features import Feature, SequenceFeature, SparseFeature, tabular_hyper_parameters
from recstack.config import Config, from_dict

#: the repository's model folders (``models/`` beside the ``recstack`` package)
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


@dataclass
class ModelSpec:
    """What to build: a model folder and its ``hyper_parameters`` (without ``optimizer``).

    Attributes:
        folder: the model folder (``models/rank/deepfm``).
        kind: ``"tabular"`` (feature-config rank models: data become ``<group>.ids`` / ``<group>.values``)
            or ``"din"`` (DIN's history columns).
        groups: feature groups ``(name, features, wide_deep)`` (tabular).
        hyper_parameters: the model's own keys (``fc_sizes``, ...).
        sequence: DIN's ``(history, target)`` feature pairs.
        user_column: DIN: the column of user ids for GAUC (absent: -1, unknown).
    """

    folder: Path
    kind: str
    hyper_parameters: dict[str, Any]
    groups: list[tuple[str, Sequence[Feature], str]] = field(default_factory=list)
    sequence: list[tuple[SequenceFeature, SparseFeature]] = field(default_factory=list)
    user_column: str = "user"

    @property
    def name(self) -> str:
        return self.folder.name

    def model_hyper_parameters(self, label: str, columns: Sequence[str] | None = None) -> dict[str, Any]:
        """The ``hyper_parameters`` keys of the model (with the feature config of a tabular model)."""
        hp = dict(self.hyper_parameters)
        if self.kind == "tabular":
            hp.update(tabular_hyper_parameters(self.groups, label, self.hyper_parameters_class, columns))
        return hp

    @property
    def hyper_parameters_class(self) -> str:
        return _MODEL_CLASS[self.name]

    def build(self, label: str = "label") -> nn.Module:
        """The network (the folder's ``net.py`` class) freshly initialised, as the trainer builds it (seeded by
        :class:`recstack.api.Trainer`; here unseeded)."""
        import torch

        from recstack.wrapper import build_model

        return build_model(make_config(self, {}, label=label), torch.device("cpu"))[1]


def make_config(model: ModelSpec, runner: Mapping[str, Any], label: str = "label",
                optimizer: Mapping[str, Any] | None = None, hyper_parameters: Mapping[str, Any] | None = None,
                columns: list[str] | None = None) -> Config:
    """The validated :class:`~recstack.config.Config` of ``model`` with these ``runner`` keys, as
    :func:`recstack.config.load_config` would give for the equivalent YAML in the model folder.

    Args:
        model: the model (its folder becomes ``config_dir``: the wrapper and file readers are found there).
        runner: ``runner`` keys.
        label: the label column.
        optimizer: ``hyper_parameters.optimizer`` (``class``, ``learning_rate``, ...).
        hyper_parameters: further ``hyper_parameters`` keys (``clip_by_norm``, ``reg``).
        columns: the data files' columns in order (feature-config models reading files).
    """
    hp: dict[str, Any] = {"optimizer": dict(optimizer or {"class": "Adam", "learning_rate": 0.001})}
    hp.update(hyper_parameters or {})
    hp.update(model.model_hyper_parameters(label, columns))
    return from_dict({"runner": dict(runner), "hyper_parameters": hp}, model.folder)


_MODEL_CLASS = {"deepfm": "DeepFM", "xdeepfm": "xDeepFM", "dcn": "DCN", "dcn_v2": "DCNv2", "wide_deep": "WideAndDeep",
                "dnn": "DNN"}


def _dims(params: Mapping[str, Any] | None, what: str, allowed: Sequence[str] = ("dims",)) -> dict[str, Any]:
    params = dict(params or {})
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unsupported keys {unknown} (supported: {', '.join(allowed)})")
    if "dims" not in params:
        raise ValueError(f"{what}: give the hidden widths as {{'dims': [128, 64]}}")
    params["dims"] = [int(d) for d in params["dims"]]
    return params


def _rank(folder: str, groups: list[tuple[str, Sequence[Feature], str]], **hp: Any) -> ModelSpec:
    return ModelSpec(MODELS_DIR / "rank" / folder, "tabular", hp, groups=groups)


def DeepFM(deep_features: Sequence[Feature], fm_features: Sequence[Feature] | None = None,  # noqa: N802
           mlp_params: Mapping[str, Any] | None = None) -> ModelSpec:
    """DeepFM (models/rank/deepfm/net.py). FM and DNN read the same fields here, so ``fm_features`` must name the
    same features as ``deep_features`` (or be left out); every feature needs the same ``embed_dim``, numeric ones
    too (``DenseFeature(embed_dim=8)`` or ``boundaries``). ``mlp_params``: ``{"dims": [128, 64]}``."""
    if fm_features is not None and {f.name for f in fm_features} != {f.name for f in deep_features}:
        raise ValueError("recstack's DeepFM reads one set of fields for its FM and its DNN: fm_features must be the "
                         "deep_features")
    return _rank("deepfm", [("all", list(deep_features), "DEEP")], fc_sizes=_dims(mlp_params, "mlp_params")["dims"])


def xDeepFM(features: Sequence[Feature], cin_layer_sizes: Sequence[int] = (32, 16),  # noqa: N802
            mlp_params: Mapping[str, Any] | None = None) -> ModelSpec:
    """xDeepFM (models/rank/xdeepfm/net.py): CIN + DNN over fields of one ``embed_dim``."""
    return _rank("xdeepfm", [("all", list(features), "DEEP")], layer_sizes_cin=[int(s) for s in cin_layer_sizes],
                 layer_sizes_dnn=_dims(mlp_params, "mlp_params")["dims"])


def DCN(features: Sequence[Feature], n_cross_layers: int = 2, mlp_params: Mapping[str, Any] | None = None,  # noqa: N802
        l2_reg_cross: float = 0.0, dnn_use_bn: bool = False) -> ModelSpec:
    """Deep & Cross Network (models/rank/dcn/net.py)."""
    return _rank("dcn", [("all", list(features), "DEEP")], fc_sizes=_dims(mlp_params, "mlp_params")["dims"],
                 cross_num=int(n_cross_layers), l2_reg_cross=float(l2_reg_cross), dnn_use_bn=bool(dnn_use_bn))


def DCNv2(features: Sequence[Feature], n_cross_layers: int = 2, mlp_params: Mapping[str, Any] | None = None,  # noqa: N802
          stacked: bool = True, low_rank_mixture: bool = True, low_rank: int = 32, num_experts: int = 4,
          l2_reg_cross: float = 0.0, dnn_use_bn: bool = False) -> ModelSpec:
    """DCN-V2 (models/rank/dcn_v2/net.py): stacked or parallel, full-rank or low-rank mixture cross layers."""
    return _rank("dcn_v2", [("all", list(features), "DEEP")], fc_sizes=_dims(mlp_params, "mlp_params")["dims"],
                 cross_num=int(n_cross_layers), is_Stacked=bool(stacked), use_low_rank_mixture=bool(low_rank_mixture),
                 low_rank=int(low_rank), num_experts=int(num_experts), l2_reg_cross=float(l2_reg_cross),
                 dnn_use_bn=bool(dnn_use_bn))


def WideDeep(wide_features: Sequence[Feature], deep_features: Sequence[Feature],  # noqa: N802
             mlp_params: Mapping[str, Any] | None = None) -> ModelSpec:
    """Wide & Deep (models/rank/wide_deep/net.py): the wide features a linear part (a weight per id, per value),
    the deep features the MLP."""
    return _rank("wide_deep", [("wide", list(wide_features), "WIDE"), ("deep", list(deep_features), "DEEP")],
                 fc_sizes=_dims(mlp_params, "mlp_params")["dims"])


def DNN(features: Sequence[Feature], mlp_params: Mapping[str, Any] | None = None) -> ModelSpec:  # noqa: N802
    """An MLP over the fields and dense values (models/rank/dnn/net.py)."""
    return _rank("dnn", [("all", list(features), "DEEP")], fc_sizes=_dims(mlp_params, "mlp_params")["dims"])


def DIN(features: Sequence[Feature], history_features: Sequence[SequenceFeature],  # noqa: N802
        target_features: Sequence[SparseFeature], mlp_params: Mapping[str, Any] | None = None,
        attention_mlp_params: Mapping[str, Any] | None = None, attention_softmax: bool = True,
        init_std: float = 0.3, user_column: str = "user") -> ModelSpec:
    """Deep Interest Network (models/rank/din/net.py).

    recstack's DIN attends over an item history and a category history: ``target_features`` are the candidate
    item and its category (in that order), ``history_features`` the two histories, each ``shared_with`` its
    target (one table serves both). ``features`` (other user or context features) must be empty: the net has
    no input for them yet.

    Args:
        mlp_params: ``{"dims": [80, 40], "activation": "sigmoid"}`` (``dice``, ``relu``, ``prelu`` too); the
            activation also serves the attention unit.
        attention_mlp_params: ``{"dims": [80, 40]}``.
        attention_softmax: softmax-normalised attention weights (PaddleRec's); ``False``: the paper's raw weights.
        init_std: std of the embedding tables.
        user_column: the column of user ids for GAUC (-1 where absent).
    """
    if list(features):
        raise ValueError("recstack's DIN reads the histories and the target only; pass features=[]")
    if len(target_features) != 2 or len(history_features) != 2:
        raise ValueError("DIN takes two target features (item, category) and their two histories")
    pairs = []
    for target in target_features:
        history = [h for h in history_features if h.shared_with == target.name]
        if len(history) != 1:
            raise ValueError(f"expected one SequenceFeature with shared_with='{target.name}', got {len(history)}")
        h = history[0]
        if h.pooling != "attention" or (h.vocab_size, h.embed_dim) != (target.vocab_size, target.embed_dim):
            raise ValueError(f"history '{h.name}' shares the table of '{target.name}': pooling 'attention', "
                             f"vocab_size {target.vocab_size}, embed_dim {target.embed_dim}")
        if target.hashed:
            raise ValueError(f"DIN reads integer ids: '{target.name}' cannot be hashed")
        pairs.append((h, target))
    mlp = _dims(mlp_params, "mlp_params", ("dims", "activation"))
    attention = _dims(attention_mlp_params, "attention_mlp_params")
    (_, item), (_, cat) = pairs
    hp = {"item_count": item.vocab_size, "cat_count": cat.vocab_size, "item_emb_size": item.embed_dim,
          "cat_emb_size": cat.embed_dim, "act": mlp.get("activation", "sigmoid"), "fc_sizes": mlp["dims"],
          "attention_sizes": attention["dims"], "attention_softmax": bool(attention_softmax),
          "init_std": float(init_std)}
    return ModelSpec(MODELS_DIR / "rank" / "din", "din", hp, sequence=pairs, user_column=user_column)


__all__ = ["make_config", "DCN", "DCNv2", "DIN", "DNN", "DeepFM", "ModelSpec", "WideDeep", "xDeepFM"]

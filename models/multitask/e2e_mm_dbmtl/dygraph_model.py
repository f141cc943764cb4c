"""E2E_MM_DBMTL training wrapper: EasyRec's ``model_config`` (feature groups ``all`` / ``img`` / ``sample_num`` +
``e2e_mm_dbmtl``) and ``export_config`` read from ``hyper_parameters``.

Tasks, losses and metrics come from ``model_config.e2e_mm_dbmtl.task_towers``
(:class:`recstack.easyrec.tasks.TaskTowerWrapper`): ``auc_<tower>`` for CLASSIFICATION towers, ``mse_<tower>``
for L2_LOSS towers, computed over samples. With ``img_model.img_loss_weight`` != 0 the loss adds
``img_loss_weight * softmax_CE(cnn logits of each sample's image, cate_label)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import Config, ConfigError
from recstack.easyrec.features import TabularSpec, easyrec_model_config
from recstack.easyrec.schema import Node
from recstack.easyrec.tasks import DNNSpec, TaskTowerWrapper, parse_task_towers
from recstack.export import ExportError, ExportResult, LoadedModel, describe_outputs, scaled_diff
from recstack.export_spec import TensorSpec
from recstack.inference import format_embeddings, parse_embeddings
from recstack.layers.vision import IMAGE_MODELS
from recstack.wrapper import Batch, as_tasks

from .export_parts import write_parts
from .net import E2EMMDBMTL, ImageTower, ImgModel, RecModel, TotalModel

MODEL_CLASS = "E2E_MM_DBMTL"
#: label of the auxiliary image loss (EasyRec hard-codes the name)
CATE_LABEL = "cate_label"
_HINTS = {
    "expert_dnn": "E2E_MM_DBMTL with MMoE experts (expert_dnn / num_expert) is not supported yet",
    "num_expert": "E2E_MM_DBMTL with MMoE experts (expert_dnn / num_expert) is not supported yet",
}


def embedding_dim(emb_size: int | None, img_dnn: DNNSpec | None, num_classes: int) -> int:
    """``D`` of the image embedding (EasyRec's export rule): ``highway_dnn.emb_size``, else
    ``img_dnn.hidden_units[-1]``, else ``num_classes``."""
    if emb_size is not None:
        return emb_size
    if img_dnn is not None and img_dnn.hidden_units:
        return img_dnn.hidden_units[-1]
    return num_classes


class DygraphModel(TaskTowerWrapper):
    #: the exports of tools/export_mm_model.py (recstack.export.export_parts -> export_part_models)
    export_parts = ("img", "rec", "total")
    #: parity relative to max(1, |output|): fp32 round-off of a CNN on 0-255 pixels exceeds 1e-5 absolute
    export_relative_tolerance = True
    #: tools/to_static.py exports the grouped training graph: its images have one row per group
    export_dynamic_axes = {"img": {0: "groups"}}
    img_loss_weight: float = 0.0
    img_shape: tuple[int, int, int] | None = None  # (H, W, C)

    def create_model(self, config: Config) -> E2EMMDBMTL:
        spec, model, embedding_regularization = easyrec_model_config(config, MODEL_CLASS,
                                                                     optional_groups=("img", "sample_num"))
        if spec.has_img and not spec.has_sample_num:
            raise ConfigError(f"{model.where('feature_groups')}: with an 'img' group the model needs the "
                              "'sample_num' group (the SampleNumFeature) to broadcast each image to its samples")

        node = model.node("e2e_mm_dbmtl", hints=_HINTS)
        bottom = DNNSpec.from_node(node.node("bottom_dnn")) if node.get("bottom_dnn", None) is not None else None
        towers = parse_task_towers(node, spec.label_fields)
        l2 = float(node.get("l2_regularization", 1e-4, type=float))
        if l2 < 0:
            raise ConfigError(f"{node.where('l2_regularization')}: must be >= 0, got {l2}")
        image = self._image_tower(node, spec)
        node.finish()
        model.finish()
        self._export_config(config, spec)

        net = E2EMMDBMTL(spec, bottom, towers, image, l2_regularization=l2,
                         embedding_regularization=embedding_regularization)
        self.configure_towers(towers, net.input_names)
        # the per-sample CNN logits come back from forward only when the auxiliary image loss reads them
        self.extra_output_names = ("img_logits",) if image is not None and self.img_loss_weight else ()
        self.img_shape = spec.img_shape
        self.feature_names = tuple(net.feature_names)
        return net

    def _image_tower(self, node: Node, spec: TabularSpec) -> ImageTower | None:
        """``img_model`` / ``highway_dnn`` / ``img_dnn``; ``None`` (and no such keys allowed) without an img group."""
        keys = [k for k in ("img_model", "highway_dnn", "img_dnn") if node.get(k, None) is not None]
        if not spec.has_img:
            if keys:
                raise ConfigError(f"{node.where(keys[0])}: set, but model_config.feature_groups has no 'img' group "
                                  "(without it the model is DBMTL plus the input BatchNorm)")
            return None
        img = node.node("img_model")
        model_name = img.get("model_name", "ResNet", type=str)
        if model_name not in IMAGE_MODELS:
            raise ConfigError(f"{img.where('model_name')}: unknown image model {model_name!r} "
                              f"(known: {', '.join(IMAGE_MODELS)})")
        num_classes = img.get("num_classes", type=int)
        if num_classes < 1:
            raise ConfigError(f"{img.where('num_classes')}: must be >= 1, got {num_classes}")
        self.img_loss_weight = float(img.get("img_loss_weight", 0.0, type=float))
        if self.img_loss_weight < 0:
            raise ConfigError(f"{img.where('img_loss_weight')}: must be >= 0, got {self.img_loss_weight}")
        batch_norm = img.get("batch_norm", True, type=bool)
        if not batch_norm and model_name != "ResNet":
            raise ConfigError(f"{img.where('batch_norm')}: false applies to ResNet only (MobileNetV3 always uses "
                              "BatchNorm)")
        img.finish()
        emb_size = None
        if node.get("highway_dnn", None) is not None:
            highway = node.node("highway_dnn")
            if node.get("img_dnn", None) is not None:
                raise ConfigError(f"{node.where('img_dnn')}: set highway_dnn or img_dnn, not both (EasyRec silently "
                                  "uses highway_dnn)")
            if highway.get("input", None) is not None:
                import logging

                logging.getLogger(__name__).warning("%s: ignored (EasyRec ignores it too)", highway.where("input"))
            emb_size = highway.get("emb_size", type=int)
            if emb_size < 1:
                raise ConfigError(f"{highway.where('emb_size')}: must be >= 1, got {emb_size}")
            highway.finish()
        img_dnn = DNNSpec.from_node(node.node("img_dnn")) if node.get("img_dnn", None) is not None else None
        if self.img_loss_weight and CATE_LABEL not in spec.label_fields:
            raise ConfigError(f"{img.where('img_loss_weight')}: the auxiliary image loss reads the label "
                              f"'{CATE_LABEL}'; add it to data_config.label_fields (and input_fields)")
        _, _, channels = spec.img_shape
        tower = ImageTower(model_name, num_classes, channels, batch_norm, emb_size, img_dnn)
        assert tower.output_dim == embedding_dim(emb_size, img_dnn, num_classes)
        return tower

    def _export_config(self, config: Config, spec: TabularSpec) -> None:
        """``export_config``: ``img_input_name`` must be the image field, ``img_shape`` the ImgFeature's."""
        if config.get("hyper_parameters.export_config", None) is None:
            return
        node = Node.at(config, "hyper_parameters.export_config")
        node.get("multi_placeholder", True, type=bool)  # recstack's exports always have one input per array
        name = node.get("img_input_name", None, type=(str, type(None)))
        if name is not None and spec.group_input is not None and name != spec.group_input.img_field:
            raise ConfigError(f"{node.where('img_input_name')}: expected the image field "
                              f"'{spec.group_input.img_field}', got {name!r}")
        if node.get("img_shape", None) is not None:
            shape = node.node("img_shape")
            got = (shape.get("height", 224, type=int), shape.get("width", 224, type=int),
                   shape.get("channel", 3, type=int))
            shape.finish()
            if spec.img_shape is not None and got != spec.img_shape:
                raise ConfigError(f"{node.where('img_shape')}: (height, width, channel) {got} differs from the "
                                  f"ImgFeature's {spec.img_shape}")
        node.finish()

    # ------------------------------------------------------------------ training
    def extra_losses(self, extras: dict[str, torch.Tensor], batch_data: Batch) -> dict[str, torch.Tensor]:
        """``img_loss``: ``img_loss_weight * softmax_CE(img_logits, cate_label)`` over the samples (when
        ``img_loss_weight`` != 0; the net then returns ``img_logits`` from its forward)."""
        if "img_logits" not in extras:
            return {}
        return {"img_loss": self.img_loss_weight * F.cross_entropy(
            extras["img_logits"], batch_data[CATE_LABEL].reshape(-1).long())}

    # ------------------------------------------------------------------ export
    def export_part_models(self, loaded: LoadedModel, out_dirs: dict[str, Path], head: dict[str, Any],
                           tolerance: float, prefix: str) -> dict[str, ExportResult]:
        """The image, rec and total exports, checked against each other first (export_parts.py)."""
        return write_parts(self, loaded, out_dirs, head, tolerance, prefix)

    def export_module(self, net: E2EMMDBMTL, kind: str) -> nn.Module:
        """The exported network: ``img`` (images -> embeddings), ``rec`` (features + embedding) or
        ``total`` (features + image per row)."""
        return {"img": ImgModel, "rec": RecModel, "total": TotalModel}[kind](net)

    def export_feeds(self, net: E2EMMDBMTL, batch: Batch, kind: str) -> tuple[list[str], list[torch.Tensor]]:
        """Names and tensors of the ``kind`` export's inputs for a grouped batch: the images (``img``);
        the features and each sample's image embedding ``img_emb`` ``(N, D)`` (``rec``, computed with
        ``net``'s image tower); the features and each sample's image ``(N, H, W, C)`` (``total``)."""
        if kind == "img":
            return ["img"], [batch["img"]]
        features = [batch[name] for name in self.feature_names]
        index = batch["sample_num"]
        if kind == "rec":
            with torch.no_grad():
                emb = ImgModel(net)(batch["img"])[0]
            return [*self.feature_names, "img_emb"], [*features, emb.index_select(0, index)]
        return [*self.feature_names, "img"], [*features, batch["img"].index_select(0, index)]

    def export_outputs(self, kind: str, outputs: list[torch.Tensor]) -> list[TensorSpec]:
        """``img_emb`` ``(B, D)`` for the image model; the towers' outputs for the rec and total models."""
        if kind == "img":
            return [TensorSpec("img_emb", "float32", ["batch", int(outputs[0].shape[1])], kind="value",
                               meaning="image embedding (EasyRec's img_emb; as text: format_embeddings)")]
        names = [*self.feature_names, "img_emb" if kind == "rec" else "img"]
        return describe_outputs(self, outputs, len(outputs[0]), names)

    def check_parts(self, net: E2EMMDBMTL, batch: Batch, tolerance: float) -> dict[str, float]:
        """Differences (:func:`recstack.export.scaled_diff`: absolute up to 1, relative above), in eval mode:
        the total model on ungrouped rows vs the grouped training graph;
        total(x, img) vs rec(x, img_model(img)); and rec through EasyRec's 6-decimal text of img_emb
        (allowed 10x ``tolerance`` for the rounding).

        Raises:
            ExportError: a difference above its bound.
        """
        with torch.no_grad():
            grouped = [t.numpy() for t in as_tasks(net(*[batch[n] for n in self.feed_names]))]
            total = [t.numpy() for t in self.export_module(net, "total")(*self.export_feeds(net, batch, "total")[1])]
            rec_inputs = self.export_feeds(net, batch, "rec")[1]
            rec = [t.numpy() for t in self.export_module(net, "rec")(*rec_inputs)]
            text = parse_embeddings(format_embeddings(rec_inputs[-1]), rec_inputs[-1].shape[1])
            rec_text = [t.numpy() for t in self.export_module(net, "rec")(*rec_inputs[:-1], torch.from_numpy(text))]
        diffs = {"total_vs_grouped": scaled_diff(grouped, total), "total_vs_rec_of_img": scaled_diff(total, rec),
                 "rec_of_text_img_emb": scaled_diff(total, rec_text)}
        bounds = {"total_vs_grouped": tolerance, "total_vs_rec_of_img": tolerance,
                  "rec_of_text_img_emb": 10 * tolerance}
        for key, diff in diffs.items():
            if not diff <= bounds[key]:
                raise ExportError(f"e2e_mm_dbmtl: {key} differs by {diff:.3g} (> {bounds[key]:g}); nothing was written")
        return diffs

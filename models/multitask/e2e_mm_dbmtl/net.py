"""End-to-end multimodal DBMTL: a CNN image tower trained with DBMTL, one image embedding per item
broadcast to its samples.

The idea is CSCNN's (Liu et al., "Category-Specific CNN for Visual-aware CTR Prediction at JD.com",
KDD 2020, https://arxiv.org/abs/2006.10337): train the image CNN end to end with the ranking model,
and compute "the image embedding of one image only once" per batch, then broadcast it to the
impressions of that item. The model is EasyRec's ``E2E_MM_DBMTL`` (documented in EasyRec's
``end-to-end_multimodal_dbmtl.md``; its pull request #126 never merged) on top of DBMTL (Wang et al.,
"Deep Bayesian Multi-Target Learning for Recommender Systems", 2019, https://arxiv.org/abs/1902.09154).

A batch holds ``n`` groups (one image each) and ``N = sum(group_size)`` samples; ``s`` maps each
sample to its group (``sample_num``, ``repeat_interleave(arange(n), group_size)``)::

    e     = tune(cnn(img))                 (n, D)   tune: highway_dnn | img_dnn | identity
    e_s   = e[s]                           (N, D)   gather: each image's gradient sums over its samples
    b     = bottom_dnn(BN(x_all))          (N, U)   BN: momentum 0.01 (TF 0.99), eps 1e-3
    y_t   = DBMTL towers([e_s, b])                  relation towers in config order
    loss  = sum_t weight_t * mean(loss_t) + l2 * sum ||W||^2 / 2
            (+ img_loss_weight * CE(cnn(img)[s], cate_label))

Without an image tower (no ``img`` group) the model is DBMTL with the input BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.config import ConfigError
from recstack.easyrec.dbmtl import DBMTL
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.task_tower import easyrec_dnn, linear_l2
from recstack.easyrec.tasks import DNNSpec, TaskTowerSpec
from recstack.layers.gate import Highway
from recstack.layers.vision import build_image_model


class ImageTower(nn.Module):
    """CNN then ``tune``: images ``(n, H, W, C)`` -> ``(logits (n, num_classes), embedding (n, D))``.

    ``tune`` is the highway layer (``highway_emb_size``), else ``img_dnn``, else the logits themselves
    (EasyRec's order; setting both is rejected by the wrapper). ``D`` (:attr:`output_dim`) is
    ``emb_size``, else ``img_dnn.hidden_units[-1]``, else ``num_classes``.

    Args:
        model_name: ``ResNet`` (ResNet-18) or ``MobileNet`` (MobileNetV3-Large), see :mod:`recstack.layers.vision`.
        num_classes: CNN logits.
        channels: image channels (3).
        batch_norm: the ResNet's BatchNorm switch (default on; off = EasyRec PR #126's graph).
        highway_emb_size: the highway layer's width (``None``: no highway).
        img_dnn: an EasyRec DNN on the logits (``None``: none).
    """

    def __init__(self, model_name: str, num_classes: int, channels: int = 3, batch_norm: bool = True,
                 highway_emb_size: int | None = None, img_dnn: DNNSpec | None = None) -> None:
        super().__init__()
        if highway_emb_size is not None and img_dnn is not None:
            raise ValueError("ImageTower: set highway_emb_size or img_dnn, not both")
        self.cnn = build_image_model(model_name, num_classes, channels, batch_norm)
        if highway_emb_size is not None:
            self.tune: nn.Module = Highway(num_classes, highway_emb_size)
        elif img_dnn is not None:
            self.tune = easyrec_dnn(num_classes, img_dnn)
        else:
            self.tune = nn.Identity()
        self.has_img_dnn = img_dnn is not None
        self.tune_bn = img_dnn is not None and img_dnn.use_bn and bool(img_dnn.hidden_units)
        self.output_dim = getattr(self.tune, "output_dim", num_classes)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tune_bn and self.training and img.shape[0] == 1:
            raise ConfigError("img_dnn with use_bn cannot train on a batch of one group (BatchNorm over one image); "
                             "choose runner.train_batch_size so that no batch of one group is left over, or set "
                             "img_dnn.use_bn: false")
        logits = self.cnn(img)
        return logits, self.tune(logits)


class E2EMMDBMTL(nn.Module):
    """Image tower per group, broadcast to samples, fused with the ``all`` features, DBMTL head.

    Initialisation: the image tower as :mod:`recstack.layers.vision` says (ResNet with BN: He-normal;
    without: Glorot-uniform; zero biases), the highway and every DNN Glorot-uniform with zero bias;
    the DBMTL part as :class:`DBMTL` (embeddings truncated normal ``0.1 / sqrt(dim)``).

    Args:
        spec: features and groups; the model embeds group ``all``.
        bottom_dnn: DBMTL's bottom DNN (``None``: the normalised features).
        towers: the task towers.
        image: the image tower (``None``: no image; the model is DBMTL plus the input BatchNorm).
        l2_regularization: coefficient of ``sum ||W||^2 / 2`` over the DNN / output Linears
            (bottom, towers, ``img_dnn``; not the CNN, the highway or biases).
        embedding_regularization: coefficient of ``sum e^2 / 2`` over the looked-up id embeddings.

    Shapes:
        ``forward(*features, sample_num, img)``: ``features`` the ``all`` group's ``(N, k)`` / ``(N, m)``
        arrays (:attr:`feature_names`), ``sample_num`` int64 ``(N,)`` in ``[0, n)``, ``img`` float
        ``(n, H, W, C)`` -> one ``(N, 1)`` prediction per tower. Without an image tower:
        ``forward(*features)``.
    """

    def __init__(self, spec: TabularSpec, bottom_dnn: DNNSpec | None, towers: Sequence[TaskTowerSpec],
                 image: ImageTower | None = None, l2_regularization: float = 1e-4,
                 embedding_regularization: float = 0.0) -> None:
        super().__init__()
        self.image = image
        self.rec = DBMTL(spec, bottom_dnn, towers, l2_regularization=0.0, embedding_regularization=0.0,
                         use_feature_bn=True, feature_bn_momentum=0.01, feature_bn_eps=1e-3,
                         side_input_dim=image.output_dim if image is not None else 0)
        self.feature_names = list(self.rec.input_names)
        self.input_names = self.feature_names + (["sample_num", "img"] if image is not None else [])
        self.embedding_dim = image.output_dim if image is not None else 0
        self.l2_regularization = l2_regularization
        self.embedding_regularization = embedding_regularization

    def forward(self, *inputs: torch.Tensor, return_extras: bool = False
                ) -> list[torch.Tensor] | tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The predictions; with ``return_extras`` also ``{"img_logits": (N, num_classes)}``, the per-sample
        CNN logits of the auxiliary image loss (``{}`` without an image tower). Training asks for the
        extras through this ordinary forward (the wrapper's ``extra_output_names``), so under DDP it runs
        inside DDP's forward."""
        if self.image is None:
            pred = self.rec.head(inputs)
            return (pred, {}) if return_extras else pred
        features, sample_num, img = inputs[:-2], inputs[-2], inputs[-1]
        logits, emb = self.image(img)
        # a gather: autograd sums the gradients of the samples of each image
        pred = self.rec.head(features, emb.index_select(0, sample_num))
        return (pred, {"img_logits": logits.index_select(0, sample_num)}) if return_extras else pred

    def regularization_loss(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``l2_regularization * sum ||W||^2 / 2`` (DNNs, output layers) + the embedding term of this batch."""
        modules: list[nn.Module] = [self.rec.bottom, self.rec.towers]
        if self.image is not None and self.image.has_img_dnn:
            modules.append(self.image.tune)
        loss = self.l2_regularization * linear_l2(modules) if self.l2_regularization else torch.zeros(())
        if self.embedding_regularization:
            features = inputs[:-2] if self.image is not None else inputs
            loss = loss + self.embedding_regularization * self.rec.embedding.embedding_penalty(*features)
        return loss


class ImgModel(nn.Module):
    """Export: images ``(B, H, W, C)`` -> ``(image embeddings (B, D),)`` (the CNN and ``tune`` only)."""

    def __init__(self, net: E2EMMDBMTL) -> None:
        super().__init__()
        if net.image is None:
            raise ValueError("the model has no image tower (no 'img' feature group)")
        self.image = net.image

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.image(img)[1],)


class RecModel(nn.Module):
    """Export: the ``all`` features and an image embedding per row ``(B, D)`` -> one ``(B, 1)`` prediction
    per tower. Holds no CNN parameters."""

    def __init__(self, net: E2EMMDBMTL) -> None:
        super().__init__()
        self.rec = net.rec

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.rec.head(inputs[:-1], inputs[-1]))


class TotalModel(nn.Module):
    """Export: the ``all`` features and one image per row ``(B, H, W, C)`` -> one ``(B, 1)`` prediction per
    tower (row ``b`` uses image ``b``; no broadcast)."""

    def __init__(self, net: E2EMMDBMTL) -> None:
        super().__init__()
        if net.image is None:
            raise ValueError("the model has no image tower (no 'img' feature group)")
        self.image = net.image
        self.rec = net.rec

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.rec.head(inputs[:-1], self.image(inputs[-1])[1]))

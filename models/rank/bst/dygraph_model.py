"""BST training wrapper: hyper_parameters (PaddleRec's BST keys, DIN's data keys) → net; AUC and GAUC (per user)."""

from __future__ import annotations

import logging

from recstack.config import Check, Config, ConfigError, ListOf, OneOf, PositiveInt, PositiveNumber, String
from recstack.wrapper import ClickGAUCMetrics
from recstack.wrapper import DygraphModel as BaseModel

from .net import BST

logger = logging.getLogger(__name__)

Rate = Check("a number in [0, 1)", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
             "numbers in [0, 1)")

#: PaddleRec's BST keys read and ignored (the reason is logged): PaddleRec's own flags, its user table (the
#: paper's "other features"; user ids feed GAUC here), its pre/post-process commands (the layer is the paper's
#: post-LayerNorm one) and its relu_dropout (unused by PaddleRec's net too)
NO_EFFECT = ("is_sparse", "use_DataLoader", "distributed_embedding", "user_count", "preprocess_cmd",
             "postprocess_cmd", "relu_dropout")


class DygraphModel(ClickGAUCMetrics, BaseModel):
    hyper_parameter_schema = {
        "item_count": PositiveInt, "cat_count": PositiveInt, "position_count": PositiveInt,
        "item_emb_size": PositiveInt, "cat_emb_size": PositiveInt, "position_emb_size": PositiveInt,
        "d_model": PositiveInt, "d_key": PositiveInt, "d_value": PositiveInt, "n_head": PositiveInt,
        "n_encoder_layers": PositiveInt, "d_inner_hid": PositiveInt, "dropout_rate": Rate,
        "prepostprocess_dropout": Rate, "relu_dropout": Rate, "fc_sizes": ListOf(PositiveInt),
        "act": OneOf("leaky_relu", "relu", "sigmoid", "prelu", "dice"), "init_std": PositiveNumber,
        "transformer_init_std": PositiveNumber, "user_count": PositiveInt, "preprocess_cmd": String,
        "postprocess_cmd": String}
    feed_names = ("hist_item", "hist_cat", "hist_pos", "hist_len", "target_item", "target_cat", "target_pos")
    label_names = ("label",)
    group_name = "user"  # GAUC's group: the reader's user id column (-1 = unknown, skipped)

    def create_model(self, config: Config) -> BST:
        hp = "hyper_parameters"
        for key in NO_EFFECT:
            if config.get(f"{hp}.{key}", None) is not None:
                logger.info("%s.%s is a PaddleRec BST setting with no effect here (models/rank/bst/README.md)",
                            hp, key)
        sizes = [config.get(f"{hp}.{key}", 96, type=int) for key in ("item_emb_size", "cat_emb_size",
                                                                        "position_emb_size")]
        d_model = sum(sizes)
        given = config.get(f"{hp}.d_model", None, type=int)
        if given is not None and given != d_model:
            raise ConfigError(f"{config.source(hp + '.d_model')}: d_model must be item_emb_size + cat_emb_size + "
                              f"position_emb_size = {d_model} (the token is their concatenation), got {given}")
        n_head = config.get(f"{hp}.n_head", 6, type=int)
        if d_model % n_head:
            raise ConfigError(f"{config.source(hp + '.n_head')}: d_model {d_model} is not a multiple of n_head "
                              f"{n_head}")
        for key in ("d_key", "d_value"):
            width = config.get(f"{hp}.{key}", None, type=int)
            if width is not None and width != d_model // n_head:
                raise ConfigError(f"{config.source(hp + '.' + key)}: each head is d_model / n_head = "
                                  f"{d_model // n_head} wide here, got {key} {width}")
        return BST(
            item_count=config.get(f"{hp}.item_count", type=int),
            cat_count=config.get(f"{hp}.cat_count", type=int),
            position_count=config.get(f"{hp}.position_count", 5001, type=int),
            item_emb_size=sizes[0], cat_emb_size=sizes[1], position_emb_size=sizes[2],
            n_encoder_layers=config.get(f"{hp}.n_encoder_layers", 1, type=int),
            n_head=n_head,
            d_inner_hid=config.get(f"{hp}.d_inner_hid", 512, type=int),
            dropout_rate=config.get(f"{hp}.dropout_rate", 0.2, type=float),
            prepostprocess_dropout=config.get(f"{hp}.prepostprocess_dropout", 0.2, type=float),
            act=config.get(f"{hp}.act", "leaky_relu", type=str).lower(),
            fc_sizes=config.get(f"{hp}.fc_sizes", [1024, 512, 256], type=list),
            init_std=config.get(f"{hp}.init_std", 0.1, type=float),
            transformer_init_std=config.get(f"{hp}.transformer_init_std", 0.02, type=float),
        )


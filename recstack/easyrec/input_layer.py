"""EasyRec's ``input_layer`` block: one feature group as the backbone reads it.

A backbone block ``{name: ..., inputs: [{feature_group_name: g}], input_layer: {...}}`` reads group ``g``
through an :class:`InputLayer` (a block that names the group directly gets the default one: options
``None``). Options (EasyRec's ``InputLayer`` message, ``model_config.backbone.blocks[i].input_layer``):

=====================================  ===========================================================================
option                                 what recstack returns / does
=====================================  ===========================================================================
(none)                                 the group's features concatenated in group order, ``(B, D)``
``only_output_feature_list``           a list of each feature's ``(B, D_i)``, in group order
``only_output_3d_tensor``              ``(B, F, D)``: the features stacked (every feature needs the same width)
``output_2d_tensor_and_feature_list``  ``[(B, D), [(B, D_1), ..., (B, D_F)]]`` (EasyRec's pair, as a list)
``output_seq_and_normal_feature``      ``[sequence (B, L, D_s), lengths (B,) int64, normal (B, D_n)]``: the
                                       group's sequence features concatenated on the last axis, their lengths
                                       (the reader checks that a group's sequences have equal lengths), and the
                                       other features concatenated (DIN's target item); ``[sequence, lengths]``
                                       when the group holds only sequences. The other options do not apply.
``do_batch_norm``                      batch normalisation of every column (the same whether read as one tensor
                                       or per feature: BatchNorm normalises each column on its own)
``do_layer_norm``                      layer normalisation: over the whole row for the 2-D tensor, over each
                                       feature's own width for the list / 3-D forms (EasyRec's two uses);
                                       not with ``do_batch_norm``
``dropout_rate``                       dropout of the output's elements (during training)
``feature_dropout_rate``               during training, each feature is dropped whole with this probability,
                                       one draw per feature per batch (EasyRec's), the kept ones scaled by
                                       ``1 / (1 - rate)``
``wide_output_dim: W``                 a ``wide_deep: WIDE`` group read through its wide weights: each feature
                                       a ``(B, W)`` wide embedding (ids: a table of width W; tags: summed;
                                       raw values: ``value * v``), one set per model
                                       (:meth:`FeatureEmbedding.wide`); the output options above apply to these
                                       (EasyRec: ``input_layer {wide_output_dim: 1}`` gives ``(B, F)``, and a
                                       lambda sums it into a logit)
``concat_seq_feature``                 ``true`` only (EasyRec's default)
=====================================  ===========================================================================

Order of the operations: normalisation, then dropout, then feature dropout. EasyRec normalises the 2-D
tensor differently during training with feature dropout (per feature) than without (over the row);
recstack normalises it the same way in training and evaluation (over the row).

The layer holds its :class:`FeatureEmbedding` by reference, not as a submodule: the model owns the embedding
once (its tables would otherwise be saved once per input layer); trace or export the model, not the layer
alone. Its ``forward`` has no data-dependent Python branches, so the model traces (``torch.jit.trace``) and
exports to ONNX with dynamic batch and sequence axes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recstack.config import ConfigError
from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.schema import Node, source

#: the options that choose the output's form (at most one)
OUTPUT_FORMS = ("only_output_feature_list", "only_output_3d_tensor", "output_2d_tensor_and_feature_list",
                "output_seq_and_normal_feature")


class InputLayer(nn.Module):
    """A feature group's input to the backbone, shaped by EasyRec's ``input_layer`` options (module docstring).

    Args:
        embedding: the model's feature embedding (held by reference; the model registers it).
        group: the feature group.
        options: the block's ``input_layer`` mapping (``None``: the defaults, the 2-D concatenation).

    Attributes:
        input_names: the batch keys it reads, in order (:meth:`TabularSpec.group_inputs`).
        dims: the width of each feature it outputs, in group order (without the sequences).

    Shapes:
        ``forward(batch)`` reads ``batch[k]`` for ``k`` in :attr:`input_names` and returns the form the options
        choose (module docstring): ``(B, D)``, a list of ``(B, D_i)``, ``(B, F, D)``, ``[(B, D), [...]]`` or
        ``[(B, L, D_s), (B,), (B, D_n)]``.

    Raises:
        ConfigError: an unknown option (did-you-mean), two output forms, a rate outside ``[0, 1)``, batch and
            layer norm together, unequal widths for ``only_output_3d_tensor``, a group of sequence features read
            in another form than ``output_seq_and_normal_feature`` (or that form without sequences),
            ``wide_output_dim`` on a DEEP group or unlike the model's; each naming the key.
    """

    def __init__(self, embedding: FeatureEmbedding, group: str, options: Node | None = None) -> None:
        super().__init__()
        node = options if options is not None else Node(None, "input_layer", {})
        spec = embedding.spec
        here = source(node.config, node.key)
        if group not in embedding.group_names:
            raise ConfigError(f"{here}: feature group {group!r} is not embedded (known: {embedding.group_names})")
        flags = {key: bool(node.get(key, False, type=bool))
                 for key in ("do_batch_norm", "do_layer_norm", *OUTPUT_FORMS)}
        rates = {key: float(node.get(key, 0.0, type=float)) for key in ("dropout_rate", "feature_dropout_rate")}
        wide = node.get("wide_output_dim", 0, type=int)
        concat = node.get("concat_seq_feature", True, type=bool)
        node.finish()
        forms = [key for key in OUTPUT_FORMS if flags[key]]
        if len(forms) > 1:
            raise ConfigError(f"{node.where(forms[1])}: an input layer has one output form; {forms[0]} and "
                              f"{forms[1]} are both set")
        for key, rate in rates.items():
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"{node.where(key)}: expected a rate in [0, 1), got {rate}")
        if flags["do_batch_norm"] and flags["do_layer_norm"]:
            raise ConfigError(f"{node.where('do_layer_norm')}: do_batch_norm and do_layer_norm exclude each other")
        if wide < 0:
            raise ConfigError(f"{node.where('wide_output_dim')}: must be >= 1 (0: not set), got {wide}")
        if not concat:
            raise ConfigError(f"{node.where('concat_seq_feature')}: only true (the sequences concatenated) is "
                              "supported")
        self._embedding = (embedding,)  # a reference, not a submodule (see the module docstring)
        self.group = group
        self.input_names: list[str] = spec.group_inputs(group)
        self.form = forms[0] if forms else "2d"
        sequences = [f.name for f in spec.sequence_features(group)]
        if self.form == "output_seq_and_normal_feature":
            used = [k for k in ("do_batch_norm", "do_layer_norm") if flags[k]] + [k for k, r in rates.items() if r]
            if wide or used:
                key = "wide_output_dim" if wide else used[0]
                raise ConfigError(f"{node.where(key)}: output_seq_and_normal_feature returns the features as they "
                                  "are; this option does not apply")
            if not sequences:
                raise ConfigError(f"{node.where('output_seq_and_normal_feature')}: feature group {group!r} holds no "
                                  "SequenceFeature")
        elif sequences:
            raise ConfigError(f"{here}: feature group {group!r} holds the sequence feature(s) {sequences}, which have "
                              "no 2-D form (EasyRec asks for a sequence_combiner); read the group with "
                              "output_seq_and_normal_feature: true, or make them TagFeatures (pooled)")
        self.wide_output_dim = wide
        if wide:
            if spec.group(group).wide_deep != "WIDE":
                raise ConfigError(f"{node.where('wide_output_dim')}: wide weights are read from a wide_deep: WIDE "
                                  f"group; {group!r} is {spec.group(group).wide_deep}")
            try:
                embedding.wide(wide)
            except ValueError as err:
                raise ConfigError(f"{node.where('wide_output_dim')}: {err}") from None
            self.dims = [wide] * len(embedding.feature_dims(group)[0])
        else:
            self.dims = embedding.feature_dims(group)[0]
        if self.form == "only_output_3d_tensor" and len(set(self.dims)) > 1:
            names = [n for n in spec.group(group).feature_names if not spec.feature(n).is_group_input]
            widths = ", ".join(f"{n}: {d}" for n, d in zip(names, self.dims))
            raise ConfigError(f"{node.where('only_output_3d_tensor')}: stacking the features of group {group!r} "
                              f"needs one width (embedding_dim; a plain raw value is 1), got {widths}")
        self.wants_2d = self.form in ("2d", "output_2d_tensor_and_feature_list")
        self.wants_list = self.form in ("only_output_feature_list", "only_output_3d_tensor",
                                        "output_2d_tensor_and_feature_list")
        total = sum(self.dims)
        self.batch_norm = nn.BatchNorm1d(total) if flags["do_batch_norm"] and self.dims else None
        layer_norm = flags["do_layer_norm"] and self.dims
        self.layer_norm = nn.LayerNorm(total) if layer_norm and self.wants_2d else None
        self.feature_norms = nn.ModuleList(nn.LayerNorm(d) for d in self.dims) \
            if layer_norm and self.wants_list else None
        self.dropout = nn.Dropout(rates["dropout_rate"]) if rates["dropout_rate"] else None
        self.feature_dropout_rate = rates["feature_dropout_rate"]
        self.register_buffer("_widths", torch.tensor(self.dims, dtype=torch.long), persistent=False)

    @property
    def embedding(self) -> FeatureEmbedding:
        return self._embedding[0]

    def _source(self) -> FeatureEmbedding:
        return self.embedding.wide_embedding if self.wide_output_dim else self.embedding

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        if self.form == "output_seq_and_normal_feature":
            features, sequences, lengths = self.embedding.group_features(self.group, batch)
            out = [_cat(sequences, -1), lengths]
            if features:
                out.append(_cat(features, 1))
            return out
        # every form from the group's tensor computed the fused way (FeatureEmbedding.group_flat: one lookup per
        # width, group order); the feature list is a split of it and the 3-D form a view, whose backward passes
        # are a concatenation, not one table-wide gradient per feature
        raw = self._source().group_flat(self.group, batch)
        if self.batch_norm is not None:
            raw = self.batch_norm(raw)
        flat = listed = None
        if self.wants_2d:
            flat = self.layer_norm(raw) if self.layer_norm is not None else raw
        if self.wants_list:
            listed = raw if self.feature_norms is None else \
                torch.cat([norm(f) for norm, f in zip(self.feature_norms, raw.split(self.dims, dim=1))], dim=1)
        scale = None
        if self.training and self.feature_dropout_rate > 0.0:
            keep = 1.0 - self.feature_dropout_rate
            draw = torch.bernoulli(torch.full((len(self.dims),), keep, device=self._widths.device)) / keep
            scale = draw.repeat_interleave(self._widths)  # one draw per feature, over its columns
        shared = flat is listed  # one tensor feeds both outputs: one dropout mask for both

        def noisy(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            if self.dropout is not None:
                x = self.dropout(x)
            return x * scale if scale is not None else x

        flat = noisy(flat)
        listed = flat if shared else noisy(listed)
        if self.form == "2d":
            return flat
        if self.form == "only_output_3d_tensor":
            return listed.unflatten(1, (len(self.dims), self.dims[0]))
        parts = list(listed.split(self.dims, dim=1))
        if self.form == "only_output_feature_list":
            return parts
        return [flat, parts]


def _cat(tensors: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim=dim)


def example_inputs(spec: TabularSpec, names: Sequence[str], rows: int = 2, length: int = 3) -> dict[str, torch.Tensor]:
    """A small valid batch of the given keys (for building a model by running it once): zeros of each key's
    dtype and width (id 0 is in every table), variable-length keys ``length`` steps wide with every row full
    (lengths ``length``, weights 1), so that sequence components see ``L > 0``."""
    columns = spec.block_columns()
    lengths = {keys["lengths"] for g in spec.groups for f in spec.ragged_features(g.name)
               for keys in [spec.ragged_keys(g.name, f)]}
    batch: dict[str, torch.Tensor] = {}
    for name in names:
        dtype, width = columns.get(name, ("float32", 1))
        torch_dtype = torch.int64 if dtype.startswith("int") else torch.float32
        if name in lengths:
            batch[name] = torch.full((rows, 1), length, dtype=torch.int64)
        elif width == 0:
            fill = 1.0 if name.endswith(".weights") else 0
            batch[name] = torch.full((rows, length), fill, dtype=torch_dtype)
        else:
            batch[name] = torch.zeros((rows, width), dtype=torch_dtype)
    return batch

"""The training wrapper contract (PaddleRec's ``DygraphModel``) with defaults.

A model folder's ``dygraph_model.py`` defines ``class DygraphModel(recstack.wrapper.DygraphModel)``
and overrides only what differs from these defaults:

==================  =====================================================================
``create_model``    build the ``nn.Module`` from ``hyper_parameters`` (always overridden)
``create_feeds``    batch dict → (model inputs, labels), by :attr:`feed_names` / :attr:`label_names`
``create_loss``     mean binary cross-entropy, summed over tasks
``create_optimizer`` optimizer by name from ``hyper_parameters.optimizer`` (+ ``reg``, ``clip_by_norm``)
``create_metrics``  one AUC per task: ``auc``, or ``auc_<task>`` for multi-task models
``forward_outputs`` one forward pass of the model as the loop holds it (DDP's, when wrapped):
                    (predictions, extra outputs named in ``extra_output_names``)
``regularization_loss`` the batch's regularisation term: the network's own
                    ``regularization_loss(*inputs)`` when it has one, found inside DDP
``train_forward``   feeds → forward → loss (+ regularisation) → metric update; returns
                    (loss, metrics, print_dict)
``infer_forward``   feeds → forward → metric update; returns (metrics, print_dict)
==================  =====================================================================

Models return probabilities: one ``(B, 1)`` tensor, or a list/tuple of them
(one per task, in :attr:`task_names` order).

The ``dy_model`` a hook receives is the model as the training loop holds it: the network, or
under ``runner.use_fleet`` its ``DistributedDataParallel`` wrapper, which forwards neither methods
nor attributes of the network. Hooks call it (``dy_model(*inputs)``: DDP's forward, which prepares
the gradient all-reduce) and reach the network's own methods through :func:`unwrap_model`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import (
    Check,
    Config,
    ConfigError,
    IntRange,
    ListOf,
    NonNegativeInt,
    OneOf,
    PositiveInt,
    PositiveNumber,
    check_schema,
    did_you_mean,
    task_names,
)
from recstack.metrics import AUC, GAUC, Metric
from recstack.optim import build_optimizer
from recstack.registry import OPTIMIZERS

Batch = dict[str, torch.Tensor]
logger = logging.getLogger(__name__)


#: The keys of the Criteo slot format (:func:`slot_format_args` and the ``slot`` reader), for a wrapper's
#: ``hyper_parameter_schema``: ``{**SLOT_FORMAT_SCHEMA, "fc_sizes": ListOf(PositiveInt)}``. ``dense_input_dim``
#: may be 0 (data without dense values); ``sparse_inputs_slots`` counts the label, as PaddleRec's.
SLOT_FORMAT_SCHEMA: dict[str, Check] = {
    "sparse_feature_number": PositiveInt,
    "sparse_feature_dim": PositiveInt,
    "dense_input_dim": NonNegativeInt,
    "sparse_inputs_slots": IntRange(2),
}


def slot_format_args(config: Config) -> dict[str, int]:
    """The model arguments every Criteo slot-format model takes, from PaddleRec's keys.

    ``sparse_feature_number`` (table rows), ``sparse_feature_dim`` (embedding size),
    ``dense_input_dim`` (dense values) and ``sparse_inputs_slots`` (PaddleRec counts the
    label among them, so the sparse fields are one fewer), as the keyword arguments
    ``sparse_feature_number``, ``sparse_feature_dim``, ``dense_feature_dim`` and
    ``num_sparse_fields`` of the rank models' constructors.

    Raises:
        ConfigError: a key is missing or outside :data:`SLOT_FORMAT_SCHEMA` (checked here too, so a
            wrapper that calls this without declaring the schema is covered).
    """
    check_schema(config, SLOT_FORMAT_SCHEMA, model_name=model_name(config))
    return {
        "sparse_feature_number": config.get("hyper_parameters.sparse_feature_number", type=int),
        "sparse_feature_dim": config.get("hyper_parameters.sparse_feature_dim", type=int),
        "dense_feature_dim": config.get("hyper_parameters.dense_input_dim", type=int),
        "num_sparse_fields": config.get("hyper_parameters.sparse_inputs_slots", type=int) - 1,
    }


def as_tasks(pred: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A model output as a list of per-task tensors."""
    return [pred] if isinstance(pred, torch.Tensor) else list(pred)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside the parallel wrappers the training loop may put around it.

    ``DistributedDataParallel`` (``runner.use_fleet``) and TorchRec's ``DistributedModelParallel``
    (``runner.embedding_sharding``) hold the network as ``.module``; ``getattr`` on the wrapper finds
    only the wrapper's own attributes, so a hook that needs a method of the network (its
    ``regularization_loss``, a submodule) calls this first. A plain network is returned as it is.
    """
    while isinstance(model, nn.parallel.DistributedDataParallel) or type(model).__name__ == "DistributedModelParallel":
        model = model.module
    return model


class DygraphModel:
    """Base class of every model wrapper.

    Attributes:
        feed_names: batch keys passed to ``model.forward``, in order.
        label_names: batch keys of the labels, one per task, in output order.
        task_names: names of the tasks for metric names (``auc_<task>``); empty for
            single-task models (metric ``auc``).
        group_name: batch key of a group (user) id column; when set, metrics with
            ``needs_groups`` (:class:`recstack.metrics.GAUC`) receive it in :meth:`update_metrics`.
        output_names: names of the model's outputs for export (:mod:`recstack.export`), in output
            order, when they are not :attr:`task_names` (e.g. a model with an extra output).
        export_dynamic_axes: axes of model inputs that vary from batch to batch besides the batch
            axis 0, ``{feed name: {axis: axis name}}``; axis 0 listed here names an input whose rows are not
            the batch's samples (E2E_MM_DBMTL's images, one per group: ``{"img": {0: "groups"}}``). Inputs read
            from variable-length reader columns (width 0 in the reader's ``columns``) get axis 1 without being
            listed here.
    """

    #: ``hyper_parameters`` key -> :class:`recstack.config.Check` (type and range) of the keys this model
    #: reads, checked by :func:`load_wrapper` before the model is built, e.g.
    #: ``{**SLOT_FORMAT_SCHEMA, "fc_sizes": ListOf(PositiveInt)}``. Keys absent from the config are left
    #: to the wrapper's ``config.get`` (its default, or a missing-key error).
    hyper_parameter_schema: dict[str, Check] = {}
    feed_names: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ("label",)
    task_names: tuple[str, ...] = ()
    group_name: str | None = None
    output_names: tuple[str, ...] = ()
    #: names of the training-only outputs the network returns besides its predictions (E2E_MM_DBMTL:
    #: ``img_logits`` for its auxiliary image loss); empty: none. A network with extras takes a keyword
    #: ``return_extras`` in its ordinary ``forward``: ``forward(*inputs, return_extras=True)`` returns
    #: ``(predictions, {name: tensor})``, plain ``forward(*inputs)`` the predictions alone (inference,
    #: export). See :meth:`forward_outputs`.
    extra_output_names: tuple[str, ...] = ()
    export_dynamic_axes: dict[str, dict[int, str]] = {}

    # ------------------------------------------------------------------ model
    @classmethod
    def for_config(cls, config: Config) -> DygraphModel:
        """The wrapper instance for ``config`` (:func:`load_wrapper` calls this). Default: ``cls()``.

        A folder whose configs may describe another kind of model overrides it: the folders that also
        read EasyRec backbone configs return :func:`recstack.backbone.model.backbone_wrapper`'s wrapper
        for those (``return backbone_wrapper(config) or cls()``).
        """
        return cls()

    def create_model(self, config: Config) -> nn.Module:
        """Build the network, mapping ``hyper_parameters.*`` to its typed arguments."""
        raise NotImplementedError(f"{type(self).__module__}.DygraphModel must define create_model(config)")

    def configure_tasks(self, config: Config, count_key: str | None = None) -> tuple[str, ...]:
        """Take this run's task names from ``hyper_parameters.task_names`` (default: :attr:`task_names`).

        For multi-task models whose reader yields one label column per task, named like
        the task (the core ``census`` reader): sets :attr:`task_names` and
        :attr:`label_names` of this wrapper, so the metrics are ``auc_<task>`` and the
        labels are read by those names. Call it first in :meth:`create_model`.

        Args:
            config: the run's config.
            count_key: a model key that must equal the number of tasks (``hyper_parameters.gate_num``,
                ``hyper_parameters.task_num``); ``None``: none.

        Returns:
            The task names, in the model's output order.

        Raises:
            ConfigError: bad ``task_names``, or ``count_key`` differs from their number.
        """
        names = task_names(config, self.task_names)
        if count_key is not None:
            count = config.get(count_key, type=int)
            if count != len(names):
                raise ConfigError(f"{config.source(count_key)}: must be {len(names)} (one per task: "
                                  f"{', '.join(names)}), got {count}")
        self.task_names = self.label_names = names
        return names

    # ------------------------------------------------------------------ data
    def create_feeds(self, batch_data: Batch, config: Config) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Split a batch into model inputs and labels."""
        try:
            inputs = [batch_data[name] for name in self.feed_names]
            labels = [batch_data[name] for name in self.label_names]
        except KeyError as err:
            raise KeyError(f"batch has no column {err}; the reader gives {sorted(batch_data)}, "
                           f"the wrapper expects {list(self.feed_names + self.label_names)}") from None
        return inputs, labels

    def describe_outputs(self, count: int) -> list[tuple[str | None, str]]:
        """``(task, kind)`` of each of the model's ``count`` outputs, for export and inference.

        ``task`` names the output (:attr:`output_names`, else :attr:`task_names`; ``None`` for the
        output of a model without task names, or an output beyond the names); ``kind`` is
        ``"probability"`` (the default: models return probabilities) or ``"value"`` (a
        regression output; :class:`recstack.easyrec.tasks.TaskTowerWrapper` marks its L2_LOSS towers).
        """
        names = list(self.output_names or self.task_names)
        return [(names[i] if i < len(names) else None, "probability") for i in range(count)]

    # ------------------------------------------------------------------ export hooks
    # What recstack.export and recstack.inference ask of a wrapper besides the above; the defaults fit a
    # model exported whole by tools/to_static.py.

    #: compare each export with eager on ``|difference| / max(1, max |eager output|)``
    #: (:func:`recstack.export.scaled_diff`) instead of the absolute difference: for outputs far above 1
    #: (E2E_MM_DBMTL's image embeddings of 0-255 pixels), where float32 round-off alone exceeds 1e-5.
    export_relative_tolerance: bool = False
    #: names of the exports a model cuts from one checkpoint besides the whole model (E2E_MM_DBMTL:
    #: ``("img", "rec", "total")``, written by ``tools/export_mm_model.py`` through
    #: :meth:`export_part_models`); empty: none.
    export_parts: tuple[str, ...] = ()

    def export_part_models(self, loaded: Any, out_dirs: dict[str, Any], head: dict[str, Any], tolerance: float,
                           prefix: str) -> dict[str, Any]:
        """Write the exports named in ``out_dirs`` (a subset of :attr:`export_parts`), each with
        :func:`recstack.export.write_export` and ``export_part`` (its name) in its JSON.

        Called by :func:`recstack.export.export_parts` with the checkpoint loaded
        (:class:`recstack.export.LoadedModel`: the eval-mode network, its reader's batches), the output
        folder of each part, the JSON keys saying what was exported (:func:`recstack.export.export_head`),
        the parity tolerance and the files' prefix. Returns the :class:`recstack.export.ExportResult` of
        each part by name, and raises :class:`recstack.export.ExportError` (nothing written) when a check
        fails. Default: no parts.
        """
        raise NotImplementedError(f"{type(self).__module__}: the model exports no parts (export_parts is empty)")

    def export_model(self, loaded: Any, out_dir: Any, prefix: str, head: dict[str, Any],
                     tolerance: float) -> Any:
        """Write the export of ``tools/to_static.py`` when the model is not exported whole (the retrieval models:
        two towers and the corpus's vectors, :mod:`recstack.retrieval.export`); return its
        :class:`recstack.export.ExportResult`, or ``None`` (the default) for the whole-model export."""
        return None

    def export_feeds(self, net: nn.Module, batch: Batch, part: str) -> tuple[list[str], list[torch.Tensor]]:
        """Names and tensors of the inputs of the export ``part`` (one of :attr:`export_parts`) for a batch of
        the model's reader: what :func:`recstack.inference.load_batches` feeds an export whose JSON has
        ``export_part`` (``net``: the network with the export's checkpoint, eval mode). Default: no parts.
        """
        raise NotImplementedError(f"{type(self).__module__}: the model exports no parts (export_parts is empty)")

    # ------------------------------------------------------------------ training
    def create_loss(self, pred: torch.Tensor | Sequence[torch.Tensor], label: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean binary cross-entropy of each task, summed."""
        losses = [F.binary_cross_entropy(p, y.to(p.dtype)) for p, y in zip(as_tasks(pred), label)]
        return losses[0] if len(losses) == 1 else torch.stack(losses).sum()

    def create_optimizer(self, dy_model: nn.Module, config: Config, **options: Any):
        """Optimizer from ``hyper_parameters.optimizer`` (class, learning_rate, sparse, weight_decay,
        lr_schedule), ``reg`` and ``clip_by_norm``.

        ``options`` go to :func:`recstack.optim.build_optimizer` and override those keys.
        """
        name = config.get("hyper_parameters.optimizer.class", "Adam", type=str)
        if name not in OPTIMIZERS:
            raise ConfigError(f"{config.source('hyper_parameters.optimizer.class')}: unknown optimizer '{name}'"
                              f"{did_you_mean(name.lower(), OPTIMIZERS.names())} "
                              f"(known: {', '.join(OPTIMIZERS.names())})")
        return build_optimizer(
            dy_model,
            name,
            config.get("hyper_parameters.optimizer.learning_rate", 0.001, type=float),
            reg=config.get("hyper_parameters.reg", 0.0, type=float),
            weight_decay=config.get("hyper_parameters.optimizer.weight_decay", 0.0, type=float),
            sparse=config.get("hyper_parameters.optimizer.sparse", True, type=bool),
            **{"clip_norm": config.get("hyper_parameters.clip_by_norm", None) or None,
               "lr_schedule": config.get("hyper_parameters.optimizer.lr_schedule", None), **options},
        )

    def create_metrics(self) -> tuple[list[Metric], list[str]]:
        """One AUC per task; PaddleRec's ``(metrics_list, metrics_list_name)``."""
        names = [f"auc_{t}" for t in self.task_names] if self.task_names else ["auc"]
        return [AUC() for _ in names], names

    def update_metrics(self, metrics_list: list[Metric], pred: Any, labels: Sequence[torch.Tensor],
                       groups: torch.Tensor | None = None) -> None:
        """Feed each task's predictions to its metric; ``groups`` (the batch's :attr:`group_name`
        column) to the metrics that need it (GAUC).

        The default ``train_forward`` / ``infer_forward`` pass ``groups`` only when
        :attr:`group_name` is set, so an override with the older signature
        ``(metrics_list, pred, labels)`` keeps working for models without groups.
        """
        for metric, p, y in zip(metrics_list, as_tasks(pred), labels):
            if metric.needs_groups:
                metric.update(p, y, groups=groups)
            else:
                metric.update(p, y)

    def metric_groups(self, batch_data: Batch) -> torch.Tensor | None:
        """The batch's group keys for grouped metrics: ``batch_data[group_name]`` (``None`` without a group_name)."""
        if self.group_name is None:
            return None
        if self.group_name not in batch_data:
            raise KeyError(f"batch has no group column '{self.group_name}' (the wrapper's group_name); the reader "
                           f"gives {sorted(batch_data)}")
        return batch_data[self.group_name]

    def _update_metrics(self, metrics_list: list[Metric], pred: Any, labels: Sequence[torch.Tensor],
                        batch_data: Batch) -> None:
        if self.group_name is None:
            self.update_metrics(metrics_list, pred, labels)
        else:
            self.update_metrics(metrics_list, pred, labels, groups=self.metric_groups(batch_data))

    def forward_outputs(self, dy_model: nn.Module,
                        inputs: Sequence[torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
        """One training forward pass: ``(predictions, extra outputs)``.

        Calls ``dy_model`` itself, so that under ``runner.use_fleet`` DDP's forward is the one that runs
        (it syncs the buffers and prepares the gradient all-reduce; a method of the network called
        instead would bypass it and the ranks' gradients would not be averaged). With
        :attr:`extra_output_names` the call is ``dy_model(*inputs, return_extras=True)`` and the network
        returns ``(predictions, {name: tensor})``; without, the extras are ``{}``.

        Raises:
            RuntimeError: the network returned an extra output the wrapper does not declare, or left
                out one it does.
        """
        if not self.extra_output_names:
            return dy_model(*inputs), {}
        pred, extras = dy_model(*inputs, return_extras=True)
        if set(extras) != set(self.extra_output_names):
            raise RuntimeError(f"{type(self).__module__}: the network returned the extra outputs {sorted(extras)}, "
                               f"the wrapper's extra_output_names are {list(self.extra_output_names)}")
        return pred, extras

    def regularization_loss(self, dy_model: nn.Module, inputs: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """The batch's regularisation term (a scalar added to the loss), or ``None`` for none.

        Default: the network's own ``regularization_loss(*inputs)`` when it defines one (DBMTL, EasyRec's
        MMoE, E2E_MM_DBMTL: ``l2_regularization`` and ``embedding_regularization``), looked up on the
        network inside DDP (:func:`unwrap_model`), so the term is the same wrapped or not. Under DDP
        its gradient reaches each parameter's gradient before DDP's all-reduce of that parameter
        (autograd sums both paths first), so every rank applies it; a term that depends on the batch
        (the embedding one) is each rank's own batch's, averaged over the ranks with the gradients.
        """
        hook = getattr(unwrap_model(dy_model), "regularization_loss", None)
        return hook(*inputs) if callable(hook) else None

    def train_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[torch.Tensor, list[Metric], dict[str, Any] | None]:
        """Feeds → :meth:`forward_outputs` → :meth:`create_loss` + :meth:`regularization_loss` → metrics."""
        inputs, labels = self.create_feeds(batch_data, config)
        pred, _ = self.forward_outputs(dy_model, inputs)
        loss = self.create_loss(pred, labels)
        regularization = self.regularization_loss(dy_model, inputs)
        if regularization is not None:
            loss = loss + regularization
        self._update_metrics(metrics_list, pred, labels, batch_data)
        return loss, metrics_list, None

    def begin_evaluation(self, model: nn.Module, config: Config) -> None:
        """Called by the evaluator before it creates the metrics and reads the first batch of an evaluation (a
        checkpoint's), with the model in eval mode: work shared by all batches (the retrieval models embed their
        item corpus here). Default: nothing."""

    def infer_forward(self, dy_model: nn.Module, metrics_list: list[Metric], batch_data: Batch,
                      config: Config) -> tuple[list[Metric], dict[str, Any] | None]:
        inputs, labels = self.create_feeds(batch_data, config)
        pred = dy_model(*inputs)
        self._update_metrics(metrics_list, pred, labels, batch_data)
        return metrics_list, None


def load_wrapper(config: Config) -> DygraphModel:
    """The ``DygraphModel`` of the config's model folder (``<config dir>/dygraph_model.py``)."""
    from recstack.modules import load_module

    try:
        module = load_module(config.config_dir, "dygraph_model")
    except FileNotFoundError:
        raise FileNotFoundError(f"{config.config_dir} has no dygraph_model.py; a model folder holds net.py, "
                                "dygraph_model.py and its configs") from None
    cls = getattr(module, "DygraphModel", None)
    if cls is None:
        raise ConfigError(f"{module.__file__} defines no class DygraphModel (the model folder of "
                          f"{config.path or config.config_dir}; see doc/model_develop.md)")
    wrapper = cls.for_config(config)
    check_schema(config, type(wrapper).hyper_parameter_schema, model_name=model_name(config))
    return wrapper


def model_name(config: Config) -> str:
    """The model folder's name (``deepfm``, ``mmoe``)."""
    return config.config_dir.name


def build_model(config: Config, device: torch.device, meta_tables: bool = False) -> tuple[DygraphModel, nn.Module]:
    """The model folder's wrapper (:func:`load_wrapper`) and its network (``create_model``) on ``device``.

    Every entry point builds a model through this: the trainer, the evaluator, the exporter and serving.

    ``meta_tables``: id tables made by ``recstack.layers.make_embedding`` stay on the ``meta``
    device, unallocated (``runner.embedding_sharding``: each rank then fills its shards only).

    Raises:
        TypeError: ``create_model`` returned something that is not an ``nn.Module``.
    """
    wrapper = load_wrapper(config)
    if meta_tables:
        from recstack.layers.embedding import meta_tables as on_meta

        with on_meta():
            model = wrapper.create_model(config)
    else:
        model = wrapper.create_model(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"create_model of {model_name(config)} returned {type(model).__name__}, not an nn.Module")
    if meta_tables:
        return wrapper, model._apply(lambda t: t if t.is_meta else t.to(device))
    return wrapper, model.to(device)


class ClickGAUCMetrics:
    """Metrics of a one-task click model over user behaviour (DIN, DIEN, BST): AUC over all impressions and GAUC,
    per-user AUC weighted by impressions (the reader's ``group_name`` column, the user id; -1 = unknown, skipped).
    Mixed in before :class:`DygraphModel`: ``class DygraphModel(ClickGAUCMetrics, BaseModel)``."""

    def create_metrics(self) -> tuple[list[Metric], list[str]]:
        """AUC over all impressions and GAUC (per-user AUC weighted by impressions)."""
        return [AUC(), GAUC()], ["auc", "gauc"]

    def update_metrics(self, metrics_list: list[Metric], pred: torch.Tensor, labels: Sequence[torch.Tensor],
                       groups: torch.Tensor | None = None) -> None:
        for metric in metrics_list:  # both watch the single task; GAUC also gets the user ids
            if metric.needs_groups:
                metric.update(pred, labels[0], groups=groups)
            else:
                metric.update(pred, labels[0])


class BehaviourClickModel(ClickGAUCMetrics):
    """DIN's inputs, label, user groups and model keys, shared by the models over DIN's format (DIN, DIEN).
    Mixed in before :class:`DygraphModel`; a model extends :attr:`hyper_parameter_schema` with its own keys and
    builds its net from :meth:`din_keys` plus them."""

    hyper_parameter_schema: dict[str, Check] = {
        "item_count": PositiveInt, "cat_count": PositiveInt, "item_emb_size": PositiveInt,
        "cat_emb_size": PositiveInt, "fc_sizes": ListOf(PositiveInt), "attention_sizes": ListOf(PositiveInt),
        "init_std": PositiveNumber, "act": OneOf("sigmoid", "dice", "relu", "prelu")}
    feed_names = ("hist_item", "hist_cat", "hist_len", "target_item", "target_cat")
    label_names = ("label",)
    group_name = "user"  # GAUC's group: the reader's user id column (-1 = unknown, skipped)
    #: PaddleRec flags its DIN-format configs carry: accepted, logged, no effect
    paddle_flags: tuple[str, ...] = ("is_sparse", "use_DataLoader")

    def din_keys(self, config: Config) -> dict[str, Any]:
        """The net arguments of DIN's keys: ``item_count``, ``cat_count``, the embedding sizes, ``act`` (any case),
        ``fc_sizes``, ``attention_sizes``, ``init_std`` (PaddleRec's defaults)."""
        for key in self.paddle_flags:
            if config.get(f"hyper_parameters.{key}", None) is not None:
                logger.info("hyper_parameters.%s is a PaddleRec setting with no effect here (tables take "
                            "row-wise updates per hyper_parameters.optimizer.sparse)", key)
        return dict(item_count=config.get("hyper_parameters.item_count", type=int),
                    cat_count=config.get("hyper_parameters.cat_count", type=int),
                    item_emb_size=config.get("hyper_parameters.item_emb_size", 64, type=int),
                    cat_emb_size=config.get("hyper_parameters.cat_emb_size", 64, type=int),
                    act=config.get("hyper_parameters.act", "sigmoid", type=str).lower(),
                    fc_sizes=config.get("hyper_parameters.fc_sizes", [80, 40], type=list),
                    attention_sizes=config.get("hyper_parameters.attention_sizes", [80, 40], type=list),
                    init_std=config.get("hyper_parameters.init_std", 0.3, type=float))


class EntireSpaceMetrics:
    """Metrics of the entire-space conversion models (ESMM, ESCM²), whose outputs are ``(pCTR, pCTCVR, pCVR)`` and
    labels ``(click, conversion)``: ``auc_ctr``, ``auc_ctcvr`` over every exposure and ``auc_cvr`` over the clicked
    ones only. Mixed in before :class:`DygraphModel`; also the inputs, labels and outputs of the Ali-CCP reader
    (``sparse``; ``ctr``, ``ctcvr``; exported as ``prob_ctr``, ``prob_ctcvr``, ``prob_cvr``) and its keys."""

    feed_names = ("sparse",)
    label_names = ("ctr", "ctcvr")
    task_names = ("ctr", "ctcvr")
    output_names = ("ctr", "ctcvr", "cvr")
    hyper_parameter_schema: dict[str, Check] = {
        "sparse_feature_number": PositiveInt, "sparse_feature_dim": PositiveInt, "num_field": PositiveInt,
        "max_len": PositiveInt, "ctr_fc_sizes": ListOf(PositiveInt), "cvr_fc_sizes": ListOf(PositiveInt)}

    def create_metrics(self) -> tuple[list[Metric], list[str]]:
        return [AUC(), AUC(), AUC()], ["auc_ctr", "auc_ctcvr", "auc_cvr"]

    def update_metrics(self, metrics_list: list[Metric], pred: Sequence[torch.Tensor],
                       labels: Sequence[torch.Tensor]) -> None:
        ctr, ctcvr, cvr = pred
        click, conversion = labels
        metrics_list[0].update(ctr, click)
        metrics_list[1].update(ctcvr, conversion)
        metrics_list[2].update(cvr, conversion, mask=click)  # CVR is defined on clicked samples only

"""Evaluation loop shared by ``tools/infer.py`` and in-process evaluation."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recstack.checkpoint import CheckpointError
from recstack.config import Config, ConfigError
from recstack.data.base import DataFormatError
from recstack.logs import IntervalStats, format_metrics
from recstack.metrics import warn_undefined
from recstack.prepare import batch_size_of, move_batch
from recstack.wrapper import Batch, DygraphModel

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(wrapper: DygraphModel, model: nn.Module, batches: Iterable[Batch], config: Config, *,
             epoch: int = 0, device: torch.device | None = None, log: bool = True) -> dict[str, float]:
    """Run ``infer_forward`` over ``batches`` and return the metrics (``{"auc": ...}``).

    Logs PaddleRec-style lines every ``runner.print_interval`` batches and
    ``epoch: N done, auc: ..., epoch time: ... s`` at the end.
    """
    device = device or torch.device("cpu")
    model.eval()
    wrapper.begin_evaluation(model, config)
    metrics, names = wrapper.create_metrics()
    interval = config.get("runner.print_interval")
    stats = IntervalStats()
    samples = 0
    batch_id = -1
    start = tick = time.perf_counter()
    for batch_id, batch in enumerate(batches):
        got = time.perf_counter()
        batch = move_batch(batch, device)
        metrics, _ = wrapper.infer_forward(model, metrics, batch, config)
        n = batch_size_of(batch)
        samples += n
        done = time.perf_counter()
        stats.add(got - tick, done - tick, n)
        tick = done
        if log and batch_id % interval == 0:
            logger.info("epoch: %d, batch_id: %d, %s%s", epoch, batch_id, format_metrics(names, metrics), stats.line())
            stats.reset()
    elapsed = time.perf_counter() - start
    batches = batch_id + 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # runner.use_fleet: every rank evaluated its shard; the figures are global (recstack.dist)
        from recstack import dist

        batches, samples = (int(v) for v in dist.all_sum([batches, samples]))
        metrics = dist.reduce_metrics(metrics)
    if batches == 0:
        raise DataFormatError(f"{config.source('runner.test_data_dir')}: the evaluation data produced no batches")
    if log:
        logger.info("epoch: %d done, %sepoch time: %.2f s, samples: %d, ips: %.1f ins/s", epoch,
                    format_metrics(names, metrics), elapsed, samples, samples / max(elapsed, 1e-9))
        warn_undefined(names, metrics, f"epoch {epoch}: ")  # a nan metric (one class only), once per evaluation
    return {name: metric.compute() for name, metric in zip(names, metrics)}


class EpochsFailed(CheckpointError):
    """Some checkpoints of :func:`infer` could not be loaded; ``results`` holds the metrics of the
    others (epoch → metrics), ``failed`` each failed epoch's error."""

    def __init__(self, results: dict[int, dict[str, float]], failed: dict[int, str]) -> None:
        epochs = ", ".join(map(str, failed))
        super().__init__(f"{len(failed)} of {len(failed) + len(results)} checkpoint(s) could not be loaded "
                         f"(epoch {epochs}: see the errors above)"
                         + (f"; the metrics of epoch {', '.join(map(str, results))} are above" if results else ""))
        self.results, self.failed = results, failed


class EvaluationScalars:
    """``runner.use_visual``: each evaluated checkpoint's metrics as TensorBoard scalars ``test/<metric>`` at step
    ``<epoch>``, in the folder of the training run that wrote the checkpoint (:func:`recstack.runs.run_visual_dir`),
    beside its ``train/*`` and ``epoch/*`` scalars: TensorBoard and ``tools/plot.py`` show them with the run.
    A folder that cannot be written is skipped with a warning (the evaluation goes on)."""

    def __init__(self, config: Config, enabled: bool = True) -> None:
        self.enabled = bool(enabled and config.get("runner.use_visual"))
        self.visual_log_path = config.get("runner.visual_log_path")
        self.writers: dict[str, Any] = {}

    def add(self, checkpoint: Path, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        from recstack.runs import run_visual_dir

        folder = run_visual_dir(checkpoint, self.visual_log_path)
        writer = self.writers.get(str(folder))
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            try:
                writer = SummaryWriter(str(folder))
            except OSError as err:
                logger.warning("runner.use_visual: not writing the test metrics to %s: %s", folder,
                               err.strerror or err)
                self.enabled = False
                return
            logger.info("TensorBoard: test metrics as test/<metric> per epoch in %s", folder)
            self.writers[str(folder)] = writer
        for name, value in metrics.items():
            writer.add_scalar(f"test/{name}", value, epoch)
        writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def infer(config: Config) -> dict[int, dict[str, float]]:
    """Evaluate checkpoints ``<infer_load_path>/<epoch>`` for epochs ``[infer_start_epoch, infer_end_epoch)``.

    Epochs of that range without a checkpoint (e.g. after ``-o runner.epochs=1``) are
    skipped with a warning; none at all is an error listing the checkpoints that exist. A checkpoint
    that cannot be loaded (a damaged file) is logged as an error and the other epochs are evaluated;
    :class:`EpochsFailed` at the end then carries their results.

    Returns:
        epoch → metrics.

    Raises:
        EpochsFailed: some checkpoints could not be loaded (after evaluating the others).
    """
    from recstack.checkpoint import MODEL_FILE, clean_interrupted_saves, load_checkpoint
    from recstack.config import log_config
    from recstack.dist.strategy import make_strategy
    from recstack.prepare import prepare_run
    from recstack.runs import previous_runs_hint, warn_mixed_runs

    # runner.use_fleet under torchrun: each rank evaluates its shard; metrics are global, rank 0 logs
    strategy = make_strategy(config, training=False)
    log_config(config)
    wrapper, model, _, _, loader, device = prepare_run(config, "infer", strategy)
    root = Path(config.get("runner.infer_load_path"))
    start, end = config.get("runner.infer_start_epoch"), config.get("runner.infer_end_epoch")
    if end <= start:
        raise ConfigError(f"{config.source('runner.infer_end_epoch')}: nothing to evaluate: runner.infer_start_epoch "
                          f"is {start}, infer_end_epoch {end} (default: runner.epochs); the evaluated epochs are "
                          "[infer_start_epoch, infer_end_epoch)")
    clean_interrupted_saves(root)  # (puts back a checkpoint that a killed save had moved aside)
    epochs = [e for e in range(start, end) if (root / str(e) / MODEL_FILE).is_file()]
    if not epochs:
        try:
            load_checkpoint(root / str(start), model)  # raises, listing the checkpoints that exist
        except FileNotFoundError as err:  # ... and where an earlier run's epochs went (runner.previous_run)
            raise FileNotFoundError(f"{err}{previous_runs_hint(root, range(start, end))}") from None
    missing = sorted(set(range(start, end)) - set(epochs))
    if missing:
        logger.warning("no checkpoint for epoch(s) %s in %s (runner.infer_start_epoch=%d, infer_end_epoch=%d); "
                       "evaluating epoch(s) %s%s", ", ".join(map(str, missing)), root, start, end,
                       ", ".join(map(str, epochs)), previous_runs_hint(root, missing))
    warn_mixed_runs(root, epochs)  # epochs written by different training runs (recstack/runs.py)
    results, failed = {}, {}
    scalars = EvaluationScalars(config, enabled=strategy.is_main)  # runner.use_visual: test/<metric> per epoch
    for epoch in epochs:
        try:
            load_checkpoint(root / str(epoch), model, map_location=device)
        except CheckpointError as err:  # a damaged checkpoint: report it, evaluate the others
            logger.error("epoch %d skipped: %s", epoch, err)
            failed[epoch] = str(err)
            continue
        logger.info("loaded checkpoint %s", root / str(epoch))
        results[epoch] = evaluate(wrapper, model, loader, config, epoch=epoch, device=device)
        scalars.add(root / str(epoch), epoch, results[epoch])
    scalars.close()
    del model
    strategy.teardown()
    if failed:
        raise EpochsFailed(results, failed)
    return results


class ExportedNet(nn.Module):
    """An export (``tools/to_static.py``'s TorchScript or ONNX graph, through a :mod:`recstack.backends` engine) in
    the place of the network: the wrapper's ``infer_forward`` feeds it the inputs it feeds the network (the export's
    inputs are the wrapper's feeds, in order) and reads the outputs the network returns (one tensor, or one per
    task), so the metrics are computed by the same code as ``tools/infer.py``'s."""

    def __init__(self, backend: Any, input_names: list[str], outputs: int) -> None:
        super().__init__()
        self.backend, self.input_names, self.outputs = backend, input_names, outputs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        from recstack.backends import Batch

        if len(inputs) != len(self.input_names):
            raise ConfigError(f"the wrapper feeds {len(inputs)} inputs, the export takes {len(self.input_names)} "
                              f"({self.input_names}); export the model again with tools/to_static.py")
        device = inputs[0].device
        batch = Batch({n: t.cpu() for n, t in zip(self.input_names, inputs)}, {}, len(inputs[0]))
        out = [torch.as_tensor(o).to(device) for o in self.backend.predict(batch)]
        return out[0] if self.outputs == 1 else tuple(out)


def evaluate_export(config: Config, model_dir: str | Path | None, settings: Any) -> tuple[int | None, dict[str, float]]:
    """``tools/static_infer.py``: the metrics of an export over ``runner.test_data_dir``, computed by the wrapper's
    ``infer_forward`` as ``tools/infer.py`` computes a checkpoint's (its log lines too).

    Args:
        config: the model's config.
        model_dir: the export folder (default ``runner.model_save_path``, where ``tools/to_static.py`` writes).
        settings: :class:`recstack.backends.InferenceSettings` (backend, threads, device).

    Returns:
        ``(the exported checkpoint's epoch or None, metrics)``.
    """
    from recstack.backends import create_backend
    from recstack.dist.strategy import make_strategy
    from recstack.export_spec import ExportedModel
    from recstack.prepare import prepare_run

    folder = Path(model_dir or config.get("runner.model_save_path"))
    if (folder / "model.json").is_file():
        raise ConfigError(f"{folder} is a retrieval export (two towers); tools/static_infer.py evaluates a ranking "
                          "export: evaluate a retrieval model with tools/infer.py (-o runner.use_index=True for its "
                          "index)")
    exported = ExportedModel.locate(folder)
    strategy = make_strategy(config, training=False)
    wrapper, _, _, _, loader, device = prepare_run(config, "infer", strategy)
    backend = create_backend(exported, settings)
    net = ExportedNet(backend, [s["name"] for s in exported.spec["inputs"]], len(exported.spec["outputs"]))
    checkpoint = exported.spec.get("checkpoint")
    epoch = int(Path(checkpoint).name) if checkpoint and Path(checkpoint).name.isdigit() else None
    logger.info("evaluating the export %s (%s, from checkpoint %s)", folder, backend.name, checkpoint)
    metrics = evaluate(wrapper, net, loader, config, epoch=epoch if epoch is not None else 0, device=device)
    strategy.teardown()
    return epoch, metrics

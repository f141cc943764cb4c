"""Data-parallel training (``runner.use_fleet`` under torchrun, :mod:`recstack.dist`) on CPU with gloo.

The torchrun runs start ``python -m torch.distributed.run --nproc_per_node=2`` on a free port with DeepFM's
sample data (4,000 training rows, one file: row sharding). Two ranks with batch B take, at each step, the
rows of one process's batch of 2B, so their weights must equal one process trained with batch 2B.
The multi-task models (DBMTL, EasyRec's MMoE, E2E_MM_DBMTL) are checked the same way, with their
regularisation and E2E's auxiliary image loss (an extra output of its forward) in the loss.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import log_loss, roc_auc_score

from recstack.checkpoint import load_checkpoint
from recstack.config import ConfigError, load_config
from recstack.dist import combine_states
from recstack.evaluator import infer
from recstack.metrics import AUC, GAUC, MSE, LogLoss
from recstack.trainer import train

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
#: the model's sample data: 4,000 rows; batches of 250 per rank = 500 in one process, 8 steps either way
RANK_BATCH = 250


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tool: str, overrides: list[str], cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 tools/<tool> -m deepfm/config.yaml -o runner.use_fleet=True ...``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(REPO / "tools" / tool), "-m", str(DEEPFM),
           "-o", "runner.use_fleet=True", "runner.dist_timeout_s=60", *overrides]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def _sample_lines() -> list[str]:
    return (REPO / "models/rank/deepfm/data/sample_data/train/part-0.txt").read_text().splitlines(keepends=True)


def check(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


# ---------------------------------------------------------------------- metric reduction (no processes)
def test_metric_states_of_ranks_combine_to_the_global_metric():
    rng = np.random.default_rng(0)
    n = 5000
    labels = rng.random(n) < 0.3
    preds = np.clip(0.3 + 0.25 * labels + 0.2 * rng.standard_normal(n), 0.001, 0.999).astype(np.float32)
    groups = rng.integers(0, 200, n)
    cut = 1700  # unequal shards
    p, y, g = torch.from_numpy(preds), torch.from_numpy(labels.astype(np.float32)), torch.from_numpy(groups)

    def shard_metrics(metric_cls, s):
        m = metric_cls()
        if metric_cls is GAUC:
            m.update(p[s], y[s], groups=g[s])
        else:
            m.update(p[s], y[s])
        return m

    for cls in (AUC, LogLoss, MSE, GAUC):
        whole = shard_metrics(cls, slice(None))
        parts = [shard_metrics(cls, slice(0, cut)), shard_metrics(cls, slice(cut, None))]
        merged = combine_states(parts[0], [m.state() for m in parts])
        assert merged.compute() == pytest.approx(whole.compute(), abs=1e-12), cls.__name__
        assert parts[0].compute() != pytest.approx(whole.compute(), abs=1e-12)  # rank 0's state is unchanged
    exact = roc_auc_score(labels, preds)
    merged_auc = combine_states(AUC(), [shard_metrics(AUC, slice(0, cut)).state(),
                                        shard_metrics(AUC, slice(cut, None)).state()])
    assert merged_auc.compute() == pytest.approx(exact, abs=1e-5)
    merged_ll = combine_states(LogLoss(), [shard_metrics(LogLoss, slice(0, cut)).state(),
                                           shard_metrics(LogLoss, slice(cut, None)).state()])
    assert merged_ll.compute() == pytest.approx(log_loss(labels, preds.astype(np.float64)), rel=1e-9)
    # the average of per-rank AUCs is not the global AUC
    averaged = np.mean([roc_auc_score(labels[:cut], preds[:cut]), roc_auc_score(labels[cut:], preds[cut:])])
    assert abs(averaged - exact) > abs(merged_auc.compute() - exact)


# ---------------------------------------------------------------------- single-process behaviour
def test_use_fleet_without_torchrun_runs_as_one_process_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    data = tmp_path / "train"
    data.mkdir()
    (data / "part-0.txt").write_text("".join(_sample_lines()[:300]))
    config = load_config(DEEPFM, ["runner.use_fleet=True", "runner.epochs=1", "runner.print_interval=100",
                                  f"runner.train_data_dir={data}", f"runner.model_save_path={tmp_path / 'out'}"])
    with caplog.at_level(logging.WARNING):
        result = train(config)
    assert "WORLD_SIZE is not set" in caplog.text and "running as one process" in caplog.text
    assert result.epochs[0].samples == 300
    assert not torch.distributed.is_initialized()


def test_sparse_gradients_with_a_compression_hook_are_a_config_error(tmp_path, monkeypatch):
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    config = load_config(DEEPFM, ["runner.use_fleet=True", "runner.dist_comm_hook=fp16",
                                  f"runner.model_save_path={tmp_path / 'out'}"])
    try:
        with pytest.raises(ConfigError, match="dist_comm_hook.*fp16.*sparse.*optimizer.sparse: False"):
            train(config)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    with pytest.raises(ConfigError, match="dist_backend.*unknown backend 'mpi'"):
        train(load_config(DEEPFM, ["runner.use_fleet=True", "runner.dist_backend=mpi"]))
    with pytest.raises(ConfigError, match="dist_backend.*nccl needs GPUs"):
        train(load_config(DEEPFM, ["runner.use_fleet=True", "runner.dist_backend=nccl"]))
    with pytest.raises(ConfigError, match="dist_comm_hook.*unknown hook 'int8'"):
        train(load_config(DEEPFM, ["runner.use_fleet=True", "runner.dist_comm_hook=int8"]))
    torch.distributed.destroy_process_group()
    with pytest.raises(ConfigError, match="embedding_sharding.*needs runner.use_fleet: True"):
        train(load_config(DEEPFM, ["runner.embedding_sharding=table_wise"]))
    assert not torch.distributed.is_initialized()


# ---------------------------------------------------------------------- torchrun
def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_ranks_equal_one_process_on_the_combined_batch_sgd_and_sparse_adam(tmp_path):
    """Two ranks x batch 250 vs one process x batch 500, same initial weights, 8 steps, float64
    (tests/dist_worker.py): SGD (sparse table) and Adam (SparseAdam on the sparse table)."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}", str(REPO / "tests" / "dist_worker.py"), str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    check(proc)
    sys.path.insert(0, str(REPO / "tests"))
    import dist_worker

    initial = dist_worker.run("SGD", 1, None, steps=0)
    for name in dist_worker.OPTIMIZERS:
        rank0, rank1 = _state(tmp_path / f"{name}_rank0.pt"), _state(tmp_path / f"{name}_rank1.pt")
        assert _max_diff(rank0, rank1) == 0.0, name  # identical across ranks
        single = dist_worker.run(name, 2 * dist_worker.RANK_BATCH, None)
        assert _max_diff(rank0, single) <= 1e-6, name
        assert _max_diff(rank0, initial) > 1e-3, name  # training moved them


def test_trainer_under_torchrun_end_to_end(tmp_path):
    """tools/trainer.py with use_fleet under torchrun (SGD, row sharding), then tools/infer.py on its checkpoint."""
    opt = ["hyper_parameters.optimizer.class=SGD", "hyper_parameters.optimizer.learning_rate=0.01",
           "runner.epochs=1", "runner.print_interval=100"]
    proc = torchrun("trainer.py", [*opt, f"runner.train_batch_size={RANK_BATCH}", "runner.model_save_path=ddp"],
                    tmp_path, env={"RECSTACK_TEST_DUMP_DIR": str(tmp_path / "dump")})
    out = check(proc)
    assert "[rank 0] data: rank 0 of 2 reads rows" in out
    assert "[rank 1]" not in out  # rank 0 alone logs (other ranks: warnings and errors only)
    rank0, rank1 = _state(tmp_path / "dump" / "rank0.pt"), _state(tmp_path / "dump" / "rank1.pt")
    assert _max_diff(rank0, rank1) == 0.0  # the ranks hold identical weights

    single = train(load_config(DEEPFM, [*opt, f"runner.train_batch_size={2 * RANK_BATCH}",
                                        f"runner.model_save_path={tmp_path / 'single'}"]))
    reference = {k: v.detach().clone() for k, v in single.model.state_dict().items()}
    assert _max_diff(rank0, reference) <= 1e-5  # float32, other summation order (float64: 1e-6 above)
    # rank 0's checkpoint holds the unwrapped model: it loads into the plain one
    meta = load_checkpoint(tmp_path / "ddp" / "0", single.model)
    assert _max_diff({k: v.detach() for k, v in single.model.state_dict().items()}, rank0) == 0.0
    # global metrics: the histogram AUC and mean loss of both ranks' predictions = one process's
    assert meta["world_size"] == 2
    assert meta["metrics"]["auc"] == pytest.approx(single.epochs[0].metrics["auc"], abs=1e-6)
    assert meta["loss"] == pytest.approx(single.epochs[0].loss, abs=1e-6)
    assert "samples: 4000" in out

    # tools/infer.py on the checkpoint, distributed: the global metrics equal one process's
    out = check(torchrun("infer.py", ["runner.infer_load_path=ddp", "runner.infer_end_epoch=1",
                                      "runner.infer_batch_size=300"], tmp_path))
    expected = infer(load_config(DEEPFM, [f"runner.infer_load_path={tmp_path / 'ddp'}",
                                          "runner.infer_end_epoch=1"]))[0]["auc"]
    line = [ln for ln in out.splitlines() if "checkpoint epoch 0: auc:" in ln]
    assert len(line) == 1 and "[rank 0]" in line[0], out[-3000:]  # rank 0 alone logs it
    assert float(line[0].rsplit("auc: ", 1)[1]) == pytest.approx(expected, abs=1e-6)
    assert "samples: 1000" in out


def test_unequal_shards_finish_with_identical_weights(tmp_path):
    """Three files of unequal sizes: rank 0 reads files 0 and 2 (1,300 rows), rank 1 file 1 (200 rows)."""
    lines = _sample_lines()
    data = tmp_path / "train"
    data.mkdir()
    for name, chunk in (("a.txt", lines[:1000]), ("b.txt", lines[1000:1200]), ("c.txt", lines[1200:1500])):
        (data / name).write_text("".join(chunk))
    start = time.perf_counter()
    out = check(torchrun("trainer.py", [f"runner.train_data_dir={data}", "runner.train_batch_size=100",
                                        "runner.epochs=2", "runner.model_save_path=ddp", "runner.shuffle=True",
                                        "runner.dist_timeout_s=30"],
                         tmp_path, env={"RECSTACK_TEST_DUMP_DIR": str(tmp_path / "dump")}))
    assert time.perf_counter() - start < 60  # no rank waited for the timeout
    assert "file sharding" in out
    assert out.count("samples: 1500") == 2  # both epochs saw every row once, over both ranks
    assert _max_diff(_state(tmp_path / "dump" / "rank0.pt"), _state(tmp_path / "dump" / "rank1.pt")) == 0.0
    assert (tmp_path / "ddp" / "1" / "model.pt").is_file()


def test_a_rank_that_raises_ends_the_job_naming_it(tmp_path):
    start = time.perf_counter()
    proc = torchrun("trainer.py", ["runner.epochs=1", "runner.model_save_path=ddp", "runner.dist_timeout_s=30"],
                    tmp_path, env={"RECSTACK_TEST_FAIL_RANK": "1"}, timeout=90)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert time.perf_counter() - start < 60  # ended by torchrun, not by the 30 s collective timeout
    root = out[out.index("Root Cause"):]
    assert "rank      : 1 (local_rank: 1)" in root
    assert "RuntimeError: injected failure on rank 1" in root  # its traceback
    assert not (tmp_path / "ddp" / "0").exists()


def test_a_killed_rank_ends_the_job_naming_it(tmp_path):
    """A rank lost without a Python error (SIGKILL: the OOM killer, a lost machine) ends the job with a
    non-zero exit naming the rank and the signal, long before the collective timeout."""
    start = time.perf_counter()
    proc = torchrun("trainer.py", ["runner.epochs=1", "runner.model_save_path=ddp", "runner.dist_timeout_s=30"],
                    tmp_path, env={"RECSTACK_TEST_FAIL_RANK": "1:kill"}, timeout=90)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert time.perf_counter() - start < 60
    # torchrun's summary lists each failed rank; rank 0 may fail first (its peer vanished), so look for
    # the block of rank 1 among them rather than in the root cause alone
    summary = out[out.index("Failures:"):] if "Failures:" in out else out[out.index("Root Cause"):]
    blocks = re.split(r"\n\[\d+\]:", summary)
    assert any("rank      : 1 (local_rank: 1)" in b and "SIGKILL" in b for b in blocks), summary
    assert not (tmp_path / "ddp" / "0").exists()


# ---------------------------------------------------------------------- multi-task models: regularisation, extras
MULTITASK_DIR = REPO / "models/multitask"
#: name -> (model folder, config, model_config section); steps and per-rank batch (E2E: groups of ~3 samples)
MULTITASK = {"dbmtl": ("dbmtl", "config.yaml", "dbmtl"),
             "mmoe_easyrec": ("mmoe", "config_easyrec.yaml", "mmoe"),
             "e2e_mm_dbmtl": ("e2e_mm_dbmtl", "config.yaml", "e2e_mm_dbmtl"),
             # EasyRec's MMoE on the backbone (SENet -> MMoE component, tag features): recstack/backbone
             "mmoe_backbone": ("mmoe", "config_backbone.yaml", "model_params")}
MULTITASK_BATCH = {"dbmtl": 32, "mmoe_easyrec": 32, "e2e_mm_dbmtl": 4, "mmoe_backbone": 32}
MULTITASK_STEPS = 4
#: parameters' agreement with the reference, float64 (seen: 6e-17, 2e-15; E2E 2e-9, the CNN's gradients on
#: 0-255 pixels being large; the backbone MMoE 8e-12, SENet's re-weighting over 17 features and 16-wide
#: tables); the regularisation moves them by ~8e-3 (E2E: 7e-2)
MULTITASK_TOLERANCE = {"dbmtl": 1e-12, "mmoe_easyrec": 1e-12, "e2e_mm_dbmtl": 1e-7,
                       "mmoe_backbone": 1e-10}
#: regularisation strong enough to move the weights well beyond float64 round-off in 4 steps (the configs'
#: 1e-6 / 5e-6 do too, by less)
L2, EMBEDDING_L2 = 1e-2, 1e-3


def _multitask_data(name: str, tmp_path: Path, l2: float = L2, embedding_l2: float = EMBEDDING_L2) -> dict:
    """The model's config as a dict, per-rank batch, ``runner.use_fleet``, the regularisation above; E2E with
    its auxiliary image loss on (a ``cate_label`` column added to 40 groups of its sample data)."""
    folder, config_name, section = MULTITASK[name]
    data = yaml.safe_load((MULTITASK_DIR / folder / config_name).read_text())
    data["runner"].update(train_batch_size=MULTITASK_BATCH[name], use_fleet=True, dist_timeout_s=60)
    hp = data["hyper_parameters"]
    hp["model_config"][section]["l2_regularization"] = l2
    hp["model_config"]["embedding_regularization"] = embedding_l2
    if name == "e2e_mm_dbmtl":  # 40 groups, their images shrunk to 32 x 32 (a quarter of the CNN's work)
        from PIL import Image

        sample = MULTITASK_DIR / folder / "data/sample_data"
        train, images = tmp_path / "e2e_train", tmp_path / "images"
        train.mkdir(exist_ok=True)
        images.mkdir(exist_ok=True)
        lines = []
        for i, line in enumerate((sample / "train/part-0.txt").read_text().splitlines()[:40]):
            cols = line.split(";")  # labels; features; ../images/item_XXXX.png; group size
            with Image.open(sample / "train" / cols[-2]) as image:
                image.resize((32, 32)).save(images / Path(cols[-2]).name)
            cate = "\x01".join(str((i + j) % 16) for j in range(int(cols[-1])))
            lines.append(";".join([*cols[:2], cate, *cols[2:]]))
        (train / "part-0.txt").write_text("\n".join(lines) + "\n")
        hp["data_config"].update(selected_cols="0,1,2,3,4,5", label_fields=[*hp["data_config"]["label_fields"],
                                                                            "cate_label"])
        hp["data_config"]["input_fields"].insert(2, {"input_name": "cate_label", "input_type": "INT32"})
        for feature in hp["feature_config"]["features"]:
            if feature["feature_type"] == "ImgFeature":
                feature["img_shape"] = {"width": 32, "height": 32, "channel": 3}
        hp["export_config"]["img_shape"] = {"width": 32, "height": 32, "channel": 3}
        hp["model_config"][section]["img_model"]["img_loss_weight"] = 0.5
        # SGD: Adam divides by sqrt(v), and for the CNN's conv weights before a BatchNorm, whose gradients nearly
        # cancel, that turns float64 round-off of DDP's other summation order into differences up to 4e-7
        hp["optimizer"] = {"class": "SGD", "learning_rate": 0.01}
        data["runner"]["train_data_dir"] = str(train)
    return data


@pytest.mark.parametrize("name", list(MULTITASK))
def test_multitask_ranks_apply_regularisation_and_extra_losses(tmp_path, name):
    """Two ranks under DDP vs one process doing both ranks' batches by hand (tests/dist_worker.py,
    ``run_multitask``), 4 steps, float64, Adam (SparseAdam on the tables): the same weights and losses.
    The regularisation is in both (the reference without it ends elsewhere), so DDP no longer drops it;
    E2E's image loss comes from the logits its DDP forward returns as an extra output."""
    sys.path.insert(0, str(REPO / "tests"))
    import dist_worker

    folder = MULTITASK_DIR / MULTITASK[name][0]
    data = _multitask_data(name, tmp_path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config_dir": str(folder), "data": data, "steps": MULTITASK_STEPS}))
    check(subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}", str(REPO / "tests" / "dist_worker.py"), "--multitask", str(spec),
         str(tmp_path / "out")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120))
    ranks = [torch.load(tmp_path / "out" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    config = dist_worker.multitask_config({"config_dir": str(folder), "data": data})
    # parameters only: BatchNorm's running statistics (E2E) follow DDP's broadcasts (see run_multitask)
    params = [name for name, _ in dist_worker.build_model(config, torch.device("cpu"))[1].named_parameters()]
    rank0, rank1 = [{k: r["state"][k] for k in params} for r in ranks]
    assert _max_diff(rank0, rank1) == 0.0  # identical on both ranks

    reference, reference_losses = dist_worker.run_multitask(config, None, MULTITASK_STEPS)
    assert _max_diff(rank0, {k: reference[k] for k in params}) <= MULTITASK_TOLERANCE[name], name
    rank_mean = np.mean([r["losses"] for r in ranks], axis=0)  # each rank's loss is its own batch's
    np.testing.assert_allclose(rank_mean, reference_losses, rtol=1e-9, atol=0)

    no_reg = dist_worker.multitask_config({"config_dir": str(folder),
                                           "data": _multitask_data(name, tmp_path, l2=0.0, embedding_l2=0.0)})
    unregularised, unregularised_losses = dist_worker.run_multitask(no_reg, None, MULTITASK_STEPS)
    assert _max_diff(rank0, {k: unregularised[k] for k in params}) > 1e-5, name  # regularisation moved them
    assert rank_mean[0] - unregularised_losses[0] > 1e-3, name  # and is part of the DDP loss

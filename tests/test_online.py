"""Online training over time partitions (recstack/online.py, tools/online_trainer.py).

DeepFM's config_online.yaml on small hourly partitions of datasets/synthetic/online_stream.py (300 rows each):
order and one pass per partition, progressive validation recorded before the pass, keep-last-N, resume,
a real SIGKILL during a pass and during a checkpoint save, a missing done-file, bad partitions, per-pass
exports, and a two-process torchrun job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recstack.checkpoint import read_meta
from recstack.config import load_config
from recstack.data.base import DataFormatError
from recstack.online import (
    METRICS_FILE,
    PartitionTimeout,
    pass_checkpoints,
    plot_progressive,
    read_metrics,
    train_online,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "models/rank/deepfm/config_online.yaml"
ROWS = 300


def _stream_module():
    spec = importlib.util.spec_from_file_location("online_stream_gen", REPO / "datasets/synthetic/online_stream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STREAM = _stream_module()
WORLD = STREAM.DriftWorld(world_seed=0)


def hour(k: int) -> str:
    return f"20260101/{k:02d}"


def write(root: Path, k: int, done: bool = True, rows: int = ROWS) -> Path:
    folder = root / hour(k)
    STREAM.write_partition(folder, WORLD.rows(k, rows, seed=1), "_SUCCESS" if done else None)
    return folder


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"runner.train_data_dir={data}", f"runner.model_save_path={out}", "runner.poll_interval=0.05",
            "runner.wait_timeout=0.3", "runner.stop_on_timeout=True", "runner.print_interval=1000",
            "runner.keep_checkpoints=null", *extra]


def config(data: Path, out: Path, *extra: str):
    return load_config(CONFIG, overrides(data, out, *extra))


def no_temporaries(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".tmp")]


class Recorder:
    """Test callback: the passes started, and what the metrics file held for the partition at that moment."""

    def __init__(self, out: Path) -> None:
        self.out, self.passes = out, []

    def on_pass(self, pass_id: int, partition: str) -> None:
        records = {r["partition"]: r for r in read_metrics(self.out / METRICS_FILE)}
        self.passes.append((pass_id, partition, records.get(partition)))


def test_partitions_in_order_one_pass_each_validated_first_keep_last_n_and_resume(tmp_path):
    data, out = tmp_path / "stream", tmp_path / "out"
    for k in range(3):
        write(data, k)
    recorder = Recorder(out)
    result = train_online(config(data, out, "runner.keep_checkpoints=2"), callbacks=[recorder])
    assert result.trained == [hour(k) for k in range(3)]
    assert [(p, name) for p, name, _ in recorder.passes] == [(k, hour(k)) for k in range(3)]
    for _, name, record in recorder.passes:  # validated (and recorded) before its pass started
        assert record is not None and record["partition"] == name and record["trained"] is False
        assert 0.0 <= record["validation"]["auc"] <= 1.0 and record["validation"]["logloss"] > 0
        assert record["validation"]["samples"] == ROWS
    records = read_metrics(out / METRICS_FILE)
    assert [r["partition"] for r in records] == [hour(k) for k in range(3)]
    assert all(r["trained"] and r["train"]["samples"] == ROWS for r in records)
    assert pass_checkpoints(out) == [1, 2]  # keep_checkpoints: 2
    assert read_meta(out / "2" / "meta.json")["partition"] == hour(2)
    assert not no_temporaries(out)

    # nothing new: the restarted job trains nothing; a new partition: only that one, as the next pass
    assert train_online(config(data, out)).trained == []
    write(data, 3)
    result = train_online(config(data, out))
    assert result.trained == [hour(3)] and result.resumed_from == str(out / "2")
    assert read_meta(out / "3" / "meta.json")["partition"] == hour(3)
    assert [r["partition"] for r in read_metrics(out / METRICS_FILE)] == [hour(k) for k in range(4)]

    # the progressive-validation plot of tools/online_trainer.py --plot
    figure = plot_progressive([("online", out / METRICS_FILE)], tmp_path / "pv.png")
    assert figure == tmp_path / "pv.png" and figure.stat().st_size > 1000


def run_tool(data: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "tools/online_trainer.py"), "-m", str(CONFIG), "-o",
           *overrides(data, out, f"runner.end_partition={hour(2)}")]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # (a SIGKILL loses no line)
    full_env.pop("RECSTACK_TEST_ONLINE_KILL", None)
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=out.parent, env=full_env, capture_output=True, text=True, timeout=120)
    proc.log = proc.stdout + proc.stderr
    return proc


TRAINED = re.compile(r"partition (\S+) \(pass (\d+)\) trained")
STARTED = re.compile(r"partition (\S+) \(pass (\d+)\): training")


def test_sigkill_during_a_pass_and_during_a_save_then_restart_trains_every_partition_once(tmp_path):
    data, out = tmp_path / "stream", tmp_path / "out"
    for k in range(3):
        write(data, k)
    # 1: killed (SIGKILL) at the second batch of pass 1: partition 01 was being trained
    first = run_tool(data, out, {"RECSTACK_TEST_ONLINE_KILL": "1:train"})
    assert first.returncode == -9, first.log[-3000:]
    assert STARTED.findall(first.log)[-1] == (hour(1), "1")
    assert pass_checkpoints(out) == [0]
    # 2: resumes at partition 01; killed inside the checkpoint save of pass 2 (model file written, not renamed)
    second = run_tool(data, out, {"RECSTACK_TEST_ONLINE_KILL": "2:save"})
    assert second.returncode == -9, second.log[-3000:]
    assert pass_checkpoints(out) == [0, 1]
    assert any(p.name.startswith(".tmp-2-") for p in out.iterdir())  # the half-written save
    # 3: resumes at partition 02 (its save was lost), the half save is removed, runs to the end
    third = run_tool(data, out)
    assert third.returncode == 0, third.log[-3000:]
    logs = [first.log, second.log, third.log]
    trained = [name for log in logs for name, _ in TRAINED.findall(log)]
    assert sorted(trained) == [hour(k) for k in range(3)]  # every partition trained exactly once (completed)
    assert [name for name, _ in TRAINED.findall(third.log)] == [hour(2)]
    assert "resumed from checkpoint" in second.log and "continuing with partition 20260101/01" in second.log
    assert pass_checkpoints(out) == [0, 1, 2]
    assert [read_meta(out / str(p) / "meta.json")["partition"] for p in range(3)] == [hour(k) for k in range(3)]
    assert not no_temporaries(out)
    records = read_metrics(out / METRICS_FILE)
    assert [r["partition"] for r in records] == [hour(k) for k in range(3)] and all(r["trained"] for r in records)


def test_missing_done_file_times_out_naming_the_partition_and_the_file(tmp_path):
    data, out = tmp_path / "stream", tmp_path / "out"
    write(data, 0)
    write(data, 1, done=False)  # data, but never completed
    write(data, 2)
    with pytest.raises(PartitionTimeout) as err:
        train_online(config(data, out, "runner.stop_on_timeout=False"))
    message = str(err.value)
    assert "partition 20260101/01" in message and str(data / "20260101/01/_SUCCESS") in message
    assert "later partitions exist (20260101/02)" in message
    assert pass_checkpoints(out) == [0]


@pytest.mark.parametrize("bad", ["empty", "malformed"])
def test_bad_partition_names_partition_file_and_line_and_writes_nothing(tmp_path, bad):
    data, out = tmp_path / "stream", tmp_path / "out"
    write(data, 0)
    folder = write(data, 1)
    if bad == "empty":
        (folder / "part-0.txt").unlink()
    else:
        lines = (folder / "part-0.txt").read_text().splitlines()
        lines[4] = lines[4].replace("click:", "klick:")
        (folder / "part-0.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        train_online(config(data, out))
    message = str(err.value)
    assert message.startswith("partition 20260101/01:")
    if bad == "empty":
        assert "holds no data files" in message and "_SUCCESS" in message
    else:
        assert f"{folder / 'part-0.txt'}:5" in message
    assert pass_checkpoints(out) == [0]  # partition 00's; nothing of 01
    assert [r["partition"] for r in read_metrics(out / METRICS_FILE)] == [hour(0)]
    assert not no_temporaries(out)


def test_export_every_pass_writes_loadable_exports_and_keeps_the_newest(tmp_path):
    import onnxruntime as ort

    data, out = tmp_path / "stream", tmp_path / "out"
    for k in range(2):
        write(data, k)
    train_online(config(data, out, "runner.export_every_pass=True", "runner.keep_checkpoints=1"))
    exports = out / "export"
    assert sorted(p.name for p in exports.iterdir()) == ["1"]
    spec = json.loads((exports / "1" / "tostatic.json").read_text())
    assert spec["checkpoint"].endswith("/1")
    scripted = torch.jit.load(str(exports / "1" / "tostatic.pt"))
    session = ort.InferenceSession(str(exports / "1" / "tostatic.onnx"), providers=["CPUExecutionProvider"])
    inputs = [torch.zeros([4, *s["shape"][1:]], dtype=getattr(torch, s["dtype"])) for s in spec["inputs"]]
    eager = scripted(*inputs)
    eager = eager[0] if isinstance(eager, (tuple, list)) else eager
    onnx_out = session.run(None, {s["name"]: t.numpy() for s, t in zip(spec["inputs"], inputs)
                                  if s["name"] in spec["onnx_inputs"]})[0]
    assert torch.allclose(eager.reshape(-1), torch.from_numpy(onnx_out).reshape(-1), atol=1e-5)
    assert pass_checkpoints(out) == [1]


def test_torchrun_two_ranks_train_each_partition_once(tmp_path):
    from tests.test_distributed import free_port

    data, out = tmp_path / "stream", tmp_path / "out"
    for k in range(2):
        write(data, k)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(REPO / "tools/online_trainer.py"), "-m", str(CONFIG),
           "-o", "runner.use_fleet=True", "runner.dist_timeout_s=60", *overrides(data, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("RECSTACK_TEST_ONLINE_KILL", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert [name for name, _ in TRAINED.findall(log)] == [hour(0), hour(1)]
    assert "process group: 2 rank(s)" in log and "rank 0 of 2 reads" in log
    assert pass_checkpoints(out) == [0, 1]
    records = read_metrics(out / METRICS_FILE)
    assert [r["validation"]["samples"] for r in records] == [ROWS, ROWS]  # global: both ranks' shards
    assert [r["train"]["samples"] for r in records] == [ROWS, ROWS]
    assert read_meta(out / "1" / "meta.json")["world_size"] == 2


def test_daily_and_hourly_patterns_find_and_step_partitions(tmp_path):
    import datetime as dt

    from recstack.config import ConfigError
    from recstack.online import Partitions

    for name in ("20260101", "20260102", "notadate"):
        (tmp_path / "daily" / name).mkdir(parents=True)
    daily = Partitions(tmp_path / "daily", "%Y%m%d", "_SUCCESS")
    assert daily.step == dt.timedelta(days=1)
    assert [daily.name(t) for t in daily.found()] == ["20260101", "20260102"]
    assert daily.marker(daily.parse("20260102")) == tmp_path / "daily" / "20260102" / "_SUCCESS"
    hourly = Partitions(tmp_path, "%Y%m%d/%H", None)
    assert hourly.name(hourly.parse("20260101/23") + hourly.step) == "20260102/00"
    with pytest.raises(ConfigError, match="does not match runner.partition_pattern"):
        hourly.parse("2026-01-01")
    with pytest.raises(ConfigError, match="no minute, hour or day field"):
        Partitions(tmp_path, "%Y%m", None).step  # noqa: B018


def test_a_restarted_job_trains_exactly_as_an_uninterrupted_one(tmp_path):
    """Each pass's random state (FinalMLP's dropout here) comes from runner.seed and the pass, not from the
    process's history: a job stopped after partition 01 and started again (with other random draws in between)
    ends with the weights of one job over all three partitions, bit for bit."""
    from recstack.checkpoint import MODEL_FILE, read_state

    data = tmp_path / "stream"
    for k in range(3):
        write(data, k)
    small = ["hyper_parameters.mlp1_hidden_units=[32]", "hyper_parameters.mlp2_hidden_units=[16]",
             "hyper_parameters.fs_hidden_units=[16]", "hyper_parameters.sparse_feature_number=27000",
             "hyper_parameters.mlp1_dropout=0.5", "runner.train_batch_size=64"]

    def finalmlp(out: Path, *extra: str):
        return load_config(REPO / "models/rank/finalmlp/config.yaml", overrides(data, out, *small, *extra))

    assert train_online(finalmlp(tmp_path / "whole")).trained == [hour(k) for k in range(3)]
    assert train_online(finalmlp(tmp_path / "split", f"runner.end_partition={hour(1)}")).trained == \
        [hour(0), hour(1)]
    torch.rand(1000)  # the restarted process's history differs
    assert train_online(finalmlp(tmp_path / "split")).trained == [hour(2)]
    whole = read_state(tmp_path / "whole" / "2" / MODEL_FILE)
    split = read_state(tmp_path / "split" / "2" / MODEL_FILE)
    assert whole.keys() == split.keys()
    for key in whole:
        assert torch.equal(whole[key], split[key]), key

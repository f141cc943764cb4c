"""runner.profile: a torch.profiler trace of a few training steps (recstack/profiling.py), then training goes on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recstack.config import ConfigError, load_config
from recstack.profiling import NEXT_BATCH, PROFILE_DIR, TOP_OPS_FILE, TRACE_FILE
from recstack.trainer import train

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"  # 4,000 lines, batch 256: 16 steps per epoch


def _train(out: Path, *overrides: str):
    return train(load_config(DEEPFM, [f"runner.model_save_path={out}", *overrides]))


def test_profile_writes_a_trace_and_the_top_operators_then_trains_on(tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="recstack"):
        result = _train(out, "runner.epochs=2", "runner.profile=True", "runner.profile_wait=2",
                        "runner.profile_steps=4")
    assert [e.epoch for e in result.epochs] == [0, 1] and (out / "1" / "model.pt").is_file()  # training went on
    trace = json.loads((out / PROFILE_DIR / TRACE_FILE).read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    # steps 2-5 traced, named by their training step; the optimizers and the wait for batches are spans
    assert {f"ProfilerStep#{n}" for n in range(2, 6)} <= names and "ProfilerStep#1" not in names
    assert "ProfilerStep#6" not in names
    assert NEXT_BATCH in names and any(str(n).startswith("Optimizer.step#") for n in names)
    assert "aten::addmm" in names
    top = (out / PROFILE_DIR / TOP_OPS_FILE).read_text()
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert top.startswith(f"recstack profile of run {run_id}: training steps 2-5 (4 step(s), after 2 untraced), "
                          "device cpu")
    assert "sorted by self CPU time:" in top and "Self CPU %" in top and "aten::addmm" in top
    assert "Self CPU time total" in top
    assert "runner.profile: traced training steps 2-5" in caplog.text and "aten::" in caplog.text


def test_a_window_longer_than_training_writes_what_it_traced(tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="recstack"):
        _train(out, "runner.epochs=1", "runner.profile=True", "runner.profile_wait=10", "runner.profile_steps=50")
    assert "training ended after 6 traced step(s) of runner.profile_steps=50" in caplog.text
    top = (out / PROFILE_DIR / TOP_OPS_FILE).read_text()
    assert "training steps 10-15 (6 step(s), after 10 untraced)" in top
    assert json.loads((out / PROFILE_DIR / TRACE_FILE).read_text())["traceEvents"]


def test_a_training_shorter_than_the_wait_writes_nothing_and_says_so(tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="recstack"):
        _train(out, "runner.epochs=1", "runner.profile=True", "runner.profile_wait=30")
    assert "no trace written: training ran 16 step(s), not more than runner.profile_wait=30" in caplog.text
    assert not (out / PROFILE_DIR).exists()


def test_profile_off_by_default_writes_nothing(tmp_path):
    out = tmp_path / "out"
    _train(out, "runner.epochs=1")
    assert not (out / PROFILE_DIR).exists()


@pytest.mark.parametrize("override, message", [
    ("runner.profile_steps=0", r"runner\.profile_steps.*expected a positive int, got 0"),
    ("runner.profile_wait=-1", r"runner\.profile_wait.*expected an int >= 0, got -1"),
    ("runner.profile=yes please", r"runner\.profile.*expected bool"),
    ("runner.profile_step=3", r"unknown key 'runner\.profile_step' \(from -o\); did you mean 'runner\.profile_steps'"),
])
def test_profile_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEEPFM, [override])


def test_the_profiler_object_on_its_own(tmp_path):
    """What the loop calls: start(device), batches(...), step(); the window of steps 1-2 only, and on a CUDA device
    the second table (sorted by self CUDA time); without CUDA present the CUDA activity is left out (guarded)."""
    import torch

    from recstack.profiling import TrainingProfiler

    config = load_config(DEEPFM, [f"runner.model_save_path={tmp_path}", "runner.profile=True", "runner.profile_wait=1",
                                  "runner.profile_steps=2"])
    seen = []
    with TrainingProfiler(config, run_id="r1") as profiler:
        profiler.start(torch.device("cuda"))
        for batch in profiler.batches(range(6)):
            seen.append(batch)
            torch.ones(4, 4) @ torch.ones(4, 4)
            profiler.step()
        assert profiler.written == [tmp_path / PROFILE_DIR / TRACE_FILE, tmp_path / PROFILE_DIR / TOP_OPS_FILE]
    assert seen == list(range(6))  # the batches pass through untouched, after the window too
    top = (tmp_path / PROFILE_DIR / TOP_OPS_FILE).read_text()
    assert top.startswith("recstack profile of run r1: training steps 1-2 (2 step(s), after 1 untraced), device cuda")
    assert "sorted by self CUDA time:" in top and "aten::mm" in top
    names = {e.get("name") for e in json.loads((tmp_path / PROFILE_DIR / TRACE_FILE).read_text())["traceEvents"]}
    assert {"ProfilerStep#1", "ProfilerStep#2"} <= names and "ProfilerStep#3" not in names
    # off: nothing happens, the batches are the iterable itself
    off = TrainingProfiler(load_config(DEEPFM, [f"runner.model_save_path={tmp_path / 'off'}"]))
    off.start(torch.device("cpu"))
    items = [1, 2]
    assert off.batches(items) is items
    off.step()
    assert not (tmp_path / "off").exists()

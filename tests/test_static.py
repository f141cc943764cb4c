"""PaddleRec's static-graph tools: tools/static_trainer.py (the step compiled by torch.compile) and
tools/static_infer.py (the exported graph evaluated with tools/infer.py's metric code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recstack.backends import InferenceSettings
from recstack.compile import CompileError, StepCompiler
from recstack.config import ConfigError, load_config
from recstack.data import create_loader
from recstack.evaluator import evaluate_export, infer
from recstack.export import export_model
from recstack.trainer import train, train_step
from recstack.utils import seed_everything
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
#: every rank and multi-task model's sample config (the retrieval models' exports are two towers: tools/infer.py),
#: but E2E multimodal DBMTL's (images: two minutes here; tests/test_e2e_mm_dbmtl.py checks its export's parity)
CONFIGS = sorted(p for p in REPO.glob("models/*/*/config.yaml")
                 if p.parts[-3] != "recall" and p.parent.name != "e2e_mm_dbmtl")


def _trained(path: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    overrides = [f"runner.model_save_path={out}", f"runner.infer_load_path={out}", "runner.epochs=1",
                 "runner.infer_start_epoch=0", "runner.infer_end_epoch=1", *extra]
    train(load_config(path, overrides))
    return overrides


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_static_infer_gives_infer_metrics(path, tmp_path):
    """The export evaluated through ONNX Runtime gives tools/infer.py's metrics on the same checkpoint."""
    overrides = _trained(path, tmp_path / "ckpt")
    export_model(load_config(path, overrides))
    expected = infer(load_config(path, overrides))[0]
    epoch, metrics = evaluate_export(load_config(path, overrides), None, InferenceSettings("onnxruntime"))
    assert epoch == 0 and set(metrics) == set(expected)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=2e-4), name


def _one_step(path: Path, compile_: bool, backend: str = "inductor") -> tuple[float, dict[str, torch.Tensor]]:
    """The loss of one training step on the sample's first batch and the parameters after it."""
    config = load_config(path, ["runner.compile=True", f"runner.compile_backend={backend}"] if compile_ else [])
    seed_everything(config.get("runner.seed"))
    wrapper, model = build_model(config, torch.device("cpu"))
    optimizer = wrapper.create_optimizer(model, config)
    metrics, _ = wrapper.create_metrics()
    batch = next(iter(create_loader(config, "train")))
    compiler = StepCompiler(config, model, torch.device("cpu"))
    assert compiler.compiled == compile_
    model.train()
    loss, _ = compiler.step(train_step, wrapper, model, optimizer, metrics, batch, config)
    return float(loss), {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,backend", [("rank/deepfm", "inductor"), ("multitask/mmoe", "inductor"),
                                          ("rank/din", "inductor")])
def test_compiled_step_equals_the_eager_step(name, backend):
    """Same batch, same initial weights: the compiled step's loss and updated weights are the eager step's. DIN's
    first compilation fails in Inductor's generated code (its sparse-gradient tables); the step is compiled again
    with those tables eager (graph breaks) and still equals the eager step."""
    path = REPO / "models" / name / "config.yaml"
    eager_loss, eager_state = _one_step(path, False)
    compiled_loss, compiled_state = _one_step(path, True, backend)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5, abs=1e-6)
    assert eager_state.keys() == compiled_state.keys()  # checkpoints keep the eager keys
    for key, value in eager_state.items():
        torch.testing.assert_close(compiled_state[key], value, rtol=1e-4, atol=1e-5, msg=key)


def _tool(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A tool's run, its log (stdout and stderr together) in ``.stdout``."""
    return subprocess.run([sys.executable, str(REPO / "tools" / script), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, env={**os.environ, **(env or {})},
                          cwd=REPO)


def test_static_trainer_checkpoints_are_the_eager_ones(tmp_path):
    """tools/static_trainer.py writes checkpoints tools/infer.py and tools/static_infer.py read as they are."""
    config = REPO / "models/rank/deepfm/config.yaml"
    out = tmp_path / "ckpt"
    opts = ["-o", f"runner.model_save_path={out}", f"runner.infer_load_path={out}", "runner.epochs=1",
            "runner.infer_end_epoch=1"]
    run = _tool("static_trainer.py", "-m", str(config), *opts)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "runner.compile: first step" in run.stdout and "epoch: 0 done, auc:" in run.stdout
    evaluated = _tool("infer.py", "-m", str(config), *opts)
    assert evaluated.returncode == 0 and "checkpoint epoch 0: auc:" in evaluated.stdout, evaluated.stdout[-2000:]
    assert _tool("to_static.py", "-m", str(config), *opts).returncode == 0
    static = _tool("static_infer.py", "-m", str(config), *opts, "--backend", "torchscript")
    assert static.returncode == 0, static.stdout[-2000:]
    infer_auc = evaluated.stdout.split("checkpoint epoch 0: auc: ")[1].split()[0]
    assert f"export of checkpoint epoch 0 (torchscript): auc: {infer_auc}" in static.stdout


def test_no_compiler_is_one_line_or_an_eager_fallback(tmp_path):
    """Where Inductor cannot run (no C++ compiler), the trainer stops with the reason in one line (exit 2), or,
    with runner.compile_fallback, says so and trains eagerly."""
    config = REPO / "models/rank/deepfm/config.yaml"
    env = {"CXX": str(tmp_path / "no-such-compiler")}
    opts = ["-o", f"runner.model_save_path={tmp_path / 'ckpt'}", "runner.epochs=1"]
    stopped = _tool("static_trainer.py", "-m", str(config), *opts, env=env)
    assert stopped.returncode == 2
    errors = [line for line in stopped.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "no C++ compiler" in errors[0] and "runner.compile_fallback" in errors[0], errors
    assert not (tmp_path / "ckpt" / "0").exists()
    eager = _tool("static_trainer.py", "-m", str(config), *opts, "runner.compile_fallback=True", env=env)
    assert eager.returncode == 0, eager.stdout[-2000:]
    assert "training eagerly (runner.compile_fallback)" in eager.stdout and (tmp_path / "ckpt" / "0").is_dir()


def test_compile_settings_are_checked():
    config = REPO / "models/rank/deepfm/config.yaml"
    with pytest.raises(ConfigError, match="compile_mode"):
        load_config(config, ["runner.compile_mode=fastest"])
    with pytest.raises(ConfigError, match="compile_backend"):
        load_config(config, ["runner.compile_backend=tvm"])
    assert issubclass(CompileError, ConfigError)


def test_static_infer_refuses_a_retrieval_export(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ConfigError, match="retrieval export"):
        evaluate_export(load_config(REPO / "models/rank/deepfm/config.yaml"), tmp_path, InferenceSettings())

"""Damaged and half-written checkpoints and exports (issue 14, items 1-3).

* an empty, truncated or garbage ``model.pt`` / ``optimizer.pt`` / ``meta.json`` is one ERROR line naming the
  file and exit status 2 (warm start, tools/infer.py, tools/to_static.py); tools/infer.py still evaluates and
  prints the other epochs;
* a damaged ``tostatic.onnx`` / ``.pt`` is one line and exit 2 in tools/infer_benchmark.py, tools/serve.py and
  tools/to_triton.py;
* a save or export killed with a real SIGKILL leaves temporaries that the next run removes (those of live
  processes are kept), and an export killed between its renames is never loaded as a mix: each loader loads
  the old export or refuses with one line.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.backends import Batch, InferenceSettings, create_backend
from recstack.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from recstack.config import load_config
from recstack.export import export_model
from recstack.export_spec import ExportedModel, ExportFileError
from recstack.fileio import HOST, atomic_open
from recstack.utils import seed_everything
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
MISMATCH = "does not match tostatic.json (an interrupted or mixed export?): re-run tools/to_static.py"


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "garbage": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))}[how])


def run(*args, timeout=180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """The single ERROR line of a tool that failed with exit status 2 and no traceback."""
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if " - ERROR - " in line or line.startswith("error: ")]
    assert errors, out[-3000:]
    for fragment in fragments:
        assert fragment in errors[-1], errors
    return errors[-1]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def deepfm_checkpoint(folder: Path, seed: int) -> Path:
    """A seeded, untrained DeepFM checkpoint (with an optimizer state) at ``folder``."""
    config = load_config(DEEPFM)
    seed_everything(seed)
    _, model = build_model(config, torch.device("cpu"))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.dim() < 2 or p.shape[0] < 1000], lr=1e-3)
    for p in optimizer.param_groups[0]["params"]:
        optimizer.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                              "exp_avg_sq": torch.zeros_like(p)}
    return save_checkpoint(folder, model, optimizer, {"epoch": int(folder.name)})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Checkpoints 0 and 1 (other weights) and an export of checkpoint 0 (``export/``)."""
    root = tmp_path_factory.mktemp("hardening")
    deepfm_checkpoint(root / "ckpt" / "0", 0)
    deepfm_checkpoint(root / "ckpt" / "1", 1)
    export_model(load_config(DEEPFM, [f"runner.model_save_path={root / 'export'}",
                                      f"runner.model_init_path={root / 'ckpt' / '0'}"]))
    return root


# ------------------------------------------------------------------ item 1: damaged checkpoint files
@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("name", ["model.pt", "optimizer.pt", "meta.json"])
def test_load_checkpoint_names_the_damaged_file_in_one_line(store, tmp_path, name, how):
    folder = tmp_path / "3"
    shutil.copytree(store / "ckpt" / "0", folder)
    damage(folder / name, how)
    config = load_config(DEEPFM)
    _, model = build_model(config, torch.device("cpu"))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.dim() < 2 or p.shape[0] < 1000], lr=1e-3)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder, model, optimizer)
    message = str(caught.value)
    assert message.startswith(f"{folder / name}: ") and "\n" not in message, message
    expected = {"empty": "empty", "truncated": "truncated", "garbage": "not a complete torch.save archive"}
    if name == "meta.json":
        expected = {"empty": "empty file", "truncated": "not valid JSON", "garbage": "not valid JSON"}
    assert expected[how] in message, message


@pytest.mark.parametrize("name, how", [("model.pt", "truncated"), ("meta.json", "garbage")])
def test_warm_start_from_a_damaged_checkpoint_is_one_line_and_exit_2(store, tmp_path, name, how):
    init = tmp_path / "init"
    shutil.copytree(store / "ckpt" / "0", init)
    damage(init / name, how)
    done = run("tools/trainer.py", "-m", DEEPFM, "-o", "runner.epochs=1", f"runner.model_save_path={tmp_path / 'out'}",
               f"runner.model_init_path={init}")
    one_error_line(done, f"{init / name}: ")
    assert not (tmp_path / "out" / "0").exists()


def test_infer_reports_the_good_epochs_and_exits_2_for_a_damaged_one(store, tmp_path):
    shutil.copytree(store / "ckpt", tmp_path / "ckpt")
    damage(tmp_path / "ckpt" / "0" / "model.pt", "truncated")
    done = run("tools/infer.py", "-m", DEEPFM, "-o", f"runner.infer_load_path={tmp_path / 'ckpt'}",
               "runner.infer_start_epoch=0", "runner.infer_end_epoch=2")
    last = one_error_line(done, "1 of 2 checkpoint(s) could not be loaded (epoch 0")
    out = done.stdout + done.stderr
    assert f"epoch 0 skipped: {tmp_path / 'ckpt' / '0' / 'model.pt'}: not a readable checkpoint file" in out
    assert "epoch: 1 done, auc: " in out and "checkpoint epoch 1: auc: " in out, out[-3000:]
    assert out.index("checkpoint epoch 1: auc") < out.index(last)


def test_to_static_from_a_damaged_checkpoint_is_one_line_and_exit_2(store, tmp_path):
    init = tmp_path / "init"
    shutil.copytree(store / "ckpt" / "0", init)
    damage(init / "model.pt", "empty")
    done = run("tools/to_static.py", "-m", DEEPFM, "-o", f"runner.model_save_path={tmp_path / 'out'}",
               f"runner.model_init_path={init}")
    one_error_line(done, f"{init / 'model.pt'}: empty file")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------ item 1: damaged export files
@pytest.mark.parametrize("tool", ["infer_benchmark", "serve", "to_triton"])
def test_a_truncated_onnx_file_is_one_line_and_exit_2(store, tmp_path, tool):
    export = tmp_path / "export"
    shutil.copytree(store / "export", export)
    damage(export / "tostatic.onnx", "truncated")
    args = {"infer_benchmark": ["--model_dir", export, "--max_batches", "1"],
            "serve": ["--model_dir", export, "--port", "0"],
            "to_triton": ["--model_dir", export, "--repository", tmp_path / "triton"]}[tool]
    done = run(f"tools/{tool}.py", *args)
    one_error_line(done, f"{export}: tostatic.onnx {MISMATCH}")
    assert not (tmp_path / "triton").exists()


def test_a_truncated_torchscript_file_is_one_line_and_exit_2(store, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(store / "export", export)
    damage(export / "tostatic.pt", "truncated")
    done = run("tools/infer_benchmark.py", "--model_dir", export, "--backend", "torchscript", "--max_batches", "1")
    one_error_line(done, f"{export}: tostatic.pt {MISMATCH}")


def test_an_export_without_hashes_still_loads_with_one_warning(store, tmp_path, caplog):
    export = tmp_path / "export"
    shutil.copytree(store / "export", export)
    spec = json.loads((export / "tostatic.json").read_text())
    del spec["sha256"]
    (export / "tostatic.json").write_text(json.dumps(spec))
    model = ExportedModel.locate(export)
    with caplog.at_level(logging.WARNING, logger="recstack.export_spec"):
        create_backend(model, InferenceSettings("onnxruntime"))
        create_backend(model, InferenceSettings("torchscript"))
    assert [r.getMessage() for r in caplog.records].count(
        f"{export / 'tostatic.json'} has no file hashes (an export of an older recstack): its files are not checked "
        "against it; re-run tools/to_static.py to add them") == 1
    damage(export / "tostatic.onnx", "truncated")  # the recorded sizes are still checked
    with pytest.raises(ExportFileError, match="tostatic.onnx does not match tostatic.json"):
        create_backend(model, InferenceSettings("onnxruntime"))


# ------------------------------------------------------------------ items 2 and 3: SIGKILL
#: Runs a tool (or a function) with ``os.replace`` patched to pause (until killed) at one rename:
#: ``argv: STOP WHEN READY_FILE -- tool.py args...`` with WHEN ``before`` or ``after`` the first rename onto a
#: name starting with STOP.
DRIVER = r"""
import os, runpy, sys, time
from pathlib import Path
stop, when, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
real = os.replace
def replace(src, dst, *args, **kwargs):
    hit = Path(dst).name.startswith(stop)
    if hit and when == "before":
        ready.write_text(str(os.getpid())); time.sleep(300)
    real(src, dst, *args, **kwargs)
    if hit and when == "after":
        ready.write_text(str(os.getpid())); time.sleep(300)
os.replace = replace
sys.argv = sys.argv[5:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

#: ``save_checkpoint(FOLDER, nn.Linear(2, 1) seeded with SEED)``: a small save for the driver to interrupt.
SAVE = r"""
import sys, torch
from recstack.checkpoint import save_checkpoint
torch.manual_seed(int(sys.argv[2]))
save_checkpoint(sys.argv[1], torch.nn.Linear(2, 1))
"""


def killed_at(stop: str, when: str, tmp_path: Path, *command) -> int:
    """Start ``command`` under the driver, wait until it pauses at the rename, SIGKILL it; returns its pid."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", DRIVER, stop, when, str(ready), "--", *map(str, command)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the driver did not reach the rename onto {stop}*: "
                                 f"{process.communicate()[0].decode()[-3000:]}")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return process.pid


def save_script(tmp_path: Path) -> Path:
    path = tmp_path / "save.py"
    path.write_text(SAVE)
    return path


def test_a_killed_save_leaves_a_temporary_the_next_run_removes(tmp_path):
    root = tmp_path / "out"
    pid = killed_at("0", "before", tmp_path, save_script(tmp_path), root / "0", 0)
    leftover = root / f".tmp-0-{pid}@{HOST}"
    assert sorted(p.name for p in root.iterdir()) == [leftover.name]
    assert (leftover / "model.pt").is_file()
    # others' temporaries: a live process's, and one of another host (its pid means nothing here)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live, other_host = root / f".tmp-7-{sleeper.pid}@{HOST}", root / f".tmp-8-{pid}@{'0' * 8}"
        for folder in (live, other_host):
            folder.mkdir()
            (folder / "model.pt").write_bytes(b"")
        done = run("tools/trainer.py", "-m", DEEPFM, "-o", "runner.epochs=1", f"runner.model_save_path={root}")
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        names = {p.name for p in root.iterdir()}
        assert leftover.name not in names and {"0", live.name, other_host.name} <= names, names
        assert not any(n.startswith((".tmp-", ".old-")) for n in names - {live.name, other_host.name}), names
        with pytest.raises(FileNotFoundError) as caught:  # temporaries are never listed as checkpoints
            load_checkpoint(root / "5", torch.nn.Linear(2, 1))
        assert str(caught.value).endswith(f"(missing model.pt); checkpoints in {root}: 0")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_save_killed_between_its_renames_keeps_the_old_checkpoint(tmp_path):
    script = save_script(tmp_path)
    root = tmp_path / "out"
    torch.manual_seed(0)
    old = torch.nn.Linear(2, 1)
    save_checkpoint(root / "0", old)
    pid = killed_at(".old-0-", "after", tmp_path, script, root / "0", 1)  # epoch 0 moved aside, new one not in place
    assert sorted(p.name for p in root.iterdir()) == sorted([f".old-0-{pid}@{HOST}", f".tmp-0-{pid}@{HOST}"])
    model = torch.nn.Linear(2, 1)
    load_checkpoint(root / "0", model)  # restores the old checkpoint, removes the new temporary
    assert torch.equal(model.weight, old.weight)
    assert sorted(p.name for p in root.iterdir()) == ["0"]


def test_atomic_writes_remove_dead_writers_temporaries_only(tmp_path):
    target = tmp_path / "report.log"
    gone = dead_pid()
    dead, live, other = (tmp_path / f".report.log.{gone}@{HOST}.tmp",
                         tmp_path / f".report.log.{os.getppid()}@{HOST}.tmp",
                         tmp_path / f".report.log.{gone}@{'0' * 8}.tmp")
    unrelated = tmp_path / f".other.log.{gone}@{HOST}.tmp"
    for path in (dead, live, other, unrelated):
        path.write_text("partial")
    with atomic_open(target) as f:
        f.write("done")
    assert target.read_text() == "done"
    assert not dead.exists() and live.exists() and other.exists() and unrelated.exists()


def predictions(export: Path, backend: str) -> np.ndarray:
    model = ExportedModel.locate(export)
    inputs = {"sparse": torch.arange(26).reshape(1, 26) * 7, "dense": torch.full((1, 13), 0.5)}
    return create_backend(model, InferenceSettings(backend)).predict(Batch(inputs, {}, 1))[0]


@pytest.mark.parametrize("stop", ["tostatic.pt", "tostatic.onnx"])
def test_an_export_killed_between_its_renames_is_never_loaded_as_a_mix(store, tmp_path, stop):
    export = tmp_path / "export"
    shutil.copytree(store / "export", export)
    old = {backend: predictions(export, backend) for backend in ("onnxruntime", "torchscript")}
    new_checkpoint = store / "ckpt" / "1"
    pid = killed_at(stop, "after", tmp_path, "tools/to_static.py", "-m", DEEPFM, "-o",
                    f"runner.model_save_path={export}", f"runner.model_init_path={new_checkpoint}")
    renamed = ["tostatic.pt"] if stop == "tostatic.pt" else ["tostatic.pt", "tostatic.onnx"]
    left = {f".{name}.{pid}@{HOST}.tmp" for name in ("tostatic.pt", "tostatic.onnx", "tostatic.json")
            if name not in renamed}
    assert {p.name for p in export.iterdir()} == {"tostatic.pt", "tostatic.onnx", "tostatic.json", *left}
    for backend, name in (("onnxruntime", "tostatic.onnx"), ("torchscript", "tostatic.pt")):
        if name in renamed:  # a new file beside the old JSON: refused, in one line
            with pytest.raises(ExportFileError) as caught:
                predictions(export, backend)
            assert str(caught.value) == f"{export}: {name} {MISMATCH}"
        else:  # the file still matches the old JSON: the old export, whole
            np.testing.assert_array_equal(predictions(export, backend), old[backend])
    one_error_line(run("tools/infer_benchmark.py", "--model_dir", export, "--backend", "torchscript",
                       "--max_batches", "1"), f"{export}: tostatic.pt {MISMATCH}")
    # the next export removes the killed one's temporaries and publishes a whole new export
    export_model(load_config(DEEPFM, [f"runner.model_save_path={export}", f"runner.model_init_path={new_checkpoint}"]))
    assert {p.name for p in export.iterdir()} == {"tostatic.pt", "tostatic.onnx", "tostatic.json"}
    new = {backend: predictions(export, backend) for backend in ("onnxruntime", "torchscript")}
    np.testing.assert_allclose(new["onnxruntime"], new["torchscript"], atol=1e-5)
    assert not np.allclose(new["onnxruntime"], old["onnxruntime"], atol=1e-7)


# ------------------------------------------------------------------ the binary data cache
def test_binary_cache_removes_dead_temporaries_and_reparses_a_damaged_entry(tmp_path, caplog):
    from recstack.data import create_reader

    config = load_config(DEEPFM, [f"runner.cache_dir={tmp_path / 'cache'}"])
    reader = create_reader(config, "infer")
    cache = tmp_path / "cache"
    cache.mkdir()
    gone = dead_pid()
    stale, live = cache / f".tmp-part-0-{gone}@{HOST}", cache / f".tmp-part-1-{os.getppid()}@{HOST}"
    stale.mkdir()
    live.mkdir()
    first = [b["sparse"].copy() for b in reader.iter_blocks(cache_dir=str(cache))]
    assert not stale.exists() and live.exists()
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    damage(entry / "sparse.bin", "truncated")
    with caplog.at_level(logging.WARNING, logger="recstack.data.base"):
        again = [b["sparse"].copy() for b in reader.iter_blocks(cache_dir=str(cache))]  # parsed again, rewritten
    assert f"{entry}: damaged cache entry (sparse.bin holds " in caplog.text
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert (entry / "sparse.bin").stat().st_size == np.concatenate(first).nbytes

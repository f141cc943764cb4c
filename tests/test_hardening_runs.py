"""What a user's run looks like (issue 14, items 4, 15, 16, 17).

* a bad output path (``model_save_path`` a file, under a file, unwritable; the TensorBoard folder;
  ``cache_dir``) stops the run before the first batch with one line naming the key and the path;
* every run has an id: ``run.json`` beside the checkpoints, ``run_id`` in each ``meta.json``; a second run into
  the same folder archives the first run's epochs (``runner.previous_run``), says so, and infer/export see
  the new run only; a folder mixing runs is named in warnings and the export picks the latest run's last epoch;
  folders without run ids keep working;
* ``train.log`` (and ``infer.log``) beside the checkpoints, one TensorBoard subfolder per run;
* the progress bar on a terminal has a total and log lines print above it, not into it.
"""

import fcntl
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from recstack.config import ConfigError, load_config
from recstack.data import create_loader
from recstack.evaluator import infer
from recstack.export import resolve_checkpoint
from recstack.runs import PREVIOUS_RUNS, RUN_FILE, TRAIN_LOG
from recstack.trainer import train

REPO = Path(__file__).resolve().parents[1]
LR = REPO / "models/rank/logistic_regression/config.yaml"  # the fastest model to train on its sample data


def config(out: Path, *overrides: str):
    return load_config(LR, [f"runner.model_save_path={out}", "runner.epochs=1", *overrides])


def meta_run(folder: Path) -> str | None:
    return json.loads((folder / "meta.json").read_text()).get("run_id")


# ------------------------------------------------------------------ item 4: output paths checked first
@pytest.mark.parametrize("case", ["a file", "under a file", "unwritable", "visual_log_path", "cache_dir"])
def test_bad_output_path_fails_before_training(case, tmp_path, caplog):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = tmp_path / "out"
    key, path, extra = {
        "a file": ("runner.model_save_path", afile, []),
        "under a file": ("runner.model_save_path", afile / "out", []),
        "unwritable": ("runner.model_save_path", Path("/proc/recstack-out"), []),
        "visual_log_path": ("runner.visual_log_path", afile / "tb", ["runner.use_visual=True"]),
        "cache_dir": ("runner.cache_dir", afile / "cache", []),
    }[case]
    overrides = [f"{key}={path}", *extra]
    if key != "runner.model_save_path":
        overrides.insert(0, f"runner.model_save_path={out}")
    cfg = load_config(LR, ["runner.epochs=1", *overrides])
    start = time.perf_counter()
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert f"'{key}' (from -o): cannot write to '{path}'" in message, message
    assert ("a file, not a folder" in message) if "file" in case or key != "runner.model_save_path" else \
        "failed (" in message, message
    assert "batch_id" not in caplog.text and "saved checkpoint" not in caplog.text  # nothing trained
    assert time.perf_counter() - start < 10
    assert not out.exists() or not any(out.iterdir())  # nothing left behind (not even the probe)
    assert afile.read_text() == "not a folder"


def test_bad_model_save_path_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "afile").write_text("")
    done = subprocess.run([sys.executable, str(REPO / "tools/trainer.py"), "-m", str(LR), "-o",
                           "runner.model_save_path=afile"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if " - ERROR - " in line]
    assert errors == [next(line for line in done.stdout.splitlines() if "ERROR" in line)]
    assert "'runner.model_save_path' (from -o): cannot write to 'afile': it is a file, not a folder" in errors[0]
    assert "Traceback" not in done.stdout + done.stderr and "batch_id" not in done.stdout


# ------------------------------------------------------------------ item 15: run identity
def test_second_run_archives_the_first_and_infer_export_see_the_new_one(tmp_path, caplog):
    out = tmp_path / "out"
    train(config(out, "runner.epochs=2"))
    first = json.loads((out / RUN_FILE).read_text())
    assert first["status"] == "done" and first["epochs"] == [0, 1] and len(first["config_hash"]) == 12
    assert meta_run(out / "0") == meta_run(out / "1") == first["run_id"]

    with caplog.at_level(logging.INFO):
        train(config(out))  # as doc/quick_start.md: the same folder again, one epoch
    second = json.loads((out / RUN_FILE).read_text())
    archived = out / PREVIOUS_RUNS / first["run_id"]
    assert second["run_id"] != first["run_id"] and second["epochs"] == [0]
    assert f"holds epochs 0-1 of run {first['run_id']} (started {first['started']}, done)" in caplog.text
    assert f"moved them with its run.json and train.log to {archived}" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["0", PREVIOUS_RUNS, RUN_FILE, TRAIN_LOG]
    assert meta_run(out / "0") == second["run_id"]
    assert sorted(p.name for p in archived.iterdir()) == ["0", "1", RUN_FILE, TRAIN_LOG]
    assert meta_run(archived / "1") == first["run_id"]
    assert second["previous_runs"] == [{"run_id": first["run_id"], "epochs": [0, 1], "moved_to": str(archived)}]

    # infer: only the new run's epoch; the warning says where epoch 1 went
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        results = infer(load_config(LR, [f"runner.infer_load_path={out}"]))  # infer_end_epoch: 2
    assert list(results) == [0]
    assert f"epoch(s) 1 of an earlier run are in {archived}" in caplog.text
    # the archived run still evaluates where it is
    assert list(infer(load_config(LR, [f"runner.infer_load_path={archived}"]))) == [0, 1]

    # export: the latest run's last epoch, named in the log
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert resolve_checkpoint(config(out)) == out / "0"
    assert f"epoch 0 of run {second['run_id']}" in caplog.text

    # a warm start or export from an archived epoch's old path says where it went
    with pytest.raises(FileNotFoundError, match=re.escape(f"was moved to {archived / '1'}")):
        train(config(tmp_path / "warm", f"runner.model_init_path={out / '1'}"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"use -o runner.model_init_path={archived / '1'}")):
        resolve_checkpoint(config(out, f"runner.model_init_path={out / '1'}"))

    # refuse: nothing is touched; remove: the old epochs are deleted
    with pytest.raises(ConfigError, match=rf"holds epoch 0 of run {second['run_id']} .*'refuse'"):
        train(config(out, "runner.previous_run=refuse"))
    assert json.loads((out / RUN_FILE).read_text())["run_id"] == second["run_id"]
    train(config(out, "runner.previous_run=remove", "runner.save_optimizer=False"))
    third = json.loads((out / RUN_FILE).read_text())
    assert meta_run(out / "0") == third["run_id"] and third["previous_runs"][0]["removed"]
    assert sorted(p.name for p in (out / PREVIOUS_RUNS).iterdir()) == [first["run_id"]]


def test_mixed_and_legacy_folders(tmp_path, caplog):
    """Epoch folders of two runs side by side (copied together by hand): infer names both runs, the export
    takes the latest run's last epoch; a folder of an older recstack (no run ids) works as before and is
    archived whole by the next run."""
    old, new = tmp_path / "old", tmp_path / "new"
    train(config(old, "runner.epochs=2"))
    train(config(new))
    mixed = tmp_path / "mixed"
    shutil.copytree(old, mixed)
    shutil.rmtree(mixed / "0")
    shutil.copytree(new / "0", mixed / "0")  # epoch 0 of the new run beside epoch 1 of the old one
    old_id, new_id = meta_run(old / "0"), meta_run(new / "0")
    with caplog.at_level(logging.INFO):
        assert resolve_checkpoint(config(mixed)) == mixed / "0"
        assert list(infer(load_config(LR, [f"runner.infer_load_path={mixed}"]))) == [0, 1]
    assert f"holds checkpoints of 2 training runs: epoch 0 of run {new_id}" in caplog.text
    assert f"epoch 1 of run {old_id}" in caplog.text
    assert "come from 2 different training runs" in caplog.text

    legacy = tmp_path / "legacy"
    shutil.copytree(old, legacy)
    (legacy / RUN_FILE).unlink()
    for epoch in ("0", "1"):
        meta = json.loads((legacy / epoch / "meta.json").read_text())
        del meta["run_id"]
        (legacy / epoch / "meta.json").write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert resolve_checkpoint(config(legacy)) == legacy / "1"
        assert list(infer(load_config(LR, [f"runner.infer_load_path={legacy}"]))) == [0, 1]
        train(config(legacy))
    assert "no run id: written by an older recstack" in caplog.text
    assert "different training runs" not in caplog.text
    (archived,) = (legacy / PREVIOUS_RUNS).iterdir()
    assert archived.name.startswith("legacy-") and sorted(p.name for p in archived.iterdir()) == ["0", "1", TRAIN_LOG]


def test_a_folder_that_a_live_run_writes_is_refused(tmp_path):
    from recstack.fileio import HOST

    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / RUN_FILE).write_text(json.dumps({"run_id": "20260101-000000-abcd", "status": "running",
                                                "owner": f"{other.pid}@{HOST}", "pid": other.pid,
                                                "started": "2026-01-01T00:00:00+00:00"}))
        with pytest.raises(ConfigError, match=rf"is being written by run 20260101-000000-abcd \(process {other.pid}"):
            train(config(out))
    finally:
        other.kill()
        other.wait()
    train(config(out))  # the process is gone: its run counts as ended, the folder is free
    assert json.loads((out / RUN_FILE).read_text())["status"] == "done"


# ------------------------------------------------------------------ item 17: log files, TensorBoard per run
def test_train_log_infer_log_and_tensorboard_per_run(tmp_path, monkeypatch, caplog):
    from recstack.cli import infer_main

    caplog.set_level(logging.INFO)  # (as tools/trainer.py sets it)
    out = tmp_path / "out"
    train(config(out, "runner.use_visual=True"))
    first = json.loads((out / RUN_FILE).read_text())["run_id"]
    text = (out / TRAIN_LOG).read_text()
    assert text.startswith(f"==== run {first} started ")
    assert " - INFO - config " in text and "model_save_path: " in text  # the resolved config, logged before begin()
    assert re.search(r" - INFO - epoch: 0, batch_id: 0, auc: ", text)
    assert re.search(r" - INFO - epoch: 0 done, auc: 0\.\d{6}, loss: ", text)
    assert f"run {first} done: epoch(s) 0" in text

    assert infer_main(["-m", str(LR), "-o", f"runner.infer_load_path={out}", "runner.infer_end_epoch=1"]) == 0
    infer_log = (out / "infer.log").read_text()
    assert infer_log.startswith("==== tools/infer.py ") and "checkpoint epoch 0: auc: " in infer_log

    train(config(out, "runner.use_visual=True"))
    second = json.loads((out / RUN_FILE).read_text())["run_id"]
    assert (out / TRAIN_LOG).read_text().startswith(f"==== run {second} started ")
    assert (out / PREVIOUS_RUNS / first / "infer.log").is_file()  # moved with the run it evaluated
    runs = sorted(p.name for p in (out / "visual_log").iterdir())
    assert runs == sorted([first, second])
    for run in runs:
        assert any(p.name.startswith("events.out.tfevents") for p in (out / "visual_log" / run).iterdir())

    # a run that fails after it began says so in its log and its run.json
    import recstack.dist.strategy

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recstack.dist.strategy, "save_checkpoint", broken)  # the strategy writes checkpoints
    with pytest.raises(OSError):
        train(config(out))
    failed = json.loads((out / RUN_FILE).read_text())
    assert failed["status"] == "failed" and "No space left on device" in failed["error"]
    assert f"ERROR - run {failed['run_id']} failed: OSError: " in (out / TRAIN_LOG).read_text()


# ------------------------------------------------------------------ item 16: the progress bar
def test_loader_knows_its_batch_count():
    cfg = load_config(LR, ["runner.train_batch_size=128"])
    loader = create_loader(cfg, "train")
    assert loader.expected_batches is None
    seen = []
    for _ in loader:
        seen.append(loader.expected_batches)
    assert seen[0] == len(seen) == 32  # 4,000 lines / 128: estimated from the bytes parsed, from the first batch on
    assert loader.expected_batches == 32
    loader.set_epoch(1)
    assert next(iter(loader)) is not None and loader.expected_batches == 32  # the previous pass's count


def run_in_terminal(args, cwd, columns=150):
    """Run a command on a pseudo-terminal of ``columns`` columns; returns (exit status, raw output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks)


def test_progress_bar_on_a_terminal_has_a_total_and_logs_print_above_it(tmp_path):
    status, raw = run_in_terminal([sys.executable, str(REPO / "tools/trainer.py"), "-m", str(LR), "-o",
                                   "runner.epochs=2", "runner.train_batch_size=64", "runner.print_interval=10"],
                                  cwd=tmp_path)
    text = raw.decode("utf-8", "replace")
    assert status == 0, text[-3000:]
    # a bar with a total, a percentage and an ETA, in both epochs (63 batches of 64 rows)
    for epoch in (0, 1):
        assert re.search(rf"epoch {epoch}: +\d+%\|[^|]*\| *\d+/63 \[\d\d:\d\d<", text), text[-3000:]
    # every log line starts at the beginning of a line: after a newline or after the bar was cleared
    starts = [m.start() for m in re.finditer(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ", text)]
    assert len(starts) > 20
    for start in starts:
        assert start == 0 or text[start - 1] in "\r\n", repr(text[max(0, start - 120):start + 60])
    assert "epoch: 1 done" in text

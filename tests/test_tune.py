"""Grid and random search (recstack/tuning.py, tools/tune.py).

The studies train DeepFM for one epoch on the first 400 lines of its bundled sample, batch 16, one thread (about
5 s a trial here): learning rate 0.01 reaches test AUC 0.66, 1e-6 stays at 0.505 (measured), so the ranking is
real. A trial whose ``runner.train_data_dir`` does not exist fails at run time and is recorded as failed.
"""

import csv
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recstack.checkpoint import MODEL_FILE
from recstack.config import parse_value
from recstack.tuning import (
    DONE,
    FAILED,
    Param,
    Trial,
    TuneError,
    default_output,
    format_value,
    grid_trials,
    higher_is_better,
    last_error,
    parse_results,
    prepare_study,
    random_trials,
    rank_trials,
    read_grid,
    trial_id,
)

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
TOOL = REPO / "tools" / "tune.py"

_spec = importlib.util.spec_from_file_location("tools_tune", TOOL)
tune_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune_tool)

GOOD, BAD = 0.01, 1e-06


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The first 400 lines of DeepFM's sample training data."""
    folder = tmp_path_factory.mktemp("tune_data")
    with open(next((DEEPFM.parent / "data/sample_data/train").iterdir())) as src:
        lines = [next(src) for _ in range(400)]
    (folder / "part-0.txt").write_text("".join(lines))
    return folder


def _shared(data: Path) -> list[str]:
    return ["runner.epochs=1", "runner.train_batch_size=16", "runner.cpu_threads=1", f"runner.train_data_dir={data}"]


def _write_grid(folder: Path, text: str, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _tune(grid: Path, output: Path, shared: list[str], *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, str(TOOL), "-m", str(DEEPFM), "--grid", str(grid), "--output", str(output),
                           "-o", *shared, *flags], capture_output=True, text=True, env=env, cwd=output.parent,
                          timeout=600)


def _rows(output: Path) -> list[dict[str, str]]:
    with open(output / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _trial_state(output: Path, tid: str) -> dict:
    return json.loads((output / "trials" / tid / "trial.json").read_text())


@pytest.fixture(scope="module")
def study(tmp_path_factory, data):
    """A 4-trial grid: learning rate {1e-6, 0.01} x train_data_dir {the data, a missing folder} (2 fail)."""
    root = tmp_path_factory.mktemp("tune_study")
    grid = _write_grid(root, f"hyper_parameters.optimizer.learning_rate: [{BAD}, {GOOD}]\n"
                             f"runner.train_data_dir: ['{data}', '{root / 'missing'}']\n")
    shared = _shared(data)[:-1]
    proc = _tune(grid, root / "study", shared)
    return {"root": root, "grid": grid, "output": root / "study", "shared": shared, "proc": proc}


# ---------------------------------------------------------------------- a study end to end
def test_best_trial_is_the_one_with_the_best_metric(study):
    proc, output = study["proc"], study["output"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: some trials failed
    rows = _rows(output)
    assert len(rows) == 4 and {r["status"] for r in rows} == {DONE, FAILED}
    done = [r for r in rows if r["status"] == DONE]
    assert [r["rank"] for r in done] == ["1", "2"] and rows[:2] == done  # done first, ranked
    assert [float(r["hyper_parameters.optimizer.learning_rate"]) for r in done] == [GOOD, BAD]
    aucs = [float(r["auc"]) for r in done]
    assert aucs[0] > aucs[1] + 0.1, aucs  # measured: 0.66 vs 0.505
    assert abs(aucs[1] - 0.5) < 0.05
    for row in done:  # the table's figures are the trial's own, of the epoch it names
        state = _trial_state(output, row["trial"])
        assert row["epoch"] == "0" and float(row["auc"]) == pytest.approx(state["metrics"]["0"]["auc"], abs=1e-6)
        assert state["status"] == DONE and state["run_id"] and float(row["train_s"]) > 0
        assert (output / "trials" / row["trial"] / "0" / MODEL_FILE).is_file()
        assert list((output / "trials" / row["trial"] / "visual_log").iterdir())  # runner.use_visual: True
    best = done[0]
    assert best["trial"] == trial_id(_typed(study, best))  # the id hashes the -o and the grid's values
    # the printed table and the ready command of the best trial
    assert f"| 1 | {best['trial']} |" in proc.stdout
    assert (f"python tools/trainer.py -m {DEEPFM} -o runner.epochs=1 runner.train_batch_size=16 runner.cpu_threads=1 "
            f"hyper_parameters.optimizer.learning_rate=0.01 runner.train_data_dir=") in proc.stdout
    md = (output / "results.md").read_text()
    assert all(r["trial"] in md for r in rows) and "python tools/trainer.py" in md


def _typed(study, row) -> dict:
    """The overrides that name a trial: the shared -o and the row's grid values, typed."""
    shared = {k: parse_value(v) for k, v in (p.split("=", 1) for p in study["shared"])}
    own = {k: parse_value(v) for k, v in (p.split("=", 1) for p in row["overrides"].split(" "))}
    return {**shared, **own}


def test_a_trial_failing_at_run_time_is_recorded_and_the_study_finishes(study):
    output = study["output"]
    failed = [r for r in _rows(output) if r["status"] == FAILED]
    assert len(failed) == 2 and all(r["rank"] == "" and r["auc"] == "" for r in failed)
    for row in failed:
        assert row["runner.train_data_dir"].endswith("missing")
        assert "tools/trainer.py" in row["error"] and "runner.train_data_dir" in row["error"]
        assert "does not exist" in row["error"]
        state = _trial_state(output, row["trial"])
        assert state["status"] == FAILED and state["step"] == "train" and state["returncode"] == 2
        assert state["error"] == row["error"]
        assert "ERROR" in (output / "trials" / row["trial"] / "trial.log").read_text()
    assert "failed" in study["proc"].stdout


def test_rerun_runs_only_the_unfinished_trial_and_retry_failed_the_failed(study, tmp_path):
    output = tmp_path / "study"
    shutil.copytree(study["output"], output)
    rows = {r["trial"]: r for r in _rows(output)}
    before = {tid: _trial_state(output, tid) for tid in rows}
    redo = next(tid for tid, r in rows.items() if r["rank"] == "1")
    (output / "trials" / redo / "trial.json").unlink()
    (output / "results.csv").unlink()
    (output / "results.md").unlink()

    proc = _tune(study["grid"], output, study["shared"])
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "4 trials, 3 finished earlier, 1 to run" in proc.stdout
    after = {tid: _trial_state(output, tid) for tid in rows}
    for tid, state in after.items():
        if tid == redo:
            assert state["run_id"] != before[tid]["run_id"] and state["finished"] >= before[tid]["finished"]
            assert state["metrics"] == before[tid]["metrics"]  # same seed, same data: the same AUC
        else:
            assert state == before[tid]  # not run again
    assert [r["trial"] for r in _rows(output)] == list(rows)  # the results files are back, same order

    proc = _tune(study["grid"], output, study["shared"], "--retry_failed", "--parallel", "2")
    assert "4 trials, 2 finished earlier, 2 to run" in proc.stdout
    again = {tid: _trial_state(output, tid) for tid in rows}
    for tid, state in again.items():
        if rows[tid]["status"] == FAILED:
            assert state["status"] == FAILED and state["finished"] >= after[tid]["finished"]
            assert (output / "trials" / tid / "trial.log").read_text().count("==== tools/tune.py") == 1
        else:
            assert state == after[tid]


def _processes_with(text: str) -> list[int]:
    """Pids of the processes whose command line holds ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_a_killed_study_stops_its_trials_and_records_nothing_for_them(tmp_path, data):
    grid = _write_grid(tmp_path, f"hyper_parameters.optimizer.learning_rate: [{GOOD}, {BAD}]\n")
    output = tmp_path / "killed"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, str(TOOL), "-m", str(DEEPFM), "--grid", str(grid), "--output",
                             str(output), "-o", *_shared(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(output.glob("trials/*/trial.log")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (log,) = output.glob("trials/*/trial.log")
        time.sleep(0.5)  # the trainer has started
        proc.terminate()  # SIGTERM: as Ctrl-C
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted" in out and "the same command resumes it" in out
    assert not _processes_with(str(output / "trials"))  # the trial's tools were stopped
    assert not (log.parent / "trial.json").exists()
    statuses = {r["trial"]: r["status"] for r in _rows(output)}
    assert statuses == {log.parent.name: "interrupted", **{k: "pending" for k in statuses if k != log.parent.name}}
    assert len(statuses) == 2


def test_parallel_gives_the_sequential_table(study, tmp_path):
    output = tmp_path / "parallel"
    proc = _tune(study["grid"], output, study["shared"], "--parallel", "2")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "2 at a time" in proc.stdout

    def table(rows):  # all but the timings
        return [{k: v for k, v in r.items() if k != "train_s"} for r in rows]

    assert table(_rows(output)) == table(_rows(study["output"]))


def test_a_changed_grid_keeps_the_finished_trials_it_still_holds(study, tmp_path, data):
    output = tmp_path / "study"
    shutil.copytree(study["output"], output)
    grid = _write_grid(tmp_path, f"hyper_parameters.optimizer.learning_rate: [{GOOD}]\n"
                                 f"runner.train_data_dir: ['{data}']\n")
    proc = _tune(grid, output, study["shared"], "--dry_run")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if "\t" in ln]
    tid, status, _ = line.split("\t")
    assert status == DONE and tid == _rows(study["output"])[0]["trial"]
    assert (output / "results.csv").read_text() == (study["output"] / "results.csv").read_text()  # nothing run


# ---------------------------------------------------------------------- checks before any trial
def test_a_typo_in_the_grid_fails_before_any_trial(tmp_path, caplog, data):
    grid = _write_grid(tmp_path, "runner.epoch: [1, 2]\n")
    output = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        status = tune_tool.main(["-m", str(DEEPFM), "--grid", str(grid), "--output", str(output)])
    assert status == 2 and not output.exists()
    assert f"unknown key 'runner.epoch' (from {grid})" in caplog.text and "did you mean 'runner.epochs'" in caplog.text


@pytest.mark.parametrize("text, expected", [
    ("hyper_parameters.fc_sizez: [[64]]", "unknown key 'hyper_parameters.fc_sizez' (from {grid}) for model deepfm"
                                          ": the model and its readers never read 'hyper_parameters.fc_sizez'; "
                                          "did you mean 'hyper_parameters.fc_sizes'?"),
    ("hyper_parameters.optimizer.learning_rat: [0.1]", "{grid}: key 'hyper_parameters.optimizer.learning_rat', value "
                                                       "0.1: unknown key"),
    ("hyper_parameters.fc_sizes: [400, 400]", "{grid}: key 'hyper_parameters.fc_sizes', value 400: "
                                              "'hyper_parameters.fc_sizes' (from {grid}): expected a list of positive"),
    ("hyper_parameters.optimizer.class: [Adam, adamm]", "value adamm: 'hyper_parameters.optimizer.class' (from {grid}):"
                                                        " unknown optimizer 'adamm'; did you mean 'adam'?"),
    ("runner.train_batch_size: [16, abc]", "'runner.train_batch_size' (from {grid}): expected int, got 'abc'"),
    ("runner.epochs: 3", "{grid}: key 'runner.epochs': expected a list of values"),
    ("runner.epochs: []", "{grid}: key 'runner.epochs': expected a non-empty list of values"),
    ("epochs: [1]", "{grid}: key 'epochs': expected a dotted -o key starting with runner. or hyper_parameters."),
    ("hyper_parameters.optimizer.learning_rate: {uniform: [0.1, 1]}", "is a distribution, drawn from only by "
                                                                      "--mode random"),
    ("hyper_parameters.optimizer.learning_rate: {loguniform: [1, 2]}", "did you mean 'log_uniform'?"),
    ("runner.model_save_path: [a, b]", "'runner.model_save_path' is set by tools/tune.py for each trial"),
    ("runner.epochs: [1]\nrunner.epochs: [2]", "duplicate key 'runner.epochs'"),
    ("runner.infer_start_epoch: [5]", "{grid}: key 'runner.infer_start_epoch', value 5: 'runner.infer_end_epoch'"),
])
def test_bad_grid_files_name_the_file_key_and_what_was_expected(tmp_path, text, expected):
    grid = _write_grid(tmp_path, text + "\n")
    with pytest.raises(TuneError) as err:
        prepare_study(DEEPFM, grid, output=tmp_path / "out")
    assert expected.format(grid=grid) in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, expected", [
    ("{log_uniform: [0, 1]}", "expected {log_uniform: [low, high]} (a float uniform in log scale, 0 < low < high); "
                              "got {log_uniform: [0, 1]}"),
    ("{uniform: [2, 1]}", "expected {uniform: [low, high]} (a float, low < high)"),
    ("{int_uniform: [1, 2.5]}", "expected {int_uniform: [low, high]}"),
    ("{choice: []}", "expected {choice: [v1, v2, ...]}"),
    ("{uniform: [1, 2], choice: [3]}", "expected a list of values or one distribution"),
])
def test_bad_distributions_are_errors(tmp_path, text, expected):
    grid = _write_grid(tmp_path, f"hyper_parameters.reg: {text}\n")
    with pytest.raises(TuneError, match="hyper_parameters.reg") as err:
        read_grid(grid)
    assert expected in str(err.value) and str(grid) in str(err.value)


def test_shared_and_study_folder_checks(tmp_path, data):
    grid = _write_grid(tmp_path, "hyper_parameters.optimizer.learning_rate: [0.001, 0.01]\n")
    with pytest.raises(TuneError, match="is both in -o and in grid file"):
        prepare_study(DEEPFM, grid, ["hyper_parameters.optimizer.learning_rate=0.1"], output=tmp_path / "a")
    with pytest.raises(TuneError, match="-o: 'runner.infer_load_path' is set by tools/tune.py"):
        prepare_study(DEEPFM, grid, ["runner.infer_load_path=x"], output=tmp_path / "a")
    with pytest.raises(TuneError, match="--trials: applies to --mode random"):
        prepare_study(DEEPFM, grid, trials=3, output=tmp_path / "a")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(TuneError, match="not a tools/tune.py study folder"):
        prepare_study(DEEPFM, grid, output=tmp_path / "other")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "study.json").write_text(json.dumps({"config": "/elsewhere/config.yaml"}))
    with pytest.raises(TuneError, match="a study of config /elsewhere/config.yaml"):
        prepare_study(DEEPFM, grid, output=tmp_path / "theirs")


def test_trials_get_their_own_folder_threads_and_the_tuner_settings(tmp_path, data):
    grid = _write_grid(tmp_path, "hyper_parameters.optimizer.learning_rate: [0.001, 0.01]\n"
                                 "hyper_parameters.optimizer.class: [Adam, Adagrad]\n")
    study = prepare_study(DEEPFM, grid, ["runner.epochs=2"], output=tmp_path / "s", parallel=2)
    assert [t.overrides for t in study.trials] == [
        {"hyper_parameters.optimizer.learning_rate": lr, "hyper_parameters.optimizer.class": c}
        for lr in (0.001, 0.01) for c in ("Adam", "Adagrad")]
    assert len({t.id for t in study.trials}) == 4
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for trial in study.trials:
        assert trial.folder == (tmp_path / "s" / "trials" / trial.id).absolute() and trial.threads == threads
        assert trial.args[:4] == ["runner.use_visual=True", f"runner.cpu_threads={threads}",
                                  "runner.infer_start_epoch=0", "runner.infer_end_epoch=2"]
        assert trial.args[-2:] == [f"runner.model_save_path={trial.folder}", f"runner.infer_load_path={trial.folder}"]
    # the command line's -o wins over the tuner's defaults; ids do not depend on threads or folders
    other = prepare_study(DEEPFM, grid, ["runner.epochs=2", "runner.cpu_threads=1", "runner.use_visual=False"],
                          output=tmp_path / "t")
    assert all(t.threads == 1 and "runner.use_visual=True" not in t.args for t in other.trials)
    same = prepare_study(DEEPFM, grid, ["runner.epochs=2"], output=tmp_path / "u", parallel=1)
    assert [t.id for t in same.trials] == [t.id for t in study.trials]
    assert default_output(DEEPFM) == Path("tune_deepfm")
    assert default_output(DEEPFM.parent / "config_bigdata.yaml") == Path("tune_deepfm_bigdata")


def test_a_mapping_value_sets_keys_together(tmp_path, data):
    grid = _write_grid(tmp_path, "hyper_parameters.optimizer: [{class: Adam, learning_rate: 0.001}, "
                                 "{class: SGD, learning_rate: 0.5}]\n")
    study = prepare_study(DEEPFM, grid, output=tmp_path / "m")
    assert [t.overrides["hyper_parameters.optimizer"]["class"] for t in study.trials] == ["Adam", "SGD"]
    assert "hyper_parameters.optimizer={class: SGD, learning_rate: 0.5}" in study.trials[1].args
    bad = _write_grid(tmp_path, "hyper_parameters.optimizer: [{class: Adam, learning_rat: 0.001}]\n", "bad.yaml")
    with pytest.raises(TuneError, match=r"unknown key 'hyper_parameters.optimizer.learning_rat' \(from .*bad.yaml\)"):
        prepare_study(DEEPFM, bad, output=tmp_path / "m")


# ---------------------------------------------------------------------- random search
def test_random_mode_with_a_seed_draws_the_same_trials(tmp_path, data):
    grid = _write_grid(tmp_path, "hyper_parameters.optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}\n"
                                 "hyper_parameters.reg: {uniform: [0, 0.001]}\n"
                                 "runner.train_batch_size: {int_uniform: [16, 64]}\n"
                                 "hyper_parameters.optimizer.class: {choice: [Adam, Adagrad]}\n"
                                 "hyper_parameters.fc_sizes: [[400, 400, 400], [128, 64]]\n")

    def draw(count, seed):
        study = prepare_study(DEEPFM, grid, mode="random", trials=count, seed=seed, output=tmp_path / "r")
        return [(t.id, t.overrides) for t in study.trials]

    first, second = draw(5, 7), draw(5, 7)
    assert first == second and len({tid for tid, _ in first}) == 5
    assert draw(3, 7) == first[:3]  # more trials later keep the first ones
    assert draw(5, 8) != first
    for _, trial in first:
        assert 1e-4 <= trial["hyper_parameters.optimizer.learning_rate"] <= 1e-2
        assert 0 <= trial["hyper_parameters.reg"] <= 0.001
        assert isinstance(trial["runner.train_batch_size"], int) and 16 <= trial["runner.train_batch_size"] <= 64
        assert trial["hyper_parameters.optimizer.class"] in ("Adam", "Adagrad")
        assert trial["hyper_parameters.fc_sizes"] in ([400, 400, 400], [128, 64])
        rate = trial["hyper_parameters.optimizer.learning_rate"]
        assert rate == float(f"{rate:.4g}")  # 4 significant digits
    with pytest.raises(TuneError, match="--mode random needs the number of trials"):
        prepare_study(DEEPFM, grid, mode="random", output=tmp_path / "r")


def test_random_trials_stop_at_the_distinct_combinations(caplog):
    params = {"runner.epochs": Param("runner.epochs", "choice", (1, 2))}
    with caplog.at_level(logging.WARNING):
        trials = random_trials(params, 5, 0)
    assert sorted(t["runner.epochs"] for t in trials) == [1, 2] and "drew only 2 distinct trials" in caplog.text


def test_log_uniform_covers_the_decades():
    param = Param("k", "log_uniform", (1e-4, 1e-2))
    rng = random.Random(0)
    values = [param.sample(rng) for _ in range(2000)]
    below = sum(v < 1e-3 for v in values) / len(values)
    assert 0.45 < below < 0.55  # half of the draws in each decade


# ---------------------------------------------------------------------- pieces
def test_grid_order_and_ids():
    params = {"a.x": Param("a.x", "values", (1, 2)), "a.y": Param("a.y", "values", ("p", "q"))}
    assert grid_trials(params, "g") == [{"a.x": 1, "a.y": "p"}, {"a.x": 1, "a.y": "q"}, {"a.x": 2, "a.y": "p"},
                                        {"a.x": 2, "a.y": "q"}]
    assert trial_id({"a": 1, "b": [1, 2]}) == trial_id({"b": [1, 2], "a": 1})  # order of keys does not matter
    assert trial_id({"a": 1}) != trial_id({"a": 1.5}) and len(trial_id({})) == 10
    assert trial_id({"r": parse_value("1e-3")}) == trial_id({"r": parse_value("0.001")})  # typed values


@pytest.mark.parametrize("value", [0.001, 1e-06, 3, True, None, "Adam", [400, 400], "a b", "1e-3", "null", "",
                                   {"class": "Adam"}])
def test_format_value_reads_back_as_the_same_value(value):
    assert parse_value(format_value(value)) == value


def test_infer_lines_errors_and_directions():
    text = ("2026-01-01 00:00:00,000 - INFO - epoch: 0 done, auc: 0.6, epoch time: 1 s\n"
            "2026-01-01 00:00:00,000 - INFO - checkpoint epoch 0: auc_ctr: 0.612345, auc_ctcvr: 0.701\n"
            "2026-01-01 00:00:00,000 - INFO - checkpoint epoch 1: auc_ctr: 0.65, auc_ctcvr: 0.69\n")
    assert parse_results(text) == {0: {"auc_ctr": 0.612345, "auc_ctcvr": 0.701},
                                   1: {"auc_ctr": 0.65, "auc_ctcvr": 0.69}}
    log = "x - ERROR - first\nx - ERROR - 'runner.x': bad\nTraceback...\n"
    assert last_error(log, 2) == "'runner.x': bad"
    assert last_error("Traceback\nValueError: boom\n", 1) == "ValueError: boom"
    assert last_error("", -9) == "killed by signal SIGKILL" and last_error("", 3) == "exit status 3"
    for name, higher in [("auc", True), ("auc_ctr", True), ("gauc", True), ("hit_rate@10", True), ("ndcg@50", True),
                         ("log_loss", False), ("mse", False), ("mse_play_time", False), ("loss", False),
                         ("accuracy_income", True)]:
        assert higher_is_better(name) is higher, name


def _trial(index, status, metrics=None):
    state = {"status": status, "metrics": {str(e): m for e, m in (metrics or {}).items()}, "train_seconds": 1.0}
    return Trial(index, {"k.x": index}, f"t{index}", Path(f"t{index}"), [], None, state, status)


def test_ranking_directions_and_epochs():
    trials = [_trial(0, DONE, {0: {"auc": 0.7, "log_loss": 0.5}, 1: {"auc": 0.6, "log_loss": 0.4}}),
              _trial(1, DONE, {0: {"auc": 0.65, "log_loss": 0.45}, 1: {"auc": 0.72, "log_loss": 0.47}}),
              _trial(2, FAILED), _trial(3, DONE, {0: {"auc": math.nan, "log_loss": 0.9}}), _trial(4, "pending")]
    ranking = rank_trials(trials)  # auc, max, best epoch
    assert ranking.metric == "auc" and ranking.maximize and ranking.metrics == ["auc", "log_loss"]
    assert [(r["trial"], r["rank"], r["epoch"]) for r in ranking.rows] == [
        ("t1", 1, 1), ("t0", 2, 0), ("t3", None, 0), ("t2", None, None), ("t4", None, None)]
    last = rank_trials(trials, select="last")
    assert [(r["trial"], r["epoch"]) for r in last.rows[:2]] == [("t1", 1), ("t0", 1)]
    loss = rank_trials(trials, metric="log_loss")  # lower is better, from recstack.metrics
    assert not loss.maximize and [(r["trial"], r["epoch"]) for r in loss.rows[:3]] == [("t0", 1), ("t1", 0), ("t3", 0)]
    assert [r["trial"] for r in rank_trials(trials, metric="auc", direction="min").rows[:2]] == ["t0", "t1"]
    with pytest.raises(TuneError, match="--metric auc_ctr: the trials report auc, log_loss"):
        rank_trials(trials, metric="auc_ctr")

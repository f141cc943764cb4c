"""datasets/video: PaddleRec's short-video data is the census format with its labels named
completion, like; the models read it with ``hyper_parameters.task_names: [like, completion]``."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recstack.config import ConfigError, from_dict, load_config
from recstack.data.csv import CensusReader
from recstack.wrapper import load_wrapper

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "datasets" / "video" / "convert.py"
_spec = importlib.util.spec_from_file_location("datasets_video_convert", SCRIPT)
convert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert)

MODELS = ("mmoe", "share_bottom", "ple")
PADDLEREC_CENSUS = "paddlerec/models/multitask/mmoe/data/{split}/train_data.txt"  # both splits use this name

TRAIN = "1,0,0.5,0,1\n0,1,-1.25,1,0\n\n1,1,2,0,1\r\n"
TEST = "0,0,0,1,0\n"


def census_folder(root: Path, train: str = TRAIN, test: str = TEST) -> Path:
    for split, text in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True)
        (root / split / "part-0.txt").write_text(text)
    return root


def read_all(path: Path, **hyper_parameters) -> dict[str, np.ndarray]:
    config = from_dict({"hyper_parameters": {"feature_size": 3, **hyper_parameters}})
    blocks = list(CensusReader([str(path)], config).iter_blocks())
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def test_run_sh_writes_the_census_lines_with_the_labels_named(tmp_path):
    census = census_folder(tmp_path / "census")
    folder = tmp_path / "datasets" / "video"
    shutil.copytree(REPO / "datasets" / "video", folder, ignore=shutil.ignore_patterns("data"))
    done = subprocess.run(["bash", str(folder / "run.sh")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CENSUS_DATA": str(census), "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    out = folder / "data"
    # only named, not reordered: completion,like,features, blank lines dropped, \r\n -> \n
    assert (out / "train" / "part-0.txt").read_text() == "1,0,0.5,0,1\n0,1,-1.25,1,0\n1,1,2,0,1\n"
    assert (out / "test" / "part-0.txt").read_text() == TEST
    meta = json.loads((out / "meta.json").read_text())
    assert meta["label_columns"] == ["completion", "like"]
    assert meta["task_names"] == ["like", "completion"]
    assert meta["renamed_from"] == {"completion": "marital", "like": "income"}
    assert meta["rows"] == {"train": 3, "test": 1} and meta["num_features"] == 3
    assert meta["label_rates"]["train"] == {"completion": 2 / 3, "like": 2 / 3}
    assert meta["files"] == {"train": ["part-0.txt"], "test": ["part-0.txt"]}
    # the core reader with the video task names: completion is column 1, like column 2
    data = read_all(out / "train" / "part-0.txt", task_names=["like", "completion"])
    assert sorted(data) == ["completion", "features", "like"]
    assert data["completion"][:, 0].tolist() == [1, 0, 1] and data["like"][:, 0].tolist() == [0, 1, 1]
    assert data["features"][1].tolist() == [-1.25, 1, 0]
    flagged = subprocess.run(["bash", str(folder / "run.sh"), "--no-standardize"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "CENSUS_DATA": str(census), "PYTHON": sys.executable})
    assert flagged.returncode == 2 and "with CENSUS_DATA set nothing is preprocessed" in flagged.stderr


@pytest.mark.parametrize("train, test, message", [
    ("1,0,1,2\n0,2,1,2\n", TEST, "train/part-0.txt line 2: column 2 (income, here like) must be 0 or 1, got '2'"),
    ("1,0,1,2\n\n0,1,1\n", TEST, "train/part-0.txt line 3: expected 4 comma-separated columns, got 3"),
    ("1,0,1,2\n", "1,0,1,2,3\n", "test/part-0.txt line 1: expected 4 comma-separated columns, got 5"),
    ("1,0\n", TEST, "train/part-0.txt line 1: expected 2 labels and features, got 2 column(s)"),
    ("\n\n", TEST, "train/part-0.txt: no data lines"),
])
def test_converter_errors_name_file_and_line(tmp_path, capsys, train, test, message):
    census = census_folder(tmp_path / "census", train, test)
    assert convert.main(["--input", str(census), "--output", str(tmp_path / "out")]) == 1
    assert message in capsys.readouterr().err


def test_converter_checks_the_census_meta_and_carries_its_features(tmp_path, capsys):
    census = census_folder(tmp_path / "census")
    (census / "meta.json").write_text(json.dumps({"label_columns": ["marital", "income"], "num_features": 3,
                                                  "feature_names": ["a", "b", "c"], "label_rates": {}}))
    meta = convert.convert(census, tmp_path / "out")
    assert meta["census_meta"] == {"num_features": 3, "feature_names": ["a", "b", "c"]}
    (census / "meta.json").write_text(json.dumps({"label_columns": ["income", "marital"]}))
    assert convert.main(["--input", str(census), "--output", str(tmp_path / "out2")]) == 1
    assert "label_columns is ['income', 'marital'], expected ['marital', 'income']" in capsys.readouterr().err
    shutil.rmtree(census / "test")
    (census / "meta.json").unlink()
    assert convert.main(["--input", str(census), "--output", str(tmp_path / "out3")]) == 1
    assert "test: expected a folder of census-format files" in capsys.readouterr().err


def test_paddlerec_census_sample_reads_the_same_under_the_video_names(shared_data, tmp_path):
    census = tmp_path / "census"
    for split in ("train", "test"):
        (census / split).mkdir(parents=True)
        shutil.copy(shared_data / PADDLEREC_CENSUS.format(split=split), census / split / "train_data.txt")
    convert.convert(census, tmp_path / "video")
    for split in ("train", "test"):
        source, video = census / split / "train_data.txt", tmp_path / "video" / split / "train_data.txt"
        assert video.read_text() == "".join(line.rstrip("\r\n") + "\n" for line in source.read_text().splitlines()
                                            if line.strip())
        config = {"hyper_parameters": {"feature_size": 499}}
        as_census = list(CensusReader([str(source)], from_dict(config)).iter_blocks())[0]
        config["hyper_parameters"]["task_names"] = ["like", "completion"]
        as_video = list(CensusReader([str(video)], from_dict(config)).iter_blocks())[0]
        np.testing.assert_array_equal(as_video["like"], as_census["income"])
        np.testing.assert_array_equal(as_video["completion"], as_census["marital"])
        np.testing.assert_array_equal(as_video["features"], as_census["features"])


def test_bundled_video_samples_are_the_converted_census_samples(tmp_path, monkeypatch):
    """What datasets/synthetic/make_samples.sh writes: convert.py run on each folder's census sample."""
    monkeypatch.chdir(REPO)  # make_samples.sh runs from the repository root with relative paths
    for model in MODELS:
        folder = Path("models/multitask") / model / "data"
        convert.convert(folder / "sample_data", tmp_path / model)
        for name in ("train/part-0.txt", "test/part-0.txt", "meta.json"):
            bundled = folder / "video_sample_data" / name
            assert (tmp_path / model / name).read_bytes() == bundled.read_bytes(), f"{bundled}: run make_samples.sh"


@pytest.mark.parametrize("model", MODELS)
def test_video_configs_are_the_census_configs_with_task_names(model):
    folder = REPO / "models" / "multitask" / model
    for census, video in (("config.yaml", "config_video.yaml"), ("config_bigdata.yaml", "config_video_bigdata.yaml")):
        a, b = load_config(folder / census), load_config(folder / video)
        assert b.section("hyper_parameters") == {**a.section("hyper_parameters"), "task_names": ["like", "completion"]}
        runner_a, runner_b = a.section("runner"), b.section("runner")
        for key in ("train_data_dir", "test_data_dir", "model_save_path", "infer_load_path"):
            assert runner_a.pop(key) != runner_b.pop(key)
        assert runner_a == runner_b
        assert "video" in b.get("runner.train_data_dir") and "video" in b.get("runner.model_save_path")


@pytest.mark.parametrize("model", MODELS)
def test_metric_and_label_names_follow_task_names(model, tmp_path):
    folder = REPO / "models" / "multitask" / model
    for config_name, overrides, tasks in (("config.yaml", [], ["income", "marital"]),
                                          ("config_video.yaml", [], ["like", "completion"]),
                                          ("config.yaml", ["hyper_parameters.task_names=[second,first]"],
                                           ["second", "first"])):
        config = load_config(folder / config_name, overrides)
        wrapper = load_wrapper(config)
        wrapper.create_model(config)
        assert wrapper.create_metrics()[1] == [f"auc_{t}" for t in tasks]
        assert list(wrapper.label_names) == tasks
        reader_keys = set(next(iter(CensusReader([str(folder / "data/sample_data/test/part-0.txt")],
                                                 config).iter_blocks())))
        assert reader_keys == {"features", *tasks}


@pytest.mark.parametrize("value, message", [
    ("[like,like]", "expected a list of distinct task names"),
    ("like", "expected list, got 'like'"),
    ("[like,2]", "expected a list of distinct task names"),
    ("[a,b,c]", "'hyper_parameters.task_num' .*must be 3 \\(one per task: a, b, c\\), got 2"),
])
def test_bad_task_names_are_config_errors(value, message):
    config = load_config(REPO / "models/multitask/share_bottom/config_video.yaml",
                         [f"hyper_parameters.task_names={value}"])
    with pytest.raises(ConfigError, match=message):
        load_wrapper(config).create_model(config)


def test_census_reader_has_two_tasks_and_keeps_features_for_the_features(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("1,0,1,2,3\n")
    with pytest.raises(ConfigError, match="this data has 2 tasks .*got 3"):
        read_all(path, task_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="'features' names the feature columns"):
        read_all(path, task_names=["features", "b"])

"""The full-data path as a user runs it: datasets/<name>/run.sh, then config_bigdata.yaml.

Nothing can be downloaded here, so a stand-in ``wget`` on PATH serves the real raw
sample files of ../shared/data/external (packed like the real downloads); the
scripts, preprocessors, configs, trainer and evaluator are the real ones.
"""

import gzip
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from recstack.config import load_config
from recstack.evaluator import infer
from recstack.trainer import train

REPO = Path(__file__).resolve().parents[1]

FAKE_WGET = """#!{python}
import sys, shutil
args = sys.argv[1:]
target = args[args.index("-O") + 1]
url = args[-1]
name = url.rsplit("/", 1)[-1].replace("%2F", "/").rsplit("/", 1)[-1]
shutil.copyfile({served!r} + "/" + name, target)
"""


def fake_wget(tmp_path: Path, served: Path) -> dict:
    """PATH with a ``wget`` that copies ``served/<file name of the URL>`` to its ``-O`` target."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wget = bin_dir / "wget"
    wget.write_text(FAKE_WGET.format(python=sys.executable, served=str(served)))
    wget.chmod(wget.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}


def copy_dataset_folder(name: str, tmp_path: Path) -> Path:
    """A copy of datasets/<name> (run.sh writes beside itself; keep the repository clean)."""
    folder = tmp_path / "datasets" / name
    shutil.copytree(REPO / "datasets" / name, folder, ignore=shutil.ignore_patterns("data", "raw", "slot_*"))
    return folder


def tar_gz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def train_and_infer(config_path: Path, overrides: list[str], out: Path) -> dict:
    overrides = overrides + ["runner.epochs=1", f"runner.model_save_path={out}", f"runner.infer_load_path={out}",
                             "runner.print_interval=1000"]
    result = train(load_config(config_path, overrides))
    assert len(result.epochs) == 1
    return infer(load_config(config_path, overrides + ["runner.infer_end_epoch=1"]))[0]


def test_census_run_sh_then_mmoe_config_bigdata(shared_data, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    raw = (shared_data / "external" / "census_income_raw_sample.txt").read_bytes()
    lines = raw.splitlines(keepends=True)
    (served / "census-income.data.gz").write_bytes(gzip.compress(b"".join(lines[:150])))
    (served / "census-income.test.gz").write_bytes(gzip.compress(b"".join(lines[150:])))
    folder = copy_dataset_folder("census", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh")], env=fake_wget(tmp_path, served),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = json.loads((folder / "data" / "meta.json").read_text())
    features = meta["num_features"]
    assert (folder / "data" / "train" / "train_data.txt").read_text().count("\n") == 150
    metrics = train_and_infer(REPO / "models/multitask/mmoe/config_bigdata.yaml",
                              [f"runner.train_data_dir={folder / 'data' / 'train'}",
                               f"runner.test_data_dir={folder / 'data' / 'test'}",
                               f"hyper_parameters.feature_size={features}"], tmp_path / "out")
    assert set(metrics) == {"auc_income", "auc_marital"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


@pytest.mark.parametrize("mode", ["paddlerec_slot_files", "raw"])
def test_criteo_run_sh_then_deepfm_config_bigdata(shared_data, tmp_path, mode):
    served = tmp_path / "served"
    served.mkdir()
    folder = copy_dataset_folder("criteo", tmp_path)
    env = fake_wget(tmp_path, served)
    if mode == "raw":
        tar_gz(served / "dac.tar.gz", {"train.txt": (shared_data / "external" / "criteo_raw_sample.txt").read_bytes()})
        env.update(SPLIT_LINE="150", LINES_PER_PART="100")
        args = ["--raw"]
    else:
        slot = (shared_data / "paddlerec/models/rank/deepfm/data/sample_data/train/sample_train.txt").read_bytes()
        tar_gz(served / "slot_train_data_full.tar.gz", {"slot_train_data_full/part-0": slot})
        tar_gz(served / "slot_test_data_full.tar.gz", {"slot_test_data_full/part-0": slot})
        args = []
    done = subprocess.run(["bash", str(folder / "run.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    train_files = sorted((folder / "slot_train_data_full").iterdir())
    if mode == "raw":
        assert [p.name for p in train_files] == ["part-000", "part-001"]  # 150 lines, 100 per part
        assert len((folder / "slot_test_data_full" / "part-000").read_text().splitlines()) == 50
    # config_bigdata.yaml as written, only its data folders moved to the copy (and its cache beside them)
    metrics = train_and_infer(REPO / "models/rank/deepfm/config_bigdata.yaml",
                              [f"runner.train_data_dir={folder / 'slot_train_data_full'}",
                               f"runner.test_data_dir={folder / 'slot_test_data_full'}",
                               f"runner.cache_dir={folder / '.recstack_cache'}",
                               "runner.train_batch_size=32"], tmp_path / "out")
    assert 0.0 <= metrics["auc"] <= 1.0
    assert any((folder / ".recstack_cache").iterdir())


def test_criteo_lr_run_sh_then_logistic_regression_config_bigdata(shared_data, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    lines = (shared_data / "paddlerec/models/rank/logistic_regression/data/sample_data/train/sample_train.txt"
             ).read_bytes().splitlines(keepends=True)
    tar_gz(served / "data_part1.tar.gz", {"slot_train_data/part-0": b"".join(lines[:-20])})
    tar_gz(served / "data_part2.tar.gz", {"slot_test_data/part-0": b"".join(lines[-20:])})
    folder = copy_dataset_folder("criteo_lr", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh")], env=fake_wget(tmp_path, served), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = train_and_infer(REPO / "models/rank/logistic_regression/config_bigdata.yaml",
                              [f"runner.train_data_dir={folder / 'slot_train_data'}",
                               f"runner.test_data_dir={folder / 'slot_test_data'}",
                               f"runner.cache_dir={folder / '.recstack_cache'}",
                               "runner.train_batch_size=16"], tmp_path / "out")
    assert 0.0 <= metrics["auc"] <= 1.0


def test_criteo_lr_run_sh_names_a_bad_archive(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    tar_gz(served / "data_part1.tar.gz", {"other/part-0": b"x"})
    tar_gz(served / "data_part2.tar.gz", {"other/part-1": b"x"})
    folder = copy_dataset_folder("criteo_lr", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh")], env=fake_wget(tmp_path, served), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "slot_train_data" in done.stderr


def test_every_bigdata_config_reads_folders_a_dataset_script_writes():
    for big in sorted(REPO.glob("models/*/*/config_bigdata.yaml")):
        data = Path(load_config(big).get("runner.train_data_dir"))
        dataset = data.relative_to(REPO / "datasets").parts[0]
        script = REPO / "datasets" / dataset / "run.sh"
        assert script.exists(), f"{big}: reads {data}, but datasets/{dataset}/run.sh does not exist"
        assert data.name in script.read_text() or (REPO / "datasets" / dataset / "preprocess.py").exists(), \
            f"{big}: datasets/{dataset}/run.sh never names {data.name}"


def declared_differences(readme: Path) -> set[str]:
    """Keys named in backticks under the README's "Deliberate differences between config.yaml and ..." heading."""
    text = readme.read_text()
    marker = "Deliberate differences between config.yaml and config_bigdata.yaml"
    if marker not in text:
        return set()
    section = text.split(marker, 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"`([A-Za-z_][\w.]*)`", section))


def test_bigdata_configs_share_the_model_keys_of_config_yaml():
    for small in sorted(REPO.glob("models/*/*/config.yaml")):
        big = small.with_name("config_bigdata.yaml")
        a = load_config(small).section("hyper_parameters")
        b = load_config(big).section("hyper_parameters")
        differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        undeclared = differing - declared_differences(small.with_name("README.md"))
        assert not undeclared, (f"{big} and {small} differ in {sorted(undeclared)}; make them equal or list the keys "
                                "under 'Deliberate differences between config.yaml and config_bigdata.yaml' in the README")
        data = load_config(big).get("runner.train_data_dir")
        assert "/datasets/" in data, f"{big}: train_data_dir should point into datasets/"

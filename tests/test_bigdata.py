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


#: epochs of train_and_infer: one epoch on these few rows leaves several AUCs near 0.5 (census income 0.49 on
#: its own training rows, DIN 0.64), too close to an untrained model's for a floor to tell them apart
EPOCHS = 3


def train_and_infer(config_path: Path, overrides: list[str], out: Path) -> tuple[dict, dict]:
    """Train ``EPOCHS`` epochs; the last epoch's metrics on the test split and on the training split.

    The floors below are on the training split: the real raw samples served here give 50-150 rows, too few
    for a held-out AUC to separate a model that learns from one that does not (census income on its 50 test
    rows: 0.52 / 0.42 / 0.68 after 3 epochs with seeds 2024 / 7 / 1), while every model fits its training
    rows well above what it scores untrained. Measured with seed 2024 (the configs'), identical with 1 and
    2 torch threads; each comment gives the figure, the figures with seeds 7 and 1, and the untrained
    model's (learning rate 1e-12) with seeds 2024 and 7.
    """
    overrides = overrides + [f"runner.epochs={EPOCHS}", f"runner.model_save_path={out}",
                             f"runner.infer_load_path={out}", "runner.print_interval=1000",
                             f"runner.infer_start_epoch={EPOCHS - 1}", f"runner.infer_end_epoch={EPOCHS}"]
    result = train(load_config(config_path, overrides))
    assert len(result.epochs) == EPOCHS
    test = infer(load_config(config_path, overrides))[EPOCHS - 1]
    train_dir = load_config(config_path, overrides).get("runner.train_data_dir")
    fit = infer(load_config(config_path, overrides + [f"runner.test_data_dir={train_dir}"]))[EPOCHS - 1]
    assert set(fit) == set(test) and all(0.0 <= v <= 1.0 for v in test.values())
    return test, fit


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
    metrics, fit = train_and_infer(REPO / "models/multitask/mmoe/config_bigdata.yaml",
                                   [f"runner.train_data_dir={folder / 'data' / 'train'}",
                                    f"runner.test_data_dir={folder / 'data' / 'test'}",
                                    f"hyper_parameters.feature_size={features}"], tmp_path / "out")
    assert set(metrics) == {"auc_income", "auc_marital"}
    assert fit["auc_income"] > 0.6  # 0.702 (seeds 7, 1: 0.761, 0.930; untrained 0.352, 0.438)
    assert fit["auc_marital"] > 0.88  # 0.966 (0.969, 0.929; untrained 0.795, 0.269)


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
    metrics, fit = train_and_infer(REPO / "models/rank/deepfm/config_bigdata.yaml",
                                   [f"runner.train_data_dir={folder / 'slot_train_data_full'}",
                                    f"runner.test_data_dir={folder / 'slot_test_data_full'}",
                                    f"runner.cache_dir={folder / '.recstack_cache'}",
                                    "runner.train_batch_size=32"], tmp_path / "out")
    if mode == "raw":
        assert fit["auc"] > 0.8  # 0.942 (seeds 7, 1: 0.977, 0.902; untrained 0.417)
    else:  # the test split is the training file: the same figure
        assert fit["auc"] > 0.85 and metrics["auc"] == fit["auc"]  # 0.948 (0.957, 0.937; untrained 0.496)
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
    _, fit = train_and_infer(REPO / "models/rank/logistic_regression/config_bigdata.yaml",
                             [f"runner.train_data_dir={folder / 'slot_train_data'}",
                              f"runner.test_data_dir={folder / 'slot_test_data'}",
                              f"runner.cache_dir={folder / '.recstack_cache'}",
                              "runner.train_batch_size=16"], tmp_path / "out")
    assert fit["auc"] > 0.7  # 0.846 (seeds 7, 1: 0.771, 0.798; untrained 0.418)


def test_ali_ccp_run_sh_then_esmm_config_bigdata(shared_data, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    esmm = shared_data / "paddlerec/models/multitask/esmm/data"
    train_lines = (esmm / "train" / "small.txt").read_bytes()
    (served / "traindata_10w.csv").write_bytes(train_lines + (esmm / "test" / "small.txt").read_bytes())
    (served / "testdata_10w.csv").write_bytes(train_lines)  # has clicks and a conversion: every AUC is defined
    folder = copy_dataset_folder("ali-ccp", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh")], env=fake_wget(tmp_path, served), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (folder / "train_data" / "traindata_10w.csv").read_text().count("\n") == 20
    assert not list(folder.glob("*/*.part"))
    metrics, fit = train_and_infer(REPO / "models/multitask/esmm/config_bigdata.yaml",
                                   [f"runner.train_data_dir={folder / 'train_data'}",
                                    f"runner.test_data_dir={folder / 'test_data'}",
                                    f"runner.cache_dir={folder / '.recstack_cache'}",
                                    "runner.train_batch_size=4"], tmp_path / "out")
    assert set(metrics) == {"auc_ctr", "auc_ctcvr", "auc_cvr"}
    assert fit["auc_ctr"] > 0.65  # 0.951 (seeds 7, 1: 0.990, 0.716; untrained 0.088)
    assert fit["auc_ctcvr"] > 0.9  # 0.974 (0.974, 0.974; untrained 0.132)
    # auc_cvr is 1.0 untrained as well (the clicked rows hold one conversion): no floor tells anything there
    assert any((folder / ".recstack_cache").iterdir())


def test_ali_ccp_run_sh_aitm_then_aitm_config_bigdata(shared_data, tmp_path):
    """``run.sh aitm`` fetches PaddleRec's AITM-layout files (served: its sample train.csv, with its header, and
    test.csv, without one); AITM's config_bigdata.yaml trains and evaluates on them."""
    served = tmp_path / "served"
    served.mkdir()
    sample = shared_data / "paddlerec/models/multitask/aitm/data/sample_data"
    (served / "ctr_cvr.train").write_bytes((sample / "train" / "train.csv").read_bytes())
    (served / "ctr_cvr.test").write_bytes((sample / "test" / "test.csv").read_bytes())
    folder = copy_dataset_folder("ali-ccp", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh"), "aitm"], env=fake_wget(tmp_path, served),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (folder / "aitm_data" / "train" / "ctr_cvr.train").read_text().count("\n") == 49  # header + 48
    assert not (folder / "train_data").exists() and not list(folder.glob("*/*/*.part"))
    metrics, fit = train_and_infer(REPO / "models/multitask/aitm/config_bigdata.yaml",
                                   [f"runner.train_data_dir={folder / 'aitm_data' / 'train'}",
                                    f"runner.test_data_dir={folder / 'aitm_data' / 'test'}",
                                    f"runner.cache_dir={folder / '.recstack_cache'}",
                                    "runner.train_batch_size=4",  # 36 steps: PaddleRec's rate 0.0002 moves nothing
                                    "hyper_parameters.optimizer.learning_rate=0.01"], tmp_path / "out")
    assert set(metrics) == {"auc_click", "auc_purchase"}
    assert fit["auc_click"] > 0.7  # 0.789 (seeds 7, 1: 0.981, 0.974; untrained 0.537, 0.359)
    # auc_purchase fits too (0.822, 0.926, 0.993), but the 3 purchases of 48 rows give the untrained model 0.926 with
    # seed 2024 (0.578 with 7): no floor tells anything there


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
    for big in sorted(REPO.glob("models/*/*/config*bigdata.yaml")):  # config_video_bigdata.yaml too
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
    variants = [p for p in REPO.glob("models/*/*/config_*.yaml")  # config_video.yaml, config_easyrec.yaml
                if not p.stem.endswith("bigdata") and p.with_name(p.stem + "_bigdata.yaml").exists()]
    for small in sorted(REPO.glob("models/*/*/config.yaml")) + sorted(variants):
        big = small.with_name(small.stem + "_bigdata.yaml")
        a = load_config(small).section("hyper_parameters")
        b = load_config(big).section("hyper_parameters")
        differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        undeclared = differing - declared_differences(small.with_name("README.md"))
        assert not undeclared, (f"{big} and {small} differ in {sorted(undeclared)}; make them equal or list the keys "
                                "under 'Deliberate differences between config.yaml and config_bigdata.yaml' "
                                "in the README")
        data = load_config(big).get("runner.train_data_dir")
        assert "/datasets/" in data, f"{big}: train_data_dir should point into datasets/"


#: floors of the training-split AUCs of the video models (train_and_infer): 2024 figure (seeds 7, 1; untrained
#: with seeds 2024, 7). No floor on share_bottom's like: it fits it with seed 2024 (0.685) and 7 (0.845) but not
#: with seed 1 (0.431, untrained 0.472 / 0.393), so a floor there would test the seed, not the code.
VIDEO_FLOORS = {
    "share_bottom": {"completion": 0.8},  # 0.985 (0.859, 0.951; untrained 0.621, 0.226)
    "mmoe": {"like": 0.6, "completion": 0.88},  # like 0.702 (0.761, 0.930; untrained 0.352, 0.438); completion
                                                # 0.966 (0.969, 0.929; untrained 0.795, 0.269)
    "ple": {"like": 0.8, "completion": 0.8},  # like 0.897 (0.906, 0.889; untrained 0.596, 0.643); completion
                                              # 0.894 (0.916, 0.952; untrained 0.373, 0.371)
}


def test_video_run_sh_then_config_video_bigdata(shared_data, tmp_path):
    """datasets/video/run.sh runs datasets/census/run.sh (download, preprocess), then names the labels."""
    served = tmp_path / "served"
    served.mkdir()
    lines = (shared_data / "external" / "census_income_raw_sample.txt").read_bytes().splitlines(keepends=True)
    (served / "census-income.data.gz").write_bytes(gzip.compress(b"".join(lines[:150])))
    (served / "census-income.test.gz").write_bytes(gzip.compress(b"".join(lines[150:])))
    copy_dataset_folder("census", tmp_path)
    folder = copy_dataset_folder("video", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh")], env=fake_wget(tmp_path, served),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    census = tmp_path / "datasets" / "census" / "data"
    for split, name in (("train", "train_data.txt"), ("test", "test_data.txt")):
        assert (folder / "data" / split / name).read_bytes() == (census / split / name).read_bytes()
    meta = json.loads((folder / "data" / "meta.json").read_text())
    assert meta["task_names"] == ["like", "completion"] and meta["rows"] == {"train": 150, "test": 50}
    assert meta["census_meta"]["num_features"] == json.loads((census / "meta.json").read_text())["num_features"]
    for model in ("share_bottom", "mmoe", "ple"):
        metrics, fit = train_and_infer(REPO / f"models/multitask/{model}/config_video_bigdata.yaml",
                                       [f"runner.train_data_dir={folder / 'data' / 'train'}",
                                        f"runner.test_data_dir={folder / 'data' / 'test'}",
                                        f"hyper_parameters.feature_size={meta['num_features']}"], tmp_path / model)
        assert set(metrics) == {"auc_like", "auc_completion"}
        for task, floor in VIDEO_FLOORS[model].items():
            assert fit[f"auc_{task}"] > floor, (model, task, fit)


def test_amazon_electronics_run_sh_then_din_config_bigdata(tmp_path):
    """run.sh downloads (stand-in wget) and preprocesses a tiny raw sample written here; DIN trains on it."""
    served = tmp_path / "served"
    served.mkdir()
    reviews, meta = [], []
    for u in range(12):  # 12 users, 4-7 reviews each, over 30 products in 5 categories
        for k in range(4 + u % 4):
            reviews.append(json.dumps({"reviewerID": f"A{u:03d}", "asin": f"B{(u * 7 + k * 3) % 30:04d}",
                                       "unixReviewTime": 1_300_000_000 + 86400 * k, "overall": 4.0}))
    for p in range(30):
        meta.append(repr({"asin": f"B{p:04d}", "categories": [["Electronics", f"Cat{p % 5}"]]}))
    (served / "reviews_Electronics_5.json.gz").write_bytes(gzip.compress(("\n".join(reviews) + "\n").encode()))
    (served / "meta_Electronics.json.gz").write_bytes(gzip.compress(("\n".join(meta) + "\n").encode()))
    folder = copy_dataset_folder("amazon_electronics", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh")], env=fake_wget(tmp_path, served), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = json.loads((folder / "data" / "meta.json").read_text())
    assert counts["users"] == 12 and counts["test_lines"] == 24  # one positive and one negative per user
    assert not list(folder.glob("raw/*.part"))
    metrics, fit = train_and_infer(REPO / "models/rank/din/config_bigdata.yaml",
                                   [f"runner.train_data_dir={folder / 'data' / 'train'}",
                                    f"runner.test_data_dir={folder / 'data' / 'test'}",
                                    f"runner.cache_dir={folder / '.recstack_cache'}",
                                    f"hyper_parameters.item_count={counts['items']}",
                                    f"hyper_parameters.cat_count={counts['categories']}",
                                    "runner.train_batch_size=8"], tmp_path / "out")
    assert set(metrics) == {"auc", "gauc"}
    assert fit["auc"] > 0.62  # 0.707 (seeds 7, 1: 0.758, 0.716; untrained 0.497, 0.457)
    assert fit["gauc"] > 0.65  # 0.731 (0.762, 0.746; untrained 0.474, 0.450)
    assert any((folder / ".recstack_cache").iterdir())


def frappe_lines(rows: int, seed: int) -> bytes:
    """frappe-layout libFM lines (10 fields in frappe's id ranges, labels -1/1) with a planted signal: the parities
    of the daytime and weekday ids (7 values each) decide the label, 90% of the time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    starts = [0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5149]  # field j's ids: [starts[j], starts[j+1])
    ends = starts[1:] + [5382]
    lines = []
    for _ in range(rows):
        ids = [int(rng.integers(a, b)) for a, b in zip(starts, ends)]
        clicked = (ids[2] % 2 + ids[3] % 2 >= 1) != (rng.random() < 0.1)
        lines.append(("1" if clicked else "-1") + "".join(f" {i}:1" for i in ids))
    return ("\n".join(lines) + "\n").encode()


def test_libfm_run_sh_then_deepfm_config_libsvm_bigdata(tmp_path):
    """datasets/libfm/run.sh fetches frappe's three files (stand-in wget), checks them; DeepFM trains on them."""
    served = tmp_path / "served"
    served.mkdir()
    for k, split in enumerate(("train", "validation", "test")):
        (served / f"frappe.{split}.libfm").write_bytes(frappe_lines(1500 if split == "train" else 400, k))
    folder = copy_dataset_folder("libfm", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh"), "frappe"], env=fake_wget(tmp_path, served),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "frappe/train/part-0.txt: 1500 lines" in done.stdout
    for split, name in (("train", "train"), ("valid", "validation"), ("test", "test")):
        assert (folder / "frappe" / split / "part-0.txt").read_bytes() == (served / f"frappe.{name}.libfm").read_bytes()
    test, fit = train_and_infer(REPO / "models/rank/deepfm/config_libsvm_bigdata.yaml",
                                [f"runner.train_data_dir={folder / 'frappe' / 'train'}",
                                 f"runner.test_data_dir={folder / 'frappe' / 'test'}",
                                 "runner.train_batch_size=64"], tmp_path / "out")
    assert set(test) == {"auc"}
    assert test["auc"] > 0.75, test  # 0.867 (seeds 7, 1: 0.871, 0.875; untrained, learning rate 1e-12: 0.536)


def test_libfm_run_sh_names_a_bad_line(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    good = frappe_lines(5, 0)
    for split in ("train", "validation", "test"):
        (served / f"frappe.{split}.libfm").write_bytes(good if split != "validation" else good + b"1 3:1 5000:1\n")
    folder = copy_dataset_folder("libfm", tmp_path)
    done = subprocess.run(["bash", str(folder / "run.sh"), "frappe"], env=fake_wget(tmp_path, served),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "frappe/valid/part-0.txt:6: expected a label and 10 id:value tokens" in done.stderr
    bad = subprocess.run(["bash", str(folder / "run.sh"), "criteo"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown set 'criteo'" in bad.stderr

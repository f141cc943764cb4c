"""datasets/synthetic/generate.py: determinism, exact formats, planted signal.

The generator runs in-process (a subprocess pays recstack's import time); one test
checks the command line.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from recstack.data.hashing import criteo_hash

SCRIPT = Path(__file__).resolve().parents[1] / "datasets" / "synthetic" / "generate.py"
_spec = importlib.util.spec_from_file_location("datasets_synthetic_generate", SCRIPT)
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

KEYS = ["click"] + ["dense_feature"] * 13 + [str(k) for k in range(1, 27)]


def make(tmp_path: Path, dataset: str, rows: int, seed: int, world_seed: int = 0) -> tuple:
    """Generate a file; return its text and the true probabilities ``(rows, tasks)``."""
    name = f"{dataset}_{rows}_{seed}_{world_seed}"
    path = gen.generate(dataset, rows, seed, tmp_path / f"{name}.txt", world_seed,
                        proba=tmp_path / f"{name}.proba")  # fmt: skip
    return path.read_text(), np.loadtxt(tmp_path / f"{name}.proba", delimiter=",", ndmin=2)


def criteo_arrays(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``(n,)``, dense ``(n, 13)`` and ids ``(n, 26)`` of slot-format text."""
    rows = [[t.split(":")[1] for t in line.split(" ")] for line in text.splitlines()]
    arr = np.array(rows)
    return arr[:, 0].astype(int), arr[:, 1:14].astype(float), arr[:, 14:].astype(np.int64)


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    for dataset in ("criteo", "census"):
        a = gen.generate(dataset, 300, 1, tmp_path / "a" / dataset).read_bytes()
        b = gen.generate(dataset, 300, 1, tmp_path / "b" / dataset).read_bytes()
        c = gen.generate(dataset, 300, 2, tmp_path / "c" / dataset).read_bytes()
        w = gen.generate(dataset, 300, 1, tmp_path / "w" / dataset, world_seed=1).read_bytes()
        assert a == b
        assert len(set(a.splitlines()) & set(c.splitlines())) < 10  # different rows
        assert a != w  # another world
    assert sorted(p.name for p in (tmp_path / "a" / "criteo").iterdir()) == ["part-0.txt"]


def test_cli_writes_same_bytes(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "dir"
    cmd = [sys.executable, str(SCRIPT), "census", "--rows", "40", "--seed", "3", "--output", out]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = gen.generate("census", 40, 3, tmp_path / "in_process.txt").read_bytes()
    assert (out / "part-0.txt").read_bytes() == expected


def test_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "CHUNK_ROWS", 1000)
    text, proba = make(tmp_path, "criteo", 2500, 1)
    assert len(text.splitlines()) == len(proba) == 2500


def test_criteo_format(tmp_path: Path) -> None:
    text, _ = make(tmp_path, "criteo", 2000, 1)
    lines = text.splitlines()
    assert all([t.split(":")[0] for t in line.split(" ")] == KEYS for line in lines)
    labels, dense, ids = criteo_arrays(text)
    assert set(labels) == {0, 1}
    assert dense.min() == 0.0 and dense.max() <= 1.0
    assert (dense == 0).mean() > 0.05  # "missing" dense values
    assert ids.min() >= 0 and ids.max() < 1000001
    # Text written like the preprocessor; a missing categorical value is the hashed "".
    for token in lines[0].split()[1:14]:
        assert token == "dense_feature:" + gen.format_float(float(token[14:]))
    assert (ids[:, 19] == criteo_hash(33, "")).any()
    # Vocabulary sizes: tiny slots repeat, large ones are mostly new ids.
    distinct = [len(set(ids[:, k])) for k in range(26)]
    assert distinct[8] <= 3 and distinct[2] > 500


def test_census_format(tmp_path: Path) -> None:
    text, _ = make(tmp_path, "census", 1000, 1)
    data = np.array([line.split(",") for line in text.splitlines()])
    assert data.shape == (1000, 501)
    assert set(data[:, :2].ravel()) == {"0", "1"}
    numeric = data[:, 2:13].astype(float)
    assert abs(numeric.mean()) < 0.1 and 0.9 < numeric.std() < 1.1
    assert all(len(v) <= 10 for v in data[0, 2:13])  # short ".4g" text
    one_hot = data[:, 13:].astype(int)
    assert set(one_hot.ravel()) == {0, 1}
    bounds = np.cumsum([0, *gen.CENSUS_CARDINALITIES.values()])
    assert bounds[-1] == 488 and len(bounds) == 30
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        assert (one_hot[:, lo:hi].sum(axis=1) == 1).all()


def test_criteo_rate_and_bayes_auc(tmp_path: Path) -> None:
    text, proba = make(tmp_path, "criteo", 20000, 5)
    labels = criteo_arrays(text)[0]
    assert 0.22 <= labels.mean() <= 0.28
    assert 0.80 <= roc_auc_score(labels, proba[:, 0]) <= 0.87


def test_census_rates_and_bayes_auc(tmp_path: Path) -> None:
    text, proba = make(tmp_path, "census", 20000, 5)
    labels = np.loadtxt(text.splitlines(), delimiter=",", usecols=(0, 1))
    marital, income = labels.mean(axis=0)
    assert 0.35 <= marital <= 0.45 and 0.06 <= income <= 0.10
    for task in range(2):
        assert 0.85 <= roc_auc_score(labels[:, task], proba[:, task]) <= 0.90
    assert abs(np.corrcoef(labels.T)[0, 1]) > 0.05  # the tasks are related


def test_aliccp_format_rates_and_bayes_auc(tmp_path: Path) -> None:
    from recstack.config import from_dict
    from recstack.data.aliccp import FIELDS, AliCCPReader

    text, proba = make(tmp_path, "aliccp", 20000, 5)
    lines = text.splitlines()
    assert [line.split(",", 1)[0] for line in lines[:3]] == ["1", "2", "3"]  # sample ids
    fields = {t.split(":")[0] for line in lines[:200] for t in line.split(",")[3:]}
    assert fields == set(FIELDS)
    reader = AliCCPReader([str(tmp_path / "aliccp_20000_5_0.txt")],
                          from_dict({"hyper_parameters": {"num_field": 23, "max_len": 3,
                                                          "sparse_feature_number": 737946}}))
    blocks = list(reader.iter_blocks())
    click = np.concatenate([b["ctr"] for b in blocks])[:, 0]
    buy = np.concatenate([b["ctcvr"] for b in blocks])[:, 0]
    sparse = np.concatenate([b["sparse"] for b in blocks])
    assert len(click) == 20000 and not (buy > click).any()  # a conversion only after a click
    assert 0.22 <= click.mean() <= 0.28 and 0.31 <= buy[click == 1].mean() <= 0.39
    second_value = sparse.reshape(-1, 23, 3)[:, FIELDS.index("210"), 1]
    assert (sparse == 0).any() and (second_value > 0).any()  # padding, and a multi-valued field
    assert 0.78 <= roc_auc_score(click, proba[:, 0]) <= 0.83  # measured 0.807, 0.802 (CVR), 0.830 (CTCVR)
    assert 0.77 <= roc_auc_score(buy[click == 1], proba[click == 1, 1]) <= 0.83
    assert 0.80 <= roc_auc_score(buy, proba[:, 0] * proba[:, 1]) <= 0.86


def test_criteo_learnable_by_logistic_regression(tmp_path: Path) -> None:
    (y_train, d_train, i_train), (y_test, d_test, i_test) = (
        criteo_arrays(make(tmp_path, "criteo", rows, seed)[0])
        for rows, seed in ((3000, 1), (1000, 2))
    )
    encoder = OneHotEncoder(handle_unknown="ignore").fit(i_train)
    features = lambda d, i: sparse.hstack([encoder.transform(i), d]).tocsr()  # noqa: E731
    model = LogisticRegression(C=0.1, max_iter=1000).fit(features(d_train, i_train), y_train)
    auc = roc_auc_score(y_test, model.predict_proba(features(d_test, i_test))[:, 1])
    assert auc > 0.7


def test_census_learnable_by_logistic_regression(tmp_path: Path) -> None:
    train, test = (
        np.loadtxt(make(tmp_path, "census", rows, seed)[0].splitlines(), delimiter=",")
        for rows, seed in ((3000, 1), (1000, 2))
    )
    for task in range(2):
        model = LogisticRegression(C=0.1, max_iter=1000).fit(train[:, 2:], train[:, task])
        assert roc_auc_score(test[:, task], model.predict_proba(test[:, 2:])[:, 1]) > 0.75


def test_bundled_sample_data_is_what_make_samples_sh_generates(tmp_path):
    """The model folders' sample files are exactly the generator's output (none edited by hand)."""
    repo = SCRIPT.parents[2]
    script = (repo / "datasets" / "synthetic" / "make_samples.sh").read_text()
    table = script.split("<<'SAMPLES'\n", 1)[1].split("\nSAMPLES", 1)[0]
    checked = 0
    for line in table.splitlines():
        dataset, folder, train_rows, test_rows, *extra = line.split()
        folder, _, sub = folder.partition(":")  # "multitask/mmoe:easyrec_sample_data": another data subfolder
        hash_dim = int(extra[extra.index("--hash-dim") + 1]) if "--hash-dim" in extra else 1000001
        layout = extra[extra.index("--layout") + 1] if "--layout" in extra else "slot"  # criteo --layout tsv
        fmt = extra[extra.index("--format") + 1] if "--format" in extra else "text"  # criteo --format parquet
        name = "part-0.parquet" if fmt == "parquet" else "part-0.txt"
        for split, rows, seed in (("train", int(train_rows), 1), ("test", int(test_rows), 2)):
            bundled = repo / "models" / folder / "data" / (sub or "sample_data") / split / name
            fresh = gen.generate(dataset, rows, seed, tmp_path / f"{folder.replace('/', '_')}_{sub}" / split /
                                 name, 0, hash_dim=hash_dim, layout=layout, fmt=fmt)
            assert fresh.read_bytes() == bundled.read_bytes(), f"{bundled} differs; run make_samples.sh"
            checked += 1
        if dataset == "e2e_mm":  # and the item images
            images = sorted((bundled.parents[1] / "images").iterdir())
            assert [p.read_bytes() for p in images] == [(fresh.parents[1] / "images" / p.name).read_bytes()
                                                        for p in images] and images
    assert checked == 2 * len(table.splitlines()) >= 4

"""datasets/census/preprocess.py on real raw UCI Census-Income lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "datasets" / "census" / "preprocess.py"
NUMERIC = [0, 5, 16, 17, 18, 24, 30, 36, 38, 39, 40]  # raw column indices, in output order
CATEGORICAL = [1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 21, 22, 23, 25, 26, 27, 28,
               29, 31, 32, 33, 34, 35, 37]  # fmt: skip


def run(*args: str | Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def raw_rows(shared_data: Path) -> list[list[str]]:
    path = shared_data / "external" / "census_income_raw_sample.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return [line.split(", ") for line in path.read_text().splitlines()]


@pytest.fixture
def split(raw_rows: list[list[str]], tmp_path: Path) -> tuple[Path, Path]:
    """The first 150 raw lines as the train file, the last 50 as the test file."""
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("".join(", ".join(r) + "\n" for r in raw_rows[:150]))
    test.write_text("".join(", ".join(r) + "\n" for r in raw_rows[150:]))
    return train, test


def preprocess(
    split: tuple[Path, Path], out: Path, *flags: str
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run the script; return the train and test matrices and meta.json."""
    result = run("--train", split[0], "--test", split[1], "--output", out, *flags)
    assert result.returncode == 0, result.stderr
    load = lambda p: np.loadtxt(p, delimiter=",", ndmin=2)  # noqa: E731
    meta = json.loads((out / "meta.json").read_text())
    return load(out / "train" / "train_data.txt"), load(out / "test" / "test_data.txt"), meta


def test_labels_layout_and_one_hot(raw_rows: list, split: tuple, tmp_path: Path) -> None:
    train, test, meta = preprocess(split, tmp_path / "out")
    assert train[0, :2].tolist() == [0, 1]  # "Married-civilian spouse present", "50000+."
    assert train[1, :2].tolist() == [1, 0]  # "Never married", "- 50000."
    for rows, data in ((raw_rows[:150], train), (raw_rows[150:], test)):
        assert data[:, 0].tolist() == [float(r[7] == "Never married") for r in rows]
        assert data[:, 1].tolist() == [float(r[41] == "50000+.") for r in rows]

    categories = {c: sorted({r[c] for r in raw_rows[:150]}) for c in CATEGORICAL}
    num_one_hot = sum(len(v) for v in categories.values())
    assert train.shape == (150, 2 + 11 + num_one_hot) and test.shape == (50, train.shape[1])
    one_hot = train[:, 13:]
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    assert (one_hot.sum(axis=1) == 29).all()

    # A test value unseen in train: all zeros in its column's block, counted in meta.json.
    offsets = np.cumsum([0] + [len(categories[c]) for c in CATEGORICAL])
    unseen = [(i, k) for i, r in enumerate(raw_rows[150:]) for k, c in enumerate(CATEGORICAL)
              if r[c] not in categories[c]]  # fmt: skip
    assert unseen, "the sample should contain unseen test categories"
    for i, k in unseen:
        assert test[i, 13 + offsets[k] : 13 + offsets[k + 1]].sum() == 0
    per_row = np.bincount([i for i, _ in unseen], minlength=50)
    assert (test[:, 13:].sum(axis=1) == 29 - per_row).all()
    assert sum(meta["unseen_test_categories"].values()) == len(unseen)


def test_standardized_numeric_and_meta(raw_rows: list, split: tuple, tmp_path: Path) -> None:
    train, test, meta = preprocess(split, tmp_path / "out")
    raw = np.array([[float(r[c]) for c in NUMERIC] for r in raw_rows[:150]])
    numeric = train[:, 2:13]
    varying = raw.std(axis=0) > 0
    np.testing.assert_allclose(numeric.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(numeric.std(axis=0)[varying], 1, atol=1e-4)
    assert (numeric[:, ~varying] == 0).all()

    assert meta["num_features"] == len(meta["feature_names"]) == train.shape[1] - 2
    assert meta["feature_names"][:2] == ["age", "wage_per_hour"]
    assert meta["rows"] == {"train": 150, "test": 50}
    assert meta["label_rates"]["train"]["income"] == pytest.approx(train[:, 1].mean())
    assert meta["label_rates"]["test"]["marital"] == pytest.approx(test[:, 0].mean())
    assert list(meta["numeric_mean"].values()) == pytest.approx(raw.mean(axis=0).tolist())
    codes = meta["categories"]["det_ind_code"]
    assert codes == sorted(codes, key=int)  # numeric categories sort numerically, like pandas
    assert len(meta["categories"]) == 29
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no temporary files left


def test_no_standardize_keeps_raw_values(raw_rows: list, split: tuple, tmp_path: Path) -> None:
    train, _, meta = preprocess(split, tmp_path / "raw", "--no-standardize")
    assert train[0, 2] == 62 and train[0, 7] == pytest.approx(1819.08)
    expected = [[float(r[c]) for c in NUMERIC] for r in raw_rows[:150]]
    np.testing.assert_allclose(train[:, 2:13], expected)
    assert meta["standardized"] is False


@pytest.mark.parametrize(
    "line_no, edit, message",
    [
        (3, lambda r: r[:40], "line 3: expected 42 columns separated by ', ', got 40"),
        (5, lambda r: ["abc"] + r[1:], "line 5: column 1 (age): expected a number, got 'abc'"),
    ],
    ids=["column-count", "non-numeric"],
)
def test_bad_input_names_file_and_line(raw_rows, tmp_path, line_no, edit, message) -> None:
    rows = [list(r) for r in raw_rows[:10]]
    rows[line_no - 1] = edit(rows[line_no - 1])
    bad, ok = tmp_path / "bad.txt", tmp_path / "ok.txt"
    bad.write_text("".join(", ".join(r) + "\n" for r in rows))
    ok.write_text("".join(", ".join(r) + "\n" for r in raw_rows[:10]))
    for train, test in ((bad, ok), (ok, bad)):
        result = run("--train", train, "--test", test, "--output", tmp_path / "out")
        assert result.returncode != 0
        assert f"{bad} {message}" in result.stderr

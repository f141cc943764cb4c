"""datasets/criteo/preprocess.py on real raw Criteo lines.

Most checks call the script's functions in-process (a subprocess pays recstack's
import time); the command-line contract is checked with a few subprocesses.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recstack.data.hashing import criteo_hash

SCRIPT = Path(__file__).resolve().parents[1] / "datasets" / "criteo" / "preprocess.py"
_spec = importlib.util.spec_from_file_location("datasets_criteo_preprocess", SCRIPT)
criteo_preprocess = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(criteo_preprocess)
CONT_MIN = [0, -3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
CONT_DIFF = [20, 603, 100, 50, 64000, 500, 100, 50, 500, 10, 10, 10, 50]
KEYS = ["click"] + ["dense_feature"] * 13 + [str(k) for k in range(1, 27)]


def convert(data: bytes, hash_dim: int = 1000001) -> str:
    """Run the preprocessor in-process."""
    out = io.BytesIO()
    criteo_preprocess.convert_stream(io.BytesIO(data), out, hash_dim)
    return out.getvalue().decode()


def start(hash_seed: str = "0") -> subprocess.Popen:
    """Start the script in a subprocess; feed it with ``.communicate(input)``.

    Starting several before feeding any lets them pay recstack's import time in parallel.
    """
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    pipe = subprocess.PIPE
    cmd = [sys.executable, str(SCRIPT)]
    return subprocess.Popen(cmd, stdin=pipe, stdout=pipe, stderr=pipe, env=env)


@pytest.fixture
def raw(shared_data: Path) -> bytes:
    path = shared_data / "external" / "criteo_raw_sample.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path.read_bytes()


@pytest.fixture
def converted(raw: bytes) -> list[list[tuple[str, str]]]:
    return [[tuple(t.split(":")) for t in line.split(" ")] for line in convert(raw).splitlines()]


def test_format_labels_dense_and_ids(raw: bytes, converted: list) -> None:
    rows = [line.split("\t") for line in raw.decode().splitlines()]
    assert len(converted) == len(rows) == 200
    for fields, tokens in zip(rows, converted):
        assert [key for key, _ in tokens] == KEYS
        assert tokens[0][1] == fields[0]
        for i in range(1, 14):
            x = 0.0 if fields[i] == "" else (float(fields[i]) - CONT_MIN[i - 1]) / CONT_DIFF[i - 1]
            assert float(tokens[i][1]) == pytest.approx(x, rel=1e-11, abs=1e-15)
        for k in range(1, 27):
            assert 0 <= int(tokens[13 + k][1]) < 1000001
            assert int(tokens[13 + k][1]) == criteo_hash(13 + k, fields[13 + k])


def test_first_line_by_hand(converted: list) -> None:
    dense = [value for _, value in converted[0][1:14]]
    # raw: label 0, I1 empty, I2=3, I3=260, I4 empty, I5=17668, I6 I7 empty, I8=33
    assert converted[0][0] == ("click", "0")
    assert dense[0] == "0.0"
    assert float(dense[1]) == pytest.approx((3 + 3) / 603, rel=1e-11)
    assert dense[2] == "2.6"  # not clipped, as in PaddleRec
    assert dense[3] == "0.0"
    assert dense[4] == "0.2760625"
    assert dense[5] == dense[6] == "0.0"
    assert dense[7] == "0.66"
    assert converted[0][14] == ("1", str(criteo_hash(14, "05db9164")))
    assert converted[0][-1] == ("26", str(criteo_hash(39, "")))  # missing value hashed too


def test_cli_stable_across_processes(raw: bytes) -> None:
    """Two processes with different hash salts write the same bytes (CRC-32, not hash())."""
    procs = [start(hash_seed="1"), start(hash_seed="12345")]
    (out1, err1), (out2, _) = (p.communicate(raw, timeout=60) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], err1.decode()
    assert out1 == out2 == convert(raw).encode()


def test_hash_dim(raw: bytes) -> None:
    lines = convert(raw, hash_dim=1000).splitlines()
    ids = [int(t.split(":")[1]) for line in lines for t in line.split()[14:]]
    assert max(ids) < 1000 and len(ids) == 200 * 26


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (b"1\t2\t3\n", "stdin line 3: expected 40 tab-separated columns, got 3"),
        (b"x" + b"\t" * 39 + b"\n", "stdin line 3: column 0 (label)"),
        (b"1\t\tabc" + b"\t" * 37 + b"\n", "stdin line 3: column 2 (I2)"),
    ],
)
def test_malformed_line_names_the_line(raw: bytes, bad_line: bytes, message: str) -> None:
    head = b"".join(raw.splitlines(keepends=True)[:2])
    with pytest.raises(criteo_preprocess.InputError, match=re.escape(message)):
        convert(head + bad_line)


def test_cli_malformed_line_exits_nonzero(raw: bytes) -> None:
    head = b"".join(raw.splitlines(keepends=True)[:2])
    proc = start()
    _, err = proc.communicate(head + b"1\t2\n", timeout=60)
    assert proc.returncode != 0
    assert "stdin line 3: expected 40 tab-separated columns, got 2" in err.decode()

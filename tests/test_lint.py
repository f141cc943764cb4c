"""The linter over the repository (rules in pyproject.toml ``[tool.ruff]``), run with the suite so that
``python -m pytest`` (the README's and CI's test command) checks it; ``ruff`` is a test requirement."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    try:
        import ruff  # noqa: F401
    except ImportError:
        exe = shutil.which("ruff")
        if exe is None:
            pytest.skip("ruff is not installed (pip install -r requirements-test.txt)")
        return [exe]
    return [sys.executable, "-m", "ruff"]


def test_ruff_finds_nothing():
    proc = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ruff check . found problems:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"

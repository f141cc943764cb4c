"""Shared pytest fixtures."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder beside the repository (``<repo>/../shared/data``); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tests that create inference backends set torch's thread count; restore it so that a later test's
    training runs with the same threads whatever ran before it (float reduction order depends on them)."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

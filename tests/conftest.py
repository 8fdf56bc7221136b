"""Shared, generic pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy Generator: tests that draw random data stay reproducible."""
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def photos_dir(repo_root: Path) -> Path:
    """The small bundled photo set (data/photos/{train,test})."""
    path = repo_root / "data" / "photos"
    if not path.is_dir():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def single_thread_torch():
    """Run torch on one intra-op thread (restored after the test).

    On a small, busy machine two spinning intra-op threads can make a millisecond-sized
    forward pass take a second; one thread keeps test timings stable.
    """
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

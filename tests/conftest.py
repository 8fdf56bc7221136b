"""Shared pytest fixtures and the test device switch.

Every fixture used by more than one test file lives here, so no test file imports another's
fixtures; plain helpers (model exporters, the numpy backend) are ordinary modules next to
this one (``_runtime_models``, ``_numpy_backend``).

``FOURPP_TEST_DEVICE`` picks the device the run is meant for: ``cpu`` (the default) skips
the tests marked ``gpu`` with the reason when no GPU is usable; ``cuda`` makes them
required, so a missing GPU fails them instead of passing the run silently.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICE_VARIABLE = "FOURPP_TEST_DEVICE"
DEVICES = ("cpu", "cuda")


def selected_device() -> str:
    """The device named by ``FOURPP_TEST_DEVICE`` (default ``cpu``)."""
    value = os.environ.get(DEVICE_VARIABLE, "cpu").strip().lower() or "cpu"
    if value not in DEVICES:
        raise pytest.UsageError(f"{DEVICE_VARIABLE}={value!r}: expected one of {', '.join(DEVICES)}")
    return value


@functools.cache
def gpu_unusable_reason() -> str | None:
    """Why the CUDA tests cannot run here, or None when they can (checked once per run)."""
    try:
        import cuda.bindings.runtime  # noqa: F401 - probing the dependency
    except ImportError as exc:
        return f"cuda-bindings is not installed ({exc})"
    from runtime.cuda.resources import cuda_available

    ok, why = cuda_available()
    if not ok:
        return f"no usable GPU: {why}"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA"
    return None


def pytest_configure(config: pytest.Config) -> None:
    selected_device()  # a misspelt device fails the run at once, not as skipped tests


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, with FOURPP_TEST_DEVICE=cuda, fail) ``gpu`` tests before their fixtures run."""
    if item.get_closest_marker("gpu") is None:
        return
    reason = gpu_unusable_reason()
    if reason is None:
        return
    if selected_device() == "cuda":
        pytest.fail(f"{DEVICE_VARIABLE}=cuda requires a GPU, but {reason}", pytrace=False)
    pytest.skip(f"{reason} (set {DEVICE_VARIABLE}=cuda to require a GPU)")


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
def single_thread_torch() -> Iterator[None]:
    """Run torch on one intra-op thread (restored after the test).

    On a small, busy machine two spinning intra-op threads can make a millisecond-sized
    forward pass take a second; one thread keeps test timings stable.
    """
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- tiny ONNX models (tests/_runtime_models.py), each exported once per run -----------------


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _export(models_dir: Path, name: str, kind: str, io: str = "float32-nchw") -> Path:
    from _runtime_models import export_model

    return export_model(models_dir / name, kind, io=io)


@pytest.fixture(scope="session")
def nearest_model(models_dir: Path) -> Path:
    return _export(models_dir, "nearest.onnx", "nearest")


@pytest.fixture(scope="session")
def conv_model(models_dir: Path) -> Path:
    return _export(models_dir, "conv.onnx", "conv")


@pytest.fixture(scope="session")
def nearest_uint8_model(models_dir: Path) -> Path:
    return _export(models_dir, "nearest_u8.onnx", "nearest", io="uint8-nhwc")


@pytest.fixture(scope="session")
def conv_uint8_model(models_dir: Path) -> Path:
    return _export(models_dir, "conv_u8.onnx", "conv", io="uint8-nhwc")


@pytest.fixture(autouse=True, scope="session")
def _private_blob_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Compiled-model caches (OpenVINO blobs) go to a folder of this test session, not the
    user's ~/.cache: ``backend="auto"`` picks OpenVINO wherever the dev extra installed it."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("FOURPP_EUSR_CACHE", str(tmp_path_factory.mktemp("fourpp-eusr-cache")))
        yield

"""``runtime batch --ray`` on a real local Ray cluster (loopback, 2 logical CPUs, no dashboard).

One cluster for the module (its start-up, ~5-10 s here, is paid once); every run is bounded by
a timeout so a scheduling hang fails the test instead of the CI job. The outputs are compared
byte for byte with what ``python -m runtime upscale`` writes in a subprocess.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.batch import FAILURES_NAME, SUMMARY_NAME, output_name
from runtime.cli import main
from runtime.errors import ImageReadError
from runtime.image_io import read_image

ray = pytest.importorskip("ray", reason="the [cluster] extra (ray[data]) is part of [dev]")

from tests._batch_photos import GOOD, make_sources  # noqa: E402 - after the importorskip

RUN_TIMEOUT_S = 180
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    env = {"FOURPP_EUSR_CACHE": os.environ.get("FOURPP_EUSR_CACHE", str(tmp_path_factory.mktemp("cache")))}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=128 * 1024 * 1024,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def sources(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sources(tmp_path_factory.mktemp("ray-src") / "in", photos_dir)


@pytest.fixture(scope="module")
def reference(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray-ref")
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "upscale", str(sources), "-o", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 1 and "corrupt.png" in done.stderr, done.stderr  # the corrupt file only
    return out


def bounded(fn: Callable[[], Any], timeout: float = RUN_TIMEOUT_S) -> Any:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"batch --ray did not finish within {timeout} s (a scheduling hang?)")
    finally:
        pool.shutdown(wait=False)


def outputs(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*_x4.png"))}


def test_ray_outputs_match_upscale_failures_are_recorded_and_a_rerun_skips(
    cluster: None, sources: Path, reference: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "out"
    argv = ["batch", str(sources), dst.as_uri(), "--ray", "--workers", "2", "--cpus-per-worker", "0.5", "-q"]
    assert bounded(lambda: main(argv)) == 1
    written = outputs(dst)
    assert sorted(written) == sorted(output_name(n, 4) for n in GOOD)
    for name, (data, _) in written.items():
        assert data == (reference / name).read_bytes(), name
    assert read_image(dst / "deep16_x4.png")[1].bit_depth == 16
    (failure,) = [json.loads(line) for line in (dst / FAILURES_NAME).read_text().splitlines()]
    with pytest.raises(ImageReadError) as reader:
        read_image(sources / "corrupt.png")
    assert failure == {"source": str(sources / "corrupt.png"), "error": str(reader.value)}
    summary = json.loads((dst / SUMMARY_NAME).read_text())
    assert (summary["done"], summary["skipped"], summary["failed"], summary["ray"]) == (3, 0, 1, True)
    assert summary["workers"] == 2 and summary["ray_start_s"] == 0.0  # the module's cluster was joined
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]  # no temporary file left

    rerun = ["batch", str(sources / "*.png"), str(dst), "--ray", "-q"]  # a glob this time
    assert bounded(lambda: main(rerun)) == 1
    assert outputs(dst) == written  # nothing rewritten
    summary = json.loads((dst / SUMMARY_NAME).read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 3, 1)


def test_actors_that_cannot_all_be_placed_are_refused_not_waited_for(
    cluster: None, sources: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["batch", str(sources), str(tmp_path / "out"), "--ray", "--workers", "2", "--cpus-per-worker", "1"]
    assert bounded(lambda: main(argv), timeout=60) == 2
    err = capsys.readouterr().err
    assert "needs 2.25 CPUs but the Ray cluster has 2" in err and "--cpus-per-worker" in err

"""benchmarks/gpu_check.sh on a machine without a GPU: every step's exit status lands in the
summary even when steps fail, the interpreter defaults to python3, the gpu tests are run
as required (FOURPP_TEST_DEVICE=cuda), and a bare interpreter without the project installed
still gets the checkpoint loader's entry point.

These run the real script. Here the preflight fails (torch is a CPU build), which is the
honest failing step; ``--keep-going`` makes every later step run and fail for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = [
    "preflight",
    "environment",
    "gpu_tests",
    "parity_fp32",
    "parity_fp16",
    "parity_ort_cuda",
    "throughput",
    "triton_tensorrt",
]


def no_gpu_here() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU answers here: the script's steps would pass")


def run(out: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), "--quick", "--allow-dirty", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
    )


def statuses(out: Path) -> dict[str, str]:
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line]
    return {row[0]: row[1] for row in rows}


def test_the_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=60)


@pytest.mark.slow
def test_a_failed_preflight_still_writes_the_summary(tmp_path: Path) -> None:
    no_gpu_here()
    res = run(tmp_path)
    assert res.returncode == 2, res.stderr
    got = statuses(tmp_path)
    assert list(got) == [*STEPS, "summary"]
    assert got["preflight"] == "1" and got["summary"] == "0"
    assert {got[s] for s in ("gpu_tests", "parity_fp32", "parity_fp16", "throughput", "triton_tensorrt")} == {"skipped"}
    assert "sees no CUDA GPU" in (tmp_path / "preflight.log").read_text()
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["step"] for s in summary["steps"]] == STEPS  # the summary step records itself after
    table = (tmp_path / "summary.md").read_text()
    assert "| preflight | 1 |" in table and "| gpu_tests | skipped | 0 | the preflight failed |" in table
    assert res.stdout.rstrip().splitlines()[-1].startswith("full results:")  # the table comes last


@pytest.mark.slow
def test_keep_going_runs_every_step_and_records_each_exit_status(tmp_path: Path) -> None:
    no_gpu_here()
    res = run(tmp_path, "--keep-going")
    assert res.returncode == 2, res.stderr
    got = statuses(tmp_path)
    assert got["preflight"] == "1" and got["environment"] == "1"  # no GPU to describe, recorded
    assert got["gpu_tests"] not in ("0", "skipped")
    assert "FOURPP_TEST_DEVICE=cuda requires a GPU" in (tmp_path / "gpu_tests.log").read_text()
    assert got["parity_fp32"] == got["parity_fp16"] == "2"  # parity.py: cannot run
    assert got["throughput"] == "2" and got["summary"] == "0"
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert "CudaUnavailableError" in environment["gpu"]["error"] and environment["command"].endswith("--keep-going")
    table = (tmp_path / "summary.md").read_text()
    for step in STEPS:
        assert f"| {step} | {got[step]} |" in table


@pytest.mark.slow
def test_python3_is_the_default_interpreter(tmp_path: Path) -> None:
    """Only ``python3`` on the PATH (as on a bare GPU box): the steps still run."""
    no_gpu_here()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    res = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out"), "--quick"], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert res.returncode == 2, res.stderr
    assert "sees no CUDA GPU" in (tmp_path / "out" / "preflight.log").read_text()  # python3 ran it


@pytest.mark.slow
def test_a_bare_interpreter_gets_the_loader_entry_point(tmp_path: Path) -> None:
    """``python -S`` (no site-packages: the project is not installed, nothing else either) on
    a checkout without the ignored ``*.egg-info`` (which does not travel to a GPU box): the
    preflight writes the entry point where the steps' interpreters find it."""
    checkout = tmp_path / "checkout"
    (checkout / "benchmarks").mkdir(parents=True)
    (checkout / "benchmarks" / "gpu_check.sh").write_bytes(SCRIPT.read_bytes())
    (checkout / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    bare = tmp_path / "python3"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    out = tmp_path / "out"
    res = subprocess.run(
        ["bash", str(checkout / "benchmarks" / "gpu_check.sh"), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": str(bare)},
    )
    assert res.returncode == 2, res.stderr
    log = (out / "preflight.log").read_text()
    assert "entry point from pyproject.toml: ['train.checkpoint:load_model']" in log
    assert "missing Python packages: numpy" in log
    assert statuses(out)["summary"] == "0"  # the json summary needs only the standard library
    assert "| preflight | 1 |" in (out / "summary.md").read_text()


def test_throughput_gpu_takes_allow_tf32() -> None:
    from benchmarks import throughput_gpu

    assert throughput_gpu._parser().parse_args([]).allow_tf32 is False  # float32 means float32
    assert throughput_gpu._parser().parse_args(["--allow-tf32"]).allow_tf32 is True

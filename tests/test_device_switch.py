"""FOURPP_TEST_DEVICE in conftest.py: ``gpu`` tests skip on cpu (the default), are required on
cuda, run as usual where a GPU answers, and a misspelt device stops the run.

The suite's conftest runs in a throwaway project with its GPU probe replaced, so the switch
is checked the same way on machines with and without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
INNER_TESTS = """
import pytest

@pytest.mark.gpu
def test_needs_gpu():
    pass

def test_anywhere():
    pass
"""


def run_inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, device: str | None, gpu: bool
) -> pytest.RunResult:
    """Run one gpu test and one plain test under ``device`` with a probe that says ``gpu``."""
    probe = "None" if gpu else repr("stand-in probe: no GPU here")
    pytester.makeconftest(CONFTEST.read_text() + f"\n\ndef gpu_unusable_reason():\n    return {probe}\n")
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    if device is None:
        monkeypatch.delenv("FOURPP_TEST_DEVICE", raising=False)
    else:
        monkeypatch.setenv("FOURPP_TEST_DEVICE", device)
    return pytester.runpytest("-rs", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@pytest.mark.parametrize("device", [None, "cpu", " CPU "])
def test_gpu_tests_skip_with_the_reason_on_cpu(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, device: str | None
) -> None:
    result = run_inner(pytester, monkeypatch, device, gpu=False)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*stand-in probe: no GPU here (set FOURPP_TEST_DEVICE=cuda to require a GPU)"])


@pytest.mark.parametrize("device", ["cuda", "CUDA"])
def test_gpu_tests_fail_without_a_gpu_on_cuda(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    result = run_inner(pytester, monkeypatch, device, gpu=False)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["FOURPP_TEST_DEVICE=cuda requires a GPU, but stand-in probe: no GPU here"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("device", [None, "cuda"])
def test_gpu_tests_run_where_a_gpu_answers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, device: str | None
) -> None:
    run_inner(pytester, monkeypatch, device, gpu=True).assert_outcomes(passed=2)


def test_an_unknown_device_stops_the_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_inner(pytester, monkeypatch, "gpu0", gpu=False)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*FOURPP_TEST_DEVICE='gpu0': expected one of cpu, cuda*"])

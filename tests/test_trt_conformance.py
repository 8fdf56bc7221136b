"""The TensorRT builder (export/to_trt.py) and runtime stage against the REAL bindings of 10.x and 11.x.

TensorRT's native libraries cannot be installed here, so ``tests/trt_kit/install.py``
installs the real bindings wheels of each release on stub native libraries, and
``tests/trt_kit/conformance.py`` runs the builder and the runtime stage with only the
native entry points (``Builder``, ``Runtime``, ``OnnxParser``) replaced by checked
autospec fakes of the real classes (``tests/trt_kit/fakes.py``). One subprocess per
release: both are the module ``tensorrt``.

The negative controls prove the harness has teeth: the same scenarios on a copy of the
real source with one deliberate mistake must fail, each in its expected way (and the two
members removed in 11.x must fail on 11.x only). If the bindings cannot be installed
(offline), these tests fail rather than skip: CI installs them first (README command 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trt_kit import install

pytestmark = [pytest.mark.trt, pytest.mark.slow]  # one subprocess per release: 3-11 s each on 2 cores

ROOT = Path(__file__).resolve().parents[1]

POSITIVE = [
    "autospec_limits",
    "build_fp32",
    "build_uint8_fp16",
    "build_int8",
    "cache_reuse",
    "cli_int8",
    "allow_tf32",
    "uint8_inner_refused",
    "precision_mismatch",
    "parser_errors",
    "builder_nullptr",
    "build_returns_none",
    "timing_cache_mismatch",
    "runtime_stage",
    "runtime_uint8",
    "runtime_contract",
    "runtime_errors",
    "runtime_nullptr",
    "runtime_device_index",
    "logger_one_per_process",
    "runtime_cuda_graphs",
]

# negative control → {major: None (must pass) or (exception type, text it must contain)}
_BOTH = lambda exc, text: {10: (exc, text), 11: (exc, text)}  # noqa: E731
NEGATIVE = {
    "misspelt_builder_method": _BOTH("AttributeError", "set_memroy_pool_limit"),
    "removed_builder_flag_fp16": {10: None, 11: ("AttributeError", "FP16")},
    "wrong_keyword": _BOTH("SignatureError", "unexpected keyword argument 'ignore_mismatches'"),
    "swapped_arguments": _BOTH("SignatureError", "argument 'pool'=1073741824 is not"),
    "tf32_not_cleared": _BOTH("AssertionError", "must clear BuilderFlag.TF32"),
    "uint8_check_skipped": _BOTH("AssertionError", "reached TensorRT's builder"),
    "logger_per_factory": _BOTH("AssertionError", "distinct loggers"),
    "gpu_zero_checked": _BOTH("EngineMismatchError", "this GPU is NVIDIA A100-SXM4-80GB"),
    "device_not_selected": _BOTH("AssertionError", "('Runtime', '__init__', None)"),
    "cuda_graphs_undeclared": _BOTH("AssertionError", "cuda_graphs=True was ignored"),
    "misspelt_runtime_method": _BOTH("AttributeError", "set_tensor_adress"),
    "extra_argument": _BOTH("SignatureError", "execute_async_v3(): incompatible function arguments"),
    "removed_engine_property": {10: None, 11: ("AttributeError", "device_memory_size")},
    "readonly_property": _BOTH(
        "AttributeError", "'active_optimization_profile' of 'IExecutionContext' object has no setter"
    ),
}


@pytest.fixture(scope="module", params=sorted(install.RELEASES))
def report(request, tmp_path_factory) -> dict:
    version = request.param
    try:
        site = install.install(version)
    except Exception as exc:  # offline, no gcc, ...: fail loudly, never skip  # noqa: BLE001 - the library raises its own exception types
        pytest.fail(
            f"the real TensorRT {version} bindings could not be installed ({exc}); run "
            "`python tests/trt_kit/install.py` with access to PyPI (CI does, see README)"
        )
    out = tmp_path_factory.mktemp(f"trt{version}") / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "TRT_STUB_QUIET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.trt_kit.conformance", "--expect-version", version, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and out.exists(), f"harness failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    data = json.loads(out.read_text())
    data["major"] = int(version.split(".")[0])
    return data


def test_real_bindings_on_stub_libraries(report: dict) -> None:
    assert report["stub_libs"] is True
    assert "fatal" not in report, report.get("fatal")
    cache = str(install.site_dir(report["tensorrt_version"]))
    assert report["tensorrt_file"].startswith(cache) and report["bindings_file"].startswith(cache), report


def test_every_scenario_has_an_expectation(report: dict) -> None:
    ran = set(report["results"])
    assert ran == set(POSITIVE) | {f"neg:{n}" for n in NEGATIVE}, ran ^ (set(POSITIVE) | {f"neg:{n}" for n in NEGATIVE})


@pytest.mark.parametrize("name", POSITIVE)
def test_positive_scenario(report: dict, name: str) -> None:
    result = report["results"][name]
    assert result["ok"], (
        f"TensorRT {report['tensorrt_version']}: {name} failed:\n{result.get('traceback') or result['error']}"
    )


def test_signature_checks_cover_every_argument_type(report: dict) -> None:
    """Arguments of a type the checker cannot resolve would pass unchecked: there must be none."""
    assert report["results"]["build_fp32"]["details"]["unknown_types"] == []


def test_strongly_typed_flag_follows_the_release(report: dict) -> None:
    """STRONGLY_TYPED is bit 1 in 10.x and bit 0 in 11.x: read off the real enum, not hard-coded."""
    flags = report["results"]["build_fp32"]["details"]["create_network_flags"]
    assert flags == {10: 1 << 1, 11: 1 << 0}[report["major"]]


@pytest.mark.parametrize("name", sorted(NEGATIVE))
def test_negative_control(report: dict, name: str) -> None:
    result = report["results"][f"neg:{name}"]
    expected = NEGATIVE[name][report["major"]]
    version = report["tensorrt_version"]
    if expected is None:
        assert result["ok"], (
            f"TensorRT {version}: {name} should pass on this release:\n{result.get('traceback') or result['error']}"
        )
        return
    exc_type, text = expected
    assert not result["ok"], f"TensorRT {version}: the harness did NOT catch the mistake {name!r}"
    assert result["error"].startswith(f"{exc_type}: ") and text in result["error"], (
        f"TensorRT {version}: {name} failed, but not as expected ({exc_type} with {text!r}):\n{result['error']}"
    )

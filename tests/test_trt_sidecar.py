"""TensorRT code paths that need no TensorRT: sidecar, GPU query, ONNX inspection, CLI errors.

The parts that call TensorRT are in tests/test_trt_conformance.py (real bindings).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from export import to_trt
from export.engine_cache import BuildOptions, Precision
from runtime.errors import MissingDependencyError, ModelError
from runtime.trt_sidecar import (
    EngineMismatchError,
    GpuInfo,
    GpuQueryError,
    check_compatible,
    model_info_from_sidecar,
    query_gpu,
    read_sidecar,
    sidecar_path,
)
from tests.trt_kit.onnx_models import write_onnx

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
SIDECAR = {
    "format": 1,
    "tensorrt_version": "10.16.1.11",
    "gpu": H100.to_dict(),
    "model": {"io": "uint8-nhwc", "scale": 4, "input": "lr", "output": "sr", "recommended_halo": 8},
    "onnx": {"metadata": None},
    "io_tensors": [],
    "profiles": [],
    "engine_sha256": "0" * 64,
}


# --------------------------------------------------------------------------- sidecar


def test_sidecar_path() -> None:
    assert sidecar_path("a/model.plan") == Path("a/model.plan.json")


def test_read_sidecar_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.plan.json"
    with pytest.raises(ModelError, match=r"m\.plan\.json: no such sidecar.*export/to_trt\.py"):
        read_sidecar(path)
    path.write_text("[1]")
    with pytest.raises(ModelError, match="must be a JSON object"):
        read_sidecar(path)
    path.write_text(json.dumps({**SIDECAR, "format": 9}))
    with pytest.raises(ModelError, match="sidecar format 9 is not supported"):
        read_sidecar(path)
    path.write_text(json.dumps({k: v for k, v in SIDECAR.items() if k != "profiles"}))
    with pytest.raises(ModelError, match=r"lacks \['profiles'\]"):
        read_sidecar(path)
    path.write_text(json.dumps(SIDECAR))
    assert read_sidecar(path) == SIDECAR


def test_compatible_engine_passes() -> None:
    check_compatible(SIDECAR, engine="m.plan", trt_version="10.16.1.11", gpu=H100)


def test_other_tensorrt_version_names_both() -> None:
    with pytest.raises(EngineMismatchError) as info:
        check_compatible(SIDECAR, engine="m.plan", trt_version="11.4.0.106", gpu=H100)
    assert "built with TensorRT 10.16.1.11 but this is TensorRT 11.4.0.106" in str(info.value)
    assert "python export/to_trt.py MODEL.onnx -o m.plan" in str(info.value)


def test_other_gpu_names_both(caplog) -> None:
    a100 = GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")
    with pytest.raises(
        EngineMismatchError,
        match=r"built for NVIDIA H100 80GB HBM3 \(compute capability 9.0\) but this GPU is NVIDIA A100-SXM4-80GB \(compute capability 8.0\)",
    ):
        check_compatible(SIDECAR, engine="m.plan", trt_version="10.16.1.11", gpu=a100, strict_gpu=False)
    h100_pcie = GpuInfo("NVIDIA H100 PCIe", "9.0")
    with pytest.raises(EngineMismatchError):
        check_compatible(SIDECAR, engine="m.plan", trt_version="10.16.1.11", gpu=h100_pcie)
    check_compatible(SIDECAR, engine="m.plan", trt_version="10.16.1.11", gpu=h100_pcie, strict_gpu=False)
    assert "NVIDIA H100 PCIe" in caplog.text
    check_compatible(SIDECAR, engine="m.plan", trt_version="10.16.1.11", gpu=None)
    assert "cannot compare GPUs" in caplog.text


def test_model_info_from_sidecar() -> None:
    info = model_info_from_sidecar(SIDECAR, engine="m.plan")
    assert (info.io.value, info.scale, info.input_name, info.output_name, info.recommended_halo) == (
        "uint8-nhwc",
        4,
        "lr",
        "sr",
        8,
    )
    with pytest.raises(ModelError, match="scale=2 was asked for but the engine's sidecar says scale 4"):
        model_info_from_sidecar(SIDECAR, engine="m.plan", scale=2)
    meta = {"format": 1, "scale": 4, "io": "float32-nchw", "input": "x", "output": "y", "recommended_halo": 16}
    info = model_info_from_sidecar({**SIDECAR, "onnx": {"metadata": meta}}, engine="m.plan")
    assert (info.io.value, info.input_name, info.source, info.metadata["recommended_halo"]) == (
        "float32-nchw",
        "x",
        "metadata",
        16,
    )


# --------------------------------------------------------------------------- GPU query


def _fake_cudart(err_name: str, name: bytes = b"NVIDIA H100 80GB HBM3\0\0", major: int = 9, minor: int = 0):
    class Err:
        def __init__(self, n):
            self.name = n

        def __eq__(self, other):
            return self.name == other.name

    success = Err("cudaSuccess")
    prop = types.SimpleNamespace(name=name, major=major, minor=minor)
    return types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=success),
        cudaGetDeviceProperties=lambda device: (Err(err_name), prop),
    )


def _install_cudart(monkeypatch, cudart) -> None:
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)


def test_gpu_from_cuda_python(monkeypatch) -> None:
    _install_cudart(monkeypatch, _fake_cudart("cudaSuccess"))
    assert query_gpu(0) == H100


def test_gpu_falls_back_to_nvidia_smi(monkeypatch) -> None:
    _install_cudart(monkeypatch, _fake_cudart("cudaErrorInsufficientDriver"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    seen = {}

    def run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="NVIDIA H100 80GB HBM3, 9.0\n", stderr="")

    monkeypatch.setattr("runtime.trt_sidecar.shutil.which", lambda exe: "/usr/bin/nvidia-smi")
    monkeypatch.setattr("runtime.trt_sidecar.subprocess.run", run)
    assert query_gpu(1) == H100
    assert seen["cmd"][-2:] == ["-i", "1"] and "--query-gpu=name,compute_cap" in seen["cmd"]
    assert query_gpu(0) == H100 and seen["cmd"][-1] == "3"  # CUDA device 0 is nvidia-smi's GPU 3


def test_gpu_query_failure_gives_both_reasons(monkeypatch) -> None:
    _install_cudart(monkeypatch, _fake_cudart("cudaErrorInsufficientDriver"))
    monkeypatch.setattr("runtime.trt_sidecar.shutil.which", lambda exe: None)
    with pytest.raises(GpuQueryError) as info:
        query_gpu(0)
    assert "cudaErrorInsufficientDriver" in str(info.value) and "nvidia-smi is not on PATH" in str(info.value)


# --------------------------------------------------------------------------- ONNX inspection


@pytest.mark.parametrize(
    "io, precision, evidence",
    [
        ("float32-nchw", "fp32", "no float16 tensors"),
        ("float32-nchw", "fp16", "initializer 'w' is float16"),
        ("uint8-nhwc", "fp16", "initializer 'w' is float16"),
        ("uint8-nhwc", "int8", "QuantizeLinear node 'q_in'"),
    ],
)
def test_inspect_onnx(tmp_path: Path, io: str, precision: str, evidence: str) -> None:
    path = write_onnx(tmp_path / "m.onnx", io=io, precision=precision)
    facts = to_trt.inspect_onnx(path)
    assert facts.precision is Precision(precision) and evidence in facts.precision_evidence
    assert (facts.info.io.value, facts.info.scale, facts.info.input_name, facts.info.recommended_halo) == (
        io,
        4,
        "lr",
        12,
    )
    assert facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert facts.metadata["config_name"] == "tiny" and facts.value_range == (0, 255)


def test_inspect_onnx_without_metadata_needs_a_scale(tmp_path: Path) -> None:
    path = write_onnx(tmp_path / "m.onnx", metadata=False)
    with pytest.raises(to_trt.BuildInputError, match="scale is unknown; pass scale="):
        to_trt.inspect_onnx(path)
    facts = to_trt.inspect_onnx(path, scale=4)
    assert facts.info.source == "inferred" and facts.metadata is None


def test_inspect_onnx_bad_files(tmp_path: Path) -> None:
    with pytest.raises(to_trt.BuildInputError, match="no such ONNX file"):
        to_trt.inspect_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not protobuf")
    with pytest.raises(to_trt.BuildInputError, match="not a readable ONNX model"):
        to_trt.inspect_onnx(tmp_path / "junk.onnx")


@pytest.mark.parametrize(
    "graph, flag, text",
    [
        ("fp32", "fp16", "--precision fp16 but the graph is fp32"),
        ("fp16", "fp32", "--precision fp32 but the graph is fp16 (initializer 'w' is float16)"),
        ("fp32", "int8", "explicit QuantizeLinear/DequantizeLinear"),
        ("int8", "fp16", "--precision fp16 but the graph is int8"),
    ],
)
def test_precision_flag_is_checked_against_the_graph(tmp_path: Path, graph: str, flag: str, text: str) -> None:
    facts = to_trt.inspect_onnx(write_onnx(tmp_path / "m.onnx", precision=graph))
    assert to_trt.check_precision(graph, facts) is Precision(graph)
    with pytest.raises(to_trt.BuildInputError) as info:
        to_trt.check_precision(flag, facts)
    assert text in str(info.value) and "strongly typed" in str(info.value)


def test_profile_must_fit_static_dimensions() -> None:
    shapes = BuildOptions(precision="fp32", tile=64, halo=0, batch=2, min_window=16).profile_shapes("float32-nchw")
    to_trt.check_profile_fits("lr", [-1, 3, -1, -1], shapes, source="m.onnx")
    with pytest.raises(to_trt.BuildInputError, match=r"static size 48 on axis 2 .* asks for 16\.\.64"):
        to_trt.check_profile_fits("lr", [-1, 3, 48, -1], shapes, source="m.onnx")
    with pytest.raises(to_trt.BuildInputError, match="rank 3"):
        to_trt.check_profile_fits("lr", [-1, 3, -1], shapes, source="m.onnx")


@pytest.mark.parametrize("text, value", [("4GiB", 4 << 30), ("512MiB", 512 << 20), ("2G", 2 * 10**9), ("1024", 1024)])
def test_parse_size(text: str, value: int) -> None:
    assert to_trt.parse_size(text) == value


def test_parse_size_rejects_junk() -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="expected a size"):
        to_trt.parse_size("4 parsecs")


# --------------------------------------------------------------------------- without TensorRT


def test_to_trt_without_tensorrt_says_how_to_install(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    path = write_onnx(tmp_path / "m.onnx", precision="fp16")
    code = to_trt.main([str(path), "-o", str(tmp_path / "m.plan"), "--no-cache"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12" in err and "tensorrt-cu13" in err
    assert not (tmp_path / "m.plan").exists()


def test_to_trt_cli_argument_errors(tmp_path: Path, capsys) -> None:
    path = write_onnx(tmp_path / "m.onnx")
    assert to_trt.main([str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "m.plan")]) == 2
    assert "no such ONNX file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        to_trt.main([str(path), "-o", str(tmp_path / "m.plan"), "--batch", "2", "--min-batch", "3"])
    assert info.value.code == 2 and "--min-batch 3 must not exceed --batch 2" in capsys.readouterr().err
    assert to_trt.main([str(path), "-o", str(tmp_path / "m.plan"), "--precision", "fp16"]) == 2
    assert "--precision fp16 but the graph is fp32" in capsys.readouterr().err


def test_backend_without_tensorrt_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    from runtime.backends.tensorrt_backend import TensorRTStageFactory

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine")
    sidecar_path(plan).write_text(json.dumps({**SIDECAR, "engine_sha256": hashlib.sha256(b"engine").hexdigest()}))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="tensorrt-cu12"):
        TensorRTStageFactory(plan)
    with pytest.raises(ModelError, match="no such TensorRT engine file"):
        TensorRTStageFactory(tmp_path / "other.plan")


def test_tf32_allowed_reads_the_build_option_and_defaults_to_tensorrts_on() -> None:
    from runtime.trt_sidecar import tf32_allowed

    assert tf32_allowed({"build_options": {"allow_tf32": False}}) is False
    assert tf32_allowed({"build_options": {"allow_tf32": True}}) is True
    # built before the option existed: TensorRT's default, TF32 on
    assert tf32_allowed({"build_options": {"precision": "fp32"}}) is True
    assert tf32_allowed({}) is True

"""calibration/: data collection, ModelOpt INT8 Q/DQ on CPU end to end, and the gate's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _runtime_models import conv_model, models_dir  # noqa: F401 - fixtures
from calibration.cli import main
from calibration.collect import CalibrationError, collect, load_npz
from runtime.model_info import ModelIO


def _photos(dst: Path, src: Path, size: int, n: int = 2) -> Path:
    """Small crops of real photos, so the test runs in seconds."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("*.png"))[:n]:
        Image.open(p).convert("RGB").crop((0, 0, size, size)).save(dst / p.name)
    return dst


def test_onnxruntime_is_cpu_and_recent() -> None:
    """ModelOpt's [onnx] extra would bring onnxruntime-gpu 1.24 (wrong fp16 QuantizeLinear on CPU)."""
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime as ort

    major, minor = (int(x) for x in ort.__version__.split(".")[:2])
    assert (major, minor) >= (1, 30), ort.__version__
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    with pytest.raises(PackageNotFoundError):
        version("onnxruntime-gpu")


def test_collect_layouts_seed_and_every_image(tmp_path: Path, photos_dir: Path) -> None:
    imgs = _photos(tmp_path / "hr", photos_dir / "train", 128, n=3)
    a = collect(imgs, samples=7, tile=16, halo=4, seed=3, flips=True)
    b = collect(imgs, samples=7, tile=16, halo=4, seed=3, flips=True)
    assert a.array.shape == (7, 3, 24, 24) and a.array.dtype == np.float32
    np.testing.assert_array_equal(a.array, b.array)
    assert sorted(a.meta["files"].values()) == [2, 2, 3]
    u = collect(imgs, samples=3, tile=16, halo=4, seed=3, io=ModelIO.UINT8_NHWC)
    assert u.array.shape == (3, 24, 24, 3) and u.array.dtype == np.uint8
    lr = collect(imgs, samples=3, tile=100, halo=8, lr_given=True)
    assert lr.array.shape == (3, 3, 116, 116)


def test_collect_errors(tmp_path: Path, photos_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no image files"):
        collect(tmp_path / "empty")
    imgs = _photos(tmp_path / "hr", photos_dir / "train", 64, n=1)
    with pytest.raises(CalibrationError, match=r"too small.*expected at least 576x576"):
        collect(imgs, samples=1)
    with pytest.raises(CalibrationError, match="--samples 0"):
        collect(imgs, samples=0, tile=8, halo=0)


def test_calibrate_end_to_end_and_gate_floor(
    tmp_path: Path, photos_dir: Path, conv_model: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    train = _photos(tmp_path / "train", photos_dir / "train", 128, n=2)
    test = _photos(tmp_path / "test", photos_dir / "test", 96, n=2)
    data, q = tmp_path / "calib.npz", tmp_path / "conv.int8.onnx"
    assert main(["collect", "--images", str(train), "-o", str(data), "--samples", "4",
                 "--tile", "16", "--halo", "4", "--model", str(conv_model)]) == 0
    arrays, meta = load_npz(data)
    assert arrays["lr"].shape == (4, 3, 24, 24) and meta["window"] == 24
    rc = main(["quantize", str(conv_model), "--data", str(data), "-o", str(q),
               "--test-images", str(test), "--min-psnr", "0", "--max-loss", "100"])
    assert rc == 0, capsys.readouterr()
    import onnx

    m = onnx.load(str(q))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    doc = json.loads({p.key: p.value for p in m.metadata_props}["fourpp_eusr"])
    assert doc["precision"] == "int8" and doc["calibration"]["samples"] == 4
    report = json.loads(q.with_suffix(".gate.json").read_text())
    assert report["passed"] and report["nan_count"] == 0 and len(report["rows"]) == 2
    reached = report["min_psnr_vs_fp32"]
    # A floor above what is reached must fail with exit status 1.
    out = tmp_path / "g.json"
    assert main(["gate", str(conv_model), str(q), "--test-images", str(test),
                 "--min-psnr", str(reached + 1), "--max-loss", "100", "--json", str(out)]) == 1
    assert not json.loads(out.read_text())["passed"]
    assert "FAIL" in capsys.readouterr().out
    # Sensitivity: one graph per quantized conv, only its own Q/DQ pairs left.
    from calibration.sensitivity import only_layer, qdq_groups, sensitivity

    groups = qdq_groups(m)
    assert groups and all(1 <= len(v) <= 2 for v in groups.values())
    for layer, dqs in groups.items():  # the input Q/DQ may be shared (conv + skip Resize)
        one = only_layer(m, layer)
        assert sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in one.graph.node) == 2 * len(dqs)
        assert qdq_groups(one) == {layer: dqs}
    rows = sensitivity(conv_model, q, test)
    assert {r["layer"] for r in rows} == set(groups)
    assert all(r["psnr_vs_fp32"] >= reached - 0.5 for r in rows)


def test_quantize_rejects_bad_method_and_layout(
    tmp_path: Path, photos_dir: Path, conv_model: Path  # noqa: F811
) -> None:
    train = _photos(tmp_path / "train", photos_dir / "train", 64, n=1)
    data = tmp_path / "u8.npz"
    assert main(["collect", "--images", str(train), "-o", str(data), "--samples", "1",
                 "--tile", "8", "--halo", "0", "--io", "uint8-nhwc"]) == 0
    assert main(["quantize", str(conv_model), "--data", str(data), "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["quantize", str(conv_model), "--data", str(data), "-o", str(tmp_path / "x.onnx"),
                 "--method", "percentile"]) == 2


def test_float_residuals_rewires_only_adds_reading_a_qdq_pair() -> None:
    from onnx import TensorProto, helper

    from calibration.quantize import float_residuals

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq"),
        helper.make_node("Relu", ["xdq"], ["r"], name="relu"),
        helper.make_node("Add", ["xdq", "r"], ["y"], name="add"),
    ]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])],
    )
    m = helper.make_model(g)
    assert float_residuals(m) == 1
    by = {n.name: list(n.input) for n in m.graph.node}
    assert by["add"] == ["x", "r"] and by["relu"] == ["xdq"]

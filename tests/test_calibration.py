"""calibration/: data collection, ModelOpt INT8 Q/DQ on CPU end to end, and the gate's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration.cli import main
from calibration.collect import CalibrationError, collect, load_npz
from runtime.model_info import ModelIO


def _collect(images: Path, out: Path, *flags: str) -> int:
    """``python -m calibration collect --images IMAGES -o OUT FLAGS...``'s exit status."""
    return main(["collect", "--images", str(images), "-o", str(out), *flags])


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


def test_calibration_error_is_a_project_error_and_still_a_value_error() -> None:
    from runtime.errors import UpscaleError

    assert issubclass(CalibrationError, UpscaleError) and issubclass(CalibrationError, ValueError)


def test_collect_errors(tmp_path: Path, photos_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"--images .*empty: holds no image files"):
        collect(tmp_path / "empty")
    with pytest.raises(CalibrationError, match=r"--images .*nowhere: not a folder"):
        collect(tmp_path / "nowhere")
    imgs = _photos(tmp_path / "hr", photos_dir / "train", 64, n=1)
    with pytest.raises(CalibrationError, match=r"too small.*expected at least 576x576"):
        collect(imgs, samples=1)
    with pytest.raises(CalibrationError, match="--samples 0"):
        collect(imgs, samples=0, tile=8, halo=0)


@pytest.mark.slow
def test_calibrate_end_to_end_and_gate_floor(
    tmp_path: Path, photos_dir: Path, conv_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _photos(tmp_path / "train", photos_dir / "train", 128, n=2)
    test = _photos(tmp_path / "test", photos_dir / "test", 96, n=2)
    data, q = tmp_path / "calib.npz", tmp_path / "conv.int8.onnx"
    assert _collect(train, data, "--samples", "4", "--tile", "16", "--halo", "4", "--model", str(conv_model)) == 0
    arrays, meta = load_npz(data)
    assert arrays["lr"].shape == (4, 3, 24, 24) and meta["window"] == 24
    rc = main(
        [
            "quantize",
            str(conv_model),
            "--data",
            str(data),
            "-o",
            str(q),
            "--test-images",
            str(test),
            "--min-psnr",
            "0",
            "--max-loss",
            "100",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr()
    import onnx

    m = onnx.load(str(q))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    doc = json.loads({p.key: p.value for p in m.metadata_props}["fourpp_eusr"])
    cal = doc["calibration"]
    assert doc["precision"] == "int8" and cal["samples"] == 4 and cal["method"] == "entropy"
    assert (
        cal["auto_keep"]["target_psnr_db"] == 48.0
        and cal["auto_keep"]["psnr_db"] >= cal["auto_keep"]["psnr_all_int8_db"]
    )
    report = json.loads(q.with_suffix(".gate.json").read_text())
    assert report["passed"] and report["nan_count"] == 0 and len(report["rows"]) == 2
    reached = report["min_psnr_vs_fp32"]
    # A floor above what is reached must fail with exit status 1.
    out = tmp_path / "g.json"
    assert (
        main(
            [
                "gate",
                str(conv_model),
                str(q),
                "--test-images",
                str(test),
                "--min-psnr",
                str(reached + 1),
                "--max-loss",
                "100",
                "--json",
                str(out),
            ]
        )
        == 1
    )
    assert not json.loads(out.read_text())["passed"]
    assert "FAIL" in capsys.readouterr().out
    # The sensitivity command scores every quantized layer on the calibration windows.
    sens = tmp_path / "sens.json"
    assert main(["sensitivity", str(conv_model), "--data", str(data), "--no-progress", "--json", str(sens)]) == 0
    rows = json.loads(sens.read_text())
    assert len(rows) >= 3 and all(r["psnr_vs_fp32"] > 30 for r in rows)
    assert [r["psnr_vs_fp32"] for r in rows] == sorted(r["psnr_vs_fp32"] for r in rows)
    convs = [r for r in rows if r["layer"].endswith("/Conv")]
    assert convs and all(r["module"].startswith("body.") for r in convs), rows  # named after the torch module


def _all_int8(tmp_path: Path, photos_dir: Path, conv_model: Path) -> tuple[Path, Path]:
    train = _photos(tmp_path / "train", photos_dir / "train", 128, n=2)
    data, q = tmp_path / "calib.npz", tmp_path / "all.int8.onnx"
    assert _collect(train, data, "--samples", "4", "--tile", "16", "--halo", "4", "--model", str(conv_model)) == 0
    assert main(["quantize", str(conv_model), "--data", str(data), "-o", str(q), "--no-auto-keep", "--no-gate"]) == 0
    return data, q


def test_bypass_and_only_layer_are_exact(tmp_path: Path, photos_dir: Path, conv_model: Path) -> None:
    """Bypassing every layer gives the float32 model back, bit for bit; one layer keeps only its pairs."""
    import onnx
    import onnxruntime as ort

    from calibration.sensitivity import bypass, only_layer, qdq_groups

    data, q = _all_int8(tmp_path, photos_dir, conv_model)
    m = onnx.load(str(q))
    groups = qdq_groups(m)
    assert len(groups) >= 3 and all(1 <= len(v) <= 2 for v in groups.values())
    x = load_npz(data)[0]["lr"]

    def run(model) -> np.ndarray:
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[
            0
        ]

    ref = ort.InferenceSession(str(conv_model), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
    none = bypass(m, list(groups))
    assert not {n.op_type for n in none.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    assert not any(t.name.endswith("_scale") for t in none.graph.initializer), "the bypassed pairs' scales are dropped"
    np.testing.assert_array_equal(run(none), ref)
    assert np.abs(run(m) - ref).max() > 0, "the INT8 model must differ from float32"
    for layer, dqs in groups.items():
        one = only_layer(m, layer)
        assert sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in one.graph.node) == 2 * len(dqs)
        assert qdq_groups(one) == {layer: dqs}
    with pytest.raises(KeyError, match="not quantized"):
        bypass(m, ["no_such_node"])


def test_choose_kept_layers_stops_at_target_or_cap() -> None:
    """Greedy in sensitivity order, re-scored as a whole after each layer."""
    from calibration import sensitivity as sens

    groups = {"a": ["dqa"], "b": ["dqb"], "c": ["dqc"]}
    cost = {"a": 1.0, "b": 4.0, "c": 2.0}  # dB each layer costs alone

    class Fake:  # stands in for a model: the set of layers still quantized
        def __init__(self, q: set[str]) -> None:
            self.q = q

    def score(model: Fake) -> float:
        return 50.0 - sum(cost[x] for x in model.q)

    orig = (sens.qdq_groups, sens.bypass)
    sens.qdq_groups = lambda m: {k: v for k, v in groups.items() if k in m.q}
    sens.bypass = lambda m, layers: Fake(m.q - set(layers))
    try:
        full = Fake(set(groups))
        sel = sens.choose_kept_layers(full, score, target_psnr=48.0, max_layers=3)
        assert [r["layer"] for r in sel.ranking] == ["b", "c", "a"]
        assert sel.layers == ["b", "c"] and sel.reached and sel.psnr == 49.0 and sel.psnr_all_int8 == 43.0
        capped = sens.choose_kept_layers(full, score, target_psnr=60.0, max_layers=1)
        assert capped.layers == ["b"] and not capped.reached and capped.psnr == 47.0
        easy = sens.choose_kept_layers(full, score, target_psnr=40.0, max_layers=3)
        assert easy.layers == [] and easy.reached and not easy.ranking, "no ranking needed when INT8 already passes"
    finally:
        sens.qdq_groups, sens.bypass = orig


def test_auto_keep_cap_and_opt_out(tmp_path: Path, photos_dir: Path, conv_model: Path) -> None:
    """An unreachable target keeps --max-keep layers and says it was not reached."""
    import onnx

    from calibration.quantize import quantize_model
    from calibration.sensitivity import qdq_groups

    data, q_all = _all_int8(tmp_path, photos_dir, conv_model)
    n_all = len(qdq_groups(onnx.load(str(q_all))))
    capped = tmp_path / "capped.onnx"
    prov = quantize_model(conv_model, data, capped, auto_keep_db=500.0, max_keep=2)
    auto = prov["auto_keep"]
    assert len(auto["layers"]) == 2 and not auto["reached"] and len(auto["trace"]) == 2
    assert len(auto["modules"]) == 2 and all(isinstance(x, str) and x for x in auto["modules"])
    assert len(qdq_groups(onnx.load(str(capped)))) == n_all - 2
    assert auto["trace"][-1]["psnr_vs_fp32"] >= auto["psnr_all_int8_db"] - 0.5
    doc = json.loads({p.key: p.value for p in onnx.load(str(q_all)).metadata_props}["fourpp_eusr"])
    assert doc["calibration"]["auto_keep"] is None


def test_quantize_rejects_bad_method_and_layout(tmp_path: Path, photos_dir: Path, conv_model: Path) -> None:
    train = _photos(tmp_path / "train", photos_dir / "train", 64, n=1)
    data = tmp_path / "u8.npz"
    assert _collect(train, data, "--samples", "1", "--tile", "8", "--halo", "0", "--io", "uint8-nhwc") == 0
    assert main(["quantize", str(conv_model), "--data", str(data), "-o", str(tmp_path / "x.onnx")]) == 2
    assert (
        main(
            ["quantize", str(conv_model), "--data", str(data), "-o", str(tmp_path / "x.onnx"), "--method", "percentile"]
        )
        == 2
    )


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
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])],
    )
    m = helper.make_model(g)
    assert float_residuals(m) == 1
    by = {n.name: list(n.input) for n in m.graph.node}
    assert by["add"] == ["x", "r"] and by["relu"] == ["xdq"]


def _optimized_ops(model: Path, tmp: Path) -> set[str]:
    """Op types of the graph ONNX Runtime's CPU actually runs (after its QDQ fusions)."""
    import onnx
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.optimized_model_filepath = str(tmp / (model.stem + ".opt.onnx"))
    ort.InferenceSession(str(model), o, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(o.optimized_model_filepath).graph.node}


@pytest.mark.slow
def test_placements_what_onnxruntime_fuses(tmp_path: Path, photos_dir: Path, conv_model: Path) -> None:
    """ORT's placement becomes integer QLinearConv; ModelOpt's (TensorRT's) stays float Conv + DequantizeLinear."""
    from calibration.ort_placement import quantize_for_onnxruntime

    data, q_trt = _all_int8(tmp_path, photos_dir, conv_model)
    q_ort = tmp_path / "ort.int8.onnx"
    prov = quantize_for_onnxruntime(conv_model, data, q_ort)
    assert prov["placement"] == "onnxruntime" and prov["samples"] == 4
    ort_ops, trt_ops = _optimized_ops(q_ort, tmp_path), _optimized_ops(q_trt, tmp_path)
    assert "QLinearConv" in ort_ops and "Conv" not in ort_ops
    assert "QLinearConv" not in trt_ops and "DequantizeLinear" in trt_ops
    from calibration.gate import run_gate

    test = _photos(tmp_path / "test", photos_dir / "test", 96, n=1)
    res = run_gate(conv_model, q_ort, test, min_psnr=25.0, max_loss=100)
    assert res.passed and res.nan_count == 0, res.failures


def test_float_residuals_can_spare_conv_outputs() -> None:
    """ORT's placement keeps the Q/DQ after a conv (so it fuses) and frees only the skip input."""
    from onnx import TensorProto, helper

    from calibration.quantize import float_residuals

    def qdq(x: str) -> list:
        return [
            helper.make_node("QuantizeLinear", [x, "s", "z"], [x + "q"], name="q_" + x),
            helper.make_node("DequantizeLinear", [x + "q", "s", "z"], [x + "dq"], name="dq_" + x),
        ]

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        *qdq("c"),
        *qdq("x"),
        helper.make_node("Add", ["xdq", "cdq"], ["y"], name="add"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])],
        [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("z", TensorProto.INT8, [], [0]),
            helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0]),
        ],
    )
    m = helper.make_model(g)
    assert float_residuals(m, except_from=("Conv",)) == 1
    assert list(m.graph.node[-1].input) == ["x", "cdq"]


def test_keep_fp_takes_node_or_module_names(conv_model: Path) -> None:
    import onnx

    from calibration.collect import CalibrationError
    from calibration.quantize import _resolve_keep

    src = onnx.load(str(conv_model))
    assert _resolve_keep(["/body/body.4/Conv$"], src, conv_model) == ["/body/body.4/Conv$"]
    assert _resolve_keep(["body.0", r"body\.[24]"], src, conv_model) == [
        r"/body/body\.0/Conv$",
        r"/body/body\.2/Conv$",
        r"/body/body\.4/Conv$",
    ]
    with pytest.raises(CalibrationError, match=r"--keep-fp 'body\.9': matches no node or module"):
        _resolve_keep(["body.9"], src, conv_model)
    with pytest.raises(CalibrationError, match="not a regular expression"):
        _resolve_keep(["(("], src, conv_model)


def test_gate_names_the_test_images_flag(tmp_path: Path, conv_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["gate", str(conv_model), str(conv_model), "--test-images", str(tmp_path / "nowhere")])
    assert rc == 2
    assert f"--test-images {tmp_path / 'nowhere'}: not a folder" in capsys.readouterr().err
    assert main(["gate", str(conv_model), str(tmp_path / "q.onnx")]) == 2
    assert f"candidate model {tmp_path / 'q.onnx'}: file not found" in capsys.readouterr().err
    assert (
        main(["quantize", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "c.npz"), "-o", str(tmp_path / "o.onnx")])
        == 2
    )
    assert "c.npz: file not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- bundle


def test_bundle_refuses_calibrating_on_the_gate_photos(
    tmp_path: Path, photos_dir: Path, conv_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test = _photos(tmp_path / "test", photos_dir / "test", 96, n=2)
    imgs = _photos(tmp_path / "hr", photos_dir / "test", 96, n=1)  # the same bytes under the same name
    (imgs / "renamed.png").write_bytes((test / sorted(p.name for p in test.iterdir())[1]).read_bytes())
    out = tmp_path / "q.onnx"
    argv = ["bundle", "--model", str(conv_model), "-o", str(out), "--images", str(imgs), "--test-images", str(test)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "share 2 image(s)" in err and "renamed.png = " in err and not out.exists()


@pytest.mark.slow
def test_bundle_installs_only_a_model_that_passes_the_gate(
    tmp_path: Path, photos_dir: Path, conv_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    import onnx

    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    test = _photos(tmp_path / "test", photos_dir / "test", 96, n=2)
    out = tmp_path / "models" / "conv-int8.onnx"
    out.parent.mkdir()
    argv = ["bundle", "--model", str(conv_model), "-o", str(out), "--test-images", str(test), "--no-progress"]
    assert main([*argv, "--min-psnr", "0", "--max-loss", "100"]) == 0, capsys.readouterr()
    gate = out.with_suffix(".gate.json")
    report = json.loads(gate.read_text())
    bundle = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["fourpp_eusr"])["calibration"][
        "bundle"
    ]
    assert bundle["source_model_sha256"] == sha(conv_model) == report["provenance"]["source_model_sha256"]
    assert report["candidate_sha256"] == sha(out) and report["passed"] and bundle["gate"]["passed"]
    assert bundle["collect"] == {
        "images": "data/photos/train",
        "samples": 48,
        "tile": 56,
        "halo": 8,
        "seed": 0,
        "flips": True,
    }
    assert len(report["rows"]) == 2 == len(bundle["gate"]["images"])
    # A floor above what is reached: exit 1, the installed pair untouched, no temporary left behind.
    before = (sha(out), gate.read_text())
    capsys.readouterr()
    assert main([*argv, "--min-psnr", "200"]) == 1
    assert "gate failed" in capsys.readouterr().out
    assert (sha(out), gate.read_text()) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["conv-int8.gate.json", "conv-int8.onnx"]

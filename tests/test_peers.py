"""benchmarks/peers.py: the side-by-side run writes every row kind with sane values, and its parts
(the Real-ESRGAN-style tiler, the MAC count, the nominal peaks, the ratios, --skip) hold.

The end-to-end test runs ``--quick`` (64x36, one repeat, tile 32 so the fixed-tile rows really
tile) for real in a subprocess, as a user would; it measures nothing, it checks the script.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import peers
from benchmarks.flops import conv_macs, conv_macs_per_pixel, cpu_peaks
from benchmarks.naive_tiler import tile_boxes, tile_process
from benchmarks.peers_worker import INT8_KINDS, ROW_KINDS, WHOLE_OF

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_INT8 = REPO_ROOT / "runtime" / "models" / "eusr-compact-x4-int8.onnx"
RUNTIME_FP32 = ("default", "ort-whole", "ort-tiled", "ov-fp32-whole", "ov-fp32-tiled")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    pytest.importorskip("torch")
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("peers")
    res = subprocess.run(
        [
            sys.executable,
            "benchmarks/peers.py",
            "--quick",
            "--configs",
            "compact,tiny",  # tiny stands in for paper: the same random-init export path, seconds cheaper
            "--out",
            str(out),
            "--allow-dirty",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads((out / "peers.json").read_text()), out, res.stderr


@pytest.mark.slow
def test_quick_run_has_every_row_kind_with_sane_values(quick_run: tuple[dict, Path, str]) -> None:
    data, out, log = quick_run
    assert (out / "peers.md").is_file() and (out / "peers.png").stat().st_size > 0
    assert {"date", "git", "versions"} <= set(data["environment"])
    assert data["environment"]["versions"]["openvino"]
    assert "avx2" in data["machine"]["cpu_flags"] or data["machine"]["cpu_flags"] == []
    rows = {(r["config"], r["kind"]): r for r in data["rows"]}
    compact = {k: rows[("compact", k)] for k in ROW_KINDS}
    assert all(r["status"] == "ok" for r in compact.values()) or not BUNDLED_INT8.is_file()
    for kind, r in compact.items():
        if r["status"] != "ok":
            assert kind in INT8_KINDS and "calibration" in r["reason"]
            continue
        assert (r["width"], r["height"], r["threads"]) == (64, 36, 1)
        assert len(r["times_s"]) == 1 and r["median_s"] > 0
        assert r["output_mp_per_s"] == pytest.approx(r["input_mp_per_s"] * 16)
        assert r["peak_rss_mib"] > 50 and r["computed_px"] >= 64 * 36
        assert 0 < r["gflops_image"] <= r["gflops_computed"]
        assert 0 < r["fraction_of_peak"] < 1.5, "achieved rate far above the nominal peak: the MAC count is off"
        psnr = float(r["accuracy_vs_torch"]["psnr_db"])
        if kind in RUNTIME_FP32:
            assert psnr >= 80 and r["meets_floor"] is True, (kind, psnr)
        elif kind in INT8_KINDS:
            # INT8 really ran as INT8 (well below the fp32 agreement) and still passes the gate's floor
            assert 40 <= psnr < 70 and r["meets_floor"] is True, (kind, psnr)
        if kind in WHOLE_OF:  # quick mode's tile 32 cuts 64x36 into several windows
            assert r["halo_arithmetic"] > 1 and r["time_vs_whole"] > 0 and r["overhead_vs_halo"] > 0
            assert r["whole_row"] == WHOLE_OF[kind]
            if kind != "torch-tiled-naive":
                assert r["settings"]["tiles"] > 1 and r["settings"]["tile"] == 32
                # vs one window with the same mirrored border: fp32 seams of halo 8 stay near 88 dB;
                # INT8 requantization turns such differences (and other window shapes' kernels)
                # into level flips, measured 48.8 dB
                floor = 45 if kind in INT8_KINDS else 80
                assert float(r["accuracy_vs_whole"]["psnr_db"]) >= floor, (kind, r["accuracy_vs_whole"])
    assert compact["torch-whole"]["speedup_vs_torch"] == pytest.approx(1.0)
    assert compact["ort-whole"]["speedup_vs_ort_whole"] == pytest.approx(1.0)
    assert compact["torch-tiled-naive"]["settings"]["tiles"] == 4  # 64x36 in 32-pixel tiles: 2x2
    default = compact["default"]["settings"]
    assert default["backend"]["name"] in ("openvino", "onnxruntime") and default["backend"]["threads"] == 1
    assert "resolved to" in log and data["defaults"]["compact"]
    tiny_int8 = rows[("tiny", "ov-int8-whole")]
    assert tiny_int8["status"] == "unavailable" and "INT8" in tiny_int8["reason"]
    assert ("tiny", "default-int8") not in rows
    claims = [a["claim"] for a in data["acceptance"]]
    assert any("vs ONNX Runtime whole image" in c for c in claims) and any("halo arithmetic" in c for c in claims)
    assert data["acceptance"][-1]["passed"] is True  # every parity floor of the quick run
    md = (out / "peers.md").read_text()
    assert "smoke test, not a measurement" in md and "## Acceptance" in md and "| compact | 64x36 |" in md


@pytest.mark.slow
def test_blocks_order_measures_the_same_fields(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    kinds = "ort-whole,ort-tiled,torch-whole,torch-tiled-naive"
    argv = ["--configs", "compact", "--sizes", "48x32", "--threads", "1", "--rows", kinds, "--order", "blocks"]
    argv += ["--warmup", "0", "--repeats", "2", "--tile", "16", "--naive-tile", "16", "--no-plot"]
    assert peers.main([*argv, "--out", str(tmp_path), "--allow-dirty", "--image", "noise"]) == 0
    data = json.loads((tmp_path / "peers.json").read_text())
    assert data["settings"]["order"] == "blocks" and data["settings"]["image"].startswith("uniform noise")
    rows = {r["kind"]: r for r in data["rows"]}
    assert list(rows) == kinds.split(",")
    assert all(r["status"] == "ok" and len(r["times_s"]) == 2 for r in rows.values())
    assert float(rows["ort-whole"]["accuracy_vs_torch"]["psnr_db"]) >= 80
    assert rows["ort-tiled"]["settings"]["tiles"] > 1 and rows["ort-tiled"]["accuracy_vs_whole"] is not None
    assert rows["torch-tiled-naive"]["settings"]["tiles"] == 6 and rows["torch-tiled-naive"]["time_vs_whole"] > 0


def test_help_runs_and_has_allow_dirty() -> None:
    res = subprocess.run(
        [sys.executable, "benchmarks/peers.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "--allow-dirty" in res.stdout and "--quick" in res.stdout


def test_bad_arguments_are_refused_with_the_flag_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        peers.main(["--skip", "paper:960x540"])
    assert "CONFIG:WIDTHxHEIGHT:THREADS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        peers.main(["--rows", "ort-whole,bogus"])
    assert "--rows" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        peers.main(["--image", "/nonexistent.png", "--allow-dirty"])
    assert "--image /nonexistent.png" in capsys.readouterr().err


# --------------------------------------------------------------------------- parts


def test_skip_entries_match_by_config_size_threads_and_row() -> None:
    skip = peers.parse_skip("paper:960x540:*,compact:*:1,compact:960X540:2:torch-tiled-naive")
    assert peers.skipped(skip, "paper", (960, 540), 2)
    assert not peers.skipped(skip, "paper", (480, 270), 2)
    assert peers.skipped(skip, "compact", (120, 68), 1)
    assert not peers.skipped(skip, "compact", (960, 540), 2)
    assert peers.skipped_rows(skip, "compact", (960, 540), 2) == ["torch-tiled-naive"]
    assert peers.skipped_rows(skip, "compact", (480, 270), 2) == []
    default = peers.parse_skip(peers.DEFAULT_SKIP)
    assert peers.skipped(default, "paper", (960, 540), 2) and not peers.skipped(default, "compact", (480, 270), 2)
    # the acceptance point's rows are never skipped by default
    for config in ("compact", "paper"):
        kept = set(ROW_KINDS) - set(peers.skipped_rows(default, config, (480, 270), 2))
        assert {"default", "ort-whole", "torch-whole"} <= kept


def test_naive_tiler_matches_the_whole_image_when_pad_covers_the_receptive_field() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Upsample(scale_factor=4)
    ).eval()
    img = torch.rand(1, 3, 45, 70) * 255
    with torch.inference_mode():
        whole = model(img)
        tiled = tile_process(model, img, 4, tile=16, pad=2)  # receptive field 2 = pad: no seams
        seams = tile_process(model, img, 4, tile=16, pad=0)
    np.testing.assert_allclose(tiled.numpy(), whole.numpy(), rtol=0, atol=1e-3)
    assert float((seams - whole).abs().max()) > 1.0, "pad 0 must show seams, or the comparison tests nothing"
    boxes = tile_boxes(45, 70, 16, 2)
    assert len(boxes) == 3 * 5
    assert boxes[0] == (0, 18, 0, 18, 0, 0) and boxes[-1] == (30, 45, 62, 70, 2, 2)


def _conv_graph(tmp: Path, *, qdq: bool = False, pad: int = 1) -> Path:
    """x(1,3,H,W) -> Conv 3->8 k3 -> Conv 8->8 k3 groups 4; weights as initializers or through Q/DQ."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 2, 3, 3)).astype(np.float32), "w2")
    nodes, inits = [], [w1, w2]
    names = ["w1", "w2"]
    if qdq:
        inits += [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        for w in ("w1", "w2"):
            nodes += [
                helper.make_node("QuantizeLinear", [w, "s", "z"], [w + "_q"]),
                helper.make_node("DequantizeLinear", [w + "_q", "s", "z"], [w + "_dq"]),
            ]
        names = ["w1_dq", "w2_dq"]
    nodes += [
        helper.make_node("Conv", ["x", names[0]], ["y1"], pads=[pad] * 4),
        helper.make_node("Conv", ["y1", names[1]], ["y"], pads=[1] * 4, group=4),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp / f"conv{'-qdq' if qdq else ''}-{pad}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("qdq", [False, True])
def test_conv_macs_follow_the_formula_with_groups(tmp_path: Path, qdq: bool) -> None:
    path = _conv_graph(tmp_path, qdq=qdq)
    (count,) = conv_macs(path, [(10, 12)])
    per_pixel = 8 * 3 * 9 + 8 * (8 // 4) * 9  # C_out * C_in/groups * kh * kw, per output pixel of each Conv
    assert (count.macs, count.convs) == (10 * 12 * per_pixel, 2)
    assert conv_macs_per_pixel(path)["macs_per_input_pixel"] == per_pixel


def test_conv_macs_refuse_to_extrapolate_a_graph_not_proportional_to_the_area(tmp_path: Path) -> None:
    from benchmarks.common import BenchmarkError

    with pytest.raises(BenchmarkError, match="not proportional"):
        conv_macs_per_pixel(_conv_graph(tmp_path, pad=0))  # valid convolution: (H-2)(W-2) outputs


def test_bundled_models_count_the_same_macs_in_fp32_and_int8() -> None:
    fp32 = REPO_ROOT / "runtime" / "models" / "eusr-compact-x4.onnx"
    if not BUNDLED_INT8.is_file():
        pytest.skip("the bundled INT8 model is not in this checkout")
    a, b = conv_macs_per_pixel(fp32), conv_macs_per_pixel(BUNDLED_INT8)
    assert a["macs_per_input_pixel"] == b["macs_per_input_pixel"] > 0 and a["convs"] == b["convs"]


def test_nominal_peaks_from_flags_and_clock() -> None:
    spr = cpu_peaks(["avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"], mhz=2000.0)
    assert spr.fp32_gflops(2) == pytest.approx(2 * 2.0 * 2 * 16 * 2)  # cores × GHz × units × lanes × 2
    assert spr.int8_gops(2) == pytest.approx(2 * 2.0 * 2 * 64 * 2)
    assert spr.amx_gops(1) == pytest.approx(2.0 * 2048)
    zen3 = cpu_peaks(["avx", "avx2", "fma"], mhz=3000.0)
    assert zen3.fp32_gflops(1) == pytest.approx(3.0 * 2 * 8 * 2) and zen3.int8_gops(1) is None
    assert any("nominal" in a for a in spr.assumptions)
    assert cpu_peaks([], mhz=1000.0).fp32_gflops(1) == pytest.approx(1.0 * 4 * 2)  # SSE: mul + add, no FMA


def _row(kind: str, median: float, *, config: str = "compact", size: tuple[int, int] = (480, 270), **kw) -> dict:
    w, h = size
    settings = {"backend": {"name": "openvino"}, "tiles": 8, "window": [144, 144], "tile": 128, "halo": 8}
    return {
        "config": config,
        "threads": 2,
        "width": w,
        "height": h,
        "kind": kind,
        "status": "ok",
        "precision": "int8" if "int8" in kind else "fp32",
        "median_s": median,
        "computed_px": kw.pop("computed_px", w * h),
        "settings": settings,
        "accuracy_vs_torch": {"psnr_db": kw.pop("psnr", 100.0)},
        **kw,
    }


def test_derived_ratios_and_acceptance_divide_the_right_way() -> None:
    w, h = 480, 270
    rows = [
        _row("default", 1.0, computed_px=int(1.2 * w * h)),
        _row("default-int8", 0.5, psnr=48.0),
        _row("ort-whole", 1.5),
        _row("ov-fp32-whole", 0.8),
        _row("torch-whole", 3.0, psnr=math.inf),
        _row("default", 2.0, config="paper"),
        _row("torch-whole", 2.5, config="paper"),
    ]
    peaks = cpu_peaks(["avx512f", "avx512_vnni"], mhz=2000.0)
    peers.derive(rows, {"compact": {"fp32": 1000.0, "int8": 1000.0}, "paper": {"fp32": 5000.0}}, peaks)
    default = rows[0]
    assert default["speedup_vs_ort_whole"] == pytest.approx(1.5) and default["speedup_vs_torch"] == pytest.approx(3.0)
    assert default["whole_row"] == "ov-fp32-whole" and default["time_vs_whole"] == pytest.approx(1.25)
    assert default["halo_arithmetic"] == pytest.approx(1.2, rel=1e-4)
    assert default["overhead_vs_halo"] == pytest.approx(1.25 / 1.2, rel=1e-4)
    assert default["gflops_image"] == pytest.approx(2 * 1000.0 * w * h / 1.0 / 1e9)
    assert rows[1]["peak_kind"] == "VNNI INT8" and rows[1]["peak_gflops"] == pytest.approx(1024.0)
    assert rows[1]["meets_floor"] is True and rows[0]["meets_floor"] is True
    gate = {"passed": True, "floors": {"min_psnr_vs_fp32": 40.0}, "path": "g.json"}
    result = {a["claim"]: a for a in peers.acceptance(rows, gate)}
    assert result["default CPU path (fp32) vs ONNX Runtime whole image fp32"]["value"] == pytest.approx(1.5)
    assert result["default CPU path (fp32) vs PyTorch eager"]["passed"] is True
    assert result["INT8 path vs ONNX Runtime whole image fp32"]["value"] == pytest.approx(3.0)
    assert result["INT8 path passes the gate"]["passed"] is True
    paper = result["paper configuration: default path vs PyTorch eager"]
    assert paper["value"] == pytest.approx(1.25) and paper["passed"] is False
    halo = result["tiled cost vs halo arithmetic at the default policy, 480x270"]
    assert halo["value"] == pytest.approx(1.25 / 1.2, rel=1e-4) and halo["passed"] is True
    assert result["tiled cost vs halo arithmetic at the default policy, 960x540"]["passed"] is None
    rows[1]["accuracy_vs_torch"]["psnr_db"] = 35.0  # INT8 below the gate's floor
    peers.derive(rows, {"compact": {"fp32": 1000.0, "int8": 1000.0}, "paper": {"fp32": 5000.0}}, peaks)
    result = {a["claim"]: a for a in peers.acceptance(rows, gate)}
    assert result["INT8 path passes the gate"]["passed"] is False
    assert peers.acceptance(rows, gate)[-1]["passed"] is False
    # a row whose tile plan could not be read: no halo arithmetic, and the tables still render
    rows[0]["computed_px"] = None
    peers.derive(rows, {"compact": {"fp32": 1000.0, "int8": 1000.0}, "paper": {"fp32": 5000.0}}, peaks)
    assert rows[0]["halo_arithmetic"] is None and rows[0]["overhead_vs_halo"] is None
    assert rows[0]["gflops_computed"] is None and rows[0]["gflops_image"] > 0
    for r in rows:
        r.update(p90_s=r["median_s"], input_mp_per_s=1.0, output_mp_per_s=16.0, peak_rss_mib=100.0)
    assert len(peers.table_rows(rows)) == len(rows)
    assert peers.acceptance_rows(peers.acceptance(rows, gate))

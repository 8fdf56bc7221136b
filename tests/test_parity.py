"""benchmarks/parity.py: the bundled ONNX model matches its PyTorch checkpoint on real
crops, and parity catches what it must catch (a perturbed weight, an offset, NaN).

Fast: 48×40 crops of the test photos; the one export (the checkpoint with one weight
perturbed) uses the TorchScript exporter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import parity
from runtime.evaluation import load_image_uint8
from runtime.image_io import write_image

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = REPO_ROOT / "data" / "photos" / "test"
CHECKPOINT = REPO_ROOT / "models" / "eusr-compact.safetensors"
BUNDLED = REPO_ROOT / "runtime" / "models" / "eusr-compact-x4.onnx"
ENV_KEYS = {"date", "command", "host", "threads", "versions", "git"}


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """48×40 (w×h) centre crops of one colour and one gray test photo, saved as PNG."""
    folder = tmp_path_factory.mktemp("parity-crops")
    out = []
    for name in ("ihc.png", "coins.png"):
        photo = load_image_uint8(PHOTOS / name)
        h, w = photo.shape[:2]
        y0, x0 = (h - 40) // 2, (w - 48) // 2
        path = folder / name
        write_image(path, np.ascontiguousarray(photo[y0 : y0 + 40, x0 : x0 + 48]))
        out.append(path)
    return out


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "parity.py"), "--allow-dirty", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_bundled_model_matches_checkpoint(crops: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    if not BUNDLED.is_file() or not CHECKPOINT.is_file():
        pytest.skip("bundled model or checkpoint missing")
    # tile 32 < the 48×40 crops (64×56 with their mirrored border): "tiled" really cuts tiles.
    res = run_cli(
        "--backend",
        "onnxruntime",
        "--tile",
        "32",
        "--halo",
        "8",
        "--threads",
        "1",
        "--out",
        tmp_path,
        "--name",
        "p",
        *crops,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert ENV_KEYS <= set(data["environment"])
    assert data["passed"] is True and data["failures"] == []
    assert data["settings"]["thresholds"] == {"min_psnr": 80.0, "max_nan": 0}
    assert data["model"]["tile"] == 32 and data["model"]["halo"] == 8
    assert data["allow_tf32"] is False and data["settings"]["allow_tf32"] is False
    assert data["model"]["allow_tf32"] is None  # the CPU backend has no TF32 switch
    rows = data["rows"]
    assert [(r["image"], r["mode"]) for r in rows] == [
        ("ihc", "whole"),
        ("ihc", "tiled"),
        ("coins", "whole"),
        ("coins", "tiled"),
    ]
    for r in rows:
        assert r["size"] == [48, 40]
        assert r["psnr"] == "inf" or r["psnr"] >= 80.0
        # whole: the same computation (float noise); tiled: halo 8 is short of the model's
        # receptive field, so its 2x2 windows of the mirrored 64x56 carry seams of ~0.2 levels
        assert r["max_abs_err"] < (0.05 if r["mode"] == "whole" else 0.5) and r["uint8_differ_gt1"] == 0.0
        assert r["nonfinite"] == 0 and r["passed"] is True
    assert (tmp_path / "p.md").read_text().count("| yes") == 4
    assert res.stdout.rstrip().splitlines()[-1].startswith("| coins")  # the table comes last


@pytest.mark.slow
def test_perturbed_weight_fails(crops: list[Path], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from export.to_onnx import export_onnx
    from train.checkpoint import load_model

    model = load_model(CHECKPOINT)
    weight = next(p for n, p in model.path(4).named_parameters() if p.ndim == 4)
    with torch.no_grad():
        weight.view(-1)[0] += 0.05  # one weight, a small change
    wrong = export_onnx(model, tmp_path / "wrong.onnx", validate=False, exporter="torchscript")
    res = run_cli(
        "--model", wrong, "--reference", CHECKPOINT, "--threads", "1", "--out", tmp_path, "--name", "w", crops[0]
    )
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads((tmp_path / "w.json").read_text())
    assert data["passed"] is False and len(data["failures"]) == 2
    assert all(r["psnr"] < 80.0 and not r["passed"] for r in data["rows"])
    assert "**NO**" in res.stdout


def _images() -> list[parity.Image]:
    rng = np.random.default_rng(0)
    return [
        ("a", rng.uniform(0, 255, (6, 5, 3)).astype(np.float32)),
        ("b", rng.uniform(0, 255, (4, 7, 3)).astype(np.float32)),
    ]


def _reference(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


def test_run_parity_exact_and_offset() -> None:
    exact = parity.run_parity(lambda img, mode: _reference(img), _reference, _images(), parity.Thresholds())
    assert exact["passed"] and len(exact["rows"]) == 4
    assert all(r["psnr"] == float("inf") and r["max_abs_err"] == 0 for r in exact["rows"])

    offset = parity.run_parity(lambda img, mode: _reference(img) + 0.5, _reference, _images(), parity.Thresholds())
    assert not offset["passed"] and len(offset["failures"]) == 4
    assert offset["rows"][0]["psnr"] == pytest.approx(20 * np.log10(255 / 0.5), abs=1e-3)
    assert offset["rows"][0]["max_abs_err"] == pytest.approx(0.5, abs=1e-4)  # float32 rounding
    # an fp16 threshold (50 dB) accepts a 0.5-level offset (54.2 dB)
    assert parity.run_parity(
        lambda img, mode: _reference(img) + 0.5, _reference, _images(), parity.Thresholds.for_precision("fp16")
    )["passed"]

    # only the tiled mode wrong: only it fails
    half = parity.run_parity(
        lambda img, mode: _reference(img) + (3.0 if mode == "tiled" else 0.0),
        _reference,
        _images(),
        parity.Thresholds(),
    )
    assert [r["passed"] for r in half["rows"]] == [True, False, True, False]
    assert half["rows"][1]["uint8_differ_gt1"] > 0.9  # all but values clipped at 255


def test_run_parity_counts_nan_and_inf() -> None:
    def candidate(img: np.ndarray, mode: str) -> np.ndarray:
        out = _reference(img)
        out[0, 0, 0] = np.nan
        out[1, 1, 1] = np.inf
        return out

    report = parity.run_parity(candidate, _reference, _images(), parity.Thresholds())
    assert not report["passed"]
    for r in report["rows"]:
        assert (r["nonfinite"], r["nan"], r["inf"]) == (2, 1, 1)
        assert r["psnr"] == float("inf")  # the finite values match exactly
        assert any("NaN/Inf" in reason for reason in r["reasons"])
    assert parity.run_parity(candidate, _reference, _images(), parity.Thresholds(max_nan=2))["passed"]

    all_nan = parity.run_parity(
        lambda img, mode: np.full_like(_reference(img), np.nan), _reference, _images(), parity.Thresholds(max_nan=10**6)
    )
    assert not all_nan["passed"]  # no finite value: PSNR nan fails


def test_thresholds_by_precision() -> None:
    assert parity.Thresholds.for_precision("fp32").min_psnr == 80.0
    assert parity.Thresholds.for_precision("fp16").min_psnr == 50.0
    assert parity.Thresholds.for_precision("int8").min_psnr == 40.0
    assert parity.Thresholds.for_precision("int8", min_psnr=30.0, max_nan=3) == parity.Thresholds(30.0, 3)


def test_allow_tf32_reaches_the_gpu_backends_options_and_only_them() -> None:
    from runtime.backends import OnnxRuntimeCuda, TorchCuda

    assert parity.candidate_options("torch-cuda") == TorchCuda(allow_tf32=False)
    assert parity.candidate_options("torch-cuda", fp16=True, allow_tf32=True) == TorchCuda(fp16=True, allow_tf32=True)
    assert parity.candidate_options("onnxruntime-cuda", allow_tf32=True) == OnnxRuntimeCuda(allow_tf32=True)
    assert parity._parser().parse_args(["x.png", "--allow-tf32"]).allow_tf32 is True
    assert parity._parser().parse_args(["x.png"]).allow_tf32 is False
    with pytest.raises(
        parity.BenchmarkError, match="--allow-tf32 applies to --backend torch-cuda and onnxruntime-cuda"
    ):
        parity.candidate_options("onnxruntime", allow_tf32=True)

"""The shipped INT8 model: made from the shipped fp32 file, gated, packaged, and picked by --precision.

The gate is re-run here on two held-out photos (the committed .gate.json holds all five),
so a changed INT8 file, a changed fp32 file or a changed ONNX Runtime that moves the
numbers fails CI instead of shipping silently.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration.gate import run_gate
from runtime import Upscaler
from runtime.bundled import BUNDLED_FILES, GATE_SUFFIX, bundled_model, recorded_precision, resolve_model
from runtime.cli import main
from runtime.errors import InvalidArgumentError, ModelError
from runtime.layout import Precision
from runtime.metrics import psnr

FP32 = bundled_model("fp32")
INT8 = bundled_model("int8")
GATE_JSON = INT8.with_suffix(GATE_SUFFIX)
GATE_PHOTOS = ("coins.png", "camera.png")
"""The two smallest held-out photos (384×303 and 512²): whole-image gate in a few seconds."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metadata(path: Path) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["fourpp_eusr"])


def test_int8_was_made_from_the_shipped_fp32_file() -> None:
    """Replacing the fp32 model without `python -m calibration bundle` fails here."""
    fp32_sha = _sha256(FP32)
    meta = _metadata(INT8)
    cal = meta["calibration"]
    bundle = cal["bundle"]
    report = json.loads(GATE_JSON.read_text())
    assert cal["source_model_sha256"] == fp32_sha, "the INT8 model was not made from the shipped fp32 file: remake it"
    assert bundle["source_model_sha256"] == fp32_sha and report["provenance"]["source_model_sha256"] == fp32_sha
    assert report["candidate_sha256"] == _sha256(INT8), "the gate JSON judged another INT8 file"
    assert bundle["command"] == "python -m calibration bundle"
    assert bundle["collect"]["images"] == "data/photos/train" and bundle["gate"]["test_images"] == "data/photos/test"
    assert report["passed"] and bundle["gate"]["passed"]
    assert report["min_psnr_vs_fp32"] >= 40.0 and report["psnr_y_loss"] <= 0.3
    assert report["floors"] == {"min_psnr_vs_fp32": 40.0, "max_psnr_y_loss": 0.3}
    # the exporter's document is extended, not replaced: the runtime reads the INT8 like its source
    src = _metadata(FP32)
    assert meta["precision"] == "int8" and {k: meta[k] for k in src} == src
    assert recorded_precision(INT8) is Precision.INT8 and recorded_precision(FP32) is Precision.FP32


def test_calibration_photos_are_not_the_gate_photos(repo_root: Path) -> None:
    cal = _metadata(INT8)["calibration"]
    train = {p.name for p in (repo_root / "data" / "photos" / "train").iterdir()}
    test = {p.name for p in (repo_root / "data" / "photos" / "test").iterdir()}
    assert set(cal["data"]["files"]) <= train and not set(cal["data"]["files"]) & test
    assert sorted(r["image"] for r in json.loads(GATE_JSON.read_text())["rows"]) == sorted(test)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_gate_rerun_on_two_held_out_photos_agrees_with_the_committed_report(
    tmp_path: Path, photos_dir: Path, backend: str
) -> None:
    """The committed report is ONNX Runtime's; OpenVINO runs the Q/DQ convolutions as real
    INT8 kernels (ONNX Runtime's CPU provider dequantizes to float), and must pass the same
    floors with the same numbers within the tolerances below."""
    for name in GATE_PHOTOS:
        shutil.copy(photos_dir / "test" / name, tmp_path / name)
    res = run_gate(FP32, INT8, tmp_path, backend=backend)
    assert res.passed and res.backend == backend, res.failures
    committed = {r["image"]: r for r in json.loads(GATE_JSON.read_text())["rows"]}
    for row in res.rows:
        want = committed[row["image"]]
        # ORT's CPU kernels differ by ISA (AVX2, AVX-512, VNNI) in the last bits; INT8 rounding amplifies that a little
        assert row["psnr_vs_fp32"] == pytest.approx(want["psnr_vs_fp32"], abs=0.5), row["image"]
        assert row["psnr_y_fp32"] == pytest.approx(want["psnr_y_fp32"], abs=0.01), row["image"]
        assert row["psnr_y_int8"] == pytest.approx(want["psnr_y_int8"], abs=0.05), row["image"]
        assert row["nan_count"] == 0


def test_package_data_ships_both_variants_and_the_gate_report(repo_root: Path) -> None:
    import fnmatch

    import tomllib

    globs = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["runtime"]
    for path in (FP32, INT8, GATE_JSON):
        rel = path.relative_to(repo_root / "runtime").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data ({globs})"
    assert INT8.stat().st_size <= 20e6


# --------------------------------------------------------------------------- runtime.bundled


def test_bundled_model_by_precision() -> None:
    assert bundled_model() == FP32 and bundled_model(Precision.INT8) == INT8
    assert FP32.name == BUNDLED_FILES[Precision.FP32] and INT8.name == BUNDLED_FILES[Precision.INT8]
    with pytest.raises(
        ModelError, match=r"precision 'fp16': no bundled model of that precision \(bundled: fp32, int8\)"
    ):
        bundled_model("fp16")
    with pytest.raises(InvalidArgumentError, match=r"precision must be one of \['fp32', 'fp16', 'int8'\], got 'int4'"):
        bundled_model("int4")


def test_missing_bundled_variant_names_the_command_that_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(FP32, tmp_path / FP32.name)
    monkeypatch.setattr("runtime.bundled.models_dir", lambda: tmp_path)
    assert bundled_model("fp32") == tmp_path / FP32.name
    with pytest.raises(ModelError, match=r"bundled int8 model .* is missing .*`python -m calibration bundle`"):
        bundled_model("int8")


def test_precision_with_an_explicit_model_is_a_check(tmp_path: Path) -> None:
    assert resolve_model(None, None) is None
    assert resolve_model(None, "int8") == INT8
    assert resolve_model(FP32, None) == FP32
    assert resolve_model(INT8, "int8") == INT8 and resolve_model(FP32, Precision.FP32) == FP32
    with pytest.raises(
        InvalidArgumentError,
        match=r"--precision int8 with model .*eusr-compact-x4.onnx: that file records precision fp32",
    ):
        resolve_model(FP32, "int8", what="--precision")
    with pytest.raises(
        InvalidArgumentError, match=r"precision fp32 with model .*int8.onnx: that file records precision int8"
    ):
        resolve_model(INT8, "fp32")
    with pytest.raises(InvalidArgumentError, match=r"only be checked against an ONNX file"):
        resolve_model(tmp_path / "m.plan", "int8")
    with pytest.raises(ModelError, match=r"nope.onnx: model file not found"):
        resolve_model(tmp_path / "nope.onnx", "fp32")


# --------------------------------------------------------------------------- the CLI switch


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    p = tmp_path_factory.mktemp("in") / "coins.png"
    Image.open(photos_dir / "test" / "coins.png").convert("RGB").crop((0, 0, 96, 64)).save(p)
    return p


def _upscale(photo: Path, out: Path, *flags: str) -> int:
    return main(["upscale", str(photo), "-o", str(out), "--backend", "onnxruntime", "--quiet", *flags])


def test_upscale_precision_int8_runs_the_int8_model(tmp_path: Path, photo: Path) -> None:
    a, b = tmp_path / "fp32.png", tmp_path / "int8.png"
    assert _upscale(photo, a) == 0
    assert _upscale(photo, b, "--precision", "int8") == 0
    x, y = (np.asarray(Image.open(p)) for p in (a, b))
    assert x.shape == y.shape == (256, 384, 3)
    assert not np.array_equal(x, y), "--precision int8 ran the fp32 model"
    assert psnr(y, x) >= 40.0


def test_upscale_precision_mismatch_is_a_usage_error(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _upscale(photo, tmp_path / "x.png", "--precision", "int8", "--model", str(FP32)) == 2
    err = capsys.readouterr().err
    assert "--precision int8 with model" in err and "records precision fp32 (expected int8)" in err
    assert not (tmp_path / "x.png").exists()
    assert main(["upscale", str(photo), "-o", str(tmp_path), "--precision", "fp16"]) == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_demo_precision_int8(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["demo", "-o", str(tmp_path), "--photo", str(photo), "--backend", "onnxruntime", "--precision", "int8"])
        == 0
    )
    assert "PSNR-Y" in capsys.readouterr().out
    assert main(["demo", "-o", str(tmp_path), "--photo", str(photo), "--precision", "fp32", "--model", str(INT8)]) == 2
    assert "records precision int8 (expected fp32)" in capsys.readouterr().err


def test_upscaler_precision_picks_the_bundled_variant_and_checks_a_named_file(photos_dir: Path) -> None:
    from runtime import OnnxRuntime

    image = np.asarray(Image.open(photos_dir / "test" / "coins.png").convert("RGB"))[100:148, 100:164]  # a real crop
    with (
        Upscaler(backend=OnnxRuntime(threads=1)) as fp32,
        Upscaler(backend=OnnxRuntime(threads=1), precision="int8") as int8,
    ):
        a, b = fp32.upscale(image), int8.upscale(image)
    assert not np.array_equal(a, b) and psnr(b.astype(float), a.astype(float)) >= 40
    with Upscaler(INT8, backend=OnnxRuntime(threads=1), precision="int8") as named:
        np.testing.assert_array_equal(named.upscale(image), b)
    with pytest.raises(InvalidArgumentError, match="records precision fp32"):
        Upscaler(FP32, precision="int8")
    with pytest.raises((InvalidArgumentError, ModelError), match="fp16"):
        Upscaler(precision="fp16")

"""The README's first command (`python -m runtime demo`) and the bundled model behind it."""

from __future__ import annotations

import importlib.util

import pytest
from PIL import Image

from runtime import Upscaler
from runtime.cli import main
from runtime.demo import DEMO_PHOTO, run_demo
from runtime.upscaler import default_model_path

BUNDLED = default_model_path()


def test_demo_writes_lr_result_and_comparison(tmp_path, nearest_model):
    out = tmp_path / "demo"
    result = run_demo(out, model=nearest_model, backend="onnxruntime")
    photo = Image.open(DEMO_PHOTO)
    w, h = photo.size
    assert Image.open(result.lr_path).size == (w // 4, h // 4)
    assert Image.open(result.sr_path).size == (w - w % 4, h - h % 4)
    strip = Image.open(result.comparison_path)
    assert strip.width >= 3 * (w - w % 4)  # bicubic | model | original
    assert strip.height > h  # plus the zoomed row
    # Nearest-neighbour upscaling is worse than bicubic: the scores must say so.
    assert result.psnr_y_model < result.psnr_y_bicubic
    assert result.backend == "onnxruntime" and result.seconds > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (result.lr_path, result.sr_path, result.comparison_path)
    )


def test_demo_cli_prints_scores(tmp_path, nearest_model, capsys):
    assert main(["demo", "-o", str(tmp_path), "--model", str(nearest_model)]) == 0
    out = capsys.readouterr().out
    assert "comparison:" in out and "PSNR-Y" in out and "bicubic" in out
    # which backend "auto" chose: the fastest installed one on the CPU (OpenVINO where it is)
    backend = next(line for line in out.splitlines() if line.startswith("backend:")).split()[1]
    assert backend == ("openvino" if importlib.util.find_spec("openvino") else "onnxruntime")


def test_demo_cli_missing_photo_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--photo", str(tmp_path / "nope.png")]) == 1
    err = capsys.readouterr().err
    assert "nope.png" in err


def test_bundled_model_is_shipped_small_and_described():
    assert BUNDLED.is_file(), f"the bundled model {BUNDLED} is missing"
    assert BUNDLED.stat().st_size <= 20e6
    with Upscaler() as up:
        info = up.backend.info
        assert up.scale == 4
        assert info.config_name == "compact"
        assert info.metadata["config"]["features"] == 32
        assert info.recommended_halo is not None and info.recommended_halo <= up.halo


@pytest.mark.slow
def test_bundled_model_beats_bicubic_on_the_demo_photo(tmp_path):
    """A quality floor for the shipped model on a photo it was not trained on."""
    result = run_demo(tmp_path)
    assert result.psnr_y_model > result.psnr_y_bicubic + 0.5, (result.psnr_y_model, result.psnr_y_bicubic)
    assert result.ssim_y_model > result.ssim_y_bicubic

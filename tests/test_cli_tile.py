"""``upscale --tile``: auto is the default and --verbose shows the tiles each image got."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.cli import build_parser, main


def test_tile_defaults_to_auto_and_takes_ints() -> None:
    parser = build_parser()
    assert parser.parse_args(["upscale", "a.png", "-o", "out"]).tile == "auto"
    assert parser.parse_args(["upscale", "a.png", "-o", "out", "--tile", "64"]).tile == 64


@pytest.mark.parametrize("bad", ["0", "big", "1.5"])
def test_a_bad_tile_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["upscale", "a.png", "-o", "out", "--tile", bad])
    assert exc.value.code == 2
    assert "--tile" in capsys.readouterr().err


def test_verbose_logs_the_plan(tmp_path: Path, nearest_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(nearest_model)]
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--backend", "onnxruntime", "--tile", "auto", "-v"]) == 0
    assert "tiles: 30x20: one 30x20 window (whole image), overlap 1.000" in caplog.text
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_memory_budget_sizes_the_auto_windows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.fromarray(np.full((24, 40, 3), 128, np.uint8)).save(tmp_path / "a.png")
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--backend", "onnxruntime", "-v"]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0  # the bundled model, the default budget: one window
    assert "tiles: 40x24: one 56x40 window (whole image)" in caplog.text  # the image and its halo of 8
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--memory-budget-mb", "10", "--overwrite"]) == 0  # ~980-pixel windows
    assert "tiles: 40x24: 5x1 windows of 24x40 (halo 8)" in caplog.text


@pytest.mark.parametrize("bad", ["0", "lots"])
def test_a_bad_memory_budget_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["upscale", "a.png", "-o", "out", "--memory-budget-mb", bad])
    assert exc.value.code == 2
    assert "--memory-budget-mb" in capsys.readouterr().err

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

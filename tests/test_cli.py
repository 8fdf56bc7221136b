"""The command line, mostly in-process through ``main(argv)``; one subprocess smoke test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.cli import main
from runtime.image_io import read_image, write_image


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder with two images, a text file and a subfolder (which is not descended)."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(7)
    write_image(folder / "a.png", rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    write_image(folder / "b.jpg", rng.integers(0, 256, (4, 3, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    write_image(folder / "sub" / "c.png", np.zeros((2, 2), np.uint8))
    return folder


def run(*argv: object, model: Path) -> int:
    return main(["upscale", *map(str, argv), "--model", str(model), "--backend", "onnxruntime", "--quiet"])


def test_files_into_a_new_folder(images: Path, tmp_path: Path, nearest_model: Path) -> None:
    out = tmp_path / "out" / "nested"
    assert run(images / "a.png", images / "b.jpg", "-o", out, model=nearest_model) == 0
    assert sorted(os.listdir(out)) == ["a_x4.png", "b_x4.png"]
    array, _ = read_image(out / "a_x4.png")
    np.testing.assert_array_equal(array, read_image(images / "a.png")[0].repeat(4, 0).repeat(4, 1))


def test_folder_expands_non_recursively_and_skips_non_images(images: Path, tmp_path: Path, nearest_model: Path) -> None:
    assert run(images, "-o", tmp_path / "out", "--format", "same", model=nearest_model) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["a_x4.png", "b_x4.jpg"]


def test_single_input_to_a_file_path(images: Path, tmp_path: Path, nearest_model: Path) -> None:
    assert run(images / "a.png", "-o", tmp_path / "big.webp", model=nearest_model) == 0
    with Image.open(tmp_path / "big.webp") as im:
        assert im.format == "WEBP" and im.size == (24, 20)


def test_failures_are_reported_per_image_and_the_rest_still_run(
    images: Path, tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = images / "broken.png"
    bad.write_text("I am text pretending to be a PNG")
    missing = images / "missing.png"
    out = tmp_path / "out"
    code = run(bad, images / "a.png", missing, "-o", out, model=nearest_model)
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err == [
        f"error: {bad}: not a recognised image: Pillow cannot identify its format (is it really a PNG file?)",
        f"error: {missing}: file not found; check the path",
    ]
    assert os.listdir(out) == ["a_x4.png"]  # nothing half-written for the failures


def test_existing_output_needs_overwrite(
    images: Path, tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_x4.png").write_bytes(b"old")
    assert run(images / "a.png", images / "b.jpg", "-o", out, model=nearest_model) == 1
    err = capsys.readouterr().err
    assert f"error: {images / 'a.png'}: {out / 'a_x4.png'}: already exists" in err and "--overwrite" in err
    assert (out / "a_x4.png").read_bytes() == b"old" and (out / "b_x4.png").exists()
    assert run(images / "a.png", "-o", out, "--overwrite", model=nearest_model) == 0
    assert read_image(out / "a_x4.png")[0].shape == (20, 24, 3)


def test_cmyk_warning_is_one_line(tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture) -> None:
    Image.new("CMYK", (3, 3), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert run(tmp_path / "c.jpg", "-o", tmp_path / "out", model=nearest_model) == 0
    assert capsys.readouterr().err.startswith(f"warning: {tmp_path / 'c.jpg'}: CMYK image converted to RGB")


def test_progress_and_success_lines(
    images: Path, tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["upscale", str(images), "-o", str(tmp_path / "out"), "--model", str(nearest_model)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"{images / 'a.png'} -> {tmp_path / 'out' / 'a_x4.png'}" in captured.out
    assert "2/2" in captured.err  # the tqdm bar over images


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "the following arguments are required"),
        (["upscale", "x.png"], "-o/--output"),
        (["upscale", "x.png", "-o", "o", "--tile", "0"], "expected an integer >= 1, got 0"),
        (["upscale", "x.png", "-o", "o", "--halo", "two"], "expected an integer, got 'two'"),
        (["upscale", "x.png", "-o", "o", "--format", "gif"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_setup_errors_exit_2(images: Path, tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(images / "a.png", images / "b.jpg", "-o", tmp_path / "x.png", model=nearest_model) == 2
    assert "OUT must be a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty, "-o", tmp_path / "out", model=nearest_model) == 2
    assert "no images to upscale" in capsys.readouterr().err
    assert run(images / "a.png", "-o", tmp_path / "out", model=tmp_path / "nope.onnx") == 2
    assert "nope.onnx: model file not found" in capsys.readouterr().err
    argv = ["upscale", str(images / "a.png"), "-o", str(tmp_path / "out"), "--model", str(nearest_model)]
    assert main([*argv, "--backend", "tensorrt"]) == 2  # no GPU/driver here (or no cuda-python)
    assert "cuda" in capsys.readouterr().err.lower()
    assert not (tmp_path / "out").exists()


def test_info(nearest_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(nearest_model)]) == 0
    out = capsys.readouterr().out
    assert "io:" in out and "float32-nchw" in out and "scale:" in out and "test-nearest" in out
    assert main(["info", str(nearest_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scale"] == 4
    assert main(["info", "missing.onnx"]) == 1
    assert "missing.onnx: model file not found" in capsys.readouterr().err


def test_python_dash_m_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "upscale" in result.stdout and "info" in result.stdout and "exit status" in result.stdout

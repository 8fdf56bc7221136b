"""Guard rails of issue 16: float arrays follow one convention (finite, 0..255 in and out),
tile plans that compute far more than the image are warned about or refused, running out of
memory says which option helps, and the CLI's pixel limit is a CLI option."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import Upscaler, cli
from runtime.cli import DEFAULT_MAX_PIXELS, main
from runtime.errors import InvalidArgumentError, OutOfMemoryError
from runtime.image_io import read_image, write_image
from runtime.upscaler import OverheadWarning

PILLOW_LIMIT = Image.MAX_IMAGE_PIXELS  # Pillow's default, as this test session found it

# ------------------------------------------------------------------ float arrays: 0..255


@pytest.mark.parametrize(
    "values,expected",
    [
        (np.nan, r"holds NaN.*finite numbers in 0\.\.255"),
        (np.inf, r"holds infinite values"),
        (-280.0, r"values in -280\.\.100, outside 0\.\.255"),
        (647.0, r"values in 100\.\.647, outside 0\.\.255"),
    ],
    ids=["nan", "inf", "negative", "above-255"],
)
def test_float_arrays_outside_0_255_are_refused_naming_what_was_seen(values: float, expected: str) -> None:
    image = np.full((6, 7, 3), 100.0, np.float32)
    image[2, 3, 1] = values
    with pytest.raises(InvalidArgumentError, match=expected):
        read_image(image)


def test_float_arrays_in_0_1_are_named_as_that_convention(rng: np.random.Generator) -> None:
    image = rng.random((6, 7, 3), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match=r"0\.\.1 convention.*a \* 255"):
        read_image(image)


def test_float_arrays_in_range_pass_with_half_a_level_of_slack() -> None:
    ok = np.full((4, 4, 3), 255.4, np.float32)
    ok[0, 0] = -0.3
    assert read_image(ok)[0] is ok  # still a view, not a copy
    read_image(np.zeros((4, 4), np.float32))  # black is black, not "0..1"


def test_float_output_is_clamped_to_0_255(rng: np.random.Generator) -> None:
    """The bundled model overshoots at saturated edges; float results stay in the range."""
    image = np.where(rng.random((24, 24, 3)) < 0.5, 0.0, 255.0).astype(np.float32)  # hard edges
    with Upscaler(backend="onnxruntime") as up:
        out = up.upscale(image)
        outs = list(up.upscale_many([image]))
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 255.0  # reached, and not passed
    np.testing.assert_array_equal(outs[0], out)


# ------------------------------------------------------------------ tile plans that compute far more than the image


def test_a_plan_over_twice_the_image_is_warned_with_its_factor(nearest_model: Path) -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    with Upscaler(nearest_model, backend="onnxruntime", tile=16, halo=8) as up:
        with pytest.warns(OverheadWarning, match=r"tile=16, halo=8 computes 4\.3x this image's pixels"):
            up.upscale(image)


def test_a_plan_over_max_overhead_is_refused_before_any_compute_unless_allowed(nearest_model: Path) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    with Upscaler(nearest_model, backend="onnxruntime", tile=4, halo=100) as up:
        with pytest.raises(InvalidArgumentError, match=r"2,601\.0x.*max_overhead=16.*--max-overhead 2601"):
            up.upscale(image)
    with Upscaler(nearest_model, backend="onnxruntime", tile=4, halo=100, max_overhead=2601) as up:
        with pytest.warns(OverheadWarning):
            assert up.upscale(image).shape == (256, 256, 3)


@pytest.mark.parametrize("size", [1, 8, 16])
def test_tiny_images_pass_quietly_whatever_their_overlap(nearest_model: Path, size: int) -> None:
    """A 1x1 image in a window with a halo of 32 computes 4,225x its pixel: a trifle."""
    with Upscaler(nearest_model, backend="onnxruntime", tile=8, halo=32) as up, warnings.catch_warnings():
        warnings.simplefilter("error")
        up.upscale(np.zeros((size, size, 3), np.uint8))


def test_cli_max_overhead_refuses_and_names_the_option(tmp_path: Path, nearest_model: Path, capsys) -> None:
    write_image(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", str(nearest_model)]
    argv += ["--backend", "onnxruntime", "--tile", "4", "--halo", "100", "-q"]
    assert main(argv) == 1
    assert "--max-overhead 2601" in capsys.readouterr().err and not (tmp_path / "b.png").exists()
    assert main([*argv, "--max-overhead", "3000"]) == 0
    assert "warning: tile=4, halo=100 computes 2,601.0x" in capsys.readouterr().err


# ------------------------------------------------------------------ memory


def test_an_output_too_large_for_memory_says_how_large_and_what_helps() -> None:
    """A broadcast view: 3M x 3M pixels that take no memory; its x4 result (432 TB) is beyond
    any address space, so the allocation fails under every overcommit setting."""
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (3_000_000, 3_000_000, 3))
    with Upscaler(backend="onnxruntime") as up, pytest.raises(OutOfMemoryError, match=r"432,000\.00 GB.*tile"):
        up.upscale(huge)


def test_buffers_too_large_for_memory_name_the_tile(nearest_model: Path) -> None:
    with pytest.raises(OutOfMemoryError, match=r"tile=10000000.*smaller tile \(CLI: --tile 128\)") as caught:
        Upscaler(nearest_model, backend="onnxruntime", tile=10_000_000)
    assert isinstance(caught.value, MemoryError)  # still a MemoryError for callers that catch that


_BACKEND_OUT_OF_MEMORY = """
import resource, sys
import numpy as np
from runtime import Upscaler
from runtime.errors import OutOfMemoryError
up = Upscaler(sys.argv[1], backend="onnxruntime", tile=1500, halo=0)  # buffers: 1500² in, 6000² out
up.upscale(np.zeros((8, 8, 3), np.uint8))  # the session set up
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (300 << 20),) * 2)  # the 108 MB output fits, ORT's 432 MB not
try:
    up.upscale(np.zeros((1500, 1500, 3), np.uint8))
except OutOfMemoryError as exc:
    print("OutOfMemoryError:", exc, "| cause:", type(exc.__cause__).__name__, exc.__cause__)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status: Linux")
def test_a_backend_out_of_memory_names_the_tile_that_helps(nearest_model: Path) -> None:
    """ONNX Runtime's own allocation failure (``RUNTIME_EXCEPTION ... std::bad_alloc``, not a
    MemoryError) under a real address-space limit: said as running out of memory, with the fix."""
    run = subprocess.run(
        [sys.executable, "-c", _BACKEND_OUT_OF_MEMORY, str(nearest_model)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert "OutOfMemoryError: out of memory while running batches of 1 window(s) of 1500x1500" in run.stdout, (
        run.stdout + run.stderr
    )
    assert "use a smaller tile (CLI: --tile 128) or tile='auto'" in run.stdout
    assert "bad_alloc" in run.stdout  # the backend's own words stay in the cause


# ------------------------------------------------------------------ --max-pixels


def test_cli_max_pixels_refuses_with_a_message_a_cli_user_can_act_on(
    tmp_path: Path, nearest_model: Path, capsys
) -> None:
    write_image(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))  # 4,096 pixels
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", str(nearest_model), "-q"]
    for limit in ("3000", "1000"):  # Pillow alone warns above its limit, refuses above twice it: both refused
        assert main([*argv, "--max-pixels", limit]) == 1
        err = capsys.readouterr().err
        assert f"4,096 pixels is above the limit of {int(limit):,}" in err and "--max-pixels 4096" in err
        assert "MAX_IMAGE_PIXELS if you trust" not in err
    assert main([*argv, "--max-pixels", "4096"]) == 0
    assert Image.MAX_IMAGE_PIXELS == PILLOW_LIMIT  # restored: the limit is the command's, not the process's


def test_cli_default_pixel_limit_is_where_pillow_refuses() -> None:
    assert DEFAULT_MAX_PIXELS == 2 * PILLOW_LIMIT


# ------------------------------------------------------------------ per-tile progress


def test_cli_shows_a_tile_bar_with_eta_on_a_terminal(
    tmp_path: Path, nearest_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", str(nearest_model)]
    argv += ["--backend", "onnxruntime", "--tile", "8", "--halo", "2"]  # 64 tiles, one image
    monkeypatch.setattr(cli, "TILE_BAR_DELAY_S", 0.0)  # the bar waits a second for images that are slow
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(master, chunks), daemon=True)
    reader.start()
    with os.fdopen(slave, "w", buffering=1) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main(argv) == 0
    reader.join(timeout=10)
    shown = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\d+/64 \[\d\d:\d\d<", shown), shown  # tiles done/all [elapsed<remaining: the ETA


def test_cli_shows_no_tile_bar_off_a_terminal(tmp_path: Path, nearest_model: Path, capsys) -> None:
    write_image(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", str(nearest_model)]
    assert main([*argv, "--backend", "onnxruntime", "--tile", "8", "--halo", "2"]) == 0
    assert "tile" not in capsys.readouterr().err


def _drain(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the terminal's other end closed
            break
        if not data:
            break
        chunks.append(data)

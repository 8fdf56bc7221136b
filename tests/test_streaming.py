"""Images larger than memory (issue 16, point 5): runtime.streaming writes the output band by
band into a tiled TIFF, with the pixels of the in-memory path and memory of a band."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from runtime import Upscaler
from runtime.errors import ImageReadError, ImageWriteError, InvalidArgumentError, OutputExistsError
from runtime.model_info import ModelIO
from runtime.streaming import plan_bands, read_region, stream_if_large, upscale_to_tiff
from tests._numpy_backend import BlurUp

TINY_MB = 1e-3  # 1000 bytes: every band is one tile row


@pytest.fixture
def upscaler() -> Iterator[Upscaler]:
    with Upscaler(backend=BlurUp(), tile=8, halo=2) as up:
        yield up


def _image(rng: np.random.Generator, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def _write_tiff(path: Path, image: np.ndarray, **options: Any) -> Path:
    channels = 1 if image.ndim == 2 else image.shape[2]
    tifffile.imwrite(
        path,
        image,
        photometric="rgb" if channels >= 3 else "minisblack",
        planarconfig="contig" if channels > 1 else None,
        extrasamples=["unassalpha"] if channels in (2, 4) else None,
        metadata=None,
        **options,
    )
    return path


LAYOUTS = {
    "gray": (37, 29),
    "gray+alpha": (37, 29, 2),
    "rgb": (37, 29, 3),
    "rgba": (37, 29, 4),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("from_file", [False, True], ids=["array", "tiff"])
def test_equals_the_in_memory_upscale_band_by_band(
    upscaler: Upscaler, rng: np.random.Generator, tmp_path: Path, layout: str, from_file: bool
) -> None:
    image = _image(rng, LAYOUTS[layout])
    src = _write_tiff(tmp_path / "in.tif", image) if from_file else image
    done: list[tuple[int, int]] = []
    result = upscale_to_tiff(
        upscaler, src, tmp_path / "out.tif", memory_budget_mb=TINY_MB, on_band=lambda i, n: done.append((i, n))
    )
    expected = upscaler.upscale(image)
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == expected.shape == result.shape
    assert out.dtype == expected.dtype
    diff = np.argwhere(out != expected)
    assert diff.size == 0, f"{len(diff)} pixels differ, first at {diff[0]}"
    plan = upscaler.plan(*image.shape[:2])
    assert len(result.bands) == plan.rows > 3  # one tile row per band: borders, inner bands, mirrored rows
    assert done == [(i, plan.rows) for i in range(1, plan.rows + 1)]  # bands run top to bottom
    assert result.lazy_input
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.tif"] + (["in.tif"] if from_file else []))


def test_constant_alpha_is_kept_as_is(upscaler: Upscaler, rng: np.random.Generator, tmp_path: Path) -> None:
    image = _image(rng, (30, 21, 4))
    image[..., 3] = 200
    upscale_to_tiff(upscaler, _write_tiff(tmp_path / "in.tif", image), tmp_path / "o.tif", memory_budget_mb=TINY_MB)
    out = tifffile.imread(tmp_path / "o.tif")
    np.testing.assert_array_equal(out, upscaler.upscale(image))
    assert (out[..., 3] == 200).all()


@pytest.mark.parametrize(
    "options",
    [
        {},  # uncompressed strips: rows read by seek + read
        {"rowsperstrip": 5},
        {"compression": "zlib", "rowsperstrip": 3},
        {"compression": "zlib", "tile": (16, 16)},
        {"tile": (32, 16)},
        {"byteorder": ">"},
        {"byteorder": ">", "compression": "zlib", "tile": (16, 32)},
    ],
    ids=["contiguous", "strips", "zlib-strips", "zlib-tiles", "tiles", "big-endian", "big-endian-zlib-tiles"],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_inputs_are_read_lazily(
    upscaler: Upscaler, rng: np.random.Generator, tmp_path: Path, options: dict[str, Any], dtype: type
) -> None:
    image = _image(rng, (53, 40, 3), dtype)
    src = _write_tiff(tmp_path / "in.tif", image, **options)
    result = upscale_to_tiff(upscaler, src, tmp_path / "out.tif", memory_budget_mb=0.01, compression="zlib")
    assert result.lazy_input and len(result.bands) > 1
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), upscaler.upscale(image))


def test_real_onnx_model(conv_model: Path, rng: np.random.Generator, tmp_path: Path) -> None:
    image = _image(rng, (70, 45, 3))
    with Upscaler(conv_model, backend="onnxruntime", tile=16, halo=4) as up:
        assert up.plan(70, 45).rows > 2
        result = upscale_to_tiff(up, image, tmp_path / "out.tif", memory_budget_mb=0.05)
        expected = up.upscale(image)
    assert len(result.bands) > 1
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), expected)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_pillow_and_read_region_read_the_output(
    upscaler: Upscaler, rng: np.random.Generator, tmp_path: Path, bigtiff: bool
) -> None:
    image = _image(rng, (150, 140, 3))  # 300x280 output: several TIFF tiles, partial ones at the edges
    result = upscale_to_tiff(upscaler, image, tmp_path / "out.tiff", memory_budget_mb=0.05, bigtiff=bigtiff)
    assert result.bigtiff is bigtiff
    expected = upscaler.upscale(image)
    with Image.open(tmp_path / "out.tiff") as im:
        np.testing.assert_array_equal(np.asarray(im), expected)
    box = (250, 300, 3, 270)  # across tile boundaries, to the bottom edge
    np.testing.assert_array_equal(read_region(tmp_path / "out.tiff", box), expected[250:300, 3:270])


def test_memory_is_a_band_not_the_output(rng: np.random.Generator, tmp_path: Path) -> None:
    """numpy allocations go through tracemalloc: a band and a row of TIFF tiles, not the output."""
    image = _image(rng, (2400, 100, 3))  # output 4800x200x3 = 2.9 MB; a row of 256² TIFF tiles 0.2 MB
    src = _write_tiff(tmp_path / "in.tif", image)
    with Upscaler(backend=BlurUp(), tile=32, halo=2) as up:
        up.plan(2400, 100)  # the plan is cached: the same for both, outside the measurement
        tracemalloc.start()
        try:
            upscale_to_tiff(up, src, tmp_path / "out.tif", memory_budget_mb=0.3)
            _, streamed = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            up.upscale(image)
            _, in_memory = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    output = 4800 * 200 * 3
    assert in_memory > output
    assert streamed < 0.25 * output, f"streaming peak {streamed} bytes vs output {output}"


def test_one_band_alive_at_a_time(rng: np.random.Generator, tmp_path: Path) -> None:
    """The budget holds: a band is freed before the next is made (measured 2.3 MB for 2 MB;
    3.7 MB when the previous band's output stayed referenced)."""
    image = _image(rng, (2400, 100, 3))
    src = _write_tiff(tmp_path / "in.tif", image)
    with Upscaler(backend=BlurUp(), tile=32, halo=2) as up:
        up.plan(2400, 100)
        tracemalloc.start()
        try:
            result = upscale_to_tiff(up, src, tmp_path / "out.tif", memory_budget_mb=2.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(result.bands) > 2
    padded_tile = 256 * 256 * 3  # tifffile pads each partial TIFF tile into a copy
    assert peak < 2.0e6 + 2 * padded_tile, f"peak {peak} bytes for a 2 MB band budget"


def test_plan_bands_keeps_to_the_budget(upscaler: Upscaler) -> None:
    plan = upscaler.plan(200, 50)
    for budget in (1, 1e5, 1.5e5, 1e9):
        bands = plan_bands(plan, 2, 3, 1, budget)
        assert bands[0][0] == 0 and bands[-1][1] == plan.rows
        assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
        if budget == 1:
            assert len(bands) == plan.rows
        if budget == 1e9:
            assert bands == [(0, plan.rows)]
    assert len(plan_bands(plan, 2, 3, 1, 1e5)) > len(plan_bands(plan, 2, 3, 1, 1.5e5)) > 1


def test_bad_arguments_are_named(upscaler: Upscaler, rng: np.random.Generator, tmp_path: Path) -> None:
    image = _image(rng, (20, 20, 3))
    with pytest.raises(ImageWriteError, match=r"name it \.tif"):
        upscale_to_tiff(upscaler, image, tmp_path / "out.png")
    (tmp_path / "taken.tif").write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        upscale_to_tiff(upscaler, image, tmp_path / "taken.tif")
    with pytest.raises(ImageReadError, match="does not exist"):
        upscale_to_tiff(upscaler, tmp_path / "missing.tif", tmp_path / "out.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match="not a readable TIFF"):
        upscale_to_tiff(upscaler, tmp_path / "broken.tif", tmp_path / "out.tif")
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(ImageReadError, match="3 pages"):
        upscale_to_tiff(upscaler, tmp_path / "pages.tif", tmp_path / "out.tif")
    with pytest.raises(InvalidArgumentError, match="uint8 or uint16"):
        upscale_to_tiff(upscaler, image.astype(np.float32), tmp_path / "out.tif")
    with pytest.raises(InvalidArgumentError, match="memory_budget_mb"):
        upscale_to_tiff(upscaler, image, tmp_path / "out.tif", memory_budget_mb=0)
    with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC), tile=8, halo=2) as u8:
        with pytest.raises(InvalidArgumentError, match="float32-nchw"):
            upscale_to_tiff(u8, image.astype(np.uint16), tmp_path / "out.tif")
    _write_tiff(tmp_path / "small.tif", image)
    with pytest.raises(InvalidArgumentError, match="not inside the 20x20 image"):
        read_region(tmp_path / "small.tif", (10, 21, 0, 5))
    with pytest.raises(ImageReadError, match="3 pages"):
        read_region(tmp_path / "pages.tif", (0, 1, 0, 1))
    assert not (tmp_path / "out.tif").exists()


def test_other_formats_are_decoded_whole_with_a_warning(
    upscaler: Upscaler, rng: np.random.Generator, tmp_path: Path
) -> None:
    image = _image(rng, (25, 19, 3))
    Image.fromarray(image).save(tmp_path / "in.png")
    with pytest.warns(UserWarning, match="decoded whole"):
        result = upscale_to_tiff(upscaler, tmp_path / "in.png", tmp_path / "out.tif", memory_budget_mb=TINY_MB)
    assert not result.lazy_input
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), upscaler.upscale(image))


class _FailingBlur(BlurUp):
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.calls >= 3:
            raise RuntimeError("backend failed on purpose")
        return super()._infer(batch)


def test_a_failure_midway_leaves_nothing_behind(rng: np.random.Generator, tmp_path: Path) -> None:
    image = _image(rng, (60, 20, 3))
    with Upscaler(backend=_FailingBlur(), tile=8, halo=2) as up:
        with pytest.raises(RuntimeError, match="on purpose"):
            upscale_to_tiff(up, image, tmp_path / "out.tif", memory_budget_mb=TINY_MB)
    assert list(tmp_path.iterdir()) == []


def test_stream_if_large_streams_tiff_and_refuses_other_formats(rng: np.random.Generator, tmp_path: Path) -> None:
    backend = BlurUp()
    with Upscaler(backend=backend, tile=8, halo=2) as upscaler:
        image = _image(rng, (40, 30, 3))  # output 80x60x3 = 14400 bytes
        src = _write_tiff(tmp_path / "in.tif", image)
        assert stream_if_large(upscaler, src, tmp_path / "small.png", budget_mb=1) is None  # fits: the normal path
        calls = backend.calls
        with pytest.raises(ImageWriteError, match=r"write it as \.tif"):
            stream_if_large(upscaler, src, tmp_path / "big.png", budget_mb=0.01)
        assert backend.calls == calls  # refused before any compute
        result = stream_if_large(upscaler, src, tmp_path / "big.tif", budget_mb=0.01, band_budget_mb=TINY_MB)
        assert result is not None and len(result.bands) > 1
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "big.tif"), upscaler.upscale(image))


def test_upscale_file_and_the_cli_stream_past_the_output_budget(rng: np.random.Generator, tmp_path: Path) -> None:
    """The hook: Upscaler(output_budget_mb=) and `upscale --output-budget-mb` stream a large
    output to .tif (same pixels as in memory) and refuse .png before any compute."""
    import subprocess
    import sys

    image = _image(rng, (37, 29, 3))
    src = tmp_path / "in.png"
    Image.fromarray(image).save(src)
    with Upscaler(backend=BlurUp(), tile=8, halo=2, output_budget_mb=TINY_MB) as up:
        expected = up.upscale(image)
        out = up.upscale_file(src, tmp_path / "out.tif")
        np.testing.assert_array_equal(tifffile.imread(out), expected)
        with pytest.raises(ImageWriteError, match=r"\.tif"):
            up.upscale_file(src, tmp_path / "out.png")
        assert not (tmp_path / "out.png").exists()
    with pytest.raises(InvalidArgumentError, match="output_budget_mb"):
        Upscaler(backend=BlurUp(), output_budget_mb=0)

    def cli(dst: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "runtime", "upscale", str(src), "-o", str(tmp_path / dst)]
        args += ["--output-budget-mb", "0.001", "--backend", "onnxruntime", "--threads", "1", "--quiet"]
        return subprocess.run(args, capture_output=True, text=True, timeout=300)

    refused = cli("cli.png")  # the flag reached the Upscaler: over budget, PNG cannot stream
    assert refused.returncode != 0 and ".tif" in refused.stderr and not (tmp_path / "cli.png").exists()
    res = cli("cli.tif")
    assert res.returncode == 0, res.stderr
    with Upscaler(backend="onnxruntime") as bundled:
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "cli.tif"), bundled.upscale(image))

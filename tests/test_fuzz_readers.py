"""Fuzzing the image readers and writers (issue 16 point 8) with hypothesis.

Small valid PNG (8- and 16-bit, interlaced), JPEG, TIFF (Pillow's and tifffile's, 16-bit),
GIF (animated), APNG and WebP files are mutated (bytes flipped, inserted, deleted, the file
cut short) and fed to ``read_image`` and ``read_frames``; random arrays (any dtype, shape and
extension) go to ``write_image`` and ``write_frames``. Every outcome must be a result or one
of the runtime's own errors naming the file, never another exception type, and a failed
write must leave the folder as it was: no output, no temporary file.

Examples are derandomised (the same cases every run) and bounded so this runs in seconds on
2 cores; set FOURPP_FUZZ_EXAMPLES=5000 to fuzz longer with fresh random cases.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.errors import ImageReadError, ImageWriteError, InvalidArgumentError, OutputExistsError
from runtime.frames import read_frames, write_frames
from runtime.image_io import _write_png16, read_image, write_image

hypothesis = pytest.importorskip(
    "hypothesis", reason="hypothesis is needed for the fuzz tests (pip install hypothesis)"
)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("FOURPP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 150,
    deadline=timedelta(seconds=5),  # generous: the machine is shared; a hang still fails
    derandomize=not EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _png_interlaced_16() -> bytes:
    """A 16-bit RGB Adam7 PNG (no filters), which Pillow reads through its interlace path."""
    pixels = np.arange(5 * 6 * 3, dtype=np.uint16).reshape(5, 6, 3) * 997
    stream = b""
    for x0, y0, dx, dy in [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]:
        sub = pixels[y0::dy, x0::dx]
        for row in sub.astype(">u2").view(np.uint8).reshape(sub.shape[0], -1) if sub.size else []:
            stream += b"\x00" + row.tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 6, 5, 16, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(stream)) + chunk(b"IEND", b"")


def _seeds() -> dict[str, bytes]:
    import tifffile

    rng = np.random.default_rng(16)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    wide = rng.integers(0, 65536, (7, 9, 3), dtype=np.uint16)
    seeds: dict[str, bytes] = {}

    def pil(name: str, image: Image.Image, **options: object) -> None:
        buffer = io.BytesIO()
        image.save(
            buffer, format=name.rsplit(".", 1)[1].upper().replace("JPG", "JPEG").replace("TIF", "TIFF"), **options
        )
        seeds[name] = buffer.getvalue()

    pil("rgb.png", Image.fromarray(rgb))
    pil("rgba.png", Image.fromarray(rgba))
    pil("gray.png", Image.fromarray(rgb[..., 0]))
    buffer = io.BytesIO()
    _write_png16(buffer, wide, None)
    seeds["rgb16.png"] = buffer.getvalue()
    seeds["adam7_16.png"] = _png_interlaced_16()
    exif = Image.Exif()
    exif[0x0112] = 6
    pil("rgb.jpg", Image.fromarray(rgb), quality=90, exif=exif)
    pil("rgb.tif", Image.fromarray(rgb))
    pil("deflate.tif", Image.fromarray(rgba), compression="tiff_adobe_deflate")
    for name, array, options in [
        ("rgb16.tif", wide, {"photometric": "rgb", "compression": "zlib", "predictor": True}),
        ("la16.tif", wide[..., :2], {"photometric": "minisblack", "extrasamples": ["unassalpha"]}),
    ]:
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, metadata=None, **options)
        seeds[name] = buffer.getvalue()
    frames = [Image.fromarray(np.roll(rgb, i, axis=0)) for i in range(3)]
    for name, options in [
        ("anim.gif", {"duration": [30, 60, 90], "loop": 0}),
        ("anim.png", {"duration": 40, "loop": 2}),
        ("anim.webp", {"duration": 40, "lossless": True}),
        ("pages.tif", {}),
    ]:
        buffer = io.BytesIO()
        frames[0].save(
            buffer,
            format={"gif": "GIF", "png": "PNG", "webp": "WEBP", "tif": "TIFF"}[name.rsplit(".", 1)[1]],
            save_all=True,
            append_images=frames[1:],
            **options,
        )
        seeds[name] = buffer.getvalue()
    return seeds


SEEDS = _seeds()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz_") as folder:
        yield Path(folder)


@pytest.fixture(autouse=True)
def small_bomb_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutated header can claim any size: keep what Pillow will allocate small."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 20)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        # Headers are where parsers branch: bias half of the positions into the first 64 bytes.
        if draw(st.booleans()):
            at %= min(len(data), 64)
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x10, 0x01]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return name, bytes(data)


def _expect_read_result(path: Path, call) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decompression-bomb, 8-bit fallback, multi-frame notes
            result = call(path)
    except ImageReadError as exc:
        assert exc.path == str(path) and str(exc).startswith(f"{path}: ")
        return
    arrays = result[0] if isinstance(result[0], list) else [result[0]]
    for array in arrays:
        assert isinstance(array, np.ndarray) and array.ndim == 3 and 1 <= array.shape[2] <= 4
        assert array.dtype in (np.uint8, np.uint16)


@FUZZ
@given(case=mutated())
def test_mutated_files_give_an_image_or_a_read_error(workdir: Path, case: tuple[str, bytes]) -> None:
    name, data = case
    path = workdir / name
    path.write_bytes(data)
    _expect_read_result(path, read_image)
    _expect_read_result(path, read_frames)


def test_the_seeds_themselves_read(workdir: Path) -> None:
    """The starting files are valid, so mutations start from every reader's happy path."""
    for name, data in SEEDS.items():
        path = workdir / name
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            arrays, info = read_frames(path)
        assert len(arrays) == (3 if name.startswith(("anim", "pages")) else 1), name
        assert arrays[0].dtype == (np.uint16 if "16" in name else np.uint8), name


DTYPES = [np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_, np.int8]
EXTENSIONS = [".png", ".jpg", ".tif", ".webp", ".bmp", ".gif", ".xyz", ""]


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    # Half of the cases are writable (uint8/uint16, H×W×C), so the success path is fuzzed too.
    if draw(st.booleans()):
        dtype = draw(st.sampled_from([np.uint8, np.uint16]))
        shape = draw(st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4)))
    else:
        dtype = draw(st.sampled_from(DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).integers(0, 65536, shape)
    return values.astype(dtype)


def _expect_written(folder: Path, name: str, call) -> None:
    before = sorted(os.listdir(folder))
    path = folder / name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(path)
    except (InvalidArgumentError, ImageWriteError) as exc:
        assert sorted(os.listdir(folder)) == before, f"a failed write left files behind: {exc}"
        if isinstance(exc, ImageWriteError):
            assert exc.path == str(path)
        return
    assert sorted(os.listdir(folder)) == sorted({*before, name})  # the output and nothing else
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_frames(path)  # what was written reads back
    path.unlink()


@FUZZ
@given(array=arrays(), extension=st.sampled_from(EXTENSIONS))
def test_random_arrays_are_written_whole_or_refused_cleanly(workdir: Path, array: np.ndarray, extension: str) -> None:
    folder = workdir / "write"
    folder.mkdir(exist_ok=True)
    _expect_written(folder, f"out{extension}", lambda path: write_image(path, array))


@FUZZ
@given(frames=st.lists(arrays(), min_size=0, max_size=3), extension=st.sampled_from(EXTENSIONS))
def test_random_frame_lists_are_written_whole_or_refused_cleanly(
    workdir: Path, frames: list[np.ndarray], extension: str
) -> None:
    folder = workdir / "frames"
    folder.mkdir(exist_ok=True)
    _expect_written(folder, f"anim{extension}", lambda path: write_frames(path, frames))


@settings(
    max_examples=30,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4)),
    wide=st.booleans(),
    extension=st.sampled_from([".png", ".tif"]),
    seed=st.integers(0, 2**16),
)
def test_lossless_formats_round_trip_exactly(
    workdir: Path, shape: tuple[int, int, int], wide: bool, extension: str, seed: int
) -> None:
    dtype = np.uint16 if wide else np.uint8
    pixels = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    path = write_image(workdir / f"exact{extension}", pixels)
    array, info = read_image(path)
    assert info.dtype == dtype
    np.testing.assert_array_equal(array, pixels)


def test_existing_output_is_refused_before_anything_is_written(workdir: Path) -> None:
    path = workdir / "kept.png"
    write_image(path, np.zeros((2, 2), np.uint8))
    with pytest.raises(OutputExistsError):
        write_frames(path, [np.zeros((2, 2), np.uint8)] * 2, overwrite=False)
    assert read_image(path)[0].max() == 0

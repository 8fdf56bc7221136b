"""Image reading and writing: modes, depths, metadata, bad files, atomic writes."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from runtime.errors import ImageReadError, ImageWriteError, InvalidArgumentError, OutputExistsError
from runtime.image_io import ChannelLayout, ImageInfo, read_image, write_image


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def decode_png16(path: Path) -> np.ndarray:
    """Decode the unfiltered 16-bit PNGs our encoder writes (Pillow would drop 8 bits)."""
    data = path.read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = header[:4]
    assert depth == 16
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].copy().view(">u2").reshape(height, width, channels).astype(np.uint16)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    "mode,layout,shape",
    [
        ("L", ChannelLayout.GRAY, (6, 5, 1)),
        ("LA", ChannelLayout.GRAY_ALPHA, (6, 5, 2)),
        ("RGB", ChannelLayout.RGB, (6, 5, 3)),
        ("RGBA", ChannelLayout.RGBA, (6, 5, 4)),
    ],
)
def test_8bit_png_round_trip(
    tmp_path: Path, rng: np.random.Generator, mode: str, layout: ChannelLayout, shape: tuple
) -> None:
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path = write_image(tmp_path / "a.png", pixels)
    array, info = read_image(path)
    assert info.layout is layout and info.dtype == np.uint8 and info.mode == mode
    assert info.ndim == (2 if mode == "L" else 3)
    np.testing.assert_array_equal(array, pixels)


def test_16bit_gray_png_and_tiff_stay_16bit(tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 65536, (9, 7), dtype=np.uint16)
    for name in ("g.png", "g.tif"):
        path = write_image(tmp_path / name, pixels)
        array, info = read_image(path)
        assert info.dtype == np.uint16 and info.layout is ChannelLayout.GRAY, name
        np.testing.assert_array_equal(array[:, :, 0], pixels)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_written_exactly(
    tmp_path: Path, rng: np.random.Generator, channels: int, srgb_icc: bytes
) -> None:
    pixels = rng.integers(0, 65536, (5, 8, channels), dtype=np.uint16)
    info = ImageInfo(layout=ChannelLayout.from_channels(channels), dtype=np.dtype(np.uint16), icc_profile=srgb_icc)
    path = write_image(tmp_path / "c.png", pixels, info)
    np.testing.assert_array_equal(decode_png16(path), pixels)
    with Image.open(path) as im:  # a valid PNG for other readers, with the profile
        im.load()
        assert (im.info.get("icc_profile") == srgb_icc) == (channels >= 3)


def _png16_filtered(pixels: np.ndarray, *, interlaced: bool) -> bytes:
    """A 16-bit PNG from an independent encoder: every row filter (None, Sub, Up, Average,
    Paeth in turn) and optionally Adam7 interlacing, to check the decoder's ``bpp`` handling."""
    height, width, channels = pixels.shape
    bpp = 2 * channels
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    stream = b""
    for x0, y0, dx, dy in passes if interlaced else [(0, 0, 1, 1)]:
        sub = pixels[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = sub.astype(">u2").view(np.uint8).reshape(sub.shape[0], -1).astype(np.int32)
        previous = np.zeros_like(rows[0])
        for index, row in enumerate(rows):
            kind = index % 5
            left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
            upleft = np.concatenate([np.zeros(bpp, np.int32), previous[:-bpp]])
            estimate = left + previous - upleft
            pa, pb, pc = np.abs(estimate - left), np.abs(estimate - previous), np.abs(estimate - upleft)
            paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, previous, upleft))
            predictor = [0, left, previous, (left + previous) // 2, paeth][kind]
            stream += bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes()
            previous = row
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlaced))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(stream)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_colour_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator, channels: int, suffix: str) -> None:
    # Before issue 16 a 16-bit RGB PNG came back as its high bytes (uint8, with a warning)
    # and a 16-bit RGB TIFF could not be written (and read back silently at 8 bits).
    pixels = rng.integers(0, 65536, (13, 11, channels), dtype=np.uint16)
    path = write_image(tmp_path / f"c{suffix}", pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "decoded at 8 bits" warning any more
        array, info = read_image(path)
    assert info.dtype == np.uint16 and info.bit_depth == 16 and info.layout is ChannelLayout.from_channels(channels)
    np.testing.assert_array_equal(array, pixels)


@pytest.mark.parametrize("interlaced", [False, True], ids=["progressive", "adam7"])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_png_with_every_row_filter_and_interlacing(
    tmp_path: Path, rng: np.random.Generator, channels: int, interlaced: bool
) -> None:
    pixels = rng.integers(0, 65536, (19, 23, channels), dtype=np.uint16)
    pixels[:8] = pixels[:1]  # smooth rows too, where Up/Paeth predict well
    path = tmp_path / "f.png"
    path.write_bytes(_png16_filtered(pixels, interlaced=interlaced))
    array, info = read_image(path)
    assert info.dtype == np.uint16
    np.testing.assert_array_equal(array, pixels)


@pytest.mark.parametrize(
    "options",
    [
        {},  # uncompressed: Pillow's raw decoder
        {"compression": "zlib", "predictor": True},  # libtiff's decoder
        {"byteorder": ">"},  # big-endian samples
        {"planarconfig": "separate"},  # one plane per channel: Pillow cannot, tifffile does
        {"extrasamples": ["assocalpha"]},  # premultiplied alpha, divided out
    ],
    ids=["raw", "deflate-predictor", "big-endian", "planar", "premultiplied"],
)
def test_16bit_colour_tiff_variants(tmp_path: Path, rng: np.random.Generator, options: dict) -> None:
    import tifffile

    channels = 4 if "extrasamples" in options else 3
    pixels = rng.integers(0, 65536, (9, 14, channels), dtype=np.uint16)
    expected = pixels
    if "extrasamples" in options:  # store premultiplied colour, expect it straight again
        pixels[..., 3] = np.maximum(pixels[..., 3], 1000)
        premultiplied = pixels.copy()
        premultiplied[..., :3] = np.rint(pixels[..., :3] * (pixels[..., 3:] / 65535.0)).astype(np.uint16)
        expected, pixels = pixels, premultiplied
    stored = np.moveaxis(pixels, -1, 0) if options.get("planarconfig") == "separate" else pixels  # tifffile: S×Y×X
    tifffile.imwrite(tmp_path / "v.tif", stored, photometric="rgb", metadata=None, **options)
    array, info = read_image(tmp_path / "v.tif")
    assert info.dtype == np.uint16
    if "extrasamples" in options:  # premultiplying rounds: within the rounding of a low alpha
        assert np.abs(array.astype(np.int64) - expected).max() <= 65535 / 1000
    else:
        np.testing.assert_array_equal(array, expected)


def test_16bit_tiff_orientation_is_applied(tmp_path: Path, rng: np.random.Generator) -> None:
    import tifffile

    pixels = rng.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "o.tif", pixels, photometric="rgb", metadata=None, extratags=[(274, 3, 1, 6, True)])
    array, info = read_image(tmp_path / "o.tif")
    assert info.orientation_applied and array.shape == (10, 6, 3)
    np.testing.assert_array_equal(array, np.rot90(pixels, -1))  # 6: rotate 90° clockwise for display


def test_16bit_colour_icc_profile_kept_in_tiff(tmp_path: Path, rng: np.random.Generator, srgb_icc: bytes) -> None:
    pixels = rng.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    info = ImageInfo(layout=ChannelLayout.RGB, dtype=np.dtype(np.uint16), icc_profile=srgb_icc)
    write_image(tmp_path / "icc.tif", pixels, info)
    array, read_info = read_image(tmp_path / "icc.tif")
    assert read_info.icc_profile == srgb_icc
    np.testing.assert_array_equal(array, pixels)


def test_palette_and_bilevel_images(tmp_path: Path) -> None:
    Image.new("P", (4, 3), 7).save(tmp_path / "p.png")
    transparent = Image.new("P", (4, 3), 0)
    transparent.info["transparency"] = 0
    transparent.save(tmp_path / "pt.png", transparency=0)
    Image.new("1", (4, 3), 1).save(tmp_path / "b.png")
    assert read_image(tmp_path / "p.png")[1].layout is ChannelLayout.RGB
    array, info = read_image(tmp_path / "pt.png")
    assert info.layout is ChannelLayout.RGBA and (array[:, :, 3] == 0).all()
    array, info = read_image(tmp_path / "b.png")
    assert info.layout is ChannelLayout.GRAY and array.dtype == np.uint8 and (array == 255).all()


def test_cmyk_jpeg_reads_as_rgb_with_warning(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    with pytest.warns(UserWarning, match="cmyk.jpg: CMYK image converted to RGB"):
        array, info = read_image(tmp_path / "cmyk.jpg")
    assert info.layout is ChannelLayout.RGB and info.mode == "CMYK" and info.icc_profile is None
    assert array.shape == (6, 8, 3)
    assert array[..., 0].mean() > 200 and array[..., 1].mean() < 60  # cyan-free magenta+yellow = red


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (48, 32), (10, 20, 30))
    image.paste((255, 0, 0), (0, 0, 16, 16))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    image.save(tmp_path / "o.jpg", exif=exif, quality=100)
    array, info = read_image(tmp_path / "o.jpg")
    assert array.shape == (48, 32, 3) and info.orientation_applied
    assert array[2:14, -14:-2, 0].min() > 200  # the red top-left block is now top-right
    assert array[2:14, 2:14, 0].max() < 60


def test_icc_profile_is_read_and_written(tmp_path: Path, srgb_icc: bytes) -> None:
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "icc.png", icc_profile=srgb_icc)
    array, info = read_image(tmp_path / "icc.png")
    assert info.icc_profile == srgb_icc
    for name in ("out.png", "out.jpg", "out.webp", "out.tif"):
        write_image(tmp_path / name, array, info)
        with Image.open(tmp_path / name) as im:
            assert im.info.get("icc_profile") == srgb_icc, name
    write_image(tmp_path / "gray.png", array[:, :, 0], info)  # an RGB profile does not fit gray
    with Image.open(tmp_path / "gray.png") as im:
        assert "icc_profile" not in im.info


def test_pil_image_and_array_sources() -> None:
    array, info = read_image(Image.new("LA", (3, 2)))
    assert array.shape == (2, 3, 2) and info.layout is ChannelLayout.GRAY_ALPHA and info.path is None
    source = np.zeros((5, 4), np.float32)
    view, info = read_image(source)
    assert view.shape == (5, 4, 1) and np.shares_memory(view, source) and info.ndim == 2


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((4, 4, 3), np.float64), "float64"),
        (np.zeros((4, 4, 3), np.int32), "int32"),
        (np.zeros((4, 4, 5), np.uint8), r"\(4, 4, 5\)"),
        (np.zeros((4,), np.uint8), r"\(4,\)"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_bad_arrays_are_rejected(array: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        read_image(array)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_png(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda d: d / "missing.png", "file not found"),
        (lambda d: d, "is a folder"),
        (lambda d: _write(d / "empty.png", b""), "empty"),
        (lambda d: _write(d / "text.png", b"not an image\n"), "not a recognised image"),
        (lambda d: _truncated_png(d / "cut.png"), "corrupt or truncated"),
        (
            lambda d: Image.new("F", (3, 3)).save(d / "float.tif") or d / "float.tif",
            "32-bit float images are not supported",
        ),
    ],
    ids=["missing", "folder", "zero-bytes", "text-as-png", "truncated", "float-tiff"],
)
def test_bad_files_raise_read_error_naming_the_file(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ") and reason in str(info.value)


# --------------------------------------------------------------------------- writing


def test_write_errors_name_the_path_and_leave_nothing(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), np.uint8)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [
        (blocker / "out.png", "is not a folder"),  # fails even for root, unlike chmod
        (tmp_path / "missing" / "out.png", "does not exist"),
        (tmp_path / "out.xyz", "unknown output extension"),
        (tmp_path, "unknown output extension"),
    ]
    for path, reason in cases:
        with pytest.raises(ImageWriteError) as info:
            write_image(path, pixels)
        assert info.value.path == str(path) and reason in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


@pytest.mark.parametrize(
    "name,array,reason",
    [
        ("a.jpg", np.zeros((4, 4, 3), np.uint16), "JPEG cannot store 16-bit rgb"),
        ("a.webp", np.zeros((4, 4, 3), np.uint16), "WEBP cannot store 16-bit rgb"),
        ("a.gif", np.zeros((4, 4, 3), np.uint16), "GIF cannot store 16-bit rgb"),
        ("a.jpg", np.zeros((4, 4, 4), np.uint8), "JPEG cannot store an alpha channel"),
        ("a.bmp", np.zeros((4, 4, 2), np.uint8), "BMP cannot store an alpha channel"),
        ("a.png", np.zeros((4, 4, 3), np.float32), "cannot store float32"),
    ],
)
def test_format_limits_raise_instead_of_losing_data(tmp_path: Path, name: str, array: np.ndarray, reason: str) -> None:
    with pytest.raises(ImageWriteError, match=reason):
        write_image(tmp_path / name, array)
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    write_image(path, np.zeros((2, 2), np.uint8))
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        write_image(path, np.full((2, 2), 9, np.uint8), overwrite=False)
    assert read_image(path)[0].max() == 0
    write_image(path, np.full((2, 2), 9, np.uint8))
    assert read_image(path)[0].min() == 9


def test_failed_encode_leaves_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    write_image(path, np.full((2, 2), 7, np.uint8))

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageWriteError, match="disk full"):
        write_image(path, np.zeros((2, 2), np.uint8))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["a.png"]
    assert read_image(path)[0].min() == 7


# --------------------------------------------------------------------------- through the Upscaler


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_file_upscales_to_a_16bit_file(tmp_path: Path, suffix: str) -> None:
    """A 16-bit RGB file through the bundled model comes out a 16-bit file, not its high bytes."""
    from runtime import Upscaler

    y, x = np.mgrid[0:12, 0:10]
    pixels = np.stack([y * 5000 + 7, x * 6000 + 3, (x + y) * 2900 + 11], axis=-1).astype(np.uint16)
    src = write_image(tmp_path / f"in{suffix}", pixels)
    with Upscaler(backend="onnxruntime") as up:
        dst = up.upscale_file(src, tmp_path / f"out{suffix}")
        from_8bit = up.upscale((pixels >> 8).astype(np.uint8))
    array, info = read_image(dst)
    assert info.dtype == np.uint16 and array.shape == (48, 40, 3)
    assert len(np.unique(array & 0xFF)) > 64  # real low bytes, not a high byte repeated or zeros
    # the same picture as the 8-bit path, within the 8-bit path's rounding
    assert np.abs(array / 257.0 - from_8bit).mean() < 1.5


def test_output_format_limits_are_checked_before_any_compute(tmp_path: Path) -> None:
    from runtime.image_io import check_output_path

    wide = ImageInfo(layout=ChannelLayout.RGB, dtype=np.dtype(np.uint16))
    alpha = ImageInfo(layout=ChannelLayout.RGBA, dtype=np.dtype(np.uint8))
    assert check_output_path(tmp_path / "a.jpg") == "JPEG"  # no info: the extension only, as before
    with pytest.raises(ImageWriteError, match="JPEG cannot store 16-bit rgb pixels; write .png or .tif"):
        check_output_path(tmp_path / "a.jpg", info=wide)
    with pytest.raises(ImageWriteError, match="BMP cannot store an alpha channel"):
        check_output_path(tmp_path / "a.bmp", info=alpha)
    assert check_output_path(tmp_path / "a.tif", info=wide) == "TIFF"
    assert check_output_path(tmp_path / "a.gif", info=alpha) == "GIF"  # 1-bit transparency
    assert os.listdir(tmp_path) == []

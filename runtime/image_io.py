"""Reading and writing images: Pillow in, numpy H×W×C arrays out, atomic writes back.

Reading normalises what Pillow can hand back (palette, 1-bit, CMYK, 16-bit modes, EXIF
rotation) into one of four channel layouts (gray, gray+alpha, RGB, RGBA) and one of the
dtypes the runtime processes (uint8, uint16; float32 only from arrays), and records what
is needed to write the result back faithfully (:class:`ImageInfo`: ICC profile, layout,
original mode). Every failure is an :class:`~runtime.errors.ImageReadError` or
:class:`~runtime.errors.ImageWriteError` naming the file and the reason.

Writing is atomic: the image is encoded into a temporary file in the destination folder
and renamed over the destination with :func:`os.replace`, so a crash or an encoder error
never leaves a half-written image behind.

Pillow limits, stated once: Pillow 10-13 decodes 16-bit-per-channel *colour* PNGs to 8
bits (there is no 16-bit RGB mode), so such files are read as uint8 with a warning; 16-bit
gray PNG/TIFF stay 16-bit. 16-bit colour arrays are written as PNG by a small encoder
here, since Pillow cannot write them either.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, ImageWriteError, InvalidArgumentError, OutputExistsError

__all__ = [
    "ChannelLayout",
    "ImageInfo",
    "ImageSource",
    "READ_EXTENSIONS",
    "WRITE_FORMATS",
    "check_output_path",
    "is_image_path",
    "read_image",
    "write_image",
]

log = logging.getLogger(__name__)

ImageSource = str | os.PathLike | Image.Image | np.ndarray
"""Anything :func:`read_image` (and so :meth:`runtime.Upscaler.upscale`) accepts."""

READ_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"}
)
"""File extensions treated as images when a folder is expanded (case-insensitive)."""

WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
"""Output extension → Pillow format."""

_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_UINT16_GRAY_FORMATS = {"PNG", "TIFF"}
_ARRAY_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112


class ChannelLayout(str, Enum):
    """Channel layout of an image; the value is what messages and logs show."""

    GRAY = "gray"
    GRAY_ALPHA = "gray+alpha"
    RGB = "rgb"
    RGBA = "rgba"

    @property
    def channels(self) -> int:
        return _CHANNELS[self]

    @property
    def has_alpha(self) -> bool:
        return self in (ChannelLayout.GRAY_ALPHA, ChannelLayout.RGBA)

    @classmethod
    def from_channels(cls, channels: int) -> ChannelLayout:
        return _LAYOUTS[channels]


_CHANNELS = {ChannelLayout.GRAY: 1, ChannelLayout.GRAY_ALPHA: 2, ChannelLayout.RGB: 3, ChannelLayout.RGBA: 4}
_LAYOUTS = {c: layout for layout, c in _CHANNELS.items()}


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """What was read, beyond the pixels: enough to give the caller back the same kind.

    ``ndim`` is 2 when the caller handed (or Pillow decodes to) a 2-D gray image, so the
    result can be 2-D too. ``mode`` and ``format`` are Pillow's, ``None`` for arrays.
    """

    layout: ChannelLayout
    dtype: np.dtype
    ndim: int = 3
    mode: str | None = None
    format: str | None = None
    icc_profile: bytes | None = None
    path: str | None = None
    orientation_applied: bool = False


# --------------------------------------------------------------------------- reading


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image extension (used to filter folder listings)."""
    return Path(path).suffix.lower() in READ_EXTENSIONS


def read_image(source: ImageSource) -> tuple[np.ndarray, ImageInfo]:
    """Read ``source`` into an H×W×C array (C in 1..4) and its :class:`ImageInfo`.

    Arrays are validated and returned as views (2-D gray gets a channel axis), never
    copied. PIL images and files are decoded, with EXIF orientation applied.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        try:
            source.load()
        except Exception as exc:
            raise ImageReadError(name, f"cannot decode the image data ({exc})") from exc
        return _from_pil(source, name=name)
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source))
    raise InvalidArgumentError(
        f"image must be a file path, a PIL.Image.Image or a numpy array, got {type(source).__name__}"
    )


def _from_array(array: np.ndarray) -> tuple[np.ndarray, ImageInfo]:
    ndim = array.ndim
    if ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4:
        raise InvalidArgumentError(
            f"image array must be H×W or H×W×C with C in 1..4 (gray, gray+alpha, RGB, RGBA), "
            f"got shape {array.shape if ndim != 2 else array.shape[:2]}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidArgumentError(f"image array is empty: shape {array.shape}")
    if array.dtype not in _ARRAY_DTYPES:
        raise InvalidArgumentError(
            f"image array dtype must be uint8, uint16 or float32 (values 0..255), got "
            f"{array.dtype}; convert it, e.g. np.clip(a * 255, 0, 255).astype(np.float32) for "
            "floats in 0..1"
        )
    layout = ChannelLayout.from_channels(array.shape[2])
    return array, ImageInfo(layout=layout, dtype=array.dtype, ndim=ndim)


def _read_path(path: Path) -> tuple[np.ndarray, ImageInfo]:
    if not path.exists():
        raise ImageReadError(path, "file not found; check the path")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, expected an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot access the file ({exc.strerror})") from exc
    if size == 0:
        raise ImageReadError(path, "file is empty (0 bytes); it is not an image")
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(
            path,
            f"not a recognised image: Pillow cannot identify its format (is it really a "
            f"{path.suffix.lstrip('.').upper() or 'image'} file?)",
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"{exc}; raise PIL.Image.MAX_IMAGE_PIXELS if you trust it") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc})") from exc
    with image:
        try:
            image.load()  # Pillow decodes lazily: force it so bad data fails here, named
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, f"{exc}; raise PIL.Image.MAX_IMAGE_PIXELS if you trust it") from exc
        except Exception as exc:
            raise ImageReadError(
                path, f"image data is corrupt or truncated ({exc}); re-export or re-download the file"
            ) from exc
        _warn_if_png_loses_depth(path)
        return _from_pil(image, name=str(path))


def _warn_if_png_loses_depth(path: Path) -> None:
    """Say so when Pillow has just decoded a 16-bit colour PNG to 8 bits per channel."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        bit_depth, colour_type = head[24], head[25]
        if bit_depth == 16 and colour_type in (2, 4, 6):
            warnings.warn(
                f"{path}: 16-bit colour PNG decoded at 8 bits per channel (Pillow has no 16-bit "
                "RGB mode); the result is 8-bit. For 16-bit colour, pass a uint16 array",
                stacklevel=4,
            )


def _from_pil(image: Image.Image, *, name: str) -> tuple[np.ndarray, ImageInfo]:
    mode, fmt = image.mode, image.format
    icc = image.info.get("icc_profile") or None
    oriented = False
    if image.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1):
        image = ImageOps.exif_transpose(image)
        oriented = True

    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        array = np.asarray(image).astype(np.uint16)  # native byte order
    elif mode == "I":
        array = np.asarray(image)
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ImageReadError(
                name,
                f"32-bit integer pixels in {low}..{high} are outside 0..65535; only 8- and 16-bit images are supported",
            )
        array = array.astype(np.uint16)
    elif mode == "F":
        raise ImageReadError(
            name,
            "32-bit float images are not supported (their value range is unknown); convert "
            "to 8/16-bit or pass a float32 array in 0..255",
        )
    else:
        target = _PIL_CONVERSIONS.get(mode)
        if target is None:
            raise ImageReadError(
                name,
                f"unsupported image mode {mode!r}; supported: 1, L, LA, P, RGB, RGBA, CMYK, YCbCr and 16-bit gray",
            )
        if mode == "P":
            target = "RGBA" if "transparency" in image.info else "RGB"
        if mode == "CMYK":
            warnings.warn(
                f"{name}: CMYK image converted to RGB without colour management; colours may "
                "shift and its CMYK ICC profile is dropped",
                stacklevel=4,
            )
            icc = None
        if image.mode != target:
            image = image.convert(target)
        array = np.asarray(image)

    if array.ndim == 2:
        array = array[:, :, None]
    layout = ChannelLayout.from_channels(array.shape[2])
    info = ImageInfo(
        layout=layout,
        dtype=array.dtype,
        ndim=2 if layout is ChannelLayout.GRAY else 3,
        mode=mode,
        format=fmt,
        icc_profile=icc,
        path=name if not name.startswith("<") else None,
        orientation_applied=oriented,
    )
    return array, info


_PIL_CONVERSIONS = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "P": "RGB",  # RGBA when the palette has transparency, see _from_pil
    "PA": "RGBA",
    "RGB": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "YCbCr": "RGB",
    "CMYK": "RGB",
}


# --------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    info: ImageInfo | None = None,
    *,
    overwrite: bool = True,
    quality: int = 95,
) -> Path:
    """Write an H×W or H×W×C (C in 1..4) uint8/uint16 array to ``path``, atomically.

    The format comes from the extension (see :data:`WRITE_FORMATS`); ``info``'s ICC
    profile is embedded when the format can hold one and it matches the channels. uint16
    goes to 16-bit PNG (or 16-bit gray TIFF); formats that cannot store the array's depth
    or alpha raise instead of silently dropping data. ``quality`` applies to JPEG/WebP.
    """
    path = Path(path)
    fmt = check_output_path(path, overwrite=overwrite)
    array = _check_output_array(path, array)
    icc = _compatible_icc(info, array.shape[2])
    encode = _encoder(path, fmt, array, icc, quality)
    _atomic_write(path, encode)
    log.debug("wrote %s (%s, %s, %dx%d)", path, fmt, array.dtype, array.shape[1], array.shape[0])
    return path


def check_output_path(path: str | os.PathLike, *, overwrite: bool = True) -> str:
    """Check that ``path`` can receive an image before any work is spent on it.

    Returns the Pillow format chosen by the extension; raises
    :class:`~runtime.errors.ImageWriteError` (or :class:`~runtime.errors.OutputExistsError`)
    for an unknown extension, a missing folder, a folder in the way, or an existing file
    when ``overwrite`` is false.
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageWriteError(
            path, f"unknown output extension {path.suffix!r}; use one of {', '.join(sorted(WRITE_FORMATS))}"
        )
    parent = path.parent
    if not parent.exists():
        raise ImageWriteError(path, f"output folder {str(parent)!r} does not exist; create it first")
    if not parent.is_dir():
        raise ImageWriteError(path, f"{str(parent)!r} is not a folder, so nothing can be written inside it")
    if path.is_dir():
        raise ImageWriteError(path, "is a folder; give a file name for the output image")
    if not overwrite and path.exists():
        raise OutputExistsError(path, "already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    return fmt


def _check_output_array(path: Path, array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"image to write to {path} must be a numpy array, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4 or 0 in array.shape:
        raise InvalidArgumentError(
            f"image to write to {path} must be H×W or H×W×C with C in 1..4, got shape {array.shape}"
        )
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageWriteError(
            path,
            f"cannot store {array.dtype} pixels; convert to uint8 or uint16 first, e.g. "
            "np.clip(a, 0, 255).round().astype(np.uint8)",
        )
    return array


def _compatible_icc(info: ImageInfo | None, channels: int) -> bytes | None:
    """The ICC profile of ``info`` if its colour space matches the output's channels."""
    icc = info.icc_profile if info is not None else None
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    wanted = b"GRAY" if channels <= 2 else b"RGB "
    if space != wanted:
        log.info("ICC profile for colour space %r not carried to a %d-channel output", space, channels)
        return None
    return icc


def _encoder(path: Path, fmt: str, array: np.ndarray, icc: bytes | None, quality: int) -> Callable[[BinaryIO], None]:
    channels = array.shape[2]
    if channels in (2, 4) and fmt not in _ALPHA_FORMATS:
        raise ImageWriteError(path, f"{fmt} cannot store an alpha channel; write .png, .webp or .tif to keep it")
    if array.dtype == np.uint16:
        if channels == 1 and fmt in _UINT16_GRAY_FORMATS:
            image = Image.fromarray(np.ascontiguousarray(array[:, :, 0]))  # mode I;16
            return _pil_encoder(image, fmt, icc, quality)
        if fmt == "PNG":
            return lambda f: _write_png16(f, array, icc)
        raise ImageWriteError(
            path,
            f"{fmt} cannot store 16-bit {ChannelLayout.from_channels(channels).value} pixels; "
            "write .png (or .tif for gray) to keep 16 bits, or convert to uint8",
        )
    image = Image.fromarray(np.ascontiguousarray(array if channels > 1 else array[:, :, 0]))  # L/LA/RGB/RGBA
    return _pil_encoder(image, fmt, icc, quality)


def _pil_encoder(image: Image.Image, fmt: str, icc: bytes | None, quality: int) -> Callable[[BinaryIO], None]:
    options: dict[str, object] = {}
    if icc and fmt != "BMP":
        options["icc_profile"] = icc
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=0)
    elif fmt == "WEBP":
        options.update(quality=quality)
    return lambda f: image.save(f, format=fmt, **options)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _write_png16(f: BinaryIO, array: np.ndarray, icc: bytes | None) -> None:
    """Encode an H×W×C uint16 array as a 16-bit PNG (no row filters; zlib level 6)."""
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.zeros((height, 1 + width * channels * 2), dtype=np.uint8)  # byte 0: filter "None"
    rows[:, 1:] = array.astype(">u2").view(np.uint8).reshape(height, -1)
    f.write(_PNG_SIGNATURE)
    f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)))
    if icc:
        f.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    f.write(_png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)))
    f.write(_png_chunk(b"IEND", b""))


def _atomic_write(path: Path, encode: Callable[[BinaryIO], None]) -> None:
    """Run ``encode`` into a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    except OSError as exc:
        raise ImageWriteError(path, f"cannot create a file in {str(path.parent)!r} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            encode(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, Exception) and not isinstance(exc, ImageWriteError):
            raise ImageWriteError(path, f"writing failed ({exc}); nothing was written") from exc
        raise

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

16 bits per channel stay 16 bits. Pillow 10-13 has no 16-bit colour mode: it decodes a
16-bit RGB(A) PNG or TIFF to the high byte of each sample. So for those files Pillow still
parses the file and runs its own decoder (zlib and the PNG row filters, every TIFF
compression libtiff knows, Adam7), once more with the unpacker of the opposite byte order,
which yields the low bytes (:func:`_decode_wide`); TIFFs Pillow cannot unpack at all (16-bit
gray+alpha, separate planes) are read with tifffile. 16-bit colour is written as PNG by a
small encoder here and as TIFF by tifffile (deflate with the horizontal predictor).

A multi-frame file (animated GIF/PNG/WebP, multi-page TIFF) read by :func:`read_image` gives
its first frame with a :class:`MultiFrameWarning`; :mod:`runtime.frames` reads and writes
every frame.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import secrets
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

from ._deps import require
from .errors import ImageReadError, ImageWriteError, InvalidArgumentError, OutputExistsError, UpscaleError

__all__ = [
    "ChannelLayout",
    "ImageInfo",
    "ImageSource",
    "MultiFrameWarning",
    "READ_EXTENSIONS",
    "WRITE_FORMATS",
    "FLOAT_RANGE",
    "check_float_range",
    "check_output_path",
    "is_image_path",
    "pixel_limit",
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
    ".gif": "GIF",
}
"""Output extension → Pillow format (several frames: :data:`runtime.frames.FRAME_FORMATS`)."""

_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "GIF"}  # GIF: 1-bit, alpha < 128 is transparent
_UINT16_GRAY_FORMATS = {"PNG", "TIFF"}
_ARRAY_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_EXIF_ORIENTATION = 0x0112
_TIFF_ICC = 34675
_TIFF_BITS_PER_SAMPLE = 258


class MultiFrameWarning(UserWarning):
    """A single-image API read the first frame of a file that holds several."""


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
    ``dtype`` carries the bit depth (:attr:`bit_depth`): a 16-bit file is read as uint16, the
    Upscaler returns uint16 for it, and :func:`write_image` writes uint16 at 16 bits.
    """

    layout: ChannelLayout
    dtype: np.dtype
    ndim: int = 3
    mode: str | None = None
    format: str | None = None
    icc_profile: bytes | None = None
    path: str | None = None
    orientation_applied: bool = False

    @property
    def bit_depth(self) -> int:
        """Bits per channel: 8 (uint8), 16 (uint16) or 32 (float32), read off ``dtype``."""
        return self.dtype.itemsize * 8


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
            f"{array.dtype}; convert it, e.g. (a * 255).astype(np.float32) for floats in 0..1, "
            "a.astype(np.float32) for floats in 0..255"
        )
    if array.dtype == np.float32:
        check_float_range(array)
    layout = ChannelLayout.from_channels(array.shape[2])
    return array, ImageInfo(layout=layout, dtype=array.dtype, ndim=ndim)


FLOAT_RANGE = (0.0, 255.0)
"""The value range of float32 image arrays, in and out: the model's own (uint8's levels)."""

_FLOAT_SLACK = 0.5
"""How far outside :data:`FLOAT_RANGE` an input value may lie: half a level, what earlier
float arithmetic leaves on a 0..255 image (255.2, -1e-5); it rounds into the range."""


def check_float_range(array: np.ndarray, *, what: str = "float32 image array") -> None:
    """Refuse float pixels that are not finite or not in 0..255 (:data:`FLOAT_RANGE`).

    The model computes in 0..255, so anything else gives silent garbage: NaN spreads into
    every window it touches, -280..647 comes back as -294..660, and the common 0..1
    convention comes back as noise around 0. Values in 0..1 are named as such. Two passes
    over the array (min and max, which propagate NaN), no copy.
    """
    low, high = float(array.min()), float(array.max())
    lo, hi = FLOAT_RANGE
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = "NaN" if np.isnan(low) or np.isnan(high) else "infinite values"
        raise InvalidArgumentError(
            f"{what} holds {bad}; pixels must be finite numbers in {lo:g}..{hi:g}, e.g. "
            "np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0) if those pixels may be black or white"
        )
    if low < lo - _FLOAT_SLACK or high > hi + _FLOAT_SLACK:
        raise InvalidArgumentError(
            f"{what} has values in {low:g}..{high:g}, outside {lo:g}..{hi:g} (the model's range, "
            "as uint8 levels); rescale it, e.g. np.clip(a, 0, 255) if it only overshoots, or "
            "(a - a.min()) * (255 / (a.max() - a.min())) for data of another range"
        )
    if 0.0 < high <= 1.0:
        raise InvalidArgumentError(
            f"{what} has values in {low:g}..{high:g}: that looks like the 0..1 convention, but "
            f"float pixels here are in {lo:g}..{hi:g} (as uint8 levels); pass a * 255 (the result "
            "is in 0..255 too: divide it by 255); a 0..255 image this dark: pass it as uint8"
        )


def _read_path(path: Path) -> tuple[np.ndarray, ImageInfo]:
    check_readable(path)
    try:
        image = open_image(path)
    except ImageReadError:
        if not is_tiff(path):
            raise
        array_info = _read_tiff_page_or_none(path, 0)  # TIFFs Pillow has no mode for (16-bit gray+alpha)
        if array_info is None:
            raise
        return array_info
    with image, decoding(path):
        frames = frame_count(image, path)
        state = load_frame(image, path)
        if frames > 1:
            warnings.warn(
                f"{path}: holds {frames} frames ({_kind_of_frames(image)}); read_image returns the first "
                "only. Use runtime.frames.read_frames and write_frames to keep every frame",
                MultiFrameWarning,
                stacklevel=3,
            )
        return decode_frame(image, path, state)


def check_readable(path: Path) -> None:
    """Raise :class:`ImageReadError` unless ``path`` is an existing, non-empty file."""
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


_PIXEL_LIMIT: int | None = None


@contextlib.contextmanager
def pixel_limit(limit: int) -> Iterator[None]:
    """Refuse images of more than ``limit`` pixels inside the block, with the message of
    :func:`open_image`; Pillow alone warns above its ``MAX_IMAGE_PIXELS`` and refuses only
    above twice it. Sets that knob to ``limit`` and makes its warning an error; restored
    after. Not thread-safe (Pillow's limit is global): the CLI's ``--max-pixels``."""
    global _PIXEL_LIMIT
    saved = Image.MAX_IMAGE_PIXELS, _PIXEL_LIMIT
    Image.MAX_IMAGE_PIXELS = _PIXEL_LIMIT = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, _PIXEL_LIMIT = saved


def _bomb_message(path: Path, exc: Exception) -> ImageReadError:
    """Pillow's decompression-bomb refusal in words a CLI user and a caller can act on."""
    numbers = [int(n) for n in re.findall(r"\((\d+) pixels\)|limit of (\d+)", str(exc)) for n in n if n]
    if len(numbers) != 2:
        return ImageReadError(
            path,
            f"{exc}; if you trust the file, raise the limit: --max-pixels on the command "
            "line, PIL.Image.MAX_IMAGE_PIXELS in Python",
        )
    pixels, limit = numbers
    if _PIXEL_LIMIT is not None:
        limit = _PIXEL_LIMIT  # Pillow says 2x MAX_IMAGE_PIXELS when it refuses by itself
    return ImageReadError(
        path,
        f"{pixels:,} pixels is above the limit of {limit:,} (a guard against decompression bombs: small files "
        f"that decode to gigabytes); if you trust the file, raise the limit: --max-pixels {pixels} on the "
        f"command line, PIL.Image.MAX_IMAGE_PIXELS = {pixels} in Python",
    )


def open_image(path: Path) -> ImageFile.ImageFile:
    """``Image.open`` with every failure turned into an :class:`ImageReadError` naming ``path``."""
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(
            path,
            f"not a recognised image: Pillow cannot identify its format (is it really a "
            f"{path.suffix.lstrip('.').upper() or 'image'} file?)",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning: made an error
        raise _bomb_message(path, exc) from exc
    except MemoryError as exc:
        raise ImageReadError(path, "too large to open in the memory available") from exc
    except Exception as exc:
        raise ImageReadError(path, f"cannot open the file ({type(exc).__name__}: {exc})") from exc


class decoding:
    """Turn any exception a decoder raises on bad data into an :class:`ImageReadError`.

    Pillow's plugins (and tifffile) raise ValueError, SyntaxError, struct.error, EOFError,
    IndexError, ZeroDivisionError... on corrupt or truncated files; callers get one error
    class naming the file instead. The runtime's own errors pass through unchanged.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise _bomb_message(self.path, exc) from exc
        if exc is None or isinstance(exc, (UpscaleError, Warning)) or not isinstance(exc, Exception):
            return  # success, an error already explained, a warning made an error, or KeyboardInterrupt
        if isinstance(exc, MemoryError):
            raise ImageReadError(self.path, "too large to decode in the memory available") from exc
        raise ImageReadError(
            self.path,
            f"image data is corrupt or truncated ({type(exc).__name__}: {exc}); re-export or re-download the file",
        ) from exc


def load_frame(image: Image.Image, path: Path) -> FrameState:
    """Decode the current frame now (Pillow is lazy), so bad data fails here, named.

    Returns what ``load()`` forgets and :func:`decode_frame` needs.
    """
    with decoding(path):
        state = FrameState(_rawmodes(image), _orientation(image))
        image.load()
    return state


def frame_count(image: Image.Image, path: Path) -> int:
    """Frames in ``image``: animation frames or TIFF pages, 1 for everything else.

    Call it before loading: it leaves ``image`` at its first frame. An MPO (a camera JPEG
    with a preview or a second view) counts as one image: its extra pictures are not frames
    of the same picture. TIFF pages Pillow cannot set up (16-bit gray+alpha) are counted by
    tifffile.
    """
    if image.format == "MPO":
        return 1
    try:
        with decoding(path):
            return int(getattr(image, "n_frames", 1)) if getattr(image, "is_animated", False) else 1
    except ImageReadError:
        count = _tiff_page_count(path) if image.format == "TIFF" else 0
        if not count:
            raise
        with decoding(path):
            image.seek(0)  # Pillow stopped at the page it could not set up
        return count


def _tiff_page_count(path: Path) -> int:
    """Pages in a TIFF as tifffile counts them, 0 when tifffile is missing or cannot tell."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except Exception:  # noqa: BLE001 - any failure means "no second opinion"; the caller raises its own
        return 0


def _kind_of_frames(image: Image.Image) -> str:
    return "a multi-page TIFF" if image.format == "TIFF" else f"an animated {image.format}"


def is_tiff(path: Path) -> bool:
    """Whether ``path`` starts with a TIFF (or BigTIFF) signature."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_SIGNATURES
    except OSError:
        return False


def decode_frame(image: Image.Image, path: Path, state: FrameState) -> tuple[np.ndarray, ImageInfo]:
    """The current frame of ``image`` (loaded by :func:`load_frame`, which gave ``state``)
    as an array, at 16 bits where the file has them."""
    with decoding(path):
        wide = _decode_wide(image, path, state.rawmodes)
        if wide is not None:
            array, as_stored = wide
            return _from_wide(array, image, path, state.orientation, turn=as_stored)
        if _is_wide_colour(image, state.rawmodes):
            warnings.warn(
                f"{path}: 16-bit colour {image.format} decoded at 8 bits per channel (neither Pillow's "
                "decoder nor tifffile can read this variant at 16 bits); the result is 8-bit",
                stacklevel=4,
            )
        return _from_pil(image, name=str(path), orientation=state.orientation)


# ------------------------------------------------------------ 16 bits per colour channel


class FrameState(NamedTuple):
    """What a frame's ``load()`` clears: its tiles' raw modes and its orientation tag."""

    rawmodes: list[str]
    orientation: int


def _orientation(image: Image.Image) -> int:
    """The EXIF (or TIFF) orientation, read before ``load()``: Pillow's TIFF plugin applies and drops it."""
    value = image.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


_SWAPPED_BYTE_ORDER = {";16B": ";16L", ";16L": ";16B", ";16N": ";16B" if sys.byteorder == "little" else ";16L"}


def _rawmodes(image: Image.Image) -> list[str]:
    """The unpacker name (Pillow's "raw mode") of every tile of the current frame."""
    modes = []
    for tile in getattr(image, "tile", None) or []:
        args = tile[3]
        modes.append(args if isinstance(args, str) else str(args[0]) if args else "")
    return modes


def _is_wide_colour(image: Image.Image, rawmodes: list[str]) -> bool:
    """Whether Pillow decoded 16-bit colour (or gray+alpha) samples to their high bytes.

    PNG says so in its tiles' raw modes; a TIFF in its BitsPerSample tag (a planar TIFF's
    per-plane raw modes do not show the depth).
    """
    if image.mode not in ("RGB", "RGBA"):
        return False
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return bool(rawmodes) and all(m[-4:] in _SWAPPED_BYTE_ORDER for m in rawmodes)


def _decode_wide(image: Image.Image, path: Path, rawmodes: list[str]) -> tuple[np.ndarray, bool] | None:
    """The 16-bit samples of a colour PNG/TIFF frame Pillow decoded to 8 bits, else None.

    ``image`` is loaded: it holds the high bytes. The file is opened once more at the same
    frame and decoded with each tile's unpacker swapped for the opposite byte order (Pillow's
    ``RGB;16L`` for ``RGB;16B`` and so on), which gives the low bytes; Pillow's parser, CRC
    checks, row filters, interlacing and TIFF compressions are all reused. 16-bit gray+alpha
    PNG (Pillow: ``LA;16B`` into RGBA) is re-decoded with the plain ``RGBA`` unpacker, whose
    four bytes per pixel are exactly L high, L low, A high, A low. Planar TIFFs, premultiplied
    TIFF alpha and variants without an unpacker go to tifffile.

    The flag says whether the array is still as stored, its orientation tag not applied:
    Pillow's TIFF plugin turns what it decodes, its PNG plugin does not, tifffile never does.
    """
    if image.format not in ("PNG", "TIFF") or not _is_wide_colour(image, rawmodes):
        return None
    if image.format == "PNG" and getattr(image, "is_animated", False):
        return None  # APNG frames are composited by Pillow at 8 bits; read_frames says so
    via_tifffile = _read_tiff_array if image.format == "TIFF" else lambda path, index: None
    if not all(m[-4:] in _SWAPPED_BYTE_ORDER for m in rawmodes) or any("a;" in m for m in rawmodes):
        # planes, or premultiplied alpha (Pillow's unpacker divides the high byte): tifffile
        array = via_tifffile(path, image.tell())
        return None if array is None else (array, True)
    gray_alpha = rawmodes == ["LA;16B"]
    with open_image(path) as low:
        if image.tell():
            low.seek(image.tell())
        try:
            low.tile = [_with_args(tile, _swap_args(tile[3], "RGBA" if gray_alpha else None)) for tile in low.tile]
            low.load()
        except ValueError:  # no unpacker of the other byte order for this variant
            array = via_tifffile(path, image.tell())
            return None if array is None else (array, True)
        raw = np.asarray(low).astype(np.uint16)
    as_stored = image.format == "PNG"
    if gray_alpha:
        return np.stack([raw[..., 0] << 8 | raw[..., 1], raw[..., 2] << 8 | raw[..., 3]], axis=-1), as_stored
    high = np.asarray(image).astype(np.uint16)
    if high.shape != raw.shape:
        return None
    return high << 8 | raw, as_stored


def _with_args(tile: Any, args: tuple[Any, ...] | str) -> Any:
    """``tile`` with other decoder arguments (a namedtuple since Pillow 11, a tuple before)."""
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


def _swap_args(args: tuple[Any, ...] | str | None, replacement: str | None) -> tuple[Any, ...] | str:
    def swap(rawmode: str) -> str:
        return replacement or rawmode[:-4] + _SWAPPED_BYTE_ORDER[rawmode[-4:]]

    if isinstance(args, str):
        return swap(args)
    assert isinstance(args, tuple)  # Pillow's tiles: a raw mode, or a tuple starting with one
    return (swap(str(args[0])), *args[1:])


def _from_wide(
    array: np.ndarray, image: Image.Image, path: Path, orientation: int, *, turn: bool
) -> tuple[np.ndarray, ImageInfo]:
    """ImageInfo for a 16-bit frame decoded beside Pillow, turned by ``orientation`` if ``turn``."""
    if turn:
        array = orient(array, orientation)
    icc = image.info.get("icc_profile") or None
    return array, ImageInfo(
        layout=ChannelLayout.from_channels(array.shape[2]),
        dtype=array.dtype,
        mode=image.mode,
        format=image.format,
        icc_profile=icc,
        path=str(path),
        orientation_applied=orientation in _ORIENTATIONS,
    )


_ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {  # EXIF orientation → the view to display
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an H×W×C array as ``ImageOps.exif_transpose`` does."""
    transform = _ORIENTATIONS.get(orientation)
    return array if transform is None else np.ascontiguousarray(transform(array))


def _read_tiff_page_or_none(path: Path, index: int) -> tuple[np.ndarray, ImageInfo] | None:
    """A TIFF page Pillow cannot open, read by tifffile, or None if tifffile cannot either."""
    with decoding(path):
        array = _read_tiff_array(path, index)
        if array is None:
            return None
        tifffile = require("tifffile", pip="tifffile", purpose="reading 16-bit colour TIFF")
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            page = tif.pages[index]
            icc_tag = page.tags.get(_TIFF_ICC)
            icc = bytes(icc_tag.value) if icc_tag is not None and isinstance(icc_tag.value, bytes) else None
            orientation_tag = page.tags.get(_EXIF_ORIENTATION)
            orientation = int(orientation_tag.value) if orientation_tag is not None else 1
    if index == 0 and pages > 1:
        warnings.warn(
            f"{path}: holds {pages} frames (a multi-page TIFF); read_image returns the first only. Use "
            "runtime.frames.read_frames and write_frames to keep every frame",
            MultiFrameWarning,
            stacklevel=4,
        )
    array = orient(array, orientation)
    layout = ChannelLayout.from_channels(array.shape[2])
    info = ImageInfo(
        layout=layout,
        dtype=array.dtype,
        ndim=2 if layout is ChannelLayout.GRAY else 3,
        format="TIFF",
        icc_profile=icc,
        path=str(path),
        orientation_applied=orientation in _ORIENTATIONS,
    )
    return array, info


def _read_tiff_array(path: Path, index: int) -> np.ndarray | None:
    """Page ``index`` of a gray, gray+alpha, RGB or RGBA 8/16-bit TIFF via tifffile, else None.

    None when tifffile is missing, the page is another kind (palette, CMYK, float...), or
    its compression needs imagecodecs (LZW, JPEG); the caller then falls back to Pillow.
    """
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            if index >= len(tif.pages):
                return None
            page = tif.pages[index]
            if not isinstance(page, tifffile.TiffPage):
                return None
            photometric, samples = int(page.photometric), int(page.samplesperpixel)
            extras = tuple(int(e) for e in page.extrasamples)
            if (
                page.dtype not in (np.uint8, np.uint16)
                or photometric not in (1, 2)
                or page.axes not in ("YX", "YXS", "SYX")
            ):
                return None
            array = page.asarray()
    except ValueError as exc:
        if "imagecodecs" in str(exc):
            return None
        raise
    if array.ndim == 2:
        array = array[:, :, None]
    elif page.axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    colour = 3 if photometric == 2 else 1
    if samples < colour or samples > colour + 1 or array.shape[2] != samples:
        return None
    if samples > colour:
        if extras[:1] == (1,):  # associated (premultiplied) alpha: divide it out
            alpha = array[..., -1:].astype(np.float64)
            peak = float(np.iinfo(array.dtype).max)
            colour_part = np.where(alpha > 0, array[..., :colour] * (peak / np.maximum(alpha, 1)), 0)
            array = np.concatenate([np.clip(np.rint(colour_part), 0, peak).astype(array.dtype), array[..., -1:]], -1)
        elif extras[:1] != (2,):  # unspecified extra sample: not alpha, drop it (as Pillow's RGBX)
            array = array[..., :colour]
    return np.ascontiguousarray(array)


def _from_pil(image: Image.Image, *, name: str, orientation: int = 1) -> tuple[np.ndarray, ImageInfo]:
    mode, fmt = image.mode, image.format
    icc = image.info.get("icc_profile") or None
    oriented = orientation in _ORIENTATIONS  # a TIFF's: Pillow applied it in load()
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


def check_output_path(path: str | os.PathLike, *, overwrite: bool = True, info: ImageInfo | None = None) -> str:
    """Check that ``path`` can receive an image before any work is spent on it.

    Returns the Pillow format chosen by the extension; raises
    :class:`~runtime.errors.ImageWriteError` (or :class:`~runtime.errors.OutputExistsError`)
    for an unknown extension, a missing folder, a folder in the way, or an existing file
    when ``overwrite`` is false. With ``info`` (the input's), also when the format cannot
    store that depth or alpha (a 16-bit input to .jpg), which would otherwise fail only
    after the upscale.
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
    if info is not None:
        _check_format_limits(path, fmt, info.dtype, info.layout.channels)
    return fmt


def _check_format_limits(path: Path, fmt: str, dtype: np.dtype, channels: int) -> None:
    if channels in (2, 4) and fmt not in _ALPHA_FORMATS:
        raise ImageWriteError(path, f"{fmt} cannot store an alpha channel; write .png, .webp or .tif to keep it")
    if dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        raise ImageWriteError(
            path,
            f"{fmt} cannot store 16-bit {ChannelLayout.from_channels(channels).value} pixels; "
            "write .png or .tif to keep 16 bits, or convert to uint8",
        )


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
    _check_format_limits(path, fmt, array.dtype, channels)
    if array.dtype == np.uint16:
        if channels == 1 and fmt in _UINT16_GRAY_FORMATS:
            image = Image.fromarray(np.ascontiguousarray(array[:, :, 0]))  # mode I;16
            return _pil_encoder(image, fmt, icc, quality)
        if fmt == "PNG":
            return lambda f: _write_png16(f, array, icc)
        if fmt == "TIFF":
            tiff = write_tiff_pages  # bound now: a missing tifffile fails before the temporary file exists
            require("tifffile", pip="tifffile", purpose="writing 16-bit colour TIFF")
            return lambda f: tiff(f, [array], [icc])
        raise AssertionError(fmt)  # unreachable: _check_format_limits allows uint16 in PNG and TIFF only
    if fmt == "GIF":
        (image,), transparent = quantise_gif([array])
        options = {"transparency": GIF_TRANSPARENT} if transparent else {}
        return lambda f: image.save(f, format="GIF", optimize=False, **options)
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


GIF_TRANSPARENT = 255
_PALETTE_SAMPLE = 1 << 20  # pixels used to build the shared palette


def quantise_gif(arrays: list[np.ndarray], dither: bool = True) -> tuple[list[Image.Image], bool]:
    """Map uint8 frames to one shared palette; index 255 is transparent when alpha is present.

    One palette for all frames keeps colours from flickering between frames. It is made by
    median cut (libimagequant when Pillow has it) from the pixels of every frame (up to
    2**20 of them, evenly strided), and frames are mapped with Floyd-Steinberg dithering
    unless ``dither`` is false. GIF alpha is 1-bit: alpha below 128 is transparent.
    """
    rgb = [a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, axis=2) for a in arrays]
    masks = [a[..., -1] >= 128 if a.shape[2] in (2, 4) else None for a in arrays]
    transparent = any(m is not None and not m.all() for m in masks)
    colours = GIF_TRANSPARENT if transparent else 256
    pixels = np.concatenate([r[m] if m is not None else r.reshape(-1, 3) for r, m in zip(rgb, masks)])
    if len(pixels) == 0:
        pixels = np.zeros((1, 3), np.uint8)
    pixels = pixels[:: max(1, len(pixels) // _PALETTE_SAMPLE)]
    method = Image.Quantize.LIBIMAGEQUANT if features.check_feature("libimagequant") else Image.Quantize.MEDIANCUT
    sample = Image.fromarray(np.ascontiguousarray(pixels.reshape(-1, 1, 3)))
    quantised = sample.quantize(colors=colours, method=method)
    palette = (quantised.getpalette() or [])[: 3 * colours]
    palette += palette[:3] * (colours - len(palette) // 3)  # a short palette: repeat a used colour
    reference = Image.new("P", (1, 1))
    reference.putpalette(palette)
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    images = []
    for frame, mask in zip(rgb, masks):
        if mask is not None and not mask.all():  # transparent pixels: an exact palette colour, so
            frame = frame.copy()  # dithering spreads no error from them into their neighbours
            frame[~mask] = palette[:3]
        indices = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).quantize(palette=reference, dither=mode))
        if transparent:
            indices = indices.copy()
            indices[indices >= colours] = 0  # never the transparent index for an opaque pixel
            if mask is not None:
                indices[~mask] = GIF_TRANSPARENT
        image = Image.fromarray(indices, mode="P")
        image.putpalette(palette + [0, 0, 0] * (256 - colours))
        images.append(image)
    return images, transparent


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


def write_tiff_pages(f: BinaryIO, pages: list[np.ndarray], iccs: list[bytes | None]) -> None:
    """Write H×W×C uint8/uint16 pages as one TIFF with tifffile: deflate, horizontal predictor.

    Alpha is marked unassociated (straight), as the arrays hold it; a gray, gray+alpha, RGB
    or RGBA page is written as such, so any TIFF reader (libtiff, Pillow, tifffile) gets the
    same samples back.
    """
    tifffile = require("tifffile", pip="tifffile", purpose="writing 16-bit colour or multi-page TIFF")
    buffer = io.BytesIO()  # tifffile wants a named file; ours is an os.fdopen (name: an int)
    with tifffile.TiffWriter(buffer) as tif:
        for page, icc in zip(pages, iccs):
            channels = page.shape[2]
            tif.write(
                page if channels > 1 else page[:, :, 0],
                photometric="rgb" if channels >= 3 else "minisblack",
                planarconfig="contig" if channels > 1 else None,
                extrasamples=["unassalpha"] if channels in (2, 4) else None,
                compression="zlib",
                predictor=True,
                extratags=[(_TIFF_ICC, 7, len(icc), icc, True)] if icc else None,  # 7: UNDEFINED bytes
                metadata=None,
            )
    f.write(buffer.getbuffer())


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

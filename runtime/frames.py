"""Every frame of an animation or multi-page TIFF, in and out: ``read_frames``, ``write_frames``.

:func:`read_frames` returns each frame as the full canvas a viewer shows (Pillow composites
GIF, APNG and WebP frames, applying their disposal and blend rules) plus a
:class:`FramesInfo` with what an animation needs to play the same way: per-frame durations,
the loop count, APNG's default image, WebP's lossless flag. Multi-page TIFF pages are
independent images and may differ in size and layout; 16-bit pages stay 16-bit.

:func:`write_frames` writes full frames back, animated in the format of the extension. Since
each frame is a whole canvas, disposal is "replace" everywhere (GIF: restore to background
where there is transparency, APNG: OP_NONE with OP_SOURCE blending); Pillow's encoders then
store only the region that changed between frames. GIF has 256 colours: the frames are
quantised to **one palette shared by all frames** (no palette flicker between frames), made
by median cut (libimagequant when Pillow is built with it) from the pixels of every frame,
and mapped with Floyd-Steinberg dithering (``dither=False`` for flat-colour art).
Transparency in GIF is 1-bit: alpha below 128 becomes the transparent index.

Both functions raise only :class:`~runtime.errors.ImageReadError`,
:class:`~runtime.errors.ImageWriteError` and :class:`~runtime.errors.InvalidArgumentError`
(see :mod:`runtime.image_io`), and writing is atomic.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from .errors import ImageReadError, ImageWriteError, InvalidArgumentError
from .image_io import (
    GIF_TRANSPARENT,
    ChannelLayout,
    ImageInfo,
    MultiFrameWarning,
    _atomic_write,
    _check_output_array,
    _compatible_icc,
    _read_tiff_page_or_none,
    check_output_path,
    check_readable,
    decode_frame,
    decoding,
    frame_count,
    is_tiff,
    load_frame,
    open_image,
    quantise_gif,
    write_image,
    write_tiff_pages,
)

__all__ = ["FRAME_FORMATS", "FramesInfo", "read_frames", "write_frames"]

log = logging.getLogger(__name__)

FRAME_FORMATS = {".gif": "GIF", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
"""Output extensions that hold several frames → Pillow format (PNG means APNG)."""

DEFAULT_DURATION_MS = 100.0
"""Frame duration used when the frames come without a :class:`FramesInfo`."""

_ANIMATED = {"GIF", "PNG", "WEBP"}


@dataclass(frozen=True, kw_only=True)
class FramesInfo:
    """What :func:`read_frames` read beyond the pixels, for :func:`write_frames`.

    ``frames`` has one :class:`~runtime.image_io.ImageInfo` per frame (layout, dtype, ICC
    profile). ``durations`` are milliseconds per frame (0 where the file gives none; empty
    for TIFF pages). ``loop`` is the file's loop count, 0 meaning forever; ``None`` when a
    GIF has no loop extension (it plays once). ``default_image``: an APNG whose first frame
    is the still image shown by non-animating viewers, not part of the animation.
    ``lossless``: a WebP stored lossless (written back lossless).
    """

    format: str
    frames: tuple[ImageInfo, ...]
    durations: tuple[float, ...] = ()
    loop: int | None = 0
    default_image: bool = False
    lossless: bool = False
    path: str | None = None

    @property
    def image(self) -> ImageInfo:
        """The first frame's info (what :func:`~runtime.image_io.read_image` returns)."""
        return self.frames[0]

    @property
    def animated(self) -> bool:
        return self.format in _ANIMATED and len(self.frames) > 1


def read_frames(path: str | os.PathLike[str], *, max_pixels: int | None = -1) -> tuple[list[np.ndarray], FramesInfo]:
    """Read every frame of ``path``: a list of H×W×C arrays and their :class:`FramesInfo`.

    A single-image file gives a list of one, exactly what ``read_image`` returns. Frames of
    an animation share one layout (a frame without alpha gets an opaque one when another has
    it). ``max_pixels`` bounds the pixels of all frames together, since an animation is
    held in memory whole (and its upscaled result ×scale² more): the default ``-1`` means
    Pillow's ``Image.MAX_IMAGE_PIXELS``, ``None`` no limit.
    """
    path = Path(path)
    check_readable(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels == -1 else max_pixels
    try:
        image = open_image(path)
    except ImageReadError:
        if not is_tiff(path):
            raise
        return _read_tiff_pages(path, limit)  # TIFFs Pillow has no mode for (16-bit gray+alpha)
    with image, decoding(path):
        count = frame_count(image, path)
        state = load_frame(image, path)
        if count == 1:
            array, info = decode_frame(image, path, state)
            return [array], FramesInfo(format=info.format or "", frames=(info,), path=str(path))
        fmt = str(image.format)
        if fmt in _ANIMATED:
            _check_budget(path, count, image.width * image.height, limit)
        if fmt == "PNG" and _is_16bit_colour_png(path):
            warnings.warn(
                f"{path}: a 16-bit colour APNG: Pillow composites its frames at 8 bits per channel, so they "
                "are read as uint8",
                stacklevel=2,
            )
        arrays, infos, durations = [], [], []
        total = 0
        for index in range(count):
            try:
                if index:
                    with decoding(path):
                        image.seek(index)
                    state = load_frame(image, path)
                array, info = decode_frame(image, path, state)
            except ImageReadError:
                page = _tiff_page_fallback(path, index) if fmt == "TIFF" else None
                if page is None:
                    raise
                array, info = page  # a page Pillow has no mode for (16-bit gray+alpha)
            total += array.shape[0] * array.shape[1]
            _check_budget(path, count, total // (index + 1), limit)
            arrays.append(array)
            infos.append(info)
            durations.append(float(image.info.get("duration") or 0.0))
        loop = image.info.get("loop")
        default_image = bool(image.info.get("default_image", False))
    if fmt in _ANIMATED:
        arrays, infos = _common_layout(arrays, infos)
    frames_info = FramesInfo(
        format=fmt,
        frames=tuple(infos),
        durations=tuple(durations) if fmt in _ANIMATED else (),
        loop=None if loop is None else int(loop),
        default_image=default_image,
        lossless=fmt == "WEBP" and _webp_is_lossless(path),
        path=str(path),
    )
    return arrays, frames_info


def _check_budget(path: Path, count: int, pixels_per_frame: int, limit: int | None) -> None:
    if limit is not None and count * pixels_per_frame > limit:
        raise ImageReadError(
            path,
            f"{count} frames of about {pixels_per_frame} pixels are {count * pixels_per_frame} pixels in all, "
            f"above the limit of {limit}; if the memory is there, raise it: --max-pixels {count * pixels_per_frame} "
            "on the command line, read_frames(max_pixels=) or PIL.Image.MAX_IMAGE_PIXELS in Python",
        )


def _tiff_page_fallback(path: Path, index: int) -> tuple[np.ndarray, ImageInfo] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MultiFrameWarning)
        try:
            return _read_tiff_page_or_none(path, index)
        except ImageReadError:
            return None


def _read_tiff_pages(path: Path, limit: int | None) -> tuple[list[np.ndarray], FramesInfo]:
    arrays, infos, total = [], [], 0
    index = 0
    while True:
        if index == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MultiFrameWarning)
                page = _read_tiff_page_or_none(path, index)  # its error, if any, is the file's
        else:
            page = _tiff_page_fallback(path, index)
        if page is None:
            break
        arrays.append(page[0])
        infos.append(page[1])
        total += page[0].shape[0] * page[0].shape[1]
        _check_budget(path, index + 1, total // (index + 1), limit)
        index += 1
    if not arrays:
        raise ImageReadError(path, "not a TIFF that Pillow or tifffile can read")
    return arrays, FramesInfo(format="TIFF", frames=tuple(infos), path=str(path))


def _is_16bit_colour_png(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6)


def _webp_is_lossless(path: Path) -> bool:
    """Whether a WebP's frames are VP8L (lossless) only, from its chunk tags."""
    data = path.read_bytes()
    return b"VP8L" in data and b"VP8 " not in data


def _common_layout(arrays: list[np.ndarray], infos: list[ImageInfo]) -> tuple[list[np.ndarray], list[ImageInfo]]:
    """Give every frame of an animation the same channels: colour if any is, alpha if any has it.

    An alpha channel that is opaque in every frame is dropped: decoders hand one out when the
    encoder used transparency only to skip unchanged pixels (libwebp does), and it says nothing.
    """
    colour = any(a.shape[2] >= 3 for a in arrays)
    alpha = any(a.shape[2] in (2, 4) and (a[..., -1] != np.iinfo(a.dtype).max).any() for a in arrays)
    layout = ChannelLayout.from_channels((3 if colour else 1) + alpha)
    out_arrays, out_infos = [], []
    for array, info in zip(arrays, infos):
        if array.shape[2] != layout.channels:
            has_alpha = array.shape[2] in (2, 4)  # an alpha to keep, or an opaque one to drop
            body = array[..., : array.shape[2] - has_alpha]
            if colour and body.shape[2] == 1:
                body = np.repeat(body, 3, axis=2)
            parts = [np.ascontiguousarray(body)]
            if alpha:
                opaque = np.full(array.shape[:2] + (1,), np.iinfo(array.dtype).max, array.dtype)
                parts.append(array[..., -1:] if has_alpha else opaque)
            array = np.concatenate(parts, axis=2)
            info = ImageInfo(
                layout=layout,
                dtype=info.dtype,
                mode=info.mode,
                format=info.format,
                icc_profile=info.icc_profile,
                path=info.path,
                orientation_applied=info.orientation_applied,
            )
        out_arrays.append(array)
        out_infos.append(info)
    return out_arrays, out_infos


# --------------------------------------------------------------------------- writing


def write_frames(
    path: str | os.PathLike[str],
    frames: Sequence[np.ndarray],
    info: FramesInfo | None = None,
    *,
    overwrite: bool = True,
    quality: int = 95,
    dither: bool = True,
) -> Path:
    """Write ``frames`` (H×W or H×W×C arrays) to ``path`` as one animated or multi-page file.

    The extension picks the format: .gif, .png (APNG), .webp, or .tif/.tiff (one page
    per frame, uint16 kept). ``info`` (from :func:`read_frames`) gives durations, loop
    count and ICC profiles; without it frames last :data:`DEFAULT_DURATION_MS` and loop
    forever. One frame is written by :func:`~runtime.image_io.write_image`, in any format.
    Animation frames must share one size. ``quality`` applies to lossy WebP; ``dither`` to
    GIF's palette mapping.
    """
    path = Path(path)
    if not isinstance(frames, Sequence) or isinstance(frames, np.ndarray):
        raise InvalidArgumentError(f"frames to write to {path} must be a list of arrays, got {type(frames).__name__}")
    if not frames:
        raise InvalidArgumentError(f"no frames to write to {path}")
    if info is not None and len(info.frames) not in (1, len(frames)):
        raise InvalidArgumentError(f"{len(frames)} frames to write to {path} but info describes {len(info.frames)}")
    if len(frames) == 1:
        return write_image(path, frames[0], info.frames[0] if info else None, overwrite=overwrite, quality=quality)
    check_output_path(path, overwrite=overwrite)
    fmt = FRAME_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageWriteError(
            path,
            f"{path.suffix or 'this format'} cannot hold {len(frames)} frames; write "
            f"{', '.join(sorted(FRAME_FORMATS))}, or one file per frame",
        )
    arrays = [_check_output_array(path, frame) for frame in frames]
    if fmt == "TIFF":
        iccs = [_compatible_icc(_frame_info(info, i), a.shape[2]) for i, a in enumerate(arrays)]
        _atomic_write(path, lambda f: write_tiff_pages(f, arrays, iccs))
        return path
    _check_animation(path, fmt, arrays)
    durations = _durations(info, len(arrays), fmt)
    icc = _compatible_icc(_frame_info(info, 0), arrays[0].shape[2])
    if fmt == "GIF":
        images, transparent = quantise_gif(arrays, dither)
        options: dict[str, object] = {"optimize": False, "disposal": 2 if transparent else 1}
        if transparent:
            options["transparency"] = GIF_TRANSPARENT
    else:
        images = [Image.fromarray(a if a.shape[2] > 1 else a[:, :, 0]) for a in arrays]
        options = {}
        if fmt == "PNG":
            options.update(disposal=0, blend=0, default_image=bool(info and info.default_image))
        else:
            lossless = bool(info and info.lossless)
            options.update(lossless=lossless, quality=100 if lossless else quality)
    loop = _loop(info, fmt)
    if loop is not None:
        options["loop"] = loop
    if icc and fmt != "GIF":
        options["icc_profile"] = icc

    def encode(f: BinaryIO) -> None:
        images[0].save(f, format=fmt, save_all=True, append_images=images[1:], duration=durations, **options)

    _atomic_write(path, encode)
    log.debug("wrote %s (%s, %d frames)", path, fmt, len(arrays))
    return path


def _frame_info(info: FramesInfo | None, index: int) -> ImageInfo | None:
    if info is None:
        return None
    return info.frames[index] if index < len(info.frames) else info.frames[0]


def _check_animation(path: Path, fmt: str, arrays: list[np.ndarray]) -> None:
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise InvalidArgumentError(
            f"animation frames to write to {path} must share one size, got {sorted(sizes)}; write .tif for "
            "pages of different sizes"
        )
    if any(a.dtype != np.uint8 for a in arrays):
        name = "APNG" if fmt == "PNG" else fmt
        raise ImageWriteError(
            path, f"{name} animations hold 8 bits per channel, the frames are uint16; write .tif to keep 16 bits"
        )
    channels = {a.shape[2] for a in arrays}
    if len(channels) > 1:
        raise InvalidArgumentError(
            f"animation frames to write to {path} must share one channel layout, got channel counts {sorted(channels)}"
        )


def _durations(info: FramesInfo | None, count: int, fmt: str) -> list[float] | list[int]:
    given = list(info.durations) if info is not None and len(info.durations) == count else [DEFAULT_DURATION_MS] * count
    return given if fmt == "PNG" else [int(round(d)) for d in given]  # GIF and WebP store whole ms


def _loop(info: FramesInfo | None, fmt: str) -> int | None:
    """The loop count to write: the source's, translated where formats differ.

    GIF without a loop extension plays once; APNG and WebP say that with loop=1. None means
    "write no loop count" (GIF only).
    """
    loop = 0 if info is None else info.loop
    if fmt == "GIF":
        return None if loop is None or (loop == 1 and info is not None and info.format != "GIF") else loop
    return 1 if loop is None else loop

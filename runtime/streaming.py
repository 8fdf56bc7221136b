"""Images larger than memory: upscale band by band, streaming the output to a tiled TIFF.

A 20000×20000 RGB input is 1.2 GB and its ×4 output 19.2 GB: neither may have to fit in
memory. :func:`upscale_to_tiff` runs the Upscaler's own tile plan one *band* of tile rows
at a time and writes each band's output rows into a tiled (Big)TIFF as soon as they are
done, so peak memory is a band (bounded by ``memory_budget_mb``, at least one tile row)
plus what the model needs, whatever the image size:

* **Same pixels as** :meth:`Upscaler.upscale`. The plan is the whole image's
  (:meth:`Upscaler.plan`); a band keeps its tiles' windows and cores and reads just the
  input rows its windows cover, mirrored rows beyond the top/bottom edge included, through
  :func:`~runtime.tiling.index_map` (the gather mirrors the columns as usual). Only the
  coordinates move, so each window sees exactly the pixels it sees in the in-memory path.
  Alpha is constant or not over the whole image, as there.
* **Input read lazily** from an uncompressed TIFF (seek + read of the rows a band needs)
  or a tiled/stripped TIFF whose compression tifffile decodes (only the segments a band
  touches). Other formats, and TIFFs the lazy reader cannot take (planar, orientation,
  palette, premultiplied alpha), are decoded whole first and a warning says so; arrays are
  used as given (a :class:`numpy.memmap` stays lazy).
* **Output** written through tifffile as 256×256 tiles in row-major order (tiles cannot
  be written out of order, so bands run top to bottom), BigTIFF when it exceeds 4 GB,
  uncompressed by default (fast, and readable by :func:`read_region` without decoding);
  ``compression="zlib"`` for smaller files. Written atomically: a temporary file beside
  ``dst`` renamed at the end, removed on any failure.

:func:`stream_if_large` is the hook for ``Upscaler.upscale_file`` and the CLI: it reads
the input's size from its header and streams when the output array would exceed
``budget_mb`` (default: half the memory available now); a destination other than .tif
then gets an error that says to write .tif.

numpy + Pillow are enough to import this module; tifffile is imported when used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._deps import require
from .errors import ImageReadError, ImageWriteError, InvalidArgumentError, UpscaleError
from .image_io import ChannelLayout, check_output_path, read_image
from .pipeline import ImageJob, Pass
from .sysmem import available_memory_bytes
from .tiling import BORDER_MODE, Box, Tile, TilePlan, index_map

__all__ = [
    "DEFAULT_BAND_BUDGET_MB",
    "DEFAULT_TIFF_TILE",
    "StreamResult",
    "default_output_budget_mb",
    "output_nbytes",
    "probe",
    "stream_if_large",
    "upscale_to_tiff",
    "plan_bands",
    "read_region",
    "TIFF_SUFFIXES",
]

log = logging.getLogger(__name__)

MB = 1_000_000
DEFAULT_BAND_BUDGET_MB = 512.0
"""What one band may take (input rows + output rows + one row of TIFF tiles), in MB (10^6
bytes). The model's activations come on top, bounded by the Upscaler's own
``memory_budget_mb``. A band is at least one tile row whatever the budget."""

DEFAULT_TIFF_TILE = 256
"""Edge of the output TIFF's tiles: the common choice of viewers and pyramids (a multiple of 16)."""

TIFF_SUFFIXES = (".tif", ".tiff")
_TIFF_ICC = 34675
_BIGTIFF_ABOVE = 2**32 - 2**26  # bytes of pixel data beyond which classic TIFF's 32-bit offsets overflow


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """What :func:`upscale_to_tiff` wrote and how: for logs, tests and benchmarks."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    bands: tuple[tuple[int, int], ...]
    """Tile-row ranges ``[first, stop)`` of each band, in the order they ran."""
    lazy_input: bool
    """Whether the input was read band by band (False: decoded whole first)."""
    bigtiff: bool
    seconds: float


# --------------------------------------------------------------------------- inputs


class _Rows(Protocol):
    """An H×W×C image that hands out row ranges (the whole image never has to be in memory)."""

    height: int
    width: int
    channels: int
    dtype: np.dtype

    def read(self, y0: int, y1: int) -> np.ndarray: ...


@dataclasses.dataclass
class _ArrayRows:
    array: np.ndarray

    def __post_init__(self) -> None:
        self.height, self.width, self.channels = self.array.shape
        self.dtype = self.array.dtype

    def read(self, y0: int, y1: int) -> np.ndarray:
        return self.array[y0:y1]


class _TiffRows:
    """Rows of one TIFF page read on demand: seek + read when uncompressed and contiguous,
    else only the strips/tiles that intersect the rows, decoded by tifffile."""

    def __init__(self, path: Path, page: Any, keep: int) -> None:
        self.path = path
        self.height, self.width = int(page.imagelength), int(page.imagewidth)
        self.samples = int(page.samplesperpixel)
        self.channels = keep
        self.dtype = np.dtype(page.dtype).newbyteorder("=")
        self._file_dtype = np.dtype(page.dtype).newbyteorder(page.parent.byteorder)
        self._page = page
        self._fh = page.parent.filehandle
        if page.is_tiled:
            self._seg = (int(page.tilelength), int(page.tilewidth))
        else:
            self._seg = (min(int(page.rowsperstrip or self.height), self.height), self.width)
        self._contiguous = bool(page.is_contiguous) and int(page.compression) == 1 and not page.is_tiled
        self._offset = int(page.dataoffsets[0]) if self._contiguous else 0

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        x1 = self.width if x1 is None else x1
        if self._contiguous:
            out = np.empty((y1 - y0, self.width, self.samples), dtype=self._file_dtype)
            self._fh.seek(self._offset + y0 * self.width * self.samples * out.itemsize)
            got = self._fh.readinto(out.data.cast("B"))
            if got != out.nbytes:
                raise ImageReadError(self.path, f"is truncated: rows {y0}..{y1} need {out.nbytes} bytes, got {got}")
            out = out[:, x0:x1]
        else:
            out = self._read_segments(y0, y1, x0, x1)
        out = out[..., : self.channels]
        return out if out.dtype == self.dtype else out.astype(self.dtype)

    def _read_segments(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        th, tw = self._seg
        per_row = -(-self.width // tw)
        out = np.zeros((y1 - y0, x1 - x0, self.samples), dtype=self.dtype)
        page = self._page
        for r in range(y0 // th, -(-y1 // th)):
            for c in range(x0 // tw, -(-x1 // tw)):
                index = r * per_row + c
                offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
                if count == 0:
                    continue  # a sparse segment: zeros
                self._fh.seek(offset)
                try:
                    segment = page.decode(self._fh.read(count), index, jpegtables=page.jpegtables)[0]
                except (ValueError, RuntimeError) as exc:
                    hint = "; pip install imagecodecs" if "imagecodecs" in str(exc) else ""
                    raise ImageReadError(self.path, f"cannot decode segment {index} ({exc}){hint}") from exc
                segment = np.asarray(segment).reshape(-1, segment.shape[-3], segment.shape[-2], self.samples)[0]
                sy, sx = r * th, c * tw
                a0, a1 = max(y0, sy), min(y1, sy + th, self.height)
                b0, b1 = max(x0, sx), min(x1, sx + tw, self.width)
                out[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = segment[a0 - sy : a1 - sy, b0 - sx : b1 - sx]
        return out


def _lazy_tiff(path: Path, tif: Any) -> tuple[_TiffRows, bytes | None] | str:
    """The lazy reader of ``tif``'s page, or why it cannot be read lazily (read whole instead)."""
    import tifffile

    page = tif.pages[0]
    if not isinstance(page, tifffile.TiffPage):
        return "its page is not a plain TIFF page"
    photometric, samples = int(page.photometric), int(page.samplesperpixel)
    extras = tuple(int(e) for e in page.extrasamples)
    if page.dtype not in (np.uint8, np.uint16) or photometric not in (1, 2) or page.axes not in ("YX", "YXS"):
        return f"it is {page.dtype} {_name(page.photometric)} {page.axes} (lazy: uint8/uint16 gray or RGB, contiguous)"
    orientation = page.tags.get(274)
    if orientation is not None and int(orientation.value) != 1:
        return "it has an EXIF orientation to apply"
    colour = 3 if photometric == 2 else 1
    if samples < colour or samples > colour + 1:
        return f"it has {samples} samples per pixel"
    keep = colour
    if samples > colour:
        if extras[:1] == (1,):
            return "its alpha is premultiplied"
        if extras[:1] == (2,):
            keep = samples
    if int(page.compression) != 1 and not _decodable(page):
        return f"its compression {_name(page.compression)} needs imagecodecs (pip install imagecodecs)"
    icc_tag = page.tags.get(_TIFF_ICC)
    icc = bytes(icc_tag.value) if icc_tag is not None and isinstance(icc_tag.value, bytes) else None
    return _TiffRows(path, page, keep), icc


def _name(value: Any) -> str:
    """An enum's name (tifffile's PHOTOMETRIC, COMPRESSION), else the value."""
    return str(getattr(value, "name", value))


def _decodable(page: Any) -> bool:
    """Whether tifffile can decode ``page``'s first segment here (codecs beyond zlib need imagecodecs)."""
    fh = page.parent.filehandle
    fh.seek(int(page.dataoffsets[0]))
    try:
        page.decode(fh.read(int(page.databytecounts[0])), 0, jpegtables=page.jpegtables)
    except (ValueError, RuntimeError):
        return False
    return True


class _Source:
    """The input of a streamed upscale: rows on demand, its layout, ICC profile and reader."""

    def __init__(self, src: Any) -> None:
        self._tif: Any = None
        self.icc: bytes | None = None
        self.lazy = True
        self.ndim = 3
        if isinstance(src, np.ndarray):
            array, info = read_image(src)
            self.rows: _Rows = _ArrayRows(array)
            self.ndim, self.layout = info.ndim, info.layout
            return
        if not isinstance(src, (str, os.PathLike)):
            raise InvalidArgumentError(f"src must be a path or a numpy array, got {type(src).__name__}")
        path = Path(src)
        if not path.is_file():
            raise ImageReadError(path, "does not exist" if not path.exists() else "is not a file")
        why = "it is not a TIFF"
        if path.suffix.lower() in TIFF_SUFFIXES:
            tifffile = require("tifffile", pip="tifffile", purpose="streaming large TIFF images")
            try:
                self._tif = tifffile.TiffFile(path)
            except (tifffile.TiffFileError, ValueError, OSError) as exc:
                raise ImageReadError(path, f"is not a readable TIFF ({exc})") from exc
            pages = len(self._tif.pages)
            if pages == 0:
                self.close()
                raise ImageReadError(path, "is not a readable TIFF (no image in it)")
            if pages != 1:
                self.close()
                raise ImageReadError(
                    path, f"has {pages} pages; streaming writes one image (upscale_file keeps every page in memory)"
                )
            lazy = _lazy_tiff(path, self._tif)
            if isinstance(lazy, str):
                why = lazy
                self.close()
            else:
                self.rows, self.icc = lazy
                self.layout = ChannelLayout.from_channels(self.rows.channels)
                self.ndim = 2 if self.layout is ChannelLayout.GRAY else 3
                return
        warnings.warn(
            f"{path}: decoded whole before streaming ({why}); only uncompressed or tifffile-decodable "
            "gray/RGB(A) TIFFs are read band by band",
            stacklevel=3,
        )
        array, info = read_image(path)
        self.rows = _ArrayRows(array)
        self.ndim, self.layout, self.icc, self.lazy = info.ndim, info.layout, info.icc_profile, False

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None


# --------------------------------------------------------------------------- planning


def output_nbytes(scale: int, height: int, width: int, channels: int, dtype: Any) -> int:
    """Bytes of the (scale·H)×(scale·W)×C output array."""
    return height * width * scale * scale * channels * np.dtype(dtype).itemsize


def _row_spans(plan: TilePlan) -> list[tuple[int, int, int, int]]:
    """``(core0, core1, window0, window1)`` of each tile row of ``plan`` (image rows)."""
    spans: dict[int, tuple[int, int, int, int]] = {}
    for t in plan.tiles:
        spans.setdefault(t.row, (t.core.y0, t.core.y1, t.window.y0, t.window.y1))
    return [spans[r] for r in sorted(spans)]


def plan_bands(plan: TilePlan, scale: int, channels: int, itemsize: int, budget_bytes: float) -> list[tuple[int, int]]:
    """Tile-row ranges ``[first, stop)``: as many tile rows per band as ``budget_bytes`` allows.

    A band costs its input rows (window rows, twice at a mirrored edge: read + mirrored
    copy) plus its output rows (from its first window row, see :func:`upscale_to_tiff`)
    plus one row of output TIFF tiles; a band has at least one tile row.
    """
    spans = _row_spans(plan)
    in_row = plan.image_width * channels * itemsize
    out_row = plan.image_width * scale * channels * itemsize * scale
    carry = DEFAULT_TIFF_TILE * scale * plan.image_width * channels * itemsize
    bands: list[tuple[int, int]] = []
    first = 0
    for r in range(1, len(spans) + 1):
        w0, w1 = spans[first][2], spans[r - 1][3]
        mirrored = w0 < 0 or w1 > plan.image_height
        cost = (w1 - w0) * in_row * (2 if mirrored else 1) + (spans[r - 1][1] - w0) * out_row + carry
        if cost > budget_bytes and r - 1 > first:
            bands.append((first, r - 1))
            first = r - 1
    bands.append((first, len(spans)))
    return bands


def _band_plan(plan: TilePlan, rows: range, source: np.ndarray, top: int) -> TilePlan:
    """The tiles of tile rows ``rows`` moved up by ``top`` (the band's first window row)."""
    tiles: list[Tile] = []
    for t in plan.tiles:
        if t.row in rows:
            w, c = t.window, t.core
            tiles.append(
                Tile(
                    index=len(tiles),
                    row=t.row - rows.start,
                    col=t.col,
                    window=Box(w.y0 - top, w.y1 - top, w.x0, w.x1),
                    core=Box(c.y0 - top, c.y1 - top, c.x0, c.x1),
                )
            )
    return dataclasses.replace(
        plan,
        image_height=source.shape[0],
        input_height=source.shape[0],
        rows=len(rows),
        tiles=tuple(tiles),
    )


# --------------------------------------------------------------------------- the upscale


def _value_scales(dtype: np.dtype, integer_io: bool, io_name: str) -> tuple[float, float]:
    """The value-range factors into and out of the model (as ``Upscaler`` uses them)."""
    if dtype == np.uint8:
        return 1.0, 1.0
    if dtype != np.uint16:
        raise InvalidArgumentError(f"streaming writes uint8 or uint16 TIFF; got a {dtype} image")
    if integer_io:
        raise InvalidArgumentError(
            f"uint16 images need a float32-nchw model, but this model has {io_name} I/O (8-bit only); "
            "convert the image to uint8 or export the model with float32 I/O"
        )
    return 1.0 / 257.0, 257.0


def _alpha_range(rows: _Rows, step: int) -> tuple[int, int]:
    """(min, max) of the alpha channel, read ``step`` rows at a time."""
    low, high = None, None
    for y in range(0, rows.height, step):
        a = rows.read(y, min(y + step, rows.height))[..., -1]
        lo, hi = int(a.min()), int(a.max())
        low = lo if low is None else min(low, lo)
        high = hi if high is None else max(high, hi)
    assert low is not None and high is not None  # height >= 1
    return low, high


def upscale_to_tiff(
    upscaler: Any,
    src: str | os.PathLike[str] | np.ndarray,
    dst: str | os.PathLike[str],
    *,
    memory_budget_mb: float = DEFAULT_BAND_BUDGET_MB,
    overwrite: bool = False,
    compression: str | None = None,
    bigtiff: bool | None = None,
    on_band: Callable[[int, int], None] | None = None,
) -> StreamResult:
    """Upscale ``src`` with ``upscaler`` into the tiled TIFF ``dst``, one band of tile rows at a time.

    The pixels equal ``upscaler.upscale(src)``'s; memory stays a band (``memory_budget_mb``,
    at least one tile row) plus the model's own, see the module docstring. ``src`` is a
    path (TIFF read lazily when possible) or an array; ``dst`` must end in .tif or .tiff.
    ``compression`` is a tifffile compression (None: uncompressed; ``"zlib"``);
    ``bigtiff=None`` picks BigTIFF above 4 GB of pixels. ``on_band(done, total)`` is called
    after each band is written (progress). Host backends only.
    """
    t0 = time.perf_counter()
    if not (isinstance(memory_budget_mb, (int, float)) and not isinstance(memory_budget_mb, bool)) or not (
        memory_budget_mb > 0
    ):
        raise InvalidArgumentError(f"memory_budget_mb must be a number > 0, got {memory_budget_mb!r}")
    dst = Path(dst)
    if dst.suffix.lower() not in TIFF_SUFFIXES:
        raise ImageWriteError(dst, f"streamed output is written as tiled TIFF; name it .tif (got {dst.suffix!r})")
    check_output_path(dst, overwrite=overwrite)
    if getattr(upscaler, "pipelined", False):
        raise InvalidArgumentError(
            "upscale_to_tiff runs on host backends (onnxruntime, openvino) only; this Upscaler is on a GPU"
        )
    tifffile = require("tifffile", pip="tifffile", purpose="streaming the output to a tiled TIFF")
    source = _Source(src)
    try:
        return _stream(upscaler, source, dst, tifffile, memory_budget_mb, compression, bigtiff, on_band, t0)
    finally:
        source.close()


def _stream(
    upscaler: Any,
    source: _Source,
    dst: Path,
    tifffile: Any,
    memory_budget_mb: float,
    compression: str | None,
    bigtiff: bool | None,
    on_band: Callable[[int, int], None] | None,
    t0: float,
) -> StreamResult:
    rows = source.rows
    height, width, channels, dtype = rows.height, rows.width, rows.channels, rows.dtype
    io = upscaler.info.io
    input_scale, output_scale = _value_scales(dtype, io.is_integer, io.value)
    scale = upscaler.scale
    plan = upscaler.plan(height, width)
    bands = plan_bands(plan, scale, channels, dtype.itemsize, memory_budget_mb * MB)
    spans = _row_spans(plan)
    out_h, out_w = height * scale, width * scale
    nbytes = output_nbytes(scale, height, width, channels, dtype)
    big = nbytes > _BIGTIFF_ABOVE if bigtiff is None else bool(bigtiff)
    colour = 3 if channels >= 3 else 1
    alpha_const: int | None = None
    if source.layout.has_alpha:
        low, high = _alpha_range(rows, max(1, int(memory_budget_mb * MB) // (width * channels * dtype.itemsize)))
        alpha_const = low if low == high else None
    log.info(
        "streaming %dx%d -> %dx%d %s %s to %s: %s, %d band(s) of %d tile rows, %s input",
        width,
        height,
        out_w,
        out_h,
        source.layout.value,
        dtype,
        dst,
        plan.describe(),
        len(bands),
        len(spans),
        "lazy" if source.lazy else "decoded",
    )

    def band_rows() -> Iterator[np.ndarray]:
        """Output rows of each band, top to bottom."""
        for done, (first, stop) in enumerate(bands, 1):
            top, bottom = spans[first][2], spans[stop - 1][3]
            idx = index_map(top, bottom, height, BORDER_MODE)
            lo, hi = int(idx.min()), int(idx.max()) + 1
            chunk = rows.read(lo, hi)
            band_src = chunk if (lo == top and hi == bottom) else chunk[idx - lo]
            core0, core1 = spans[first][0], spans[stop - 1][1]
            out = np.empty(((core1 - top) * scale, out_w, channels), dtype=dtype)
            band_plan = _band_plan(plan, range(first, stop), band_src, top)
            passes = [Pass(band_src[:, :, :colour], out[:, :, :colour], colour == 1)]
            if alpha_const is not None:
                out[:, :, channels - 1] = alpha_const
            elif source.layout.has_alpha:
                passes.append(Pass(band_src[:, :, channels - 1 :], out[:, :, channels - 1 :], True))
            job = ImageJob(band_plan, passes, out, input_scale, output_scale)
            (result,) = upscaler.executor.run([job])
            del chunk, band_src, job, passes
            yield result[(core0 - top) * scale :]
            del out, result  # before the next band's arrays: one band alive at a time
            if on_band is not None:
                on_band(done, len(bands))

    tile = DEFAULT_TIFF_TILE

    def tiles() -> Iterator[np.ndarray]:
        """The band rows cut into TIFF tiles, row-major; partial rows carried to the next band."""
        carry = np.empty((tile, out_w, channels), dtype=dtype)
        filled = 0
        for piece in band_rows():
            at = 0
            while at < piece.shape[0]:
                take = min(tile - filled, piece.shape[0] - at)
                carry[filled : filled + take] = piece[at : at + take]
                filled += take
                at += take
                if filled == tile:
                    yield from _cut(carry, tile)
                    filled = 0
            del piece  # else the loop holds this band while the next one is made
        if filled:
            yield from _cut(carry[:filled], tile)

    shape = (out_h, out_w) if source.ndim == 2 else (out_h, out_w, channels)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=big) as tif:
            tif.write(
                (t[..., 0] for t in tiles()) if source.ndim == 2 else tiles(),
                shape=shape,
                dtype=dtype,
                tile=(tile, tile),
                photometric="rgb" if channels >= 3 else "minisblack",
                planarconfig="contig" if channels > 1 else None,
                extrasamples=["unassalpha"] if source.layout.has_alpha else None,
                compression=compression,
                predictor=True if compression else None,
                extratags=[(_TIFF_ICC, 7, len(source.icc), source.icc, True)] if source.icc else None,
                metadata=None,
            )
        os.replace(tmp, dst)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, UpscaleError):
            raise ImageWriteError(dst, f"writing failed ({exc}); nothing was written") from exc
        raise
    return StreamResult(
        path=dst,
        shape=shape,
        dtype=dtype,
        bands=tuple(bands),
        lazy_input=source.lazy,
        bigtiff=big,
        seconds=time.perf_counter() - t0,
    )


def _cut(rows: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """One row of TIFF tiles, left to right (tifffile zero-pads the partial ones)."""
    for x in range(0, rows.shape[1], tile):
        yield rows[:, x : x + tile]


# --------------------------------------------------------------------------- reading back


def read_region(path: str | os.PathLike[str], box: Box | Sequence[int]) -> np.ndarray:
    """Pixels ``[y0, y1) × [x0, x1)`` of a one-page TIFF, reading only the tiles/strips they touch.

    ``box`` is a :class:`~runtime.tiling.Box` or ``(y0, y1, x0, x1)``. For checking a
    streamed output too large to read whole. Returns H×W×C (C = 1 for gray).
    """
    tifffile = require("tifffile", pip="tifffile", purpose="reading a region of a TIFF")
    path = Path(path)
    b = box if isinstance(box, Box) else Box(*(int(v) for v in box))
    with tifffile.TiffFile(path) as tif:
        lazy = _lazy_tiff(path, tif) if len(tif.pages) == 1 else f"it has {len(tif.pages)} pages"
        if isinstance(lazy, str):
            raise ImageReadError(path, f"cannot be read by region: {lazy}")
        reader = lazy[0]
        if not (0 <= b.y0 < b.y1 <= reader.height and 0 <= b.x0 < b.x1 <= reader.width):
            raise InvalidArgumentError(
                f"region {b} is not inside the {reader.width}x{reader.height} image {path} (or is empty)"
            )
        return np.ascontiguousarray(reader.read(b.y0, b.y1, b.x0, b.x1))


# --------------------------------------------------------------------------- the hook


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / MB:.3g} MB"


def default_output_budget_mb() -> float:
    """Half the memory available now (MemAvailable), 2000 MB where /proc/meminfo is missing."""
    available = available_memory_bytes()
    return 2000.0 if available is None else available / 2 / MB


def probe(src: str | os.PathLike[str]) -> tuple[int, int, int, np.dtype] | None:
    """``(height, width, channels, dtype)`` of a single-image file from its header, else None.

    None for multi-frame files and files whose header does not say (the normal path then
    reads them and reports any problem). Cheap: no pixel is decoded.
    """
    path = Path(src)
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            import tifffile
        except ImportError:
            return None
        try:
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) != 1:
                    return None
                page = tif.pages[0]
                if not isinstance(page, tifffile.TiffPage):
                    return None
                return int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel), np.dtype(page.dtype)
        except Exception:  # noqa: BLE001 - any unreadable header: the normal path says what is wrong
            return None
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if getattr(im, "n_frames", 1) != 1:
                    return None
                channels = {"L": 1, "LA": 2, "I;16": 1, "RGBA": 4, "PA": 4}.get(im.mode, 3)
                depth = np.dtype(np.uint16) if im.mode.startswith("I;16") else np.dtype(np.uint8)
                return im.height, im.width, channels, depth
    except Exception:  # noqa: BLE001 - bombs and broken headers are the normal path's to report
        return None


def stream_if_large(
    upscaler: Any,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    budget_mb: float | None = None,
    band_budget_mb: float = DEFAULT_BAND_BUDGET_MB,
) -> StreamResult | None:
    """Stream ``src`` to ``dst`` when its output array would exceed ``budget_mb``; else None.

    The hook of ``Upscaler.upscale_file``: None means "upscale in memory as usual". Over
    the budget, a .tif/.tiff ``dst`` is written by :func:`upscale_to_tiff`; any other
    extension raises :class:`~runtime.errors.ImageWriteError` saying to write .tif (before
    any compute). ``budget_mb`` defaults to :func:`default_output_budget_mb`. Only host
    backends stream; on a GPU this returns None.
    """
    if getattr(upscaler, "pipelined", False):
        return None
    size = probe(src)
    if size is None:
        return None
    height, width, channels, dtype = size
    budget = default_output_budget_mb() if budget_mb is None else float(budget_mb)
    nbytes = output_nbytes(upscaler.scale, height, width, channels, dtype)
    if nbytes <= budget * MB:
        return None
    dst = Path(dst)
    if dst.suffix.lower() not in TIFF_SUFFIXES:
        raise ImageWriteError(
            dst,
            f"the {width * upscaler.scale}x{height * upscaler.scale} output of {src} takes {_size(nbytes)}, "
            f"more than the {_size(budget * MB)} memory budget; write it as .tif (streamed to disk tile row by "
            "tile row) or raise the budget",
        )
    log.info("output %s > budget %s: streaming to %s", _size(nbytes), _size(budget * MB), dst)
    return upscale_to_tiff(upscaler, src, dst, memory_budget_mb=band_budget_mb, overwrite=overwrite)

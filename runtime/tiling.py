"""Tile planning: pure functions that cut an image into fixed-shape model inputs.

Why tiles: memory (and TensorRT engine shapes) must not grow with the image. Why this
particular plan:

* **Cores partition the image.** Each tile *owns* a core; inner cores are ``tile`` pixels
  per axis, and the first and last ones also own the border strip their window covers
  (a window needs no context beyond the image edge), so every pixel is owned by exactly
  one tile and no window is spent on a sliver: a 135-pixel axis with tile 128 and halo 8
  is one 135-pixel window, not two.
* **One input shape.** Every window (the core plus its context) has the same shape,
  ``min(tile + 2*halo, image size)`` per axis, so one engine shape serves every tile and
  every batch. Near the bottom/right border the window is *shifted inward* rather than
  padded: it keeps its shape and gains more context on the inner side.
* **Mirrored context beyond the borders.** A core at the image border gets ``border``
  (default: ``halo``) pixels of context beyond the image edge, filled by mirroring the
  image (:data:`BORDER_MODE`, see :func:`index_map`), so no output pixel is decided by the
  network's own zero padding (measured: flat colour came back with errors of 60-110 grey
  levels in the outer rows without it). Windows therefore may reach outside the image
  (negative or beyond-the-edge coordinates); :func:`runtime.stitching.gather_windows`
  fills those pixels through an index map, without a padded copy of the image. Tiled
  output equals whole-image output *of the image padded by ``border`` in the same mode*
  once ``halo`` covers the model's receptive field.
* **Tiny images.** A backend may need inputs of at least ``min_size`` pixels per axis (a
  fixed-shape engine); windows of smaller images reach further out (bottom/right) and are
  filled the same way; cores only cover the real image.

How big: :func:`plan_tiles` takes the tile edge; :func:`plan_auto` (``tile="auto"``) picks
the windows from the image size, the halo and the most pixels one window may have (what a
memory budget allows): the whole image when it fits, otherwise the grid of windows that
computes the fewest pixels, each axis split *evenly* (``n`` windows of
``ceil((L - 2*halo) / n) + 2*halo``) so no row or column is a sliver or a window that mostly
repeats its neighbour. Windows may be rectangular there.

Everything here is a pure function of integers (plus :func:`pad_image` on an array) and
is unit-tested without a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import InvalidArgumentError
from .utils import check_int

__all__ = [
    "Box",
    "Tile",
    "TilePlan",
    "plan_tiles",
    "plan_auto",
    "even_window",
    "required_size",
    "pad_image",
    "index_map",
    "pad_border",
    "BORDER_MODE",
    "BorderMode",
    "CALL_PIXELS",
]

BorderMode = Literal["symmetric", "reflect", "edge"]
BORDER_MODE: BorderMode = "symmetric"
"""How window pixels beyond the image edge are filled (a :func:`numpy.pad` mode): mirror
with the edge pixel repeated; it also serves 1-pixel axes and windows larger than twice
the image, where ``reflect`` cannot mirror. Chosen by measurement (benchmarks/border_band.py,
"How the border is filled"): on the held-out photos its band gains +0.55 dB over bicubic on
average, ``edge`` +0.44, ``reflect`` -0.12, zero padding -0.46; the LR images and bicubic
itself pad symmetrically, and a border wider than the halo changes under 0.01 dB."""

CALL_PIXELS = 4096
"""What one extra model call costs, in window pixels, when :func:`plan_auto` compares grids:
between two grids that compute about as many pixels it takes the one with fewer calls."""


@dataclass(frozen=True)
class Box:
    """A half-open rectangle ``[y0, y1) × [x0, x1)`` in pixels."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices to index an H×W(×C) array with."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def scaled(self, scale: int) -> Box:
        """The same rectangle in an image ``scale`` times larger."""
        return Box(self.y0 * scale, self.y1 * scale, self.x0 * scale, self.x1 * scale)


@dataclass(frozen=True)
class Tile:
    """One model input: the ``window`` it reads and the ``core`` it owns (LR pixels).

    ``core_in_window`` is the core relative to the window's top-left corner: scaled by
    the model's scale it is the crop to take from the upscaled window.
    """

    index: int
    row: int
    col: int
    window: Box
    core: Box

    @property
    def core_in_window(self) -> Box:
        w = self.window
        c = self.core
        return Box(c.y0 - w.y0, c.y1 - w.y0, c.x0 - w.x0, c.x1 - w.x0)

    def output_box(self, scale: int) -> Box:
        """Where the upscaled core goes in the output image."""
        return self.core.scaled(scale)

    def crop_box(self, scale: int) -> Box:
        """Which part of the upscaled window is the upscaled core."""
        return self.core_in_window.scaled(scale)


@dataclass(frozen=True)
class TilePlan:
    """How to cut an ``image_height`` × ``image_width`` image into tiles.

    Windows live in the (possibly padded) ``input_height`` × ``input_width`` image;
    cores cover exactly the real ``image_height`` × ``image_width`` image.
    """

    image_height: int
    image_width: int
    input_height: int
    input_width: int
    tile_height: int
    tile_width: int
    halo: int
    window_height: int
    window_width: int
    rows: int
    cols: int
    tiles: tuple[Tile, ...]
    border: int = 0
    """Context each border core gets beyond the image edge (mirrored, :data:`BORDER_MODE`)."""

    @property
    def window_shape(self) -> tuple[int, int]:
        """``(height, width)`` shared by every window: the model input's spatial shape."""
        return self.window_height, self.window_width

    @property
    def tile(self) -> int:
        """The (larger) core edge asked for; see ``tile_height`` / ``tile_width``."""
        return max(self.tile_height, self.tile_width)

    @property
    def window_pixels(self) -> int:
        """Pixels the model computes for this image: windows × window area."""
        return len(self.tiles) * self.window_height * self.window_width

    @property
    def overlap(self) -> float:
        """Computed pixels over image pixels: what the halo costs (1.0 for one window)."""
        return self.window_pixels / (self.image_height * self.image_width)

    def describe(self) -> str:
        """One line for logs and ``--verbose``: grid, window, halo, computed/image pixels."""
        if len(self.tiles) == 1:
            return (
                f"{self.image_width}x{self.image_height}: one {self.window_width}x{self.window_height} window "
                f"(whole image), overlap {self.overlap:.3f}"
            )
        return (
            f"{self.image_width}x{self.image_height}: {self.cols}x{self.rows} windows of "
            f"{self.window_width}x{self.window_height} (halo {self.halo}), overlap {self.overlap:.3f}"
        )

    @property
    def needs_padding(self) -> bool:
        """Always False: windows beyond the image are filled by the gather (no padded copy)."""
        return False

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)


def required_size(height: int, width: int, *, min_size: int = 1) -> tuple[int, int]:
    """The size an image must be padded to so that each axis is at least ``min_size``."""
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    min_size = check_int("min_size", min_size, 1)
    return max(height, min_size), max(width, min_size)


def _plan_axis(length: int, padded: int, tile: int, window: int) -> list[tuple[int, int, int, int]]:
    """``(core0, core1, win0, win1)`` along one axis; see the module docstring.

    Each window is as large as allowed and each core as large as its window permits while
    keeping ``halo`` pixels of context inside the window (or the image border): the first
    and last cores reach the image border, so an axis only a little longer than ``tile``
    still needs a single window when ``tile + 2*halo`` covers it.
    """
    if window >= padded:
        return [(0, length, 0, window)]
    halo = (window - min(tile, window)) // 2
    spans = []
    core0 = 0
    while core0 < length:
        win0 = min(max(core0 - halo, 0), padded - window)
        win1 = win0 + window
        core1 = length if win1 >= padded else min(win1 - halo, length)
        spans.append((core0, core1, win0, win1))
        core0 = core1
    return spans


def plan_tiles(
    height: int,
    width: int,
    tile: int | tuple[int, int],
    halo: int,
    *,
    min_size: int = 1,
    border: int | None = None,
) -> TilePlan:
    """Plan the tiles of a ``height`` × ``width`` image.

    ``tile`` is the core edge in low-resolution pixels (or ``(tile_height, tile_width)``),
    ``halo`` the context kept on each side of a core, ``border`` the mirrored context
    beyond the image edge (default ``halo``; 0 clips the halo at the border),
    ``min_size`` the smallest input edge the backend accepts (windows of smaller images
    reach further beyond the edge).
    """
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    if isinstance(tile, tuple):
        if len(tile) != 2:
            raise InvalidArgumentError(f"tile must be an int or a (height, width) tuple, got {tile!r}")
        tile_height, tile_width = check_int("tile height", tile[0], 1), check_int("tile width", tile[1], 1)
    else:
        tile_height = tile_width = check_int("tile", tile, 1)
    halo = check_int("halo", halo, 0)
    border = halo if border is None else check_int("border", border, 0)
    # Plan on the virtual image padded by ``border``; cores are then clipped to the real one.
    input_height, input_width = required_size(height + 2 * border, width + 2 * border, min_size=min_size)

    window_height = min(tile_height + 2 * halo, input_height)
    window_width = min(tile_width + 2 * halo, input_width)
    row_spans = _shift(_plan_axis(height + 2 * border, input_height, tile_height, window_height), border, height)
    col_spans = _shift(_plan_axis(width + 2 * border, input_width, tile_width, window_width), border, width)

    tiles: list[Tile] = []
    for row, (cy0, cy1, wy0, wy1) in enumerate(row_spans):
        for col, (cx0, cx1, wx0, wx1) in enumerate(col_spans):
            tiles.append(
                Tile(
                    index=len(tiles),
                    row=row,
                    col=col,
                    window=Box(wy0, wy1, wx0, wx1),
                    core=Box(cy0, cy1, cx0, cx1),
                )
            )
    return TilePlan(
        image_height=height,
        image_width=width,
        input_height=input_height,
        input_width=input_width,
        tile_height=tile_height,
        tile_width=tile_width,
        halo=halo,
        window_height=window_height,
        window_width=window_width,
        rows=len(row_spans),
        cols=len(col_spans),
        tiles=tuple(tiles),
        border=border,
    )


def _shift(spans: list[tuple[int, int, int, int]], border: int, length: int) -> list[tuple[int, int, int, int]]:
    """Spans of the ``border``-padded axis in image coordinates, cores clipped to the image."""
    out = []
    for core0, core1, win0, win1 in spans:
        c0, c1 = max(core0 - border, 0), min(core1 - border, length)
        if c1 > c0:
            out.append((c0, c1, win0 - border, win1 - border))
    return out


def index_map(start: int, stop: int, length: int, mode: BorderMode = BORDER_MODE) -> np.ndarray:
    """Source indices of positions ``start..stop`` on an axis of ``length`` pixels.

    Positions outside ``0..length`` are mirrored back into the image (``mode`` is a
    :func:`numpy.pad` mode: ``symmetric``, ``reflect`` or ``edge``), repeating the mirror
    as often as needed, so a window may be any size relative to the image.
    """
    before, after = max(0, -start), max(0, stop - length)
    idx = np.pad(np.arange(length), (before, after), mode=mode)
    return idx[start + before : stop + before]


def pad_border(image: np.ndarray, border: int, mode: BorderMode = BORDER_MODE) -> np.ndarray:
    """``image`` (H×W[×C]) with ``border`` pixels of mirrored context on every side.

    The input whose whole-image output tiled output equals: a model run on
    ``pad_border(image, halo)`` and cropped by ``scale * halo`` is the reference that the
    Upscaler (border = halo) reproduces. Same filling as the tiles' (:func:`index_map`).
    """
    if image.ndim < 2:
        raise InvalidArgumentError(f"image must have at least 2 dimensions, got shape {image.shape}")
    border = check_int("border", border, 0)
    if border == 0:
        return image
    h, w = image.shape[:2]
    rows, cols = index_map(-border, h + border, h, mode), index_map(-border, w + border, w, mode)
    return image[rows[:, None], cols[None, :]]


def even_window(length: int, count: int, halo: int, *, min_size: int = 1) -> int:
    """The window edge that splits an axis of ``length`` evenly into ``count`` windows.

    The first and last cores own ``tile + halo`` pixels, inner ones ``tile``, so ``count``
    windows of ``tile + 2*halo`` cover ``count*tile + 2*halo`` pixels: the smallest such tile
    is ``ceil((length - 2*halo) / count)``. One window is the whole (padded) axis. The result
    is at least ``min_size`` (the backend's smallest edge).
    """
    padded = max(length, min_size)
    if count <= 1 or length - 2 * halo < count:
        return padded
    return min(max(-(-(length - 2 * halo) // count) + 2 * halo, min_size), padded)


def plan_auto(
    height: int,
    width: int,
    halo: int,
    max_window_pixels: int,
    *,
    limits: tuple[int, int] | None = None,
    call_pixels: int = CALL_PIXELS,
    border: int | None = None,
) -> TilePlan:
    """The tiles of ``tile="auto"``: the cheapest evenly split grid whose windows fit.

    A window may have at most ``max_window_pixels`` pixels and, per edge, lie within
    ``limits`` ``(min, max)`` (an engine's profile; smaller images are padded to ``min``). The
    whole image is one window when it fits; otherwise every (rows, cols) grid is sized with
    :func:`even_window` and the one computing the fewest pixels, plus ``call_pixels`` per
    window for the cost of a call, wins. Raises :class:`InvalidArgumentError` when not even a
    one-pixel core with its halo fits.
    """
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    halo = check_int("halo", halo, 0)
    max_window_pixels = check_int("max_window_pixels", max_window_pixels, 1)
    low, high = (1, 1 << 30) if limits is None else (check_int("min edge", limits[0], 1), limits[1])
    best: tuple[int, int, int, int, int] | None = None  # cost, rows, cols, window h, window w
    real_height, real_width = height, width
    border = halo if border is None else check_int("border", border, 0)
    height, width = height + 2 * border, width + 2 * border  # the grid covers the mirrored border too
    for rows in range(1, height + 1):
        wh = even_window(height, rows, halo, min_size=low)
        if rows > 1 and wh == max(height, low):
            break  # the axis cannot be split further (tile would drop below one pixel)
        if wh > high:
            continue
        max_ww = min(high, max_window_pixels // wh)
        if max_ww < max(low, 1):
            continue
        padded_w = max(width, low)
        if padded_w <= max_ww:
            cols = 1
        elif max_ww > 2 * halo and width - 2 * halo >= 2:
            cols = max(2, -(-(width - 2 * halo) // (max_ww - 2 * halo)))
            if width - 2 * halo < cols:
                continue
        else:
            continue
        ww = even_window(width, cols, halo, min_size=low)
        if ww > max_ww:
            continue
        cost = rows * cols * (wh * ww + call_pixels)
        if best is None or cost < best[0]:
            best = (cost, rows, cols, wh, ww)
    if best is None:
        raise InvalidArgumentError(
            f"no window of at most {max_window_pixels} pixels (edges {low}..{high}) tiles a "
            f"{real_width}x{real_height} "
            f"image with halo {halo}: a core needs (1 + 2*halo)^2 = {(1 + 2 * halo) ** 2} pixels at least; "
            "raise the memory budget or lower the halo"
        )
    _, rows, cols, wh, ww = best
    tile_h = wh if rows == 1 else wh - 2 * halo
    tile_w = ww if cols == 1 else ww - 2 * halo
    plan = plan_tiles(real_height, real_width, (tile_h, tile_w), halo, min_size=low, border=border)
    if (plan.rows, plan.cols) != (rows, cols):  # even_window's arithmetic is what plan_tiles does
        raise AssertionError(f"plan_auto: planned {rows}x{cols}, plan_tiles made {plan.rows}x{plan.cols}")
    return plan


def pad_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad an H×W(×C) array at the bottom/right to ``height`` × ``width``.

    Reflection (mirror without repeating the edge pixel) keeps texture statistics close to
    the real image; it can add at most ``size - 1`` pixels, so whatever is still missing
    is filled by replicating the edge. Returns ``image`` itself when no padding is needed.
    """
    if image.ndim < 2:
        raise InvalidArgumentError(f"image must have at least 2 dimensions, got shape {image.shape}")
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    h, w = image.shape[:2]
    if height < h or width < w:
        raise InvalidArgumentError(
            f"pad_image target {height}x{width} is smaller than the image {h}x{w}; padding can only grow an image"
        )
    extra = [(0, 0)] * (image.ndim - 2)
    reflect = (min(height - h, h - 1), min(width - w, w - 1))
    out = image
    if any(reflect):
        out = np.pad(out, [(0, reflect[0]), (0, reflect[1]), *extra], mode="reflect")
    edge = (height - out.shape[0], width - out.shape[1])
    if any(edge):
        out = np.pad(out, [(0, edge[0]), (0, edge[1]), *extra], mode="edge")
    return out

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
* **Halo clipped at the borders.** A core at the image border has no context outside
  the image, exactly like whole-image inference, so tiled output equals whole-image
  output once ``halo`` covers the model's receptive field.
* **Padding only for tiny images.** A backend may need inputs of at least ``min_size``
  pixels per axis (a fixed-shape engine); smaller images are padded at the bottom/right
  (reflect, then edge-replicate once reflection runs out) and the padding never reaches
  the output, because cores only cover the real image.

Everything here is a pure function of integers (plus :func:`pad_image` on an array) and
is unit-tested without a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InvalidArgumentError
from .utils import check_int

__all__ = ["Box", "Tile", "TilePlan", "plan_tiles", "required_size", "pad_image"]


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
    tile: int
    halo: int
    window_height: int
    window_width: int
    rows: int
    cols: int
    tiles: tuple[Tile, ...]

    @property
    def window_shape(self) -> tuple[int, int]:
        """``(height, width)`` shared by every window: the model input's spatial shape."""
        return self.window_height, self.window_width

    @property
    def needs_padding(self) -> bool:
        """Whether the image must go through :func:`pad_image` before gathering."""
        return (self.input_height, self.input_width) != (self.image_height, self.image_width)

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


def plan_tiles(height: int, width: int, tile: int, halo: int, *, min_size: int = 1) -> TilePlan:
    """Plan the tiles of a ``height`` × ``width`` image.

    ``tile`` is the core edge in low-resolution pixels, ``halo`` the context kept on each
    side of a core (clipped at the image border), ``min_size`` the smallest input edge the
    backend accepts (images smaller than that are padded; see :func:`pad_image`).
    """
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    tile = check_int("tile", tile, 1)
    halo = check_int("halo", halo, 0)
    input_height, input_width = required_size(height, width, min_size=min_size)

    window_height = min(tile + 2 * halo, input_height)
    window_width = min(tile + 2 * halo, input_width)
    row_spans = _plan_axis(height, input_height, tile, window_height)
    col_spans = _plan_axis(width, input_width, tile, window_width)

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
        tile=tile,
        halo=halo,
        window_height=window_height,
        window_width=window_width,
        rows=len(row_spans),
        cols=len(col_spans),
        tiles=tuple(tiles),
    )


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

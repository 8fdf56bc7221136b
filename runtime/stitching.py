"""Moving pixels between the image and the model's batches: gather and scatter.

:func:`gather_windows` copies the input windows of a batch of tiles into a caller-owned
array in the model's layout (float32 NCHW or uint8 NHWC), converting dtype and value range
on the way; it allocates nothing, so the array can be a pinned host buffer that a GPU
backend copies from. :func:`scatter_cores` crops each upscaled window to its core and
writes it into the preallocated output image, rounding and clipping into the output dtype.
Converting tile by tile is what keeps peak memory proportional to the tile rather than the
image: there is never a float32 copy of the whole input or output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InvalidArgumentError
from .layout import ModelIO
from .tiling import BORDER_MODE, BorderMode, Tile, index_map

__all__ = ["LUMA_BT601", "batch_shape", "allocate_batch", "gather_windows", "scatter_cores"]

LUMA_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights: how a 3-channel model result becomes one gray channel."""


def batch_shape(io: ModelIO, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The array shape of ``batch`` RGB windows of ``height`` × ``width`` in layout ``io``."""
    return ModelIO(io).batch_shape(batch, height, width)


def allocate_batch(io: ModelIO, batch: int, height: int, width: int) -> np.ndarray:
    """An uninitialised input batch for layout ``io`` (a GPU backend may pin it instead)."""
    return np.empty(io.batch_shape(batch, height, width), dtype=io.dtype)


def gather_windows(
    source: np.ndarray,
    tiles: Sequence[Tile],
    out: np.ndarray,
    *,
    io: ModelIO,
    input_scale: float = 1.0,
    border_mode: BorderMode = BORDER_MODE,
) -> np.ndarray:
    """Copy the windows of ``tiles`` from ``source`` into ``out[:len(tiles)]``.

    ``source`` is H×W×1 (gray, replicated to RGB here) or H×W×3. Values are multiplied by
    ``input_scale`` on the way into a float32 batch (1/257 maps uint16 onto 0..255).
    Window pixels outside ``source`` (border context, tiny images) are mirrored in from
    the image (``border_mode``, a :func:`numpy.pad` mode) through an index map: a
    window-sized temporary for border windows only, never a padded copy of the image.
    Returns the filled view ``out[:len(tiles)]``.
    """
    if source.ndim != 3 or source.shape[2] not in (1, 3):
        raise InvalidArgumentError(f"source must be H×W×1 or H×W×3, got shape {source.shape}")
    if out.dtype != io.dtype or out.ndim != 4 or len(tiles) > out.shape[0]:
        raise InvalidArgumentError(
            f"out must be a {io.dtype} batch for {io.value} with room for {len(tiles)} "
            f"tiles, got {out.dtype} {out.shape}"
        )
    if io.is_integer and source.dtype != io.dtype:
        raise InvalidArgumentError(
            f"a {io.value} model takes {io.dtype} pixels, got {source.dtype}; use a float32-nchw model"
        )
    scale = None if input_scale == 1.0 else out.dtype.type(input_scale)
    height, width = source.shape[:2]
    for i, tile in enumerate(tiles):
        # io.hwc is a view and copyto broadcasts 1 channel to 3: no temporaries inside the image.
        dst = io.hwc(out[i])
        w = tile.window
        if w.y0 >= 0 and w.x0 >= 0 and w.y1 <= height and w.x1 <= width:
            np.copyto(dst, source[w.slices], casting="unsafe")
        else:
            rows = index_map(w.y0, w.y1, height, border_mode)
            cols = index_map(w.x0, w.x1, width, border_mode)
            np.copyto(dst, source[rows[:, None], cols[None, :]], casting="unsafe")
        if scale is not None:
            dst *= scale
    return out[: len(tiles)]


def scatter_cores(
    results: np.ndarray,
    tiles: Sequence[Tile],
    output: np.ndarray,
    *,
    scale: int,
    io: ModelIO,
    output_scale: float = 1.0,
    to_gray: bool = False,
) -> None:
    """Write the upscaled core of each tile from ``results`` into ``output``.

    ``results`` is the model output for ``tiles`` (layout ``io``); ``output`` is the
    (scale·H)×(scale·W)×C view to fill, C = 1 with ``to_gray`` (BT.601 luma of the RGB
    result) else 3. Values are multiplied by ``output_scale``; integer outputs are rounded
    and clipped to the dtype's range, float outputs are stored as they are.
    """
    expected_c = 1 if to_gray else 3
    if output.ndim != 3 or output.shape[2] != expected_c:
        raise InvalidArgumentError(f"output must be H×W×{expected_c} (to_gray={to_gray}), got shape {output.shape}")
    integer = np.issubdtype(output.dtype, np.integer)
    low, high = (np.iinfo(output.dtype).min, np.iinfo(output.dtype).max) if integer else (0, 0)
    for i, tile in enumerate(tiles):
        piece = io.hwc(results[i])[tile.crop_box(scale).slices]
        dst = output[tile.output_box(scale).slices]
        if to_gray:
            piece = np.dot(piece, LUMA_BT601)[..., None]
        if output_scale != 1.0:
            piece = np.multiply(piece, np.float32(output_scale), dtype=np.float32)
        if integer and piece.dtype != output.dtype:
            piece = np.rint(piece)  # a tile-sized temporary, never image-sized
            np.clip(piece, low, high, out=piece)
        np.copyto(dst, piece, casting="unsafe")

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
from .model_info import ModelIO
from .tiling import Tile

__all__ = ["LUMA_BT601", "batch_shape", "allocate_batch", "gather_windows", "scatter_cores"]

LUMA_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights: how a 3-channel model result becomes one gray channel."""

_DTYPES = {ModelIO.FLOAT32_NCHW: np.dtype(np.float32), ModelIO.UINT8_NHWC: np.dtype(np.uint8)}


def batch_shape(io: ModelIO, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The array shape of ``batch`` RGB windows of ``height`` × ``width`` in layout ``io``."""
    if io is ModelIO.FLOAT32_NCHW:
        return batch, 3, height, width
    return batch, height, width, 3


def allocate_batch(io: ModelIO, batch: int, height: int, width: int) -> np.ndarray:
    """An uninitialised input batch for layout ``io`` (a GPU backend may pin it instead)."""
    return np.empty(batch_shape(io, batch, height, width), dtype=_DTYPES[io])


def gather_windows(
    source: np.ndarray,
    tiles: Sequence[Tile],
    out: np.ndarray,
    *,
    io: ModelIO,
    input_scale: float = 1.0,
) -> np.ndarray:
    """Copy the windows of ``tiles`` from ``source`` into ``out[:len(tiles)]``.

    ``source`` is H×W×1 (gray, replicated to RGB here) or H×W×3. Values are multiplied by
    ``input_scale`` on the way into a float32 batch (1/257 maps uint16 onto 0..255).
    Returns the filled view ``out[:len(tiles)]``.
    """
    if source.ndim != 3 or source.shape[2] not in (1, 3):
        raise InvalidArgumentError(f"source must be H×W×1 or H×W×3, got shape {source.shape}")
    if out.dtype != _DTYPES[io] or out.ndim != 4 or len(tiles) > out.shape[0]:
        raise InvalidArgumentError(
            f"out must be a {_DTYPES[io]} batch for {io.value} with room for {len(tiles)} "
            f"tiles, got {out.dtype} {out.shape}"
        )
    if io is ModelIO.UINT8_NHWC and source.dtype != np.uint8:
        raise InvalidArgumentError(
            f"a {io.value} model takes uint8 pixels, got {source.dtype}; use a float32-nchw model"
        )
    for i, tile in enumerate(tiles):
        window = source[tile.window.slices]
        if io is ModelIO.FLOAT32_NCHW:
            dst = out[i]
            # transpose is a view and copyto broadcasts 1 channel to 3: no temporaries.
            np.copyto(dst, window.transpose(2, 0, 1), casting="unsafe")
            if input_scale != 1.0:
                dst *= np.float32(input_scale)
        else:
            np.copyto(out[i], window, casting="unsafe")
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
        raise InvalidArgumentError(
            f"output must be H×W×{expected_c} (to_gray={to_gray}), got shape {output.shape}"
        )
    integer = np.issubdtype(output.dtype, np.integer)
    limits = np.iinfo(output.dtype) if integer else None
    for i, tile in enumerate(tiles):
        crop = tile.crop_box(scale)
        if io is ModelIO.FLOAT32_NCHW:
            piece = results[i][:, crop.y0 : crop.y1, crop.x0 : crop.x1].transpose(1, 2, 0)
        else:
            piece = results[i][crop.y0 : crop.y1, crop.x0 : crop.x1]
        dst = output[tile.output_box(scale).slices]
        if to_gray:
            piece = np.dot(piece, LUMA_BT601)[..., None]
        if output_scale != 1.0:
            piece = np.multiply(piece, np.float32(output_scale), dtype=np.float32)
        if integer and piece.dtype != output.dtype:
            piece = np.rint(piece)  # a tile-sized temporary, never image-sized
            np.clip(piece, limits.min, limits.max, out=piece)
        np.copyto(dst, piece, casting="unsafe")

"""Gathering windows from, and stitching cores into, frames that stay on the GPU.

The host path (:mod:`runtime.stitching`) converts pixels with numpy; here every move is a
device-to-device 2-D copy (``cudaMemcpy2DAsync``) queued on the slot's stream, so a frame
that arrives on the GPU (:mod:`runtime.device_arrays`) never visits host memory. That is
possible only when a window is a plain byte rectangle of the frame: uint8 H×W×3 in, a
``uint8-nhwc`` model, and so no dtype or layout conversion.

Context outside the image (the mirrored border of border windows, frames smaller than
the model's minimum) comes from the host path's own *index map* per axis
(:func:`runtime.tiling.index_map`: the frame row or column each window row or column
reads), so both paths read the same pixels by construction. A map is cut into runs of
consecutive source indices, and each pair of a row run and a column run is one 2-D copy:
an interior window is one copy; a mirrored border adds one copy per mirrored row or column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .device_arrays import DeviceImage
from .errors import InvalidArgumentError
from .layout import ModelIO
from .tiling import BORDER_MODE, BorderMode, Tile, index_map

__all__ = ["DeviceTarget", "check_device_io", "runs", "gather_on_device", "scatter_on_device"]

Copy2D = Callable[[int, int, int, int, int, int, Any], None]
"""``copy_2d(dst, dst_pitch, src, src_pitch, width_bytes, height, stream)``: a device's D2D copy."""


class DeviceTarget:
    """Where an image's upscaled pixels go on the device: ``ptr``, shape and row pitch."""

    def __init__(self, ptr: int, height: int, width: int, channels: int, itemsize: int = 1) -> None:
        self.ptr = int(ptr)
        self.shape = (int(height), int(width), int(channels))
        self.row_pitch = width * channels * itemsize
        self.pixel_bytes = channels * itemsize


def check_device_io(io: ModelIO, image: DeviceImage) -> None:
    """Refuse a device frame the window copies cannot feed to this model, saying why."""
    if io is not ModelIO.UINT8_NHWC:
        raise InvalidArgumentError(
            f"a {image.describe()} needs a model with uint8-nhwc I/O (windows are copied on the "
            f"device as they are), but this model has {io.value} I/O; export it with "
            "`python export/to_onnx.py ... --io uint8-nhwc`, or pass a host (numpy) array"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.channels != 3:
        raise InvalidArgumentError(
            f"device frames must be H×W×3 uint8 RGB, got a {image.describe()}; convert it on the "
            "device first (gray, alpha and other dtypes are supported for host arrays)"
        )


def runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """``(dst_start, src_start, length)`` of the maximal runs of consecutive source indices."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [idx.size]))
    return [(int(s), int(idx[s]), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def gather_on_device(
    copy_2d: Copy2D,
    image: DeviceImage,
    tiles: Sequence[Tile],
    dst_ptr: int,
    window_shape: tuple[int, int],
    stream: Any,
    border_mode: BorderMode = BORDER_MODE,
) -> int:
    """Queue the copies of each tile's window into batch slot ``i`` at ``dst_ptr``; returns how many.

    Window coordinates may reach outside the frame (negative or past the edge); those rows
    and columns are read mirrored (``border_mode``), as :func:`runtime.stitching.gather_windows` does.
    """
    wh, ww = window_shape
    px = image.pixel_bytes
    dst_pitch = ww * px
    queued = 0
    for i, tile in enumerate(tiles):
        w = tile.window
        if (w.y1 - w.y0, w.x1 - w.x0) != (wh, ww):
            raise InvalidArgumentError(f"tile {tile.index}: window {w} is not {wh}x{ww}")
        base = dst_ptr + i * wh * dst_pitch
        col_runs = runs(index_map(w.x0, w.x1, image.width, border_mode))
        for dr, sr, nr in runs(index_map(w.y0, w.y1, image.height, border_mode)):
            for dc, sc, nc in col_runs:
                copy_2d(
                    base + dr * dst_pitch + dc * px,
                    dst_pitch,
                    image.ptr + sr * image.row_pitch + sc * px,
                    image.row_pitch,
                    nc * px,
                    nr,
                    stream,
                )
                queued += 1
    return queued


def scatter_on_device(
    copy_2d: Copy2D,
    src_ptr: int,
    tiles: Sequence[Tile],
    target: DeviceTarget,
    scale: int,
    window_shape: tuple[int, int],
    stream: Any,
) -> None:
    """Queue one copy per tile: its upscaled core from batch slot ``i`` into ``target``."""
    wh, ww = window_shape
    px = target.pixel_bytes
    src_pitch = ww * scale * px
    for i, tile in enumerate(tiles):
        crop = tile.crop_box(scale)
        out = tile.output_box(scale)
        copy_2d(
            target.ptr + out.y0 * target.row_pitch + out.x0 * px,
            target.row_pitch,
            src_ptr + i * wh * scale * src_pitch + crop.y0 * src_pitch + crop.x0 * px,
            src_pitch,
            (crop.x1 - crop.x0) * px,
            crop.y1 - crop.y0,
            stream,
        )

"""The tiler most PyTorch upscalers ship: Real-ESRGAN's ``RealESRGANer.tile_process``, rewritten.

It is the peer the runtime's tile loop is measured against (``benchmarks/peers.py``), so it
is written the way that code does it, not the way this project would:

* tiles of ``tile`` (128) LR pixels in row-major order, each read with ``pad`` (10) pixels
  of context clipped at the image border, so border tiles are smaller and every tile shape
  may differ (no fixed window shape, no shifting inward);
* one ``model(input_tile)`` call per tile, no batching, no reuse of buffers;
* the upscaled core of each tile copied into a zero-initialised output tensor.

Left out, as they are not part of the tile loop: Real-ESRGAN's ``pre_pad`` / ``mod_pad``
(reflection padding of the whole image before tiling), BGR/RGB swaps and the 0..1 scaling
(this project's models take 0..255).

torch is imported by the caller; this module only needs a tensor with ``new_zeros``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["TILE", "PAD", "tile_process", "tile_boxes"]

TILE = 128
PAD = 10


def tile_boxes(height: int, width: int, tile: int = TILE, pad: int = PAD) -> list[tuple[int, int, int, int, int, int]]:
    """Per tile ``(y0, y1, x0, x1, pad_top, pad_left)``: the padded window it reads (LR pixels)
    and where its core starts inside that window; what :func:`tile_process` computes."""
    boxes = []
    for y in range(math.ceil(height / tile)):
        for x in range(math.ceil(width / tile)):
            in_y0, in_x0 = y * tile, x * tile
            in_y1, in_x1 = min(in_y0 + tile, height), min(in_x0 + tile, width)
            pad_y0, pad_x0 = max(in_y0 - pad, 0), max(in_x0 - pad, 0)
            pad_y1, pad_x1 = min(in_y1 + pad, height), min(in_x1 + pad, width)
            boxes.append((pad_y0, pad_y1, pad_x0, pad_x1, in_y0 - pad_y0, in_x0 - pad_x0))
    return boxes


def tile_process(model: Callable[[Any], Any], img: Any, scale: int, tile: int = TILE, pad: int = PAD) -> Any:
    """Upscale the N×C×H×W tensor ``img`` tile by tile, Real-ESRGAN style (see the module docstring)."""
    batch, channel, height, width = img.shape
    output = img.new_zeros((batch, channel, height * scale, width * scale))
    tiles_x = math.ceil(width / tile)
    tiles_y = math.ceil(height / tile)
    for y in range(tiles_y):
        for x in range(tiles_x):
            # the tile's core in the input image
            input_start_x = x * tile
            input_end_x = min(input_start_x + tile, width)
            input_start_y = y * tile
            input_end_y = min(input_start_y + tile, height)
            # with padding, clipped at the border
            input_start_x_pad = max(input_start_x - pad, 0)
            input_end_x_pad = min(input_end_x + pad, width)
            input_start_y_pad = max(input_start_y - pad, 0)
            input_end_y_pad = min(input_end_y + pad, height)
            input_tile_width = input_end_x - input_start_x
            input_tile_height = input_end_y - input_start_y
            input_tile = img[:, :, input_start_y_pad:input_end_y_pad, input_start_x_pad:input_end_x_pad]

            output_tile = model(input_tile)

            output_start_x = input_start_x * scale
            output_end_x = input_end_x * scale
            output_start_y = input_start_y * scale
            output_end_y = input_end_y * scale
            output_start_x_tile = (input_start_x - input_start_x_pad) * scale
            output_end_x_tile = output_start_x_tile + input_tile_width * scale
            output_start_y_tile = (input_start_y - input_start_y_pad) * scale
            output_end_y_tile = output_start_y_tile + input_tile_height * scale
            output[:, :, output_start_y:output_end_y, output_start_x:output_end_x] = output_tile[
                :, :, output_start_y_tile:output_end_y_tile, output_start_x_tile:output_end_x_tile
            ]
    return output

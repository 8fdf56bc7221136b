"""MATLAB-compatible ``imresize`` (bicubic, antialiased), in numpy.

Super-resolution benchmarks make LR images with MATLAB's ``imresize(hr, 1/s, 'bicubic')``:
cubic kernel with a = -0.5, the kernel widened by ``s`` when shrinking (antialiasing), and
symmetric (mirror) borders. PIL and torch differ at the borders and in the antialiasing, so
their LR images score differently; this follows MATLAB's ``contributions`` step by step.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["imresize", "cubic", "resize_weights"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def resize_weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per output index: input indices (0-based, mirrored into range) and their weights."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - indices
    if scale < 1 and antialias:
        weights = scale * cubic(dist * scale)
    else:
        weights = cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding, as MATLAB: index sequence 1..n, n..1 repeated.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    # Drop columns whose weights are all zero (MATLAB does too; it changes nothing numerically).
    keep = np.any(weights != 0, axis=0)
    return indices[:, keep], weights[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    indices, weights = resize_weights(img.shape[axis], out_len, scale, antialias)
    moved = np.moveaxis(img, axis, 0)
    gathered = moved[indices]  # (out_len, taps, ...)
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    out = (gathered * w).sum(axis=1)
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resize an H×W or H×W×C image like MATLAB's bicubic ``imresize``.

    ``scale`` (e.g. 1/4) or ``output_shape`` (H, W). uint8 input gives uint8 output, rounded
    and clipped as MATLAB does; float input gives float64, not clipped.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an H×W or H×W×C array, got shape {img.shape}")
    in_h, in_w = img.shape[:2]
    if output_shape is None:
        if scale is None or scale <= 0:
            raise ValueError(f"imresize needs a positive scale or an output_shape, got scale={scale!r}")
        out_h, out_w = int(math.ceil(in_h * scale)), int(math.ceil(in_w * scale))
        scale_h = scale_w = float(scale)
    else:
        out_h, out_w = output_shape
        if out_h < 1 or out_w < 1:
            raise ValueError(f"imresize output_shape must be positive, got {output_shape}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    # MATLAB resizes the dimension with the smaller scale first.
    order = (0, 1) if scale_h <= scale_w else (1, 0)
    for axis in order:
        if axis == 0:
            out = _resize_axis(out, 0, out_h, scale_h, antialias)
        else:
            out = _resize_axis(out, 1, out_w, scale_w, antialias)
        if is_uint8:
            # MATLAB's imresizemex returns the input's class after *each* dimension, so a
            # uint8 image is rounded and clipped between the two passes too.
            # MATLAB's conversion to uint8 rounds ties away from zero (np.round: to even).
            out = np.floor(np.clip(out, 0, 255) + 0.5)
    if is_uint8:
        return out.astype(np.uint8)
    return out

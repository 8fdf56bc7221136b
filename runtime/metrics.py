"""Image-quality metrics of the SR field, in numpy only (the runtime must not need torch).

Conventions (EUSR_SPEC.md, "Evaluation convention"; the MATLAB scripts of EDSR/EUSR):
- images are quantised to uint8 first, as a written image would be (round, clip);
- Y of YCbCr as MATLAB's ``rgb2ycbcr`` on uint8: Y = 16 + (65.481 R + 128.553 G +
  24.966 B) / 255, rounded to an integer (MATLAB returns uint8); gray images are used
  as they are;
- ``border`` pixels (the scale, 4 for ×4) cropped from each side;
- PSNR with peak 255; SSIM with an 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03,
  over the valid region only (no padding), as Wang et al.'s ``ssim_index.m``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["quantize", "rgb_to_y", "psnr", "psnr_y", "ssim", "ssim_y"]


def quantize(img: np.ndarray) -> np.ndarray:
    """Round and clip to uint8, as writing the image would."""
    if img.dtype == np.uint8:
        return img
    return np.clip(np.round(np.asarray(img, np.float64)), 0, 255).astype(np.uint8)


def rgb_to_y(img: np.ndarray, *, round_result: bool = True) -> np.ndarray:
    """Y channel (float64 in [16, 235]) of an H×W×3 image in [0, 255]; H×W input is returned as is."""
    img = quantize(img)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return img.reshape(img.shape[:2]).astype(np.float64)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W or H×W×3 image, got shape {img.shape}")
    rgb = img[..., :3].astype(np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.round(y) if round_result else y


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    if min(img.shape[:2]) <= 2 * border:
        raise ValueError(f"image of shape {img.shape[:2]} is too small for a {border}-pixel border crop")
    return img[border:-border, border:-border]


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0, border: int = 0) -> float:
    """PSNR in dB between two arrays (no quantisation); inf when identical."""
    _check_pair(a, b)
    diff = _crop(np.asarray(a, np.float64), border) - _crop(np.asarray(b, np.float64), border)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, border: int = 4) -> float:
    """PSNR on Y (MATLAB convention), images quantised to uint8 first."""
    _check_pair(sr, hr)
    return psnr(rgb_to_y(sr), rgb_to_y(hr), border=border)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering with a 1-D kernel along both axes."""
    k = len(g)
    h, w = img.shape
    rows = sum(g[i] * img[i : h - k + 1 + i] for i in range(k))
    return sum(g[i] * rows[:, i : w - k + 1 + i] for i in range(k))


def ssim(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0, border: int = 0) -> float:
    """Mean SSIM of two 2-D arrays (Gaussian 11×11, σ 1.5, valid region)."""
    _check_pair(a, b)
    a = _crop(np.asarray(a, np.float64), border)
    b = _crop(np.asarray(b, np.float64), border)
    if a.ndim != 2:
        raise ValueError(f"ssim expects 2-D arrays, got shape {a.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"ssim needs at least 11×11 pixels after cropping, got {a.shape}")
    g = _gaussian_window()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    saa = _filter_valid(a * a, g) - mu_a * mu_a
    sbb = _filter_valid(b * b, g) - mu_b * mu_b
    sab = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (saa + sbb + c2)
    return float(np.mean(num / den))


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, border: int = 4) -> float:
    """SSIM on Y (MATLAB convention), images quantised to uint8 first."""
    _check_pair(sr, hr)
    return ssim(rgb_to_y(sr), rgb_to_y(hr), border=border)

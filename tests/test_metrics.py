"""runtime.metrics (PSNR-Y / SSIM-Y, the field's MATLAB convention) against scikit-image.

Crop convention: ``psnr_y``/``ssim_y`` crop ``border`` pixels from each side of the Y image
first; scikit-image has no border argument, so the reference crops the same slice itself.
For SSIM, skimage (gaussian_weights=True, sigma=1.5, truncate 3.5 → an 11-tap window) filters
the whole image with reflect padding and then averages the SSIM map *without* its outer
(11-1)/2 = 5 pixels, which is exactly the 'valid' region that runtime.metrics.ssim computes
without padding. So no extra crop is needed, and the two agree to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

skm = pytest.importorskip("skimage.metrics")

from runtime.imresize import imresize  # noqa: E402 - after the skip check
from runtime.metrics import psnr, psnr_y, quantize, rgb_to_y, ssim, ssim_y  # noqa: E402 - after the skip check
from train.data import load_rgb, make_lr, mod_crop  # noqa: E402 - after the skip check

TEST_PHOTOS = ["hubble_crop.png", "ihc.png", "retina_crop.png", "camera.png"]


def sk_psnr_y(sr, hr, border):
    a, b = rgb_to_y(sr), rgb_to_y(hr)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return skm.peak_signal_noise_ratio(b, a, data_range=255)


def sk_ssim_y(sr, hr, border):
    a, b = rgb_to_y(sr), rgb_to_y(hr)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return skm.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )


@pytest.fixture(scope="module", params=TEST_PHOTOS)
def degraded_pair(request):
    """(bicubic ×4 round trip, original) on a 160×160 crop of a real test photo."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "photos" / "test" / request.param
    if not path.is_file():
        pytest.skip(f"{path} missing")
    hr = mod_crop(load_rgb(path)[40:200, 60:220], 4)
    sr = imresize(make_lr(hr, 4), 4.0)  # float, slightly outside [0, 255] at edges
    return sr, hr


@pytest.mark.parametrize("border", [4, 0, 2])
def test_psnr_y_matches_skimage(degraded_pair, border):
    sr, hr = degraded_pair
    ours = psnr_y(sr, hr, border=border)
    assert 15 < ours < 60
    assert ours == pytest.approx(sk_psnr_y(sr, hr, border), abs=1e-9)


@pytest.mark.parametrize("border", [4, 0])
def test_ssim_y_matches_skimage(degraded_pair, border):
    sr, hr = degraded_pair
    ours = ssim_y(sr, hr, border=border)
    assert 0.2 < ours < 1.0
    assert ours == pytest.approx(sk_ssim_y(sr, hr, border), abs=1e-6)


def test_psnr_and_ssim_order_images_by_quality(degraded_pair):
    sr, hr = degraded_pair
    worse = imresize(make_lr(hr, 4), 0.5)  # ×8 round trip is blurrier than ×4
    worse = imresize(worse, 8.0)
    assert psnr_y(worse, hr) < psnr_y(sr, hr)
    assert ssim_y(worse, hr) < ssim_y(sr, hr)


def test_metrics_quantise_float_input_first(rng):
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sr = hr.astype(np.float64) + rng.uniform(-0.49, 0.49, hr.shape)  # rounds back to hr
    assert psnr_y(sr, hr) == math.inf
    sr2 = hr.astype(np.float64) + 3.0
    assert psnr_y(sr2, hr) == psnr_y(quantize(sr2), hr)
    assert ssim_y(sr2, hr) == ssim_y(quantize(sr2), hr)
    over = np.full((20, 20, 3), 300.0)
    assert np.all(rgb_to_y(over) == 235)  # clipped to 255 before Y


@pytest.mark.parametrize(
    "rgb, y",
    [
        ((255, 255, 255), 235),
        ((0, 0, 0), 16),
        ((255, 0, 0), 81),
        ((0, 255, 0), 145),
        ((0, 0, 255), 41),
        ((128, 128, 128), 126),
    ],
)
def test_y_of_known_colours(rgb, y):
    img = np.zeros((2, 3, 3), np.uint8)
    img[...] = rgb
    out = rgb_to_y(img)
    assert out.shape == (2, 3)
    assert np.all(out == y)
    r, g, b = rgb
    exact = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255  # the spec's constants
    np.testing.assert_allclose(rgb_to_y(img, round_result=False), exact, rtol=0, atol=1e-12)
    assert round(exact) == y


def test_y_of_gray_image_is_the_image():
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(rgb_to_y(g), g.astype(np.float64))
    np.testing.assert_array_equal(rgb_to_y(g[..., None]), g.astype(np.float64))


def test_rgba_alpha_ignored():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 7
    assert np.all(rgb_to_y(rgba) == 235)


def test_identical_images(degraded_pair):
    _, hr = degraded_pair
    assert psnr_y(hr, hr.copy()) == math.inf
    assert ssim_y(hr, hr.copy()) == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_value():
    a = np.zeros((10, 10))
    b = np.full((10, 10), 255.0 / 10)  # MSE = 25.5² → PSNR = 20 dB
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-12)
    b[0, 0] = 1e6  # a border pixel: cropped away
    assert psnr(a, b, border=1) == pytest.approx(20.0, abs=1e-12)


def test_ssim_single_window_by_hand(rng):
    """An 11×11 image has exactly one valid window: SSIM is Wang et al.'s formula with a
    2-D Gaussian (σ = 1.5, normalised), K1 = 0.01, K2 = 0.03, L = 255, written out here."""
    a = rng.uniform(0, 255, (11, 11))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    x = np.arange(11) - 5.0
    w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    var_a, var_b = (w * (a - mu_a) ** 2).sum(), (w * (b - mu_b) ** 2).sum()
    cov = (w * (a - mu_a) * (b - mu_b)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)
    assert 0.3 < expected < 0.99


def test_shape_mismatch_errors():
    a = np.zeros((20, 20, 3), np.uint8)
    b = np.zeros((20, 21, 3), np.uint8)
    for fn in (psnr_y, ssim_y, psnr, ssim):
        with pytest.raises(ValueError, match=r"differ in shape: \(20, 20, 3\) vs \(20, 21, 3\)"):
            fn(a, b)


def test_too_small_errors():
    tiny = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"too small for a 4-pixel border"):
        psnr_y(tiny, tiny)
    small = np.zeros((18, 18, 3), np.uint8)  # 10×10 after the 4-px crop
    with pytest.raises(ValueError, match=r"at least 11×11"):
        ssim_y(small, small)
    assert ssim_y(np.zeros((19, 19, 3), np.uint8), np.zeros((19, 19, 3), np.uint8)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="border must be >= 0"):
        psnr(np.zeros((5, 5)), np.zeros((5, 5)), border=-1)
    with pytest.raises(ValueError, match="2-D"):
        ssim(np.zeros((20, 20, 3)), np.zeros((20, 20, 3)))


def test_bad_channel_count():
    with pytest.raises(ValueError, match="H×W×3"):
        rgb_to_y(np.zeros((4, 4, 2), np.uint8))

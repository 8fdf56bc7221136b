"""train.imresize against MATLAB's bicubic imresize, re-derived independently here.

The reference below is written per output pixel with plain loops, straight from MATLAB's
imresize.m (``contributions``, ``dimensionOrder``, ``resizeAlongDim``): 1-based output
index x, source position u = x/scale + 0.5·(1 - 1/scale); Keys' cubic (a = -0.5), widened
by 1/scale when shrinking (antialiasing); weights normalised to sum 1; out-of-range indices
mirrored symmetrically (index sequence 1..n, n..1); the dimension with the smaller scale is
resized first; and ``imresizemex`` returns the input's class, so a uint8 image is rounded
and clipped after *each* dimension.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.imresize import cubic, imresize, resize_weights


def test_train_and_runtime_share_one_implementation():
    import runtime.imresize
    import train.data

    assert imresize is runtime.imresize.imresize
    assert train.data.imresize is runtime.imresize.imresize


# --- independent loop-based reference --------------------------------------------------------


def ref_kernel(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def ref_mirror(i: int, n: int) -> int:
    """1-based index i folded into 1..n by symmetric (edge-repeating) reflection."""
    while i < 1 or i > n:
        i = 1 - i if i < 1 else 2 * n + 1 - i
    return i


def ref_resize_1d(v, out_len: int, scale: float) -> list[float]:
    n = len(v)
    shrink = scale < 1
    width = 4.0 / scale if shrink else 4.0
    out = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = []
        for j in range(int(math.ceil(width)) + 2):
            idx = left + j
            w = scale * ref_kernel(scale * (u - idx)) if shrink else ref_kernel(u - idx)
            taps.append((idx, w))
        total = sum(w for _, w in taps)
        out.append(sum(w / total * float(v[ref_mirror(idx, n) - 1]) for idx, w in taps))
    return out


def round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB's rounding when it converts to an integer class (uint8(2.5) == 3)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def round_half_even(x: np.ndarray) -> np.ndarray:
    return np.round(x)


# Tie rule the exactness tests hold the implementation to: MATLAB rounds ties away from zero
# when it converts to uint8. Exact .5 ties are real with ×2/×4/×½ (dyadic weights): ~0.2-0.4%
# of pixels, so the rule matters for bit-exact LR images.
IMPL_ROUND = round_half_away


def ref_imresize(img: np.ndarray, out_h: int, out_w: int, scale_h: float, scale_w: float, rounding=None) -> np.ndarray:
    rounding = rounding or IMPL_ROUND
    is_uint8 = img.dtype == np.uint8
    a = img.astype(np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    order = [0, 1] if scale_h <= scale_w else [1, 0]
    for dim in order:
        if dim == 0:
            b = np.zeros((out_h, a.shape[1], a.shape[2]))
            for c in range(a.shape[1]):
                for ch in range(a.shape[2]):
                    b[:, c, ch] = ref_resize_1d(a[:, c, ch], out_h, scale_h)
        else:
            b = np.zeros((a.shape[0], out_w, a.shape[2]))
            for r in range(a.shape[0]):
                for ch in range(a.shape[2]):
                    b[r, :, ch] = ref_resize_1d(a[r, :, ch], out_w, scale_w)
        if is_uint8:  # imresizemex keeps the input's class: round and saturate after each pass
            b = np.clip(rounding(b), 0, 255)
        a = b
    a = a.astype(np.uint8) if is_uint8 else a
    return a[:, :, 0] if img.ndim == 2 else a


# --- hand-derived values ---------------------------------------------------------------------

# ×2 enlargement: an output pixel sits 0.25 px from its nearest input pixel; taps at distances
# 0.25, 0.75, 1.25, 1.75 have Keys weights 0.8671875, 0.2265625, -0.0703125, -0.0234375.
UP2_IMPULSE = [
    0,
    0,
    0,
    -0.0234375,
    -0.0703125,
    0.2265625,
    0.8671875,
    0.8671875,
    0.2265625,
    -0.0703125,
    -0.0234375,
    0,
    0,
    0,
]
# ×1/2 shrink (antialiased, kernel 0.5·cubic(0.5·d)): u = 2x - 0.5, taps at half-integer
# distances 0.5, 1.5, 2.5, 3.5 weigh 0.43359375, 0.11328125, -0.03515625, -0.01171875.
DOWN2_IMPULSE = [0, 0, -0.03515625, 0.43359375, 0.11328125, -0.01171875, 0, 0]


def test_hand_derived_upscale_x2_impulse():
    v = np.zeros(7)
    v[3] = 1.0  # 1-based index 4
    got = imresize(v[None, :], 2.0)
    assert got.shape == (2, 14)
    np.testing.assert_allclose(got[0], UP2_IMPULSE, atol=1e-12)
    np.testing.assert_allclose(got[1], UP2_IMPULSE, atol=1e-12)
    np.testing.assert_allclose(ref_resize_1d(v, 14, 2.0), UP2_IMPULSE, atol=1e-12)


def test_hand_derived_downscale_half_impulse():
    v = np.zeros(16)
    v[7] = 1.0  # 1-based index 8
    got = imresize(v[None, :], 0.5)
    assert got.shape == (1, 8)
    np.testing.assert_allclose(got[0], DOWN2_IMPULSE, atol=1e-12)
    np.testing.assert_allclose(ref_resize_1d(v, 8, 0.5), DOWN2_IMPULSE, atol=1e-12)


def test_hand_derived_weights_of_kernel():
    np.testing.assert_allclose(
        cubic(np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5])),
        [1, 0.8671875, 0.2265625, 0, -0.0703125, -0.0234375, 0, 0],
        atol=1e-15,
    )


def test_hand_derived_border_mirroring_upscale():
    # At the left border of a ×2 enlargement, output 1 (u = 0.75) takes input indices
    # -1, 0, 1, 2 → mirrored to 2, 1, 1, 2 (MATLAB's symmetric padding repeats the edge).
    v = np.array([10.0, 20.0, 30.0, 40.0])
    w_m1, w_0, w_1, w_2 = ref_kernel(1.75), ref_kernel(0.75), ref_kernel(0.25), ref_kernel(1.25)
    expected_first = w_m1 * 20 + w_0 * 10 + w_1 * 10 + w_2 * 20
    got = imresize(v[None, :], 2.0)[0]
    assert got[0] == pytest.approx(expected_first, abs=1e-12)
    assert got[0] == pytest.approx(0.8671875 * 10 + 0.2265625 * 10 - 0.0703125 * 20 - 0.0234375 * 20)


# --- against the loop reference --------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0, 4.0, 1 / 3, 3.0])
@pytest.mark.parametrize("n", [13, 16])
def test_1d_matches_reference(rng, scale, n):
    v = rng.uniform(-20, 300, n)
    out_len = math.ceil(n * scale)
    if scale < 1:  # a 1-pixel side stays 1 pixel (ceil), and resizing it is the identity
        got, got_t = imresize(v[None, :], scale), imresize(v[:, None], scale)
    else:  # enlarging would grow the 1-pixel side too; fix it with output_shape (exact scale)
        got, got_t = imresize(v[None, :], output_shape=(1, out_len)), imresize(v[:, None], output_shape=(out_len, 1))
    assert got.shape == (1, out_len)
    np.testing.assert_allclose(got[0], ref_resize_1d(v, out_len, scale), rtol=0, atol=1e-9)
    np.testing.assert_allclose(got_t[:, 0], ref_resize_1d(v, out_len, scale), rtol=0, atol=1e-9)


@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0, 4.0])
def test_2d_float_matches_reference(rng, scale):
    img = rng.uniform(0, 255, (9, 12, 3))
    oh, ow = math.ceil(9 * scale), math.ceil(12 * scale)
    np.testing.assert_allclose(imresize(img, scale), ref_imresize(img, oh, ow, scale, scale), rtol=0, atol=1e-9)


@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0, 4.0])
def test_2d_uint8_matches_reference_exactly(rng, scale):
    img = rng.integers(0, 256, (10, 13, 3), dtype=np.uint8)
    img[:, :4] = 255  # saturated areas: overshoot gets clipped between the passes
    oh, ow = math.ceil(10 * scale), math.ceil(13 * scale)
    got = imresize(img, scale)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref_imresize(img, oh, ow, scale, scale))


def test_uint8_output_shape_order_smaller_scale_first(rng):
    # rows ×1/2, columns ×2: MATLAB resizes rows first (smaller scale), rounding in between.
    img = rng.integers(0, 256, (12, 7), dtype=np.uint8)
    got = imresize(img, output_shape=(6, 14))
    assert got.shape == (6, 14) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref_imresize(img, 6, 14, 0.5, 2.0))
    img2 = rng.integers(0, 256, (7, 12), dtype=np.uint8)
    got2 = imresize(img2, output_shape=(14, 6))  # now columns first
    np.testing.assert_array_equal(got2, ref_imresize(img2, 14, 6, 2.0, 0.5))


def test_uint8_is_quantised_between_passes(rng):
    """MATLAB's imresizemex returns uint8 after each dimension; rounding only at the end
    (what this module did before) differs in a good share of pixels."""
    img = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    got = imresize(img, 0.5).astype(int)
    once = np.clip(IMPL_ROUND(imresize(img.astype(np.float64), 0.5)), 0, 255).astype(int)
    assert np.mean(got != once) > 0.02


def test_real_photo_uint8_matches_reference(photos_dir):
    from train.data import load_rgb

    img = load_rgb(photos_dir / "train" / "astronaut.png")[100:132, 200:228]
    np.testing.assert_array_equal(imresize(img, 0.25), ref_imresize(img, 8, 7, 0.25, 0.25))


# --- properties ------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 0.25, 0.125, 2.0, 4.0, 1 / 3])
def test_constant_image_stays_constant(scale):
    u8 = np.full((17, 11, 3), 173, np.uint8)
    out = imresize(u8, scale)
    assert out.dtype == np.uint8 and np.all(out == 173)
    f = np.full((17, 11), 0.3712)
    np.testing.assert_allclose(imresize(f, scale), 0.3712, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "shape, scale, expected",
    [
        ((17, 11), 0.5, (9, 6)),
        ((17, 11), 0.25, (5, 3)),
        ((17, 11), 2.0, (34, 22)),
        ((7, 13), 0.125, (1, 2)),
        ((9, 10), 1 / 3, (3, 4)),
        ((5, 6), 3.0, (15, 18)),
    ],
)
def test_output_shape_is_ceil(shape, scale, expected):
    assert expected == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))
    out = imresize(np.zeros(shape + (3,), np.uint8), scale)
    assert out.shape == expected + (3,)
    assert imresize(np.zeros(shape), scale).shape == expected


def test_output_shape_argument_and_channels_kept():
    out = imresize(np.zeros((10, 20, 4)), output_shape=(3, 7))
    assert out.shape == (3, 7, 4)


def test_uint8_rounded_and_clipped_float_not(rng):
    img = np.zeros((8, 8), np.uint8)
    img[:, 4:] = 255  # a hard edge: bicubic overshoots
    f = imresize(img.astype(np.float64), 2.0)
    assert f.min() < 0 and f.max() > 255, "float output must not be clipped"
    u = imresize(img, 2.0)
    assert u.dtype == np.uint8
    assert u.min() == 0 and u.max() == 255
    # one real pass (the other is the identity): uint8 is the float result rounded, clipped
    row = rng.integers(0, 256, (1, 200), dtype=np.uint8)
    f_row = imresize(row.astype(np.float64), output_shape=(1, 400))
    np.testing.assert_array_equal(
        imresize(row, output_shape=(1, 400)), np.clip(IMPL_ROUND(f_row), 0, 255).astype(np.uint8)
    )


def test_uint8_ties_round_half_away_from_zero(rng):
    img = rng.integers(0, 256, (10, 13, 3), dtype=np.uint8)
    img[:, :4] = 255
    for scale in (2.0, 0.5):
        oh, ow = math.ceil(10 * scale), math.ceil(13 * scale)
        np.testing.assert_array_equal(imresize(img, scale), ref_imresize(img, oh, ow, scale, scale, round_half_away))


def test_float_input_returns_float64():
    out = imresize(np.ones((4, 4), np.float32), 2.0)
    assert out.dtype == np.float64


@pytest.mark.parametrize("scale, pad", [(2.0, 4), (4.0, 4), (0.5, 12), (0.25, 12)])
def test_border_is_symmetric_mirroring(rng, scale, pad):
    """Resizing a mirror-padded image and cropping gives the same result: the borders of
    imresize behave as numpy's 'symmetric' padding (edge pixel repeated)."""
    img = rng.uniform(0, 255, (16, 20))
    out = imresize(img, scale)

    def via_padding(mode):
        padded = np.pad(img, pad, mode=mode)
        big = imresize(padded, scale)
        o = int(pad * scale)
        return big[o : o + out.shape[0], o : o + out.shape[1]]

    np.testing.assert_allclose(out, via_padding("symmetric"), rtol=0, atol=1e-9)
    # ...and not as the other common conventions
    for mode in ("reflect", "edge", "constant"):
        assert np.abs(out - via_padding(mode)).max() > 1e-3, mode


def test_resize_weights_rows_sum_to_one_and_indices_in_range():
    for in_len, out_len, scale in [(10, 5, 0.5), (10, 3, 0.25), (5, 20, 4.0), (3, 1, 0.25)]:
        idx, w = resize_weights(in_len, out_len, scale)
        assert idx.shape == w.shape and idx.shape[0] == out_len
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
        assert idx.min() >= 0 and idx.max() < in_len


def test_antialias_off_uses_narrow_kernel():
    idx_aa, _ = resize_weights(32, 8, 0.25, antialias=True)
    idx_na, w_na = resize_weights(32, 8, 0.25, antialias=False)
    assert idx_aa.shape[1] > idx_na.shape[1] == 4
    v = np.arange(32, dtype=np.float64) ** 2
    np.testing.assert_allclose(
        (v[idx_na] * w_na).sum(1),
        [sum(ref_kernel(4 * x - 1.5 - i) * v[i - 1] for i in range(1, 33)) for x in range(1, 9)],
        atol=1e-9,
    )


@pytest.mark.parametrize("bad", [dict(scale=0), dict(scale=-0.5), dict(), dict(output_shape=(0, 3))])
def test_bad_arguments(bad):
    with pytest.raises(ValueError, match="imresize"):
        imresize(np.zeros((4, 4)), **bad)


def test_bad_ndim():
    with pytest.raises(ValueError, match="H×W"):
        imresize(np.zeros(5), 0.5)


def test_differs_from_pil_only_at_the_borders(rng):
    """Why PIL's bicubic is not used for LR images: PIL also uses Keys' a = -0.5 and widens
    the kernel when shrinking, so the interior agrees, but PIL truncates the kernel at the
    image edge (renormalising the weights) instead of mirroring, so border pixels differ."""
    from PIL import Image

    for scale in (0.5, 0.25, 2.0):
        row = rng.uniform(0, 255, (1, 64)).astype(np.float32)
        ow = int(64 * scale)
        pil = np.asarray(Image.fromarray(row, mode="F").resize((ow, 1), Image.Resampling.BICUBIC), np.float64)[0]
        ours = imresize(row.astype(np.float64), output_shape=(1, ow))[0]
        reach = int(math.ceil(2 / min(scale, 1) * max(scale, 1)))  # output pixels whose kernel crosses the edge
        interior = slice(reach, ow - reach)
        np.testing.assert_allclose(ours[interior], pil[interior], rtol=0, atol=1e-3)
        assert np.abs(ours[:reach] - pil[:reach]).max() > 0.1
        assert np.abs(ours[-reach:] - pil[-reach:]).max() > 0.1

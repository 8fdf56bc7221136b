"""NIQE (Mittal, Soundararajan, Bovik 2013), ported from the MATLAB release, and a hook for
Ma et al.'s score to compute the perceptual index (PI) of the PIRM 2018 challenge.

    from runtime.niqe import niqe
    niqe(rgb_uint8)                      # Y of MATLAB rgb2ycbcr, lower is better
    niqe(rgb_uint8, crop_border=4)       # SR convention: the scale's border cropped

Why a port: SR papers quote MATLAB's NIQE, and ports that deviate in small steps (the
bicubic halving above all) drift by 0.05 or more, which is larger than the differences
they report. This follows ``computequality.m`` / ``computefeature.m`` /
``estimateaggdparam.m`` of the NIQE release step by step, in float64 as MATLAB does:

- the image is cropped to whole 96×96 blocks (bottom/right rows and columns dropped);
- two scales; at each, MSCN coefficients ``(I - μ) / (σ + 1)`` with μ, σ from a 7×7
  Gaussian window, σ = 7/6 (``fspecial('gaussian', 7, 7/6)``, normalised), filtered as
  ``imfilter(..., 'replicate')``;
- per block (96×96, then 48×48) 18 features: an asymmetric generalized Gaussian (AGGD)
  fit of the MSCN coefficients (shape, mean of the two scales; NIQE's ``computefeature``
  fits the AGGD here, the symmetric GGD fit ``estimateggdparam`` is BRISQUE's) and of
  their products with the 4 neighbours (0,1), (1,0), (1,1), (-1,1) (circular shift):
  shape, mean, left and right scale; the shape is the lookup ``gam = 0.2:0.001:10`` that
  best matches the moment ratio;
- the second scale is MATLAB's ``imresize(im, 0.5)`` (bicubic, antialiased) of the
  float image, not rounded (``runtime.imresize`` on float input);
- NIQE = sqrt((μp - μd)ᵀ pinv((Σp + Σd)/2) (μp - μd)), μd the nan-mean of the block
  features, Σd their covariance over the rows without NaN (``nancov``), μp/Σp the
  original pristine model shipped in ``runtime/data/niqe_pristine_params.mat``.

Colour input is turned into one channel first, as BasicSR's ``calculate_niqe`` (checked
by BasicSR against MATLAB R2021a, and widely used for SR papers' NIQE) does, then
rounded to integers (BasicSR: "round is necessary for being consistent with MATLAB's
result"): ``convert_to="y"`` is Y of MATLAB's ``rgb2ycbcr``, 16 + (65.481 R + 128.553 G +
24.966 B) / 255; ``convert_to="gray"`` uses BasicSR's (OpenCV's) weights 0.299, 0.587,
0.114. The MATLAB release itself calls ``rgb2gray`` (0.2989, 0.5870, 0.1140); that moves
NIQE of astronaut by 0.004 (3.0650), so "gray" here follows BasicSR, whose values are the ones
quoted. Rounding is done exactly, in integers, ties away from zero like MATLAB's uint8.

One deliberate departure from floating-point happenstance: where the 7×7 window is
constant, the MSCN coefficient is exactly 0 in exact arithmetic, but float64 filtering
leaves noise of about 1e-14 there whose sign the AGGD fit counts (left vs right of 0).
On images with flat areas (astronaut's saturated regions: 11 444 pixels) that noise alone
moves NIQE from 3.0645 to 3.1220. Those coefficients are set to exactly 0 (BasicSR's
float32 arithmetic happens to produce exact zeros there too).

Reference values (tests/test_niqe.py): BasicSR 1.4.2's ``calculate_niqe`` with the same
pristine parameters, ``crop_border=0``, uint8 input, on scikit-image's ``astronaut()`` /
``chelsea()`` (``data/photos/train/``): 3.0649 / 2.6255 (``convert_to='y'``) and
3.0610 / 2.5721 (``'gray'``), as recorded in ``runtime/data/README.md`` (not rerun
here: BasicSR and OpenCV are not installed). This module gives 3.06455 / 2.62553 and
3.06109 / 2.57208. Astronaut is unusually sensitive: in its flat areas one pixel moving
by one level turns MSCN coefficients from 0 into large values. Its Y has 4 pixels exactly
at k + 0.5, which float arithmetic rounds either way: BasicSR's rounds 3 of them down
(3.06558 here with its Y), MATLAB's ``rgb2ycbcr`` (emulated in double for this
comparison) all 4 (3.06559); BasicSR's float32 filtering then moves its value by another
-6e-4 (an emulation of its float32 steps gives 3.06495). Differences of that size between
implementations on such images are noise; on chelsea all agree to 3e-5.

Ma et al.'s score and PI. PI = ((10 - Ma) + NIQE) / 2 (PIRM 2018), Ma = the no-reference
SR metric of Ma, Yang, Yang, Yang, "Learning a no-reference quality metric for
single-image super-resolution" (CVIU 2017). Its model is not bundled: it is a cascade of
random-forest regressors trained by the authors on their human ratings and released only
as MATLAB data with MATLAB feature code (DCT, wavelet and PCA statistics;
github.com/chaoma99/sr-metric); the trained forests cannot be obtained here (no network)
nor retrained (no ratings), and a re-implementation that cannot be checked against them
would be a different metric under the same name. So the score is a hook: any callable
``score(img: np.ndarray) -> float`` mapping an H×W×3 uint8 SR image (H×W for gray data)
to Ma's score (0-10, higher is better), named as ``"module:function"`` or
``"path/to/file.py:function"`` and loaded with :func:`load_ma_scorer`; for example a file
that calls the authors' ``quality_predict`` through the MATLAB Engine for Python (a
sketch: untested here, there is no MATLAB)::

    # ma_matlab.py
    import matlab, matlab.engine
    _eng = matlab.engine.start_matlab()
    _eng.addpath(_eng.genpath("/path/to/sr-metric"), nargout=0)
    def score(img):
        return float(_eng.quality_predict(matlab.uint8(img.tolist())))

    python benchmarks/quality.py --model m.onnx --data Set14 --ma-scorer ma_matlab.py:score

(pyiqa's ``nrqm`` is a Python port with converted weights; note that pyiqa's NIQE is not
this one: 3.1236 on astronaut.) :func:`perceptual_index` then combines the two scores.

numpy only at import; scipy (``scipy.ndimage``, ``scipy.special``, ``scipy.io``) is
imported when NIQE is first computed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._deps import require
from .errors import InvalidArgumentError, ModelError

__all__ = [
    "BLOCK_SIZE",
    "PRISTINE_PARAMS_PATH",
    "PristineParams",
    "load_pristine_params",
    "niqe",
    "perceptual_index",
    "load_ma_scorer",
]

BLOCK_SIZE = 96
"""Block side at the first scale (the release's recommended 96×96, no overlap)."""

PRISTINE_PARAMS_PATH = Path(__file__).resolve().parent / "data" / "niqe_pristine_params.mat"
"""The release's ``modelparameters.mat`` numbers: ``mu_prisparam`` 1×36, ``cov_prisparam`` 36×36."""

CONVERSIONS = ("y", "gray")

_N_FEATURES = 36
_WINDOW_SIZE = 7
_WINDOW_SIGMA = 7 / 6
_FLAT_TOL = 1e-8  # window range (0-255 scale) under which a window counts as constant
# estimateaggdparam.m: gam = 0.2:0.001:10 (9801 values)
_GAM = 0.2 + 0.001 * np.arange(9801)


class PristineParams(NamedTuple):
    """The multivariate Gaussian of the pristine corpus's features."""

    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)


def _scipy(submodule: str):
    return require(f"scipy.{submodule}", pip="scipy", purpose="NIQE (runtime.niqe)")


@functools.cache
def load_pristine_params() -> PristineParams:
    """The bundled pristine model (read once; the arrays are read-only)."""
    sio = _scipy("io")
    path = PRISTINE_PARAMS_PATH
    try:
        mat = sio.loadmat(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the NIQE pristine parameters ({exc}); reinstall the package") from exc
    try:
        mu = np.asarray(mat["mu_prisparam"], np.float64).reshape(-1)
        cov = np.asarray(mat["cov_prisparam"], np.float64)
    except KeyError as exc:
        raise ModelError(f"{path}: no {exc} in the NIQE pristine parameters (keys: {sorted(mat)})") from None
    if mu.shape != (_N_FEATURES,) or cov.shape != (_N_FEATURES, _N_FEATURES):
        raise ModelError(f"{path}: expected mu 1×36 and cov 36×36, got {mu.shape} and {cov.shape}")
    mu.setflags(write=False)
    cov.setflags(write=False)
    return PristineParams(mu, cov)


@functools.cache
def _window() -> np.ndarray:
    """``fspecial('gaussian', 7, 7/6)``, normalised again as computequality.m does."""
    half = (_WINDOW_SIZE - 1) / 2
    x, y = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1))
    h = np.exp(-(x * x + y * y) / (2 * _WINDOW_SIGMA**2))
    h[h < np.finfo(np.float64).eps * h.max()] = 0
    h /= h.sum()
    return h / h.sum()


@functools.cache
def _r_gam() -> np.ndarray:
    gamma = _scipy("special").gamma
    return gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))


# --------------------------------------------------------------------------- input


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """uint8 as is; float rounded (ties away from zero, as MATLAB) and clipped like a written image."""
    if img.dtype == np.uint8:
        return img
    if not np.all(np.isfinite(img)):
        raise InvalidArgumentError("niqe: img contains NaN or infinity; expected finite values in [0, 255]")
    return np.floor(np.clip(img.astype(np.float64), 0, 255) + 0.5).astype(np.uint8)


def _luma(img: np.ndarray, convert_to: str) -> np.ndarray:
    """The one channel NIQE sees, as integer-valued float64."""
    if not isinstance(img, np.ndarray):
        raise InvalidArgumentError(f"niqe: img must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise InvalidArgumentError(f"niqe: img has dtype {img.dtype}; expected uint8, or float with values in [0, 255]")
    if convert_to not in CONVERSIONS:
        raise InvalidArgumentError(f"niqe: convert_to={convert_to!r}; expected one of {CONVERSIONS}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return _to_uint8(img).astype(np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InvalidArgumentError(
            f"niqe: img has shape {img.shape}; expected H×W (gray) or H×W×3 (RGB; drop an alpha channel first)"
        )
    rgb = _to_uint8(img).astype(np.int64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if convert_to == "y":
        # 16 + (65.481 R + 128.553 G + 24.966 B) / 255, in units of 1/255000, rounded half up.
        num = 16 * 255_000 + 65_481 * r + 128_553 * g + 24_966 * b
        return ((num + 127_500) // 255_000).astype(np.float64)
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.float64)


# --------------------------------------------------------------------------- features


def _aggd(x: np.ndarray) -> tuple[float, float, float]:
    """estimateaggdparam.m: shape α and left/right scales βl, βr (NaN where undefined)."""
    x = x.ravel()
    neg, pos = x[x < 0], x[x > 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(np.mean(neg * neg)) if neg.size else np.float64(np.nan)
        right = np.sqrt(np.mean(pos * pos)) if pos.size else np.float64(np.nan)
        gammahat = left / right
        rhat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
        # np.argmin returns 0 for an all-NaN row, as MATLAB's min returns index 1.
        alpha = float(_GAM[np.argmin((_r_gam() - rhatnorm) ** 2)])
    ratio = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, float(left) * ratio, float(right) * ratio


_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # computefeature.m, circshift row/column offsets


def _block_features(block: np.ndarray) -> list[float]:
    """computefeature.m: 18 features of one block of MSCN coefficients."""
    alpha, left, right = _aggd(block)
    feats = [alpha, (left + right) / 2]
    for shift in _SHIFTS:
        alpha, left, right = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (right - left) * (math.gamma(2 / alpha) / math.gamma(1 / alpha))
        feats += [alpha, mean, left, right]
    return feats


def _mscn(img: np.ndarray) -> np.ndarray:
    ndi = _scipy("ndimage")
    w = _window()
    mu = ndi.correlate(img, w, mode="nearest")
    sigma = np.sqrt(np.abs(ndi.correlate(img * img, w, mode="nearest") - mu * mu))
    mscn = (img - mu) / (sigma + 1)
    # Constant window: exactly 0 in exact arithmetic; do not let rounding noise pick a sign.
    top = ndi.maximum_filter(img, _WINDOW_SIZE, mode="nearest")
    bottom = ndi.minimum_filter(img, _WINDOW_SIZE, mode="nearest")
    mscn[top - bottom <= _FLAT_TOL] = 0.0
    return mscn


def _niqe_of_luma(img: np.ndarray) -> float:
    from .imresize import imresize

    params = load_pristine_params()
    rows, cols = img.shape[0] // BLOCK_SIZE, img.shape[1] // BLOCK_SIZE
    img = img[: rows * BLOCK_SIZE, : cols * BLOCK_SIZE]
    per_scale = []
    for scale in (1, 2):
        mscn = _mscn(img)
        b = BLOCK_SIZE // scale
        blocks = [mscn[i * b : (i + 1) * b, j * b : (j + 1) * b] for j in range(cols) for i in range(rows)]
        per_scale.append(np.array([_block_features(block) for block in blocks]))
        if scale == 1:
            img = imresize(img, 0.5)  # float in, float out: no rounding between the passes
    feats = np.hstack(per_scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, as MATLAB
        mu = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]
    if complete.shape[0] == 0 or not np.all(np.isfinite(mu)):
        return math.nan  # no block with a defined fit (e.g. a constant image): NIQE is undefined
    if complete.shape[0] == 1:
        cov = np.zeros((_N_FEATURES, _N_FEATURES))  # MATLAB's cov of one observation
    else:
        cov = np.cov(complete, rowvar=False)
    diff = params.mu - mu
    quality = diff @ np.linalg.pinv((params.cov + cov) / 2) @ diff
    return float(np.sqrt(quality))


# --------------------------------------------------------------------------- public


def niqe(img: np.ndarray, *, crop_border: int = 0, convert_to: str = "y") -> float:
    """NIQE of one image (lower is better).

    ``img``: H×W×3 RGB or H×W gray, uint8 or float in [0, 255] (rounded and clipped to
    uint8 first, as writing it would). ``crop_border`` pixels are dropped on each side
    (SR convention: the scale). ``convert_to``: ``"y"`` (MATLAB rgb2ycbcr Y, the SR
    convention) or ``"gray"`` (0.299/0.587/0.114); ignored for gray input. At least one
    96×96 block must remain. Returns NaN when no block has a defined fit (constant image).
    """
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise InvalidArgumentError(f"niqe: crop_border={crop_border!r}; expected an integer >= 0")
    y = _luma(img, convert_to)
    h, w = y.shape
    need = BLOCK_SIZE + 2 * crop_border
    if min(h, w) < need:
        size, expected = f"{h}×{w} pixels", f"at least {need}×{need} pixels"
        if crop_border:
            size += f" ({max(h - 2 * crop_border, 0)}×{max(w - 2 * crop_border, 0)} after the {crop_border}-pixel border crop)"
            expected += f" with crop_border={crop_border}"
        raise InvalidArgumentError(
            f"niqe: img is {size}, smaller than one {BLOCK_SIZE}×{BLOCK_SIZE} block; expected {expected}"
        )
    if crop_border:
        y = y[crop_border : h - crop_border, crop_border : w - crop_border]
    return _niqe_of_luma(y)


def perceptual_index(niqe_value: float, ma_value: float) -> float:
    """PIRM 2018's perceptual index, ((10 - Ma) + NIQE) / 2 (lower is better)."""
    return ((10.0 - float(ma_value)) + float(niqe_value)) / 2.0


def load_ma_scorer(spec: str) -> Callable[[np.ndarray], float]:
    """The user-supplied Ma et al. scorer named by ``spec`` (see the module docstring).

    ``spec``: ``"package.module:function"`` (imported from ``sys.path``) or
    ``"path/to/file.py:function"``; ``function`` may be dotted (``"m:Model.score"``).
    The returned callable maps an image to ``float(function(image))``.
    """

    def fail(reason: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"Ma scorer {spec!r}: {reason}; expected 'module:function' or 'path/to/file.py:function' "
            "naming a callable that maps an H×W×3 uint8 image to Ma et al.'s score"
        )

    if not isinstance(spec, str):
        raise fail(f"got a {type(spec).__name__}, not a string")
    target, sep, attr = spec.rpartition(":")  # rpartition: a Windows drive letter stays in target
    if not sep or not target or not attr:
        raise fail("no ':function' part" if not sep or not attr else "no module or file before ':'")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise fail(f"file {str(path)!r} does not exist")
        name = f"_ma_scorer_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise fail(f"cannot load {str(path)!r} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise fail(f"running {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise fail(f"cannot import module {target!r}: {type(exc).__name__}: {exc}") from exc
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise fail(f"{target!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise fail(f"{attr!r} is a {type(obj).__name__}, not callable")
    function = obj

    def score(img: np.ndarray) -> float:
        value = function(img)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"Ma scorer {spec!r} returned {type(value).__name__} {value!r}; expected a number (Ma's score, 0-10)"
            ) from None

    score.__name__ = f"ma_scorer[{spec}]"
    score.__doc__ = f"Ma et al.'s score by the user-supplied {spec!r}."
    return score

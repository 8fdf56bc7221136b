"""runtime.niqe: NIQE against independently computed reference values, and the Ma/PI hook.

Reference values: BasicSR 1.4.2's ``calculate_niqe`` (``basicsr/metrics/niqe.py``, its
MATLAB-checked port of the NIQE release) with the same pristine parameters as
``runtime/data/niqe_pristine_params.mat``, ``crop_border=0``, uint8 input, on
scikit-image's ``data.astronaut()`` and ``data.chelsea()``; recorded to 4 decimals in
``runtime/data/README.md``. They were computed outside this repository: BasicSR and
OpenCV are not installed here, so the numbers are constants, not reruns. Why astronaut
agrees to 4e-4 rather than 3e-5 like chelsea is in ``runtime/niqe.py``'s docstring.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from runtime.errors import InvalidArgumentError
from runtime.imresize import imresize
from runtime.niqe import (
    PRISTINE_PARAMS_PATH,
    load_ma_scorer,
    load_pristine_params,
    niqe,
    perceptual_index,
)

pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "data" / "photos" / "train"
# image: (convert_to='y', convert_to='gray'), BasicSR 1.4.2 calculate_niqe
REFERENCE = {"astronaut": (3.0649, 3.0610), "chelsea": (2.6255, 2.5721)}
TOLERANCE = 1e-3
PARAMS_SHA256 = "fa2aa4d12dd9595c3fb6bf8b4e1a15c79d5d1469238d0901c88dead195be578d"


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / f"{name}.png").convert("RGB"))


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_bundled_photos_are_the_reference_images(name: str) -> None:
    skdata = pytest.importorskip("skimage.data")
    assert np.array_equal(photo(name), getattr(skdata, name)())


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("convert_to", ["y", "gray"])
def test_matches_basicsr_reference(name: str, convert_to: str) -> None:
    expected = REFERENCE[name][0 if convert_to == "y" else 1]
    assert niqe(photo(name), convert_to=convert_to) == pytest.approx(expected, abs=TOLERANCE)


def test_input_forms_agree() -> None:
    img = photo("chelsea")
    value = niqe(img)
    assert niqe(img.astype(np.float32)) == value  # float in [0, 255]: rounded to the same uint8
    assert niqe(img.astype(np.float64) + 0.3) == value
    # Gray input is used as it is; the Y it would be converted to gives the same NIQE.
    rgb = img.astype(np.int64)
    y = (16 * 255_000 + 65_481 * rgb[..., 0] + 128_553 * rgb[..., 1] + 24_966 * rgb[..., 2] + 127_500) // 255_000
    assert niqe(y.astype(np.uint8)) == value
    assert niqe(y.astype(np.uint8)[:, :, None]) == value
    # The crop keeps whole blocks only: trailing rows/columns beyond them do not count.
    assert niqe(img[:288, :384]) == value
    assert niqe(img, crop_border=4) != value


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_degraded_images_score_worse(name: str) -> None:
    img = photo(name)
    h, w = img.shape[:2]
    img = img[: h - h % 4, : w - w % 4]
    blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(2)))
    down_up = imresize(imresize(img, 0.25), 4.0)
    original = niqe(img)
    assert niqe(blurred) > original + 2
    assert niqe(down_up) > original + 2


def test_undefined_and_single_block_cases() -> None:
    assert np.isnan(niqe(np.full((200, 200, 3), 128, np.uint8)))  # no block has a defined fit
    one_block = niqe(photo("chelsea")[100:196, 100:196])  # one block: covariance of one row is 0, as MATLAB
    assert np.isfinite(one_block) and one_block > 0


def test_too_small_images_raise_naming_the_size() -> None:
    with pytest.raises(InvalidArgumentError, match=r"img is 95×200 pixels.*96×96 block.*at least 96×96"):
        niqe(np.zeros((95, 200), np.uint8))
    with pytest.raises(ValueError, match=r"100×100 pixels \(92×92 after the 4-pixel border crop\).*at least 104×104"):
        niqe(np.zeros((100, 100, 3), np.uint8), crop_border=4)


@pytest.mark.parametrize(
    ("img", "kwargs", "message"),
    [
        (np.zeros((100, 100), np.int32), {}, r"dtype int32; expected uint8, or float"),
        (np.zeros((100, 100), bool), {}, r"dtype bool"),
        (np.zeros((100, 100, 4), np.uint8), {}, r"shape \(100, 100, 4\); expected H×W \(gray\) or H×W×3"),
        (np.zeros(100, np.uint8), {}, r"shape \(100,\)"),
        (np.full((100, 100), np.nan), {}, r"NaN or infinity"),
        ([[0] * 100] * 100, {}, r"numpy array, got list"),
        (np.zeros((100, 100), np.uint8), {"convert_to": "Y"}, r"convert_to='Y'; expected one of \('y', 'gray'\)"),
        (np.zeros((100, 100), np.uint8), {"crop_border": -1}, r"crop_border=-1; expected an integer >= 0"),
        (np.zeros((100, 100), np.uint8), {"crop_border": 2.0}, r"crop_border=2.0"),
    ],
)
def test_bad_arguments_raise(img, kwargs, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        niqe(img, **kwargs)


def test_pristine_params_bundled_and_cached() -> None:
    assert hashlib.sha256(PRISTINE_PARAMS_PATH.read_bytes()).hexdigest() == PARAMS_SHA256
    params = load_pristine_params()
    assert params is load_pristine_params()
    assert params.mu.shape == (36,) and params.cov.shape == (36, 36)
    assert np.allclose(params.cov, params.cov.T)
    assert not params.mu.flags.writeable and not params.cov.flags.writeable


def test_import_does_not_import_scipy() -> None:
    code = (
        "import sys, json; import runtime.niqe; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'torch', 'skimage'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# --------------------------------------------------------------------------- Ma et al. / PI


def test_perceptual_index_arithmetic() -> None:
    assert perceptual_index(3.0, 8.0) == pytest.approx(2.5)  # ((10 - 8) + 3) / 2
    assert perceptual_index(niqe_value=7.0, ma_value=1.0) == pytest.approx(8.0)
    assert perceptual_index(5.0, 10.0) == pytest.approx(2.5)


MA_MODULE = """
import numpy as np

def score(img):
    # Not Ma et al.'s model: a stand-in that proves the plumbing (sharper = higher).
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    return np.float32(min(10.0, np.abs(np.diff(img.astype(float), axis=1)).mean()))

class Model:
    @staticmethod
    def score(img):
        return 7

not_callable = 3

def returns_text(img):
    return "high"
"""


def test_ma_scorer_from_a_file_computes_pi(tmp_path: Path) -> None:
    path = tmp_path / "my_ma.py"
    path.write_text(MA_MODULE)
    ma = load_ma_scorer(f"{path}:score")
    img = photo("chelsea")
    ma_value = ma(img)
    assert isinstance(ma_value, float) and 0 < ma_value <= 10
    niqe_value = niqe(img)
    assert perceptual_index(niqe_value, ma_value) == pytest.approx(((10 - ma_value) + niqe_value) / 2)
    assert load_ma_scorer(f"{path}:Model.score")(img) == 7.0


def test_ma_scorer_from_a_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ma_scorer_pkg_for_test.py").write_text(MA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_ma_scorer("ma_scorer_pkg_for_test:Model.score")(photo("chelsea")) == 7.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{path}", r"no ':function' part"),
        ("{path}:", r"no ':function' part"),
        (":score", r"no module or file before ':'"),
        ("{dir}/missing.py:score", r"file '.*missing.py' does not exist"),
        ("{path}:nope", r"has no attribute 'nope'"),
        ("{path}:not_callable", r"'not_callable' is a int, not callable"),
        ("no_such_module_for_ma_test:score", r"cannot import module 'no_such_module_for_ma_test': ModuleNotFoundError"),
        ("{broken}:score", r"running '.*broken.py' failed: ZeroDivisionError"),
    ],
)
def test_ma_scorer_errors_name_the_spec(tmp_path: Path, spec: str, message: str) -> None:
    path = tmp_path / "my_ma.py"
    path.write_text(MA_MODULE)
    broken = tmp_path / "broken.py"
    broken.write_text("1 / 0\n")
    spec = spec.format(path=path, dir=tmp_path, broken=broken)
    with pytest.raises(InvalidArgumentError, match=message) as info:
        load_ma_scorer(spec)
    assert repr(spec) in str(info.value) and "module:function" in str(info.value)


def test_ma_scorer_result_must_be_a_number(tmp_path: Path) -> None:
    path = tmp_path / "my_ma.py"
    path.write_text(MA_MODULE)
    with pytest.raises(InvalidArgumentError, match=r"returned str 'high'; expected a number"):
        load_ma_scorer(f"{path}:returns_text")(photo("chelsea"))


# --------------------------------------------------------------------------- benchmarks/quality.py


def test_quality_benchmark_scores_niqe_ma_and_pi(tmp_path: Path) -> None:
    from benchmarks import quality

    path = tmp_path / "my_ma.py"
    path.write_text(MA_MODULE)
    metrics = quality.METRICS + quality.ma_metrics(f"{path}:score")
    big, small = tmp_path / "chelsea.png", tmp_path / "small.png"
    Image.fromarray(photo("chelsea")).save(big)
    Image.fromarray(photo("chelsea")[:100, :100]).save(small)  # minus a 4-pixel border: no 96×96 block

    def bicubic_model(lr: np.ndarray) -> np.ndarray:
        return imresize(lr, 4.0)

    row, images = quality.score_image(big, bicubic_model, 4, metrics)
    hr = images["hr"]
    assert row["niqe_hr"] == pytest.approx(niqe(hr, crop_border=4))
    assert row["niqe_model"] == row["niqe_bicubic"] and row["niqe_gain"] == 0
    assert row["niqe_bicubic"] > row["niqe_hr"] + 2
    assert row["ma_hr"] == pytest.approx(load_ma_scorer(f"{path}:score")(hr[4:-4, 4:-4]))
    for kind in ("bicubic", "model", "hr"):
        assert row[f"pi_{kind}"] == pytest.approx(perceptual_index(row[f"niqe_{kind}"], row[f"ma_{kind}"]))

    small_row, _ = quality.score_image(small, bicubic_model, 4, metrics)
    assert small_row["niqe_model"] is None and small_row["pi_model"] is None and small_row["niqe_gain"] is None
    assert small_row["ma_model"] is not None and small_row["psnr_y_model"] > 0

    mean = quality.mean_row([row, small_row], metrics)
    assert mean["niqe_images"] == 1 and mean["niqe_hr"] == row["niqe_hr"]
    assert mean["ma_images"] == 2 and mean["psnr_y_model"] == pytest.approx(
        (row["psnr_y_model"] + small_row["psnr_y_model"]) / 2
    )
    datasets = [{"name": "t", "images": [row, small_row], "mean": mean}]
    table = quality.table(datasets, metrics).splitlines()
    headers = [h.strip() for h in table[0].strip("|").split("|")]
    assert headers[9:13] == ["NIQE bicubic", "NIQE model", "NIQE gain", "NIQE HR"] and "PI HR" in headers
    small_cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert small_cells[headers.index("NIQE model")] == "-" and small_cells[headers.index("NIQE gain")] == "-"
    assert quality.partial_means(datasets, metrics) == [
        "t: NIQE mean over 1 of 2 images (no score for the others: NIQE needs a 96×96 block after the border crop).",
        "t: PI mean over 1 of 2 images (no score for the others: NIQE needs a 96×96 block after the border crop).",
    ]

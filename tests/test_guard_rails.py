"""Guard rails of issue 16: float arrays follow one convention (finite, 0..255 in and out),
tile plans that compute far more than the image are warned about or refused, running out of
memory says which option helps, and the CLI's pixel limit is a CLI option."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import Upscaler
from runtime.errors import InvalidArgumentError
from runtime.image_io import read_image

# ------------------------------------------------------------------ float arrays: 0..255


@pytest.mark.parametrize(
    "values,expected",
    [
        (np.nan, r"holds NaN.*finite numbers in 0\.\.255"),
        (np.inf, r"holds infinite values"),
        (-280.0, r"values in -280\.\.100, outside 0\.\.255"),
        (647.0, r"values in 100\.\.647, outside 0\.\.255"),
    ],
    ids=["nan", "inf", "negative", "above-255"],
)
def test_float_arrays_outside_0_255_are_refused_naming_what_was_seen(values: float, expected: str) -> None:
    image = np.full((6, 7, 3), 100.0, np.float32)
    image[2, 3, 1] = values
    with pytest.raises(InvalidArgumentError, match=expected):
        read_image(image)


def test_float_arrays_in_0_1_are_named_as_that_convention(rng: np.random.Generator) -> None:
    image = rng.random((6, 7, 3), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match=r"0\.\.1 convention.*a \* 255"):
        read_image(image)


def test_float_arrays_in_range_pass_with_half_a_level_of_slack() -> None:
    ok = np.full((4, 4, 3), 255.4, np.float32)
    ok[0, 0] = -0.3
    assert read_image(ok)[0] is ok  # still a view, not a copy
    read_image(np.zeros((4, 4), np.float32))  # black is black, not "0..1"


def test_float_output_is_clamped_to_0_255(rng: np.random.Generator) -> None:
    """The bundled model overshoots at saturated edges; float results stay in the range."""
    image = np.where(rng.random((24, 24, 3)) < 0.5, 0.0, 255.0).astype(np.float32)  # hard edges
    with Upscaler(backend="onnxruntime") as up:
        out = up.upscale(image)
        outs = list(up.upscale_many([image]))
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 255.0  # reached, and not passed
    np.testing.assert_array_equal(outs[0], out)

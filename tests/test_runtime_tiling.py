"""Tile planning, padding, gather and scatter: pure functions, no model."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import tiling
from runtime.errors import InvalidArgumentError
from runtime.model_info import ModelIO
from runtime.stitching import allocate_batch, gather_windows, scatter_cores
from runtime.tiling import CALL_PIXELS, TilePlan, even_window, pad_image, required_size


def plan_tiles(*args: object, border: int = 0, **kwargs: object) -> TilePlan:
    """The planner's geometry without mirrored border context (tests/test_borders.py covers border=halo)."""
    return tiling.plan_tiles(*args, border=border, **kwargs)  # type: ignore[arg-type]


def plan_auto(*args: object, border: int = 0, **kwargs: object) -> TilePlan:
    """:func:`runtime.tiling.plan_auto` without mirrored border context, like :func:`plan_tiles` here."""
    return tiling.plan_auto(*args, border=border, **kwargs)  # type: ignore[arg-type]


TILE, HALO = 16, 4
SIZES = [
    (1, 1),
    (1, 500),
    (500, 1),
    (7, 13),
    (TILE - 1, TILE + 1),
    (TILE, TILE),
    (TILE + 1, 2 * TILE),
    (2 * TILE + 2 * HALO - 1, 2 * TILE + 2 * HALO + 1),
    (TILE + 2 * HALO, 3 * TILE + 5),
    (123, 77),
]


def ownership(plan) -> np.ndarray:
    count = np.zeros((plan.image_height, plan.image_width), dtype=np.int32)
    for t in plan:
        count[t.core.slices] += 1
    return count


def windows_needed(size: int, tile: int, halo: int) -> int:
    """Fewest windows of tile + 2·halo: the first and last cores reach the border (tile + halo each)."""
    if tile + 2 * halo >= size:
        return 1
    return 2 + max(0, -(-(size - 2 * (tile + halo)) // tile))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("tile,halo", [(TILE, HALO), (TILE, 0), (5, 7), (1, 2), (10_000, 16)])
def test_cores_partition_the_image(size: tuple[int, int], tile: int, halo: int) -> None:
    plan = plan_tiles(*size, tile, halo)
    count = ownership(plan)
    assert count.min() == 1 and count.max() == 1, "every LR pixel must be owned by exactly one tile"
    assert (
        len(plan) == plan.rows * plan.cols == windows_needed(size[0], tile, halo) * windows_needed(size[1], tile, halo)
    )
    assert len(plan) <= -(-size[0] // tile) * -(-size[1] // tile)  # never more than a plain grid


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("tile,halo", [(TILE, HALO), (5, 7), (10_000, 16)])
def test_windows_have_one_shape_and_stay_inside(size: tuple[int, int], tile: int, halo: int) -> None:
    h, w = size
    plan = plan_tiles(h, w, tile, halo)
    expected = (min(tile + 2 * halo, h), min(tile + 2 * halo, w))
    assert plan.window_shape == expected
    for t in plan:
        win, core = t.window, t.core
        assert (win.height, win.width) == expected
        assert 0 <= win.y0 and win.y1 <= h and 0 <= win.x0 and win.x1 <= w
        assert win.y0 <= core.y0 and core.y1 <= win.y1 and win.x0 <= core.x0 and core.x1 <= win.x1
        # Inner cores are `tile`; the border ones add the halo they need not keep; one window = whole axis.
        assert core.height <= (tile + halo if plan.rows > 1 else h)
        assert core.width <= (tile + halo if plan.cols > 1 else w)


@pytest.mark.parametrize("size", [(57, 83), (TILE * 3, TILE * 3 + 1), (40, 500)])
def test_halo_is_full_except_at_image_borders(size: tuple[int, int]) -> None:
    h, w = size
    plan = plan_tiles(h, w, TILE, HALO)
    for t in plan:
        c, win = t.core, t.window
        # context on each side is at least the halo, or everything up to the border
        assert c.y0 - win.y0 >= min(HALO, c.y0)
        assert c.x0 - win.x0 >= min(HALO, c.x0)
        assert win.y1 - c.y1 >= min(HALO, h - c.y1)
        assert win.x1 - c.x1 >= min(HALO, w - c.x1)


def test_last_tile_is_shifted_inward_not_padded() -> None:
    plan = plan_tiles(48, 48, 16, 4)  # cores [0, 20), [20, 36), [36, 48): border cores keep no halo outside
    assert plan.rows == 3
    last = plan.tiles[-1]
    assert last.core.y0 == 36 and last.core.y1 == 48
    assert last.window.y0 == 24 and last.window.y1 == 48 and last.window.height == 24  # ends at the border, full shape
    assert last.core_in_window.y0 == 36 - 24
    assert last.crop_box(4).y0 == (36 - 24) * 4 and last.output_box(4).y1 == 192


def test_an_axis_the_window_covers_is_one_tile() -> None:
    """135 rows with tile 128 and halo 8: one 135-row window, not a second one for 7 rows."""
    plan = plan_tiles(135, 240, 128, 8)
    assert (plan.rows, plan.cols) == (1, 2)
    assert plan.window_shape == (135, 144)


def test_first_tile_window_starts_at_border() -> None:
    t = plan_tiles(100, 100, 16, 4).tiles[0]
    assert (t.window.y0, t.window.x0) == (0, 0)
    assert (t.window.height, t.window.width) == (24, 24)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(tile=0), "tile"),
        (dict(tile=-3), "tile"),
        (dict(halo=-1), "halo"),
        (dict(height=0), "height"),
        (dict(width=-2), "width"),
        (dict(tile=8.0), "tile"),
        (dict(tile=True), "tile"),
        (dict(min_size=0), "min_size"),
    ],
)
def test_invalid_arguments_raise_named_error(kwargs: dict, name: str) -> None:
    args = dict(height=10, width=10, tile=8, halo=1) | kwargs
    with pytest.raises(InvalidArgumentError, match=rf"^{name} must be an integer"):
        plan_tiles(**args)


def test_numpy_integers_are_accepted() -> None:
    plan = plan_tiles(np.int64(20), np.int32(30), np.int64(8), np.int16(2))
    assert len(plan) == windows_needed(20, 8, 2) * windows_needed(30, 8, 2) == 2 * 4


def test_min_size_pads_small_images_but_cores_stay_real() -> None:
    plan = plan_tiles(3, 50, 16, 4, min_size=24)
    assert (plan.input_height, plan.input_width) == (24, 50)
    # The gather mirrors the missing rows in (tests/test_borders.py): no padded copy needed.
    assert not plan.needs_padding and plan.window_shape == (24, 24)
    assert ownership(plan).min() == 1 == ownership(plan).max()
    assert all(t.core.y1 <= 3 for t in plan)
    assert required_size(3, 50, min_size=24) == (24, 50)
    assert not plan_tiles(30, 50, 16, 4, min_size=24).needs_padding


@pytest.mark.parametrize("shape,target", [((1, 1), (5, 4)), ((2, 3), (9, 2 + 1 + 10)), ((4, 4, 3), (4, 11))])
def test_pad_image_reflects_then_replicates(shape: tuple[int, ...], target: tuple[int, int]) -> None:
    image = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    padded = pad_image(image, *target)
    assert padded.shape[:2] == target and padded.dtype == image.dtype
    h, w = shape[:2]
    np.testing.assert_array_equal(padded[:h, :w], image)
    if w >= 2 and target[1] > w:  # first padded column mirrors the column before the edge
        np.testing.assert_array_equal(padded[:h, w], image[:, w - 2])
    if target[1] > 2 * w - 1:  # beyond what reflection reaches: the edge is replicated
        np.testing.assert_array_equal(padded[:h, -1], padded[:h, 2 * w - 2])


def test_pad_image_no_op_and_errors() -> None:
    image = np.zeros((4, 5), np.uint8)
    assert pad_image(image, 4, 5) is image
    with pytest.raises(InvalidArgumentError, match="smaller than the image"):
        pad_image(image, 3, 5)


@pytest.mark.parametrize("io", list(ModelIO))
@pytest.mark.parametrize("channels", [1, 3])
def test_gather_then_scatter_round_trips_with_identity_model(io: ModelIO, channels: int) -> None:
    """Gather windows, 'upscale' them with np.repeat, scatter: must rebuild the image."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 45, channels), dtype=np.uint8)
    plan = plan_tiles(37, 45, 16, 3)
    scale = 2
    out = np.zeros((74, 90, channels), np.uint8)
    buffer = allocate_batch(io, 3, *plan.window_shape)
    for start in range(0, len(plan), 3):
        tiles = plan.tiles[start : start + 3]
        batch = gather_windows(image, tiles, buffer, io=io)
        assert np.shares_memory(batch, buffer)
        spatial = (2, 3) if io is ModelIO.FLOAT32_NCHW else (1, 2)
        upscaled = batch.repeat(scale, spatial[0]).repeat(scale, spatial[1])
        scatter_cores(upscaled, tiles, out, scale=scale, io=io, to_gray=channels == 1)
    np.testing.assert_array_equal(out, image.repeat(2, 0).repeat(2, 1))


def test_gather_scales_uint16_and_scatter_rounds_and_clips() -> None:
    image = np.array([[[0, 257, 65535]]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    plan = plan_tiles(4, 4, 4, 0)
    buffer = allocate_batch(ModelIO.FLOAT32_NCHW, 1, 4, 4)
    batch = gather_windows(image, plan.tiles, buffer, io=ModelIO.FLOAT32_NCHW, input_scale=1 / 257)
    np.testing.assert_allclose(batch[0, :, 0, 0], [0, 1, 255], rtol=1e-6)
    batch[0, 0] = -3.0  # below range: clipped to 0
    batch[0, 2] = 300.0  # above range: clipped to 65535
    out = np.zeros((4, 4, 3), np.uint16)
    scatter_cores(batch, plan.tiles, out, scale=1, io=ModelIO.FLOAT32_NCHW, output_scale=257)
    assert out[0, 0].tolist() == [0, 257, 65535]


def test_gather_rejects_wrong_buffer() -> None:
    plan = plan_tiles(8, 8, 8, 0)
    with pytest.raises(InvalidArgumentError, match="uint8"):
        gather_windows(
            np.zeros((8, 8, 3), np.uint8), plan.tiles, np.zeros((1, 3, 8, 8), np.float32), io=ModelIO.UINT8_NHWC
        )


# ------------------------------------------------------------------ tile="auto": plan_auto


def plan_cost(plan, call_pixels: int = CALL_PIXELS) -> int:
    return len(plan) * (plan.window_height * plan.window_width + call_pixels)


AUTO_CASES = [
    # height, width, halo, max window pixels, limits
    (270, 480, 8, 31250, None),
    (540, 960, 8, 31250, None),
    (68, 120, 8, 31250, None),
    (135, 240, 8, 31250, None),
    (37, 53, 3, 300, None),
    (5, 300, 2, 90, None),
    (61, 9, 1, 40, None),
    (100, 100, 4, 400, (16, 24)),
    (3, 50, 4, 600, (24, 32)),
    (1, 1, 0, 1, None),
]


@pytest.mark.parametrize("h,w,halo,pixels,limits", AUTO_CASES)
def test_auto_plan_partitions_fits_and_splits_evenly(h: int, w: int, halo: int, pixels: int, limits) -> None:
    plan = plan_auto(h, w, halo, pixels, limits=limits)
    assert ownership(plan).min() == 1 == ownership(plan).max()
    wh, ww = plan.window_shape
    assert wh * ww <= pixels
    if limits is not None:
        assert all(limits[0] <= e <= limits[1] for e in (wh, ww))
    for count, edge, length in ((plan.rows, wh, h), (plan.cols, ww, w)):
        if count == 1:
            continue
        tile = edge - 2 * halo
        # as few windows as that window needs, and the grid covers the axis with less than one
        # pixel of slack per window: no sliver, no last window that mostly repeats its neighbour
        assert count == windows_needed(length, tile, halo)
        if limits is None or edge > limits[0]:  # a window raised to the engine's minimum edge may overlap more
            assert 0 <= count * tile + 2 * halo - length < count
    assert plan.overlap == pytest.approx(len(plan) * wh * ww / (h * w))


@pytest.mark.parametrize("h,w,halo,pixels,limits", AUTO_CASES[4:])
def test_auto_plan_is_the_cheapest_fixed_grid(h: int, w: int, halo: int, pixels: int, limits) -> None:
    """No plan_tiles grid with any rectangular tile whose windows fit is cheaper."""
    low, high = limits or (1, 1 << 30)
    best = plan_auto(h, w, halo, pixels, limits=limits)
    for th in range(1, max(h, low) + 1):
        for tw in range(1, max(w, low) + 1):
            plan = plan_tiles(h, w, (th, tw), halo, min_size=low)
            wh, ww = plan.window_shape
            if wh * ww <= pixels and all(low <= e <= high for e in (wh, ww)):
                assert plan_cost(best) <= plan_cost(plan), (th, tw)


def test_auto_plan_takes_the_whole_image_when_it_fits() -> None:
    plan = plan_auto(135, 240, 8, 135 * 240)
    assert len(plan) == 1 and plan.window_shape == (135, 240) and plan.overlap == 1.0
    assert "whole image" in plan.describe()
    tiled = plan_auto(135, 240, 8, 135 * 240 - 1)
    assert len(tiled) == 2 and tiled.overlap < 1.1


def test_auto_plan_beats_the_fixed_128_tile_on_the_named_sizes() -> None:
    """The fixed 128 tile wastes windows on a last column; the even split computes less."""
    for h, w in [(270, 480), (540, 960)]:
        fixed = plan_tiles(h, w, 128, 8)
        auto = plan_auto(h, w, 8, 144 * 144)  # no larger windows than the fixed plan's
        assert auto.window_pixels < fixed.window_pixels
    assert plan_tiles(270, 480, 128, 8).overlap == pytest.approx(1.28)
    assert plan_auto(270, 480, 8, 144 * 144).overlap < 1.2


def test_auto_plan_errors_and_rectangular_tiles() -> None:
    with pytest.raises(InvalidArgumentError, match=r"no window of at most 20 pixels.*halo 2.*\(1 \+ 2\*halo\)\^2 = 25"):
        plan_auto(50, 50, 2, 20)
    with pytest.raises(InvalidArgumentError, match="^max_window_pixels must be an integer"):
        plan_auto(50, 50, 2, 0)
    with pytest.raises(InvalidArgumentError, match="tile must be an int or a"):
        plan_tiles(10, 10, (1, 2, 3), 0)
    plan = plan_tiles(40, 40, (8, 16), 2)
    assert plan.window_shape == (12, 20) and (plan.tile_height, plan.tile_width) == (8, 16) and plan.tile == 16
    assert even_window(480, 4, 8) == 132 and even_window(480, 1, 8) == 480 and even_window(10, 3, 8) == 10

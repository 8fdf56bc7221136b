"""Multi-frame files: animated GIF, APNG and WebP, multi-page TIFF, read and written whole."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import Upscaler
from runtime.errors import ImageReadError, ImageWriteError, InvalidArgumentError
from runtime.frames import FramesInfo, read_frames, write_frames
from runtime.image_io import ChannelLayout, MultiFrameWarning, quantise_gif, read_image, write_image

PHOTO = Path(__file__).resolve().parents[1] / "data" / "photos" / "test" / "retina_crop.png"
DURATIONS = [40, 80, 120, 200]


def palette_frames(rng: np.random.Generator, count: int = 4, size: tuple[int, int] = (12, 16)) -> list[np.ndarray]:
    """Distinct RGB frames drawn from 32 colours, so a GIF stores them exactly."""
    colours = rng.integers(0, 256, (32, 3), dtype=np.uint8)
    return [colours[rng.integers(0, 32, size)] for _ in range(count)]


def pil_animation(path: Path, frames: list[np.ndarray], **options) -> Path:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], **options)
    return path


def nearest4(a: np.ndarray) -> np.ndarray:
    return a.repeat(4, 0).repeat(4, 1)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    "name,options,loop",
    [
        ("a.gif", {"loop": 0}, 0),
        ("once.gif", {}, None),  # no NETSCAPE extension: plays once
        ("a.png", {"loop": 3}, 3),
        ("a.webp", {"loop": 2, "lossless": True}, 2),
    ],
)
def test_animation_reads_every_frame_with_durations_and_loop(
    tmp_path: Path, rng: np.random.Generator, name: str, options: dict, loop: int | None
) -> None:
    frames = palette_frames(rng)
    path = pil_animation(tmp_path / name, frames, duration=DURATIONS, **options)
    arrays, info = read_frames(path)
    assert len(arrays) == 4 and info.animated and info.loop == loop
    assert info.durations == tuple(float(d) for d in DURATIONS)
    assert all(f.layout is ChannelLayout.RGB for f in info.frames)
    for got, want in zip(arrays, frames):
        np.testing.assert_array_equal(got, want)


def test_multi_page_tiff_keeps_each_page_size_layout_and_depth(tmp_path: Path, rng: np.random.Generator) -> None:
    pages = [
        rng.integers(0, 256, (5, 7, 1), dtype=np.uint8),
        rng.integers(0, 65536, (9, 4, 3), dtype=np.uint16),
        rng.integers(0, 256, (6, 6, 4), dtype=np.uint8),
    ]
    path = write_frames(tmp_path / "pages.tif", pages)
    arrays, info = read_frames(path)
    assert info.format == "TIFF" and not info.animated and info.durations == ()
    assert [f.layout for f in info.frames] == [ChannelLayout.GRAY, ChannelLayout.RGB, ChannelLayout.RGBA]
    for got, want in zip(arrays, pages):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_pillow_written_multi_page_tiff(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = palette_frames(rng, 3)
    arrays, _ = read_frames(pil_animation(tmp_path / "p.tif", frames))
    for got, want in zip(arrays, frames):
        np.testing.assert_array_equal(got, want)


def test_single_image_gives_one_frame_like_read_image(tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
    path = write_image(tmp_path / "g.png", pixels)
    arrays, info = read_frames(path)
    array, image_info = read_image(path)
    assert len(arrays) == 1 and not info.animated and info.image == image_info
    np.testing.assert_array_equal(arrays[0], array)


@pytest.mark.parametrize("name", ["a.gif", "a.png", "a.webp", "a.tif"])
def test_read_image_on_several_frames_warns_and_gives_the_first(
    tmp_path: Path, rng: np.random.Generator, name: str
) -> None:
    # Before issue 16 the other frames were dropped without a word.
    frames = palette_frames(rng, 3)
    path = pil_animation(tmp_path / name, frames, duration=50, **({"lossless": True} if name.endswith("webp") else {}))
    with pytest.warns(MultiFrameWarning, match=rf"{name}: holds 3 frames .*Use runtime.frames.read_frames"):
        array, _ = read_image(path)
    np.testing.assert_array_equal(array[..., :3], frames[0])  # WebP's decoder adds an opaque alpha


def test_camera_jpeg_with_a_preview_is_one_image(tmp_path: Path) -> None:
    # MPO: a JPEG followed by a second picture (preview or other view), not an animation.
    first, second = Image.new("RGB", (8, 6), (200, 10, 10)), Image.new("RGB", (8, 6), (10, 10, 200))
    first.save(tmp_path / "cam.jpg", format="MPO", save_all=True, append_images=[second])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        array, _ = read_image(tmp_path / "cam.jpg")
        arrays, _ = read_frames(tmp_path / "cam.jpg")
    assert len(arrays) == 1 and array[..., 0].mean() > 150


def test_frame_budget_refuses_a_huge_animation(tmp_path: Path, rng: np.random.Generator) -> None:
    path = pil_animation(tmp_path / "a.gif", palette_frames(rng, 4), duration=50)
    with pytest.raises(
        ImageReadError, match=r"a.gif: 4 frames of about 192 pixels are 768 pixels in all, above the limit of 500"
    ):
        read_frames(path, max_pixels=500)
    assert len(read_frames(path, max_pixels=768)[0]) == 4


def test_transparent_gif_frames_keep_their_alpha(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = [np.concatenate([f, np.full(f.shape[:2] + (1,), 255, np.uint8)], -1) for f in palette_frames(rng, 3)]
    for index, frame in enumerate(frames):
        frame[index * 3 : index * 3 + 3, :, 3] = 0  # a different transparent band in each frame
        frame[frame[..., 3] == 0, :3] = 0
    path = write_frames(tmp_path / "t.gif", frames, None)
    arrays, info = read_frames(path)
    assert info.frames[0].layout is ChannelLayout.RGBA
    for got, want in zip(arrays, frames):
        np.testing.assert_array_equal(got[..., 3], want[..., 3])
        opaque = want[..., 3] == 255
        np.testing.assert_array_equal(got[opaque], want[opaque])


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", ["a.gif", "once.gif", "a.png", "a.webp"])
def test_animation_round_trip_in_its_own_format(tmp_path: Path, rng: np.random.Generator, name: str) -> None:
    frames = palette_frames(rng)
    options = {"once.gif": {}, "a.webp": {"loop": 2, "lossless": True}}.get(name, {"loop": 5})
    arrays, info = read_frames(pil_animation(tmp_path / name, frames, duration=DURATIONS, **options))
    out = write_frames(tmp_path / f"out_{name}", arrays, info)
    again, info2 = read_frames(out)
    assert (info2.format, info2.loop, info2.durations, info2.lossless) == (
        info.format,
        info.loop,
        info.durations,
        info.lossless,
    )
    for got, want in zip(again, frames):
        np.testing.assert_array_equal(got, want)
    assert sorted(os.listdir(tmp_path)) == sorted([name, f"out_{name}"])  # no temporary left


def test_gif_to_apng_and_webp_keeps_play_once(tmp_path: Path, rng: np.random.Generator) -> None:
    arrays, info = read_frames(pil_animation(tmp_path / "once.gif", palette_frames(rng), duration=DURATIONS))
    assert info.loop is None
    for name in ("o.png", "o.webp"):
        _, converted = read_frames(write_frames(tmp_path / name, arrays, info))
        assert converted.loop == 1 and converted.durations == info.durations, name  # 1: play once


def test_upscaled_gif_comes_back_animated_with_every_frame_upscaled(
    nearest_model: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    """The wiring the CLI uses: read_frames → Upscaler.upscale_many → write_frames."""
    frames = palette_frames(rng, 3, (8, 10))
    src = pil_animation(tmp_path / "in.gif", frames, duration=[30, 60, 90], loop=0)
    arrays, info = read_frames(src)
    with Upscaler(nearest_model, backend="onnxruntime", tile=4, halo=1) as up:
        upscaled = list(up.upscale_many(arrays))
    dst = write_frames(tmp_path / "out.gif", upscaled, info)
    again, out_info = read_frames(dst)
    assert out_info.animated and out_info.durations == (30.0, 60.0, 90.0) and out_info.loop == 0
    for got, want in zip(again, frames):  # nearest ×4 keeps the 32 colours: the GIF is exact
        np.testing.assert_array_equal(got, nearest4(want))


def test_upscale_file_keeps_every_frame_of_an_animation_and_every_tiff_page(
    nearest_model: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    """What `python -m runtime upscale anim.gif -o anim_x4.gif` does: every frame upscaled,
    durations and loop kept; a multi-page TIFF keeps its pages; a single-frame format is
    refused before any compute instead of silently keeping one frame."""
    frames = palette_frames(rng, 3, (8, 10))
    src = pil_animation(tmp_path / "in.gif", frames, duration=[30, 60, 90], loop=0)
    pages = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(3)]
    tif = write_frames(tmp_path / "pages.tif", pages)
    with Upscaler(nearest_model, backend="onnxruntime", tile=4, halo=1) as up:
        again, info = read_frames(up.upscale_file(src, tmp_path / "out.gif"))
        assert info.animated and info.durations == (30.0, 60.0, 90.0) and info.loop == 0
        for got, want in zip(again, frames, strict=True):
            np.testing.assert_array_equal(got, nearest4(want))
        got_pages, _ = read_frames(up.upscale_file(tif, tmp_path / "out.tif"))
        for got, want in zip(got_pages, pages, strict=True):
            np.testing.assert_array_equal(got, nearest4(want))
        with pytest.raises(ImageWriteError, match=r"has 3 frames.*\.gif"):
            up.upscale_file(src, tmp_path / "out.jpg")
    assert not (tmp_path / "out.jpg").exists()


def test_gif_palette_is_shared_and_good_on_a_photo(tmp_path: Path) -> None:
    photo, _ = read_image(PHOTO)
    photo = np.ascontiguousarray(photo[:96, :96, :3])
    frames = [np.roll(photo, 6 * i, axis=1) for i in range(3)]
    images, transparent = quantise_gif(frames)
    assert not transparent and len({bytes(im.getpalette() or []) for im in images}) == 1  # one palette
    again, _ = read_frames(write_frames(tmp_path / "photo.gif", frames))
    psnr = [10 * np.log10(255**2 / np.mean((got.astype(float) - want) ** 2)) for got, want in zip(again, frames)]
    # Median cut + Floyd-Steinberg measured 43.8 dB on this photo upscaled ×4 (max coverage
    # 41.7, fast octree 37.4); here on the photo itself, with a margin.
    assert min(psnr) > 38, psnr


def test_write_frames_refuses_what_cannot_be_stored(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = palette_frames(rng, 2)
    cases = [
        (tmp_path / "a.jpg", frames, ImageWriteError, "cannot hold 2 frames"),
        (tmp_path / "a.bmp", frames, ImageWriteError, "cannot hold 2 frames"),
        (tmp_path / "a.gif", [frames[0], frames[1][:5]], InvalidArgumentError, "must share one size"),
        (tmp_path / "a.gif", [f.astype(np.uint16) for f in frames], ImageWriteError, "GIF animations hold 8 bits"),
        (tmp_path / "a.png", [f.astype(np.uint16) for f in frames], ImageWriteError, "APNG animations hold 8 bits"),
        (tmp_path / "a.webp", [frames[0], frames[1][..., :1]], InvalidArgumentError, "one channel layout"),
        (tmp_path / "a.gif", [], InvalidArgumentError, "no frames"),
        (tmp_path / "a.gif", frames[0], InvalidArgumentError, "must be a list of arrays"),
    ]
    for path, given, error, reason in cases:
        with pytest.raises(error, match=reason):
            write_frames(path, given)
    assert os.listdir(tmp_path) == []


def test_write_frames_is_atomic_and_respects_overwrite(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = palette_frames(rng, 2)
    path = write_frames(tmp_path / "a.gif", frames)
    before = path.read_bytes()
    with pytest.raises(ImageWriteError, match="already exists"):
        write_frames(path, frames[::-1], overwrite=False)
    assert path.read_bytes() == before
    info = FramesInfo(format="GIF", frames=read_frames(path)[1].frames, durations=(10.0,), loop=0)
    with pytest.raises(InvalidArgumentError, match="3 frames to write .* but info describes 2"):
        write_frames(path, frames + frames[:1], info)
    assert os.listdir(tmp_path) == ["a.gif"]

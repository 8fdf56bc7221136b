"""Upscaler and backends end to end, with tiny exported ONNX models (see _runtime_models)."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _runtime_models import RECEPTIVE_RADIUS, export_model, reference
from PIL import Image

import runtime.upscaler
from runtime import DEFAULT_TILE, Upscaler
from runtime.backends import Backend, OnnxRuntime, create_backend, get_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.errors import (
    BackendUnavailableError,
    ImageReadError,
    ImageWriteError,
    InvalidArgumentError,
    ModelError,
    OutputExistsError,
    UpscaleError,
)
from runtime.image_io import read_image, write_image
from runtime.model_info import ModelInfo, ModelIO
from runtime.tiling import BORDER_MODE, plan_tiles


def nearest4(a: np.ndarray) -> np.ndarray:
    return a.repeat(4, 0).repeat(4, 1)


def with_border(image: np.ndarray, border: int) -> np.ndarray:
    """``image`` with ``border`` mirrored pixels on each side, the context the tiler gives the borders."""
    return np.pad(image, ((border, border), (border, border), (0, 0)), mode=BORDER_MODE)


def whole_image(model: Path, image: np.ndarray, border: int = 0) -> np.ndarray:
    """Reference: the whole H×W×3 float image, with ``border`` mirrored context, through onnxruntime
    in one call, as HWC with the border cropped off, clamped to 0..255 as the Upscaler's float
    results are (the random conv model overshoots on ~17% of its output)."""
    nchw = np.ascontiguousarray(with_border(image, border).transpose(2, 0, 1)[None], dtype=np.float32)
    out = reference(model, nchw)[0].transpose(1, 2, 0)
    s = out.shape[0] // (image.shape[0] + 2 * border) * border
    return np.clip(out[s : out.shape[0] - s, s : out.shape[1] - s], 0, 255)


# ------------------------------------------------------------------ tiling correctness

TILING_CASES = [
    # (height, width, tile, halo, batch)
    (1, 1, 8, 3, 4),
    (1, 37, 8, 3, 2),
    (7, 13, 4, 3, 1),
    (23, 41, 8, 3, 3),
    (33, 17, 16, 4, 4),
    (40, 40, 5, 7, 5),
    (29, 31, 100, 8, 2),
]


@pytest.mark.parametrize("height,width,tile,halo,batch", TILING_CASES)
def test_tiled_equals_whole_image(
    conv_model: Path, rng: np.random.Generator, height: int, width: int, tile: int, halo: int, batch: int
) -> None:
    image = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    with Upscaler(conv_model, backend="onnxruntime", tile=tile, halo=halo, batch=batch) as up:
        tiled = up.upscale(image)
    expected = whole_image(conv_model, image, border=halo)
    assert tiled.dtype == np.float32 and tiled.shape == expected.shape
    err = np.abs(tiled - expected).max()
    assert err < 1e-4, f"max abs error {err} between tiled and whole-image output"


def test_halo_zero_shows_seams(conv_model: Path, rng: np.random.Generator) -> None:
    """Negative control: without enough context the comparison above must fail."""
    image = rng.uniform(0, 255, (23, 41, 3)).astype(np.float32)
    for halo in (0, RECEPTIVE_RADIUS - 1):
        expected = whole_image(conv_model, image, border=halo)
        with Upscaler(conv_model, backend="onnxruntime", tile=8, halo=halo) as up:
            err = np.abs(up.upscale(image) - expected).max()
        assert err > 0.1, f"halo={halo} should differ from whole-image output, max error {err}"


def test_uint8_output_is_rounded_and_clipped_whole_image(conv_model: Path, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (19, 26, 3), dtype=np.uint8)
    with Upscaler(conv_model, backend="onnxruntime", tile=8, halo=4, batch=3) as up:
        out = up.upscale(image)
    expected = np.clip(np.rint(whole_image(conv_model, image.astype(np.float32), border=4)), 0, 255)
    assert out.dtype == np.uint8
    # float32 summation order differs between tile shapes: allow a flip at .5 boundaries
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert (out == expected).mean() > 0.999


def test_uint8_nhwc_model_tiled_equals_whole(conv_uint8_model: Path, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (21, 30, 3), dtype=np.uint8)
    with Upscaler(conv_uint8_model, backend="onnxruntime", tile=8, halo=4, batch=2) as up:
        assert up.backend.io is ModelIO.UINT8_NHWC
        out = up.upscale(image)
    import onnxruntime as ort

    session = ort.InferenceSession(str(conv_uint8_model), providers=["CPUExecutionProvider"])
    expected = session.run(["sr"], {"lr": with_border(image, 4)[None]})[0][0][16:-16, 16:-16]
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - expected).max() <= 1


# ------------------------------------------------------------------ layouts and dtypes


@pytest.mark.parametrize("model_fixture", ["nearest_model", "nearest_uint8_model"])
@pytest.mark.parametrize(
    "shape",
    [(9, 11), (9, 11, 1), (9, 11, 2), (9, 11, 3), (9, 11, 4), (1, 1, 3), (1, 17), (17, 1, 4)],
)
def test_layout_and_dtype_preserved_uint8(
    request: pytest.FixtureRequest, rng: np.random.Generator, model_fixture: str, shape: tuple
) -> None:
    model = request.getfixturevalue(model_fixture)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    with Upscaler(model, backend="onnxruntime", tile=4, halo=2, batch=3) as up:
        out = up.upscale(image)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, nearest4(image))  # gray via luma and alpha via the model are exact


@pytest.mark.parametrize("shape", [(9, 11), (9, 11, 3), (9, 11, 4), (1, 1)])
def test_uint16_is_exact_through_a_float_model(nearest_model: Path, rng: np.random.Generator, shape: tuple) -> None:
    image = rng.integers(0, 65536, shape, dtype=np.uint16)
    with Upscaler(nearest_model, backend="onnxruntime", tile=4, halo=1) as up:
        out = up.upscale(image)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, nearest4(image))


def test_constant_alpha_skips_the_model(
    nearest_model: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    image[:, :, 3] = 255
    with Upscaler(nearest_model, backend="onnxruntime", tile=4, halo=1) as up:
        calls = []
        original = up.backend.infer
        monkeypatch.setattr(up.backend, "infer", lambda b: calls.append(len(b)) or original(b))
        out = up.upscale(image)
    assert sum(calls) == 9  # 3×3 tiles (cores of 4 with halo 1, mirrored at the borders), colour pass only
    assert (out[:, :, 3] == 255).all()


def test_non_uint8_images_need_a_float_model(nearest_uint8_model: Path) -> None:
    with Upscaler(nearest_uint8_model, backend="onnxruntime") as up:
        for dtype in (np.uint16, np.float32):
            with pytest.raises(InvalidArgumentError, match="need a float32-nchw model"):
                up.upscale(np.zeros((4, 4, 3), dtype))


def test_pil_and_path_inputs(nearest_model: Path, tmp_path: Path) -> None:
    gray = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    gray.save(tmp_path / "g.png")
    with Upscaler(nearest_model, backend="onnxruntime") as up:
        from_pil = up.upscale(gray)
        from_path = up.upscale(tmp_path / "g.png")
        many = list(up.upscale_many([np.zeros((2, 2), np.uint8), str(tmp_path / "g.png")]))
    assert from_pil.shape == from_path.shape == (12, 16)  # 2-D like np.asarray(gray)
    np.testing.assert_array_equal(from_path, nearest4(np.asarray(gray)))
    assert [m.shape for m in many] == [(8, 8), (12, 16)]


def test_peak_memory_scales_with_tile_not_image(nearest_model: Path) -> None:
    image = np.zeros((384, 384, 3), np.uint8)
    output_bytes = image.nbytes * 16
    with Upscaler(nearest_model, backend="onnxruntime", tile=32, halo=4, batch=4) as up:
        up.upscale(image[:8, :8])  # warm up lazy allocations
        tracemalloc.start()
        try:
            out = up.upscale(image)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert out.nbytes == output_bytes
    # Only tile-sized buffers beyond the output (measured ~0.4 MB; onnxruntime's own
    # allocations are not traced). A float32 copy of the image would add 1.8 MB, one of
    # the output 28 MB.
    assert peak - output_bytes < 1_200_000, f"peak {peak / 1e6:.1f} MB beyond the {output_bytes / 1e6:.1f} MB output"


# ------------------------------------------------------------------ files


def test_upscale_file_16bit_png(nearest_model: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    write_image(tmp_path / "in16.png", pixels)
    with Upscaler(nearest_model, backend="onnxruntime") as up:
        dst = up.upscale_file(tmp_path / "in16.png", tmp_path / "out.png")
    array, info = read_image(dst)
    assert info.dtype == np.uint16 and array.shape == (20, 28, 1)
    np.testing.assert_array_equal(array[:, :, 0], nearest4(pixels))


def test_upscale_file_cmyk_jpeg_warns_and_works(nearest_model: Path, tmp_path: Path) -> None:
    Image.new("CMYK", (6, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    with Upscaler(nearest_model, backend="onnxruntime") as up, pytest.warns(UserWarning, match="c.jpg: CMYK"):
        up.upscale_file(tmp_path / "c.jpg", tmp_path / "c_x4.png")
    with Image.open(tmp_path / "c_x4.png") as im:
        assert im.mode == "RGB" and im.size == (24, 20)


def test_upscale_file_keeps_icc_and_refuses_to_overwrite(nearest_model: Path, tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (3, 3), (5, 6, 7)).save(tmp_path / "a.png", icc_profile=icc)
    (tmp_path / "a_x4.png").write_bytes(b"keep me")
    with Upscaler(nearest_model, backend="onnxruntime") as up:
        with pytest.raises(OutputExistsError, match="a_x4.png: already exists"):
            up.upscale_file(tmp_path / "a.png", tmp_path / "a_x4.png")
        assert (tmp_path / "a_x4.png").read_bytes() == b"keep me"
        up.upscale_file(tmp_path / "a.png", tmp_path / "a_x4.png", overwrite=True)
    with Image.open(tmp_path / "a_x4.png") as im:
        assert im.size == (12, 12) and im.info["icc_profile"] == icc


@pytest.mark.parametrize(
    "name,content,error,reason",
    [
        ("missing.png", None, ImageReadError, "file not found"),
        ("empty.png", b"", ImageReadError, "empty (0 bytes)"),
        ("text.png", b"hello, I am text\n", ImageReadError, "not a recognised image"),
        ("cut.png", "truncated", ImageReadError, "corrupt or truncated"),
    ],
)
def test_bad_inputs_fail_clearly_and_write_nothing(
    nearest_model: Path, tmp_path: Path, name: str, content, error: type, reason: str
) -> None:
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = src_dir / name
    if content == "truncated":
        write_image(src, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        src.write_bytes(src.read_bytes()[:-300])
    elif content is not None:
        src.write_bytes(content)
    with Upscaler(nearest_model, backend="onnxruntime") as up, pytest.raises(error) as info:
        up.upscale_file(src, out_dir / "out.png")
    assert info.value.path == str(src) and reason in str(info.value)
    assert os.listdir(out_dir) == []


def test_unwritable_destination_fails_before_compute(nearest_model: Path, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "plain_file").write_text("not a folder")
    dst = tmp_path / "plain_file" / "out.png"  # fails for root too, unlike chmod 0o500
    with Upscaler(nearest_model, backend="onnxruntime") as up:
        up.backend.infer = None  # any attempt to compute would crash differently
        with pytest.raises(ImageWriteError) as info:
            up.upscale_file(tmp_path / "a.png", dst)
    assert info.value.path == str(dst) and "is not a folder" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "plain_file"]


# ------------------------------------------------------------------ models and backends


def test_missing_default_model_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runtime.upscaler, "default_model_path", lambda: tmp_path / "eusr-compact-x4.onnx")
    with pytest.raises(ModelError, match="bundled default model .* is missing.*pass model="):
        Upscaler()


def test_model_errors(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        OnnxRuntimeBackend(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="junk.onnx: ONNX Runtime cannot load the model"):
        OnnxRuntimeBackend(tmp_path / "junk.onnx")
    lying = export_model(models_dir / "lying.onnx", "nearest", metadata={"scale": 2})
    with OnnxRuntimeBackend(lying) as backend, pytest.raises(ModelError, match="x2 float32-nchw"):
        backend.infer(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ModelError, match="format 9 is not supported"):
        OnnxRuntimeBackend(export_model(models_dir / "future.onnx", "nearest", metadata={"format": 9}))


def test_models_without_metadata(models_dir: Path) -> None:
    dynamic = export_model(models_dir / "bare.onnx", "nearest", metadata=False)
    with pytest.raises(ModelError, match="lacks 'fourpp_eusr' metadata.*pass scale="):
        OnnxRuntimeBackend(dynamic)
    with OnnxRuntimeBackend(dynamic, scale=4) as backend:
        assert backend.info.source == "inferred" and backend.io is ModelIO.FLOAT32_NCHW
    static = export_model(models_dir / "static_u8.onnx", "nearest", io="uint8-nhwc", metadata=False, static_hw=8)
    with OnnxRuntimeBackend(static) as backend:
        assert (backend.io, backend.scale) == (ModelIO.UINT8_NHWC, 4)
    meta = export_model(models_dir / "x4.onnx", "nearest")
    with pytest.raises(ModelError, match="scale=2 was asked for but the model's metadata says scale 4"):
        OnnxRuntimeBackend(meta, scale=2)


def test_backend_registry(nearest_model: Path) -> None:
    # every name is a backend now; TensorRT given an ONNX file says what it needs
    with pytest.raises(ModelError, match="no such sidecar.*export/to_trt.py"):
        create_backend("tensorrt", nearest_model)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tpu'"):
        create_backend("tpu", nearest_model)
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        create_backend(OnnxRuntime(providers=("CUDAExecutionProvider",)), nearest_model)
    with pytest.raises(InvalidArgumentError, match=r"OnnxRuntime has no option\(s\) \['thread'\]"):
        create_backend("onnxruntime", nearest_model, thread=2)
    with create_backend("auto", nearest_model) as backend:  # the dev extra installs openvino
        assert backend.name == "openvino" and backend.scale == 4
    with pytest.warns(DeprecationWarning, match="create_backend"), get_backend("auto", nearest_model) as backend:
        assert backend.name == "openvino"


def test_backend_contract(nearest_model: Path, nearest_uint8_model: Path) -> None:
    """A host backend's infer() validates input and output (the Stage contract: test_backend_conformance)."""
    for model, good, two_channels in [
        (nearest_model, np.ones((2, 3, 5, 6), np.float32), np.ones((2, 2, 5, 6), np.float32)),
        (nearest_uint8_model, np.ones((2, 5, 6, 3), np.uint8), np.ones((2, 5, 6, 2), np.uint8)),
    ]:
        backend = create_backend("onnxruntime", model)
        with backend:
            out = backend.infer(good)
            assert out.dtype == good.dtype and out.sum() == good.sum() * 16
            bad_batches = [good.astype(np.float64), good[0], two_channels, good[:0], good.tolist()]
            for bad in bad_batches:
                with pytest.raises(InvalidArgumentError):
                    backend.infer(bad)
        assert backend.closed
        with pytest.raises(UpscaleError, match="closed"):
            backend.infer(good)


def test_upscaler_arguments(nearest_model: Path) -> None:
    for kwargs, name in [(dict(tile=0), "tile"), (dict(halo=-1), "halo"), (dict(batch=0), "batch")]:
        with pytest.raises(InvalidArgumentError, match=f"^{name} must be"):
            Upscaler(nearest_model, backend="onnxruntime", **kwargs)
    with OnnxRuntimeBackend(nearest_model) as backend:
        with pytest.raises(InvalidArgumentError, match="cannot be given together with a Backend"):
            Upscaler(nearest_model, backend=backend)
        up = Upscaler(backend=backend, tile=4, progress=True)
        assert up.upscale(np.zeros((9, 9, 3), np.uint8)).shape == (36, 36, 3)
        up.close()
        assert not backend.closed  # the caller's backend stays the caller's


def test_low_halo_warns(conv_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Upscaler(conv_model, backend="onnxruntime", halo=1):
        pass
    assert "below the model's recommended halo 3" in caplog.text


def test_metadata_json_is_what_the_exporter_writes(conv_model: Path) -> None:
    with OnnxRuntimeBackend(conv_model) as backend:
        info = backend.info
    assert info.recommended_halo == RECEPTIVE_RADIUS and info.config_name == "test-conv"
    assert json.loads(json.dumps(dict(info.metadata)))["io"] == "float32-nchw"


class RepeatBackend(Backend):
    """A pure-numpy ×2 nearest backend with a minimum input size, like a fixed-shape engine."""

    name = "numpy-repeat"

    def __init__(self, min_size: int) -> None:
        super().__init__(ModelInfo(io=ModelIO.FLOAT32_NCHW, scale=2, input_name="lr", output_name="sr"))
        self._min_size = min_size
        self.shapes: list[tuple[int, ...]] = []

    def window_limits(self) -> tuple[int, int]:
        return (self._min_size, 1 << 30)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return batch.repeat(2, 2).repeat(2, 3)


@pytest.mark.parametrize("shape", [(1, 1), (3, 50, 3), (15, 16, 4), (40, 9)])
def test_images_below_the_backend_minimum_are_padded(rng: np.random.Generator, shape: tuple) -> None:
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    backend = RepeatBackend(min_size=16)
    with Upscaler(backend=backend, tile=8, halo=4, batch=3) as up:
        out = up.upscale(image)
    np.testing.assert_array_equal(out, image.repeat(2, 0).repeat(2, 1))
    assert {s[2:] for s in backend.shapes} == {(16, 16)}  # one input shape for every call


# ------------------------------------------------------------------ tile="auto"


class FeatureBlur(Backend):
    """A ×2 3×3 box blur whose metadata gives a feature count, so tile="auto" knows its memory."""

    name = "feature-blur"

    def __init__(self, features: int = 1) -> None:
        super().__init__(
            ModelInfo(
                io=ModelIO.FLOAT32_NCHW,
                scale=2,
                input_name="lr",
                output_name="sr",
                recommended_halo=1,
                metadata={"config": {"features": features}},
            )
        )
        self.shapes: list[tuple[int, ...]] = []

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        h, w = batch.shape[2:]
        p = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        y = sum(p[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)) / np.float32(9)
        return y.repeat(2, 2).repeat(2, 3).astype(np.float32)


def budget_for(pixels: int, backend: Backend) -> float:
    """The memory_budget_mb that allows windows of ``pixels`` for ``backend``."""
    per_pixel = runtime.upscaler.window_bytes_per_pixel(backend.info)
    assert per_pixel == 4 * 1 * 2 * 2 * 4 + 2048
    return pixels * per_pixel / 1e6


def test_auto_tiles_fit_the_budget_split_evenly_and_equal_the_whole_image(
    rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    image = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    with Upscaler(backend=FeatureBlur(), tile=999, halo=1) as whole:
        expected = whole.upscale(image)
    backend = FeatureBlur()
    with (
        caplog.at_level("INFO", logger="runtime.upscaler"),
        Upscaler(backend=backend, memory_budget_mb=budget_for(150, backend)) as up,
    ):
        assert up.tile == "auto" and "tile='auto' (windows <= 150 px" in repr(up)
        plan = up.plan(30, 41)
        assert plan.window_height * plan.window_width <= 150 and len(plan) > 1
        np.testing.assert_array_equal(up.upscale(image), expected)
        np.testing.assert_array_equal(up.upscale(image), expected)
    assert {s[2:] for s in backend.shapes} == {plan.window_shape}
    assert len(backend.shapes) == 2 * len(plan)
    assert caplog.text.count(f"tiles: {plan.describe()}") == 1  # logged once per image size


def test_auto_runs_an_image_that_fits_as_one_window(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    backend = FeatureBlur()
    with Upscaler(backend=backend, memory_budget_mb=budget_for(32 * 43, backend)) as up:
        out = up.upscale(image)
        assert "whole image" in up.plan(30, 41).describe()
        assert len(up.plan(31, 41)) == 2  # one row more does not fit
    assert backend.shapes == [(1, 3, 32, 43)]  # the image plus its mirrored halo of 1
    with Upscaler(backend=FeatureBlur(), tile=999, halo=1) as whole:
        np.testing.assert_array_equal(out, whole.upscale(image))


def test_auto_budget_scales_with_the_batch() -> None:
    backend = FeatureBlur()
    with Upscaler(backend=backend, memory_budget_mb=budget_for(400, backend), batch=4) as up:
        plan = up.plan(100, 100)
        assert plan.window_height * plan.window_width <= 100


@pytest.mark.parametrize(
    ("available", "expected_mb"),
    [(400e6, 256.0), (4e9, 1000.0), (100e9, 2048.0), (None, 1024.0)],
    ids=["little-free-floor", "a-quarter", "plenty-cap", "unknown"],
)
def test_the_default_budget_is_a_quarter_of_the_free_memory_within_bounds(
    monkeypatch: pytest.MonkeyPatch, available: float | None, expected_mb: float
) -> None:
    monkeypatch.setattr(
        runtime.upscaler, "available_memory_bytes", lambda: None if available is None else int(available)
    )
    assert runtime.upscaler.default_memory_budget_mb() == pytest.approx(expected_mb)
    with Upscaler(backend=FeatureBlur()) as up:
        assert up.memory_budget_mb == pytest.approx(expected_mb)
        assert f"windows <= {int(expected_mb * 1e6) // (4 * 1 * 2 * 2 * 4 + 2048)} px" in repr(up)
    with Upscaler(backend=FeatureBlur(), memory_budget_mb=3) as up:  # an explicit budget ignores the free memory
        assert up.memory_budget_mb == 3.0


def test_the_free_memory_is_read_where_linux_reports_it() -> None:
    from runtime.sysmem import available_memory_bytes

    free = available_memory_bytes()
    if Path("/proc/meminfo").is_file():
        assert free is not None and 0 < free < 1 << 50
    else:
        assert free is None


def test_a_backend_with_fewer_live_tensors_gets_larger_windows() -> None:
    class Lean(FeatureBlur):
        activation_tensors = 2.0

    fat_backend, lean_backend = FeatureBlur(features=64), Lean(features=64)
    fat_per_pixel = runtime.upscaler.window_bytes_per_pixel(fat_backend.info, fat_backend.activation_tensors)
    lean_per_pixel = runtime.upscaler.window_bytes_per_pixel(lean_backend.info, lean_backend.activation_tensors)
    assert (fat_per_pixel, lean_per_pixel) == (4 * 64 * 2 * 2 * 4 + 2048, 4 * 64 * 2 * 2 * 2 + 2048)
    budget = 400 * fat_per_pixel / 1e6
    with (
        Upscaler(backend=fat_backend, memory_budget_mb=budget) as fat,
        Upscaler(backend=lean_backend, memory_budget_mb=budget) as lean,
    ):
        assert "windows <= 400 px" in repr(fat)
        assert f"windows <= {400 * fat_per_pixel // lean_per_pixel} px" in repr(lean)
        assert len(lean.plan(40, 40)) < len(fat.plan(40, 40))


def test_auto_without_a_feature_count_keeps_the_fixed_tiles_area(conv_model: Path, rng: np.random.Generator) -> None:
    image = rng.uniform(0, 255, (29, 31, 3)).astype(np.float32)
    with Upscaler(conv_model, backend="onnxruntime") as up:
        assert up.tile == "auto"
        assert f"windows <= {(DEFAULT_TILE + 2 * up.halo) ** 2} px" in repr(up)
        tiled = up.upscale(image)
        assert len(up.plan(300, 300)) > 1
    assert np.abs(tiled - whole_image(conv_model, image, border=up.halo)).max() < 1e-4


def test_the_bundled_model_gets_its_activation_size_from_its_metadata() -> None:
    path = runtime.upscaler.default_model_path()
    if not path.is_file():
        pytest.fail(f"the bundled model {path} is missing from this checkout")
    with Upscaler(backend="onnxruntime", batch=1) as up:
        per_pixel = runtime.upscaler.window_bytes_per_pixel(up.info)
        assert per_pixel == 4 * 32 * 4 * 4 * 4 + 2048  # compact: 32 features, x4
        pixels = int(up.memory_budget_mb * 1e6) // per_pixel
        assert f"windows <= {pixels} px" in repr(up)
        assert len(up.plan(120, 68)) == 1  # the smallest named size runs whole
        plan = up.plan(270, 480)
        assert plan.overlap < plan_tiles(270, 480, DEFAULT_TILE, up.halo).overlap


def test_auto_on_a_pipelined_device_is_the_fixed_default_tile() -> None:
    from runtime.testing import BackendStageFactory, EmulatedDevice

    device = EmulatedDevice()
    with Upscaler(backend=BackendStageFactory(FeatureBlur(), device), device=device) as up:
        assert up.tile == DEFAULT_TILE and up.plan(300, 300).window_shape == (DEFAULT_TILE + 2, DEFAULT_TILE + 2)

    class Limited(BackendStageFactory):
        def window_limits(self) -> tuple[int, int]:
            return (8, 24)

    with Upscaler(backend=Limited(FeatureBlur(), device), device=device) as up:
        assert up.tile == 22  # inside the engine's largest edge


def test_auto_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="^tile must be 'auto' or an int >= 1, got 'big'"):
        Upscaler(backend=FeatureBlur(), tile="big")
    for bad in (0, -1.0, "1", True):
        with pytest.raises(InvalidArgumentError, match="^memory_budget_mb must be a number > 0"):
            Upscaler(backend=FeatureBlur(), memory_budget_mb=bad)  # type: ignore[arg-type]
    with Upscaler(backend=FeatureBlur(), memory_budget_mb=1e-4, halo=3) as up:
        with pytest.raises(InvalidArgumentError, match=r"no window of at most 0*\d+ pixels.*raise the memory budget"):
            up.upscale(np.zeros((20, 20, 3), np.uint8))


def test_auto_moves_on_to_the_cpu_when_its_gpu_backend_cannot_start(
    monkeypatch: pytest.MonkeyPatch, nearest_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU box whose ONNX Runtime CUDA provider cannot load (here: the CPU-only wheel, the
    provider's real refusal) still upscales with backend="auto", and the log says why; an
    explicit backend name is never replaced."""
    import logging

    from runtime.backends import OnnxRuntimeCuda
    from runtime.testing import EmulatedDevice

    real_resolve = runtime.upscaler.resolve
    monkeypatch.setattr(
        runtime.upscaler, "resolve", lambda b, p=None: OnnxRuntimeCuda() if b == "auto" else real_resolve(b, p)
    )
    devices: list[EmulatedDevice] = []
    monkeypatch.setattr(
        Upscaler, "_cuda_device", staticmethod(lambda options: devices.append(EmulatedDevice()) or devices[-1])
    )
    caplog.set_level(logging.WARNING, logger="runtime.upscaler")
    image = np.arange(6 * 7 * 3, dtype=np.uint8).reshape(6, 7, 3)
    with Upscaler(nearest_model) as up:
        assert not up.pipelined and up.options is not None and up.options.name in ("openvino", "onnxruntime")
        np.testing.assert_array_equal(up.upscale(image), image.repeat(4, 0).repeat(4, 1))
    assert "onnxruntime-cuda cannot start" in caplog.text and "CUDAExecutionProvider" in caplog.text
    assert len(devices) == 1  # one device for the GPU attempt (closed on the refusal); the CPU path opens none
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        Upscaler(nearest_model, backend="onnxruntime-cuda")

"""The OpenVINO backend (runtime/backends/openvino_backend.py) beyond the shared contract.

The contract itself (refusals, numbers into the executor's buffer) runs in
test_backend_conformance.py. Here: typed options, the errors (openvino missing, a file it
cannot read, a shape it cannot compile), compile once per shape with an LRU, the blob cache
folder, zero copy on the executor's buffers, INT8 kernels for Q/DQ graphs, ``backend="auto"``
on the CPU, the CLI, and (slow) parity of the bundled model and its uint8, fp16 and INT8
variants with PyTorch float32 on real photos.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import Upscaler
from runtime.backends import OnnxRuntime, OpenVino, create_backend, resolve_auto
from runtime.errors import BackendUnavailableError, InvalidArgumentError, ModelError
from runtime.layout import ModelIO
from runtime.metrics import psnr, psnr_y

ov = pytest.importorskip("openvino")

from runtime.backends.openvino_backend import OpenVinoBackend, cache_folder  # noqa: E402 - needs openvino

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "runtime" / "models" / "eusr-compact-x4.onnx"
CHECKPOINT = REPO / "models" / "eusr-compact.safetensors"
PHOTOS = REPO / "data" / "photos" / "test"


def _openvino(model: Path, **options) -> OpenVinoBackend:
    backend = create_backend(OpenVino(cache=False, threads=2, **options), model)
    assert isinstance(backend, OpenVinoBackend)
    return backend


def _ort(model: Path, batch: np.ndarray) -> np.ndarray:
    with create_backend(OnnxRuntime(threads=2), model) as backend:
        return backend.infer(batch)


# ------------------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"threads": -1}, "OpenVino(threads=)"),
        ({"threads": 1.5}, "OpenVino(threads=)"),
        ({"streams": 0}, "OpenVino(streams=)"),
        ({"hint": "fast"}, "OpenVino(hint=) must be 'latency' or 'throughput', got 'fast'"),
        ({"precision": "int8"}, "OpenVino(precision=) must be 'f32', 'bf16' or 'f16', got 'int8'"),
        ({"cache": "yes"}, "OpenVino(cache=) must be True or False"),
        ({"cache_dir": 3}, "OpenVino(cache_dir=) must be a folder path, got 3"),
        ({"max_shapes": 0}, "OpenVino(max_shapes=)"),
    ],
)
def test_options_refuse_bad_values(kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        OpenVino(**kwargs)
    assert words in str(info.value)


def test_options_are_registered_and_typed(tmp_path: Path) -> None:
    from runtime.backends import OPTIONS, backend_names

    assert OPTIONS["openvino"] is OpenVino and "openvino" in backend_names()
    assert not OpenVino().pipelined
    assert OpenVino(cache_dir=tmp_path).cache_dir == str(tmp_path)  # PathLike accepted, stored as str
    with pytest.raises(TypeError):
        OpenVino(thread=2)  # type: ignore[call-arg]  # typo caught at once


# ------------------------------------------------------------------------------ errors


def test_missing_openvino_says_how_to_install(monkeypatch: pytest.MonkeyPatch, conv_model: Path) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an installation without it sees
    with pytest.raises(BackendUnavailableError) as info:
        create_backend("openvino", conv_model)
    text = str(info.value)
    assert "'openvino' backend" in text and 'pip install "fourpp-eusr[openvino]"' in text


def test_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match=r"junk\.onnx: OpenVINO cannot read the model"):
        _openvino(junk)
    with pytest.raises(ModelError, match=r"nowhere\.onnx: model file not found"):
        _openvino(tmp_path / "nowhere.onnx")


def _fixed_reshape_model(path: Path) -> Path:
    """A ×4 model that only runs 8×8 windows: it reshapes its input to [1,3,8,8]."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["lr", "shape"], ["fixed"]),
            helper.make_node("Resize", ["fixed", "", "scales"], ["sr"], mode="nearest"),
        ],
        "fixed",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, "H", "W"])],
        [
            helper.make_tensor("shape", TensorProto.INT64, [4], [1, 3, 8, 8]),
            helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 4, 4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"format": 1, "scale": 4, "io": "float32-nchw", "input": "lr", "output": "sr"}
    entry = model.metadata_props.add()
    entry.key, entry.value = "fourpp_eusr", json.dumps(meta)
    onnx.save(model, str(path))
    return path


def test_a_shape_it_cannot_compile_names_file_and_shape(tmp_path: Path) -> None:
    model = _fixed_reshape_model(tmp_path / "fixed.onnx")
    with _openvino(model) as backend:
        out = backend.infer(np.ones((1, 3, 8, 8), np.float32))
        assert out.shape == (1, 3, 32, 32)
        with pytest.raises(ModelError) as info:
            backend.infer(np.ones((1, 3, 9, 9), np.float32))
    assert "fixed.onnx: OpenVINO cannot compile the model for input shape [1, 3, 9, 9]" in str(info.value)


def test_metadata_naming_a_missing_input_is_refused(tmp_path: Path, conv_model: Path) -> None:
    import onnx

    model = onnx.load(str(conv_model))
    meta = json.loads(model.metadata_props[0].value)
    model.metadata_props[0].value = json.dumps({**meta, "input": "image"})
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    with pytest.raises(ModelError, match=r"renamed\.onnx: metadata names input 'image' but the graph's inputs are"):
        _openvino(tmp_path / "renamed.onnx")


def test_model_without_metadata_is_inferred(tmp_path: Path) -> None:
    from _runtime_models import export_model

    path = export_model(tmp_path / "bare.onnx", "nearest", metadata=False, static_hw=8)
    with _openvino(path) as backend:
        assert (backend.info.source, backend.scale, backend.io) == ("inferred", 4, ModelIO.FLOAT32_NCHW)


# ------------------------------------------------------------------------------ compile per shape


def test_one_compile_per_shape_with_an_lru(conv_model: Path, rng: np.random.Generator) -> None:
    with _openvino(conv_model, max_shapes=2) as backend:
        for shape in [(1, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8), (1, 3, 9, 7)]:
            x = rng.integers(0, 256, shape).astype(np.float32)
            np.testing.assert_allclose(backend.infer(x), _ort(conv_model, x), rtol=0, atol=1e-3)
        # (2,3,8,8) was least recently used when (1,3,9,7) came
        assert backend.compiled_shapes == [(1, 3, 8, 8), (1, 3, 9, 7)]
        first = backend.compiled((1, 3, 9, 7))
        assert backend.compiled((1, 3, 9, 7)) is first  # a hit compiles nothing
        assert backend.config["INFERENCE_PRECISION_HINT"] == "f32"
        assert first.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32  # not the bf16 default of AMX CPUs


def test_stage_runs_in_place_on_the_executor_buffers(conv_model: Path, rng: np.random.Generator) -> None:
    """The request reads the bound input buffer itself: change it in place, enqueue again, the output follows."""
    with _openvino(conv_model) as backend:
        x = np.ascontiguousarray(rng.integers(0, 256, (2, 3, 9, 11)).astype(np.float32))
        y = np.full(backend.output_shape(x.shape), np.nan, np.float32)
        stage = backend.create_stage(0)
        stage.bind(x.ctypes.data, y.ctypes.data, x.shape)
        stage.enqueue(0)
        np.testing.assert_allclose(y, _ort(conv_model, x), rtol=0, atol=1e-3)
        x[...] = x[::-1]  # same buffer, new pixels, no rebind
        stage.bind(x.ctypes.data, y.ctypes.data, x.shape)  # the executor rebinds each batch: a no-op here
        stage.enqueue(0)
        np.testing.assert_allclose(y, _ort(conv_model, x), rtol=0, atol=1e-3)
        stage.close()


# ------------------------------------------------------------------------------ blob cache


def test_blob_cache_is_keyed_by_version_and_cpu(tmp_path: Path, conv_model: Path) -> None:
    batch = np.zeros((1, 3, 8, 8), np.float32)
    with create_backend(OpenVino(cache_dir=tmp_path), conv_model) as first:
        first.infer(batch)
        folder = first.cache_dir
        assert folder is not None and folder.parent == tmp_path
        assert not first.compiled((1, 3, 8, 8)).get_property("LOADED_FROM_CACHE")
    assert list(folder.glob("*.blob")), "compiling wrote no blob"
    with create_backend(OpenVino(cache_dir=tmp_path), conv_model) as second:
        assert second.compiled((1, 3, 8, 8)).get_property("LOADED_FROM_CACHE")
    core = ov.Core()
    assert cache_folder(tmp_path, core, ov.get_version()) == folder
    assert cache_folder(tmp_path, core, "2099.1.0") != folder  # another OpenVINO never meets these blobs
    with create_backend(OpenVino(cache=False), conv_model) as uncached:
        uncached.infer(batch)
        assert uncached.cache_dir is None and "CACHE_DIR" not in uncached.config


def test_blob_cache_is_bounded(tmp_path: Path, conv_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.backends.openvino_backend as module

    monkeypatch.setattr(module, "MAX_CACHED_BLOBS", 2)
    with create_backend(OpenVino(cache_dir=tmp_path), conv_model) as backend:
        for edge in (8, 9, 10):
            backend.compiled((1, 3, edge, edge))
        assert backend.cache_dir is not None and len(list(backend.cache_dir.glob("*.blob"))) == 2


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from runtime.backends.openvino_backend import default_cache_dir

    monkeypatch.delenv("FOURPP_EUSR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "fourpp-eusr" / "openvino"
    monkeypatch.setenv("FOURPP_EUSR_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "openvino"


# ------------------------------------------------------------------------------ INT8


def test_qdq_graph_runs_as_int8_kernels(tmp_path: Path, photos_dir: Path, conv_model: Path) -> None:
    """The calibration's Q/DQ graph (TensorRT placement) becomes INT8 convolutions on OpenVINO."""
    from PIL import Image

    from calibration.cli import main as calibrate
    from calibration.collect import load_npz

    train = tmp_path / "train"
    train.mkdir()
    for p in sorted((photos_dir / "train").glob("*.png"))[:2]:
        Image.open(p).convert("RGB").crop((0, 0, 128, 128)).save(train / p.name)
    data, q = tmp_path / "calib.npz", tmp_path / "conv.int8.onnx"
    flags = ["--samples", "4", "--tile", "16", "--halo", "4", "--model", str(conv_model)]
    assert calibrate(["collect", "--images", str(train), "-o", str(data), *flags]) == 0
    assert (
        calibrate(["quantize", str(conv_model), "--data", str(data), "-o", str(q), "--no-auto-keep", "--no-gate"]) == 0
    )
    x = load_npz(data)[0]["lr"][:2]
    with _openvino(q) as int8, _openvino(conv_model) as fp32:
        kinds = int8.kernel_precisions(x.shape)
        assert any(kind == "Convolution" and p in ("i8", "u8") for kind, p in kinds), kinds
        assert not any(p in ("i8", "u8") for _, p in fp32.kernel_precisions(x.shape))
        got, ref = int8.infer(x), fp32.infer(x)
    assert np.isfinite(got).all()
    assert 25 < psnr(got, ref) < 200, psnr(got, ref)  # INT8: close to float32, but really computed in INT8


# ------------------------------------------------------------------------------ auto and CLI


def test_auto_prefers_openvino_on_the_cpu(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import runtime.backends as backends

    caplog.set_level(logging.INFO, logger="runtime.backends")
    assert resolve_auto("model.onnx") == OpenVino()
    assert resolve_auto(None) == OpenVino()  # the bundled model
    assert "backend 'auto' resolved to openvino on the CPU" in caplog.text
    caplog.clear()
    assert resolve_auto("engine.plan").name == "onnxruntime"  # not a file OpenVINO runs
    assert "openvino: runs ONNX files (.onnx), not engine.plan" in caplog.text
    real = backends._module_importable
    monkeypatch.setattr(backends, "_module_importable", lambda name: name != "openvino" and real(name))
    caplog.clear()
    options = resolve_auto("model.onnx")
    assert (options.name, options.providers) == ("onnxruntime", ("CPUExecutionProvider",))
    assert "openvino: the openvino package is not installed" in caplog.text


def test_auto_without_onnxruntime_still_runs_on_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert resolve_auto("model.onnx") == OpenVino()


def test_cli_backend_openvino_with_threads(tmp_path: Path, conv_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from runtime.cli import main

    monkeypatch.setenv("FOURPP_EUSR_CACHE", str(tmp_path / "cache"))  # the blobs stay out of the user's cache

    src = tmp_path / "in.png"
    Image.fromarray(np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)).save(src)
    out = tmp_path / "out.png"
    args = ["upscale", str(src), "-o", str(out), "--model", str(conv_model), "--backend", "openvino"]
    assert main([*args, "--threads", "1", "-q"]) == 0
    assert Image.open(out).size == (120, 80)
    assert list((tmp_path / "cache" / "openvino").glob("*/*.blob"))
    assert main(["upscale", str(src), "-o", str(out), "--backend", "tensorrt", "--threads", "1", "--overwrite"]) == 2


# ------------------------------------------------------------------------------ parity on photos (slow)


def _photos(max_size: int = 160) -> list[tuple[str, np.ndarray]]:
    from benchmarks.parity import load_input

    return [(p.stem, load_input(p, max_size)) for p in sorted(PHOTOS.glob("*.png"))]


@pytest.fixture(scope="module")
def torch_reference():
    """``reference(border)``: PyTorch float32 on the whole image with the Upscaler's border
    context (its halo), so border pixels compare like for like."""
    pytest.importorskip("torch")
    from benchmarks.parity import TorchReference

    cache: dict[int, TorchReference] = {}

    def reference(border: int) -> TorchReference:
        if border not in cache:
            cache[border] = TorchReference(CHECKPOINT, 4, threads=2, border=border)
        return cache[border]

    return reference


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled checkpoint exported as uint8 NHWC, fp16 and fp16 uint8 (export/to_onnx.py)."""
    import contextlib
    import io

    from export.to_onnx import main as export

    out = tmp_path_factory.mktemp("variants") / "c.onnx"
    args = [str(CHECKPOINT), "-o", str(out), "--precision", "both", "--io", "both", "--halo", "8"]
    with contextlib.redirect_stdout(io.StringIO()) as log:
        assert export([*args, "--exporter", "torchscript"]) == 0, log.getvalue()
    names = {"fp32": "c.onnx", "uint8": "c.uint8.onnx", "fp16": "c.fp16.onnx", "fp16-uint8": "c.fp16.uint8.onnx"}
    return {k: out.with_name(v) for k, v in names.items()}


def _parity(model: Path, reference, precision: str) -> dict:
    from benchmarks.parity import Thresholds, run_parity

    with Upscaler(model, backend=OpenVino(threads=2, cache=False), tile=64) as tiled:
        with Upscaler(backend=tiled.backend, tile=160) as whole:
            assert whole.halo == tiled.halo
            ups = {"whole": whole, "tiled": tiled}
            return run_parity(
                lambda im, mode: ups[mode].upscale(im),
                reference(tiled.halo),
                _photos(),
                Thresholds.for_precision(precision),
            )


@pytest.mark.slow
def test_bundled_fp32_matches_pytorch_at_80_db(torch_reference) -> None:
    result = _parity(BUNDLED, torch_reference, "fp32")
    assert result["passed"], result["failures"]
    assert len(result["rows"]) == 2 * len(_photos())
    assert min(r["psnr"] for r in result["rows"]) >= 80


@pytest.mark.slow
def test_fp16_graph_passes_the_fp16_floor(variants: dict[str, Path], torch_reference) -> None:
    result = _parity(variants["fp16"], torch_reference, "fp16")
    assert result["passed"], result["failures"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["uint8", "fp16-uint8"])
def test_uint8_nhwc_within_one_level_of_pytorch(variants: dict[str, Path], torch_reference, name: str) -> None:
    """uint8 output is rounded in the graph: within one level of PyTorch fp32 rounded, and of ONNX Runtime."""
    worst = 0
    for _, image in _photos():
        u8 = image.astype(np.uint8)
        with Upscaler(variants[name], backend=OpenVino(threads=2, cache=False), tile=64) as up:
            got = up.upscale(u8).astype(np.int16)
            want = np.clip(np.rint(torch_reference(up.halo)(image)), 0, 255)
        with Upscaler(variants[name], backend=OnnxRuntime(threads=2), tile=64) as up:
            ort = up.upscale(u8).astype(np.int16)
        worst = max(worst, int(np.abs(got - want).max()), int(np.abs(got - ort).max()))
        assert np.mean(got != want) < (0.01 if name == "uint8" else 0.05)
    assert worst <= 1


@pytest.mark.slow
def test_int8_variant_of_the_bundled_model_passes_the_gate_on_openvino(tmp_path: Path, photos_dir: Path) -> None:
    """The bundled model quantized with the gated recipe (ModelOpt entropy, float residuals,
    the four layers the default auto-keep keeps) passes the calibration gate's floors when
    OpenVINO runs it: worst photo >= 40 dB vs float32, mean PSNR-Y loss <= 0.3 dB."""
    from calibration.cli import main as calibrate
    from calibration.collect import load_rgb
    from calibration.gate import DEFAULT_MAX_LOSS, DEFAULT_MIN_PSNR
    from runtime.imresize import imresize

    data, q = tmp_path / "calib.npz", tmp_path / "compact.int8.onnx"
    collect = ["collect", "--images", str(photos_dir / "train"), "-o", str(data), "--model", str(BUNDLED)]
    assert calibrate([*collect, "--samples", "16", "--tile", "56", "--halo", "8", "--flips"]) == 0
    keep = ["node_conv2d_46$", "node_conv2d_21$", "node_conv2d_24$", "node_conv2d$"]
    quantize = ["quantize", str(BUNDLED), "--data", str(data), "-o", str(q), "--no-auto-keep", "--no-gate"]
    assert calibrate([*quantize, "--no-progress", "--keep-fp", *keep]) == 0
    rows = []
    with (
        Upscaler(BUNDLED, backend=OpenVino(threads=2, cache=False), tile=128) as fp32,
        Upscaler(q, backend=OpenVino(threads=2, cache=False), tile=128) as int8,
    ):
        # INT8 kernels report their activation type: i8 on the Xeons measured here, u8 on an EPYC
        assert any(
            k == "Convolution" and p in ("i8", "u8") for k, p in int8.backend.kernel_precisions((1, 3, 144, 144))
        )
        for path in sorted(PHOTOS.glob("*.png")):
            hr = load_rgb(path)
            hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
            lr = np.ascontiguousarray(imresize(hr, 0.25), np.float32)
            a, b = fp32.upscale(lr).astype(np.float64), int8.upscale(lr).astype(np.float64)
            assert np.isfinite(b).all()
            rows.append((psnr(b, a), psnr_y(a, hr, border=4), psnr_y(b, hr, border=4)))
    worst = min(r[0] for r in rows)
    loss = float(np.mean([r[1] for r in rows]) - np.mean([r[2] for r in rows]))
    assert worst >= DEFAULT_MIN_PSNR and loss <= DEFAULT_MAX_LOSS, (worst, loss, rows)


def test_auto_windows_count_openvinos_leaner_activations() -> None:
    """Same budget, same bundled model: OpenVINO's windows may hold ~1.7× ONNX Runtime's pixels
    (2 live feature maps instead of 4, measured ~1.4 in its whole-image peaks)."""
    budget = 100.0
    with (
        Upscaler(backend="openvino", memory_budget_mb=budget) as ov,
        Upscaler(backend="onnxruntime", memory_budget_mb=budget) as ort,
    ):
        ov_per_pixel = 4 * 32 * 4 * 4 * 2 + 2048  # compact: 32 features, ×4, 2 tensors + the I/O copies
        ort_per_pixel = 4 * 32 * 4 * 4 * 4 + 2048
        assert f"windows <= {int(budget * 1e6) // ov_per_pixel} px" in repr(ov)
        assert f"windows <= {int(budget * 1e6) // ort_per_pixel} px" in repr(ort)
        assert len(ov.plan(270, 480)) < len(ort.plan(270, 480))

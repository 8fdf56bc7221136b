"""FP16 ONNX export (export/fp16.py, to_onnx.py --precision): float16 inside, the I/O
contract unchanged, checked against float32 on photo crops (ONNX Runtime CPU and the
fp16-rounding twin), the refusal when the check fails, uint8 within one level of the
float graph, metadata, runtime.Upscaler, and the activation-range tool.

The tiny model is "tamed": with the random Glorot init the residual modules' convs make
activations grow to ±4000 at the output, a range no trained model has, and fp16's
relative error then exceeds 60 dB of a 255 peak (that model is kept as a natural
negative control). Halving those convs gives outputs of about -140..370 on photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from export import to_onnx
from export import validate as export_validate
from export.fp16 import FP16_MAX, HalfPrecisionPath, check_precision, emulate_fp16, graph_precision
from export.onnx_io import METADATA_KEY, ModelIO, Precision, export_paths, read_metadata
from export.to_onnx import (
    CASES,
    ExportError,
    ExportValidationError,
    build_onnx,
    cross_check_io,
    export_onnx,
    main,
    validate_onnx,
)
from runtime.metrics import psnr, quantize
from runtime.model_info import parse_metadata
from train.checkpoint import load_model, save_checkpoint
from train.models.eusr import ResidualModule, build_eusr

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "data" / "photos" / "test"
BUNDLED = REPO / "models" / "eusr-compact.safetensors"
FLOAT, UINT8 = ModelIO.FLOAT32_NCHW, ModelIO.UINT8_NHWC
FP32, FP16 = Precision.FP32, Precision.FP16
PHOTO_CASES = tuple(c for c in CASES if c[4] == "photo")

needs_photos = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"{PHOTOS} is missing")


def _tiny(tame: bool = True):
    torch.manual_seed(0)
    model = build_eusr("tiny")
    if tame:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, ResidualModule):
                    m.conv.weight *= 0.5
    return model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = _tiny()
    path = tmp_path_factory.mktemp("ckpt") / "tame.safetensors"
    return save_checkpoint(path, model, config=model.config.to_dict(), config_name="tiny")


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt).eval()


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    """All four variants through the CLI (TorchScript exporter: the fastest here; the
    dynamo exporter is exercised on the bundled model below), validated by the CLI."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([str(ckpt), "-o", str(out), "--precision", "both", "--io", "both", "--exporter", "torchscript"])
    assert rc == 0, buf.getvalue()
    return export_paths(out, [FLOAT, UINT8], [FP32, FP16]), buf.getvalue()


def _session(model) -> ort.InferenceSession:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _photo_batch(n: int, h: int, w: int) -> np.ndarray:
    """uint8 NHWC crops from the first n test photos (gray replicated)."""
    from PIL import Image

    crops = []
    for f in sorted(PHOTOS.glob("*.png"))[:n]:
        with Image.open(f) as im:
            a = np.asarray(im.convert("RGB"))
        y, x = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
        crops.append(a[y : y + h, x : x + w])
    return np.stack(crops)


def _nchw(x8: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x8.transpose(0, 3, 1, 2).astype(np.float32))


# --------------------------------------------------------------------------- files, graph


@pytest.mark.slow
def test_cli_writes_four_named_files_after_all_checks(exported):
    paths, stdout = exported
    names = sorted(p.name for p in next(iter(paths.values())).parent.iterdir())
    assert names == ["m.fp16.onnx", "m.fp16.uint8.onnx", "m.onnx", "m.uint8.onnx"]  # no temp files
    assert stdout.count("validation passed") == 4 and stdout.count("cross-check passed") == 2
    assert "[fp16-rounded]" in stdout and "FAIL" not in stdout
    assert "validation x4 float32-nchw fp16 (ONNX Runtime CPU vs PyTorch float32" in stdout
    if PHOTOS.is_dir():
        assert "photo b3 24x31" in stdout


def test_export_paths_naming(tmp_path):
    one = export_paths(tmp_path / "m.onnx", [FLOAT, UINT8], [FP16])
    assert one == {(FP16, FLOAT): tmp_path / "m.onnx", (FP16, UINT8): tmp_path / "m.uint8.onnx"}
    assert export_paths(tmp_path / "m.onnx", ["uint8-nhwc"], ["fp16"]) == {(FP16, UINT8): tmp_path / "m.onnx"}
    both = export_paths(tmp_path / "m", ["float32-nchw"], ["fp32", "fp16"])
    assert both == {(FP32, FLOAT): tmp_path / "m", (FP16, FLOAT): tmp_path / "m.fp16.onnx"}


def _types(proto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(proto, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


@pytest.mark.slow
@pytest.mark.parametrize("io", [FLOAT, UINT8])
def test_fp16_graph_computes_in_float16_with_float32_edges(exported, io):
    proto = onnx.load(str(exported[0][(FP16, io)]))
    g = proto.graph
    elem = TensorProto.FLOAT if io is FLOAT else TensorProto.UINT8
    assert [(v.name, v.type.tensor_type.elem_type) for v in g.input] == [("lr", elem)]
    assert [(v.name, v.type.tensor_type.elem_type) for v in g.output] == [("sr", elem)]
    assert check_precision(proto, "fp16") == []
    info = graph_precision(proto)
    assert set(info["conv_weights"]) == {"FLOAT16"} and info["float_initializers"].get("FLOAT16", 0) > 0

    types = _types(proto)
    producer = {o: n for n in g.node for o in n.output}
    to = {n.name: next(a.i for a in n.attribute if a.name == "to") for n in g.node if n.op_type == "Cast"}
    to16 = [n for n in g.node if n.op_type == "Cast" and to[n.name] == TensorProto.FLOAT16]
    back = [
        n
        for n in g.node
        if n.op_type == "Cast" and to[n.name] == TensorProto.FLOAT and types[n.input[0]] == TensorProto.FLOAT16
    ]
    # One cast into fp16, after the mean subtraction done in float32 ...
    assert len(to16) == 1 and len(back) == 1
    sub = producer[to16[0].input[0]]
    assert sub.op_type == "Sub" and types[sub.output[0]] == TensorProto.FLOAT
    # ... and one back, before the mean is added in float32 (and before any rounding).
    add = next(n for n in g.node if back[0].output[0] in n.input)
    assert add.op_type == "Add" and types[add.output[0]] == TensorProto.FLOAT
    assert producer[back[0].input[0]].op_type == "Conv"
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in g.node if n.op_type == "Conv")
    if io is UINT8:
        rnd = next(n for n in g.node if n.op_type == "Round")
        assert types[rnd.input[0]] == TensorProto.FLOAT


@pytest.mark.slow
def test_fp32_graph_has_no_float16(exported):
    proto = onnx.load(str(exported[0][(FP32, FLOAT)]))
    assert check_precision(proto, "fp32") == []
    assert check_precision(proto, "fp16")  # and is not taken for an fp16 graph
    with pytest.raises(ExportValidationError, match="not what --precision fp16 asks"):
        validate_onnx(proto, build_eusr("tiny"), precision="fp16")


@pytest.mark.slow
@pytest.mark.parametrize("io", [FLOAT, UINT8])
def test_metadata_records_precision_and_runtime_reads_it(exported, io):
    proto = onnx.load(str(exported[0][(FP16, io)]))
    meta = read_metadata(proto)
    assert meta["precision"] == "fp16" and meta["format"] == 1 and meta["io"] == io.value
    assert "float16" in proto.doc_string and proto.graph.name.endswith("_fp16")
    info = parse_metadata(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY), model="m")
    assert (info.io, info.scale, info.metadata["precision"]) == (io, 4, "fp16")
    # float32 files carry no precision key: absent means float32, as in every older file.
    assert "precision" not in read_metadata(exported[0][(FP32, io)])


# --------------------------------------------------------------------------- accuracy


@pytest.mark.slow
def test_half_path_in_float32_is_the_eusr_path(model):
    """HalfPrecisionPath mirrors EUSR.forward; in float32 it must equal it exactly."""
    x = torch.rand(2, 3, 9, 11) * 255
    with torch.inference_mode():
        assert torch.equal(HalfPrecisionPath(model, 4, torch.float32)(x), model.path(4)(x))
        y16 = HalfPrecisionPath(model, 4)(x)
    assert y16.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32  # caller's model untouched


@pytest.mark.slow
@needs_photos
def test_fp16_vs_float32_on_photo_crops(exported, model):
    x8 = _photo_batch(3, 29, 35)
    xf = _nchw(x8)
    ref = _session(exported[0][(FP32, FLOAT)]).run(["sr"], {"lr": xf})[0]
    fp16 = onnx.load(str(exported[0][(FP16, FLOAT)]))
    for name, graph in (("ORT", fp16), ("fp16-rounded", emulate_fp16(fp16))):
        got = _session(graph).run(["sr"], {"lr": xf})[0]
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.isfinite(got).all(), name
        assert psnr(got, ref) >= to_onnx.MIN_PSNR_FP16_DB, (name, psnr(got, ref))
        assert psnr(got, ref) < 200  # really computed differently from float32


@pytest.mark.slow
def test_emulated_twin_matches_pytorch_half(model):
    """The twin rounds like PyTorch's float16 CPU path: much closer to it than to float32."""
    proto = build_onnx(model, precision="fp16", exporter="torchscript")
    x = torch.rand(1, 3, 12, 14, generator=torch.Generator().manual_seed(3)) * 255
    with torch.inference_mode():
        ref32 = model.path(4)(x).numpy()
        ref16 = HalfPrecisionPath(model, 4)(x).numpy()
    twin = _session(emulate_fp16(proto)).run(["sr"], {"lr": x.numpy()})[0]
    assert psnr(twin, ref16) > psnr(twin, ref32) + 10, (psnr(twin, ref16), psnr(twin, ref32))


@pytest.mark.slow
def test_emulated_twin_overflows_like_float16(tmp_path):
    """Values past 65504 become inf in the twin (ORT CPU's upcast fp16 graph would not show it)."""
    model = _tiny()
    with torch.no_grad():
        model.first.weight *= 400.0  # first-layer activations ~1e5 > 65504
    proto = build_onnx(model, precision="fp16", exporter="torchscript")
    x = np.full((1, 3, 6, 7), 250.0, np.float32)
    twin = _session(emulate_fp16(proto)).run(["sr"], {"lr": x})[0]
    assert not np.isfinite(twin).all()
    report = validate_onnx(proto, model, cases=CASES[:1])
    assert not report.passed and any("NaN or Inf" in c.why for c in report.failures)


@pytest.mark.slow
@needs_photos
@pytest.mark.parametrize("precision", [FP32, FP16])
def test_uint8_graph_within_one_level_of_float_graph(exported, precision):
    paths = exported[0]
    report = cross_check_io(paths[(precision, FLOAT)], paths[(precision, UINT8)], images=PHOTOS)
    assert report.passed and len(report.cases) == len(CASES), report.table()
    x8 = _photo_batch(2, 31, 27)
    yf = _session(paths[(precision, FLOAT)]).run(["sr"], {"lr": _nchw(x8)})[0]
    y8 = _session(paths[(precision, UINT8)]).run(["sr"], {"lr": x8})[0]
    diff = np.abs(y8.astype(int) - quantize(yf).transpose(0, 2, 3, 1).astype(int))
    assert y8.dtype == np.uint8 and diff.max() <= 1


@pytest.mark.slow
def test_cross_check_catches_a_uint8_graph_off_by_more(exported):
    """Negative control: a uint8 graph whose output conv bias is shifted by 3 levels."""
    paths = exported[0]
    bad = onnx.load(str(paths[(FP16, UINT8)]))
    init = next(
        t
        for t in bad.graph.initializer
        if onnx.numpy_helper.to_array(t).shape == (3,) and t.data_type == TensorProto.FLOAT16
    )
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) + np.float16(3), init.name))
    report = cross_check_io(paths[(FP16, FLOAT)], bad, cases=CASES[:2])
    assert not report.passed and "levels > 1" in report.failures[0].why


# --------------------------------------------------------------------------- refusals


@pytest.mark.slow
@needs_photos
def test_exporter_refuses_when_the_fp16_check_fails(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export_validate, "MIN_PSNR_FP16_DB", 500.0)  # read when the check runs
    out = tmp_path / "out" / "m.onnx"
    rc = main([str(ckpt), "-o", str(out), "--precision", "fp16", "--exporter", "torchscript", "--images", str(PHOTOS)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "float32-nchw fp16: validation failed" in err and "< 500 dB" in err and "nothing written" in err
    assert list(out.parent.iterdir()) == []


@pytest.mark.slow
def test_untamed_random_model_fails_the_fp16_check():
    """Natural negative control: outputs of ±4000 lose more than 60 dB in fp16."""
    model = _tiny(tame=False)
    proto = build_onnx(model, precision="fp16", exporter="torchscript")
    report = validate_onnx(proto, model, cases=CASES[:2])
    assert not report.passed and all("PSNR" in c.why for c in report.failures)


def test_bad_precision_is_refused(model, tmp_path, capsys):
    with pytest.raises(ExportError, match="precision must be one of"):
        export_onnx(model, tmp_path / "a.onnx", precision="fp8")
    with pytest.raises(SystemExit) as exc:
        main(["x.safetensors", "-o", str(tmp_path / "a.onnx"), "--precision", "int4"])
    assert exc.value.code == 2 and "--precision" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- runtime, bundled model


@pytest.mark.slow
@needs_photos
def test_upscaler_runs_the_fp16_model(exported):
    from runtime import Upscaler

    x8 = _photo_batch(1, 23, 30)[0]
    outs = {}
    for key in ((FP32, FLOAT), (FP16, FLOAT), (FP16, UINT8)):
        with Upscaler(exported[0][key], backend="onnxruntime", tile=16, halo=4) as up:
            outs[key] = up.upscale(x8)
    assert all(o.shape == (92, 120, 3) and o.dtype == np.uint8 for o in outs.values())
    for key in ((FP16, FLOAT), (FP16, UINT8)):
        assert np.abs(outs[key].astype(int) - outs[(FP32, FLOAT)].astype(int)).max() <= 1, key


@pytest.mark.slow
@needs_photos
@pytest.mark.skipif(not BUNDLED.is_file(), reason=f"{BUNDLED} is missing")
def test_bundled_model_fp16_dynamo_on_a_photo_crop():
    """The trained compact model through the default (dynamo) exporter."""
    model = load_model(BUNDLED)
    proto = build_onnx(model, precision="fp16")
    report = validate_onnx(proto, model, images=PHOTOS, cases=(("photo", 1, 28, 36, "photo"),))
    assert report.passed and len(report.cases) == 2, report.table()
    assert all(c.psnr_db >= to_onnx.MIN_PSNR_FP16_DB for c in report.cases)
    assert graph_precision(proto) == {
        "conv_weights": {"FLOAT16": 47},
        "float_initializers": {"FLOAT": 1, "FLOAT16": 94},
        "casts": 2,
    }


# --------------------------------------------------------------------------- activation range


def test_activation_range_on_a_photo(tmp_path):
    from export.activation_range import INPUT_LAYER, measure, path_modules
    from export.activation_range import main as ar_main

    model = _tiny()
    img = tmp_path / "img" / "a.png"
    img.parent.mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(img)
    result = measure(model, [img])
    names = [layer.name for layer in result.layers]
    assert names[0] == INPUT_LAYER and set(names[1:]) == {n for n, _ in path_modules(model, 4)}
    assert not any(n.startswith(("upscalers.2", "upscalers.8", "outputs.2")) for n in names)
    # Cross-check two entries by hand.
    x = torch.from_numpy(np.asarray(Image.open(img)).transpose(2, 0, 1).copy())[None].float()
    with torch.inference_mode():
        first = model.first(x - model.rgb_mean).abs().max().item()
    got = {layer.name: layer.max_abs for layer in result.layers}
    assert got["first"] == pytest.approx(first, rel=1e-6)
    assert got[INPUT_LAYER] == pytest.approx((x - model.rgb_mean).abs().max().item())
    assert result.overall.max_abs == max(got.values())
    assert result.margin == pytest.approx(FP16_MAX / result.overall.max_abs)
    assert result.images[0]["image"] == "a.png" and result.images[0]["size"] == [24, 20]

    ckpt = save_checkpoint(tmp_path / "t.safetensors", model, config=model.config.to_dict(), config_name="tiny")
    out = tmp_path / "res"
    assert ar_main([str(ckpt), "--data", str(img.parent), "--out", str(out), "--threads", "1", "--allow-dirty"]) == 0
    data = json.loads((out / "activation_range.json").read_text())
    assert data["overall"]["max_abs"] == pytest.approx(result.overall.max_abs, rel=1e-6)
    assert data["environment"]["versions"]["torch"] and data["model"]["config_name"] == "tiny"
    assert "FP16 overflow margin" in (out / "activation_range.md").read_text()
    assert ar_main([str(ckpt), "--data", str(tmp_path / "nope")]) == 2
    assert ar_main([str(tmp_path / "missing.safetensors"), "--data", str(img.parent)]) == 2


@pytest.mark.slow
@needs_photos
def test_fp16_benchmark_script(exported, tmp_path):
    from PIL import Image

    from benchmarks import fp16_onnx

    crop = tmp_path / "coins_crop.png"
    with Image.open(PHOTOS / "coins.png") as im:
        im.crop((100, 80, 164, 128)).save(crop)
    out = tmp_path / "res"
    rc = fp16_onnx.main(
        [str(crop), "--models", str(exported[0][(FP32, FLOAT)]), "--out", str(out), "--threads", "1", "--allow-dirty"]
    )
    data = json.loads((out / "fp16_onnx.json").read_text())
    assert rc == 0 and data["passed"] and len(data["rows"]) == 1
    row = data["rows"][0]
    assert row["fp16"]["nonfinite"] == 0 and row["fp16_rounded"]["psnr"] >= 60
    assert row["uint8_fp16"]["max_diff"] <= 1
    assert fp16_onnx.main(["--models", str(tmp_path / "none.onnx"), "--out", str(out), "--allow-dirty"]) == 2

"""The export package's seams: one Precision, one exception root, ExportOptions, the names
the split modules re-export, and the imports each entry point must not pull in."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import export.engine_cache
import export.onnx_facts
import export.onnx_io
import export.to_onnx
import export.to_trt
from export import errors
from export.options import ExportOptions
from runtime.errors import UpscaleError
from runtime.layout import ModelIO as LayoutIO
from runtime.layout import Precision

REPO = Path(__file__).resolve().parents[1]


def test_one_precision_enum_everywhere() -> None:
    assert export.onnx_io.Precision is Precision
    assert export.engine_cache.Precision is Precision
    assert export.to_trt.Precision is Precision
    assert [p.value for p in Precision] == ["fp32", "fp16", "int8"]  # cache keys hold these strings
    assert export.onnx_io.EXPORT_PRECISIONS == (Precision.FP32, Precision.FP16)


def test_exporter_refuses_int8_saying_what_to_do(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="int8 is not made by the ONNX exporter.*calibration quantize"):
        export.onnx_io.parse_precision("int8")
    with pytest.raises(errors.ExportError, match="int8 is not made by the ONNX exporter"):
        ExportOptions(precisions=("int8",))
    with pytest.raises(errors.ExportError, match="int8"):
        export.to_onnx.export_onnx(tmp_path / "none.safetensors", tmp_path / "a.onnx", precision="int8")
    with pytest.raises(SystemExit) as exc:
        export.to_onnx.main(["x.safetensors", "-o", str(tmp_path / "a.onnx"), "--precision", "int8"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--precision" in err and "calibration quantize" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "cls, bases",
    [
        (errors.ExportError, ()),
        (errors.ExporterFailure, (errors.ExportError,)),
        (errors.ExportValidationError, (errors.ExportError,)),
        (errors.BuildOptionsError, (ValueError,)),
        (errors.TrtBuildError, ()),
        (errors.BuildInputError, (errors.TrtBuildError,)),
        (errors.TrtUnavailableError, (errors.TrtBuildError,)),
        (errors.OnnxParseError, (errors.TrtBuildError,)),
        (errors.EngineBuildError, (errors.TrtBuildError,)),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_errors_share_the_project_root(cls: type, bases: tuple[type, ...]) -> None:
    assert issubclass(cls, UpscaleError) and all(issubclass(cls, b) for b in bases)


def test_split_modules_keep_the_old_import_paths() -> None:
    assert export.to_trt.inspect_onnx is export.onnx_facts.inspect_onnx
    assert export.to_trt.OnnxFacts is export.onnx_facts.OnnxFacts
    assert export.to_trt.check_precision is export.onnx_facts.check_precision
    assert export.to_trt.BuildInputError is errors.BuildInputError
    assert export.engine_cache.BuildOptionsError is errors.BuildOptionsError
    for name in export.to_onnx.__all__:
        assert hasattr(export.to_onnx, name), name
    for name in export.to_trt.__all__:
        assert hasattr(export.to_trt, name), name


def test_export_options_normalise_check_and_derive(tmp_path) -> None:
    opts = ExportOptions(ios="uint8-nhwc", precisions=["fp16", "fp16"], images=str(tmp_path))
    assert opts.ios == (LayoutIO.UINT8_NHWC,) and opts.precisions == (Precision.FP16,)
    assert opts.images == tmp_path
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.scale = 2  # type: ignore[misc]
    derived = opts.replace(scale=2, ios=("float32-nchw", "uint8-nhwc"))
    assert (derived.scale, len(derived.ios), derived.precisions) == (2, 2, (Precision.FP16,))
    assert opts.scale == 4  # the original is untouched
    with pytest.raises(TypeError, match=r"unknown export options \['sclae'\]"):
        opts.replace(sclae=2)
    for bad, text in [
        (dict(opset=16), "opset must be an integer >= 17, got 16"),
        (dict(halo=-1), "halo must be an integer >= 0, got -1"),
        (dict(exporter="fx"), "exporter must be one of ['dynamo', 'torchscript'], got 'fx'"),
        (dict(ios=()), "nothing to export"),
        (dict(io="x"), None),
    ]:
        if text is None:
            with pytest.raises(TypeError):
                ExportOptions(**bad)
            continue
        with pytest.raises(errors.ExportError) as info:
            ExportOptions(**bad)
        assert text in str(info.value)


@pytest.mark.slow
def test_builder_and_tools_import_neither_torch_nor_benchmarks() -> None:
    """to_trt runs on GPU machines without torch; export never depends on benchmarks."""
    code = (
        "import sys, export.to_trt, export.engine_cache, export.onnx_facts\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "import export.activation_range, export.to_onnx\n"
        "bad = [m for m in sys.modules if m == 'benchmarks' or m.startswith('benchmarks.')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "script",  # to_onnx and activation_range import torch and onnx before parsing: > 2 s each
    [
        pytest.param("export/to_onnx.py", marks=pytest.mark.slow),
        "export/to_trt.py",
        pytest.param("export/activation_range.py", marks=pytest.mark.slow),
    ],
)
def test_scripts_show_help(script: str) -> None:
    proc = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


def test_entry_points_take_options_and_keyword_changes(tmp_path) -> None:
    """The options object is passed down; keywords change it; io/precision pick one variant."""
    from train.models.eusr import build_eusr

    model = build_eusr("tiny")
    opts = ExportOptions(ios=("uint8-nhwc",), exporter="torchscript", validate=False)
    proto = export.to_onnx.build_onnx(model, opts, scale=2)
    assert proto.graph.name == "eusr_x2_uint8_nhwc"
    proto = export.to_onnx.build_onnx(model, opts, io="float32-nchw", precision="fp16")
    assert proto.graph.name == "eusr_x4_float32_nchw_fp16"
    out = export.to_onnx.export_onnx(model, tmp_path / "m.onnx", opts, halo=3)
    meta = export.onnx_io.read_metadata(out)
    assert (meta["io"], meta["recommended_halo"], meta["exporter"]["method"]) == ("uint8-nhwc", 3, "torchscript")
    paths = export.to_onnx.export_onnx_variants(model, tmp_path / "v.onnx", opts.replace(ios=tuple(LayoutIO)))
    assert sorted(p.name for p in paths.values()) == ["v.onnx", "v.uint8.onnx"]

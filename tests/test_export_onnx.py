"""export/to_onnx.py: both I/O variants, dynamic shapes, metadata, validation (and its
negative controls), script-mode CLI, errors. Tiny config; exports are shared per module."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import to_onnx
from export import write as export_write
from export.onnx_io import METADATA_KEY, ModelIO, read_metadata, variant_paths
from export.to_onnx import (
    DEFAULT_HALO,
    ExportError,
    ExportValidationError,
    export_onnx,
    main,
    validate_onnx,
)
from runtime.metrics import quantize
from runtime.model_info import parse_metadata
from train.checkpoint import CheckpointError, file_sha256, load_model, save_checkpoint
from train.models.eusr import build_eusr

REPO = Path(__file__).resolve().parents[1]
FLOAT, UINT8 = ModelIO.FLOAT32_NCHW, ModelIO.UINT8_NHWC


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_eusr("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, model, config=model.config.to_dict(), config_name="tiny")


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt)


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    """Both variants of the ×4 path, through the CLI run as a script from the repository
    root without PYTHONPATH (the way the README calls it); validated by the CLI itself."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "export/to_onnx.py", str(ckpt), "-o", str(out), "--io", "both"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {FLOAT: out, UINT8: out.with_name("model.uint8.onnx")}, proc.stdout


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["sr"], {"lr": x})[0]


@pytest.mark.slow
def test_cli_both_variants_named_written_and_validated(exported):
    paths, stdout = exported
    out = paths[FLOAT]
    assert paths == variant_paths(out, ["float32-nchw", "uint8-nhwc"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.uint8.onnx"]  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert stdout.count("validation passed") == 2 and "FAIL" not in stdout
    assert "random b1 17x23" in stdout and f"wrote {out}" in stdout and f"wrote {paths[UINT8]}" in stdout
    if (REPO / "data/photos/test").is_dir():
        assert "photo b3 24x31" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("io", [FLOAT, UINT8])
def test_metadata(exported, ckpt, model, io):
    path = exported[0][io]
    proto = onnx.load(str(path))
    meta = read_metadata(proto)
    assert set(meta) == {
        "format",
        "scale",
        "io",
        "input",
        "output",
        "value_range",
        "config_name",
        "config",
        "checkpoint_sha256",
        "recommended_halo",
        "exporter",
    }
    assert meta["format"] == 1 and meta["scale"] == 4 and meta["io"] == io.value
    assert (meta["input"], meta["output"], meta["value_range"]) == ("lr", "sr", [0, 255])
    assert meta["config_name"] == "tiny"
    assert meta["config"] == json.loads(json.dumps(model.config.to_dict()))
    assert meta["checkpoint_sha256"] == file_sha256(ckpt)
    assert meta["recommended_halo"] == DEFAULT_HALO
    assert meta["exporter"]["torch"] == torch.__version__
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert meta["exporter"]["opset"] == opset >= 17
    assert proto.producer_name.startswith("fourpp-eusr") and "x4" in proto.doc_string
    # The runtime's parser reads exactly this key.
    info = parse_metadata(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY), model=str(path))
    got = (info.io, info.scale, info.input_name, info.output_name, info.recommended_halo)
    assert got == (io, 4, "lr", "sr", DEFAULT_HALO)
    # No per-node debug annotations (stack traces with local paths).
    assert not any(len(n.metadata_props) for n in proto.graph.node)


@pytest.mark.slow
@pytest.mark.parametrize("io", [FLOAT, UINT8])
@pytest.mark.parametrize("n,h,w", [(1, 17, 23), (3, 9, 30), (1, 1, 1)])
def test_dynamic_shapes(exported, model, io, n, h, w):
    path = exported[0][io]
    graph = onnx.load(str(path)).graph
    dims = [d for d in graph.input[0].type.tensor_type.shape.dim]
    dynamic = [True, False, True, True] if io is FLOAT else [True, True, True, False]
    assert [d.HasField("dim_param") for d in dims] == dynamic
    rng = np.random.default_rng(n * 1000 + h * 10 + w)
    x8 = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    xf = np.ascontiguousarray(x8.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.inference_mode():
        ref = model.path(4)(torch.from_numpy(xf)).numpy()
    if io is FLOAT:
        got = _run(path, xf)
        assert got.shape == (n, 3, 4 * h, 4 * w) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=0.05, rtol=0)
    else:
        got = _run(path, x8)
        assert got.shape == (n, 4 * h, 4 * w, 3) and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - quantize(ref).transpose(0, 2, 3, 1).astype(int))
        assert diff.max() <= 1, f"max diff {diff.max()}"


@pytest.mark.slow
def test_validate_passes_with_photos(exported, model):
    report = validate_onnx(exported[0][FLOAT], model)
    assert report.passed, report.table()
    names = [c.name for c in report.cases]
    have_photos = (REPO / "data/photos/test").is_dir()
    assert len(names) == 4 and sum(n.startswith("photo") for n in names) == (2 if have_photos else 0)
    assert {c.input_shape for c in report.cases} >= {(1, 3, 17, 23), (3, 3, 11, 13)}


@pytest.mark.slow
@pytest.mark.parametrize("io,delta", [(FLOAT, 0.1), (UINT8, 3.0)])
def test_validate_fails_against_a_wrong_reference(exported, model, io, delta):
    """Negative control: the comparison must notice a reference that differs slightly."""
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.outputs["4"].bias += delta
    report = validate_onnx(exported[0][io], wrong, cases=to_onnx.CASES[:2])
    assert not report.passed
    assert len(report.failures) == 2
    assert "max abs err" in report.failures[0].why and "FAIL" in report.table()


@pytest.mark.slow
def test_export_writes_nothing_when_validation_fails(exported, model, tmp_path, monkeypatch, capsys):
    """Negative control through the whole CLI: a corrupted initializer in the exported
    graph makes validation fail, exit 1, and leaves nothing at -o."""
    good = onnx.load(str(exported[0][FLOAT]))

    def corrupted_build(*args, **kwargs):
        proto = copy.deepcopy(good)
        init = next(t for t in proto.graph.initializer if t.name.endswith("first.weight"))
        arr = onnx.numpy_helper.to_array(init) * 1.05
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        return proto

    monkeypatch.setattr(export_write, "build_graph", corrupted_build)
    with pytest.raises(ExportValidationError) as exc:
        export_onnx(model, tmp_path / "bad.onnx")
    assert exc.value.report is not None and not exc.value.report.passed
    ckpt_path = tmp_path / "m.safetensors"
    save_checkpoint(ckpt_path, model, config=model.config.to_dict(), config_name="tiny")
    assert main([str(ckpt_path), "-o", str(tmp_path / "bad.onnx"), "--images", str(REPO / "data/photos/test")]) == 1
    err = capsys.readouterr().err
    assert "validation failed" in err and "PSNR" in err and "nothing written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.slow
def test_static_graph_is_rejected(exported, model):
    proto = onnx.load(str(exported[0][FLOAT]))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 17
    with pytest.raises(ExportValidationError, match="dynamic|checker"):
        validate_onnx(proto, model)


def test_function_api_torchscript_scale2_opset17_uint8(model, tmp_path):
    lines: list[str] = []
    out = export_onnx(
        model,
        tmp_path / "x2.onnx",
        scale=2,
        io="uint8-nhwc",
        exporter="torchscript",
        opset=17,
        halo=5,
        echo=lines.append,
    )
    assert out == tmp_path / "x2.onnx" and "validation passed" in "\n".join(lines)
    meta = read_metadata(out)
    assert (meta["scale"], meta["io"], meta["recommended_halo"], meta["checkpoint_sha256"]) == (
        2,
        "uint8-nhwc",
        5,
        None,
    )
    assert meta["config_name"] == "tiny" and meta["exporter"]["opset"] == 17
    assert _run(out, np.zeros((3, 5, 7, 3), np.uint8)).shape == (3, 10, 14, 3)


def test_cli_errors(tmp_path, ckpt, capsys):
    missing = tmp_path / "nope.safetensors"
    assert main([str(missing), "-o", str(tmp_path / "a.onnx")]) == 2
    assert f"error: {missing}: no such checkpoint file" in capsys.readouterr().err

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    assert main([str(garbage), "-o", str(tmp_path / "a.onnx")]) == 2
    assert "error:" in capsys.readouterr().err

    m = build_eusr("tiny", scales=(2, 4))
    two = save_checkpoint(tmp_path / "two.safetensors", m, config=m.config.to_dict(), config_name="custom")
    assert main([str(two), "-o", str(tmp_path / "a.onnx"), "--scale", "8"]) == 2
    assert "scale 8 is not a path of this model; it has scales [2, 4]" in capsys.readouterr().err

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(ckpt), "-o", str(blocker / "a.onnx")]) == 2
    assert "cannot write the output there" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "garbage.safetensors", "two.safetensors"]


def test_function_api_errors(model, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        export_onnx(tmp_path / "missing.safetensors", tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="scale 3"):
        export_onnx(model, tmp_path / "a.onnx", scale=3)
    with pytest.raises(ExportError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=13)
    assert not (tmp_path / "a.onnx").exists()

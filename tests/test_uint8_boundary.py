"""uint8 only at the edges (export/uint8_boundary.py, issue 14 point 1): the checker on
hand-built graphs (and its negative control, the old exporter's Cast(UINT8) -> Transpose
ending), the refusal in export/to_trt.py before TensorRT is touched, and the real exporter's
uint8 graphs (fp32, fp16 and an INT8 Q/DQ graph made from one) walked tensor by tensor and
compared with the float graph on the held-out photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import BuildInputError
from export.uint8_boundary import inner_uint8_tensors, main, seal_uint8_input, uint8_findings
from tests.trt_kit.onnx_models import write_onnx

REPO = Path(__file__).resolve().parents[1]
TEST_PHOTOS = REPO / "data" / "photos" / "test"


def _model(nodes: list, *, inits: list | None = None, value_info: list | None = None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("lr", TensorProto.UINT8, ["n", "h", "w", 3])
    y = helper.make_tensor_value_info("sr", TensorProto.UINT8, ["n", "h", "w", 3])
    graph = helper.make_graph(nodes, "g", [x], [y], inits or [], value_info=value_info or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["sr"], {"lr": x})[0]


_IN = [
    helper.make_node("Cast", ["lr"], ["f"], to=TensorProto.FLOAT, name="cast_in"),
    helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
]
_OUT_GOOD = [
    helper.make_node("Transpose", ["nchw"], ["nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
    helper.make_node("Cast", ["nhwc"], ["sr"], to=TensorProto.UINT8, name="cast_out"),
]
_OUT_OLD = [  # what export/onnx_io.py wrote before issue 14
    helper.make_node("Cast", ["nchw"], ["u8"], to=TensorProto.UINT8, name="cast_out"),
    helper.make_node("Transpose", ["u8"], ["sr"], perm=[0, 2, 3, 1], name="to_nhwc"),
]


def test_edges_only_graph_has_no_finding(tmp_path: Path) -> None:
    assert uint8_findings(_model(_IN + _OUT_GOOD)) == []
    for precision in ("fp32", "fp16", "int8"):  # the TensorRT kit's graphs follow the rule too
        path = write_onnx(tmp_path / f"kit-{precision}.onnx", io="uint8-nhwc", precision=precision)
        assert uint8_findings(onnx.load(str(path))) == [], precision


def test_negative_control_cast_to_uint8_then_transpose_is_found() -> None:
    """The old exporter's ending: the checker names the inner tensor and both nodes."""
    model = _model(_IN + _OUT_OLD)
    found = {f.tensor: f.where for f in uint8_findings(model)}
    assert set(found) == {"u8", "sr"}, found
    assert "Cast node 'cast_out'" in found["u8"] and "Transpose node 'to_nhwc'" in found["u8"]
    assert "produced by Transpose node 'to_nhwc'" in found["sr"]
    assert [f.tensor for f in inner_uint8_tensors(model)] == ["u8"]
    # ... even when nothing declares u8's type: the Cast's 'to' says it
    assert "u8" in {f.tensor for f in uint8_findings(model)}
    # the same when the uint8 input is transposed before its Cast
    early = _model(
        [
            helper.make_node("Transpose", ["lr"], ["t"], perm=[0, 3, 1, 2], name="to_nchw"),
            helper.make_node("Cast", ["t"], ["nchw"], to=TensorProto.FLOAT, name="cast_in"),
            *_OUT_GOOD,
        ]
    )
    found = {f.tensor: f.where for f in uint8_findings(early)}
    assert set(found) == {"lr", "t"} and "read by Transpose node 'to_nchw'" in found["lr"], found


def test_other_inner_uint8_forms_are_found() -> None:
    zp = numpy_helper.from_array(np.array(0, np.uint8), "zp_u8")
    scale = numpy_helper.from_array(np.array(1.0, np.float32), "s")
    nodes = [
        *_IN,
        helper.make_node("QuantizeLinear", ["nchw", "s"], ["q_default"], name="q_no_zp"),  # uint8 by default
        helper.make_node("DequantizeLinear", ["q_default", "s"], ["dq"], name="dq"),
        helper.make_node("QuantizeLinear", ["dq", "s", "zp_u8"], ["q_u8"], name="q_u8zp"),
        helper.make_node("DequantizeLinear", ["q_u8", "s", "zp_u8"], ["dq2"], name="dq2"),
        helper.make_node(
            "Constant", [], ["c_u8"], value=numpy_helper.from_array(np.array([1], np.uint8)), name="const"
        ),
        helper.make_node("Cast", ["c_u8"], ["c_f"], to=TensorProto.FLOAT, name="cast_c"),
        helper.make_node("Add", ["dq2", "c_f"], ["sum"], name="add"),
        helper.make_node("Transpose", ["sum"], ["nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("Cast", ["nhwc"], ["sr"], to=TensorProto.UINT8, name="cast_out"),
    ]
    declared = [helper.make_tensor_value_info("dq", TensorProto.UINT8, None)]  # a wrong declaration is found too
    found = {f.tensor: f.where for f in uint8_findings(_model(nodes, inits=[zp, scale], value_info=declared))}
    assert set(found) == {"zp_u8", "q_default", "q_u8", "c_u8", "dq"}, found
    assert found["zp_u8"].startswith("uint8 initializer") and "QuantizeLinear node 'q_no_zp'" in found["q_default"]
    assert "declared uint8 in value_info" in found["dq"]


def test_shape_readers_of_the_input_are_found_and_sealed() -> None:
    """The dynamo exporter reads the input's sizes with Shape(lr); sealing rewires them to the
    Cast (same shape, same values), which becomes the only reader of lr."""
    nodes = [
        helper.make_node("Shape", ["lr"], ["hw"], start=1, end=3, name="shape_hw"),
        *_IN,
        helper.make_node("Resize", ["nchw", "", "", "size"], ["big"], mode="nearest", name="resize"),
        helper.make_node("Transpose", ["big"], ["nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("Cast", ["nhwc"], ["sr"], to=TensorProto.UINT8, name="cast_out"),
    ]
    # size = [N, C, 2*h, 2*w] from the Shape node
    nodes[3:3] = [
        helper.make_node("Shape", ["nchw"], ["nc"], start=0, end=2, name="shape_nc"),
        helper.make_node("Mul", ["hw", "two"], ["hw2"], name="double"),
        helper.make_node("Concat", ["nc", "hw2"], ["size"], axis=0, name="size"),
    ]
    two = numpy_helper.from_array(np.array([2, 2], np.int64), "two")
    model = _model(nodes, inits=[two])
    found = uint8_findings(model)
    assert [f.tensor for f in found] == ["lr"] and "Shape node 'shape_hw'" in found[0].where, found
    assert inner_uint8_tensors(model) == []
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    before = _run(model, x)
    assert seal_uint8_input(model) == 1
    assert uint8_findings(model) == []
    assert model.graph.node[0].name == "cast_in" and list(model.graph.node[1].input) == ["f"]
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model, x), before)
    assert before.shape == (2, 10, 14, 3)


def test_to_trt_refuses_before_tensorrt(tmp_path: Path) -> None:
    """Negative control for the builder: the old ending is refused with the file, tensor and
    nodes named, before TensorRT is imported (it is not even installed here: the refusal comes
    first or this would be a TrtUnavailableError)."""
    from export.engine_cache import BuildOptions
    from export.to_trt import build_engine
    from export.to_trt import main as to_trt_main

    bad = write_onnx(tmp_path / "old.uint8.onnx", io="uint8-nhwc", inner_uint8=True)
    with pytest.raises(BuildInputError) as info:
        build_engine(bad, tmp_path / "m.plan", BuildOptions(precision="fp32", halo=12), cache_dir=None)
    text = str(info.value)
    assert (
        str(bad) in text and "'up8'" in text and "Cast node 'cast_out'" in text and "Transpose node 'to_nhwc'" in text
    )
    assert "re-export" in text and info.value.exit_code == 2
    assert not (tmp_path / "m.plan").exists()
    assert to_trt_main([str(bad), "-o", str(tmp_path / "m.plan"), "--no-cache"]) == 2


def test_cli_check_and_seal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "shape.onnx"
    onnx.save(_model([helper.make_node("Shape", ["lr"], ["s"], name="shape"), *_IN, *_OUT_GOOD]), str(bad))
    assert main([str(bad)]) == 1
    assert "Shape node 'shape'" in capsys.readouterr().out
    assert main([str(bad), "--seal", "-o", str(tmp_path / "sealed.onnx")]) == 0
    assert "0 uint8 finding(s)" in capsys.readouterr().out


# --------------------------------------------------------------------------- the real exporter


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory):
    import torch

    from export.load import load_source
    from train.checkpoint import save_checkpoint
    from train.models.eusr import build_eusr

    torch.manual_seed(0)
    model = build_eusr("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return load_source(save_checkpoint(path, model, config=model.config.to_dict(), config_name="tiny"))


def _export(source, io: str, precision: str) -> onnx.ModelProto:
    from export.graph import build_graph
    from export.options import ExportOptions
    from runtime.layout import ModelIO, Precision

    return build_graph(source, ExportOptions(), io=ModelIO(io), precision=Precision(precision))


def _held_out_crops(edge: int = 96) -> np.ndarray:
    """The centre ``edge``×``edge`` of every held-out photo (grey ones as RGB), uint8 NHWC."""
    from PIL import Image

    crops = []
    for path in sorted(TEST_PHOTOS.glob("*.png")):
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        y, x = (rgb.shape[0] - edge) // 2, (rgb.shape[1] - edge) // 2
        crops.append(rgb[y : y + edge, x : x + edge])
    assert len(crops) == 5, f"expected the 5 held-out photos in {TEST_PHOTOS}"
    return np.stack(crops)


def _within_one_level(float_model: onnx.ModelProto, uint8_model: onnx.ModelProto) -> None:
    """The uint8 graph's output equals the float graph's, rounded and clipped, within one grey
    level on every held-out photo (float graph fed the same pixels as float32 NCHW)."""
    from runtime.metrics import quantize

    x = _held_out_crops()
    sess = ort.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = quantize(sess.run(["sr"], {"lr": x.transpose(0, 3, 1, 2).astype(np.float32)})[0]).transpose(0, 2, 3, 1)
    got = _run(uint8_model, x)
    assert got.dtype == np.uint8 and got.shape == expected.shape == (5, 384, 384, 3)
    err = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    print(f"uint8 vs float graph on {len(x)} held-out photos: max {err.max()} level(s), {np.mean(err == 0):.6f} equal")
    assert err.max() <= 1, f"max abs err {err.max()} levels on the held-out photos"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exported_uint8_graph_keeps_uint8_at_its_edges(tiny_source, precision: str) -> None:
    model = _export(tiny_source, "uint8-nhwc", precision)
    assert inner_uint8_tensors(model) == [], [str(f) for f in inner_uint8_tensors(model)]
    last = {o: n for n in model.graph.node for o in n.output}["sr"]
    assert last.op_type == "Cast", last
    # build_graph seals the input itself (the exporter's Shape(lr) reads move onto the Cast),
    # so what to_trt.py receives breaks no part of the rule and sealing again changes nothing.
    assert uint8_findings(model) == [], [str(f) for f in uint8_findings(model)]
    readers = [n for n in model.graph.node if "lr" in n.input]
    assert [n.op_type for n in readers] == ["Cast"]
    sealed = onnx.ModelProto()
    sealed.CopyFrom(model)
    assert seal_uint8_input(sealed) == 0
    _within_one_level(_export(tiny_source, "float32-nchw", precision), model)


def _conv_export(path: Path, io: str) -> Path:
    """The conv test model (tests/_runtime_models.py, the smallest that ModelOpt quantizes: the
    tiny EUSR's 8-channel convs are below its limits) through the exporter's own wrapper and
    dynamo call, with the exporter's metadata."""
    import torch
    from _runtime_models import RECEPTIVE_RADIUS, ConvUp

    from export.graph import _torch_export
    from export.onnx_io import set_metadata, wrap_for_io
    from export.options import ExportOptions
    from runtime.layout import ModelIO

    layout = ModelIO(io)
    h, w = layout.spatial_axes
    example = (
        torch.randint(0, 256, layout.batch_shape(2, 24, 32), dtype=torch.uint8)
        if layout.is_integer
        else torch.rand(layout.batch_shape(2, 24, 32)) * 255
    )
    module = wrap_for_io(ConvUp(4).eval(), io).eval()
    proto = _torch_export(module, example, {0: "batch", h: "height", w: "width"}, {}, ExportOptions())
    if layout.is_integer:
        seal_uint8_input(proto)
    meta = {"format": 1, "scale": 4, "io": io, "input": "lr", "output": "sr", "value_range": [0, 255]}
    set_metadata(proto, {**meta, "config_name": "test-conv", "recommended_halo": RECEPTIVE_RADIUS})
    onnx.save(proto, str(path))
    return path


def _float_io_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (a uint8-nhwc graph) with its four edge nodes cut off: float32 NCHW in where
    Cast -> Transpose was, the NCHW float tensor before Transpose -> Cast out. The same Q/DQ
    network with the float contract's I/O, so the comparison isolates what the edges do."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    g = twin.graph
    readers = {i: n for n in g.node for i in n.input}
    producer = {o: n for n in g.node for o in n.output}
    cast_in = readers["lr"]
    to_nchw = readers[cast_in.output[0]]
    cast_out = producer["sr"]
    to_nhwc = producer[cast_out.input[0]]
    inner_in, inner_out = to_nchw.output[0], to_nhwc.input[0]
    for node in (cast_in, to_nchw, to_nhwc, cast_out):
        g.node.remove(node)
    for node in g.node:
        for k, name in enumerate(node.input):
            if name == inner_in:
                node.input[k] = "lr"
        for k, name in enumerate(node.output):
            if name == inner_out:
                node.output[k] = "sr"
    del g.input[:], g.output[:], g.value_info[:]
    g.input.append(helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", 3, "h", "w"]))
    g.output.append(helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, "H", "W"]))
    return twin


@pytest.mark.slow
def test_int8_qdq_graph_from_a_uint8_export_keeps_uint8_at_its_edges(tmp_path: Path, photos_dir: Path) -> None:
    """ModelOpt's Q/DQ graph of the uint8 export: no uint8 tensor but its input and output, and
    its output within one grey level of the same Q/DQ network with float I/O on the held-out
    photos. (Quantizing the float32-nchw export separately is no reference: ModelOpt places
    its Q/DQ pairs differently around the extra Transpose, several levels apart.)"""
    pytest.importorskip("modelopt", reason="the calibration extra (nvidia-modelopt) makes the Q/DQ graph")
    from calibration.cli import main as calibration

    src = _conv_export(tmp_path / "conv.uint8.onnx", "uint8-nhwc")
    assert uint8_findings(onnx.load(str(src))) == []
    data, out = tmp_path / "calib.npz", tmp_path / "conv.uint8.int8.onnx"
    collect = ["collect", "--images", str(photos_dir / "train"), "-o", str(data), "--samples", "6", "--tile", "16"]
    assert calibration([*collect, "--halo", "4", "--model", str(src)]) == 0
    assert calibration(["quantize", str(src), "--data", str(data), "-o", str(out), "--no-auto-keep", "--no-gate"]) == 0
    q8 = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in q8.graph.node) >= 3
    assert json.loads({p.key: p.value for p in q8.metadata_props}["fourpp_eusr"])["precision"] == "int8"
    assert uint8_findings(q8) == [], [str(f) for f in uint8_findings(q8)]
    _within_one_level(_float_io_twin(q8), q8)

"""export/graph_rewrites.py: the pixel-shuffle rewrite is exact and touches only its pattern."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import export.graph
from export.graph import build_onnx
from export.graph_rewrites import fuse_stacked_pixel_shuffle
from train.models.eusr import build_eusr


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_eusr("tiny").eval()


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize(
    "scale, io, precision, exporter",
    [
        (4, "float32-nchw", "fp32", "dynamo"),
        (8, "float32-nchw", "fp32", "dynamo"),
        (2, "uint8-nhwc", "fp32", "torchscript"),
        (4, "float32-nchw", "fp16", "dynamo"),
    ],
)
def test_exported_shuffles_become_concat_dcr_with_identical_pixels(tiny, monkeypatch, scale, io, precision, exporter):
    fused = build_onnx(tiny, scale=scale, io=io, precision=precision, exporter=exporter, halo=4)
    monkeypatch.setattr(export.graph, "fuse_stacked_pixel_shuffle", lambda proto: 0)
    plain = build_onnx(tiny, scale=scale, io=io, precision=precision, exporter=exporter, halo=4)
    shuffles = scale.bit_length() - 1  # one upscaling module per ×2
    modes = [
        helper.get_attribute_value(a) for n in fused.graph.node if n.op_type == "DepthToSpace" for a in n.attribute
    ]
    assert modes.count(b"DCR") == shuffles and b"CRD" not in modes
    assert "Unsqueeze" not in _ops(fused) and "Unsqueeze" in _ops(plain)
    assert len(fused.graph.node) < len(plain.graph.node)
    onnx.checker.check_model(fused, full_check=True)
    rng = np.random.default_rng(scale)
    if io == "uint8-nhwc":
        x = rng.integers(0, 256, (2, 13, 19, 3), dtype=np.uint8)
    else:
        x = (rng.random((2, 3, 13, 19)) * 255).astype(np.float32)
    a, b = _run(fused, x), _run(plain, x)
    assert a.shape == b.shape
    if precision == "fp32":
        assert np.array_equal(a, b)  # data movement only: bit-identical
    else:
        # ONNX Runtime's CPU runs fp16 graphs through float32 islands whose casts follow the graph,
        # so the rounding points move with the rewrite: both stay as close to float32 as each other
        ref = _run(build_onnx(tiny, scale=scale, io=io, precision="fp32", exporter=exporter, halo=4), x)
        err_fused, err_plain = (float(np.abs(y.astype(np.float64) - ref).max()) for y in (a, b))
        assert err_fused <= 1.5 * err_plain + 0.1, (err_fused, err_plain)


def _stacked_shuffle(extra_reader: bool = False, axis: int = 2) -> onnx.ModelProto:
    """taps t0..t3 [1,2,3,5] → Unsqueeze(axis) → Concat(axis) → Reshape [1,8,3,5] → DepthToSpace CRD."""
    nodes, inits = [], [numpy_helper.from_array(np.array([axis], np.int64), "ax")]
    inits.append(numpy_helper.from_array(np.array([1, 8, 3, 5], np.int64), "shape"))
    for k in range(4):
        inits.append(numpy_helper.from_array(np.full((1, 2, 3, 5), 0.0, np.float32) + k, f"bias{k}"))
        nodes.append(helper.make_node("Add", ["x", f"bias{k}"], [f"t{k}"]))
        nodes.append(helper.make_node("Unsqueeze", [f"t{k}", "ax"], [f"u{k}"]))
    nodes.append(helper.make_node("Concat", [f"u{k}" for k in range(4)], ["stack"], axis=axis))
    nodes.append(helper.make_node("Reshape", ["stack", "shape"], ["view"]))
    nodes.append(helper.make_node("DepthToSpace", ["view"], ["y"], blocksize=2, mode="CRD"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Identity", ["stack"], ["also"]))
        outputs.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 5])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_hand_built_pattern_is_rewritten_exactly():
    model = _stacked_shuffle()
    x = np.random.default_rng(0).random((1, 2, 3, 5), dtype=np.float32)
    before = _run(model, x)
    assert fuse_stacked_pixel_shuffle(model) == 1
    assert _ops(model) == ["Add"] * 4 + ["Concat", "DepthToSpace"]
    assert {i.name for i in model.graph.initializer} == {f"bias{k}" for k in range(4)}  # ax, shape pruned
    assert np.array_equal(_run(model, x), before)


@pytest.mark.parametrize("variant", ["stack read elsewhere", "stack on axis 1"])
def test_other_graphs_are_left_alone(variant):
    model = _stacked_shuffle(extra_reader=True) if variant == "stack read elsewhere" else _stacked_shuffle(axis=1)
    before = model.SerializeToString()
    assert fuse_stacked_pixel_shuffle(model) == 0
    assert model.SerializeToString() == before

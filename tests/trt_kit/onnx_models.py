"""Tiny ONNX models in the exporter's I/O contracts, for the TensorRT tests (onnx + numpy only)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_onnx"]


def write_onnx(
    path: Path,
    *,
    io: str = "float32-nchw",
    precision: str = "fp32",
    scale: int = 4,
    metadata: bool = True,
    extra_metadata: dict | None = None,
    inner_uint8: bool = False,
) -> Path:
    """A tiny x``scale`` model (Conv + DepthToSpace) in one of the exporter's contracts;
    ``extra_metadata`` joins the ``fourpp_eusr`` metadata (e.g. ``calibration``).
    ``inner_uint8`` (uint8-nhwc only) ends the graph the way the old exporter did,
    Cast(to=UINT8) -> Transpose -> output: a graph TensorRT cannot build."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = 3 * scale * scale
    fdt = np.float16 if precision == "fp16" else np.float32
    ftype = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    inits = [numpy_helper.from_array(np.zeros((c, 3, 3, 3), fdt), "w"), numpy_helper.from_array(np.zeros(c, fdt), "b")]
    nodes = []
    if io == "float32-nchw":
        x = helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["batch", 3, "height", "width"])
        y = helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["batch", 3, f"{scale}h", f"{scale}w"])
        nodes.append(helper.make_node("Cast", ["lr"], ["x"], to=ftype, name="cast_in"))
    else:
        x = helper.make_tensor_value_info("lr", TensorProto.UINT8, ["batch", "height", "width", 3])
        y = helper.make_tensor_value_info("sr", TensorProto.UINT8, ["batch", f"{scale}h", f"{scale}w", 3])
        # TensorRT's rule (export/uint8_boundary.py): the Cast is the only reader of the uint8 input
        nodes.append(helper.make_node("Cast", ["lr"], ["lr_f"], to=ftype, name="cast_in"))
        nodes.append(helper.make_node("Transpose", ["lr_f"], ["x"], perm=[0, 3, 1, 2], name="to_nchw"))
    conv_in = "x"
    if precision == "int8":
        inits += [
            numpy_helper.from_array(np.array(1.0, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq_in"),
        ]
        conv_in = "xdq"
    nodes += [
        helper.make_node("Conv", [conv_in, "w", "b"], ["f"], pads=[1, 1, 1, 1], name="conv_3"),
        helper.make_node("DepthToSpace", ["f"], ["up"], blocksize=scale, mode="CRD", name="shuffle"),
    ]
    if io == "float32-nchw":
        nodes.append(helper.make_node("Cast", ["up"], ["sr"], to=TensorProto.FLOAT, name="cast_out"))
    elif inner_uint8:
        nodes += [
            helper.make_node("Cast", ["up"], ["up8"], to=TensorProto.UINT8, name="cast_out"),
            helper.make_node("Transpose", ["up8"], ["sr"], perm=[0, 2, 3, 1], name="to_nhwc"),
        ]
    else:
        nodes += [  # ... and a Cast to uint8 produces the uint8 output
            helper.make_node("Transpose", ["up"], ["up_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
            helper.make_node("Cast", ["up_nhwc"], ["sr"], to=TensorProto.UINT8, name="cast_out"),
        ]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)]
    )
    if metadata:
        meta = {
            "format": 1,
            "scale": scale,
            "io": io,
            "input": "lr",
            "output": "sr",
            "value_range": [0, 255],
            "config_name": "tiny",
            "recommended_halo": 12,
            **(extra_metadata or {}),
        }
        helper.set_model_props(model, {"fourpp_eusr": json.dumps(meta)})
    onnx.save(model, str(path))
    return path

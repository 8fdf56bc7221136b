"""FP16 graphs of an EUSR path: the half-precision module to export, the checks of an
exported FP16 graph, and an FP16-rounding emulation that ONNX Runtime (CPU) cannot skip.

Why a half-precision export rather than a converter. Three ways were tried on the bundled
compact model (×4, 64×64 crops of camera/coins/ihc, PSNR vs the float32 ONNX, ONNX Runtime
1.32 CPU, onnx 1.23.2, opset 18):

* onnxconverter-common 1.16 ``convert_float_to_float16(keep_io_types=True)``: works,
  80.05 / 80.48 / 84.42 dB; casts the input to fp16 *before* the mean subtraction and adds
  the mean in fp16 (0.125 resolution near 255), clamps weights below 1e-7 to ±1e-7
  (warnings), and casts ``lr`` twice just to read its shape.
* ModelOpt AutoCast (nvidia-modelopt 0.47 ``convert_to_mixed_precision``, installed without
  its ``[onnx]`` extra plus onnxslim/polygraphy/lief/cppimport by hand): the same graph and
  the same numbers (it calls onnxconverter-common underneath); its ``[onnx]`` extra pins
  onnx ~= 1.21, onnxruntime-gpu ~= 1.24 and cupy, which this CPU toolchain must not take.
* This module: the path's layers cast to ``torch.float16`` and exported by the same
  ``torch.onnx`` call as the float32 model, with the edges written out in float32: the mean
  is subtracted in float32 and only the centred values (-114.4..152) are cast to fp16, and
  the output conv's result is cast back to float32 before the mean is added (so the uint8
  variant rounds a float32 value). 80.43 / 81.39 / 87.59 dB: better at every edge, no
  new dependency, the same initializer names as the float32 graph.

Precision at the edges: fp16 has an 11-bit significand, so every integer up to 2048 (all
of 0..255) is exact, but its spacing is 0.0625 in [64, 128) and 0.125 in [128, 256).
Casting the centred value costs at most 0.0625 grey levels, once; casting the raw pixel
first (exact) would instead round the mean in fp16 (114.444 → 114.4375) and round the
difference again in fp16. On the way out the mean is added in float32, so the output is
not snapped to the 0.125 grid near 255 before the uint8 graph rounds it.

The graph holds exactly two Casts (float32→fp16 after the subtraction, fp16→float32 before
the addition): a TensorRT network created STRONGLY_TYPED runs everything between them in
fp16, and its I/O stays float32 NCHW or uint8 NHWC as in ``export/onnx_io.py``.

ONNX Runtime's CPU provider has no fp16 Conv kernel on x86 (MLAS has one for ARM64 only):
it runs such a graph by inserting Casts around every Conv and then fusing them away, so the
convolutions run in float32 on fp16-rounded weights and the activations are hardly ever
rounded to fp16. That check alone would neither see fp16 rounding of activations nor an
fp16 overflow. :func:`emulate_fp16` therefore builds a float32 twin of the fp16 graph that
rounds every fp16 tensor to fp16 (Cast→fp16→Cast→float32 after each node; ORT keeps these
because no fp16 kernel is involved): fp16 storage with float32 accumulation, as a GPU's
tensor cores compute. On the crops above it gives 70.70 / 72.20 / 78.23 dB, within 0.03 dB
of PyTorch running the fp16 model on the CPU (70.73 / 72.17 / 78.24), at 1/100 the time.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from export.onnx_io import Precision, parse_precision
from train.models.eusr import EUSR

__all__ = [
    "Precision",
    "parse_precision",
    "FP16_MAX",
    "HalfPrecisionPath",
    "precision_module",
    "graph_precision",
    "check_precision",
    "emulate_fp16",
]

FP16_MAX = 65504.0
"""The largest finite float16 value."""


class HalfPrecisionPath(nn.Module):
    """One scale path of an EUSR computing in ``dtype`` between float32 edges.

    float32 NCHW 0..255 in → subtract the mean (float32) → cast → first conv … output conv
    (``dtype``) → cast to float32 → add the mean → float32 out. The layers are a deep copy
    (the caller's model is untouched) kept under ``model`` so that initializer names match
    the float32 export. The layer sequence mirrors ``EUSR.forward``; with
    ``dtype=torch.float32`` this module equals ``model.path(scale)`` exactly, which the
    tests check so the two cannot drift apart.
    """

    def __init__(self, model: EUSR, scale: int, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.key = model._check_scale(scale)
        self.scale = scale
        self.dtype = dtype
        self.model = copy.deepcopy(model).to(dtype).eval()
        self.model.rgb_mean = model.rgb_mean.detach().clone().to(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, key = self.model, self.key
        mean = m.rgb_mean
        h = (x - mean).to(self.dtype)  # x is float32 by the I/O contract
        h = m.first(h)
        h = m.scale_features[key](h)
        h = m.shared(h)
        h = m.upscalers[key](h)
        return m.outputs[key](h).to(torch.float32) + mean


def precision_module(model: EUSR, scale: int, precision: str | Precision) -> nn.Module:
    """The float32-in/float32-out module to export for ``precision``."""
    precision = parse_precision(precision)
    if precision is Precision.FP32:
        return model.path(scale)
    return HalfPrecisionPath(model, scale, torch.float16)


# --------------------------------------------------------------------------- graph checks


def _conv_weight_types(proto: onnx.ModelProto) -> Counter:
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    return Counter(
        TensorProto.DataType.Name(inits.get(n.input[1], TensorProto.UNDEFINED))
        for n in proto.graph.node
        if n.op_type == "Conv" and len(n.input) > 1
    )


def graph_precision(proto: onnx.ModelProto) -> dict[str, Any]:
    """Element types of the Conv weights and of all floating-point initializers, and the
    number of Cast nodes: what a reader (or TensorRT) will compute in."""
    inits = Counter(
        TensorProto.DataType.Name(t.data_type)
        for t in proto.graph.initializer
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    )
    return {
        "conv_weights": dict(_conv_weight_types(proto)),
        "float_initializers": dict(inits),
        "casts": sum(n.op_type == "Cast" for n in proto.graph.node),
    }


def check_precision(proto: onnx.ModelProto, precision: str | Precision) -> list[str]:
    """Problems (empty if none) with ``proto`` claiming ``precision``: an fp16 graph must
    have every Conv weight in float16; an fp32 graph must hold no float16 at all."""
    precision = parse_precision(precision)
    convs = _conv_weight_types(proto)
    if not convs:
        return ["graph has no Conv node with an initializer weight"]
    if precision is Precision.FP16:
        other = {k: v for k, v in convs.items() if k != "FLOAT16"}
        return [f"fp16 graph has Conv weights of type {other} (expected all FLOAT16)"] if other else []
    f16 = sum(t.data_type == TensorProto.FLOAT16 for t in proto.graph.initializer)
    return [f"fp32 graph holds {f16} float16 initializers"] if f16 else []


# --------------------------------------------------------------------------- emulation


def _value_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:  # Constant nodes' outputs are in value_info too; this covers odd cases
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def emulate_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 twin of an fp16 graph that rounds every fp16 tensor to fp16.

    float16 initializers and constants become float32 (exactly); every node that produced
    a float16 tensor now produces float32, followed by Cast→float16→Cast→float32 under the
    original name; a Cast from float16 to float32 becomes Identity. The twin computes what
    fp16 storage with float32 accumulation computes, including overflow to ±inf, on any
    CPU. Raises ``ValueError`` if a node's output type cannot be inferred.
    """
    types = _value_types(proto)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    del g.node[:]
    del g.value_info[:]
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for node in proto.graph.node:
        for o in node.output:
            if o and o not in types:
                raise ValueError(f"cannot emulate fp16: no type inferred for {node.op_type} output {o!r}")
        new = onnx.NodeProto()
        new.CopyFrom(node)
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            if to == TensorProto.FLOAT and types.get(node.input[0]) == TensorProto.FLOAT16:
                g.node.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
                continue
        if node.op_type == "Constant":
            for a in new.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT16:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
        rounds = []
        for i, o in enumerate(node.output):
            if o and types[o] == TensorProto.FLOAT16:
                new.output[i] = f"{o}__fp32"
                rounds.append((new.output[i], o))
        if node.op_type == "Cast" and rounds:  # e.g. float32 -> float16 at the input edge
            for a in new.attribute:
                if a.name == "to":
                    a.i = TensorProto.FLOAT
        g.node.append(new)
        for wide, name in rounds:
            g.node.append(helper.make_node("Cast", [wide], [f"{name}__fp16"], to=TensorProto.FLOAT16))
            g.node.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT))
    g.name = f"{proto.graph.name}_fp16_emulated"
    return out

"""What an ONNX file says about itself, read without TensorRT: the builder's inputs.

The I/O contract (``fourpp_eusr`` metadata, else inferred from the graph's first input and
output), the precision the graph carries (float16 tensors, Q/DQ nodes), the file's hash
(with any external-weights files: they change the engine too), the input shape, and
whatever breaks TensorRT's uint8 rule (:mod:`export.uint8_boundary`).
``export/to_trt.py`` builds from these facts and checks ``--precision`` against them;
only the ``onnx`` package is needed, so every check here runs on a machine without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import BuildInputError
from export.uint8_boundary import Uint8Finding, uint8_findings
from runtime.errors import ModelError
from runtime.layout import Precision
from runtime.model_info import METADATA_KEY, ModelInfo, infer_model_info, parse_metadata
from runtime.utils import file_sha256

__all__ = ["OnnxFacts", "inspect_onnx", "detect_precision", "check_precision"]

_ONNX_TYPES = {1: "tensor(float)", 2: "tensor(uint8)", 10: "tensor(float16)"}
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True, kw_only=True)
class OnnxFacts:
    """What the builder needs to know about an ONNX file, read without TensorRT."""

    path: Path
    sha256: str
    """SHA-256 of the file, combined with those of any external-data files it references."""
    info: ModelInfo
    precision: Precision
    precision_evidence: str
    input_shape: tuple[int | str | None, ...]
    metadata: dict[str, Any] | None = None
    value_range: tuple[float, float] = (0, 255)
    external_data: tuple[str, ...] = field(default_factory=tuple)
    uint8_findings: tuple[Uint8Finding, ...] = ()
    """Tensors that break TensorRT's uint8 rule (uint8 only as the graph's input/output type)."""


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise BuildInputError(f"the 'onnx' package is needed to read the model ({exc}); pip install onnx") from exc
    return onnx


def _nodes(model) -> list:
    nodes = list(model.graph.node)
    for function in model.functions:
        nodes.extend(function.node)
    return nodes


def detect_precision(model) -> tuple[Precision, str]:
    """The precision an ``onnx.ModelProto`` carries, and the evidence (for messages).

    INT8 if it has QuantizeLinear/DequantizeLinear nodes (explicit quantisation, what
    TensorRT 11 builds INT8 from); else FP16 if any initializer, Constant, Cast target or
    intermediate value is float16; else FP32.
    """
    onnx = _import_onnx()
    fp16 = onnx.TensorProto.FLOAT16
    nodes = _nodes(model)
    for node in nodes:
        if node.op_type in _QDQ:
            return Precision.INT8, f"{node.op_type} node {node.name!r}"
    for init in model.graph.initializer:
        if init.data_type == fp16:
            return Precision.FP16, f"initializer {init.name!r} is float16"
    for node in nodes:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == fp16:
                return Precision.FP16, f"Cast node {node.name!r} casts to float16"
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == fp16:
                return Precision.FP16, f"Constant node {node.name!r} is float16"
    for vi in model.graph.value_info:
        if vi.type.tensor_type.elem_type == fp16:
            return Precision.FP16, f"value {vi.name!r} is float16"
    return Precision.FP32, "no float16 tensors and no QuantizeLinear/DequantizeLinear nodes"


def check_precision(requested: Precision | str, facts: OnnxFacts) -> Precision:
    """Raise :class:`BuildInputError` unless ``--precision`` agrees with the graph."""
    requested = Precision(requested)
    got = facts.precision
    if requested is got:
        return requested
    hints = {
        Precision.FP16: "export an FP16 graph: python export/to_onnx.py CHECKPOINT -o model.fp16.onnx --precision fp16",
        Precision.FP32: "build from the float32 export, or pass --precision " + got.value,
        Precision.INT8: "quantize the graph with explicit QuantizeLinear/DequantizeLinear nodes (calibration/)",
    }
    raise BuildInputError(
        f"{facts.path}: --precision {requested.value} but the graph is {got.value} ({facts.precision_evidence}); "
        f"{hints[requested]}. TensorRT builds the graph strongly typed: its precision comes from the ONNX "
        "dtypes, not from a builder flag"
    )


def _external_files(model, base: Path) -> list[Path]:
    onnx = _import_onnx()
    files = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in init.external_data}
            if "location" in entries:
                files.add(base / entries["location"])
    return sorted(files)


def _dims(value_info) -> tuple[int | str | None, ...]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return tuple(out)


def inspect_onnx(path: str | os.PathLike, *, scale: int | None = None) -> OnnxFacts:
    """Read the model's contract (``fourpp_eusr`` metadata, else inferred), precision and hash."""
    onnx = _import_onnx()
    path = Path(path)
    if not path.is_file():
        raise BuildInputError(f"{path}: no such ONNX file; export one with export/to_onnx.py")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError  # noqa: BLE001 - the library raises its own exception types
        raise BuildInputError(f"{path}: not a readable ONNX model ({exc})") from None
    graph = model.graph
    if len(graph.input) < 1 or len(graph.output) < 1:
        raise BuildInputError(f"{path}: the graph has {len(graph.input)} inputs and {len(graph.output)} outputs")
    props = {p.key: p.value for p in model.metadata_props}
    try:
        if METADATA_KEY in props:
            info = parse_metadata(props[METADATA_KEY], model=str(path), scale=scale)
            metadata = json.loads(props[METADATA_KEY])
        else:
            inp, out = graph.input[0], graph.output[0]
            info = infer_model_info(
                model=str(path),
                input_name=inp.name,
                input_type=_ONNX_TYPES.get(inp.type.tensor_type.elem_type, str(inp.type.tensor_type.elem_type)),
                input_shape=_dims(inp),
                output_name=out.name,
                output_shape=_dims(out),
                scale=scale,
            )
            metadata = None
    except ModelError as exc:
        raise BuildInputError(str(exc)) from None
    inputs = {vi.name: vi for vi in graph.input}
    if info.input_name not in inputs:
        raise BuildInputError(f"{path}: the metadata names input {info.input_name!r} but the graph has {list(inputs)}")
    sha256 = file_sha256(path)
    externals = _external_files(model, path.parent)
    if externals:  # weights beside the graph change the engine too
        digest = hashlib.sha256(bytes.fromhex(sha256))
        for ext in externals:
            if not ext.is_file():
                raise BuildInputError(f"{path}: external weights file {ext} is missing")
            digest.update(bytes.fromhex(file_sha256(ext)))
        sha256 = digest.hexdigest()
    precision, evidence = detect_precision(model)
    value_range = tuple((metadata or {}).get("value_range", (0, 255)))
    return OnnxFacts(
        path=path,
        sha256=sha256,
        info=info,
        precision=precision,
        precision_evidence=evidence,
        input_shape=_dims(inputs[info.input_name]),
        metadata=metadata,
        value_range=value_range,  # type: ignore[arg-type]
        external_data=tuple(str(e) for e in externals),
        uint8_findings=tuple(uint8_findings(model)),
    )

"""INT8 Q/DQ ONNX with NVIDIA ModelOpt's ONNX post-training quantization, on CPU.

TensorRT 10+/11 build INT8 engines from explicit QuantizeLinear/DequantizeLinear graphs;
ModelOpt places them the way TensorRT fuses them (per-channel weights, per-tensor
activations). The exporter's metadata is carried over, plus the calibration provenance,
so the runtime and export/to_trt.py read the INT8 model like its source.
"""

from __future__ import annotations

import hashlib
import re
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from runtime.model_info import METADATA_KEY, ModelIO

from .collect import CalibrationError, load_npz, read_model_info

__all__ = ["METHODS", "float_residuals", "quantize_model"]

METHODS = ("entropy", "max")
"""What ModelOpt 0.47's INT8 path implements: anything but "entropy" becomes MinMax (= max
with symmetric activations), so "percentile" is refused rather than silently run as max."""


def _check_data(arrays: dict[str, np.ndarray], data: Path, model: Path) -> np.ndarray:
    info = read_model_info(model)
    if info.input_name not in arrays:
        raise CalibrationError(
            f"--data {data}: no array named {info.input_name!r} (the input of {model}); "
            f"it holds {sorted(arrays)}"
        )
    arr = arrays[info.input_name]
    want = (np.uint8, 3) if info.io is ModelIO.UINT8_NHWC else (np.float32, 1)
    axis = 3 if info.io is ModelIO.UINT8_NHWC else 1
    if arr.dtype != want[0] or arr.ndim != 4 or arr.shape[axis] != 3:
        raise CalibrationError(
            f"--data {data}: {arr.dtype} {list(arr.shape)} does not fit {model} "
            f"({info.io.value}: expected {np.dtype(want[0]).name} with 3 channels on axis {axis}); "
            f"collect again with --model {model}"
        )
    return arr


def float_residuals(model, op_types: tuple[str, ...] = ("Add",)) -> int:  # noqa: ANN001
    """Let ``op_types`` nodes read the float tensor instead of a Q/DQ pair they share with a conv.

    ModelOpt quantizes a conv's input and the residual Add reads the same DequantizeLinear,
    so every skip connection carries INT8 rounding down the trunk; on the compact model the
    residual adds are the most sensitive layers (``python -m calibration sensitivity``).
    Returns how many inputs were rewired.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    count = 0
    for n in model.graph.node:
        if n.op_type not in op_types:
            continue
        for k, i in enumerate(n.input):
            dq = producer.get(i)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = q.input[0]
                count += 1
    return count


def quantize_model(
    model: Path,
    data: Path,
    output: Path,
    *,
    method: str = "entropy",
    keep_fp: list[str] | None = None,
    high_precision: str = "fp32",
    exclude_ops: list[str] | None = None,
    float_residual: bool = False,
) -> dict:
    """Write the Q/DQ model to ``output``; returns the provenance stored in its metadata.

    ``keep_fp`` are node-name regexes (``re.match``, as ModelOpt matches them: anchor with
    ``$`` to name one node) left unquantized, in
    ``high_precision``; ``float_residual`` applies :func:`float_residuals`; ``exclude_ops`` are op types left unquantized (e.g. ``Add``: the
    residual adds are this model's most sensitive Q/DQ). fp32 keeps the CPU gate exact; fp16 is what TensorRT would run).
    """
    if method not in METHODS:
        raise CalibrationError(f"--method {method!r}: not supported (expected one of {', '.join(METHODS)})")
    if high_precision not in ("fp32", "fp16"):
        raise CalibrationError(f"--high-precision {high_precision!r}: expected fp32 or fp16")
    arrays, meta = load_npz(data)
    arr = _check_data(arrays, data, model)
    import onnx

    try:
        import modelopt
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise CalibrationError(
            f"NVIDIA ModelOpt is not importable ({exc}); install the extra: pip install -e '.[calib]'"
        ) from exc
    src = onnx.load(str(model))
    keep = list(keep_fp or [])
    names = {n.name for n in src.graph.node}
    for pat in keep:
        if not any(re.match(pat, n) for n in names):
            raise CalibrationError(
                f"--keep-fp {pat!r}: matches no node of {model} (e.g. {sorted(names)[:3]})"
            )
    info = read_model_info(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / "q.onnx"
        quantize(
            str(model),
            quantize_mode="int8",
            calibration_data={info.input_name: arr},
            calibration_method=method,
            calibration_eps=["cpu"],
            nodes_to_exclude=keep or None,
            op_types_to_exclude=list(exclude_ops or []) or None,
            high_precision_dtype=high_precision,
            output_path=str(tmp_out),
            log_level="WARNING",
        )
        q = onnx.load(str(tmp_out))
    rewired = float_residuals(q) if float_residual else 0
    prov = {
        "method": method,
        "high_precision": high_precision,
        "keep_fp": keep,
        "exclude_ops": list(exclude_ops or []),
        "float_residual_inputs": rewired,
        "samples": int(arr.shape[0]),
        "window": list(arr.shape[1:]),
        "data_sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
        "data": meta,
        "source_model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "tool": f"nvidia-modelopt {modelopt.__version__}",
        "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node),
    }
    props = {p.key: p.value for p in src.metadata_props}
    doc = json.loads(props.get(METADATA_KEY, "{}"))
    doc["precision"] = "int8"
    doc["calibration"] = prov
    props[METADATA_KEY] = json.dumps(doc, sort_keys=True)
    del q.metadata_props[:]
    for k, v in props.items():
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, str(output))
    logging.getLogger(__name__).info("wrote %s", output)
    return prov

"""INT8 Q/DQ ONNX with NVIDIA ModelOpt's ONNX post-training quantization, on CPU.

TensorRT 10+/11 build INT8 engines from explicit QuantizeLinear/DequantizeLinear graphs;
ModelOpt places them the way TensorRT fuses them (per-channel weights, per-tensor
activations). The exporter's metadata is carried over, plus the calibration provenance,
so the runtime and export/to_trt.py read the INT8 model like its source.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.model_info import METADATA_KEY

from .collect import CalibrationError, load_npz, read_model_info

__all__ = ["METHODS", "DEFAULT_AUTO_KEEP_DB", "DEFAULT_MAX_KEEP", "float_residuals", "quantize_model"]

METHODS = ("entropy", "max")
"""What ModelOpt 0.47's INT8 path implements: anything but "entropy" becomes MinMax (= max
with symmetric activations), so "percentile" is refused rather than silently run as max."""


def _check_data(arrays: dict[str, np.ndarray], data: Path, model: Path) -> np.ndarray:
    info = read_model_info(model, what="model")
    if info.input_name not in arrays:
        raise CalibrationError(
            f"--data {data}: no array named {info.input_name!r} (the input of {model}); it holds {sorted(arrays)}"
        )
    arr = arrays[info.input_name]
    want, axis = info.io.dtype, info.io.channel_axis
    if arr.dtype != want or arr.ndim != 4 or arr.shape[axis] != 3:
        raise CalibrationError(
            f"--data {data}: {arr.dtype} {list(arr.shape)} does not fit {model} "
            f"({info.io.value}: expected {want.name} with 3 channels on axis {axis}); "
            f"collect again with --model {model}"
        )
    return arr


def float_residuals(model, op_types: tuple[str, ...] = ("Add",), *, except_from: tuple[str, ...] = ()) -> int:
    """Let ``op_types`` nodes read the float tensor instead of a Q/DQ pair they share with a conv.

    ModelOpt quantizes a conv's input and the residual Add reads the same DequantizeLinear,
    so every skip connection carries INT8 rounding down the trunk; on the compact model the
    residual adds are the most sensitive layers (``python -m calibration sensitivity``).
    Inputs whose float tensor comes from an ``except_from`` op stay quantized (ONNX Runtime's
    integer placement needs the Q/DQ after a conv's output to fuse it). Returns how many
    inputs were rewired.
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
            if q is None or q.op_type != "QuantizeLinear":
                continue
            src = producer.get(q.input[0])
            if src is not None and src.op_type in except_from:
                continue
            n.input[k] = q.input[0]
            count += 1
    return count


DEFAULT_AUTO_KEEP_DB = 48.0
"""PSNR vs float32 on the calibration windows that the automatic choice of high-precision
layers aims for: 8 dB above the gate's 40 dB floor (on the bundled model the windows'
PSNR tracks the held-out photos' worst image within 1 dB, benchmarks/results/int8_gate.md)."""
DEFAULT_MAX_KEEP = 8
"""At most this many layers are kept in high precision by the automatic choice."""
RANK_WINDOWS = 16
"""Windows used to rank the layers (one ORT session per layer); the target uses them all."""


def stamp_int8_metadata(q, src, prov: dict) -> None:
    """Give the quantized model its source's metadata, with ``precision: int8`` and the
    calibration record, so the runtime and export/to_trt.py read it like its source."""
    props = {p.key: p.value for p in src.metadata_props}
    doc = json.loads(props.get(METADATA_KEY, "{}"))
    doc.update(precision="int8", calibration=prov)
    props[METADATA_KEY] = json.dumps(doc, sort_keys=True)
    del q.metadata_props[:]
    for k, v in props.items():
        q.metadata_props.add(key=k, value=v)


def _quiet(fn, *args, **kwargs):
    """Run ``fn`` with its prints and progress bars captured; shown only if it fails.

    ONNX Runtime's calibrator prints a line per batch and ModelOpt draws bars per tensor:
    hundreds of lines that say nothing when it works.
    """
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return fn(*args, **kwargs)
    except Exception:
        sys.stderr.write(buf.getvalue())
        raise


def _resolve_keep(patterns: list[str], src, model: Path) -> list[str]:
    """Node-name regexes for ModelOpt: each pattern matches node names, or module names
    (``model.first``, ``model.upscalers.4.0.*``), which become exact node names."""
    from .sensitivity import layer_labels

    names = [n.name for n in src.graph.node]
    by_module = {m: n for n, m in layer_labels(src).items()}
    out: list[str] = []
    for pat in patterns:
        try:
            rx = re.compile(pat)
        except re.error as exc:
            raise CalibrationError(f"--keep-fp {pat!r}: not a regular expression ({exc})") from None
        if any(rx.match(n) for n in names):
            out.append(pat)
            continue
        hits = [n for m, n in by_module.items() if rx.fullmatch(m)]
        if not hits:
            raise CalibrationError(
                f"--keep-fp {pat!r}: matches no node or module of {model} "
                f"(nodes e.g. {names[3:5]}, modules e.g. {sorted(by_module)[:2]})"
            )
        out += [re.escape(n) + "$" for n in hits]
    return out


def quantize_model(
    model: Path,
    data: Path,
    output: Path,
    *,
    method: str = "entropy",
    keep_fp: list[str] | None = None,
    auto_keep_db: float | None = DEFAULT_AUTO_KEEP_DB,
    max_keep: int = DEFAULT_MAX_KEEP,
    high_precision: str = "fp32",
    exclude_ops: list[str] | None = None,
    float_residual: bool = True,
    progress: bool = False,
) -> dict:
    """Write the Q/DQ model to ``output``; returns the provenance stored in its metadata.

    - ``keep_fp``: left unquantized: node-name regexes (``re.match``, as ModelOpt matches
      them: anchor with ``$`` to name one node) or module-name regexes (whole name).
    - ``auto_keep_db``: then keep the most sensitive layers (one at a time, at most
      ``max_keep``) until PSNR vs float32 on the calibration windows reaches it; ``None``
      turns the search off (see :mod:`calibration.sensitivity`).
    - ``float_residual``: residual Adds read float tensors (:func:`float_residuals`).
    - ``exclude_ops``: op types left unquantized.
    - ``high_precision``: dtype of what is not quantized: fp32 keeps the CPU gate exact,
      fp16 is what TensorRT would run.
    """
    _check_options(method, high_precision, max_keep, auto_keep_db)
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
    keep = _resolve_keep(list(keep_fp or []), src, model)
    info = read_model_info(model, what="model")
    output.parent.mkdir(parents=True, exist_ok=True)
    q = _modelopt_int8(
        quantize,
        model,
        {info.input_name: arr},
        method=method,
        keep=keep,
        exclude_ops=exclude_ops,
        high_precision=high_precision,
    )
    rewired = float_residuals(q) if float_residual else 0
    auto = None
    if auto_keep_db is not None:
        q, auto = _auto_keep(q, src, arr, info.input_name, auto_keep_db, max_keep, progress)
    prov = {
        "method": method,
        "high_precision": high_precision,
        "keep_fp": keep,
        "auto_keep": auto,
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
    stamp_int8_metadata(q, src, prov)
    onnx.save(q, str(output))
    logging.getLogger(__name__).info("wrote %s", output)
    return prov


def _check_options(method: str, high_precision: str, max_keep: int, auto_keep_db: float | None) -> None:
    if method not in METHODS:
        raise CalibrationError(f"--method {method!r}: not supported (expected one of {', '.join(METHODS)})")
    if high_precision not in ("fp32", "fp16"):
        raise CalibrationError(f"--high-precision {high_precision!r}: expected fp32 or fp16")
    if max_keep < 0:
        raise CalibrationError(f"--max-keep must be >= 0, got {max_keep}")
    if auto_keep_db is not None and not math.isfinite(auto_keep_db):
        raise CalibrationError(f"--auto-keep must be a finite number of dB, got {auto_keep_db}")


def _modelopt_int8(
    quantize: Callable[..., Any],
    model: Path,
    data: dict[str, np.ndarray],
    *,
    method: str,
    keep: list[str],
    exclude_ops: list[str] | None,
    high_precision: str,
):
    """ModelOpt's INT8 PTQ (``quantize``) of ``model`` on the CPU, calibrated on ``data``: the Q/DQ ModelProto."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / "q.onnx"
        _quiet(
            quantize,
            str(model),
            quantize_mode="int8",
            calibration_data=data,
            calibration_method=method,
            calibration_eps=["cpu"],
            nodes_to_exclude=keep or None,
            op_types_to_exclude=list(exclude_ops or []) or None,
            high_precision_dtype=high_precision,
            output_path=str(tmp_out),
            log_level="WARNING",
        )
        return onnx.load(str(tmp_out))


def _auto_keep(
    q, src, arr: np.ndarray, input_name: str, target_db: float, max_keep: int, progress: bool
) -> tuple[Any, dict]:
    """Bypass the most sensitive layers of ``q`` until it reaches ``target_db`` vs float32 on
    the windows (:mod:`calibration.sensitivity`): the new model and the record of the choice."""
    from .sensitivity import WindowScorer, bypass, choose_kept_layers, layer_labels

    score = WindowScorer(src.SerializeToString(), arr, input_name)
    step = max(1, len(arr) // RANK_WINDOWS)
    rank = WindowScorer(src.SerializeToString(), arr[::step][:RANK_WINDOWS], input_name)
    sel = choose_kept_layers(q, score, rank=rank, target_psnr=target_db, max_layers=max_keep, progress=progress)
    auto = {
        "target_psnr_db": target_db,
        "max_layers": max_keep,
        "layers": sel.layers,
        "modules": [layer_labels(src).get(n, n) for n in sel.layers],
        "psnr_all_int8_db": round(sel.psnr_all_int8, 3),
        "psnr_db": round(sel.psnr, 3),
        "reached": sel.reached,
        "trace": [{"layer": t["layer"], "psnr_vs_fp32": round(t["psnr_vs_fp32"], 3)} for t in sel.trace],
        "ranking_windows": len(rank.windows),
        "ranking": [{"layer": r["layer"], "psnr_vs_fp32": round(r["psnr_vs_fp32"], 3)} for r in sel.ranking[:16]],
    }
    if not sel.reached:
        logging.getLogger(__name__).warning(
            "auto-keep: %.2f dB vs float32 on the calibration windows with %d layers kept "
            "(target %.1f dB, --max-keep %d); the gate will judge",
            sel.psnr,
            len(sel.layers),
            target_db,
            max_keep,
        )
    return bypass(q, sel.layers), auto

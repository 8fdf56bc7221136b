"""The Q/DQ placement ONNX Runtime's CPU fuses into integer kernels, for comparison.

ModelOpt places Q/DQ the way TensorRT wants them: on the inputs of each conv (activation
and weight), nothing on its output. ONNX Runtime's CPU only forms an integer
``QLinearConv`` from DequantizeLinear → Conv → QuantizeLinear, so it runs ModelOpt's graph
as dequantize + float conv: slower than the float32 model. ``onnxruntime.quantization``
places a Q/DQ pair on every conv output too, which ORT fuses into VNNI u8×s8 kernels, at
the price of one more rounding per conv. ``benchmarks/int8_gate.py`` measures both.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from .collect import load_npz, read_model_info
from .quantize import _check_data, _quiet, float_residuals, stamp_int8_metadata

__all__ = ["quantize_for_onnxruntime"]


def quantize_for_onnxruntime(
    model: Path,
    data: Path,
    output: Path,
    *,
    method: str = "entropy",
    keep_fp: list[str] | None = None,
    float_residual: bool = False,
) -> dict:
    """``onnxruntime.quantization.quantize_static`` (QDQ, per-channel s8 weights, u8 activations).

    ``keep_fp`` are node names (exact) left in float32; ``float_residual`` lets the residual
    Adds read the float skip tensor (the conv-output pairs stay, so the convs still fuse).

    Runs in a fresh process: ModelOpt monkeypatches ``onnxruntime.quantization``'s
    calibrators for the whole process once it has run (``ort_patching.patch_ort_modules``),
    after which ``quantize_static`` collects no histograms.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_quantize, model, data, output, method, list(keep_fp or []), float_residual).result()


def _quantize(model: Path, data: Path, output: Path, method: str, keep_fp: list[str], float_residual: bool) -> dict:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    arr = _check_data(load_npz(data)[0], data, model)
    name = read_model_info(model).input_name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{name: arr[i : i + 1]} for i in range(len(arr))])

        def get_next(self) -> dict | None:
            return next(self._it, None)

    calib = {"entropy": CalibrationMethod.Entropy, "max": CalibrationMethod.MinMax}[method]
    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        _quiet(quant_pre_process, str(model), str(pre), skip_symbolic_shape=True)
        _quiet(
            quantize_static,
            str(pre),
            str(out),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=keep_fp,
        )
        q = onnx.load(str(out))
    rewired = float_residuals(q, except_from=("Conv",)) if float_residual else 0
    import onnxruntime

    prov = {
        "placement": "onnxruntime",
        "method": method,
        "keep_fp": keep_fp,
        "float_residual_inputs": rewired,
        "samples": int(arr.shape[0]),
        "data_sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
        "tool": f"onnxruntime {onnxruntime.__version__}",
    }
    stamp_int8_metadata(q, onnx.load(str(model)), prov)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(q, str(output))
    return prov

"""Accuracy gate: the INT8 model against its float32 source on held-out photos.

It runs on a CPU backend of the runtime (ONNX Runtime by default; ``backend="openvino"``
judges the INT8 kernels OpenVINO really runs, which are not ONNX Runtime's float fallback).

Two questions, two floors: does INT8 reproduce float32 (PSNR between the outputs), and
does it lose quality where it matters (PSNR-Y vs the ground truth). A NaN anywhere fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.imresize import imresize
from runtime.metrics import psnr, psnr_y
from runtime.model_info import ModelIO

from .collect import CalibrationError, list_images, load_rgb, read_model_info, to_model_layout

__all__ = ["GATE_BACKENDS", "GateResult", "run_gate", "format_table", "DEFAULT_MIN_PSNR", "DEFAULT_MAX_LOSS"]

DEFAULT_MIN_PSNR = 40.0
"""dB, INT8 output vs float32 output, worst image."""
DEFAULT_MAX_LOSS = 0.3
"""dB, mean PSNR-Y(float32) − mean PSNR-Y(INT8) vs ground truth."""


@dataclass
class GateResult:
    """Per-image rows, the aggregates the floors apply to, and the verdict."""

    reference: str
    candidate: str
    backend: str = "onnxruntime"
    rows: list[dict] = field(default_factory=list)
    min_psnr_vs_fp32: float = math.nan
    mean_psnr_y_fp32: float = math.nan
    mean_psnr_y_int8: float = math.nan
    psnr_y_loss: float = math.nan
    max_abs_error: float = math.nan
    nan_count: int = 0
    floors: dict = field(default_factory=dict)
    passed: bool = False
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        def fix(v: object) -> object:  # JSON has no inf
            return "inf" if isinstance(v, float) and math.isinf(v) else v

        d = asdict(self)
        d["rows"] = [{k: fix(v) for k, v in r.items()} for r in self.rows]
        return json.dumps({k: fix(v) for k, v in d.items()}, indent=2)


GATE_BACKENDS = ("onnxruntime", "openvino")
"""The runtime's CPU backends the gate can run on."""


def _backend(path: Path, backend: str):
    """The runtime's host backend for ``path``, one whole image per call, exact float32."""
    from runtime.backends import OnnxRuntime, OpenVino, create_backend

    if backend not in GATE_BACKENDS:
        raise CalibrationError(f"gate backend must be one of {list(GATE_BACKENDS)}, got {backend!r}")
    options = OnnxRuntime() if backend == "onnxruntime" else OpenVino(cache=False)
    return create_backend(options, path)


def _run(runner, lr: np.ndarray, io: ModelIO) -> np.ndarray:
    """H×W×3 float64 output of one LR image."""
    out = runner.infer(to_model_layout(lr[None], io))[0]
    return io.hwc(out).astype(np.float64)


def run_gate(
    reference: Path,
    candidate: Path,
    images: Path,
    *,
    min_psnr: float = DEFAULT_MIN_PSNR,
    max_loss: float = DEFAULT_MAX_LOSS,
    backend: str = "onnxruntime",
) -> GateResult:
    """Compare ``candidate`` (INT8) with ``reference`` (float32) on every image of ``images``,
    both run by ``backend`` (one of :data:`GATE_BACKENDS`)."""
    ref_info = read_model_info(reference, what="reference model")
    cand_info = read_model_info(candidate, what="candidate model")
    if (ref_info.io, ref_info.scale) != (cand_info.io, cand_info.scale):
        raise CalibrationError(
            f"{candidate}: io/scale {cand_info.io.value} x{cand_info.scale} differ from the "
            f"reference {reference}: {ref_info.io.value} x{ref_info.scale} (expected the same)"
        )
    s = ref_info.scale
    res = GateResult(
        reference=str(reference),
        candidate=str(candidate),
        backend=backend,
        floors={"min_psnr_vs_fp32": min_psnr, "max_psnr_y_loss": max_loss},
    )
    paths = list_images(images, flag="--test-images")
    with _backend(reference, backend) as ref_run, _backend(candidate, backend) as cand_run:
        for path in paths:
            hr = load_rgb(path)
            hr = hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s]
            lr = imresize(hr, 1.0 / s)
            a = _run(ref_run, lr, ref_info.io)
            b = _run(cand_run, lr, cand_info.io)
            nans = int(np.isnan(b).sum())
            finite = np.nan_to_num(b, nan=0.0)
            res.rows.append(
                {
                    "image": path.name,
                    "psnr_vs_fp32": psnr(finite, a),
                    "psnr_y_fp32": psnr_y(a, hr, border=s),
                    "psnr_y_int8": psnr_y(finite, hr, border=s),
                    "max_abs_error": float(np.max(np.abs(finite - a))),
                    "nan_count": nans,
                }
            )
    rows = res.rows
    res.min_psnr_vs_fp32 = min(r["psnr_vs_fp32"] for r in rows)
    res.mean_psnr_y_fp32 = float(np.mean([r["psnr_y_fp32"] for r in rows]))
    res.mean_psnr_y_int8 = float(np.mean([r["psnr_y_int8"] for r in rows]))
    res.psnr_y_loss = res.mean_psnr_y_fp32 - res.mean_psnr_y_int8
    res.max_abs_error = max(r["max_abs_error"] for r in rows)
    res.nan_count = sum(r["nan_count"] for r in rows)
    if res.nan_count:
        res.failures.append(f"{res.nan_count} NaN values in the INT8 output (expected 0)")
    if not res.min_psnr_vs_fp32 >= min_psnr:
        res.failures.append(f"PSNR vs float32 {res.min_psnr_vs_fp32:.2f} dB (worst image) < floor {min_psnr} dB")
    if not res.psnr_y_loss <= max_loss:
        res.failures.append(f"PSNR-Y loss {res.psnr_y_loss:.3f} dB > allowed {max_loss} dB")
    res.passed = not res.failures
    return res


def format_table(res: GateResult) -> str:
    """A plain-text table, one row per image plus the aggregate and the verdict."""
    head = f"{'image':<22}{'vs fp32 dB':>11}{'PSNR-Y fp32':>13}{'PSNR-Y int8':>13}{'max err':>9}{'NaN':>5}"
    lines = [head, "-" * len(head)]
    for r in res.rows:
        lines.append(
            f"{r['image']:<22}{r['psnr_vs_fp32']:>11.2f}{r['psnr_y_fp32']:>13.3f}"
            f"{r['psnr_y_int8']:>13.3f}{r['max_abs_error']:>9.2f}{r['nan_count']:>5}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'min / mean':<22}{res.min_psnr_vs_fp32:>11.2f}{res.mean_psnr_y_fp32:>13.3f}"
        f"{res.mean_psnr_y_int8:>13.3f}{res.max_abs_error:>9.2f}{res.nan_count:>5}"
    )
    lines.append(
        f"PSNR-Y loss {res.psnr_y_loss:.3f} dB (allowed {res.floors['max_psnr_y_loss']}), "
        f"PSNR vs fp32 floor {res.floors['min_psnr_vs_fp32']} dB: "
        + ("PASS" if res.passed else "FAIL: " + "; ".join(res.failures))
    )
    return "\n".join(lines)

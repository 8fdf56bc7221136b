"""Arithmetic of a model and of the machine: convolution MACs counted from the ONNX graph, and
the CPU's nominal fp32 / INT8 peak from its flags and clock.

Why: a throughput figure alone does not say how far a backend is from what the silicon can
do. ``2 · MACs / seconds`` against the peak puts that distance on the page.

* **MACs from the graph.** Every ``Conv`` node costs ``N · H_out · W_out · C_out · (C_in /
  groups) · kh · kw`` multiply-accumulates. The output shapes are the ones ONNX Runtime
  actually produces (every Conv output is made a graph output and the model is run once on
  a small input), so dynamic-shape graphs (``Shape``/``Reshape`` chains that ONNX shape
  inference cannot follow) are counted right. The weights' shapes are read from the
  initializers, through a ``DequantizeLinear`` for Q/DQ INT8 graphs. Everything else
  (Add, Relu, DepthToSpace, Q/DQ) is left out: it is memory-bound and a few % of the work.
* **Linear in the pixels.** For a fully convolutional, same-padded network the MACs of an
  H×W input are ``k · H · W``. :func:`conv_macs_per_pixel` counts two input shapes and
  refuses a graph where they disagree, so extrapolating to any image or window is exact.
* **Peaks are nominal.** ``cores × GHz × FMA units × SIMD lanes × 2`` for fp32 and
  ``cores × GHz × units × (INT8 MACs per VNNI instruction) × 2`` for INT8, with the clock
  of ``/proc/cpuinfo`` (a VM reports its nominal TSC clock there; turbo and AVX-512
  down-clocking are not accounted for) and **two** 512-bit FMA units per core assumed (Xeon
  Gold/Platinum; Silver/Bronze and most client cores have one). AMX, where present, is
  reported beside it (1024 INT8 MACs per cycle per core), not used as the INT8 peak.

numpy and the standard library at import; onnx and onnxruntime are imported when counting.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import BenchmarkError

__all__ = ["ConvCount", "conv_macs", "conv_macs_per_pixel", "CpuPeaks", "cpu_flags", "cpu_mhz", "cpu_peaks"]

FMA_UNITS_ASSUMED = 2
"""512-bit (or 256-bit) FMA units per core assumed for the nominal peak."""


@dataclass(frozen=True)
class ConvCount:
    """MACs of one graph at one input shape."""

    height: int
    width: int
    macs: int
    convs: int


def _weight_shapes(model: Any) -> dict[str, list[int]]:
    """Conv weight input name → its shape, from initializers or through DequantizeLinear."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    consts = {}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = list(a.t.dims)
    known = {**consts, **inits}
    # Q/DQ graphs: weight -> QuantizeLinear -> DequantizeLinear -> Conv (or int8 weight -> DQ -> Conv)
    passes = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type in ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity")
    }
    shapes = {}
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        w = src = n.input[1]
        for _ in range(8):
            if src in known or src not in passes:
                break
            src = passes[src]
        if src not in known:
            raise BenchmarkError(f"Conv node {n.name!r}: weight {w!r} is neither an initializer nor a dequantized one")
        shapes[w] = known[src]
    return shapes


def conv_macs(onnx_path: str | os.PathLike[str], shapes: Iterable[tuple[int, int]]) -> list[ConvCount]:
    """Conv MACs of ``onnx_path`` (a float32-nchw graph, batch 1) at each ``(height, width)``."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise BenchmarkError(f"counting MACs needs onnx and onnxruntime: {exc}") from exc
    path = Path(onnx_path)
    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        raise BenchmarkError(f"{path}: no Conv node to count")
    weights = _weight_shapes(model)
    existing = {o.name for o in model.graph.output}
    for n in convs:
        if n.output[0] not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(n.output[0]))
    inp = model.graph.input[0]
    elem = inp.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT or len(inp.type.tensor_type.shape.dim) != 4:
        raise BenchmarkError(f"{path}: counting needs a float32 NCHW input, got {inp.name!r} of type {elem}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every Conv as written
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="bench-macs-") as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(model, str(probe))
        sess = ort.InferenceSession(str(probe), opts, providers=["CPUExecutionProvider"])
        names = [n.output[0] for n in convs]
        counts = []
        for h, w in shapes:
            x = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
            outs = sess.run(names, {inp.name: x})
            total = 0
            for n, y in zip(convs, outs):
                c_out, c_in_g, kh, kw = weights[n.input[1]]  # axis 1 is already C_in / groups
                if y.ndim != 4 or y.shape[1] != c_out:
                    raise BenchmarkError(f"{path}: Conv {n.name!r} output {y.shape} does not match weight {c_out}")
                total += int(y.shape[0]) * int(y.shape[2]) * int(y.shape[3]) * c_out * c_in_g * kh * kw
            counts.append(ConvCount(h, w, total, len(convs)))
    return counts


def conv_macs_per_pixel(onnx_path: str | os.PathLike[str]) -> dict[str, Any]:
    """MACs per input pixel of ``onnx_path``, checked to be the same at two input shapes.

    Returns ``{"macs_per_input_pixel", "convs", "probes": [...]}``; a graph whose MACs are
    not proportional to the input area (a fixed-size layer somewhere) is refused.
    """
    a, b = conv_macs(onnx_path, [(24, 20), (40, 36)])
    per_a, per_b = a.macs / (a.height * a.width), b.macs / (b.height * b.width)
    if abs(per_a - per_b) > 1e-9 * max(per_a, 1.0):
        raise BenchmarkError(
            f"{onnx_path}: Conv MACs are not proportional to the input area ({per_a:.1f} vs {per_b:.1f} per pixel "
            f"at {a.height}x{a.width} and {b.height}x{b.width}); cannot extrapolate"
        )
    return {"macs_per_input_pixel": per_a, "convs": a.convs, "probes": [asdict(a), asdict(b)]}


# --------------------------------------------------------------------------- the machine


def cpu_flags() -> list[str]:
    """The ``flags`` of the first processor in /proc/cpuinfo (empty elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    return []


def cpu_mhz() -> tuple[float | None, str]:
    """(clock in MHz, where it came from): /proc/cpuinfo's ``cpu MHz`` (first processor), or
    cpufreq's ``base_frequency`` / ``cpuinfo_max_freq`` where that exists."""
    for name in ("base_frequency", "cpuinfo_max_freq"):
        p = Path("/sys/devices/system/cpu/cpu0/cpufreq") / name
        with contextlib.suppress(OSError, ValueError):
            return int(p.read_text().strip()) / 1000, f"/sys/devices/system/cpu/cpu0/cpufreq/{name}"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]), "/proc/cpuinfo 'cpu MHz' (first processor)"
    return None, "unknown"


@dataclass(frozen=True)
class CpuPeaks:
    """Nominal per-core peaks and the assumptions they rest on."""

    mhz: float | None
    clock_source: str
    fp32_flops_per_cycle: int
    fp32_isa: str
    int8_ops_per_cycle: int | None
    int8_isa: str
    amx_int8_ops_per_cycle: int | None
    fma_units: int = FMA_UNITS_ASSUMED
    assumptions: list[str] = field(default_factory=list)

    def fp32_gflops(self, cores: int) -> float | None:
        return None if self.mhz is None else cores * self.mhz / 1e3 * self.fp32_flops_per_cycle

    def int8_gops(self, cores: int) -> float | None:
        if self.mhz is None or self.int8_ops_per_cycle is None:
            return None
        return cores * self.mhz / 1e3 * self.int8_ops_per_cycle

    def amx_gops(self, cores: int) -> float | None:
        if self.mhz is None or self.amx_int8_ops_per_cycle is None:
            return None
        return cores * self.mhz / 1e3 * self.amx_int8_ops_per_cycle

    def record(self, cores: Iterable[int]) -> dict[str, Any]:
        out = asdict(self)
        out["per_cores"] = {
            str(c): {
                "fp32_gflops": self.fp32_gflops(c),
                "int8_gops": self.int8_gops(c),
                "amx_int8_gops": self.amx_gops(c),
            }
            for c in cores
        }
        return out


def cpu_peaks(flags: Iterable[str] | None = None, mhz: float | None = None, clock_source: str = "given") -> CpuPeaks:
    """The nominal peaks of this CPU (or of ``flags`` / ``mhz`` when given)."""
    flags = set(cpu_flags() if flags is None else flags)
    if mhz is None:
        mhz, clock_source = cpu_mhz()
    units = FMA_UNITS_ASSUMED
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512 FMA"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2 FMA"
    elif "avx" in flags:
        lanes, isa = 8, "AVX (no FMA: mul + add)"
        units = 1
    else:
        lanes, isa = 4, "SSE (no FMA: mul + add)"
        units = 1
    fp32 = units * lanes * 2
    if "avx512_vnni" in flags:
        int8, int8_isa = FMA_UNITS_ASSUMED * 64 * 2, "AVX-512 VNNI (vpdpbusd: 64 u8×s8 MACs per instruction)"
    elif "avx_vnni" in flags:
        int8, int8_isa = FMA_UNITS_ASSUMED * 32 * 2, "AVX-VNNI (256-bit vpdpbusd: 32 MACs per instruction)"
    else:
        int8, int8_isa = None, "no VNNI"
    amx = 1024 * 2 if "amx_int8" in flags else None
    assumptions = [
        f"clock {mhz} MHz from {clock_source}: nominal; turbo and AVX-512 frequency licences are not accounted for",
        f"{FMA_UNITS_ASSUMED} vector FMA ports per core (Xeon Gold/Platinum; Silver/Bronze and client cores have 1)",
        f"fp32 peak = cores × GHz × {units} units × {lanes} lanes × 2 flops ({isa})",
        "INT8 peak = cores × GHz × units × MACs per instruction × 2 ops" if int8 else "no INT8 dot-product ISA",
        "a multiply-accumulate counts as 2 operations; only Conv MACs are counted",
        "physical cores = the benchmark's thread count (one thread per core)",
    ]
    if amx:
        assumptions.append("AMX-INT8 present: 1024 INT8 MACs per cycle per core (reported beside, not the INT8 peak)")
    return CpuPeaks(
        mhz=mhz,
        clock_source=clock_source,
        fp32_flops_per_cycle=fp32,
        fp32_isa=isa,
        int8_ops_per_cycle=int8,
        int8_isa=int8_isa,
        amx_int8_ops_per_cycle=amx,
        fma_units=units,
        assumptions=assumptions + ([] if platform.machine() in ("x86_64", "AMD64") else ["not an x86 CPU"]),
    )

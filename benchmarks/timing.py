"""Timing helpers of the throughput benchmarks: warm-up, repeats, percentiles, rates.

One copy for the CPU (``throughput.py``) and GPU (``throughput_gpu.py``) benchmarks, so
"median" and "p90" mean the same in both. Work queued asynchronously (CUDA) is only
finished when synchronised: :func:`time_calls` takes a ``sync`` hook for that, and
:func:`time_cuda_events` times on the device itself. numpy only (torch imported by the
CUDA timer when called).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = ["time_calls", "time_cuda_events", "percentile", "rates", "summarize"]

T = TypeVar("T")


def time_calls(
    fn: Callable[[], T], warmup: int, repeats: int, *, sync: Callable[[], None] | None = None
) -> tuple[list[float], T | None]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, and
    the last call's result. ``sync`` (e.g. ``torch.cuda.synchronize``) runs after the
    warm-up and inside each timed call's interval, so queued device work is counted."""
    out = None
    for _ in range(warmup):
        out = fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return times, out


def time_cuda_events(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` measured with CUDA events on the current
    stream (device time, no host overhead between the events) after ``warmup`` calls."""
    import torch

    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def rates(seconds: float, width: int, height: int, scale: int) -> dict[str, float]:
    """Input and output megapixels per second and images per second of one W×H image
    upscaled ×``scale`` in ``seconds`` (inf for a zero time)."""
    in_mp = width * height / 1e6
    out_mp = in_mp * scale * scale
    return {
        "input_mp_per_s": in_mp / seconds if seconds > 0 else float("inf"),
        "output_mp_per_s": out_mp / seconds if seconds > 0 else float("inf"),
        "images_per_s": 1.0 / seconds if seconds > 0 else float("inf"),
    }


def summarize(times: Sequence[float], width: int, height: int, scale: int) -> dict[str, Any]:
    """All timed seconds, min / median / p90 / max, and the :func:`rates` of the median."""
    med = statistics.median(times)
    return {
        "times_s": list(times),
        "min_s": min(times),
        "median_s": med,
        "p90_s": percentile(times, 90),
        "max_s": max(times),
        **rates(med, width, height, scale),
    }

"""Resident-memory probes of the benchmarks: the peak so far, and a per-row peak.

``ru_maxrss`` only ever grows: it is the high-water mark of the whole process. On Linux
the kernel's mark (``VmHWM``) can be reset by writing ``5`` to ``/proc/self/clear_refs``,
which gives a row its own peak. stdlib only: the memory benchmark's measuring process
imports this and must stay free of torch.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

__all__ = ["proc_status_kib", "peak_rss_mib", "reset_peak_rss", "row_peak_rss_mib"]


def proc_status_kib(field: str) -> int | None:
    """A ``Vm*`` line of /proc/self/status (``VmRSS``, ``VmHWM``) in KiB; None without /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> float | None:
    """Reset the kernel's peak-RSS mark so that the next :func:`row_peak_rss_mib` is the peak
    from now on, not the process's running maximum; returns the current RSS in MiB, or
    None where the reset is unavailable (then only :func:`peak_rss_mib` means anything)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    kib = proc_status_kib("VmRSS")
    return None if kib is None else kib / 1024


def row_peak_rss_mib() -> float | None:
    """The peak RSS in MiB since the last :func:`reset_peak_rss` (``VmHWM``), None without /proc."""
    kib = proc_status_kib("VmHWM")
    return None if kib is None else kib / 1024

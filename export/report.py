"""Where and how a measurement was made, and its JSON + Markdown result files.

For the export package's own measurement (``export/activation_range.py``). The
benchmarks record the same environment with more detail; export must not import
``benchmarks``, so this is the small subset that tool's results carry: date, command,
host, library versions and the git commit.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from runtime.utils import atomic_write_bytes

__all__ = ["environment", "fmt_float", "markdown_table", "write_results"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict[str, Any]:
    """Date, command line, host, library versions and git commit of this run."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]) if sys.argv and sys.argv[0] else None,
        "host": {
            "cpu": _cpu_model(),
            "platform": platform.platform(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": _version("onnxruntime"),
            "torch": _version("torch"),
            "pillow": _version("Pillow"),
        },
        "git": {"commit": commit, "dirty": bool(status) if status is not None else None},
    }


def fmt_float(x: float | None, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals; None as "-", infinities and NaN by name."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}f}"


def _numeric(text: str) -> bool:
    try:
        float(text.replace("×", ""))
        return True
    except ValueError:
        return text in {"inf", "-inf", "nan", "-"}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells are str()-ed, numeric columns right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [bool(cells) and all(_numeric(r[i]) for r in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def _json_safe(obj: Any) -> Any:
    """Strict JSON: non-finite floats as the strings "inf"/"-inf"/"nan", numpy scalars as numbers."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(out: Path, name: str, data: dict[str, Any], markdown: str) -> dict[str, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; returns their paths."""
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md"}
    atomic_write_bytes(paths["json"], (json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n").encode())
    atomic_write_bytes(paths["md"], (markdown.rstrip() + "\n").encode())
    return paths

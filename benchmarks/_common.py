"""What every benchmark script shares: the environment record, result files, Markdown
tables, model resolution (.onnx as is, .safetensors exported to a temporary ONNX first),
image listing/loading, and a lazily imported matplotlib.

Only numpy, Pillow and ``runtime`` are imported at module level: torch (for exporting a
checkpoint) and matplotlib (for plots) are imported when first needed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cli_help import DefaultsHelpFormatter

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

__all__ = [
    "REPO_ROOT",
    "DEFAULT_OUT",
    "IMAGE_SUFFIXES",
    "BenchmarkError",
    "expected_errors",
    "HelpFormatter",
    "add_common_args",
    "environment",
    "package_version",
    "git_commit",
    "markdown_table",
    "fmt_float",
    "json_safe",
    "write_results",
    "PreparedModel",
    "file_sha256",
    "prepared_model",
    "backend_options",
    "list_images",
    "load_image_uint8",
    "import_pyplot",
    "parse_int_list",
]


class BenchmarkError(Exception):
    """A benchmark cannot run as asked (bad input, missing model); the message says why."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors a script reports as one line and exit status 2 (not a traceback)."""
    from runtime.errors import UpscaleError

    return (BenchmarkError, UpscaleError)


class HelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (except meaningless ones) and keeps the description's line breaks."""


def add_common_args(p: argparse.ArgumentParser, *, name: str) -> None:
    """--out, --name, --threads, --backend: the same on every script."""
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder for the JSON, Markdown and PNG results (default: benchmarks/results/ of the repository)")
    p.add_argument("--name", default=name, help="stem of the result files (<out>/<name>.json, .md, .png)")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice, all physical cores)")
    p.add_argument("--backend", default="auto", help="runtime backend name (auto, onnxruntime)")


def parse_int_list(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] for argparse ``type=``."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


# --------------------------------------------------------------------------- environment


def package_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it (importing torch costs
    seconds and hundreds of MB, which the memory benchmark must not pay)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(name)
        return getattr(module, "__version__", None) if module else None


def git_commit() -> dict[str, Any]:
    """HEAD's hash and whether the working tree has uncommitted changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    """The CPU's model name from lscpu (or /proc/cpuinfo), else platform.processor()."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"})
        for line in out.stdout.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def environment(*, threads: int | None = None) -> dict[str, Any]:
    """Where and how a result was produced: goes at the top of every JSON file."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]) if sys.argv and sys.argv[0] else None,
        "host": {
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": usable,
            "nice": os.nice(0) if hasattr(os, "nice") else None,
        },
        "threads": {"onnxruntime_intra_op": threads if threads is not None else "default"},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
            "torch": package_version("torch"),
            "pillow": package_version("Pillow"),
        },
        "git": git_commit(),
    }


# --------------------------------------------------------------------------- results


def fmt_float(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells are str()-ed, numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [bool(cells) and all(_looks_numeric(r[i]) for r in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def _looks_numeric(s: str) -> bool:
    try:
        float(s.replace("%", "").replace("×", "").replace("+", "").replace(" ✓", ""))
        return True
    except ValueError:
        return s in {"inf", "-inf", "nan", "-"}


def json_safe(obj: Any) -> Any:
    """Make ``obj`` strict JSON: inf/nan floats become the strings "inf"/"-inf"/"nan",
    numpy scalars plain numbers, Paths strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(out: Path, name: str, data: dict[str, Any], markdown: str) -> dict[str, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md"}
    paths["json"].write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    paths["md"].write_text(markdown.rstrip() + "\n")
    return paths


def import_pyplot():  # noqa: ANN201 - matplotlib may be missing
    """matplotlib.pyplot with the non-interactive Agg backend, or None when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed, no plot written (pip install matplotlib)", file=sys.stderr)
        return None
    return plt


# --------------------------------------------------------------------------- models


@dataclass
class PreparedModel:
    """An ONNX file ready for ``runtime.Upscaler`` and what it came from."""

    onnx_path: Path
    description: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def prepared_model(model: str | os.PathLike | None, *, exporter: str = "dynamo") -> Iterator[PreparedModel]:
    """Yield an ONNX model for ``model``: None → the bundled default, ``.onnx`` → as is,
    ``.safetensors`` → exported (×4, float32-nchw, not validated) to a temporary file that
    is removed afterwards. Exporting needs torch (the ``train`` extra)."""
    if model is None:
        from runtime.upscaler import default_model_path

        path = default_model_path()
        if not path.is_file():
            raise BenchmarkError(
                f"the bundled model {path} is not there (yet); pass --model an .onnx file or a "
                ".safetensors checkpoint"
            )
        yield PreparedModel(path, {"source": "bundled", "path": str(path), "sha256": file_sha256(path)})
        return
    path = Path(model)
    if not path.is_file():
        raise BenchmarkError(f"--model {path}: no such file (expected an .onnx model or a .safetensors checkpoint)")
    if path.suffix.lower() == ".onnx":
        yield PreparedModel(path, {"source": "onnx", "path": str(path), "sha256": file_sha256(path)})
        return
    if path.suffix.lower() != ".safetensors":
        raise BenchmarkError(f"--model {path}: unknown model type {path.suffix!r}; pass an .onnx or .safetensors file")
    try:
        from export.to_onnx import export_onnx
    except ImportError as exc:
        raise BenchmarkError(
            f"exporting {path} to ONNX needs the train extra (torch, onnx): {exc}; pip install -e '.[train]'"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        onnx_path = Path(tmp) / (path.stem + ".x4.onnx")
        try:
            export_onnx(path, onnx_path, scale=4, io="float32-nchw", validate=False, exporter=exporter)
        except Exception as exc:  # CheckpointError, ExportError, exporter failures: say which file
            raise BenchmarkError(f"--model {path}: cannot export it to ONNX: {exc}") from exc
        yield PreparedModel(
            onnx_path,
            {"source": "checkpoint", "path": str(path), "sha256": file_sha256(path), "exported_with": exporter},
        )


def backend_options(threads: int | None) -> dict[str, Any]:
    return {} if threads is None else {"intra_op_threads": threads}


# --------------------------------------------------------------------------- images


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_uint8(path: Path) -> np.ndarray:
    """An 8-bit H×W (gray) or H×W×3 (colour) array: alpha dropped, 16-bit scaled to 8."""
    from runtime.image_io import read_image

    array, _info = read_image(path)
    array = np.asarray(array)
    if array.dtype == np.uint16:
        array = np.clip(np.round(array / 257.0), 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise BenchmarkError(f"{path}: expected an 8- or 16-bit image, got {array.dtype}")
    channels = array.shape[2]
    if channels in (1, 2):  # gray (+ alpha)
        return np.ascontiguousarray(array[:, :, 0])
    return np.ascontiguousarray(array[:, :, :3])

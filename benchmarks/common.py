"""What every benchmark script shares: the flags every script has, the refusal to write
results from a dirty tree, the result record and files, and model preparation (.onnx as
is, .safetensors exported to a temporary ONNX first).

The environment record, result files and Markdown tables live in :mod:`runtime.results`
(``train.evaluate`` writes the same files and may not import ``benchmarks``); they are
re-exported here so a script imports its helpers from one place. Timing is
:mod:`benchmarks.timing`, resident-memory probes :mod:`benchmarks.rss`.

Only numpy, Pillow and ``runtime`` are imported at module level: torch (for exporting a
checkpoint) and matplotlib (for plots) are imported when first needed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import results as _results
from runtime.backends import BackendOptions, resolve
from runtime.errors import UpscaleError
from runtime.evaluation import load_image_uint8
from runtime.results import (
    GitState,
    add_allow_dirty,
    commit_label,
    environment,
    fmt_float,
    git_state,
    json_safe,
    markdown_table,
    package_version,
    write_results,
)
from runtime.results import (
    require_clean_tree as _require_clean_tree,
)
from runtime.utils import DefaultsHelpFormatter, file_sha256

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

__all__ = [
    "REPO_ROOT",
    "DEFAULT_OUT",
    "BenchmarkError",
    "DirtyTreeError",
    "HelpFormatter",
    "add_common_args",
    "add_out_args",
    "results_dir",
    "add_allow_dirty",
    "require_clean_tree",
    "parse_int_list",
    "parse_sizes",
    "parse_choices",
    "PreparedModel",
    "prepared_model",
    "backend_for",
    "with_border",
    "import_pyplot",
    # from runtime.results / runtime.evaluation, one copy for benchmarks and train.evaluate
    "GitState",
    "git_state",
    "environment",
    "commit_label",
    "package_version",
    "markdown_table",
    "fmt_float",
    "json_safe",
    "write_results",
    "load_image_uint8",
]


class BenchmarkError(UpscaleError):
    """A benchmark cannot run as asked (bad input, missing model); the message says why."""


class HelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (except meaningless ones) and keeps the description's line breaks."""


# --------------------------------------------------------------------------- arguments


def add_out_args(p: argparse.ArgumentParser, *, what: str = "folder for the JSON, Markdown and PNG results") -> None:
    """--out and --update-results: results go to a fresh temporary folder unless ``--out``
    names one; the committed ``benchmarks/results/`` is written only with ``--update-results``
    (a trial run must not overwrite them). Resolve with :func:`results_dir` after parsing."""
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"{what} (default: a fresh temporary folder, printed; --update-results: benchmarks/results/)",
    )
    p.add_argument(
        "--update-results",
        action="store_true",
        help="write the committed results in benchmarks/results/ (needs a clean tree unless --allow-dirty)",
    )


def results_dir(
    args: argparse.Namespace, parser: argparse.ArgumentParser, *, committed: Path = DEFAULT_OUT, stem: bool = False
) -> Path:
    """Where ``args`` (from :func:`add_out_args`) sends the results, also set as ``args.out``.

    ``--update-results``: ``committed``; ``--out``: that; neither: a new temporary folder
    (named after ``--name``), said on stderr. A temporary folder is for looking at, so there
    the dirty-tree refusal is waived (the record still says ``dirty``). With ``stem``,
    ``--out`` and ``committed`` are file stems (int8_gate.py), and the temporary default
    keeps the committed stem's name.
    """
    if args.update_results and args.out is not None and args.out.resolve() != committed.resolve():
        parser.error(f"--out {args.out} and --update-results exclude each other (that writes {committed})")
    if args.update_results:
        args.out = committed
    elif args.out is None:
        prefix = getattr(args, "name", None) or (committed.name if stem else "results")
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        args.out = folder / committed.name if stem else folder
        if hasattr(args, "allow_dirty"):
            args.allow_dirty = True
        print(f"results go to {folder} (benchmarks/results/ is written only with --update-results)", file=sys.stderr)
    return args.out


def add_common_args(p: argparse.ArgumentParser, *, name: str) -> None:
    """--out, --update-results, --name, --threads, --backend, --allow-dirty: the same on every script."""
    add_out_args(p)
    p.add_argument("--name", default=name, help="stem of the result files (<out>/<name>.json, .md, .png)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice, all physical cores)",
    )
    p.add_argument("--backend", default="auto", help="runtime backend name (auto, onnxruntime)")
    add_allow_dirty(p)


def parse_int_list(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] for argparse ``type=``."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'120x68,240x135' -> [(120, 68), (240, 135)] (width, height) for argparse ``type=``."""
    sizes = []
    for item in (t for t in text.split(",") if t.strip()):
        m = _SIZE_RE.match(item)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated WIDTHxHEIGHT sizes of positive integers (e.g. 120x68,240x135), "
                f"got {item.strip()!r} in {text!r}"
            )
        sizes.append((int(m.group(1)), int(m.group(2))))
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected at least one WIDTHxHEIGHT size, got {text!r}")
    return sizes


def parse_choices(flag: str, choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type=`` for a comma-separated subset of ``choices`` (order kept, duplicates dropped)."""

    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"{flag}: expected comma-separated values out of {','.join(choices)}, got {text!r}"
            )
        return names

    return parse


# --------------------------------------------------------------------------- dirty tree


class DirtyTreeError(BenchmarkError, _results.DirtyTreeError):
    """Results would be written from a tree that differs from the commit they record."""


def require_clean_tree(allow_dirty: bool, *, root: str | os.PathLike[str] | None = None) -> GitState:
    """:func:`runtime.results.require_clean_tree` for this repository (``root`` overrides)."""
    try:
        return _require_clean_tree(allow_dirty, root=root if root is not None else REPO_ROOT)
    except _results.DirtyTreeError as exc:
        raise DirtyTreeError(str(exc)) from None


# --------------------------------------------------------------------------- plots


def import_pyplot():
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
                f"the bundled model {path} is not there (yet); pass --model an .onnx file or a .safetensors checkpoint"
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


def backend_for(name: str, threads: int | None, model: str | os.PathLike[str] | None = None) -> BackendOptions:
    """Typed options for ``--backend NAME`` and ``--threads`` (the CPU backends' inference
    threads: ONNX Runtime's intra-op pool, OpenVINO's INFERENCE_NUM_THREADS; GPU backends have
    no such field and ignore it). ``"auto"`` is resolved for ``model``."""
    options = resolve(name, model)
    if threads is not None and "threads" in {f.name for f in dataclasses.fields(options)}:
        options = dataclasses.replace(options, threads=threads)
    return options


def with_border(run: Callable[[Any], Any], border: int, scale: int, mode: str | None = None) -> Callable[[Any], Any]:
    """``run`` (H×W×C -> sH×sW×C) as the Upscaler computes it: on the image with ``border``
    pixels of mirrored context (:func:`runtime.tiling.pad_border`; ``mode`` a numpy.pad mode,
    default the runtime's), cropped back. A whole-image reference for a runtime whose border
    context is ``border`` (its halo); ``border`` 0 returns ``run`` itself."""
    from runtime.tiling import BORDER_MODE, pad_border

    if border == 0:
        return run
    crop = scale * border
    fill: Any = mode or BORDER_MODE

    def bordered(image: Any) -> Any:
        out = run(pad_border(image, border, fill))
        return out[crop:-crop, crop:-crop]

    return bordered

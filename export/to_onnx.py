"""Export one scale path of a 4PP-EUSR checkpoint to ONNX, and check it against PyTorch.

    python export/to_onnx.py CHECKPOINT -o model.onnx                 # ×4, float32 NCHW
    python export/to_onnx.py CHECKPOINT -o model.onnx --io both       # + model.uint8.onnx
    python -m export.to_onnx CHECKPOINT -o x2.onnx --scale 2 --io uint8-nhwc
    python export/to_onnx.py CHECKPOINT -o model.onnx --precision fp16  # fp16 inside, same I/O
    python export/to_onnx.py CHECKPOINT -o m.onnx --precision both --io both
        # m.onnx, m.uint8.onnx, m.fp16.onnx, m.fp16.uint8.onnx

The graph has dynamic batch, height and width (opset >= 17, default 18), constant-folded,
in eval mode, and carries a JSON description under the ``metadata_props`` key
``fourpp_eusr`` (see :func:`build_metadata`), which ``runtime`` reads. I/O contracts are
described in ``export/onnx_io.py``.

Exporter: torch.onnx's dynamo exporter (``torch.export`` + onnxscript, the default of
torch >= 2.9) with ``torch.export.Dim`` for batch/height/width; its output dimensions come
out as ``4*height``/``4*width``. ``exporter="torchscript"`` selects the deprecated
TorchScript exporter (``dynamo=False``), faster to run and kept as a fallback.

Unless told not to, every export is validated before it is written: ``onnx.checker``
(full check), the graph's I/O signature (names, dtypes, dynamic axes), then ONNX Runtime
(CPU) against PyTorch on random inputs and on crops of real photos of odd sizes, batch 1
and 3. Float path: PSNR >= 80 dB and max abs error <= 0.05 grey levels; uint8 path: within
1 level of the PyTorch float output rounded and clipped by numpy. When both I/O variants
of a precision are exported, the uint8 graph must also equal the float graph rounded
within 1 level on the same inputs. The file appears at its path (temp file +
``os.replace``) only after all checks pass; with several variants none is written unless
all pass.

``--precision fp16`` (or ``both``) exports the path with its layers in float16 between
float32 edges (``export/fp16.py`` says why this beats the converters): the I/O contract
is unchanged, the metadata gains ``"precision": "fp16"``. It is checked against the
float32 PyTorch model on the same inputs, twice: as ONNX Runtime (CPU) runs the graph
(which on x86 upcasts the convolutions) and as an fp16-rounding twin
(:func:`export.fp16.emulate_fp16`) that rounds every fp16 tensor as a GPU would store it.
Both must be finite with PSNR >= 60 dB (float path) or within 1 level (uint8 path).

Exit status: 0 success, 1 validation or export failure, 2 bad arguments or input
(missing/invalid checkpoint, scale not in the model, unwritable output).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from export.fp16 import check_precision, emulate_fp16, precision_module
from export.onnx_io import (
    INPUT_NAME,
    METADATA_FORMAT,
    OUTPUT_NAME,
    ModelIO,
    Precision,
    export_paths,
    parse_io,
    parse_precision,
    read_metadata,
    set_metadata,
    wrap_for_io,
)
from runtime.cli_help import DefaultsHelpFormatter
from runtime.metrics import psnr, quantize
from train.checkpoint import CheckpointError, file_sha256, load_model
from train.models.eusr import CONFIGS, EUSR

__all__ = [
    "DEFAULT_HALO",
    "DEFAULT_OPSET",
    "DEFAULT_IMAGES",
    "ExportError",
    "ExportValidationError",
    "ExporterFailure",
    "ModelSource",
    "CaseResult",
    "ValidationReport",
    "load_source",
    "build_metadata",
    "build_onnx",
    "validate_onnx",
    "export_onnx",
    "export_onnx_variants",
    "export_onnx_all",
    "cross_check_io",
    "MIN_PSNR_FP16_DB",
    "main",
]

DEFAULT_HALO = 16
"""Context pixels (input resolution) the runtime should keep around each tile; stored as
``recommended_halo`` in the metadata. To be tuned against the network's receptive field."""

DEFAULT_OPSET = 18
"""The dynamo exporter's native opset; 17 works too but goes through a version converter."""

MIN_OPSET = 17
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO_ROOT / "data" / "photos" / "test"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
EXPORTERS = ("dynamo", "torchscript")

# Acceptance limits (grey levels on the 0..255 scale).
MIN_PSNR_DB = 80.0
MAX_ABS_ERR_FLOAT = 0.05
MAX_ABS_ERR_UINT8 = 1
MIN_PSNR_FP16_DB = 60.0
"""fp16 graphs vs the float32 model (float path; the uint8 path keeps MAX_ABS_ERR_UINT8).
Read when a check runs, so a test can raise it to see the exporter refuse."""

# Validation cases: (name, batch, height, width, source). Odd sizes, batch 1 and 3, small
# enough to run the paper configuration on a CPU in seconds.
CASES: tuple[tuple[str, int, int, int, str], ...] = (
    ("random", 1, 17, 23, "random"),
    ("random", 3, 11, 13, "random"),
    ("photo", 1, 37, 53, "photo"),
    ("photo", 3, 24, 31, "photo"),
)

_TRAINING_ONLY_OPS = {"Dropout", "BatchNormalization"}  # EUSR has neither; exports must not


class ExportError(Exception):
    """Export cannot proceed or failed: bad argument, scale not in the model, unwritable output."""


class ExporterFailure(ExportError):
    """torch.onnx.export itself failed or produced something other than asked for."""


class ExportValidationError(ExportError):
    """The exported graph failed a check; ``.report`` holds the comparison (None for
    structural failures such as onnx.checker or the I/O signature)."""

    def __init__(self, message: str, report: "ValidationReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- source model


@dataclass(frozen=True)
class ModelSource:
    """A multi-scale EUSR and where it came from (for the metadata)."""

    model: EUSR
    config_name: str
    checkpoint: Path | None = None
    checkpoint_sha256: str | None = None


def _known_config_name(model: EUSR) -> str:
    for name, config in CONFIGS.items():
        if config == model.config:
            return name
    return "custom"


def _checkpoint_config_name(path: Path) -> str | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("config_name")
    except Exception:  # load_model has read the file already; the name is informational
        return None


def load_source(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike, *, config_name: str | None = None
) -> ModelSource:
    """An EUSR from a checkpoint path (``train.checkpoint.load_model``; raises
    ``CheckpointError``) or an in-memory model (``checkpoint_sha256`` is then None)."""
    if isinstance(model_or_checkpoint, ModelSource):
        return model_or_checkpoint
    if isinstance(model_or_checkpoint, EUSR):
        name = config_name or _known_config_name(model_or_checkpoint)
        return ModelSource(model=model_or_checkpoint, config_name=name)
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        path = Path(model_or_checkpoint)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        sha = file_sha256(path)
        model = load_model(path)
        name = config_name or _checkpoint_config_name(path) or _known_config_name(model)
        return ModelSource(model=model, config_name=name, checkpoint=path, checkpoint_sha256=sha)
    raise TypeError(
        f"expected an EUSR model or a checkpoint path, got {type(model_or_checkpoint).__name__}"
    )


def _check_scale(model: EUSR, scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in model.scales:
        raise ExportError(
            f"scale {scale!r} is not a path of this model; it has scales {list(model.scales)}; "
            f"pass one of them (--scale {' | '.join(map(str, model.scales))})"
        )
    return scale


# --------------------------------------------------------------------------- export


def build_metadata(
    source: ModelSource, *, scale: int, io: str | ModelIO, opset: int, halo: int = DEFAULT_HALO, exporter: str = "dynamo",
    precision: str | Precision = Precision.FP32,
) -> dict[str, Any]:
    """The ``fourpp_eusr`` JSON object (format 1) that ``runtime.model_info`` reads (it
    ignores keys it does not know). ``"precision": "fp16"`` only for fp16 graphs; absent
    means float32 (see :class:`export.onnx_io.Precision`)."""
    meta = {
        "format": METADATA_FORMAT,
        "scale": int(scale),
        "io": parse_io(io).value,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "value_range": [0, 255],
        "config_name": source.config_name,
        "config": source.model.config.to_dict(),
        "checkpoint_sha256": source.checkpoint_sha256,
        "recommended_halo": int(halo),
        "exporter": {"torch": torch.__version__, "opset": int(opset), "onnx": onnx.__version__, "method": exporter},
    }
    if parse_precision(precision) is Precision.FP16:
        meta["precision"] = Precision.FP16.value
    return meta


def _doc_string(meta: dict[str, Any]) -> str:
    s = meta["scale"]
    if meta["io"] == ModelIO.FLOAT32_NCHW.value:
        sig = f"'lr' float32 [N,3,H,W] RGB 0..255 -> 'sr' float32 [N,3,{s}H,{s}W] (not clipped)"
    else:
        sig = f"'lr' uint8 [N,H,W,3] RGB -> 'sr' uint8 [N,{s}H,{s}W,3] (rounded half-to-even, clipped)"
    src = f"checkpoint sha256 {meta['checkpoint_sha256']}" if meta["checkpoint_sha256"] else "in-memory model"
    if meta.get("precision") == Precision.FP16.value:
        sig += "; computes in float16 between float32 edges"
    return (
        f"4PP-EUSR x{s} super-resolution, config {meta['config_name']!r}; {sig}; "
        f"{src}; exported by export/to_onnx.py; JSON metadata under 'fourpp_eusr'."
    )


def _producer_version() -> str:
    try:
        from importlib.metadata import version

        return version("fourpp-eusr")
    except Exception:
        return "0+unknown"


@contextlib.contextmanager
def _quiet_exporter(verbose: bool):
    """Silence the exporter's warnings and log lines (missing torchvision ops, opset
    conversion notes, deprecations) unless ``verbose``."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*version conversion.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """eval() for the export, the caller's mode restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.train(training)


def build_onnx(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike,
    *,
    scale: int = 4,
    io: str | ModelIO = ModelIO.FLOAT32_NCHW,
    opset: int = DEFAULT_OPSET,
    halo: int = DEFAULT_HALO,
    exporter: str = "dynamo",
    verbose: bool = False,
    precision: str | Precision = Precision.FP32,
):
    """Export one path to an in-memory ``onnx.ModelProto`` with metadata (not validated).
    ``precision="fp16"``: the layers in float16 between float32 edges, same I/O."""
    io = parse_io(io)
    try:
        precision = parse_precision(precision)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    if isinstance(halo, bool) or not isinstance(halo, int) or halo < 0:
        raise ExportError(f"halo must be an int >= 0, got {halo!r}")
    source = load_source(model_or_checkpoint)
    scale = _check_scale(source.model, scale)

    param = next(source.model.parameters())
    # Distinct, non-trivial example sizes so that no dimension is specialised or unified.
    n, h, w = 2, 24, 32
    if io is ModelIO.FLOAT32_NCHW:
        example = torch.rand(n, 3, h, w, device=param.device) * 255
        axes = {0: "batch", 2: "height", 3: "width"}
        out_axes = {0: "batch", 2: f"{scale}*height", 3: f"{scale}*width"}
    else:
        example = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, device=param.device)
        axes = {0: "batch", 1: "height", 2: "width"}
        out_axes = {0: "batch", 1: f"{scale}*height", 2: f"{scale}*width"}

    with _eval_mode(source.model), _quiet_exporter(verbose):
        module = wrap_for_io(precision_module(source.model, scale, precision), io).eval()
        try:
            if exporter == "dynamo":
                dims = {k: torch.export.Dim(v) for k, v in axes.items()}
                program = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=(dims,),
                    opset_version=opset,
                    optimize=True,  # constant folding and graph clean-up
                    verbose=verbose,
                )
                proto = program.model_proto
            else:
                import io as _io

                buf = _io.BytesIO()
                torch.onnx.export(
                    module,
                    (example,),
                    buf,
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: out_axes},
                    opset_version=opset,
                    do_constant_folding=True,
                    training=torch.onnx.TrainingMode.EVAL,
                    verbose=bool(verbose),
                )
                proto = onnx.load_from_string(buf.getvalue())
        except ExportError:
            raise
        except Exception as e:
            raise ExporterFailure(
                f"torch.onnx.export ({exporter}) failed for the x{scale} {io.value} {precision.value} path: {e}"
            ) from e

    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ExporterFailure(
            f"the {exporter} exporter produced opset {got}, not the requested {opset}; "
            f"use --opset {DEFAULT_OPSET} (or --exporter torchscript for {opset})"
        )
    _strip_trace_metadata(proto)
    meta = build_metadata(source, scale=scale, io=io, opset=opset, halo=halo, exporter=exporter, precision=precision)
    set_metadata(proto, meta)
    proto.producer_name = "fourpp-eusr export/to_onnx.py"
    proto.producer_version = _producer_version()
    proto.doc_string = _doc_string(meta)
    tag = "" if precision is Precision.FP32 else f"_{precision.value}"
    proto.graph.name = f"eusr_x{scale}_{io.value.replace('-', '_')}{tag}"
    return proto


def _strip_trace_metadata(proto) -> None:
    """Drop the exporter's per-node debug annotations (Python stack traces with local file
    paths, FX node text): two thirds of a small file, and they make the bytes depend on
    where the repository lies, which would defeat an engine cache keyed on the ONNX hash."""
    graph = proto.graph
    for items in (graph.node, graph.input, graph.output, graph.value_info, graph.initializer):
        for item in items:
            del item.metadata_props[:]
            item.doc_string = ""
    del graph.metadata_props[:]
    del proto.metadata_props[:]


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, kw_only=True)
class CaseResult:
    """One comparison of ONNX Runtime against PyTorch."""

    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    psnr_db: float
    max_abs_err: float
    passed: bool
    why: str = ""  # on failure: which limit, by how much

    def row(self) -> str:
        shape = "x".join(map(str, self.input_shape)) + " -> " + "x".join(map(str, self.output_shape))
        p = "inf" if math.isinf(self.psnr_db) else f"{self.psnr_db:.1f}"
        return f"{self.name:<28} {shape:<30} {p:>8} {self.max_abs_err:>12.4g}  {'ok' if self.passed else 'FAIL'}"


@dataclass(frozen=True, kw_only=True)
class ValidationReport:
    io: ModelIO
    scale: int
    cases: tuple[CaseResult, ...]
    limits: str
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    precision: Precision = Precision.FP32
    against: str = "ONNX Runtime CPU vs PyTorch"
    label: str = "validation"

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if not c.passed)

    def table(self) -> str:
        head = f"{'case':<28} {'input -> output shape':<30} {'PSNR dB':>8} {'max abs err':>12}  result"
        what = self.io.value if self.precision is Precision.FP32 else f"{self.io.value} {self.precision.value}"
        title = f"{self.label} x{self.scale} {what} ({self.against}; {self.limits})"
        lines = [title, head, "-" * len(head)]
        lines += [c.row() for c in self.cases]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"FAILED {c.name}: {c.why}" for c in self.failures]
        return "\n".join(lines)

    def summary(self) -> str:
        if self.passed:
            return f"{self.label} passed: {len(self.cases)} cases in {self.seconds:.1f} s"
        return f"{self.label} failed: " + "; ".join(f"{c.name}: {c.why}" for c in self.failures)


def _as_proto(onnx_model: Any) -> onnx.ModelProto:
    if isinstance(onnx_model, onnx.ModelProto):
        return onnx_model
    if isinstance(onnx_model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(onnx_model))
    if isinstance(onnx_model, (str, os.PathLike)):
        path = Path(onnx_model)
        if not path.is_file():
            raise ExportError(f"{path}: no such ONNX file")
        return onnx.load(str(path))
    raise TypeError(f"expected an onnx.ModelProto, bytes or a path, got {type(onnx_model).__name__}")


def _check_graph(proto, io: ModelIO) -> None:
    """Names, dtypes, ranks and dynamic axes of the graph's I/O; no training-only ops."""
    from onnx import TensorProto

    problems = []
    elem = TensorProto.FLOAT if io is ModelIO.FLOAT32_NCHW else TensorProto.UINT8
    dyn_axes, chan_axis = ((0, 2, 3), 1) if io is ModelIO.FLOAT32_NCHW else ((0, 1, 2), 3)
    for kind, values, name in (("input", proto.graph.input, INPUT_NAME), ("output", proto.graph.output, OUTPUT_NAME)):
        if [v.name for v in values] != [name]:
            problems.append(f"{kind}s are {[v.name for v in values]}, expected [{name!r}]")
            continue
        t = values[0].type.tensor_type
        dims = t.shape.dim
        if t.elem_type != elem:
            got, want = TensorProto.DataType.Name(t.elem_type), TensorProto.DataType.Name(elem)
            problems.append(f"{kind} {name!r} has element type {got}, expected {want}")
        if len(dims) != 4:
            problems.append(f"{kind} {name!r} has rank {len(dims)}, expected 4")
            continue
        if dims[chan_axis].dim_value != 3:
            problems.append(f"{kind} {name!r} axis {chan_axis} is {dims[chan_axis]}, expected 3 channels")
        static = [a for a in dyn_axes if dims[a].HasField("dim_value")]
        if static:
            sizes = [dims[a].dim_value for a in static]
            problems.append(f"{kind} {name!r} axes {static} are static ({sizes}); batch/height/width must be dynamic")
    bad_ops = sorted({n.op_type for n in proto.graph.node if n.op_type in _TRAINING_ONLY_OPS})
    if bad_ops:
        problems.append(f"graph holds training-time ops {bad_ops}")
    if problems:
        raise ExportValidationError("exported graph has the wrong signature: " + "; ".join(problems))


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _photo_crops(
    images: list[tuple[str, np.ndarray]], n: int, h: int, w: int, rng: np.random.Generator, start: int
) -> tuple[np.ndarray, list[str]] | None:
    """``n`` crops h×w (uint8 NHWC) from the images large enough, one per image (cycling
    from ``start``), at seeded random positions, and the names used; None if none fits."""
    fit = [(name, im) for name, im in images if im.shape[0] >= h and im.shape[1] >= w]
    if not fit:
        return None
    crops, used = [], []
    for i in range(n):
        name, im = fit[(start + i) % len(fit)]
        y = int(rng.integers(0, im.shape[0] - h + 1))
        x = int(rng.integers(0, im.shape[1] - w + 1))
        crops.append(im[y : y + h, x : x + w])
        used.append(name)
    return np.stack(crops), used


def _load_images(images: str | os.PathLike | None, notes: list[str]) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    if images is None:
        folder = DEFAULT_IMAGES
        if not folder.is_dir():
            notes.append(f"no photo cases: default image folder {folder} does not exist (pass images=/--images)")
            return []
    else:
        folder = Path(images)
        if not folder.is_dir():
            raise ExportError(f"{folder}: image folder does not exist; pass a folder of test photos to --images")
    files = _list_images(folder)
    if not files:
        if images is not None:
            raise ExportError(f"{folder}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        notes.append(f"no photo cases: {folder} holds no images")
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arrays.append((f.name, np.asarray(im.convert("RGB"), dtype=np.uint8)))
        except OSError as e:
            raise ExportError(f"{f}: cannot read test image ({e})") from None
    return arrays


def _compare(name: str, io: ModelIO, x_u8_or_f: np.ndarray, got: np.ndarray, ref_nchw: np.ndarray, scale: int,
             min_psnr: float, max_err_float: float | None, max_err_uint8: int) -> CaseResult:
    """One case's verdict. ``max_err_float=None`` (fp16): the float path is judged by
    finiteness and PSNR alone; fp16 errors are spread, not bounded per pixel."""
    n = x_u8_or_f.shape[0]
    if io is ModelIO.FLOAT32_NCHW:
        h, w = x_u8_or_f.shape[2:]
        expected = ref_nchw
        want_shape = (n, 3, scale * h, scale * w)
    else:
        h, w = x_u8_or_f.shape[1:3]
        expected = quantize(ref_nchw).transpose(0, 2, 3, 1)  # numpy round half-to-even, clip, uint8
        want_shape = (n, scale * h, scale * w, 3)
    if got.shape != want_shape or got.dtype != expected.dtype:
        return CaseResult(name=name, input_shape=x_u8_or_f.shape, output_shape=got.shape, psnr_db=float("nan"),
                          max_abs_err=float("inf"), passed=False,
                          why=f"output {got.dtype} {got.shape}, expected {expected.dtype} {want_shape}")
    finite = bool(np.isfinite(got).all())
    with np.errstate(invalid="ignore", over="ignore"):
        err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
        p = psnr(got, expected) if finite else float("nan")
    if io is ModelIO.FLOAT32_NCHW:
        why = []
        if not finite:
            bad = int(np.size(got) - np.isfinite(got).sum())
            why.append(f"{bad} of {np.size(got)} output values are NaN or Inf")
        elif not p >= min_psnr:
            why.append(f"PSNR {p:.2f} dB < {min_psnr:g} dB (short by {min_psnr - p:.2f} dB)")
        if finite and max_err_float is not None and not err <= max_err_float:
            why.append(f"max abs err {err:.4g} > {max_err_float:g} (by {err - max_err_float:.4g})")
    else:
        why = [] if err <= max_err_uint8 else [f"max abs err {err:g} levels > {max_err_uint8} (by {err - max_err_uint8:g})"]
    return CaseResult(name=name, input_shape=x_u8_or_f.shape, output_shape=got.shape, psnr_db=p,
                      max_abs_err=err, passed=not why, why="; ".join(why))


def validate_onnx(
    onnx_model: Any,
    reference: nn.Module,
    *,
    io: str | ModelIO | None = None,
    scale: int | None = None,
    images: str | os.PathLike | None = None,
    seed: int = 0,
    min_psnr: float = MIN_PSNR_DB,
    max_abs_err: float = MAX_ABS_ERR_FLOAT,
    max_abs_err_uint8: int = MAX_ABS_ERR_UINT8,
    cases: Sequence[tuple[str, int, int, int, str]] = CASES,
    precision: str | Precision | None = None,
    min_psnr_fp16: float | None = None,
) -> ValidationReport:
    """Check an exported model (``onnx.ModelProto``, bytes or path) against ``reference``.

    ``reference`` is the float32 PyTorch network: an EUSR (its ``scale`` path is used) or
    any float NCHW [0, 255] module. ``io``/``scale``/``precision`` default to the model's
    metadata. Raises :class:`ExportValidationError` for structural problems (onnx.checker,
    I/O signature, an "fp16" graph whose convolutions are not float16); numeric
    comparisons are returned in the report (see ``.passed``/``.failures``). ``images``:
    folder of photos (default ``data/photos/test`` of the repository, skipped with a note
    when absent).

    fp16 graphs: every case runs twice, as ONNX Runtime runs the graph and through its
    fp16-rounding twin (:func:`export.fp16.emulate_fp16`, rows marked ``[fp16-rounded]``);
    the float path must be finite with PSNR >= ``min_psnr_fp16`` (default
    :data:`MIN_PSNR_FP16_DB`), the uint8 path within ``max_abs_err_uint8`` levels.
    """
    import onnxruntime as ort

    t0 = time.perf_counter()
    proto = _as_proto(onnx_model)
    meta = read_metadata(proto) or {}
    io = parse_io(io if io is not None else meta.get("io", ModelIO.FLOAT32_NCHW))
    scale = int(scale if scale is not None else meta.get("scale", 4))
    try:
        precision = parse_precision(precision if precision is not None else meta.get("precision", Precision.FP32))
    except ValueError as e:
        raise ExportValidationError(f"metadata or argument: {e}") from None
    fp16 = precision is Precision.FP16
    if min_psnr_fp16 is None:
        min_psnr_fp16 = MIN_PSNR_FP16_DB
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportValidationError(f"onnx.checker rejects the model: {e}") from None
    _check_graph(proto, io)
    if fp16:
        problems = check_precision(proto, precision)
        if problems:
            raise ExportValidationError("exported graph is not what --precision fp16 asks for: " + "; ".join(problems))

    if isinstance(reference, EUSR):
        _check_scale(reference, scale)
        net = reference.path(scale)
    else:
        net = reference
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = {"": proto}
    if fp16:
        try:
            sessions[" [fp16-rounded]"] = emulate_fp16(proto)
        except (ValueError, onnx.shape_inference.InferenceError) as e:
            raise ExportValidationError(f"cannot build the fp16-rounding twin of the graph: {e}") from None
    for tag, graph in sessions.items():
        try:
            sessions[tag] = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            what = "the model" if not tag else "the model's fp16-rounding twin"
            raise ExportValidationError(f"ONNX Runtime (CPU) cannot load {what}: {e}") from None
    gate_psnr, gate_err = (min_psnr_fp16, None) if fp16 else (min_psnr, max_abs_err)

    notes: list[str] = []
    rng = np.random.default_rng(seed)
    photos = _load_images(images, notes) if any(c[4] == "photo" for c in cases) else []
    results = []
    photo_start = 0
    with _eval_mode(net), torch.inference_mode():
        for name, n, h, w, src in cases:
            if src == "random":
                x = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8) if io is ModelIO.UINT8_NHWC else None
                xf = rng.uniform(0.0, 255.0, (n, 3, h, w)).astype(np.float32) if x is None else None
                label = f"{name} b{n} {h}x{w}"
            else:
                crops = _photo_crops(photos, n, h, w, rng, photo_start) if photos else None
                if crops is None:
                    if photos:
                        notes.append(f"skipped {name} b{n} {h}x{w}: no image that large")
                    continue
                x, used = crops
                label = f"{name} b{n} {h}x{w} ({used[0]}{'+' if n > 1 else ''})"
                photo_start += n
                xf = None
            if io is ModelIO.UINT8_NHWC:
                feed = x
                ref_in = torch.from_numpy(x).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
            else:
                feed = xf if xf is not None else np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))
                ref_in = torch.from_numpy(feed).to(device)
            ref = net(ref_in).float().cpu().numpy()
            for tag, session in sessions.items():
                try:
                    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: feed})
                except Exception as e:  # e.g. a shape baked into the graph: a failed case, not a crash
                    results.append(CaseResult(name=label + tag, input_shape=feed.shape, output_shape=(),
                                              psnr_db=float("nan"), max_abs_err=float("inf"), passed=False,
                                              why=f"ONNX Runtime failed on input {feed.shape}: {str(e)[:300]}"))
                    continue
                results.append(_compare(label + tag, io, feed, got, ref, scale, gate_psnr, gate_err, max_abs_err_uint8))

    if io is ModelIO.FLOAT32_NCHW and fp16:
        limits = f"pass: finite and PSNR >= {gate_psnr:g} dB vs float32"
    elif io is ModelIO.FLOAT32_NCHW:
        limits = f"pass: PSNR >= {min_psnr:g} dB and max abs err <= {max_abs_err:g}"
    else:
        limits = f"pass: within {max_abs_err_uint8} level of numpy-rounded, clipped PyTorch"
    against = "ONNX Runtime CPU vs PyTorch" + (" float32" if fp16 else "")
    return ValidationReport(io=io, scale=scale, cases=tuple(results), limits=limits, notes=tuple(notes),
                            seconds=time.perf_counter() - t0, precision=precision, against=against)


# --------------------------------------------------------------------------- writing


def _file_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _reserve(path: Path) -> Path:
    """Fail fast on an unwritable output: create the temp file the export will fill."""
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; -o needs a file name such as {path / 'model.onnx'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise ExportError(f"{path}: cannot write the output there ({e.strerror or e}); choose another -o") from None
    return Path(tmp)


def cross_check_io(
    float_model: Any,
    uint8_model: Any,
    *,
    images: str | os.PathLike | None = None,
    seed: int = 0,
    max_abs_err: int | None = None,
    cases: Sequence[tuple[str, int, int, int, str]] = CASES,
) -> ValidationReport:
    """The uint8-nhwc graph against the float32-nchw graph (ModelProto, bytes or path) on
    the same uint8 inputs (random and photo crops, ONNX Runtime CPU): the float output,
    rounded half-to-even and clipped, must be within ``max_abs_err`` levels (default
    :data:`MAX_ABS_ERR_UINT8`) of the uint8 output everywhere. Each graph is also checked
    against PyTorch on its own, but that alone would allow two levels between them."""
    import onnxruntime as ort

    t0 = time.perf_counter()
    max_abs_err = MAX_ABS_ERR_UINT8 if max_abs_err is None else max_abs_err
    protos = {"float": _as_proto(float_model), "uint8": _as_proto(uint8_model)}
    metas = {k: read_metadata(p) or {} for k, p in protos.items()}
    scale = int(metas["float"].get("scale", 4))
    try:
        precision = parse_precision(metas["float"].get("precision", Precision.FP32))
    except ValueError as e:
        raise ExportValidationError(f"float graph metadata: {e}") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = {}
    for k, p in protos.items():
        try:
            sessions[k] = ort.InferenceSession(p.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportValidationError(f"ONNX Runtime (CPU) cannot load the {k} graph: {e}") from None
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    photos = _load_images(images, notes) if any(c[4] == "photo" for c in cases) else []
    results = []
    photo_start = 0
    for name, n, h, w, src in cases:
        if src == "random":
            x = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
            label = f"{name} b{n} {h}x{w}"
        else:
            crops = _photo_crops(photos, n, h, w, rng, photo_start) if photos else None
            if crops is None:
                continue
            x, used = crops
            label = f"{name} b{n} {h}x{w} ({used[0]}{'+' if n > 1 else ''})"
            photo_start += n
        xf = np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))
        try:
            (yf,) = sessions["float"].run([OUTPUT_NAME], {INPUT_NAME: xf})
            (y8,) = sessions["uint8"].run([OUTPUT_NAME], {INPUT_NAME: x})
        except Exception as e:
            results.append(CaseResult(name=label, input_shape=x.shape, output_shape=(), psnr_db=float("nan"),
                                      max_abs_err=float("inf"), passed=False,
                                      why=f"ONNX Runtime failed on input {x.shape}: {str(e)[:300]}"))
            continue
        with np.errstate(invalid="ignore"):
            expected = quantize(yf).transpose(0, 2, 3, 1)
        if y8.shape != expected.shape or y8.dtype != np.uint8:
            results.append(CaseResult(name=label, input_shape=x.shape, output_shape=y8.shape, psnr_db=float("nan"),
                                      max_abs_err=float("inf"), passed=False,
                                      why=f"uint8 graph gave {y8.dtype} {y8.shape}, float graph {expected.shape}"))
            continue
        err = float(np.max(np.abs(y8.astype(np.int16) - expected.astype(np.int16))))
        why = "" if err <= max_abs_err else f"max abs err {err:g} levels > {max_abs_err} (by {err - max_abs_err:g})"
        if not np.isfinite(yf).all():
            why = "float graph output holds NaN or Inf" + (f"; {why}" if why else "")
        results.append(CaseResult(name=label, input_shape=x.shape, output_shape=y8.shape, psnr_db=psnr(y8, expected),
                                  max_abs_err=err, passed=not why, why=why))
    return ValidationReport(io=ModelIO.UINT8_NHWC, scale=scale, cases=tuple(results),
                            limits=f"pass: within {max_abs_err} level of the float graph's output rounded",
                            notes=tuple(notes), seconds=time.perf_counter() - t0, precision=precision,
                            against="uint8 graph vs float32-nchw graph, ONNX Runtime CPU", label="cross-check")


def export_onnx_all(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike,
    path: str | os.PathLike,
    *,
    ios: Iterable[str | ModelIO] = (ModelIO.FLOAT32_NCHW,),
    precisions: Iterable[str | Precision] = (Precision.FP32,),
    scale: int = 4,
    opset: int = DEFAULT_OPSET,
    halo: int = DEFAULT_HALO,
    exporter: str = "dynamo",
    validate: bool = True,
    images: str | os.PathLike | None = None,
    seed: int = 0,
    verbose: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[tuple[Precision, ModelIO], Path]:
    """Export every (precision, I/O) variant (naming: :func:`export.onnx_io.export_paths`),
    all validated, and the uint8 graph of each precision cross-checked against its float
    graph (:func:`cross_check_io`) when both are exported, before any file is written.
    Raises :class:`ExportValidationError` on a failed check (``.report`` set), leaving
    nothing at the output paths. ``echo`` receives progress lines and the tables."""
    echo = echo or (lambda line: None)
    try:
        precisions = [parse_precision(p) for p in precisions]
        ios = [parse_io(i) for i in ios]
    except ValueError as e:
        raise ExportError(str(e)) from None
    if not precisions or not ios:
        raise ExportError(f"nothing to export: precisions {precisions}, ios {ios}")
    source = load_source(model_or_checkpoint)
    _check_scale(source.model, scale)
    paths = export_paths(path, ios, precisions)
    temps: dict[tuple[Precision, ModelIO], Path] = {}
    try:
        for key, out in paths.items():
            temps[key] = _reserve(out)
        protos = {}
        for precision, io in paths:
            t0 = time.perf_counter()
            proto = build_onnx(source, scale=scale, io=io, opset=opset, halo=halo, exporter=exporter,
                               verbose=verbose, precision=precision)
            echo(f"exported x{scale} {io.value} {precision.value} ({exporter}, opset {opset}) "
                 f"in {time.perf_counter() - t0:.1f} s")
            if validate:
                report = validate_onnx(proto, source.model, io=io, scale=scale, images=images, seed=seed,
                                       precision=precision)
                echo(report.table())
                echo(report.summary())
                if not report.passed:
                    raise ExportValidationError(f"x{scale} {io.value} {precision.value}: {report.summary()}", report)
            protos[(precision, io)] = proto
        if validate:
            for precision in precisions:
                pair = protos.get((precision, ModelIO.FLOAT32_NCHW)), protos.get((precision, ModelIO.UINT8_NHWC))
                if None in pair:
                    continue
                report = cross_check_io(*pair, images=images, seed=seed)
                echo(report.table())
                echo(report.summary())
                if not report.passed:
                    raise ExportValidationError(
                        f"x{scale} {precision.value} uint8 vs float graph: {report.summary()}", report)
        blobs = {key: proto.SerializeToString() for key, proto in protos.items()}
        for key, out in paths.items():
            temps[key].write_bytes(blobs[key])
            os.chmod(temps[key], _file_mode())
            os.replace(temps[key], out)
            del temps[key]
    except OSError as e:
        raise ExportError(f"cannot write the output ({e}); choose another -o") from e
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return paths


def export_onnx_variants(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike,
    path: str | os.PathLike,
    *,
    ios: Iterable[str | ModelIO] = (ModelIO.FLOAT32_NCHW, ModelIO.UINT8_NHWC),
    scale: int = 4,
    opset: int = DEFAULT_OPSET,
    halo: int = DEFAULT_HALO,
    exporter: str = "dynamo",
    validate: bool = True,
    images: str | os.PathLike | None = None,
    seed: int = 0,
    verbose: bool = False,
    echo: Callable[[str], None] | None = None,
    precision: str | Precision = Precision.FP32,
) -> dict[ModelIO, Path]:
    """Several I/O variants of one precision (naming: :func:`export.onnx_io.variant_paths`);
    :func:`export_onnx_all` with a single precision, keyed by I/O."""
    paths = export_onnx_all(
        model_or_checkpoint, path, ios=ios, precisions=(precision,), scale=scale, opset=opset, halo=halo,
        exporter=exporter, validate=validate, images=images, seed=seed, verbose=verbose, echo=echo,
    )
    return {io: out for (_, io), out in paths.items()}


def export_onnx(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike,
    path: str | os.PathLike,
    *,
    scale: int = 4,
    io: str | ModelIO = ModelIO.FLOAT32_NCHW,
    opset: int = DEFAULT_OPSET,
    halo: int = DEFAULT_HALO,
    exporter: str = "dynamo",
    validate: bool = True,
    images: str | os.PathLike | None = None,
    seed: int = 0,
    verbose: bool = False,
    echo: Callable[[str], None] | None = None,
    precision: str | Precision = Precision.FP32,
) -> Path:
    """Export the ``scale`` path of an EUSR (model or checkpoint path) to ``path``.

    Validated first unless ``validate=False`` (see :func:`validate_onnx`); written
    atomically, and only when validation passes. ``precision="fp16"``: float16 inside,
    the same I/O. Raises ``CheckpointError`` (bad checkpoint), :class:`ExportError` (bad
    argument, unwritable output) or :class:`ExportValidationError`.
    """
    paths = export_onnx_variants(
        model_or_checkpoint, path, ios=(io,), scale=scale, opset=opset, halo=halo, exporter=exporter,
        validate=validate, images=images, seed=seed, verbose=verbose, echo=echo, precision=precision,
    )
    return next(iter(paths.values()))


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="to_onnx.py",
        description=(
            "Export one scale path of a 4PP-EUSR checkpoint to ONNX (dynamic batch/height/width, "
            "metadata under 'fourpp_eusr'), validate it with onnx.checker and ONNX Runtime against "
            "PyTorch, and only then write it."
        ),
        epilog=(
            "--io both writes the float32-nchw model at -o and the uint8-nhwc one beside it as "
            "<stem>.uint8.onnx (model.onnx -> model.uint8.onnx). --precision both writes the fp16 "
            "graphs beside them as <stem>.fp16.onnx (and <stem>.fp16.uint8.onnx); a single "
            "--precision fp16 writes at -o itself. Exit status: 0 ok, 1 validation "
            "or export failed, 2 bad arguments or input."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="EUSR checkpoint (.safetensors) written by train/")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), default=4, help="which path of the multi-scale model")
    p.add_argument(
        "--io",
        choices=[m.value for m in ModelIO] + ["both"],
        default=ModelIO.FLOAT32_NCHW.value,
        help="float32-nchw: float32 [N,3,H,W] 0..255 in/out (unclipped); uint8-nhwc: uint8 [N,H,W,3] "
        "in/out, round+clip in the graph; both: one file of each",
    )
    p.add_argument(
        "--precision",
        choices=[m.value for m in Precision] + ["both"],
        default=Precision.FP32.value,
        help="fp32; fp16: the layers compute in float16 between float32 edges, I/O unchanged "
        f"(checked: finite, PSNR >= {MIN_PSNR_FP16_DB:g} dB vs float32); both: one file of each",
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    p.add_argument("--halo", type=int, default=DEFAULT_HALO, help="recommended_halo stored in the metadata (input pixels)")
    p.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                   help="torch.onnx exporter: dynamo (torch.export) or the deprecated torchscript one")
    p.add_argument(
        "--no-validate", dest="validate", action="store_false",
        help="write without the onnx.checker / ONNX Runtime checks (not recommended)",
    )
    p.add_argument("--images", type=Path, default=None,
                   help=f"folder of photos to crop validation patches from (default: {DEFAULT_IMAGES}, if present)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random validation inputs and crop positions")
    p.add_argument("-v", "--verbose", action="store_true", help="show the exporter's own warnings and logs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be >= {MIN_OPSET}, got {args.opset}")
    if args.halo < 0:
        parser.error(f"--halo must be >= 0, got {args.halo}")
    if args.validate and args.images is not None and not args.images.is_dir():
        parser.error(f"--images {args.images}: no such folder")
    ios = [m for m in ModelIO] if args.io == "both" else [ModelIO(args.io)]
    precisions = [p for p in Precision] if args.precision == "both" else [Precision(args.precision)]

    t0 = time.perf_counter()
    try:
        source = load_source(args.checkpoint)
        _check_scale(source.model, args.scale)
    except (CheckpointError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"loaded {args.checkpoint} (config {source.config_name!r}, scales {list(source.model.scales)}) "
          f"in {time.perf_counter() - t0:.1f} s")

    try:
        paths = export_onnx_all(
            source, args.output, ios=ios, precisions=precisions, scale=args.scale, opset=args.opset,
            halo=args.halo, exporter=args.exporter, validate=args.validate, images=args.images, seed=args.seed,
            verbose=args.verbose, echo=print,
        )
    except ExportValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"error: nothing written to {args.output}", file=sys.stderr)
        return 1
    except ExporterFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ExportError as e:  # arguments, output path, image folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (precision, io), out in paths.items():
        print(f"wrote {out} (x{args.scale} {io.value} {precision.value}, {out.stat().st_size / 1e6:.2f} MB)")
    print(f"done in {time.perf_counter() - t0:.1f} s" + ("" if args.validate else " (not validated)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

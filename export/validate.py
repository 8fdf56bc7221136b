"""Is an exported graph what it claims to be? onnx.checker, its I/O signature, and ONNX
Runtime (CPU) against PyTorch on random inputs and crops of real photos.

Float path: PSNR >= :data:`MIN_PSNR_DB` and max abs error <= :data:`MAX_ABS_ERR_FLOAT`
grey levels; uint8 path: within :data:`MAX_ABS_ERR_UINT8` level of the PyTorch float output
rounded and clipped by numpy. fp16 graphs run twice, as ONNX Runtime runs them (on x86 it
upcasts the convolutions) and as their fp16-rounding twin (:func:`export.fp16.emulate_fp16`),
both held to :data:`MIN_PSNR_FP16_DB` against the float32 model. :func:`cross_check_io`
holds the uint8 graph to the float graph of the same precision, rounded.

Cases are odd sizes at batch 1 and 3 (:data:`CASES`), small enough to run the paper
configuration on a CPU in seconds.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export.errors import ExportError, ExportValidationError
from export.fp16 import check_precision, emulate_fp16
from export.load import check_scale, eval_mode
from export.onnx_io import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelIO,
    Precision,
    io_layout,
    parse_io,
    parse_precision,
    read_metadata,
)
from runtime import layout as _layout
from runtime.metrics import psnr, quantize
from runtime.utils import list_images
from train.models.eusr import EUSR

__all__ = [
    "DEFAULT_IMAGES",
    "CASES",
    "MIN_PSNR_DB",
    "MAX_ABS_ERR_FLOAT",
    "MAX_ABS_ERR_UINT8",
    "MIN_PSNR_FP16_DB",
    "CaseResult",
    "ValidationReport",
    "validate_onnx",
    "cross_check_io",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO_ROOT / "data" / "photos" / "test"

# Acceptance limits (grey levels on the 0..255 scale).
MIN_PSNR_DB = 80.0
MAX_ABS_ERR_FLOAT = 0.05
MAX_ABS_ERR_UINT8 = 1
MIN_PSNR_FP16_DB = 60.0
"""fp16 graphs vs the float32 model (float path; the uint8 path keeps MAX_ABS_ERR_UINT8).
Read from this module when a check runs, so a test can raise it to see the exporter refuse."""

Case = tuple[str, int, int, int, str]
CASES: tuple[Case, ...] = (
    ("random", 1, 17, 23, "random"),
    ("random", 3, 11, 13, "random"),
    ("photo", 1, 37, 53, "photo"),
    ("photo", 3, 24, 31, "photo"),
)
"""Validation cases: (name, batch, height, width, source)."""

_TRAINING_ONLY_OPS = {"Dropout", "BatchNormalization"}  # EUSR has neither; exports must not


# --------------------------------------------------------------------------- reports


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


def _failed(name: str, input_shape: tuple[int, ...], why: str, output_shape: tuple[int, ...] = ()) -> CaseResult:
    return CaseResult(
        name=name,
        input_shape=input_shape,
        output_shape=output_shape,
        psnr_db=float("nan"),
        max_abs_err=float("inf"),
        passed=False,
        why=why,
    )


@dataclass(frozen=True, kw_only=True)
class ValidationReport:
    """The cases of one check, its limits, and how to print them."""

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


# --------------------------------------------------------------------------- inputs


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


def _session(proto: onnx.ModelProto, what: str) -> Any:
    """An ONNX Runtime CPU session, or :class:`ExportValidationError` naming ``what``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types  # noqa: BLE001 - the library raises its own exception types
        raise ExportValidationError(f"ONNX Runtime (CPU) cannot load {what}: {e}") from None


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


def _load_images(images: str | os.PathLike[str] | None, notes: list[str]) -> list[tuple[str, np.ndarray]]:
    """The photos to crop from: ``images`` (which must hold some), else the repository's
    test photos if present (a note when not)."""
    from PIL import Image

    if images is None:
        if not DEFAULT_IMAGES.is_dir():
            notes.append(
                f"no photo cases: default image folder {DEFAULT_IMAGES} does not exist (pass images=/--images)"
            )
            return []
        try:
            files = list_images(DEFAULT_IMAGES, error=ExportError)
        except ExportError:
            notes.append(f"no photo cases: {DEFAULT_IMAGES} holds no images")
            return []
    else:
        files = list_images(images, what="--images", error=ExportError)
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arrays.append((f.name, np.asarray(im.convert("RGB"), dtype=np.uint8)))
        except OSError as e:
            raise ExportError(f"{f}: cannot read test image ({e})") from None
    return arrays


# --------------------------------------------------------------------------- checks


def _check_graph(proto: onnx.ModelProto, io: ModelIO) -> None:
    """Names, dtypes, ranks and dynamic axes of the graph's I/O; no training-only ops."""
    from onnx import TensorProto, helper

    layout = io_layout(io)
    problems = []
    elem = helper.np_dtype_to_tensor_dtype(layout.dtype)
    dyn_axes, chan_axis = (0, *layout.spatial_axes), layout.channel_axis
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


def _compare(
    name: str,
    layout: _layout.ModelIO,
    feed: np.ndarray,
    got: np.ndarray,
    ref_nchw: np.ndarray,
    scale: int,
    min_psnr: float,
    max_err_float: float | None,
    max_err_uint8: int,
) -> CaseResult:
    """One case's verdict. ``max_err_float=None`` (fp16): the float path is judged by
    finiteness and PSNR alone; fp16 errors are spread, not bounded per pixel."""
    want_shape = layout.output_shape(feed.shape, scale)
    if layout.is_integer:
        expected = quantize(ref_nchw).transpose(0, 2, 3, 1)  # numpy round half-to-even, clip, uint8
    else:
        expected = ref_nchw
    if got.shape != want_shape or got.dtype != expected.dtype:
        return _failed(
            name, feed.shape, f"output {got.dtype} {got.shape}, expected {expected.dtype} {want_shape}", got.shape
        )
    finite = bool(np.isfinite(got).all())
    with np.errstate(invalid="ignore", over="ignore"):
        err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
        p = psnr(got, expected) if finite else float("nan")
    if layout.is_integer:
        why = (
            []
            if err <= max_err_uint8
            else [f"max abs err {err:g} levels > {max_err_uint8} (by {err - max_err_uint8:g})"]
        )
    else:
        why = []
        if not finite:
            bad = int(np.size(got) - np.isfinite(got).sum())
            why.append(f"{bad} of {np.size(got)} output values are NaN or Inf")
        elif not p >= min_psnr:
            why.append(f"PSNR {p:.2f} dB < {min_psnr:g} dB (short by {min_psnr - p:.2f} dB)")
        if finite and max_err_float is not None and not err <= max_err_float:
            why.append(f"max abs err {err:.4g} > {max_err_float:g} (by {err - max_err_float:.4g})")
    return CaseResult(
        name=name,
        input_shape=feed.shape,
        output_shape=got.shape,
        psnr_db=p,
        max_abs_err=err,
        passed=not why,
        why="; ".join(why),
    )


def _nchw_float(x: np.ndarray) -> np.ndarray:
    """uint8 NHWC → float32 NCHW (0..255), contiguous."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))


def validate_onnx(
    onnx_model: Any,
    reference: nn.Module,
    *,
    io: str | ModelIO | None = None,
    scale: int | None = None,
    images: str | os.PathLike[str] | None = None,
    seed: int = 0,
    min_psnr: float = MIN_PSNR_DB,
    max_abs_err: float = MAX_ABS_ERR_FLOAT,
    max_abs_err_uint8: int = MAX_ABS_ERR_UINT8,
    cases: Sequence[Case] = CASES,
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
    t0 = time.perf_counter()
    proto = _as_proto(onnx_model)
    meta = read_metadata(proto) or {}
    io = parse_io(io if io is not None else meta.get("io", ModelIO.FLOAT32_NCHW))
    layout = io_layout(io)
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
        check_scale(reference, scale)
        net = reference.path(scale)
    else:
        net = reference
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    sessions = {"": _session(proto, "the model")}
    if fp16:
        try:
            twin = emulate_fp16(proto)
        except (ValueError, onnx.shape_inference.InferenceError) as e:
            raise ExportValidationError(f"cannot build the fp16-rounding twin of the graph: {e}") from None
        sessions[" [fp16-rounded]"] = _session(twin, "the model's fp16-rounding twin")
    gate_psnr, gate_err = (min_psnr_fp16, None) if fp16 else (min_psnr, max_abs_err)

    notes: list[str] = []
    rng = np.random.default_rng(seed)
    photos = _load_images(images, notes) if any(c[4] == "photo" for c in cases) else []
    results = []
    photo_start = 0
    with eval_mode(net), torch.inference_mode():
        for name, n, h, w, src in cases:
            if src == "random":
                shape = layout.batch_shape(n, h, w)
                if layout.is_integer:
                    feed = rng.integers(0, 256, shape, dtype=np.uint8)
                else:
                    feed = rng.uniform(0.0, 255.0, shape).astype(np.float32)
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
                feed = x if layout.is_integer else _nchw_float(x)
            if layout.is_integer:
                ref_in = torch.from_numpy(feed).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
            else:
                ref_in = torch.from_numpy(feed).to(device)
            ref = net(ref_in).float().cpu().numpy()
            for tag, session in sessions.items():
                try:
                    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: feed})
                except Exception as e:  # e.g. a shape baked into the graph: a failed case, not a crash  # noqa: BLE001 - the library raises its own exception types
                    results.append(
                        _failed(label + tag, feed.shape, f"ONNX Runtime failed on input {feed.shape}: {str(e)[:300]}")
                    )
                    continue
                results.append(
                    _compare(label + tag, layout, feed, got, ref, scale, gate_psnr, gate_err, max_abs_err_uint8)
                )

    if layout.is_integer:
        limits = f"pass: within {max_abs_err_uint8} level of numpy-rounded, clipped PyTorch"
    elif fp16:
        limits = f"pass: finite and PSNR >= {gate_psnr:g} dB vs float32"
    else:
        limits = f"pass: PSNR >= {min_psnr:g} dB and max abs err <= {max_abs_err:g}"
    against = "ONNX Runtime CPU vs PyTorch" + (" float32" if fp16 else "")
    return ValidationReport(
        io=io,
        scale=scale,
        cases=tuple(results),
        limits=limits,
        notes=tuple(notes),
        seconds=time.perf_counter() - t0,
        precision=precision,
        against=against,
    )


def cross_check_io(
    float_model: Any,
    uint8_model: Any,
    *,
    images: str | os.PathLike[str] | None = None,
    seed: int = 0,
    max_abs_err: int | None = None,
    cases: Sequence[Case] = CASES,
) -> ValidationReport:
    """The uint8-nhwc graph against the float32-nchw graph (ModelProto, bytes or path) on
    the same uint8 inputs (random and photo crops, ONNX Runtime CPU): the float output,
    rounded half-to-even and clipped, must be within ``max_abs_err`` levels (default
    :data:`MAX_ABS_ERR_UINT8`) of the uint8 output everywhere. Each graph is also checked
    against PyTorch on its own, but that alone would allow two levels between them."""
    t0 = time.perf_counter()
    max_abs_err = MAX_ABS_ERR_UINT8 if max_abs_err is None else max_abs_err
    protos = {"float": _as_proto(float_model), "uint8": _as_proto(uint8_model)}
    metas = {k: read_metadata(p) or {} for k, p in protos.items()}
    scale = int(metas["float"].get("scale", 4))
    try:
        precision = parse_precision(metas["float"].get("precision", Precision.FP32))
    except ValueError as e:
        raise ExportValidationError(f"float graph metadata: {e}") from None
    sessions = {k: _session(p, f"the {k} graph") for k, p in protos.items()}
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
        try:
            (yf,) = sessions["float"].run([OUTPUT_NAME], {INPUT_NAME: _nchw_float(x)})
            (y8,) = sessions["uint8"].run([OUTPUT_NAME], {INPUT_NAME: x})
        except Exception as e:  # noqa: BLE001 - the library raises its own exception types
            results.append(_failed(label, x.shape, f"ONNX Runtime failed on input {x.shape}: {str(e)[:300]}"))
            continue
        with np.errstate(invalid="ignore"):
            expected = quantize(yf).transpose(0, 2, 3, 1)
        if y8.shape != expected.shape or y8.dtype != np.uint8:
            results.append(
                _failed(
                    label, x.shape, f"uint8 graph gave {y8.dtype} {y8.shape}, float graph {expected.shape}", y8.shape
                )
            )
            continue
        err = float(np.max(np.abs(y8.astype(np.int16) - expected.astype(np.int16))))
        why = "" if err <= max_abs_err else f"max abs err {err:g} levels > {max_abs_err} (by {err - max_abs_err:g})"
        if not np.isfinite(yf).all():
            why = "float graph output holds NaN or Inf" + (f"; {why}" if why else "")
        results.append(
            CaseResult(
                name=label,
                input_shape=x.shape,
                output_shape=y8.shape,
                psnr_db=psnr(y8, expected),
                max_abs_err=err,
                passed=not why,
                why=why,
            )
        )
    return ValidationReport(
        io=ModelIO.UINT8_NHWC,
        scale=scale,
        cases=tuple(results),
        limits=f"pass: within {max_abs_err} level of the float graph's output rounded",
        notes=tuple(notes),
        seconds=time.perf_counter() - t0,
        precision=precision,
        against="uint8 graph vs float32-nchw graph, ONNX Runtime CPU",
        label="cross-check",
    )

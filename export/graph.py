"""One scale path of an EUSR as an in-memory ONNX graph with its metadata (not validated).

Exporter: torch.onnx's dynamo exporter (``torch.export`` + onnxscript, torch's default)
with ``torch.export.Dim`` for batch/height/width; its output dimensions come out as
``4*height``/``4*width``. ``exporter="torchscript"`` selects the deprecated TorchScript
exporter (``dynamo=False``), faster to run and kept as a fallback.

The bytes depend only on the model and the options (no timestamps, no local paths), so an
engine cache keyed on the ONNX hash keeps hitting across machines and re-exports.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import onnx
import torch

from export.errors import ExporterFailure, ExportError
from export.fp16 import precision_module
from export.graph_rewrites import fuse_stacked_pixel_shuffle
from export.load import ModelSource, check_scale, eval_mode, load_source
from export.onnx_io import (
    INPUT_NAME,
    METADATA_FORMAT,
    OUTPUT_NAME,
    ModelIO,
    Precision,
    io_layout,
    parse_io,
    parse_precision,
    set_metadata,
    wrap_for_io,
)
from export.options import DEFAULT_HALO, DEFAULT_OPSET, ExportOptions
from export.uint8_boundary import seal_uint8_input, uint8_findings
from train.models.eusr import EUSR

__all__ = ["build_metadata", "build_graph", "build_onnx"]


def build_metadata(
    source: ModelSource,
    *,
    scale: int,
    io: str | ModelIO,
    opset: int,
    halo: int = DEFAULT_HALO,
    exporter: str = "dynamo",
    precision: str | Precision = Precision.FP32,
) -> dict[str, Any]:
    """The ``fourpp_eusr`` JSON object (format 1) that ``runtime.model_info`` reads (it
    ignores keys it does not know). ``"precision": "fp16"`` only for fp16 graphs; absent
    means float32 (see :mod:`export.onnx_io`)."""
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
    except Exception:  # running from a checkout that was never pip-installed  # noqa: BLE001 - the library raises its own exception types
        return "0+unknown"


@contextlib.contextmanager
def _quiet_exporter(verbose: bool) -> Iterator[None]:
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


def _strip_trace_metadata(proto: onnx.ModelProto) -> None:
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


def _torch_export(
    module: torch.nn.Module,
    example: torch.Tensor,
    axes: dict[int, str],
    out_axes: dict[int, str],
    options: ExportOptions,
) -> onnx.ModelProto:
    """``torch.onnx.export`` of ``module`` with dynamic ``axes``, by the chosen exporter."""
    if options.exporter == "dynamo":
        dims = {k: torch.export.Dim(v) for k, v in axes.items()}
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(dims,),
            opset_version=options.opset,
            optimize=True,  # constant folding and graph clean-up
            verbose=options.verbose,
        )
        return program.model_proto
    buf = _io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        buf,
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: out_axes},
        opset_version=options.opset,
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
        verbose=bool(options.verbose),
    )
    return onnx.load_from_string(buf.getvalue())


def build_graph(source: ModelSource, options: ExportOptions, *, io: ModelIO, precision: Precision) -> onnx.ModelProto:
    """The ``options.scale`` path of ``source`` as an ``onnx.ModelProto`` for one variant
    (``io``, ``precision``), with metadata, doc string and graph name; not validated."""
    scale = check_scale(source.model, options.scale)
    layout = io_layout(io)
    param = next(source.model.parameters())
    # Distinct, non-trivial example sizes so that no dimension is specialised or unified.
    shape = layout.batch_shape(2, 24, 32)
    if layout.is_integer:
        example = torch.randint(0, 256, shape, dtype=torch.uint8, device=param.device)
    else:
        example = torch.rand(shape, device=param.device) * 255
    h_axis, w_axis = layout.spatial_axes
    axes = {0: "batch", h_axis: "height", w_axis: "width"}
    out_axes = {0: "batch", h_axis: f"{scale}*height", w_axis: f"{scale}*width"}

    with eval_mode(source.model), _quiet_exporter(options.verbose):
        module = wrap_for_io(precision_module(source.model, scale, precision), io).eval()
        try:
            proto = _torch_export(module, example, axes, out_axes, options)
        except ExportError:
            raise
        except Exception as e:
            raise ExporterFailure(
                f"torch.onnx.export ({options.exporter}) failed for the x{scale} {io.value} {precision.value} path: {e}"
            ) from e

    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != options.opset:
        raise ExporterFailure(
            f"the {options.exporter} exporter produced opset {got}, not the requested {options.opset}; "
            f"use --opset {DEFAULT_OPSET} (or --exporter torchscript for {options.opset})"
        )
    # exact: the taps' stack → reshape → DepthToSpace(CRD) becomes concat → DepthToSpace(DCR)
    fuse_stacked_pixel_shuffle(proto)
    if layout.is_integer:
        # TensorRT takes UINT8 only as a network I/O tensor: the input's first and only
        # reader must be the Cast to float (the exporter's Shape(lr) reads are moved onto it).
        seal_uint8_input(proto)
        findings = uint8_findings(proto)
        if findings:
            raise ExporterFailure(f"the {io.value} graph keeps uint8 inside, which TensorRT cannot build: {findings}")
    _strip_trace_metadata(proto)
    meta = build_metadata(
        source,
        scale=scale,
        io=io,
        opset=options.opset,
        halo=options.halo,
        exporter=options.exporter,
        precision=precision,
    )
    set_metadata(proto, meta)
    proto.producer_name = "fourpp-eusr export/to_onnx.py"
    proto.producer_version = _producer_version()
    proto.doc_string = _doc_string(meta)
    tag = "" if precision is Precision.FP32 else f"_{precision.value}"
    proto.graph.name = f"eusr_x{scale}_{io.value.replace('-', '_')}{tag}"
    return proto


def build_onnx(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    io: str | ModelIO | None = None,
    precision: str | Precision | None = None,
    **changes: Any,
) -> onnx.ModelProto:
    """Export one path to an in-memory ``onnx.ModelProto`` with metadata (not validated).

    One variant: ``io`` (default float32-nchw, or the first of ``options.ios``) and
    ``precision`` (default fp32; ``"fp16"``: the layers in float16 between float32 edges,
    same I/O). ``changes`` are :class:`~export.options.ExportOptions` fields (``scale=2``,
    ``exporter="torchscript"``, ...) applied to ``options``.
    """
    options = options or ExportOptions()
    options = options.replace(
        ios=options.ios[:1] if io is None else (io,),
        precisions=options.precisions[:1] if precision is None else (precision,),
        **changes,
    )
    source = load_source(model_or_checkpoint)
    return build_graph(source, options, io=options.ios[0], precision=options.precisions[0])

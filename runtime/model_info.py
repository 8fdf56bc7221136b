"""What the runtime needs to know about a model: its I/O layout, scale and tensor names.

The exporter (``export/to_onnx.py``) writes a JSON document under the ONNX
``metadata_props`` key :data:`METADATA_KEY`. This module parses it, and for models that
lack it (exported elsewhere) infers the same facts from the graph's input/output types and
shapes. Pure functions, no onnxruntime: every backend feeds them what it reads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ModelError
from .layout import ModelIO

__all__ = ["METADATA_KEY", "ModelIO", "ModelInfo", "parse_metadata", "infer_model_info"]

log = logging.getLogger(__name__)

METADATA_KEY = "fourpp_eusr"
"""ONNX ``metadata_props`` key holding the exporter's JSON description."""

SUPPORTED_FORMATS = (1,)


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """The model facts the runtime uses. ``source`` says where they came from."""

    io: ModelIO
    scale: int
    input_name: str
    output_name: str
    recommended_halo: int | None = None
    config_name: str | None = None
    source: str = "metadata"  # "metadata" or "inferred"
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _check_scale(scale: object, model: str) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ModelError(f"{model}: scale must be a positive integer, got {scale!r}")
    return scale


def parse_metadata(text: str, *, model: str, scale: int | None = None) -> ModelInfo:
    """Parse the :data:`METADATA_KEY` JSON of ``model`` (a name used in messages).

    ``scale``, when given, must agree with the metadata: a disagreement means the caller
    has the wrong model, which is better said now than seen as a wrongly sized output.
    """
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{model}: metadata {METADATA_KEY!r} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{model}: metadata {METADATA_KEY!r} must be a JSON object, got {text[:80]!r}")
    fmt = meta.get("format")
    if fmt not in SUPPORTED_FORMATS:
        raise ModelError(
            f"{model}: metadata format {fmt!r} is not supported (this runtime reads format "
            f"{', '.join(map(str, SUPPORTED_FORMATS))}); upgrade the runtime or re-export the model"
        )
    try:
        io = ModelIO(meta.get("io"))
    except ValueError:
        raise ModelError(
            f"{model}: metadata io {meta.get('io')!r} is not one of {[m.value for m in ModelIO]}"
        ) from None
    meta_scale = _check_scale(meta.get("scale", 4), model)
    if scale is not None and scale != meta_scale:
        raise ModelError(
            f"{model}: scale={scale} was asked for but the model's metadata says scale "
            f"{meta_scale}; drop scale= or use a x{scale} model"
        )
    halo = meta.get("recommended_halo")
    return ModelInfo(
        io=io,
        scale=meta_scale,
        input_name=str(meta.get("input", "lr")),
        output_name=str(meta.get("output", "sr")),
        recommended_halo=halo if isinstance(halo, int) and not isinstance(halo, bool) else None,
        config_name=meta.get("config_name"),
        source="metadata",
        metadata=meta,
    )


def infer_model_info(
    *,
    model: str,
    input_name: str,
    input_type: str,
    input_shape: Sequence[object],
    output_name: str,
    output_shape: Sequence[object],
    scale: int | None = None,
) -> ModelInfo:
    """Guess the I/O contract of a model without metadata from its first input/output.

    ``input_type`` is an ONNX type string such as ``"tensor(float)"``; shapes hold ints for
    static dimensions and anything else (``None``, a name) for dynamic ones. The scale is
    ``scale`` if given, else the ratio of static output/input heights.
    """
    rank = len(input_shape)
    matches = [
        m
        for m in ModelIO
        if input_type == m.onnx_type and rank == 4 and (m.channel_axis == 1 or input_shape[m.channel_axis] == 3)
    ]
    if matches:
        io = matches[0]
        h_axis = io.spatial_axes[0]
    else:
        raise ModelError(
            f"{model}: lacks {METADATA_KEY!r} metadata and its input {input_name!r} "
            f"({input_type}, shape {list(input_shape)}) matches neither float32 [N,3,H,W] nor "
            "uint8 [N,H,W,3]; export it with export/to_onnx.py"
        )
    if scale is None:
        in_h = input_shape[h_axis]
        out_h = output_shape[h_axis] if len(output_shape) == 4 else None
        if isinstance(in_h, int) and isinstance(out_h, int) and in_h > 0 and out_h % in_h == 0:
            scale = out_h // in_h
        else:
            raise ModelError(
                f"{model}: lacks {METADATA_KEY!r} metadata and has dynamic shapes, so its "
                "scale is unknown; pass scale= (e.g. scale=4) or re-export it with "
                "export/to_onnx.py"
            )
    scale = _check_scale(scale, model)
    log.info("%s: no %s metadata; inferred io=%s scale=%d", model, METADATA_KEY, io.value, scale)
    return ModelInfo(io=io, scale=scale, input_name=input_name, output_name=output_name, source="inferred")

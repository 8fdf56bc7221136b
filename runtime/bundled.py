"""The models shipped with the package, one file per precision, and how a precision picks one.

The bundled compact ×4 model comes as exact float32 (the default) and as its INT8 Q/DQ
variant, made from that very file by ``python -m calibration bundle`` and gated against it
on held-out photos (``eusr-compact-x4-int8.gate.json`` beside it). There is no bundled fp16
file: fp16 is what a GPU engine builds from the float32 graph.

The rule for a precision and a model path together (the CLI's ``--precision`` and
``--model``): with no model the precision picks the bundled file; with a model the file's
own graph decides, so the precision is a check of what the file records (the exporter's
``precision`` metadata, absent meaning fp32) and a mismatch is an error, never a silent
swap of the file the user named. Pure Python: onnxruntime is imported only to read the
metadata of a model named explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidArgumentError, ModelError
from .layout import Precision

__all__ = ["BUNDLED_FILES", "GATE_SUFFIX", "bundled_model", "models_dir", "recorded_precision", "resolve_model"]

BUNDLED_FILES: dict[Precision, str] = {
    Precision.FP32: "eusr-compact-x4.onnx",
    Precision.INT8: "eusr-compact-x4-int8.onnx",
}
"""The bundled file of each precision that ships (under :func:`models_dir`)."""

GATE_SUFFIX = ".gate.json"
"""The INT8 file's gate report lies beside it: ``eusr-compact-x4-int8.gate.json``."""

_REMAKE = "python -m calibration bundle"


def models_dir() -> Path:
    """The package folder holding the bundled models (package data)."""
    return Path(__file__).resolve().parent / "models"


def bundled_model(precision: Precision | str = Precision.FP32) -> Path:
    """The bundled model file of ``precision``; a clear error when it does not ship or is missing."""
    p = Precision.parse(precision)
    name = BUNDLED_FILES.get(p)
    if name is None:
        raise ModelError(
            f"precision {p.value!r}: no bundled model of that precision (bundled: "
            f"{', '.join(q.value for q in BUNDLED_FILES)}); a GPU engine builds fp16 from the fp32 model"
        )
    path = models_dir() / name
    if not path.is_file():
        hint = (
            f"remake it from the fp32 model with `{_REMAKE}` (needs the calib extra)"
            if p is Precision.INT8
            else "pass model= the path of an .onnx file (export one with python export/to_onnx.py)"
        )
        raise ModelError(f"the bundled {p.value} model {path} is missing from this installation; {hint}")
    return path


def recorded_precision(model: str | os.PathLike[str]) -> Precision:
    """The precision an ONNX file records in its ``fourpp_eusr`` metadata (none recorded: fp32)."""
    from .backends.onnxruntime_backend import import_onnxruntime
    from .model_info import METADATA_KEY, parse_metadata

    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the metadata is read
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several unrelated types for a bad file
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
    text = (sess.get_modelmeta().custom_metadata_map or {}).get(METADATA_KEY)
    if text is None:
        return Precision.FP32
    value = parse_metadata(text, model=str(path)).metadata.get("precision", Precision.FP32.value)
    try:
        return Precision(value)
    except ValueError:
        raise ModelError(f"{path}: metadata precision {value!r} is not one of {[q.value for q in Precision]}") from None


def resolve_model(
    model: str | os.PathLike[str] | None, precision: Precision | str | None, *, what: str = "precision"
) -> Path | None:
    """The model file for ``model`` and ``precision`` given together (see the module's rule).

    ``model=None`` with a precision: the bundled file of it; ``precision=None`` leaves
    ``model`` as it is (``None``: the caller's default, the bundled fp32 file). With both,
    ``model`` is returned if it is an ONNX file recording ``precision``; otherwise an error
    names ``what`` (the flag), the file and what it records.
    """
    if precision is None:
        return None if model is None else Path(model)
    p = Precision.parse(precision, what=what)
    if model is None:
        return bundled_model(p)
    path = Path(model)
    if path.suffix.lower() != ".onnx":
        raise InvalidArgumentError(
            f"{what} {p.value} with model {path}: a precision can only be checked against an ONNX file "
            f"(a {path.suffix or 'suffix-less'} model's precision was fixed when it was made); "
            f"drop {what} or pass an .onnx model"
        )
    found = recorded_precision(path)
    if found is not p:
        raise InvalidArgumentError(
            f"{what} {p.value} with model {path}: that file records precision {found.value} (expected {p.value}); "
            f"drop the model to use the bundled {p.value} model, or drop {what}"
        )
    return path

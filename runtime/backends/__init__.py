"""Inference backends and the registry that picks one by name.

``get_backend("onnxruntime", model_path)`` builds a backend; ``"auto"`` picks the best
one available here (today: ONNX Runtime with its CUDA provider when present, else CPU).
Backends are imported only when asked for, so listing or choosing them costs nothing.
"TensorRT" and "torch" have names reserved here and arrive as modules later.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from ..errors import BackendUnavailableError
from .base import Backend

__all__ = ["Backend", "BACKENDS", "PLANNED_BACKENDS", "get_backend", "resolve_auto"]

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
}
"""Backend name → ``module:Class``, imported on demand."""

PLANNED_BACKENDS: dict[str, str] = {
    "tensorrt": "TensorRT engines (export/to_trt.py) with the CUDA streams pipeline",
    "torch": "PyTorch checkpoints directly, for parity checks",
}
"""Names reserved for backends that are not implemented yet."""


def _backend_class(name: str) -> type[Backend]:
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def resolve_auto() -> tuple[str, dict[str, Any]]:
    """The best backend available here, as ``(name, options)``; logs the choice."""
    from .onnxruntime_backend import import_onnxruntime

    try:
        ort = import_onnxruntime()
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"no inference backend is available: {exc}") from exc
    if "CUDAExecutionProvider" in ort.get_available_providers():
        choice = ("onnxruntime", {"providers": ("CUDAExecutionProvider", "CPUExecutionProvider")})
    else:
        choice = ("onnxruntime", {"providers": ("CPUExecutionProvider",)})
    log.info("backend 'auto' resolved to %s with %s", choice[0], ", ".join(choice[1]["providers"]))
    return choice


def get_backend(name: str, model_path: str | os.PathLike, **options: Any) -> Backend:
    """Create the backend ``name`` for the model at ``model_path``.

    ``options`` go to the backend's constructor (for onnxruntime: ``providers``,
    ``intra_op_threads``, ``scale``). Unknown, planned or unavailable names raise
    :class:`~runtime.errors.BackendUnavailableError` saying what is available.
    """
    if name == "auto":
        name, auto_options = resolve_auto()
        options = {**auto_options, **options}
    if name in PLANNED_BACKENDS and name not in BACKENDS:
        raise BackendUnavailableError(
            f"backend {name!r} ({PLANNED_BACKENDS[name]}) is not implemented in this version; "
            f"use one of {['auto', *BACKENDS]}"
        )
    if name not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; use one of {['auto', *BACKENDS]}"
        )
    return _backend_class(name)(model_path, **options)

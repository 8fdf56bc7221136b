"""Inference backends and the registry that picks one by name.

Two kinds, both imported only when asked for, so listing or choosing them costs nothing:

* :data:`BACKENDS`: sequential :class:`Backend` s (numpy batch in, numpy batch out).
  ``get_backend("onnxruntime", model_path)`` builds one; ONNX Runtime on the CPU is the
  default on machines without a GPU.
* :data:`STAGE_FACTORIES`: GPU backends that run through the pipelined CUDA executor
  (``runtime.pipeline``); each gives a :class:`DeviceStageFactory`.
  ``get_stage_factory("torch-cuda", checkpoint)`` builds one; ``runtime.Upscaler`` does it
  for you with ``backend="tensorrt" | "torch-cuda" | "onnxruntime-cuda"``.

``"auto"`` (:func:`resolve_auto`) picks the best one available here, in this order:
TensorRT (an engine file given, tensorrt and a GPU present) → ONNX Runtime CUDA through the
executor (CUDAExecutionProvider, cuda-python and a GPU) → ONNX Runtime with its CUDA
provider (no cuda-python) → ONNX Runtime CPU; and logs the choice and why.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from typing import Any

from ..errors import BackendUnavailableError
from .base import Backend
from .device_stage import DeviceStage, DeviceStageFactory

__all__ = [
    "Backend",
    "DeviceStage",
    "DeviceStageFactory",
    "BACKENDS",
    "STAGE_FACTORIES",
    "PLANNED_BACKENDS",
    "ENGINE_SUFFIXES",
    "get_backend",
    "get_stage_factory",
    "resolve_auto",
    "backend_names",
]

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
}
"""Backend name → ``module:Class``, imported on demand."""

STAGE_FACTORIES: dict[str, str] = {
    "tensorrt": "runtime.backends.tensorrt_backend:TensorRTStageFactory",
    "torch-cuda": "runtime.backends.torch_cuda:TorchCudaStageFactory",
    "onnxruntime-cuda": "runtime.backends.onnxruntime_cuda:OrtCudaStageFactory",
}
"""GPU backend name → ``module:DeviceStageFactory class`` (constructor: model path, options)."""

PLANNED_BACKENDS: dict[str, str] = {
    "torch": "PyTorch checkpoints on the CPU, for parity checks (on a GPU: 'torch-cuda')",
}
"""Names reserved for backends that are not implemented yet."""

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
"""File suffixes taken to be TensorRT engines (``backend="auto"`` tries TensorRT for them)."""


def backend_names() -> list[str]:
    """Every name ``Upscaler(backend=...)`` accepts."""
    return ["auto", *BACKENDS, *STAGE_FACTORIES]


def _import_class(spec: str, name: str) -> type:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):  # the backend module itself is missing
            raise BackendUnavailableError(
                f"backend {name!r} is registered as {spec} but module {module_name} is not part of "
                "this installation"
            ) from exc
        raise
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise BackendUnavailableError(
            f"backend {name!r} is registered as {spec} but {module_name} has no {class_name}"
        ) from None


def _backend_class(name: str) -> type[Backend]:
    return _import_class(BACKENDS[name], name)


def _module_importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve_auto(model_path: str | os.PathLike | None = None, *, pipelined: bool = True) -> tuple[str, dict[str, Any]]:
    """The best backend available here for ``model_path``, as ``(name, options)``; logs it.

    With ``pipelined=False`` only sequential :data:`BACKENDS` are considered (what
    :func:`get_backend` can build).
    """
    from .onnxruntime_backend import import_onnxruntime

    lowered = os.fspath(model_path).lower() if model_path is not None else ""
    reasons: list[str] = []
    gpu: tuple[bool, str] | None = None

    def cuda_ok() -> bool:
        nonlocal gpu
        if gpu is None:
            if not _module_importable("cuda.bindings") and not _module_importable("cuda.cudart"):
                gpu = (False, "cuda-python is not installed")
            else:
                from ..cuda.resources import cuda_available

                gpu = cuda_available()
        return gpu[0]

    if pipelined and lowered.endswith(ENGINE_SUFFIXES):
        if not _module_importable("tensorrt"):
            reasons.append("tensorrt: the tensorrt package is not installed")
        elif not cuda_ok():
            reasons.append(f"tensorrt: {gpu[1]}")
        else:
            log.info("backend 'auto' resolved to tensorrt for %s", model_path)
            return "tensorrt", {}
    try:
        ort = import_onnxruntime()
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"no inference backend is available: {exc}" + (f" ({'; '.join(reasons)})" if reasons else "")
        ) from exc
    if "CUDAExecutionProvider" in ort.get_available_providers():
        if pipelined and cuda_ok():
            log.info("backend 'auto' resolved to onnxruntime-cuda (pipelined executor)%s",
                     f"; skipped {'; '.join(reasons)}" if reasons else "")
            return "onnxruntime-cuda", {}
        if pipelined:
            reasons.append(f"onnxruntime-cuda: {gpu[1]}")
        choice = ("onnxruntime", {"providers": ("CUDAExecutionProvider", "CPUExecutionProvider")})
    else:
        reasons.append("onnxruntime-cuda: ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        choice = ("onnxruntime", {"providers": ("CPUExecutionProvider",)})
    log.info(
        "backend 'auto' resolved to %s with %s%s", choice[0], ", ".join(choice[1]["providers"]),
        f" (skipped {'; '.join(reasons)})" if pipelined and reasons else "",
    )
    return choice


def get_stage_factory(name: str, model_path: str | os.PathLike, **options: Any) -> DeviceStageFactory:
    """Create the GPU stage factory ``name`` (see :data:`STAGE_FACTORIES`) for ``model_path``.

    ``options`` go to the factory's constructor. Unknown names, or a factory whose module
    or packages are missing, raise :class:`~runtime.errors.BackendUnavailableError`.
    """
    if name not in STAGE_FACTORIES:
        raise BackendUnavailableError(
            f"unknown GPU backend {name!r}; use one of {list(STAGE_FACTORIES)}"
        )
    return _import_class(STAGE_FACTORIES[name], name)(model_path, **options)


def get_backend(name: str, model_path: str | os.PathLike, **options: Any) -> Backend:
    """Create the sequential backend ``name`` for the model at ``model_path``.

    ``options`` go to the backend's constructor (for onnxruntime: ``providers``,
    ``intra_op_threads``, ``scale``). Unknown, planned or unavailable names raise
    :class:`~runtime.errors.BackendUnavailableError` saying what is available; GPU
    backends of :data:`STAGE_FACTORIES` are built by :func:`get_stage_factory` or
    ``runtime.Upscaler`` instead.
    """
    if name == "auto":
        name, auto_options = resolve_auto(model_path, pipelined=False)
        options = {**auto_options, **options}
    if name in STAGE_FACTORIES:
        raise BackendUnavailableError(
            f"backend {name!r} is not implemented as a sequential Backend: it runs on the pipelined "
            f"GPU executor; use runtime.Upscaler(model, backend={name!r}) or get_stage_factory({name!r}, ...)"
        )
    if name in PLANNED_BACKENDS and name not in BACKENDS:
        raise BackendUnavailableError(
            f"backend {name!r} ({PLANNED_BACKENDS[name]}) is not implemented in this version; "
            f"use one of {['auto', *BACKENDS]}"
        )
    if name not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; use one of {backend_names()}"
        )
    return _backend_class(name)(model_path, **options)

"""Inference backends: one contract, typed options, and the registry that picks one.

Every backend is a :class:`StageFactory` (see :mod:`runtime.backends.contract`), made from
its options (:mod:`runtime.backends.options`): :class:`OnnxRuntime` and :class:`OpenVino`
on the CPU (host memory), :class:`TensorRT`, :class:`TorchCuda` and :class:`OnnxRuntimeCuda` on a GPU.
Backend modules are imported only when a backend is created, so listing or choosing them
costs nothing.

``"auto"`` (:func:`resolve_auto`) picks the best one available here, in this order:
TensorRT (an engine file given, tensorrt and a GPU present) → ONNX Runtime CUDA through the
executor (CUDAExecutionProvider, cuda-python and a GPU) → ONNX Runtime with its CUDA
provider (no cuda-python) → on the CPU, :class:`OpenVino` for an ONNX file when openvino is
installed, else ONNX Runtime CPU; and logs the choice and why.

Why OpenVINO first on the CPU: on the bundled compact model (480×270, fp32, 2 threads, quiet
host, one run per machine) the default OpenVINO path ran 1.41× ONNX Runtime's whole image on
an Intel Xeon (AVX-512 VNNI/AMX; benchmarks/results/peers_acceptance.md) and 1.29× on an AMD
EPYC (AVX-512 VNNI/BF16; peers_amd.md), at 136 dB PSNR against PyTorch; and OpenVINO runs the
calibrated INT8 Q/DQ graph as INT8 kernels (2.67× and 2.96× ONNX Runtime fp32 on the two),
where ONNX Runtime runs it slower than float32.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from typing import Any

from ..errors import BackendUnavailableError
from .contract import Backend, Memory, Stage, StageFactory, host_array
from .options import (
    OPTIONS,
    BackendOptions,
    GpuOptions,
    OnnxRuntime,
    OnnxRuntimeCuda,
    OpenVino,
    TensorRT,
    TorchCuda,
    options_for,
    with_overrides,
)

__all__ = [
    "Stage",
    "StageFactory",
    "Backend",
    "Memory",
    "host_array",
    "BackendOptions",
    "GpuOptions",
    "OnnxRuntime",
    "OnnxRuntimeCuda",
    "OpenVino",
    "TensorRT",
    "TorchCuda",
    "OPTIONS",
    "ENGINE_SUFFIXES",
    "options_for",
    "with_overrides",
    "resolve_auto",
    "resolve",
    "create_backend",
    "backend_names",
    # deprecated names, kept for one release
    "DeviceStage",
    "DeviceStageFactory",
    "BACKENDS",
    "STAGE_FACTORIES",
    "get_backend",
    "get_stage_factory",
]

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
"""File suffixes taken to be TensorRT engines (``backend="auto"`` tries TensorRT for them)."""

OPENVINO_SUFFIXES = (".onnx",)
"""Model files ``backend="auto"`` gives OpenVINO on the CPU (the runtime's metadata lives in ONNX)."""

BACKENDS: dict[str, str] = {name: cls.factory for name, cls in OPTIONS.items() if not cls().pipelined}
"""Host-memory backend names → ``module:Class`` (deprecated view of :data:`OPTIONS`)."""

STAGE_FACTORIES: dict[str, str] = {name: cls.factory for name, cls in OPTIONS.items() if cls().pipelined}
"""GPU backend names → ``module:Class`` (deprecated view of :data:`OPTIONS`)."""

DeviceStage = Stage
"""Deprecated alias of :class:`Stage` (the GPU-only contract is now every backend's)."""
DeviceStageFactory = StageFactory
"""Deprecated alias of :class:`StageFactory`."""


def backend_names() -> list[str]:
    """Every name ``Upscaler(backend=...)`` accepts."""
    return ["auto", *OPTIONS]


def _module_importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _openvino_fits(model_path: str | os.PathLike[str] | None, lowered: str) -> str | None:
    """None when OpenVINO can run ``model_path`` here, else why not (for the log)."""
    if model_path is not None and not lowered.endswith(OPENVINO_SUFFIXES):
        return f"runs ONNX files ({', '.join(OPENVINO_SUFFIXES)}), not {os.path.basename(os.fspath(model_path))}"
    if not _module_importable("openvino"):
        return 'the openvino package is not installed (pip install "fourpp-eusr[openvino]")'
    return None


def resolve_auto(model_path: str | os.PathLike[str] | None = None, *, pipelined: bool = True) -> BackendOptions:
    """The options of the best backend available here for ``model_path``; logs the choice.

    With ``pipelined=False`` only host-memory backends are considered.
    """
    from .onnxruntime_backend import import_onnxruntime

    lowered = os.fspath(model_path).lower() if model_path is not None else ""
    reasons: list[str] = []
    gpu: tuple[bool, str] | None = None

    def cuda_ok() -> bool:
        nonlocal gpu
        if gpu is None:
            if not _module_importable("cuda.bindings"):
                gpu = (False, "cuda-python is not installed")
            else:
                from ..cuda.resources import cuda_available

                gpu = cuda_available()
        return gpu[0]

    if pipelined and lowered.endswith(ENGINE_SUFFIXES):
        if not _module_importable("tensorrt"):
            reasons.append("tensorrt: the tensorrt package is not installed")
        elif not cuda_ok():
            reasons.append(f"tensorrt: {gpu[1] if gpu else '?'}")
        else:
            log.info("backend 'auto' resolved to tensorrt for %s", model_path)
            return TensorRT()
    openvino_why = _openvino_fits(model_path, lowered)
    try:
        ort = import_onnxruntime()
    except BackendUnavailableError as exc:
        if openvino_why is None:
            log.info("backend 'auto' resolved to openvino (onnxruntime is not installed)")
            return OpenVino()
        raise BackendUnavailableError(
            f"no inference backend is available: {exc}; openvino: {openvino_why}"
            + (f" ({'; '.join(reasons)})" if reasons else "")
        ) from exc
    choice: BackendOptions
    if "CUDAExecutionProvider" in ort.get_available_providers():
        if pipelined and cuda_ok():
            log.info(
                "backend 'auto' resolved to onnxruntime-cuda (pipelined executor)%s",
                f"; skipped {'; '.join(reasons)}" if reasons else "",
            )
            return OnnxRuntimeCuda()
        if pipelined:
            reasons.append(f"onnxruntime-cuda: {gpu[1] if gpu else '?'}")
        choice = OnnxRuntime(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    else:
        reasons.append("onnxruntime-cuda: ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        if openvino_why is None:
            log.info(
                "backend 'auto' resolved to openvino on the CPU: installed, and faster than ONNX Runtime on the "
                "CPU as measured (fp32 exact; INT8 Q/DQ as INT8 kernels)%s",
                f" (skipped {'; '.join(reasons)})" if pipelined and reasons else "",
            )
            return OpenVino()
        reasons.append(f"openvino: {openvino_why}")
        choice = OnnxRuntime()
    log.info(
        "backend 'auto' resolved to %s with %s%s",
        choice.name,
        ", ".join(choice.providers),
        f" (skipped {'; '.join(reasons)})" if pipelined and reasons else "",
    )
    return choice


def resolve(backend: str | BackendOptions, model_path: str | os.PathLike[str] | None = None) -> BackendOptions:
    """Options for ``backend``: options as given, a name's defaults, or ``"auto"`` resolved."""
    if isinstance(backend, BackendOptions):
        return backend
    if not isinstance(backend, str):
        raise BackendUnavailableError(
            f"backend must be a name ({backend_names()}) or backend options such as "
            f"OnnxRuntime(threads=2), got {type(backend).__name__}"
        )
    if backend == "auto":
        return resolve_auto(model_path)
    return options_for(backend)


def create_backend(
    backend: str | BackendOptions, model: str | os.PathLike[str] | Any, **overrides: Any
) -> StageFactory:
    """The backend ``backend`` (a name or options) for ``model``; ``overrides`` by field name."""
    options = resolve(backend, model if isinstance(model, (str, os.PathLike)) else None)
    if overrides:
        options = with_overrides(options, overrides, what=f"backend {options.name!r}")
    return options.create(model)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


def get_backend(name: str, model_path: str | os.PathLike[str], **options: Any) -> StageFactory:
    """Deprecated: :func:`create_backend` (every backend is a StageFactory now)."""
    _deprecated("runtime.backends.get_backend", "runtime.backends.create_backend")
    if name == "auto":
        return create_backend(resolve_auto(model_path, pipelined=False), model_path, **options)
    return create_backend(name, model_path, **options)


def get_stage_factory(name: str, model_path: str | os.PathLike[str], **options: Any) -> StageFactory:
    """Deprecated: :func:`create_backend`."""
    _deprecated("runtime.backends.get_stage_factory", "runtime.backends.create_backend")
    return create_backend(name, model_path, **options)

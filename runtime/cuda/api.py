"""The one door to NVIDIA's cuda-python: lazy import and the checked call.

Every CUDA runtime call in the project goes through :func:`call`, written as
``call(rt.cudaStreamSynchronize, handle)`` with ``rt = cudart()``. cuda-python functions
return a tuple whose first item is a ``cudaError_t``; :func:`call` turns anything but
``cudaSuccess`` into :class:`CudaError` carrying the function and the CUDA error name
(``cudaGetErrorName``), and returns the remaining items. Keeping that shape uniform is also
what lets ``tests/test_cuda_callsites.py`` check every call site (function name, argument
count, enum members) against the installed ``cuda.bindings.runtime`` without a GPU.

Errors that mean "no usable GPU here" (no driver, driver too old, no device, the stub
library) become :class:`CudaUnavailableError`, a
:class:`~runtime.errors.BackendUnavailableError`, so ``backend="auto"`` and callers can
fall back to the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..errors import BackendUnavailableError, MissingDependencyError, UpscaleError

__all__ = [
    "CudaError",
    "CudaUnavailableError",
    "UNAVAILABLE_ERRORS",
    "cudart",
    "call",
    "check",
    "error_name",
    "bindings_version",
]

UNAVAILABLE_ERRORS = frozenset(
    {
        "cudaErrorInsufficientDriver",
        "cudaErrorNoDevice",
        "cudaErrorStubLibrary",
        "cudaErrorCallRequiresNewerDriver",
        "cudaErrorSystemDriverMismatch",
        "cudaErrorCompatNotSupportedOnDevice",
        "cudaErrorDevicesUnavailable",
        "cudaErrorInitializationError",
    }
)
"""CUDA error names that say this machine cannot run CUDA work at all (vs. a bug)."""

_RT: ModuleType | None = None


class CudaError(UpscaleError):
    """A CUDA runtime call failed; ``.function``, ``.name`` (e.g. cudaErrorIllegalAddress), ``.code``."""

    def __init__(self, function: str, name: str, code: int, description: str = "") -> None:
        self.function = function
        self.name = name
        self.code = code
        self.description = description
        detail = f" ({description})" if description else ""
        super().__init__(f"{function} failed with {name} [{code}]{detail}")


class CudaUnavailableError(CudaError, BackendUnavailableError):
    """No CUDA driver or GPU usable here: the GPU backends cannot run on this machine."""

    def __init__(self, function: str, name: str, code: int, description: str = "") -> None:
        super().__init__(function, name, code, description)
        self.args = (
            f"no CUDA driver/GPU usable here: {function} returned {name} [{code}]"
            f"{f' ({description})' if description else ''}. The GPU backends need an NVIDIA GPU "
            f"with a driver at least as new as the CUDA runtime of cuda-bindings "
            f"{bindings_version()}; on a machine without one use backend='onnxruntime' (CPU)",
        )

    def __str__(self) -> str:
        return str(self.args[0])


def cudart() -> ModuleType:
    """The ``cuda.bindings.runtime`` module (cuda-python >= 12.6, the project's minimum)."""
    global _RT
    if _RT is None:
        try:
            from cuda.bindings import runtime as module
        except ImportError as exc:
            raise MissingDependencyError(
                "Python package 'cuda-bindings' (NVIDIA cuda-python) is needed for the CUDA "
                f"pipeline but cannot be imported ({exc}); install it with: "
                "pip install 'cuda-python>=12.6'  (or the project's extra: pip install '.[gpu]')"
            ) from exc
        _RT = module
    return _RT


def bindings_version() -> str:
    """Version of the installed cuda-bindings, or 'unknown'."""
    try:
        import cuda.bindings

        return str(cuda.bindings.__version__)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def error_name(err: Any) -> tuple[str, str]:
    """``(cudaGetErrorName, cudaGetErrorString)`` of a ``cudaError_t``, as text."""
    rt = cudart()
    names = []
    for fn in (rt.cudaGetErrorName, rt.cudaGetErrorString):
        try:
            result = fn(err)
            text = result[1] if isinstance(result, tuple) else result
            names.append(text.decode() if isinstance(text, bytes) else str(text))
        except Exception:  # noqa: BLE001 - never mask the original error
            names.append(str(err))
    return names[0], names[1]


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the cuda-python function ``fn`` with ``args``, raising :class:`CudaError` on failure.

    Returns ``None`` for calls that only return an error code, the single value for calls
    returning one (``cudaStreamCreateWithFlags`` → the stream), else a tuple of values.
    """
    return check(fn(*args), getattr(fn, "__name__", repr(fn)))


def check(result: Any, function: str) -> Any:
    """:func:`call`'s checker for a result already in hand (``function`` names the call)."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    code = int(err)
    if code != 0:
        name, description = error_name(err)
        cls = CudaUnavailableError if name in UNAVAILABLE_ERRORS else CudaError
        raise cls(function, name, code, description)
    if not values:
        return None
    return values[0] if len(values) == 1 else values

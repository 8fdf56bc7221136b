"""CUDA from Python through NVIDIA's cuda-python (``cuda.bindings.runtime``), imported lazily.

* :mod:`runtime.cuda.api`: the import and the one checked call (:func:`call`), errors.
* :mod:`runtime.cuda.resources`: streams, events, pinned and device buffers, graphs, and
  :class:`CudaDevice`, the device the pipelined executor (``runtime.pipeline``) runs on.
* The same interface on the CPU for tests, :class:`~runtime.testing.EmulatedDevice`, lives in
  :mod:`runtime.testing` (a test double; the runtime never imports it).

Importing this package does not import cuda-python; creating any CUDA object does.
"""

from __future__ import annotations

from .api import CudaError, CudaUnavailableError, bindings_version, call, check, cudart
from .resources import (
    CudaDevice,
    DeviceArray,
    DeviceBuffer,
    Event,
    Graph,
    PinnedBuffer,
    Stream,
    cuda_available,
)

__all__ = [
    "CudaError",
    "CudaUnavailableError",
    "bindings_version",
    "call",
    "check",
    "cudart",
    "CudaDevice",
    "DeviceArray",
    "DeviceBuffer",
    "Event",
    "Graph",
    "PinnedBuffer",
    "Stream",
    "cuda_available",
]

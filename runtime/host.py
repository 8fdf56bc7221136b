"""The CPU as the executor's device: synchronous, and host memory is the device memory.

:class:`~runtime.pipeline.PipelineExecutor` runs every backend through the same tile loop.
On a GPU its device is :class:`~runtime.cuda.resources.CudaDevice`; on the CPU it is
:class:`HostDevice`, whose streams and events are no-ops (a host stage computes inside
``enqueue``) and whose buffers are plain numpy memory. Because ``unified`` is true the
executor binds the host buffers themselves, so the CPU path copies nothing it did not copy
before: gather into the batch buffer, run, stitch from the result buffer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, UpscaleError
from .utils import check_int

__all__ = ["HostDevice", "HostBuffer", "HostStream", "HostEvent"]


class HostBuffer:
    """Host memory with the executor's buffer interface: ``ptr``, ``nbytes``, ``view``, ``close``."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = check_int("nbytes", nbytes, 1)
        self.array: np.ndarray | None = np.zeros(self.nbytes, np.uint8)
        self.ptr = int(self.array.ctypes.data)
        self.closed = False

    def memory(self) -> np.ndarray:
        """The buffer's bytes as a flat uint8 array; raises once closed."""
        if self.array is None:
            raise UpscaleError(f"{type(self).__name__} is closed")
        return self.array

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A ``dtype`` array of ``shape`` over the start of the buffer (no copy)."""
        memory = self.memory()
        dtype = np.dtype(dtype)
        needed = math.prod(shape) * dtype.itemsize
        if needed > self.nbytes:
            raise InvalidArgumentError(
                f"a {dtype} view of shape {shape} needs {needed} bytes, buffer has {self.nbytes}"
            )
        return memory[:needed].view(dtype).reshape(shape)

    def close(self) -> None:
        self.closed = True
        self.array = None


class HostStream:
    """A stream on which everything has already happened (handle 0)."""

    handle = 0

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


class HostEvent:
    """An event that is always complete."""

    def record(self, stream: HostStream) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def close(self) -> None:
        pass


class HostDevice:
    """The executor's device interface on the CPU, for backends whose ``memory`` is ``"host"``."""

    kind = "host"
    name = "CPU"
    unified = True
    """Host buffers are device buffers: the executor skips the copies."""
    synchronous = True
    """Work is done when ``enqueue`` returns: host stages may run here."""

    def activate(self) -> None:
        pass

    def create_stream(self) -> HostStream:
        return HostStream()

    def create_event(self, *, timing: bool = False) -> HostEvent:
        return HostEvent()

    def alloc_host(self, nbytes: int) -> HostBuffer:
        return HostBuffer(nbytes)

    def alloc_device(self, nbytes: int) -> HostBuffer:
        return HostBuffer(nbytes)

    def copy_h2d(self, dst: HostBuffer, src: HostBuffer, nbytes: int, stream: HostStream) -> None:
        if dst is not src:
            np.copyto(dst.view(np.uint8, (nbytes,)), src.view(np.uint8, (nbytes,)))

    def copy_d2h(self, dst: HostBuffer, src: HostBuffer, nbytes: int, stream: HostStream) -> None:
        self.copy_h2d(dst, src, nbytes, stream)

    def begin_capture(self, stream: HostStream) -> None:
        raise InvalidArgumentError("the host device has no CUDA graphs; use cuda_graphs=False on the CPU")

    def end_capture(self, stream: HostStream) -> Any:
        raise InvalidArgumentError("the host device has no CUDA graphs")

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "HostDevice()"

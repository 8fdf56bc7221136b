"""CUDA resources with explicit lifetimes: streams, events, pinned and device memory, graphs.

Each object owns one CUDA handle, frees it in ``close()`` (idempotent) and works as a
context manager, so the executor allocates everything once per slot and nothing in its hot
loop. :class:`CudaDevice` bundles them behind the small device interface that
``runtime.pipeline`` schedules against (the CPU stand-in ``runtime.testing.EmulatedDevice``
implements the same interface).

Pinned host memory (``cudaHostAlloc``) is what makes ``cudaMemcpyAsync`` truly
asynchronous; :attr:`PinnedBuffer.array` is a numpy view of it, so gathering tiles writes
straight into DMA-able memory. A view must not outlive the buffer's ``close()``.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from ..closing import Closing
from ..device_arrays import packed_cuda_array_interface
from ..errors import InvalidArgumentError, UpscaleError
from ..utils import check_int
from .api import CudaUnavailableError, call, check, cudart

__all__ = [
    "Stream",
    "Event",
    "PinnedBuffer",
    "DeviceBuffer",
    "DeviceArray",
    "Graph",
    "CudaDevice",
    "cuda_available",
]


class _Resource(Closing):
    """Close-once bookkeeping shared by every CUDA object here."""

    _closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:  # pragma: no cover - overridden
        pass

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise UpscaleError(f"{type(self).__name__} is closed")

    def __del__(self) -> None:
        # A leaked handle is freed at garbage collection; errors then have no one to go to.
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class Stream(_Resource):
    """A non-blocking CUDA stream (no implicit sync with the legacy default stream)."""

    def __init__(self) -> None:
        rt = cudart()
        self.raw = call(rt.cudaStreamCreateWithFlags, rt.cudaStreamNonBlocking)
        self.handle = int(self.raw)

    def synchronize(self) -> None:
        self._check_open()
        call(cudart().cudaStreamSynchronize, self.raw)

    def _release(self) -> None:
        call(cudart().cudaStreamDestroy, self.raw)

    def __repr__(self) -> str:
        return f"Stream(0x{self.handle:x})"


class Event(_Resource):
    """A CUDA event; timing disabled unless ``timing`` (cheaper to record and wait)."""

    def __init__(self, *, timing: bool = False) -> None:
        rt = cudart()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.raw = call(rt.cudaEventCreateWithFlags, flags)
        self.timing = timing

    def record(self, stream: Stream) -> None:
        self._check_open()
        call(cudart().cudaEventRecord, self.raw, stream.raw)

    def synchronize(self) -> None:
        """Block until the work recorded before this event is done; raises its CUDA error."""
        self._check_open()
        call(cudart().cudaEventSynchronize, self.raw)

    def query(self) -> bool:
        """True when the recorded work is done (never blocks)."""
        self._check_open()
        rt = cudart()
        result = rt.cudaEventQuery(self.raw)
        if int(result[0]) == int(rt.cudaError_t.cudaErrorNotReady):
            return False
        check(result, "cudaEventQuery")  # any other error goes through the one checker
        return True

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event (both recorded with ``timing=True``)."""
        return float(call(cudart().cudaEventElapsedTime, start.raw, self.raw))

    def _release(self) -> None:
        call(cudart().cudaEventDestroy, self.raw)


def _check_nbytes(nbytes: int) -> int:
    return check_int("nbytes", nbytes, 1)


def _typed_view(flat: np.ndarray, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A ``dtype``/``shape`` view of the start of a flat uint8 array (no copy)."""
    dtype = np.dtype(dtype)
    needed = math.prod(shape) * dtype.itemsize
    if needed > flat.nbytes:
        raise InvalidArgumentError(
            f"a {dtype} view of shape {shape} needs {needed} bytes but the buffer holds {flat.nbytes}"
        )
    return flat[:needed].view(dtype).reshape(shape)


class PinnedBuffer(_Resource):
    """Page-locked host memory of ``nbytes``, seen from Python as :attr:`array` (uint8)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = _check_nbytes(nbytes)
        rt = cudart()
        self.ptr = int(call(rt.cudaHostAlloc, self.nbytes, rt.cudaHostAllocDefault))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self.array: np.ndarray | None = np.ctypeslib.as_array(raw)

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """The first bytes as a ``dtype`` array of ``shape`` (no copy; valid until close)."""
        self._check_open()
        assert self.array is not None  # _check_open raised otherwise
        return _typed_view(self.array, dtype, shape)

    def _release(self) -> None:
        self.array = None
        call(cudart().cudaFreeHost, self.ptr)


class DeviceArray:
    """A typed, shaped window on device memory, for consumers of ``__cuda_array_interface__``.

    torch.as_tensor / CuPy / Numba read it without copying. ``stream`` is None in the
    interface: ordering is the executor's job (every use of a slot's buffers is on the
    slot's stream), so consumers must not add their own synchronisation.
    """

    def __init__(self, ptr: int, dtype: Any, shape: tuple[int, ...]) -> None:
        self.ptr = int(ptr)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return packed_cuda_array_interface(self.ptr, self.shape, self.dtype)

    def __repr__(self) -> str:
        return f"DeviceArray(0x{self.ptr:x}, {self.dtype}, {self.shape})"


class DeviceBuffer(_Resource):
    """``nbytes`` of device memory (``cudaMalloc``); :meth:`view` gives typed windows on it."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = _check_nbytes(nbytes)
        self.ptr = int(call(cudart().cudaMalloc, self.nbytes))

    def view(self, dtype: Any, shape: tuple[int, ...]) -> DeviceArray:
        self._check_open()
        array = DeviceArray(self.ptr, dtype, shape)
        if array.nbytes > self.nbytes:
            raise InvalidArgumentError(
                f"a {array.dtype} view of shape {shape} needs {array.nbytes} bytes but the buffer holds {self.nbytes}"
            )
        return array

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return self.view(np.uint8, (self.nbytes,)).__cuda_array_interface__

    def _release(self) -> None:
        call(cudart().cudaFree, self.ptr)


class Graph(_Resource):
    """An instantiated CUDA graph captured from a stream; :meth:`launch` replays it."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph
        self._exec = None
        self._exec = call(cudart().cudaGraphInstantiate, graph, 0)

    def launch(self, stream: Stream) -> None:
        self._check_open()
        call(cudart().cudaGraphLaunch, self._exec, stream.raw)

    def _release(self) -> None:
        rt = cudart()
        if self._exec is not None:
            call(rt.cudaGraphExecDestroy, self._exec)
        call(rt.cudaGraphDestroy, self._graph)


def cuda_available() -> tuple[bool, str]:
    """``(True, "<n> GPU(s)")`` when CUDA work can run here, else ``(False, why)``; never raises."""
    try:
        rt = cudart()
        count = call(rt.cudaGetDeviceCount)
    except (UpscaleError, ImportError) as exc:
        return False, str(exc)
    if count < 1:
        return False, "cudaGetDeviceCount found no CUDA device"
    return True, f"{count} CUDA device(s)"


class CudaDevice:
    """One GPU as the executor sees it: streams, events, memory, async copies, graph capture.

    Creating it is the early, cheap check that CUDA can run here: without a driver or GPU it
    raises :class:`~runtime.cuda.api.CudaUnavailableError` naming the CUDA error. It owns no
    CUDA context of its own (the runtime's primary context), so ``close`` is a no-op kept for
    symmetry with the emulated device.
    """

    kind = "cuda"

    def __init__(self, index: int = 0) -> None:
        rt = cudart()
        self.index = check_int("device", index, 0)
        count = call(rt.cudaGetDeviceCount)
        if count < 1:
            raise CudaUnavailableError("cudaGetDeviceCount", "cudaErrorNoDevice", 100, "no CUDA-capable device")
        if self.index >= count:
            raise InvalidArgumentError(f"device must be below the {count} CUDA device(s) here, got {self.index}")
        call(rt.cudaSetDevice, self.index)
        props = call(rt.cudaGetDeviceProperties, self.index)
        name = props.name
        self.name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).split("\x00")[0]
        self.compute_capability = (int(props.major), int(props.minor))

    # -- facts -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """GPU name, compute capability, driver and runtime versions (for results files)."""
        rt = cudart()
        driver = call(rt.cudaDriverGetVersion)
        runtime_version = call(rt.cudaRuntimeGetVersion)
        free, total = self.memory_info()
        return {
            "name": self.name,
            "index": self.index,
            "compute_capability": "%d.%d" % self.compute_capability,  # noqa: UP031
            "cuda_driver_version": f"{driver // 1000}.{driver % 1000 // 10}",
            "cuda_runtime_version": f"{runtime_version // 1000}.{runtime_version % 1000 // 10}",
            "memory_total_bytes": int(total),
            "memory_free_bytes": int(free),
        }

    def memory_info(self) -> tuple[int, int]:
        """``(free, total)`` bytes of device memory."""
        free, total = call(cudart().cudaMemGetInfo)
        return int(free), int(total)

    # -- the executor's interface ----------------------------------------------------
    def activate(self) -> None:
        """Make this GPU current for the calling thread (CUDA's current device is per thread)."""
        call(cudart().cudaSetDevice, self.index)

    def create_stream(self) -> Stream:
        return Stream()

    def create_event(self, *, timing: bool = False) -> Event:
        return Event(timing=timing)

    def alloc_host(self, nbytes: int) -> PinnedBuffer:
        return PinnedBuffer(nbytes)

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(nbytes)

    def copy_h2d(self, dst: DeviceBuffer, src: PinnedBuffer, nbytes: int, stream: Stream) -> None:
        """Queue ``nbytes`` from pinned ``src`` to device ``dst`` on ``stream``."""
        rt = cudart()
        call(rt.cudaMemcpyAsync, dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw)

    def copy_d2h(self, dst: PinnedBuffer, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
        """Queue ``nbytes`` from device ``src`` to pinned ``dst`` on ``stream``."""
        rt = cudart()
        call(rt.cudaMemcpyAsync, dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw)

    def copy_2d(
        self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int, stream: Stream
    ) -> None:
        """Queue a device-to-device copy of ``height`` rows of ``width`` bytes (device frames)."""
        rt = cudart()
        call(
            rt.cudaMemcpy2DAsync,
            dst,
            dst_pitch,
            src,
            src_pitch,
            width,
            height,
            rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
            stream.raw,
        )

    def synchronize_handle(self, handle: int) -> None:
        """Wait for a stream this process did not create (a producer's, by its handle)."""
        call(cudart().cudaStreamSynchronize, int(handle))

    def begin_capture(self, stream: Stream) -> None:
        """Start recording ``stream``'s work into a graph instead of running it."""
        rt = cudart()
        call(rt.cudaStreamBeginCapture, stream.raw, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)

    def end_capture(self, stream: Stream) -> Graph:
        """Stop recording and instantiate the graph (raises if anything in it failed)."""
        graph = call(cudart().cudaStreamEndCapture, stream.raw)
        return Graph(graph)

    def synchronize(self) -> None:
        call(cudart().cudaDeviceSynchronize)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"CudaDevice({self.index}, {self.name!r})"

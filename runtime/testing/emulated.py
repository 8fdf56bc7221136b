"""A CPU stand-in for the CUDA device, strict enough to catch missing synchronisation.

:class:`EmulatedDevice` implements the same small interface as
:class:`~runtime.cuda.resources.CudaDevice` (streams, events, "pinned" host buffers,
"device" buffers, async copies, graph capture) with numpy memory and per-stream op queues,
so ``runtime.pipeline`` runs its real scheduling code on a machine without a GPU.

What makes it a test rather than a mock is *when* queued work happens (``schedule``):

* ``"lazy"`` (default): nothing queued on a stream runs until an event recorded after it
  (or the stream) is synchronised, as if the GPU were infinitely slow. A host buffer that
  is refilled before its copy to the device was waited for, or a result read before its
  event, then gives wrong pixels.
* ``"random"``: at every device call each stream runs a random number of its queued ops
  (seeded), like a GPU that makes progress on its own at arbitrary times.
* ``"eager"``: every op runs when queued (like a synchronous device).

A copy to the host also fills its destination with 0xFF bytes (NaN for float32, 255 for
uint8) when it is *queued*, so reading a result before its event always shows. An op that
raises stores the exception on its stream; the next synchronisation that covers it raises
it, as CUDA reports asynchronous errors, and the rest of that stream's work up to that
point is skipped.

Stages: :class:`BackendStageFactory` runs any :class:`~runtime.backends.Backend` (ONNX
Runtime CPU, a numpy model) as a device stage on emulated device memory;
:class:`DeferredStageFactory` defers any backend whose stages compute synchronously on
host-addressable memory (``memory == "host"``: ONNX Runtime's IOBinding on the CPU, the
torch stage on the CPU) to stream execution time.

What happened is on the record: ``device.trace`` lists every stage kernel as ``("run",
handle)`` (queued for execution), ``("capture", handle)`` (recorded into a graph being
captured) or ``("replay", handle)`` (a graph launch); ``BackendStageFactory.bound_shapes``
and ``enqueued_shapes`` list the shapes its stages were bound to and enqueued with. Graph
capture can be made to fail: ``device.fail_end_capture = n`` makes the next ``n``
``end_capture`` calls leave capture mode and raise, as ``cudaStreamEndCapture`` does with
``cudaErrorStreamCaptureInvalidated``.

A test double: the runtime itself never imports :mod:`runtime.testing`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backends.contract import Backend, Stage, StageFactory
from ..errors import InvalidArgumentError, UpscaleError
from ..host import HostBuffer
from ..utils import check_int

__all__ = [
    "SCHEDULES",
    "EmulatedDevice",
    "EmulatedStream",
    "EmulatedEvent",
    "HostBuffer",
    "EmulatedDeviceBuffer",
    "BackendStageFactory",
    "DeferredStageFactory",
]

SCHEDULES = ("lazy", "random", "eager")


class _Op:
    __slots__ = ("run", "on_queue", "label")

    def __init__(self, run: Callable[[], None], label: str, on_queue: Callable[[], None] | None = None) -> None:
        self.run = run
        self.label = label
        self.on_queue = on_queue


class EmulatedStream:
    """An in-order queue of ops; ``handle`` is the int a stage receives."""

    def __init__(self, device: EmulatedDevice, handle: int) -> None:
        self.device = device
        self.handle = handle
        self._ops: list[_Op] = []
        self._done = 0  # ops[:done] have run (or been skipped after an error)
        self._error: tuple[int, BaseException] | None = None
        self._capture: list[_Op] | None = None
        self.closed = False

    @property
    def queued(self) -> int:
        """Ops queued so far (a position events remember)."""
        return len(self._ops)

    @property
    def pending(self) -> int:
        return len(self._ops) - self._done

    def _enqueue(self, op: _Op) -> None:
        if self.closed:
            raise UpscaleError(f"emulated stream 0x{self.handle:x} is closed")
        if self._capture is not None:
            self._capture.append(op)
            return
        if op.on_queue is not None:
            op.on_queue()
        self._ops.append(op)
        if self.device.schedule == "eager":
            self._run_until(len(self._ops))

    def _run_until(self, position: int) -> None:
        while self._done < position:
            op = self._ops[self._done]
            self._done += 1
            self.device.ops_run += 1
            if self._error is not None:
                continue  # a failed stream skips the rest of its queued work
            try:
                op.run()
            except Exception as exc:  # noqa: BLE001 - reported at synchronisation
                self._error = (self._done, exc)
        if len(self._ops) > 4096 and self._done == len(self._ops) and self._error is None:
            self._ops.clear()  # keep memory bounded; positions restart
            self._done = 0
            self.device._rebase(self)

    def _raise_up_to(self, position: int) -> None:
        if self._error is not None and self._error[0] <= position:
            exc = self._error[1]
            self._error = None
            raise exc

    def synchronize(self) -> None:
        self.device._tick()
        self._run_until(len(self._ops))
        self._raise_up_to(len(self._ops))

    def close(self) -> None:
        self.closed = True


class EmulatedEvent:
    """Remembers a stream position; synchronising runs the stream up to it."""

    def __init__(self, device: EmulatedDevice) -> None:
        self.device = device
        self._stream: EmulatedStream | None = None
        self._position = 0
        self.closed = False

    def record(self, stream: EmulatedStream) -> None:
        if stream._capture is not None:
            raise InvalidArgumentError("recording an event on a capturing stream is not emulated")
        self.device._tick()
        self._stream, self._position = stream, stream.queued

    def synchronize(self) -> None:
        self.device._tick()
        if self._stream is not None:
            self._stream._run_until(self._position)
            self._stream._raise_up_to(self._position)

    def query(self) -> bool:
        self.device._tick()
        return self._stream is None or self._stream._done >= self._position

    def _rebase(self, stream: EmulatedStream) -> None:
        if self._stream is stream:
            self._position = 0

    def close(self) -> None:
        self.closed = True


class EmulatedDeviceBuffer(HostBuffer):
    """Stand-in for device memory; stages reach it through :meth:`EmulatedDevice.array_at`."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(nbytes)
        self.memory()[:] = 0xFF  # uninitialised device memory is garbage, not zeros


class _Graph:
    def __init__(self, ops: list[_Op]) -> None:
        self.ops = ops
        self.closed = False

    def launch(self, stream: EmulatedStream) -> None:
        if self.closed:
            raise UpscaleError("graph is closed")
        stream.device._tick()
        stream.device.trace.append(("replay", stream.handle))
        for op in self.ops:
            stream._enqueue(_Op(op.run, op.label, op.on_queue))

    def close(self) -> None:
        self.closed = True


class EmulatedDevice:
    """The executor's device interface on the CPU; see the module docstring."""

    kind = "emulated"
    name = "emulated CUDA device (CPU)"

    def __init__(self, schedule: str = "lazy", *, seed: int = 0) -> None:
        if schedule not in SCHEDULES:
            raise InvalidArgumentError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.schedule = schedule
        self._random = random.Random(seed)
        self._handles = itertools.count(0x1000)
        self._streams: dict[int, EmulatedStream] = {}
        self._events: list[EmulatedEvent] = []
        self._memory: list[EmulatedDeviceBuffer] = []
        self.allocations = 0
        """Buffers, streams and events created: the executor's hot loop must not add any."""
        self.ops_run = 0
        self.trace: list[tuple[str, int]] = []
        """``("run" | "capture" | "replay", stream handle)`` per stage kernel or graph launch."""
        self.fail_end_capture = 0
        """How many of the next ``end_capture`` calls fail (after leaving capture mode)."""

    # -- progress --------------------------------------------------------------------
    def _tick(self) -> None:
        if self.schedule != "random":
            return
        for stream in list(self._streams.values()):
            if stream.pending and stream._capture is None:
                stream._run_until(stream._done + self._random.randint(0, stream.pending))

    def _rebase(self, stream: EmulatedStream) -> None:
        for event in self._events:
            event._rebase(stream)

    # -- the executor's interface ----------------------------------------------------
    def activate(self) -> None:
        pass

    def create_stream(self) -> EmulatedStream:
        self.allocations += 1
        stream = EmulatedStream(self, next(self._handles))
        self._streams[stream.handle] = stream
        return stream

    def create_event(self, *, timing: bool = False) -> EmulatedEvent:
        self.allocations += 1
        event = EmulatedEvent(self)
        self._events.append(event)
        return event

    def alloc_host(self, nbytes: int) -> HostBuffer:
        self.allocations += 1
        return HostBuffer(nbytes)

    def alloc_device(self, nbytes: int) -> EmulatedDeviceBuffer:
        self.allocations += 1
        buffer = EmulatedDeviceBuffer(nbytes)
        self._memory.append(buffer)
        return buffer

    def copy_h2d(self, dst: EmulatedDeviceBuffer, src: HostBuffer, nbytes: int, stream: EmulatedStream) -> None:
        self._tick()
        self._check_copy(dst, src, nbytes)

        def run() -> None:  # reads the host buffer when the op runs, as a DMA would
            dst.memory()[:nbytes] = src.memory()[:nbytes]

        stream._enqueue(_Op(run, "h2d"))

    def copy_d2h(self, dst: HostBuffer, src: EmulatedDeviceBuffer, nbytes: int, stream: EmulatedStream) -> None:
        self._tick()
        self._check_copy(dst, src, nbytes)

        def poison() -> None:
            dst.memory()[:nbytes] = 0xFF

        def run() -> None:
            dst.memory()[:nbytes] = src.memory()[:nbytes]

        stream._enqueue(_Op(run, "d2h", on_queue=poison))

    def copy_2d(
        self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int, stream: EmulatedStream
    ) -> None:
        """Queue a device-to-device 2-D copy; both sides must lie in emulated device memory."""
        self._tick()
        if not (0 < width <= min(dst_pitch, src_pitch) and height > 0):
            raise InvalidArgumentError(
                f"2-D copy of {height} rows x {width} bytes does not fit pitches {src_pitch} -> {dst_pitch}"
            )
        span = lambda pitch: (height - 1) * pitch + width  # noqa: E731
        target = self.array_at(dst, np.uint8, (span(dst_pitch),))  # checked when queued, as CUDA does
        source = self.array_at(src, np.uint8, (span(src_pitch),))

        def run() -> None:
            for r in range(height):
                target[r * dst_pitch : r * dst_pitch + width] = source[r * src_pitch : r * src_pitch + width]

        stream._enqueue(_Op(run, "d2d"))

    def synchronize_handle(self, handle: int) -> None:
        """Wait for a producer's stream by handle; 1 and 2 (legacy/per-thread default) hold nothing here."""
        if handle in self._streams:
            self._streams[handle].synchronize()
        elif handle not in (1, 2):
            raise InvalidArgumentError(f"no emulated stream with handle {handle!r}")

    @staticmethod
    def _check_copy(dst: HostBuffer, src: HostBuffer, nbytes: int) -> None:
        if dst.array is None or src.array is None:
            raise UpscaleError("copy between closed buffers")
        if not 0 < nbytes <= min(dst.nbytes, src.nbytes):
            raise InvalidArgumentError(
                f"copy of {nbytes} bytes does not fit buffers of {src.nbytes} -> {dst.nbytes} bytes"
            )

    def begin_capture(self, stream: EmulatedStream) -> None:
        if stream._capture is not None:
            raise InvalidArgumentError("stream is already capturing")
        stream._capture = []

    def end_capture(self, stream: EmulatedStream) -> _Graph:
        if stream._capture is None:
            raise InvalidArgumentError("stream is not capturing")
        ops, stream._capture = stream._capture, None
        if self.fail_end_capture > 0:
            self.fail_end_capture -= 1
            raise UpscaleError(
                f"emulated stream 0x{stream.handle:x}: stream capture invalidated (cudaErrorStreamCaptureInvalidated)"
            )
        return _Graph(ops)

    def synchronize(self) -> None:
        for stream in list(self._streams.values()):
            stream.synchronize()

    def close(self) -> None:
        pass

    # -- what stages use -------------------------------------------------------------
    def stream(self, handle: int) -> EmulatedStream:
        """The stream with ``handle`` (what a stage's ``enqueue`` receives)."""
        try:
            return self._streams[handle]
        except KeyError:
            raise InvalidArgumentError(f"no emulated stream with handle {handle!r}") from None

    def launch(self, stream: int, fn: Callable[[], None], label: str = "kernel") -> None:
        """Queue the host function ``fn`` on stream handle ``stream`` (a "kernel")."""
        self._tick()
        target = self.stream(stream)
        self.trace.append(("capture" if target._capture is not None else "run", stream))
        target._enqueue(_Op(fn, label))

    def array_at(self, ptr: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A view of emulated device memory at ``ptr`` (must lie in one allocation)."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        for buffer in self._memory:
            if buffer.array is not None and buffer.ptr <= ptr and ptr + nbytes <= buffer.ptr + buffer.nbytes:
                start = ptr - buffer.ptr
                return buffer.array[start : start + nbytes].view(dtype).reshape(shape)
        raise InvalidArgumentError(f"0x{ptr:x} (+{nbytes} bytes) is not inside any emulated device allocation")

    def __repr__(self) -> str:
        return f"EmulatedDevice(schedule={self.schedule!r})"


# ---------------------------------------------------------------------------- stages


class _BackendStage(Stage):
    factory: BackendStageFactory

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        self._shapes = (input_shape, output_shape)
        self.factory.bound_shapes.append(input_shape)

    def _enqueue(self, stream: int) -> None:
        assert self._bound is not None  # Stage.enqueue checked it
        in_ptr, out_ptr, _ = self._bound
        in_shape, out_shape = self._shapes
        self.factory.enqueued_shapes.append(in_shape)
        self.factory.before_enqueue(in_shape)
        self.factory.device.launch(stream, lambda: self._run(in_ptr, out_ptr, in_shape, out_shape), "backend")

    def _run(self, in_ptr: int, out_ptr: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        factory = self.factory
        dtype = factory.io.dtype
        x = factory.device.array_at(in_ptr, dtype, in_shape)
        factory.device.array_at(out_ptr, dtype, out_shape)[...] = factory.backend.infer(x)


class BackendStageFactory(StageFactory):
    """Any :class:`~runtime.backends.Backend` as a device stage on the emulated device.

    Each ``enqueue`` queues ``backend.infer`` on the emulated stream, reading and writing
    emulated device memory, so the executor's copies, events and stitching are exercised
    exactly as with a GPU stage. ``before_enqueue`` is a hook for tests (e.g. to fail).
    """

    name = "emulated backend"

    def __init__(self, backend: Backend, device: EmulatedDevice, *, max_batch: int = 64) -> None:
        self.backend = backend
        self.device = device
        self._info = backend.info
        self._max_batch = check_int("max_batch", max_batch, 1)
        self.stages: list[_BackendStage] = []
        self.bound_shapes: list[tuple[int, int, int, int]] = []
        """Every shape a stage was bound to, in order."""
        self.enqueued_shapes: list[tuple[int, int, int, int]] = []
        """The bound shape at every enqueue (captured ones included), in order."""

    def window_limits(self) -> tuple[int, int] | None:
        return self.backend.window_limits()

    def _new_stage(self, slot: int) -> Stage:
        stage = _BackendStage(self, slot)
        self.stages.append(stage)
        return stage

    def before_enqueue(self, shape: tuple[int, int, int, int]) -> None:
        """Called at every enqueue with the batch shape; does nothing (test hook)."""


class _DeferredStage(Stage):
    factory: DeferredStageFactory

    def __init__(self, factory: DeferredStageFactory, slot: int, inner: Stage) -> None:
        super().__init__(factory, slot)
        self._inner = inner

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        self._inner.bind(input_ptr, output_ptr, input_shape)

    def _enqueue(self, stream: int) -> None:
        self.factory.device.launch(stream, lambda: self._inner.enqueue(stream), "deferred")

    def _close(self) -> None:
        self._inner.close()


class DeferredStageFactory(StageFactory):
    """Wraps a host-memory backend so its stages run on the emulated stream, not at enqueue.

    For example ONNX Runtime's IOBinding stage on the CPU provider, which reads the bound
    pointers during ``enqueue``: deferred, it reads them only once the emulated copy to the
    "device" has run. Closing it closes the inner backend.
    """

    name = "deferred"

    def __init__(self, inner: StageFactory, device: EmulatedDevice) -> None:
        self.inner = inner
        self.device = device
        self._info = inner.info
        self.supports_cuda_graphs = inner.supports_cuda_graphs

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    def window_limits(self) -> tuple[int, int] | None:
        return self.inner.window_limits()

    def check_shape(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        return self.inner.check_shape(shape)

    def _new_stage(self, slot: int) -> Stage:
        return _DeferredStage(self, slot, self.inner.create_stage(slot))

    def _close(self) -> None:
        self.inner.close()

"""The one tile loop: tiles flow through N in-flight slots so copies, compute and CPU overlap.

Every backend runs here. Each slot owns a stream, an event, a
:class:`~runtime.backends.contract.Stage` (the model), pinned input/output host buffers and device input/output buffers,
all sized once for ``batch`` windows of the largest window shape. For every batch of tiles
the executor takes the next slot in turn and

1. waits for the slot's event (its previous batch is done, its buffers are free),
2. stitches that previous batch's cores from the pinned output buffer into its image,
3. gathers the new batch's windows into the pinned input buffer (model layout and dtype),
4. queues H2D copy → ``stage.enqueue`` → D2H copy on the slot's stream, records the event,

so while slot k computes, slot k+1 copies and the CPU gathers and stitches for slot k+2.
Batches never wait for an image boundary: a stream of images (``run`` takes an iterable
of :class:`ImageJob`) keeps the GPU busy across images, and one huge image is pipelined
tile batch by tile batch. Results come out in input order, each as soon as its last batch
is stitched. Nothing is allocated per batch beyond small numpy views and tile-sized
temporaries of the stitching.

The executor is generic over a *device* (the interface below): :class:`~runtime.cuda.
resources.CudaDevice` on a GPU; :class:`~runtime.host.HostDevice` for CPU backends (one slot,
synchronous, host buffers bound directly, so nothing is copied); and in the tests
:class:`~runtime.testing.EmulatedDevice`, whose lazy or random scheduling makes a missing
wait give wrong pixels.

Failures: an exception anywhere (gathering, a stage refusing to enqueue, a CUDA error
reported at an event, stitching) first drains every slot's stream, then propagates; the
image it belonged to is never yielded, so no caller sees a half-written result, and the
executor stays usable. Closing a half-consumed ``run`` iterator drains the same way.

One shape per slot: on a pipelined device (``pad_batches``, default: not
``device.synchronous``) an image's last, partial batch is padded to ``batch`` windows with
zeros and the extra windows' results are dropped, so every enqueue of an image has the same
shape: cudnn.benchmark does not re-tune, ONNX Runtime does not re-search, a TensorRT engine
stays on its opt shape and a CUDA graph replays. On the host device that padding would be
real extra compute for nothing a CPU backend gains (the CPU default batch is 1, so there is
no partial batch anyway), so it is off there.

Optionally (``cuda_graphs=True``, for stages that declare ``supports_cuda_graphs``, such as
a TensorRT engine) the copy-enqueue-copy sequence of a slot is captured into a CUDA graph
and replayed from then on, saving launch overhead for fixed shapes. After every change of
a slot's shape one plain, uncaptured run comes first (TensorRT's developer guide, "CUDA
Graphs": the first enqueue after a shape change may allocate or set up, which a capture
must not contain); the next batch of that shape is captured, later ones replay. A capture
that fails anywhere (the stage refusing to enqueue while capturing, or ``end_capture``
reporting an invalidated capture) is dropped with a warning, that batch runs as a plain
enqueue and the slot does without graphs from then on.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .backends.contract import Stage, StageFactory
from .closing import Closing
from .device_arrays import DeviceImage
from .device_tiles import DeviceTarget, gather_on_device, scatter_on_device
from .errors import InvalidArgumentError, UpscaleError
from .layout import ModelIO
from .stitching import gather_windows, scatter_cores
from .tiling import Tile, TilePlan
from .utils import check_int

__all__ = [
    "DEFAULT_SLOTS",
    "Device",
    "Pass",
    "ImageJob",
    "PipelineExecutor",
]

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 3
"""Slots in flight: with 3, one batch computes while one copies and the CPU works on the
third; 2 already overlaps compute with the CPU. Each slot costs its buffers and a stage
(a TensorRT execution context, an ONNX Runtime session)."""

MAX_GRAPHS_PER_SLOT = 8


class Device(Protocol):
    """What the executor needs from a device (CUDA, the host, or the emulated test device).

    Optional attributes: ``unified`` (host buffers are device buffers: no copies) and
    ``synchronous`` (work is complete when queued: host stages may run on it).
    """

    kind: str

    def activate(self) -> None: ...
    def create_stream(self) -> Any: ...
    def create_event(self) -> Any: ...
    def alloc_host(self, nbytes: int) -> Any: ...
    def alloc_device(self, nbytes: int) -> Any: ...
    def copy_h2d(self, dst: Any, src: Any, nbytes: int, stream: Any) -> None: ...
    def copy_d2h(self, dst: Any, src: Any, nbytes: int, stream: Any) -> None: ...
    def begin_capture(self, stream: Any) -> None: ...
    def end_capture(self, stream: Any) -> Any: ...

    # Devices that take frames already in their memory (runtime.device_arrays) also have
    # copy_2d(dst, dst_pitch, src, src_pitch, width_bytes, height, stream) (device to device)
    # and synchronize_handle(stream_handle) (wait for a producer's stream).


@dataclass(frozen=True)
class Pass:
    """One trip of an image through the model: ``source`` (H×W×1 or ×3) into ``target``.

    Either side may be on the GPU (a :class:`~runtime.device_arrays.DeviceImage` source, a
    :class:`~runtime.device_tiles.DeviceTarget` target): its windows or cores then move by
    device-to-device copies on the slot's stream instead of through the host buffers.
    """

    source: np.ndarray | DeviceImage
    target: np.ndarray | DeviceTarget
    to_gray: bool = False


@dataclass
class ImageJob:
    """One image: its tile plan, its passes (colour, maybe alpha) and what to hand back.

    ``result`` is returned once every batch of every pass is stitched (typically the output
    array, or a 2-D view of it); ``input_scale``/``output_scale`` map the image's value
    range onto the model's 0..255 and back (see ``runtime.stitching``).
    """

    plan: TilePlan
    passes: Sequence[Pass]
    result: Any  # the output array (or a 2-D view of it), or a DeviceFrame
    input_scale: float = 1.0
    output_scale: float = 1.0

    def batches(self, batch: int) -> Iterator[tuple[Pass, tuple[Tile, ...]]]:
        for p in self.passes:
            for start in range(0, len(self.plan), batch):
                yield p, self.plan.tiles[start : start + batch]

    def batch_count(self, batch: int) -> int:
        return len(self.passes) * math.ceil(len(self.plan) / batch)


@dataclass
class _Slot:
    index: int
    stream: Any
    event: Any
    stage: Stage
    host_in: Any
    host_out: Any
    dev_in: Any
    dev_out: Any
    bound: tuple[int, ...] | None = None
    graphs: OrderedDict = field(default_factory=OrderedDict)
    warm: tuple[int, ...] | None = None
    """The shape of this slot's last plain run since its last bind: the one a capture may follow."""
    graphs_ok: bool = True


@dataclass
class _InFlight:
    slot: _Slot
    job: ImageJob
    pass_: Pass
    tiles: tuple[Tile, ...]
    out_shape: tuple[int, int, int, int]
    last: bool


class PipelineExecutor(Closing):
    """Runs :class:`ImageJob` s through ``slots`` in-flight slots of ``factory``'s stages.

    ``window`` is the largest window (height, width) any batch will have (tile + 2·halo),
    or None with ``window_pixels``, the most pixels (height × width) of any window whatever
    its shape (``tile="auto"``); with ``batch``, the most windows per batch (at most
    ``factory.max_batch``), that sizes the buffers, allocated here once. ``pad_batches``
    pads partial batches to ``batch`` windows (see the module docstring; default: on
    pipelined devices). Not thread-safe; one ``run`` at a time.
    The caller keeps ownership of ``factory`` and ``device``. This is the only tile loop:
    CPU backends run through it on :class:`~runtime.host.HostDevice`.
    """

    def __init__(
        self,
        factory: StageFactory,
        device: Device,
        *,
        window: tuple[int, int] | None,
        batch: int,
        slots: int = DEFAULT_SLOTS,
        cuda_graphs: bool = False,
        window_pixels: int | None = None,
        pad_batches: bool | None = None,
    ) -> None:
        self.factory = factory
        self.device = device
        self.slots = check_int("slots", slots, 1)
        self.batch = check_int("batch", batch, 1)
        if self.batch > factory.max_batch:
            raise InvalidArgumentError(
                f"batch must be at most the stage's max_batch {factory.max_batch}, got {self.batch}"
            )
        self.window: tuple[int, int] | None = None
        if window is not None:
            if not (isinstance(window, tuple) and len(window) == 2):
                raise InvalidArgumentError(f"window must be a (height, width) tuple, got {window!r}")
            self.window = (check_int("window height", window[0], 1), check_int("window width", window[1], 1))
        if window_pixels is not None:
            self.window_pixels = check_int("window_pixels", window_pixels, 1)
        elif self.window is not None:
            self.window_pixels = self.window[0] * self.window[1]
        else:
            raise InvalidArgumentError("give window=(height, width) or window_pixels=, the largest window to size for")
        self.pad_batches = (not getattr(device, "synchronous", False)) if pad_batches is None else bool(pad_batches)
        if getattr(factory, "memory", "device") == "host" and not getattr(device, "synchronous", False):
            raise InvalidArgumentError(
                f"the {factory.name} backend computes synchronously on host memory, so it runs on the "
                f"host device, not on {getattr(device, 'name', device.kind)}; use runtime.host.HostDevice "
                "(or wrap it in runtime.testing.DeferredStageFactory on an EmulatedDevice)"
            )
        info = factory.info
        self.io: ModelIO = info.io
        self.scale: int = info.scale
        self.dtype = self.io.dtype
        self._unified = bool(getattr(device, "unified", False))
        self.cuda_graphs = bool(cuda_graphs) and self._graphs_supported()
        self._closed = False
        self._busy = False
        self._turn = 0
        self._inflight: deque[_InFlight] = deque()

        in_bytes = self.batch * 3 * self.window_pixels * self.dtype.itemsize
        out_bytes = in_bytes * self.scale * self.scale
        self._slots: list[_Slot] = []
        try:
            for index in range(self.slots):
                self._slots.append(self._make_slot(index, in_bytes, out_bytes))
        except BaseException:
            self._release()
            raise
        log.info(
            "pipeline: %d slot(s) on %s, batch %d of %s windows%s, %s I/O, %.1f MB of buffers per slot%s",
            self.slots,
            getattr(device, "name", device.kind),
            self.batch,
            self._window_text(),
            " (partial batches padded)" if self.pad_batches and self.batch > 1 else "",
            self.io.value,
            (in_bytes + out_bytes) / 1e6,
            ", CUDA graphs" if self.cuda_graphs else "",
        )

    def _window_text(self) -> str:
        if self.window is not None and self.window[0] * self.window[1] == self.window_pixels:
            return f"{self.window[0]}x{self.window[1]}"
        return f"{self.window_pixels}-pixel"

    def _graphs_supported(self) -> bool:
        if getattr(self.device, "synchronous", False):
            log.warning("cuda_graphs=True ignored: the %s device has no CUDA graphs", self.device.kind)
            return False
        if getattr(self.factory, "supports_cuda_graphs", False):
            return True
        log.warning("cuda_graphs=True ignored: %s does not support graph capture", type(self.factory).__name__)
        return False

    def _make_slot(self, index: int, in_bytes: int, out_bytes: int) -> _Slot:
        device = self.device
        made: list[Any] = []
        creators = [
            device.create_stream,
            device.create_event,
            lambda: self.factory.create_stage(index),
            lambda: device.alloc_host(in_bytes),
            lambda: device.alloc_host(out_bytes),
        ]
        if not self._unified:
            creators += [lambda: device.alloc_device(in_bytes), lambda: device.alloc_device(out_bytes)]
        try:
            for create in creators:
                made.append(create())
        except BaseException:
            for thing in reversed(made):
                _close_quietly(thing)
            raise
        if self._unified:  # the host buffers are what the stage reads and writes
            made += [made[3], made[4]]
        return _Slot(index, *made)

    # -- running ---------------------------------------------------------------------
    def run(self, jobs: Iterable[ImageJob], *, on_batch: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
        """Process ``jobs`` in order, yielding each job's ``result`` once it is complete.

        ``on_batch(n_tiles)`` is called after each batch is stitched (progress bars).
        """
        if self._closed:
            raise UpscaleError("the pipeline executor is closed; create a new one")
        if self._busy:
            raise UpscaleError(
                "the pipeline is busy with an unfinished run (an upscale_many() iterator that "
                "was not exhausted or closed); finish or close it first"
            )
        return self._run(jobs, on_batch)

    def _run(self, jobs: Iterable[ImageJob], on_batch: Callable[[int], None] | None) -> Iterator[np.ndarray]:
        self._busy = True
        try:
            self.device.activate()
            inflight = self._inflight
            for job in jobs:
                count = job.batch_count(self.batch)
                for k, (p, tiles) in enumerate(job.batches(self.batch)):
                    slot = self._slots[self._turn % self.slots]
                    self._turn += 1
                    if len(inflight) == self.slots:  # the oldest in flight is this slot's last batch
                        done = self._complete(inflight.popleft(), on_batch)
                        if done is not None:
                            yield done
                    inflight.append(self._submit(slot, job, p, tiles, last=k == count - 1))
            while inflight:
                done = self._complete(inflight.popleft(), on_batch)
                if done is not None:
                    yield done
        except BaseException:
            self._drain()
            raise
        finally:
            self._busy = False

    def _submit(self, slot: _Slot, job: ImageJob, p: Pass, tiles: tuple[Tile, ...], *, last: bool) -> _InFlight:
        n = len(tiles)
        wh, ww = job.plan.window_shape
        if wh * ww > self.window_pixels:
            raise InvalidArgumentError(
                f"window {wh}x{ww} is larger than the {self._window_text()} the pipeline was sized for "
                f"({wh * ww} > {self.window_pixels} pixels); create it with a larger window (tile + 2*halo)"
            )
        # One shape per slot: the last, partial batch is padded with zero windows whose results are dropped.
        rows = self.batch if self.pad_batches else n
        in_shape = self.io.batch_shape(rows, wh, ww)
        out_shape = self.io.batch_shape(rows, wh * self.scale, ww * self.scale)
        device_in = isinstance(p.source, DeviceImage)
        device_out = isinstance(p.target, DeviceTarget)
        if device_in:  # padded windows of a device batch stay as they are: their results are dropped
            copy_2d = self._device_copies("read device frames")
            assert isinstance(p.source, DeviceImage)
            gather_on_device(copy_2d, p.source, tiles, slot.dev_in.ptr, (wh, ww), slot.stream)
        else:
            assert isinstance(p.source, np.ndarray)
            batch_in = slot.host_in.view(self.dtype, in_shape)
            gather_windows(p.source, tiles, batch_in, io=self.io, input_scale=job.input_scale)
            if rows > n:
                batch_in[n:] = 0
        if slot.bound != in_shape:
            slot.stage.bind(slot.dev_in.ptr, slot.dev_out.ptr, in_shape)
            slot.bound = in_shape
            slot.warm = None  # a new shape: its first run is plain, whatever was captured before
        in_bytes = math.prod(in_shape) * self.dtype.itemsize
        out_bytes = math.prod(out_shape) * self.dtype.itemsize
        # Device frames change pointers every batch: their copies are never captured.
        graphs = self.cuda_graphs and not (device_in or device_out)
        graph = self._graph_for(slot, in_shape, in_bytes, out_bytes) if graphs else None
        if graph is not None:
            graph.launch(slot.stream)
        else:
            self._enqueue(slot, 0 if device_in else in_bytes, 0 if device_out else out_bytes)
        if device_out:
            copy_2d = self._device_copies("write device frames")
            assert isinstance(p.target, DeviceTarget)
            scatter_on_device(copy_2d, slot.dev_out.ptr, tiles, p.target, self.scale, (wh, ww), slot.stream)
        slot.event.record(slot.stream)
        return _InFlight(slot, job, p, tiles, out_shape, last)

    def _enqueue(self, slot: _Slot, in_bytes: int, out_bytes: int) -> None:
        """H2D copy, stage, D2H copy; a copy of 0 bytes (that side is on the device) is left out."""
        if self._unified:
            slot.stage.enqueue(slot.stream.handle)
            return
        if in_bytes:
            self.device.copy_h2d(slot.dev_in, slot.host_in, in_bytes, slot.stream)
        slot.stage.enqueue(slot.stream.handle)
        if out_bytes:
            self.device.copy_d2h(slot.host_out, slot.dev_out, out_bytes, slot.stream)

    def _device_copies(self, what: str) -> Callable[..., None]:
        """The device's ``copy_2d`` (device-to-device 2-D copy), which only GPU devices have."""
        copy_2d = getattr(self.device, "copy_2d", None)
        if self._unified or copy_2d is None:
            raise InvalidArgumentError(
                f"cannot {what} on the {getattr(self.device, 'name', self.device.kind)} device: frames on a "
                "GPU need a GPU backend (tensorrt, torch-cuda, onnxruntime-cuda); pass a host array instead"
            )
        return copy_2d

    def _graph_for(self, slot: _Slot, key: tuple[int, ...], in_bytes: int, out_bytes: int) -> Any:
        """The slot's graph for this shape: replayed once captured; otherwise None (the caller
        enqueues plainly) for the first run after a shape change, captured on the next one."""
        if not slot.graphs_ok:
            return None
        graph = slot.graphs.get(key)
        if graph is not None:
            slot.graphs.move_to_end(key)
            return graph
        if slot.warm != key:  # warm-up: one uncaptured run of this shape first
            slot.warm = key
            return None
        capturing = False
        try:
            self.device.begin_capture(slot.stream)
            capturing = True
            self._enqueue(slot, in_bytes, out_bytes)
            capturing = False  # end_capture leaves capture mode even when it reports a failure
            graph = self.device.end_capture(slot.stream)
        except Exception as exc:  # noqa: BLE001 - fall back to plain enqueues for this slot
            if capturing:
                _close_quietly(_try(lambda: self.device.end_capture(slot.stream)))
            slot.graphs_ok = False
            log.warning("slot %d: CUDA graph capture failed (%s); running without graphs", slot.index, exc)
            return None
        slot.graphs[key] = graph
        if len(slot.graphs) > MAX_GRAPHS_PER_SLOT:
            _close_quietly(slot.graphs.popitem(last=False)[1])
        return graph

    def _complete(self, item: _InFlight, on_batch: Callable[[int], None] | None) -> np.ndarray | None:
        item.slot.event.synchronize()
        p = item.pass_
        if isinstance(p.target, DeviceTarget):  # its cores were copied on the device in _submit
            if on_batch is not None:
                on_batch(len(item.tiles))
            return item.job.result if item.last else None
        results = item.slot.host_out.view(self.dtype, item.out_shape)
        scatter_cores(
            results,
            item.tiles,
            p.target,
            scale=self.scale,
            io=self.io,
            output_scale=item.job.output_scale,
            to_gray=p.to_gray,
        )
        if on_batch is not None:
            on_batch(len(item.tiles))
        return item.job.result if item.last else None

    def _drain(self) -> None:
        """Wait for all queued work (errors from it are logged: one error is raised already)."""
        self._inflight.clear()
        for slot in self._slots:
            try:
                slot.stream.synchronize()
            except Exception as exc:  # noqa: BLE001
                log.debug("slot %d: error while draining after a failure: %s", slot.index, exc)

    # -- resources -------------------------------------------------------------------
    def close(self) -> None:
        """Wait for queued work, then release stages, buffers, events and streams; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drain()
        self._release()

    def _release(self) -> None:
        for slot in self._slots:
            for graph in slot.graphs.values():
                _close_quietly(graph)
            buffers = (
                (slot.host_out, slot.host_in)
                if self._unified
                else (slot.dev_out, slot.dev_in, slot.host_out, slot.host_in)
            )
            for thing in (slot.stage, *buffers, slot.event, slot.stream):
                _close_quietly(thing)
        self._slots = []

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return (
            f"PipelineExecutor(slots={self.slots}, batch={self.batch}, window={self._window_text()}, "
            f"io={self.io.value!r}, device={getattr(self.device, 'kind', '?')!r})"
        )


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None


def _close_quietly(thing: Any) -> None:
    if thing is None:
        return
    try:
        thing.close()
    except Exception as exc:  # noqa: BLE001 - closing must release everything it can
        log.debug("error while closing %r: %s", thing, exc)

"""Frames that live on the GPU go in and come out without a trip through host memory.

On the emulated device (runtime.testing.EmulatedDevice: numpy "device" memory, lazy or
random stream scheduling, host copies poisoned when queued), a frame in emulated device
memory is handed to ``Upscaler.upscale`` through ``__cuda_array_interface__`` or a CUDA
DLPack capsule built here with ctypes, exactly as CuPy or torch would hand one over. Every
result must equal the host path's pixel for pixel, and no host copy may run.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest
from _numpy_backend import BlurUp

from runtime import Upscaler
from runtime.device_arrays import DeviceFrame, device_image
from runtime.device_tiles import runs
from runtime.errors import InvalidArgumentError
from runtime.model_info import ModelIO
from runtime.testing import BackendStageFactory, EmulatedDevice
from runtime.testing.emulated import EmulatedDeviceBuffer


class CaiFrame:
    """A frame in emulated device memory behind ``__cuda_array_interface__`` (like a CuPy array)."""

    def __init__(
        self,
        device: EmulatedDevice,
        image: np.ndarray,
        *,
        pitch: int | None = None,
        stream: Any = None,
        written: bool = True,
    ) -> None:
        h, w = image.shape[:2]
        row = image[0].nbytes
        self.pitch = pitch or row
        self.buffer: EmulatedDeviceBuffer = device.alloc_device(self.pitch * h)
        self.shape = image.shape
        self.typestr = image.dtype.str
        self.stream = stream
        self.strides = None if pitch is None else (pitch, *image.strides[1:])
        if written:  # else the test queues the write on a producer stream itself
            self.write(device, image)

    def write(self, device: EmulatedDevice, image: np.ndarray) -> None:
        memory = device.array_at(self.buffer.ptr, np.uint8, (self.buffer.nbytes,))
        for r in range(image.shape[0]):
            memory[r * self.pitch : r * self.pitch + image[r].nbytes] = image[r].reshape(-1).view(np.uint8)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        cai: dict[str, Any] = {
            "shape": self.shape,
            "typestr": self.typestr,
            "data": (self.buffer.ptr, False),
            "strides": self.strides,
            "version": 3,
        }
        if self.stream is not None:
            cai["stream"] = self.stream
        return cai


def pipelined(
    io: ModelIO = ModelIO.UINT8_NHWC, schedule: str = "lazy", **kwargs: Any
) -> tuple[Upscaler, EmulatedDevice]:
    device = EmulatedDevice(schedule, seed=7)
    return Upscaler(backend=BackendStageFactory(BlurUp(io), device), device=device, **kwargs), device


def read_frame(device: EmulatedDevice, frame: DeviceFrame) -> np.ndarray:
    return device.array_at(frame.ptr, frame.dtype, frame.shape).copy()


class CopyCounter:
    """Counts the host<->device copies a device really queues."""

    def __init__(self, device: EmulatedDevice) -> None:
        self.h2d = self.d2h = 0
        h2d, d2h = device.copy_h2d, device.copy_d2h

        def count_h2d(*args: Any) -> None:
            self.h2d += 1
            h2d(*args)

        def count_d2h(*args: Any) -> None:
            self.d2h += 1
            d2h(*args)

        device.copy_h2d = count_h2d  # type: ignore[method-assign]
        device.copy_d2h = count_d2h  # type: ignore[method-assign]


@pytest.mark.parametrize("schedule", ["lazy", "random"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (37, 53), (17, 64)])
def test_device_frame_in_device_frame_out_equals_host_path(schedule: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC), tile=8, halo=1) as host:
        expected = host.upscale(image)
    for batch, slots in [(1, 1), (3, 2), (4, 3)]:
        up, device = pipelined(schedule=schedule, tile=8, halo=1, batch=batch, slots=slots)
        with up:
            counter = CopyCounter(device)
            frame = up.upscale(CaiFrame(device, image))
            assert isinstance(frame, DeviceFrame)
            assert frame.shape == expected.shape and frame.__cuda_array_interface__["stream"] is None
            np.testing.assert_array_equal(read_frame(device, frame), expected, err_msg=f"batch {batch} slots {slots}")
            assert (counter.h2d, counter.d2h) == (0, 0), "a device frame went through host memory"


def test_pitched_rows_small_images_and_wide_borders_on_the_device() -> None:
    """A decoder's pitched surface; an image below the backend's minimum; a mirrored border
    wider than the image (the mirror repeats): the device copies read what the host reads."""
    rng = np.random.default_rng(1)
    for shape, min_size, halo in [((20, 30, 3), 1, 1), ((3, 2, 3), 8, 1), ((4, 5, 3), 1, 6), ((9, 7, 3), 4, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC, min_size=min_size), tile=8, halo=halo) as host:
            expected = host.upscale(image)
        device = EmulatedDevice("lazy")
        factory = BackendStageFactory(BlurUp(ModelIO.UINT8_NHWC, min_size=min_size), device)
        with Upscaler(backend=factory, device=device, tile=8, halo=halo, batch=2) as up:
            frame = up.upscale(CaiFrame(device, image, pitch=shape[1] * 3 + 64))
            np.testing.assert_array_equal(read_frame(device, frame), expected, err_msg=str(shape))


def test_host_output_from_a_device_frame_and_device_output_from_a_host_array() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC), tile=8, halo=1) as host:
        expected = host.upscale(image)
    up, device = pipelined(tile=8, halo=1, batch=2)
    with up:
        counter = CopyCounter(device)
        got = up.upscale(CaiFrame(device, image), output="host")
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, expected)
        assert counter.h2d == 0 and counter.d2h > 0
        frame = up.upscale(image, output="device")
        np.testing.assert_array_equal(read_frame(device, frame), expected)
        frame.close()


def test_producer_stream_is_waited_for() -> None:
    """The frame is written by work still queued on the producer's stream (lazy device: it has
    not run). With the stream named in the interface the result is right; without it, the
    upscaler reads the uninitialised buffer: the negative control."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC), tile=8, halo=1) as host:
        expected = host.upscale(image)
    for name_stream in (True, False):
        up, device = pipelined(tile=8, halo=1)
        with up:
            producer = device.create_stream()
            staging = device.alloc_host(image.nbytes)
            staging.view(np.uint8, image.shape)[...] = image
            frame = CaiFrame(device, image, stream=producer.handle if name_stream else None, written=False)
            device.copy_h2d(frame.buffer, staging, image.nbytes, producer)  # queued, not yet run
            got = read_frame(device, up.upscale(frame))
            if name_stream:
                np.testing.assert_array_equal(got, expected)
            else:
                assert not np.array_equal(got, expected), "the negative control should read garbage"


# -- DLPack --------------------------------------------------------------------------------
# The producer side, written out here from dlpack.h on purpose rather than imported from
# runtime.device_arrays: a capsule built with the parser's own structures could not catch a
# wrong field in them.


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class DLPackFrame:
    """A producer of CUDA DLPack capsules over emulated device memory (like a torch tensor)."""

    def __init__(self, device: EmulatedDevice, image: np.ndarray, *, kind: int = 2) -> None:
        self.inner = CaiFrame(device, image)
        self.kind = kind
        self.streams: list[Any] = []
        self.deleted = 0
        self._shape = (ctypes.c_int64 * image.ndim)(*image.shape)
        self._deleter = _DELETER(self._delete)

    def _delete(self, _managed: Any) -> None:
        self.deleted += 1

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.kind, 0

    def __dlpack__(self, stream: Any = None) -> Any:
        self.streams.append(stream)
        managed = _DLManagedTensor()
        t = managed.dl_tensor
        t.data, t.ndim, t.byte_offset = self.inner.buffer.ptr, len(self._shape), 0
        t.device.device_type, t.device.device_id = self.kind, 0
        t.dtype.code, t.dtype.bits, t.dtype.lanes = 1, 8, 1
        t.shape = ctypes.cast(self._shape, ctypes.POINTER(ctypes.c_int64))
        managed.deleter = self._deleter
        self._managed = managed  # alive as long as the producer
        return _new_capsule(ctypes.addressof(managed), b"dltensor", None)


def test_cuda_dlpack_frame_is_read_in_place_with_the_upscalers_stream() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (21, 18, 3), dtype=np.uint8)
    with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC), tile=8, halo=1) as host:
        expected = host.upscale(image)
    up, device = pipelined(tile=8, halo=1, batch=2)
    with up:
        source = DLPackFrame(device, image)
        frame = up.upscale(source)
        np.testing.assert_array_equal(read_frame(device, frame), expected)
        assert source.streams == [up._ingest.handle], "the consumer stream is passed to __dlpack__"
    assert source.deleted == 1, "the capsule's deleter runs exactly once"


def test_host_dlpack_producers_work_like_arrays_on_the_cpu() -> None:
    class HostTensor:  # not a numpy array: only the DLPack protocol
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
            return self.array.__dlpack__(**kwargs)

        def __dlpack_device__(self) -> tuple[int, int]:
            return self.array.__dlpack_device__()

    image = np.random.default_rng(5).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC), tile=8, halo=1) as up:
        np.testing.assert_array_equal(up.upscale(HostTensor(image)), up.upscale(image))


# -- refusals --------------------------------------------------------------------------------


def test_device_frames_refused_with_reasons() -> None:
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    up, device = pipelined(io=ModelIO.FLOAT32_NCHW, tile=8, halo=1)
    with up, pytest.raises(InvalidArgumentError, match="uint8-nhwc I/O.*float32-nchw"):
        up.upscale(CaiFrame(device, rgb))
    up, device = pipelined(tile=8, halo=1)
    with up:
        for bad, match in [
            (rng.integers(0, 256, (10, 10), dtype=np.uint8), "H×W×3 uint8"),
            (rng.integers(0, 256, (10, 10, 4), dtype=np.uint8), "H×W×3 uint8"),
            (rng.random((10, 10, 3), dtype=np.float32), "H×W×3 uint8"),
        ]:
            with pytest.raises(InvalidArgumentError, match=match):
                up.upscale(CaiFrame(device, bad))
        strided = CaiFrame(device, rgb)
        strided.strides = (30, 6, 1)  # every other pixel: not packed
        with pytest.raises(InvalidArgumentError, match="packed within rows"):
            up.upscale(strided)
        with pytest.raises(InvalidArgumentError, match="output must be"):
            up.upscale(rgb, output="gpu")
    with Upscaler(backend=BlurUp(ModelIO.UINT8_NHWC), tile=8, halo=1) as cpu:
        with pytest.raises(InvalidArgumentError, match="needs a GPU backend.*numpy-blur"):
            cpu.upscale(CaiFrame(EmulatedDevice(), rgb))
        with pytest.raises(InvalidArgumentError, match="needs a GPU backend"):
            cpu.upscale(rgb, output="device")
    with pytest.raises(InvalidArgumentError, match="not CUDA"):
        device_image(DLPackFrame(EmulatedDevice(), rgb, kind=4))  # an OpenCL tensor


def test_runs_cut_index_maps_into_copies() -> None:
    assert runs(np.array([3, 4, 5, 6])) == [(0, 3, 4)]
    assert runs(np.array([2, 1, 0, 1, 2, 3])) == [(0, 2, 1), (1, 1, 1), (2, 0, 4)]  # a reflected border
    assert runs(np.array([5, 6, 6, 6])) == [(0, 5, 2), (2, 6, 1), (3, 6, 1)]  # replicated edge
    assert runs(np.array([], dtype=np.int64)) == []


@pytest.mark.parametrize(
    ("shape", "tile", "halo", "min_size"),
    [((4, 5), 8, 6, 1), ((9, 7), 4, 3, 4), ((20, 30), 8, 2, 1), ((1, 1), 4, 5, 8), ((13, 6), 3, 4, 1)],
)
def test_device_gather_reads_exactly_the_windows_the_host_gathers(
    shape: tuple[int, int], tile: int, halo: int, min_size: int
) -> None:
    """Byte for byte, mirrored borders wider than the image included: the end-to-end tests'
    3x3 blur only sees one pixel beyond a core, where every mirror mode agrees."""
    from runtime.device_tiles import gather_on_device
    from runtime.stitching import gather_windows
    from runtime.tiling import plan_tiles

    image = np.random.default_rng(3).integers(0, 256, (*shape, 3), dtype=np.uint8)
    plan = plan_tiles(*shape, tile, halo, min_size=min_size)
    tiles = list(plan)
    host = np.zeros((len(tiles), *plan.window_shape, 3), np.uint8)
    gather_windows(image, tiles, host, io=ModelIO.UINT8_NHWC)
    device = EmulatedDevice("random", seed=3)
    frame, _ = device_image(CaiFrame(device, image, pitch=shape[1] * 3 + 16))
    out = device.alloc_device(host.nbytes)
    stream = device.create_stream()
    gather_on_device(device.copy_2d, frame, tiles, out.ptr, plan.window_shape, stream)
    stream.synchronize()
    np.testing.assert_array_equal(device.array_at(out.ptr, np.uint8, host.shape), host)

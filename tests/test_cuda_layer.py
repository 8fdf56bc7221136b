"""runtime.cuda's resources and the executor on CudaDevice, driven by a fake CUDA runtime.

The fake implements the cudart functions the project uses with the real module's
signatures (checked below) and enums, on host memory: "device" memory is ctypes memory,
cudaMemcpyAsync is memmove. So the real CudaDevice, PinnedBuffer numpy views, pointer and
byte-count arithmetic, memcpy kinds, handles, graph calls and the error checker all run
here, and an injected CUDA error must come out of Upscaler as a CudaError with its name.
"""

from __future__ import annotations

import ctypes
import dataclasses
import inspect
import types
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

rt = pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings is not installed (pip install cuda-bindings)")

from _numpy_backend import BlurUp  # noqa: E402

from runtime import Upscaler  # noqa: E402
from runtime.backends import GpuOptions, Stage, StageFactory, host_array  # noqa: E402
from runtime.cuda import api  # noqa: E402
from runtime.cuda.api import CudaError  # noqa: E402
from runtime.cuda.resources import CudaDevice, DeviceBuffer, Event, PinnedBuffer, Stream  # noqa: E402
from runtime.errors import InvalidArgumentError, UpscaleError  # noqa: E402
from runtime.model_info import ModelIO  # noqa: E402

OK = rt.cudaError_t.cudaSuccess


class FakeCudart:
    """Host-memory CUDA runtime; ``fail`` maps a function name to the error it returns."""

    def __init__(self) -> None:
        self.memory: dict[int, ctypes.Array] = {}
        self.live: dict[str, set[int]] = {"stream": set(), "event": set(), "graph": set(), "exec": set()}
        self.calls: list[str] = []
        self.fail: dict[str, object] = {}
        self.device_count = 1
        self.current_devices: list[int] = []  # every cudaSetDevice argument
        self._next = 16
        self.module = self._build()

    def _handle(self, kind: str) -> int:
        self._next += 1
        self.live[kind].add(self._next)
        return self._next

    def _build(self) -> types.ModuleType:
        fake = self
        m = types.ModuleType("fake_cudart")
        for name in (
            "cudaError_t",
            "cudaMemcpyKind",
            "cudaStreamCaptureMode",
            "cudaStreamNonBlocking",
            "cudaEventDisableTiming",
            "cudaEventDefault",
            "cudaHostAllocDefault",
            "cudaGetErrorName",
            "cudaGetErrorString",
        ):
            setattr(m, name, getattr(rt, name))

        def ret(name: str, *values: object) -> tuple:
            fake.calls.append(name)
            if name in fake.fail:
                return (fake.fail[name],) + tuple(None for _ in values)
            return (OK, *values)

        def alloc(size: int) -> int:
            buf = (ctypes.c_uint8 * size)()
            ptr = ctypes.addressof(buf)
            fake.memory[ptr] = buf
            return ptr

        def free(ptr: int) -> None:
            del fake.memory[ptr]

        def cudaGetDeviceCount():
            return ret("cudaGetDeviceCount", fake.device_count)

        def cudaSetDevice(device):
            fake.current_devices.append(device)
            return ret("cudaSetDevice")

        def cudaGetDeviceProperties(device):
            return ret("cudaGetDeviceProperties", SimpleNamespace(name=b"Fake GPU\x00\x00", major=9, minor=0))

        def cudaDriverGetVersion():
            return ret("cudaDriverGetVersion", 13000)

        def cudaRuntimeGetVersion():
            return ret("cudaRuntimeGetVersion", 13050)

        def cudaMemGetInfo():
            return ret("cudaMemGetInfo", 1 << 30, 2 << 30)

        def cudaStreamCreateWithFlags(flags):
            assert int(flags) == int(rt.cudaStreamNonBlocking)
            return ret("cudaStreamCreateWithFlags", rt.cudaStream_t(fake._handle("stream")))

        def cudaStreamDestroy(stream):
            fake.live["stream"].remove(int(stream))
            return ret("cudaStreamDestroy")

        def cudaStreamSynchronize(stream):
            return ret("cudaStreamSynchronize")

        def cudaEventCreateWithFlags(flags):
            return ret("cudaEventCreateWithFlags", rt.cudaEvent_t(fake._handle("event")))

        def cudaEventRecord(event, stream):
            assert int(event) in fake.live["event"] and int(stream) in fake.live["stream"]
            return ret("cudaEventRecord")

        def cudaEventSynchronize(event):
            return ret("cudaEventSynchronize")

        def cudaEventQuery(event):
            return ret("cudaEventQuery")

        def cudaEventElapsedTime(start, end):
            return ret("cudaEventElapsedTime", 1.5)

        def cudaEventDestroy(event):
            fake.live["event"].remove(int(event))
            return ret("cudaEventDestroy")

        def cudaHostAlloc(size, flags):
            return ret("cudaHostAlloc", alloc(size))

        def cudaFreeHost(ptr):
            free(ptr)
            return ret("cudaFreeHost")

        def cudaMalloc(size):
            if "cudaMalloc" in fake.fail:
                return ret("cudaMalloc", None)
            return ret("cudaMalloc", alloc(size))

        def cudaFree(devPtr):
            free(devPtr)
            return ret("cudaFree")

        def cudaMemcpyAsync(dst, src, count, kind, stream):
            assert isinstance(kind, rt.cudaMemcpyKind) and int(stream) in fake.live["stream"]
            for ptr in (dst, src):  # both ends inside one allocation
                assert any(p <= ptr and ptr + count <= p + len(b) for p, b in fake.memory.items()), hex(ptr)
            ctypes.memmove(dst, src, count)
            return ret("cudaMemcpyAsync")

        def cudaStreamBeginCapture(stream, mode):
            return ret("cudaStreamBeginCapture")

        def cudaStreamEndCapture(stream):
            return ret("cudaStreamEndCapture", rt.cudaGraph_t(fake._handle("graph")))

        def cudaGraphInstantiate(graph, flags):
            return ret("cudaGraphInstantiate", rt.cudaGraphExec_t(fake._handle("exec")))

        def cudaGraphLaunch(graphExec, stream):
            return ret("cudaGraphLaunch")

        def cudaGraphExecDestroy(graphExec):
            fake.live["exec"].remove(int(graphExec))
            return ret("cudaGraphExecDestroy")

        def cudaGraphDestroy(graph):
            fake.live["graph"].remove(int(graph))
            return ret("cudaGraphDestroy")

        def cudaDeviceSynchronize():
            return ret("cudaDeviceSynchronize")

        for name, value in list(locals().items()):
            if name.startswith("cuda") and callable(value):
                setattr(m, name, value)
        return m


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCudart:
    fake = FakeCudart()
    monkeypatch.setattr(api, "_RT", fake.module)
    return fake


def test_fake_matches_the_real_signatures() -> None:
    module = FakeCudart().module
    for name in dir(module):
        fn = getattr(module, name)
        if name.startswith("cuda") and inspect.isfunction(fn):
            real = inspect.signature(getattr(rt, name))
            assert list(inspect.signature(fn).parameters) == list(real.parameters), name


def test_resources_lifecycle(fake: FakeCudart) -> None:
    device = CudaDevice()
    assert device.name == "Fake GPU" and device.compute_capability == (9, 0)
    info = device.describe()
    assert info["cuda_driver_version"] == "13.0" and info["cuda_runtime_version"] == "13.5"
    with device.create_stream() as stream, device.create_event() as event:
        assert isinstance(stream, Stream) and isinstance(event, Event) and stream.handle > 0
        with device.alloc_host(64) as host, device.alloc_device(64) as dev, device.alloc_host(64) as back:
            assert isinstance(host, PinnedBuffer) and isinstance(dev, DeviceBuffer)
            src = host.view(np.float32, (4, 4))
            src[...] = np.arange(16, dtype=np.float32).reshape(4, 4)
            device.copy_h2d(dev, host, 64, stream)
            device.copy_d2h(back, dev, 64, stream)
            event.record(stream)
            event.synchronize()
            assert event.query()
            np.testing.assert_array_equal(back.view(np.float32, (16,)), np.arange(16))
            assert dev.view(np.uint8, (64,)).__cuda_array_interface__["data"] == (dev.ptr, False)
            with pytest.raises(InvalidArgumentError, match="needs 68 bytes but the buffer holds 64"):
                host.view(np.float32, (17,))
        assert host.closed and host.array is None
        with pytest.raises(UpscaleError, match="PinnedBuffer is closed"):
            host.view(np.uint8, (1,))
        host.close()  # idempotent
    assert not fake.memory and not any(fake.live.values())


def test_errors_carry_the_cuda_name(fake: FakeCudart) -> None:
    fake.fail["cudaMalloc"] = rt.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(CudaError, match=r"cudaMalloc failed with cudaErrorMemoryAllocation \[2\]"):
        DeviceBuffer(64)
    fake.fail["cudaEventQuery"] = rt.cudaError_t.cudaErrorNotReady
    with Event() as event:
        assert event.query() is False
        fake.fail["cudaEventQuery"] = rt.cudaError_t.cudaErrorLaunchFailure
        with pytest.raises(CudaError, match="cudaEventQuery failed with cudaErrorLaunchFailure"):
            event.query()


class HostStageFactory(StageFactory):
    """A device stage for the fake runtime: "device" pointers are host memory, so the model
    runs at enqueue time on the bytes behind them."""

    name = "fake-cuda host stage"

    def __init__(self, backend: BlurUp) -> None:
        self.backend = backend
        self._info = backend.info
        self._max_batch = 16
        self.close_calls = 0

    def _new_stage(self, slot: int) -> Stage:
        return _FakeCudaStage(self, slot)

    def _close(self) -> None:
        self.close_calls += 1


class _FakeCudaStage(Stage):
    factory: HostStageFactory

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        dtype = self.factory.io.dtype
        self._x, self._y = host_array(input_ptr, dtype, input_shape), host_array(output_ptr, dtype, output_shape)

    def _enqueue(self, stream: int) -> None:
        self._y[...] = self.factory.backend.infer(self._x)


@pytest.mark.parametrize("io", list(ModelIO))
def test_upscaler_on_cuda_device_matches_sequential(fake: FakeCudart, rng: np.random.Generator, io: ModelIO) -> None:
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(37, 21, 3), (5, 5), (20, 33, 4)]]
    with Upscaler(backend=BlurUp(io), tile=8, halo=1, batch=3) as seq:
        expected = [seq.upscale(im) for im in images]
    factory = HostStageFactory(BlurUp(io))
    with Upscaler(backend=factory, tile=8, halo=1, batch=3, slots=2) as up:
        assert isinstance(up.device, CudaDevice)
        got = list(up.upscale_many(images))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert fake.calls.count("cudaHostAlloc") == 4 and fake.calls.count("cudaMalloc") == 4  # 2 slots, once
    assert not fake.memory and not any(fake.live.values())  # everything freed on close
    assert factory.close_calls == 0 and not factory.closed  # the caller's factory


def test_cuda_error_at_an_event_propagates_and_drains(fake: FakeCudart, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    with Upscaler(backend=HostStageFactory(BlurUp()), tile=8, halo=1, batch=2, slots=3) as up:
        fake.fail["cudaEventSynchronize"] = rt.cudaError_t.cudaErrorIllegalAddress
        with pytest.raises(CudaError, match="cudaEventSynchronize failed with cudaErrorIllegalAddress"):
            up.upscale(image)
        assert fake.calls.count("cudaStreamSynchronize") == 3  # every slot drained
        del fake.fail["cudaEventSynchronize"]
        assert up.upscale(image).shape == (60, 60, 3)


def test_graph_calls_on_cuda_device(fake: FakeCudart, rng: np.random.Generator) -> None:
    factory = HostStageFactory(BlurUp())
    factory.supports_cuda_graphs = True
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # 16 tiles: 4 full batches of 4
    with Upscaler(backend=factory, tile=8, halo=1, batch=4, slots=1, cuda_graphs=True) as up:
        up.upscale(image)
    # batch 1 plain, batch 2 captured, then replayed for batches 2-4 (the fake does not run
    # captured work, so only the calls are checked here; the emulated device checks pixels)
    assert fake.calls.count("cudaStreamBeginCapture") == 1 and fake.calls.count("cudaGraphLaunch") == 3
    assert not any(fake.live.values())


# ------------------------------------------------------------------ the device index


class RecordingFactory(HostStageFactory):
    """What a GPU backend's constructor receives, recorded (made by RecordingOptions.create)."""

    made: list[dict] = []

    def __init__(self, model: object, **kwargs: object) -> None:
        super().__init__(BlurUp())
        RecordingFactory.made.append(kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordingOptions(GpuOptions):
    name: ClassVar[str] = "recording"
    factory: ClassVar[str] = "test_cuda_layer:RecordingFactory"


def test_the_device_index_reaches_the_backend_and_the_device(fake: FakeCudart, rng: np.random.Generator) -> None:
    fake.device_count = 3
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    for kwargs in ({"backend": RecordingOptions(device=2)}, {"backend": RecordingOptions(), "device": 2}):
        RecordingFactory.made.clear()
        fake.current_devices.clear()
        with Upscaler("model.any", tile=8, halo=1, **kwargs) as up:
            up.upscale(image)
            assert up.options.device == 2 and up.device.index == 2
        assert RecordingFactory.made == [{"device": 2, "scale": None}]
        assert fake.current_devices and set(fake.current_devices) == {2}  # set-up and the executor's thread
    with pytest.raises(InvalidArgumentError, match=r"Upscaler\(device=2\) contradicts RecordingOptions\(device=1\)"):
        Upscaler("model.any", backend=RecordingOptions(device=1), device=2)
    # every GPU backend's options pass the index on to its constructor
    from runtime.backends import OnnxRuntimeCuda, TensorRT, TorchCuda

    for options in (TensorRT(device=1), TorchCuda(device=1), OnnxRuntimeCuda(device=1)):
        assert options.factory_kwargs()["device"] == 1

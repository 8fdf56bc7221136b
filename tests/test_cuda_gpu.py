"""The real CUDA pipeline on a GPU: cuda-python streams/events/pinned/device memory with the
PyTorch CUDA stage, against PyTorch float32 on the whole image.

Marked ``gpu``: conftest.py skips every test here (with the reason) unless cuda-bindings
imports, a GPU answers through it and torch is a CUDA build, and fails them instead when
FOURPP_TEST_DEVICE=cuda. benchmarks/gpu_check.sh runs them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runtime import TorchCuda, Upscaler
from runtime.backends.torch_cuda import TorchCudaStageFactory, tf32_scope
from runtime.cuda.resources import CudaDevice, DeviceBuffer, Event, PinnedBuffer, Stream
from runtime.errors import UpscaleError
from runtime.metrics import psnr

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "models" / "eusr-compact.safetensors"


@pytest.fixture(scope="module")
def device() -> CudaDevice:
    return CudaDevice(0)


@pytest.fixture(scope="module")
def eusr():
    from train.checkpoint import load_model

    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} is missing")
    return load_model(CHECKPOINT)


HALO = 16
"""The halo every test here runs with: also the mirrored border context of border tiles."""


@pytest.fixture(scope="module")
def reference(eusr):
    """PyTorch float32 whole image on the GPU with TF32 off, given the same mirrored border
    context (HALO) as the runtime's border tiles and clamped like its float results: the
    ground truth."""
    from runtime.tiling import pad_border

    net = eusr.path(4).to("cuda").float().eval()
    crop = 4 * HALO

    def run(image: np.ndarray) -> np.ndarray:
        padded = pad_border(image, HALO)
        with tf32_scope(torch, False), torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32))[None].cuda()
            out = net(x)[0].float().cpu().numpy().transpose(1, 2, 0)
        return np.clip(out[crop:-crop, crop:-crop], 0.0, 255.0)  # float results are clamped to 0..255

    return run


@pytest.fixture
def tf32_on():
    """TF32 allowed process-wide (PyTorch's own default for cuDNN convolutions): the stage
    must still compute in float32 unless asked."""
    with tf32_scope(torch, True):
        yield


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random image with edges (closer to a photo than white noise)."""
    small = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    big = small.repeat(8, 0).repeat(8, 1)[:h, :w]
    return np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.float32)


def test_device_facts_and_memory_round_trip(device: CudaDevice) -> None:
    info = device.describe()
    assert info["name"] and info["memory_total_bytes"] > 0
    data = np.arange(1 << 16, dtype=np.float32)
    with (
        Stream() as stream,
        Event() as event,
        PinnedBuffer(data.nbytes) as host,
        DeviceBuffer(data.nbytes) as dev,
        PinnedBuffer(data.nbytes) as back,
    ):
        host.view(np.float32, data.shape)[...] = data
        device.copy_h2d(dev, host, data.nbytes, stream)
        tensor = torch.as_tensor(dev.view(np.float32, data.shape), device="cuda")
        assert tensor.data_ptr() == dev.ptr  # zero copy through __cuda_array_interface__
        with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)):
            tensor.mul_(2)
        device.copy_d2h(back, dev, data.nbytes, stream)
        event.record(stream)
        event.synchronize()
        np.testing.assert_array_equal(back.view(np.float32, data.shape), data * 2)


@pytest.mark.parametrize("fp16,min_psnr", [(False, 80.0), (True, 50.0)])
@pytest.mark.parametrize("slots", [1, 3])
def test_pipeline_matches_pytorch_fp32(
    tf32_on, eusr, reference, fp16: bool, min_psnr: float, slots: int, rng: np.random.Generator
) -> None:
    image = photo(rng, 203, 311)  # odd sizes, several tiles
    expected = reference(image)
    with Upscaler(CHECKPOINT, tile=64, halo=16, batch=4, slots=slots, backend=TorchCuda(fp16=fp16)) as up:
        assert up.pipelined and isinstance(up.device, CudaDevice)
        got = up.upscale(image)
    assert got.shape == expected.shape and np.isfinite(got).all()
    assert psnr(got, expected) >= min_psnr


def test_tf32_is_what_allow_tf32_says(eusr, reference, rng: np.random.Generator) -> None:
    """With TF32 allowed the stage's fp32 differs from float32 more than without (on an
    Ampere or newer GPU; older GPUs have no TF32 and give the same result)."""
    image = photo(rng, 96, 96)
    expected = reference(image)
    got = {}
    for allow in (False, True):
        with Upscaler(CHECKPOINT, tile=96, halo=16, batch=1, slots=1, backend=TorchCuda(allow_tf32=allow)) as up:
            got[allow] = psnr(up.upscale(image), expected)
    assert got[False] >= 80.0
    if torch.cuda.get_device_capability() >= (8, 0):
        assert got[True] < got[False]


class _Where(torch.nn.Module):
    """Wraps a module; records the current device, the current stream's device and the
    input's device in each forward pass."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seen: list[tuple[int, int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.cuda.current_device(), torch.cuda.current_stream().device_index, x.device.index))
        return self.net(x)


def test_the_device_index_reaches_the_torch_stage(eusr, rng: np.random.Generator, monkeypatch) -> None:
    index = torch.cuda.device_count() - 1  # the last GPU: not the current one where there are several
    synced: list[object] = []
    real_sync = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: (synced.append(device), real_sync(device)))
    factory = TorchCudaStageFactory(_Where(eusr.path(4)), device=index, halo=16, channels_last=False)
    assert synced == [torch.device("cuda", index)]  # set-up ended with a synchronise of that GPU
    net = factory.net
    with factory, Upscaler(backend=factory, device=index, tile=32, halo=16, batch=2, slots=2) as up:
        assert up.device.index == index
        up.upscale(photo(rng, 70, 70))
        stage = factory.create_stage(9)
        CudaDevice(index).activate()  # the buffers on the stage's GPU
        with DeviceBuffer(2 * 3 * 64 * 64 * 4) as src, DeviceBuffer(2 * 3 * 256 * 256 * 4) as dst:
            stage.bind(src.ptr, dst.ptr, (2, 3, 64, 64))
            assert stage._x.data_ptr() == src.ptr and stage._y.data_ptr() == dst.ptr  # aliased, not copied
            assert stage._x.device == torch.device("cuda", index)
        stage.close()
    assert net.seen and set(net.seen) == {(index, index, index)}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_buffers_on_another_gpu_are_refused_not_copied(eusr) -> None:
    factory = TorchCudaStageFactory(eusr, device=0, halo=16)
    with factory:
        CudaDevice(1).activate()
        with DeviceBuffer(3 * 64 * 64 * 4) as src, DeviceBuffer(3 * 256 * 256 * 4) as dst:
            stage = factory.create_stage(0)
            with pytest.raises(UpscaleError, match="is on cuda:1, but the stage runs on cuda:0"):
                stage.bind(src.ptr, dst.ptr, (1, 3, 64, 64))
        CudaDevice(0).activate()


def test_uint8_io_and_a_stream_of_images(eusr, reference, rng: np.random.Generator) -> None:
    images = [photo(rng, h, w).astype(np.uint8) for h, w in [(64, 64), (97, 130), (31, 17), (128, 200)]]
    expected = [np.clip(np.round(reference(im.astype(np.float32))), 0, 255) for im in images]
    for io in ("uint8-nhwc", "float32-nchw"):
        with Upscaler(CHECKPOINT, tile=48, halo=16, batch=6, slots=2, backend=TorchCuda(io=io, fp16=True)) as up:
            got = list(up.upscale_many(images))
        assert len(got) == len(images)
        for g, e in zip(got, expected):
            assert g.dtype == np.uint8 and g.shape == e.shape
            assert psnr(g.astype(np.float32), e) >= 40.0  # fp16, uint8 rounding on both sides


def test_one_huge_image(eusr, rng: np.random.Generator) -> None:
    """1440×2560 → 5760×10240 uint8: many batches of one image through 3 slots, against the
    sequential path of the same stage (the emulated device) on a crop."""
    image = photo(rng, 1440, 2560).astype(np.uint8)
    with Upscaler(CHECKPOINT, tile=256, halo=16, batch=8, slots=3, backend=TorchCuda(io="uint8-nhwc", fp16=True)) as up:
        out = up.upscale(image)
        crop = up.upscale(image[:300, :300])
    assert out.shape == (5760, 10240, 3)
    # the top-left core of the big run equals the crop's where the crop has full context
    assert psnr(out[:1000, :1000].astype(np.float32), crop[:1000, :1000].astype(np.float32)) >= 45.0


def test_a_failing_stage_raises_on_gpu_and_recovers(eusr, rng: np.random.Generator) -> None:
    factory = TorchCudaStageFactory(eusr, halo=16)
    image = photo(rng, 100, 100)
    with factory, Upscaler(backend=factory, tile=32, halo=16, batch=2, slots=2) as up:
        good = up.upscale(image)
        calls = {"n": 0}
        net = factory.net

        def flaky(x):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("simulated CUDA failure")
            return net(x)

        factory.net = flaky
        with pytest.raises(UpscaleError, match="simulated CUDA failure"):
            up.upscale(image)
        factory.net = net
        np.testing.assert_array_equal(up.upscale(image), good)


def test_onnxruntime_cuda_stage(rng: np.random.Generator) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    model = REPO / "runtime" / "models" / "eusr-compact-x4.onnx"
    image = photo(rng, 150, 170)
    with Upscaler(model, backend="onnxruntime", tile=64, batch=4) as seq:
        expected = seq.upscale(image)
    with Upscaler(model, backend="onnxruntime-cuda", tile=64, batch=4, slots=2) as up:
        got = up.upscale(image)
    assert psnr(got, expected) >= 60.0


class _DLPackOnly:
    """A CUDA frame that speaks only DLPack (no __cuda_array_interface__), like some decoders."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.streams: list[object] = []

    def __dlpack__(self, stream: object = None):
        self.streams.append(stream)
        return self.tensor.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.tensor.__dlpack_device__()


def test_frames_on_the_gpu_in_and_out(eusr, rng: np.random.Generator) -> None:
    """torch CUDA tensors in (packed, pitched, DLPack-only), DeviceFrames out: the same pixels
    as the host path of the same Upscaler, without host copies of the frame."""
    image = photo(rng, 150, 203).astype(np.uint8)
    with Upscaler(CHECKPOINT, tile=64, halo=HALO, batch=4, slots=2, backend=TorchCuda(io="uint8-nhwc")) as up:
        expected = up.upscale(image)
        frame = torch.from_numpy(image).cuda()
        wide = torch.zeros((150, 203 + 37, 3), dtype=torch.uint8, device="cuda")
        wide[:, :203] = frame  # a pitched view: rows 240*3 bytes apart
        dlpack = _DLPackOnly(frame)
        for source in (frame, wide[:, :203], dlpack):
            out = up.upscale(source)
            got = torch.as_tensor(out, device="cuda").cpu().numpy()
            assert got.shape == expected.shape and got.dtype == np.uint8
            diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
            assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, type(source).__name__
            out.close()
        assert dlpack.streams and all(s is not None for s in dlpack.streams)  # our stream was named
        host = up.upscale(frame, output="host")
        assert isinstance(host, np.ndarray) and np.abs(host.astype(np.int16) - expected).max() <= 1
        back = up.upscale(image, output="device")
        assert np.abs(torch.as_tensor(back, device="cuda").cpu().numpy().astype(np.int16) - expected).max() <= 1

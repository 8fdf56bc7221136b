"""The GPU backends' stage code, run on the CPU through the emulated device.

The PyTorch stage (device="cpu": tensors over the executor's buffers, no streams) and the
ONNX Runtime IOBinding stage (CPUExecutionProvider: the same binding code with host
pointers) are wrapped in DeferredStageFactory so they compute when the emulated stream
reaches them. What stays unverified here is only what needs a GPU: torch.as_tensor on
__cuda_array_interface__, ExternalStream, ONNX Runtime's user_compute_stream and fp16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import Upscaler
from runtime.backends.onnxruntime_cuda import OrtCudaStageFactory
from runtime.errors import BackendUnavailableError, InvalidArgumentError, ModelError
from runtime.model_info import ModelIO
from runtime.testing.emulated import DeferredStageFactory, EmulatedDevice
from runtime.tiling import BORDER_MODE

torch = pytest.importorskip("torch")


def emulated(factory, schedule: str = "lazy", **kwargs) -> Upscaler:
    device = EmulatedDevice(schedule, seed=7)
    return Upscaler(backend=DeferredStageFactory(factory, device), device=device, **kwargs)


# ------------------------------------------------------------------ ONNX Runtime IOBinding


@pytest.mark.parametrize("schedule", ["lazy", "random"])
def test_ort_iobinding_stage_matches_sequential(
    conv_model: Path, conv_uint8_model: Path, rng: np.random.Generator, schedule: str
) -> None:
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(29, 41, 3), (7, 5), (16, 33, 4)]]
    for model in (conv_model, conv_uint8_model):
        with Upscaler(model, backend="onnxruntime", tile=8, halo=3, batch=3) as seq:
            expected = [seq.upscale(im) for im in images]
        factory = OrtCudaStageFactory(model, provider="CPUExecutionProvider")
        with factory, emulated(factory, schedule, tile=8, halo=3, batch=3, slots=2) as up:
            got = list(up.upscale_many(images))
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
        assert factory.sessions_created == 2  # one per slot


def test_ort_cuda_stage_needs_the_cuda_provider(conv_model: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="needs ONNX Runtime's CUDAExecutionProvider.*onnxruntime-gpu"):
        OrtCudaStageFactory(conv_model)
    with pytest.raises(InvalidArgumentError, match="provider must be one of"):
        OrtCudaStageFactory(conv_model, provider="TPU")


# ------------------------------------------------------------------ PyTorch


@pytest.fixture(scope="module")
def tiny_eusr():
    from train.models.eusr import build_eusr

    torch.manual_seed(0)
    return build_eusr("tiny").eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_eusr) -> Path:
    from train.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, tiny_eusr, config=tiny_eusr.config.to_dict(), config_name="tiny")


def torch_whole(model, image: np.ndarray, border: int = 0) -> np.ndarray:
    """The whole image through ``model`` with ``border`` mirrored pixels of context (cropped off)."""
    padded = np.pad(image, ((border, border), (border, border), (0, 0)), mode=BORDER_MODE)
    with torch.inference_mode():
        x = torch.from_numpy(padded.astype(np.float32).transpose(2, 0, 1)[None].copy())
        out = model(x, 4)[0].numpy().transpose(1, 2, 0)
    return out[4 * border : out.shape[0] - 4 * border, 4 * border : out.shape[1] - 4 * border]


def test_torch_stage_float32_matches_pytorch_whole_image(
    single_thread_torch, tiny_eusr, rng: np.random.Generator
) -> None:
    image = rng.uniform(0, 255, (37, 45, 3)).astype(np.float32)
    # clamped to 0..255 like the runtime's float results (the random tiny net spans ±2000)
    expected = np.clip(torch_whole(tiny_eusr, image, border=16), 0, 255)
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    for channels_last in (True, False):
        factory = TorchCudaStageFactory(tiny_eusr, device="cpu", channels_last=channels_last, halo=16)
        assert factory.net.model is not tiny_eusr  # the caller's module is copied, not converted
        with factory, emulated(factory, "random", tile=16, batch=4, slots=3) as up:
            assert up.halo == 16  # the factory's halo is the model's recommended halo
            got = up.upscale(image)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-2  # float32 summation order


def test_torch_stage_uint8_io_from_a_checkpoint(
    single_thread_torch, tiny_eusr, tiny_checkpoint: Path, rng: np.random.Generator
) -> None:
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    image = rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)
    expected = np.clip(np.round(torch_whole(tiny_eusr, image, border=16)), 0, 255)
    factory = TorchCudaStageFactory(tiny_checkpoint, device="cpu", io="uint8-nhwc", halo=16)
    assert factory.info.io is ModelIO.UINT8_NHWC and factory.info.config_name == "tiny"
    with factory, emulated(factory, tile=12, batch=2, slots=2) as up:
        got = up.upscale(image)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected).max() <= 1 and (got == expected).mean() > 0.99


def test_torch_stage_errors(tmp_path: Path, conv_model: Path, tiny_eusr) -> None:
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    with pytest.raises(ModelError, match="checkpoint not found"):
        TorchCudaStageFactory(tmp_path / "nope.safetensors", device="cpu")
    with pytest.raises(ModelError, match="takes an EUSR .safetensors checkpoint, got a .onnx file"):
        TorchCudaStageFactory(conv_model, device="cpu")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelError, match="junk.safetensors: cannot load the checkpoint"):
        TorchCudaStageFactory(tmp_path / "junk.safetensors", device="cpu")
    with pytest.raises(ModelError, match="scale 3 is not a path of this model"):
        TorchCudaStageFactory(tiny_eusr, device="cpu", scale=3)
    with pytest.raises(InvalidArgumentError, match="fp16=True needs a CUDA device"):
        TorchCudaStageFactory(tiny_eusr, device="cpu", fp16=True)
    with pytest.raises(InvalidArgumentError, match="io must be one of"):
        TorchCudaStageFactory(tiny_eusr, device="cpu", io="float16")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match=r"needs a CUDA build of PyTorch.*is_available\(\) False"):
            TorchCudaStageFactory(tiny_eusr)

"""What the GPU stages set up around their work, checked on the CPU (issue 14, points 2, 3, 6, 7).

* torch-cuda: float32 means IEEE float32 inside the forward pass unless ``allow_tf32``, and
  torch's process-wide TF32 settings come back afterwards; set-up ends with a device
  synchronise (the weights are copied on torch's legacy stream, the slots compute on
  non-blocking streams).
* onnxruntime-cuda: a session that ONNX Runtime silently moved to the CPU is refused with
  ONNX Runtime's own words; the sessions get one intra-op thread, HEURISTIC cuDNN search and
  ``use_tf32=0``.

The ONNX Runtime here is a CPU build. To see what happens on a GPU box whose CUDA provider
cannot load, the tests let ``onnxruntime.get_available_providers()`` claim the CUDA provider
(what a GPU wheel says however its libraries are): the session is then created by the real
ONNX Runtime, which warns and runs it on the CPU, exactly the silent fallback to catch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from runtime import Upscaler
from runtime.backends.onnxruntime_cuda import (
    DEFAULT_CUDA_OPTIONS,
    OrtCudaStageFactory,
    _native_stderr,
    cuda_provider_options,
)
from runtime.errors import BackendUnavailableError, InvalidArgumentError
from runtime.testing.emulated import DeferredStageFactory, EmulatedDevice

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

PRECISION = ("conv", "rnn", "matmul")


def precision_now() -> tuple[str, str, str]:
    b = torch.backends
    return (b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision)


def set_precision(value: str) -> None:
    b = torch.backends
    b.cudnn.conv.fp32_precision = b.cudnn.rnn.fp32_precision = b.cuda.matmul.fp32_precision = value


@pytest.fixture
def torch_precision():
    """Restore torch's process-wide TF32 settings after the test."""
    saved = precision_now()
    yield
    b = torch.backends
    b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision = saved


EVENTS: list[str] = []


class Recorder(torch.nn.Module):
    """×4 by a 3×3 convolution and pixel shuffle, recording torch's TF32 settings in each
    forward pass and every parameter conversion (``.to``, ``.half``) in ``EVENTS``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 48, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(4)
        self.seen: list[tuple[str, str, str]] = []

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        EVENTS.append("convert")
        return super()._apply(fn, recurse)

    def forward(self, x):  # type: ignore[no-untyped-def]
        self.seen.append(precision_now())
        return self.shuffle(self.conv(x)) * 0.1 + x.repeat_interleave(4, 2).repeat_interleave(4, 3)


def emulated(factory, **kwargs) -> Upscaler:
    device = EmulatedDevice("random", seed=3)
    return Upscaler(backend=DeferredStageFactory(factory, device), device=device, **kwargs)


# ------------------------------------------------------------------ torch-cuda: TF32


@pytest.mark.parametrize("allow_tf32,outside,inside", [(False, "tf32", "ieee"), (True, "ieee", "tf32")])
def test_torch_stage_runs_with_tf32_as_asked_and_restores_it(
    torch_precision, single_thread_torch, rng: np.random.Generator, allow_tf32: bool, outside: str, inside: str
) -> None:
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    set_precision(outside)  # PyTorch's own default for cuDNN convolutions is tf32
    image = rng.uniform(0, 255, (20, 28, 3)).astype(np.float32)
    factory = TorchCudaStageFactory(Recorder(), device="cpu", halo=2, allow_tf32=allow_tf32)
    net = factory.net
    with factory, emulated(factory, tile=8, batch=3, slots=2) as up:
        assert up.upscale(image).shape == (80, 112, 3)
        assert precision_now() == (outside,) * 3  # between batches the caller's settings hold
    assert len(net.seen) >= 2 and set(net.seen) == {(inside,) * 3}  # every batch
    assert precision_now() == (outside,) * 3
    assert factory.info.metadata["allow_tf32"] is allow_tf32


@pytest.mark.parametrize("legacy", [False, True])
def test_tf32_scope_restores_on_error(torch_precision, legacy: bool) -> None:
    from runtime.backends.torch_cuda import tf32_scope

    b = torch.backends
    if legacy:  # torch < 2.9 has only the allow_tf32 flags
        b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = True, True
        with pytest.raises(RuntimeError, match="boom"), tf32_scope(torch, False, legacy=True):
            assert (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32) == (False, False)
            raise RuntimeError("boom")
        assert (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32) == (True, True)
    else:
        b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision = "tf32", "none", "ieee"
        with pytest.raises(RuntimeError, match="boom"), tf32_scope(torch, False):
            assert precision_now() == ("ieee",) * 3
            raise RuntimeError("boom")
        assert precision_now() == ("tf32", "none", "ieee")


def test_torch_stage_refuses_a_non_bool_allow_tf32() -> None:
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    with pytest.raises(InvalidArgumentError, match="allow_tf32 must be True or False, got 'no'"):
        TorchCudaStageFactory(Recorder(), device="cpu", allow_tf32="no")


# ------------------------------------------------------------------ torch-cuda: set-up


def test_torch_stage_setup_ends_with_a_device_synchronise(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    synced: list[object] = []

    def synchronize(device: object = None) -> None:
        EVENTS.append("synchronize")
        synced.append(device)

    monkeypatch.setattr(torch.cpu, "synchronize", synchronize)  # torch.cuda.synchronize on a GPU
    EVENTS.clear()
    factory = TorchCudaStageFactory(Recorder(), device="cpu", channels_last=True)
    assert EVENTS.count("convert") >= 2  # weights to the device, channels_last
    assert EVENTS[-1] == "synchronize"  # after the last conversion
    assert synced == [factory.device]
    factory.close()


# ------------------------------------------------------------------ onnxruntime-cuda


@pytest.fixture
def claims_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime says it has the CUDA provider (as a GPU wheel does); sessions stay real."""
    real = ort.get_available_providers()
    if "CUDAExecutionProvider" in real:
        pytest.skip("this onnxruntime really has the CUDA provider")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every InferenceSession created: (sess_options, providers, keywords); still real ones."""
    made: list[tuple] = []
    real = ort.InferenceSession

    class Recorded(real):  # type: ignore[misc, valid-type]
        def __init__(self, path, sess_options=None, providers=None, **kwargs):  # type: ignore[no-untyped-def]
            made.append((sess_options, providers, kwargs))
            super().__init__(path, sess_options=sess_options, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Recorded)
    return made


def test_a_cuda_session_that_fell_back_to_the_cpu_is_refused(claims_cuda, conv_model: Path) -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        OrtCudaStageFactory(conv_model)
    message = str(caught.value)
    assert "did not start CUDAExecutionProvider" in message
    assert "the session runs on ['CPUExecutionProvider']" in message
    assert "not in available provider names" in message  # ONNX Runtime's own reason, captured


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({}, {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0", "device_id": "0"}),
        ({"allow_tf32": True, "device": 1}, {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "1", "device_id": "1"}),
        (
            {"provider_options": {"cudnn_conv_algo_search": "EXHAUSTIVE", "gpu_mem_limit": 1 << 30}},
            {"cudnn_conv_algo_search": "EXHAUSTIVE", "gpu_mem_limit": str(1 << 30), "use_tf32": "0", "device_id": "0"},
        ),
    ],
)
def test_cuda_sessions_get_one_thread_heuristic_search_and_no_tf32(
    claims_cuda, sessions: list[tuple], conv_model: Path, kwargs: dict, expected: dict
) -> None:
    with pytest.raises(BackendUnavailableError):  # the CPU build falls back; the call is what counts
        OrtCudaStageFactory(conv_model, **kwargs)
    cuda = [s for s in sessions if s[1] and s[1][0][0] == "CUDAExecutionProvider"]
    assert len(cuda) == 1  # the construction probe
    options, providers, keywords = cuda[0]
    assert providers == [("CUDAExecutionProvider", expected), "CPUExecutionProvider"]
    assert options.intra_op_num_threads == 1
    assert keywords == {"enable_fallback": 0}


def test_the_slot_stream_and_defaults_in_the_cuda_options() -> None:
    got = cuda_provider_options(2, 0xABC, allow_tf32=False, provider_options={"arena_extend_strategy": 1})
    assert got == {
        **DEFAULT_CUDA_OPTIONS,
        "arena_extend_strategy": "1",
        "device_id": "2",
        "use_tf32": "0",
        "user_compute_stream": str(0xABC),
    }
    assert "user_compute_stream" not in cuda_provider_options(0, 0, allow_tf32=True)


def test_cpu_provider_sessions_have_one_intra_op_thread(conv_model: Path) -> None:
    factory = OrtCudaStageFactory(conv_model, provider="CPUExecutionProvider")
    session = factory.new_session(0)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    assert factory.sessions_created == 1


@pytest.mark.parametrize("key", ["use_tf32", "device_id", "user_compute_stream"])
def test_provider_options_cannot_override_the_factory_arguments(conv_model: Path, key: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"provider_options must not set \\['{key}'\\]: {key} comes from"):
        OrtCudaStageFactory(conv_model, provider="CPUExecutionProvider", provider_options={key: "1"})


def test_native_stderr_is_collected_and_still_shown(capfd: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    with _native_stderr(lines):
        os.write(2, b"Failed to load library libonnxruntime_providers_cuda.so\n\n")
    assert lines == ["Failed to load library libonnxruntime_providers_cuda.so"]
    assert "Failed to load library" in capfd.readouterr().err


def test_the_device_index_reaches_the_ort_cuda_sessions(claims_cuda, sessions: list[tuple], conv_model: Path) -> None:
    """Upscaler → OnnxRuntimeCuda(device=2) → factory → the CUDA provider's device_id (the
    executor on the emulated device, so no GPU is opened)."""
    from runtime import OnnxRuntimeCuda

    with pytest.raises(BackendUnavailableError, match="did not start CUDAExecutionProvider"):
        Upscaler(conv_model, backend=OnnxRuntimeCuda(device=2), device=EmulatedDevice())
    cuda = [s[1][0][1] for s in sessions if s[1] and s[1][0][0] == "CUDAExecutionProvider"]
    assert [options["device_id"] for options in cuda] == ["2"]

"""One conformance test over every backend that can be made here.

Each backend is a StageFactory; :func:`runtime.testing.contract.check_contract` runs the
same refusals on all of them (bad pointers, shapes, streams, unbound and closed stages,
closed factories), and every host-memory backend must also compute its model into the
executor's buffer. The TensorRT stage runs the same checks on the real 10.x/11.x bindings
in ``tests/trt_kit/conformance.py`` (scenario ``runtime_contract``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _runtime_models import reference

from runtime.backends import Backend, OpenVino, StageFactory, create_backend
from runtime.backends.onnxruntime_cuda import OrtCudaStageFactory
from runtime.layout import ModelIO
from runtime.model_info import ModelInfo
from runtime.testing import BackendStageFactory, DeferredStageFactory, EmulatedDevice
from runtime.testing.contract import check_contract, run_on_host


class Doubler(Backend):
    """numpy ×2 nearest: the smallest Backend a user could write."""

    name = "numpy-doubler"

    def __init__(self, io: ModelIO = ModelIO.FLOAT32_NCHW) -> None:
        super().__init__(ModelInfo(io=io, scale=2, input_name="lr", output_name="sr"))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        h, w = self.io.spatial_axes
        return batch.repeat(2, h).repeat(2, w)


def _ort(model: Path) -> StageFactory:
    return create_backend("onnxruntime", model)


def _openvino(model: Path) -> StageFactory:
    pytest.importorskip("openvino")
    return create_backend(OpenVino(cache=False), model)


def _ort_iobinding(model: Path) -> StageFactory:
    return OrtCudaStageFactory(model, provider="CPUExecutionProvider")


def _torch_cpu(model: Path) -> StageFactory:
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    return TorchCudaStageFactory(_OnnxAsTorch(model), device="cpu", scale=4, io=_io_of(model), channels_last=False)


def _emulated(model: Path) -> StageFactory:
    return BackendStageFactory(_ort(model), EmulatedDevice())  # type: ignore[arg-type]


def _deferred(model: Path) -> StageFactory:
    return DeferredStageFactory(_ort(model), EmulatedDevice())


def _io_of(model: Path) -> ModelIO:
    return ModelIO.UINT8_NHWC if "u8" in model.name else ModelIO.FLOAT32_NCHW


class _OnnxAsTorch:
    """A torch module running the ONNX model (so every backend runs the same function)."""

    def __new__(cls, model: Path):
        torch = pytest.importorskip("torch")
        float_model = model.with_name(model.name.replace("_u8", ""))

        class Module(torch.nn.Module):
            def forward(self, x):
                out = reference(float_model, x.detach().cpu().numpy().astype(np.float32))
                return torch.from_numpy(out)

        return Module()


BACKENDS: dict[str, tuple[Callable[[Path], StageFactory], bool]] = {
    # name: (make it for a model, computes on host memory here)
    "onnxruntime": (_ort, True),
    "onnxruntime-iobinding-cpu": (_ort_iobinding, True),
    "openvino": (_openvino, True),
    "torch-cpu": (_torch_cpu, True),
    "emulated-device-stage": (_emulated, False),
    "deferred-stage": (_deferred, False),
}


@pytest.mark.parametrize("name", sorted(BACKENDS))
@pytest.mark.parametrize("uint8", [False, True], ids=["float32-nchw", "uint8-nhwc"])
def test_backend_conformance(
    name: str, uint8: bool, conv_model: Path, conv_uint8_model: Path, rng: np.random.Generator
) -> None:
    make, on_host = BACKENDS[name]
    model = conv_uint8_model if uint8 else conv_model
    io = _io_of(model)
    good = io.batch_shape(2, 9, 11)
    if on_host:
        factory = make(model)
        batch = rng.integers(0, 256, good).astype(io.dtype)
        got = run_on_host(factory, batch)
        nchw = (
            batch.astype(np.float32) if io is ModelIO.FLOAT32_NCHW else batch.transpose(0, 3, 1, 2).astype(np.float32)
        )
        want = reference(conv_model, nchw)
        if io is ModelIO.UINT8_NHWC:
            want = np.clip(np.rint(want), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
        factory.close()
    messages = check_contract(make(model), good)
    # the same refusals, said the same way, on every backend
    assert "bind() before enqueue()" in messages["unbound"]
    assert "input_ptr must be a buffer pointer" in messages["ptr_zero"]
    assert "closed" in messages["closed_factory"]


def test_the_contract_check_has_teeth(conv_model: Path) -> None:
    """A backend whose stage skips the validation fails the conformance check."""
    from runtime.backends.contract import Stage

    class Lax(Doubler):
        def _new_stage(self, slot: int) -> Stage:
            stage = super()._new_stage(slot)
            stage.bind = lambda *a: None  # type: ignore[method-assign]  # accepts anything
            return stage

    with pytest.raises(AssertionError, match="nothing was raised"):
        check_contract(Lax(), (2, 3, 9, 11))
    check_contract(Doubler(), (2, 3, 9, 11))  # the honest version passes


def test_a_user_backend_runs_through_the_executor(rng: np.random.Generator) -> None:
    from runtime import Upscaler

    image = rng.integers(0, 256, (13, 20, 3), dtype=np.uint8)
    for io in ModelIO:
        with Upscaler(backend=Doubler(io), tile=8, halo=0) as up:
            np.testing.assert_array_equal(up.upscale(image), image.repeat(2, 0).repeat(2, 1))
            assert up.device.kind == "host" and up.executor.slots == 1

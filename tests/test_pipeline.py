"""The pipelined executor on the CPU stand-in: same pixels as the sequential path, in order,
errors surface, shutdown drains, nothing allocated per batch.

The stand-in (runtime.testing.EmulatedDevice) runs queued work lazily (only when an
event after it is waited for) or at random times, and poisons a D2H destination when the
copy is queued, so a missing wait shows as wrong pixels; the negative controls at the end
check that it does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from _numpy_backend import BlurUp

from runtime import Upscaler
from runtime.backends import (
    OPTIONS,
    Backend,
    GpuOptions,
    OnnxRuntimeCuda,
    OpenVino,
    TensorRT,
    create_backend,
    resolve_auto,
)
from runtime.errors import BackendUnavailableError, InvalidArgumentError, UpscaleError
from runtime.image_io import write_image
from runtime.model_info import ModelIO
from runtime.pipeline import PipelineExecutor
from runtime.testing import BackendStageFactory, EmulatedDevice


def pipelined(backend: Backend, schedule: str = "lazy", seed: int = 0, **kwargs) -> Upscaler:
    device = EmulatedDevice(schedule, seed=seed)
    return Upscaler(backend=BackendStageFactory(backend, device), device=device, **kwargs)


SIZES = [(1, 1), (5, 3), (37, 53), (17, 64), (61, 9)]


@pytest.mark.parametrize("io", list(ModelIO))
@pytest.mark.parametrize("schedule", ["lazy", "random", "eager"])
def test_identical_to_sequential_for_batch_1_to_8_and_1_to_4_slots(
    rng: np.random.Generator, io: ModelIO, schedule: str
) -> None:
    """The acceptance check: every batch 1..8 × slots 1..4, odd sizes, both I/O layouts."""
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    for batch in range(1, 9):
        with Upscaler(backend=BlurUp(io), tile=8, halo=1, batch=batch) as seq:
            expected = [seq.upscale(im) for im in images]
        for slots in range(1, 5):
            with pipelined(
                BlurUp(io), schedule, seed=batch * 10 + slots, tile=8, halo=1, batch=batch, slots=slots
            ) as up:
                for im, exp in zip(images, expected):
                    np.testing.assert_array_equal(
                        up.upscale(im), exp, err_msg=f"{im.shape} batch {batch} slots {slots}"
                    )
                many = list(up.upscale_many(images))
            for got, exp in zip(many, expected):
                np.testing.assert_array_equal(got, exp, err_msg=f"upscale_many batch {batch} slots {slots}")


def test_layouts_and_dtypes_in_order(rng: np.random.Generator) -> None:
    """gray, gray+alpha, RGBA with varying alpha, uint16, float32: a stream mixing them."""
    alpha = rng.integers(0, 256, (23, 19, 4), dtype=np.uint8)
    opaque = alpha.copy()
    opaque[:, :, 3] = 255
    images = [
        rng.integers(0, 256, (23, 19), dtype=np.uint8),
        rng.integers(0, 256, (9, 30, 2), dtype=np.uint8),
        alpha,
        opaque,
        rng.integers(0, 65536, (14, 11, 3), dtype=np.uint16),
        rng.uniform(0, 255, (12, 12, 3)).astype(np.float32),
        rng.integers(0, 256, (2, 40), dtype=np.uint8),
    ]
    with Upscaler(backend=BlurUp(), tile=6, halo=1, batch=3) as seq:
        expected = [seq.upscale(im) for im in images]
    with pipelined(BlurUp(), "random", seed=3, tile=6, halo=1, batch=3, slots=3) as up:
        got = list(up.upscale_many(images))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def test_onnxruntime_cpu_stage_matches_the_sequential_onnxruntime_path(
    conv_model: Path, conv_uint8_model: Path, rng: np.random.Generator
) -> None:
    image = rng.integers(0, 256, (29, 41, 3), dtype=np.uint8)
    for model in (conv_model, conv_uint8_model):
        with Upscaler(model, backend="onnxruntime", tile=8, halo=3, batch=4) as seq:
            expected = seq.upscale(image)
        ort = create_backend("onnxruntime", model)
        with ort, pipelined(ort, "lazy", tile=8, halo=3, batch=4, slots=2) as up:
            np.testing.assert_array_equal(up.upscale(image), expected)


def test_small_images_are_padded_to_the_stage_minimum(rng: np.random.Generator) -> None:
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(1, 1), (3, 50, 3), (15, 16, 4), (40, 9)]]
    with Upscaler(backend=BlurUp(min_size=16), tile=8, halo=4, batch=3) as seq:
        expected = [seq.upscale(im) for im in images]
    backend = BlurUp(min_size=16)
    with pipelined(backend, tile=8, halo=4, batch=3) as up:
        for im, exp in zip(images, expected):
            np.testing.assert_array_equal(up.upscale(im), exp)


# ------------------------------------------------------------------ scheduling


class Trace:
    """Records enqueues and event waits in order."""

    def __init__(self, up: Upscaler) -> None:
        self.log: list[str] = []
        factory = up.backend
        factory.before_enqueue = lambda shape: self.log.append("enqueue")
        for slot in up.executor._slots:
            original = slot.event.synchronize

            def wait(original=original, index=slot.index) -> None:
                self.log.append(f"wait{index}")
                original()

            slot.event.synchronize = wait


def test_slots_overlap_and_images_pipeline(rng: np.random.Generator) -> None:
    """With 3 slots, 3 batches are queued before the first wait; the next image's first batch
    is queued before the previous image is handed out."""
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # tile 8: 4 tiles, batch 1
    with pipelined(BlurUp(), tile=8, halo=1, batch=1, slots=3) as up:
        trace = Trace(up)
        results = up.upscale_many([image, image])
        first = next(results)
        events_before_first = list(trace.log)
        rest = list(results)
    assert len(rest) == 1 and np.array_equal(first, rest[0])
    assert trace.log[:4] == ["enqueue", "enqueue", "enqueue", "wait0"]
    # slots are used round robin: each wait is for the slot about to be reused
    waits = [e for e in trace.log if e.startswith("wait")]
    assert waits == [f"wait{i % 3}" for i in range(8)]
    # image 1's last batch was waited for after image 2's batches were enqueued
    assert events_before_first.count("enqueue") > 4


def test_no_allocation_per_batch(rng: np.random.Generator) -> None:
    device = EmulatedDevice("random", seed=5)
    with Upscaler(backend=BackendStageFactory(BlurUp(), device), device=device, tile=4, halo=1, batch=2, slots=3) as up:
        allocated = device.allocations
        assert allocated == 3 * 6  # per slot: stream, event, 2 host + 2 device buffers
        for _ in up.upscale_many(rng.integers(0, 256, (33, 21, 3), dtype=np.uint8) for _ in range(3)):
            pass
        up.upscale(rng.integers(0, 256, (5, 7), dtype=np.uint8))
        assert device.allocations == allocated


# ------------------------------------------------------------------ failures


class Failing(BlurUp):
    """Fails on the ``fail_at``-th model call (counting from 1), inside the stream."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.calls + 1 == self.fail_at:
            self.calls += 1
            raise UpscaleError(f"tile batch {self.fail_at} failed")
        return super()._infer(batch)


@pytest.mark.parametrize("schedule", ["lazy", "random", "eager"])
@pytest.mark.parametrize("where", ["kernel", "enqueue"])
def test_a_failing_tile_raises_and_the_executor_recovers(rng: np.random.Generator, schedule: str, where: str) -> None:
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)  # 9 tiles of 8
    with Upscaler(backend=BlurUp(), tile=8, halo=1, batch=2) as seq:
        expected = seq.upscale(image)
    backend = Failing(fail_at=3) if where == "kernel" else BlurUp()
    with pipelined(backend, schedule, tile=8, halo=1, batch=2, slots=2) as up:
        if where == "enqueue":
            count = {"n": 0}

            def refuse(shape: tuple) -> None:
                count["n"] += 1
                if count["n"] == 3:
                    raise UpscaleError("enqueue refused")

            up.backend.before_enqueue = refuse
        with pytest.raises(UpscaleError, match="failed|refused"):
            up.upscale(image)
        assert not up.executor._busy and not up.executor._inflight
        # the same executor works afterwards, and gives the right pixels
        np.testing.assert_array_equal(up.upscale(image), expected)


def test_a_failure_in_a_stream_yields_earlier_images_only(rng: np.random.Generator) -> None:
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]  # 4 tiles each
    with Upscaler(backend=BlurUp(), tile=8, halo=1, batch=2) as seq:
        expected = [seq.upscale(im) for im in images]
    with pipelined(Failing(fail_at=4), tile=8, halo=1, batch=2, slots=3) as up:  # image 2's 2nd batch
        got = []
        with pytest.raises(UpscaleError, match="tile batch 4 failed"):
            for out in up.upscale_many(images):
                got.append(out)
    assert len(got) == 1
    np.testing.assert_array_equal(got[0], expected[0])


def test_upscale_file_writes_nothing_when_a_tile_fails(tmp_path: Path, rng: np.random.Generator) -> None:
    write_image(tmp_path / "in.png", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    with pipelined(Failing(fail_at=2), tile=8, halo=1, batch=1) as up:
        with pytest.raises(UpscaleError, match="failed"):
            up.upscale_file(tmp_path / "in.png", tmp_path / "out.png")
    assert sorted(os.listdir(tmp_path)) == ["in.png"]


# ------------------------------------------------------------------ shutdown


def test_abandoned_iterator_drains_and_busy_use_is_refused(rng: np.random.Generator) -> None:
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    with pipelined(BlurUp(), "lazy", tile=8, halo=1, batch=1, slots=3) as up:
        device = up.device
        results = up.upscale_many(images)
        first = next(results)
        with pytest.raises(UpscaleError, match="busy with an unfinished run"):
            up.upscale(images[0])
        results.close()  # stop early: queued work is drained, nothing else comes out
        assert all(s.stream.pending == 0 for s in up.executor._slots)
        np.testing.assert_array_equal(up.upscale(images[0]), first)
        executor = up.executor
    assert executor.closed and all(s.closed for s in up.backend.stages)
    with pytest.raises(UpscaleError, match="closed"):
        executor.run([])
    up.close()  # idempotent
    assert device.ops_run > 0


def test_caller_owned_factory_stays_open(rng: np.random.Generator) -> None:
    device = EmulatedDevice()
    factory = BackendStageFactory(BlurUp(), device)
    with Upscaler(backend=factory, device=device, tile=8):
        pass
    assert not factory.closed


def test_executor_arguments() -> None:
    device = EmulatedDevice()
    factory = BackendStageFactory(BlurUp(), device, max_batch=4)
    with pytest.raises(InvalidArgumentError, match="batch must be at most the stage's max_batch 4, got 5"):
        PipelineExecutor(factory, device, window=(8, 8), batch=5)
    with pytest.raises(InvalidArgumentError, match="^slots must be an integer >= 1"):
        Upscaler(backend=factory, device=device, slots=0)
    with pytest.raises(InvalidArgumentError, match="schedule must be one of"):
        EmulatedDevice("whenever")
    with PipelineExecutor(factory, device, window=(8, 8), batch=2) as executor:
        from runtime.pipeline import ImageJob, Pass
        from runtime.tiling import plan_tiles

        big = np.zeros((20, 20, 3), np.uint8)
        job = ImageJob(plan_tiles(20, 20, 10, 1), [Pass(big, np.zeros((40, 40, 3), np.uint8))], big)
        with pytest.raises(InvalidArgumentError, match="window 12x12 is larger than the 8x8"):
            list(executor.run([job]))


class EngineLike(BackendStageFactory):
    """A factory with engine limits on the window edge."""

    def window_limits(self) -> tuple[int, int]:
        return (8, 24)


def test_engine_window_limits_are_checked() -> None:
    device = EmulatedDevice()
    factory = EngineLike(BlurUp(), device)
    with pytest.raises(InvalidArgumentError, match=r"tile \+ 2\*halo must be at most 24.*use tile <= 22"):
        Upscaler(backend=factory, device=device, tile=32, halo=1)
    with pytest.raises(InvalidArgumentError, match=r"tile \+ 2\*halo must be at least 8"):
        Upscaler(backend=factory, device=device, tile=4, halo=1)
    with Upscaler(backend=factory, device=device, tile=20, halo=1) as up:  # tiny images padded to 8
        assert up.upscale(np.zeros((3, 5, 3), np.uint8)).shape == (6, 10, 3)


# ------------------------------------------------------------------ CUDA graphs


class GraphFactory(BackendStageFactory):
    supports_cuda_graphs = True


def test_cuda_graphs_replay_captured_work(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)  # 25 tiles of 8
    with Upscaler(backend=BlurUp(), tile=8, halo=1, batch=4) as seq:
        expected = seq.upscale(image)
    device = EmulatedDevice("random", seed=2)
    factory = GraphFactory(BlurUp(), device, max_batch=4)
    enqueues = []
    factory.before_enqueue = enqueues.append
    with Upscaler(backend=factory, device=device, tile=8, halo=1, batch=4, slots=2, cuda_graphs=True) as up:
        for _ in range(3):
            np.testing.assert_array_equal(up.upscale(image), expected)
    # per slot: one plain run and one capture of the full-batch shape, one plain run of the
    # last (single-tile) batch and its capture later; everything else is replayed
    assert len(enqueues) <= 8 < 3 * 7


def test_cuda_graphs_ignored_for_stages_that_cannot_be_captured(caplog: pytest.LogCaptureFixture) -> None:
    device = EmulatedDevice()
    with (
        caplog.at_level(logging.WARNING),
        Upscaler(backend=BackendStageFactory(BlurUp(), device), device=device, tile=8, cuda_graphs=True) as up,
    ):
        assert not up.executor.cuda_graphs
    assert "cuda_graphs=True ignored" in caplog.text


# ------------------------------------------------------------------ negative controls


class NoWait(PipelineExecutor):
    """Broken on purpose: reads results without waiting for the slot's event."""

    def _complete(self, item, on_batch):
        sync = item.slot.event.synchronize
        item.slot.event.synchronize = lambda: None
        try:
            return super()._complete(item, on_batch)
        finally:
            item.slot.event.synchronize = sync


class WrongStream(PipelineExecutor):
    """Broken on purpose: queues the copy back on another slot's stream, which the slot's
    event does not cover."""

    def _enqueue(self, slot, in_bytes, out_bytes):
        other = self._slots[(slot.index + 1) % len(self._slots)]
        self.device.copy_h2d(slot.dev_in, slot.host_in, in_bytes, slot.stream)
        slot.stage.enqueue(slot.stream.handle)
        self.device.copy_d2h(slot.host_out, slot.dev_out, out_bytes, other.stream)


@pytest.mark.parametrize("broken", [NoWait, WrongStream])
def test_the_stand_in_catches_missing_synchronisation(
    broken: type, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    with Upscaler(backend=BlurUp(), tile=8, halo=1, batch=2) as seq:
        expected = seq.upscale(image)
    import runtime.upscaler

    monkeypatch.setattr(runtime.upscaler, "PipelineExecutor", broken)
    with pipelined(BlurUp(), "lazy", tile=8, halo=1, batch=2, slots=2) as up:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN poison cast to uint8
            out = up.upscale(image)
    assert not np.array_equal(out, expected)


# ------------------------------------------------------------------ registry and auto


def test_registry_names_and_errors(tmp_path: Path) -> None:
    assert set(OPTIONS) == {"onnxruntime", "openvino", "tensorrt", "torch-cuda", "onnxruntime-cuda"}
    assert {name for name, cls in OPTIONS.items() if cls().pipelined} == {"tensorrt", "torch-cuda", "onnxruntime-cuda"}
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tpu'"):
        create_backend("tpu", tmp_path / "m")
    # whichever state the TensorRT module is in, asking for it here fails clearly
    with pytest.raises(UpscaleError):
        create_backend("tensorrt", tmp_path / "missing.plan")


def test_registry_lookup_of_a_missing_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Ghost(GpuOptions):
        name: ClassVar[str] = "ghost"
        factory: ClassVar[str] = "runtime.backends.ghost_backend:GhostFactory"

    monkeypatch.setitem(OPTIONS, "ghost", Ghost)
    with pytest.raises(
        BackendUnavailableError, match="runtime.backends.ghost_backend is not part of this installation"
    ):
        create_backend("ghost", tmp_path / "m")
    monkeypatch.setattr(Ghost, "factory", "runtime.backends.contract:GhostFactory")
    with pytest.raises(BackendUnavailableError, match="has no GhostFactory"):
        create_backend("ghost", tmp_path / "m")


def test_auto_order(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import runtime.backends as backends
    import runtime.cuda.resources as resources

    caplog.set_level(logging.INFO, logger="runtime.backends")
    real = backends._module_importable
    assert resolve_auto("model.onnx") == OpenVino()  # this machine: no GPU, openvino installed (dev extra)
    assert "backend 'auto' resolved to openvino" in caplog.text
    with monkeypatch.context() as m:
        m.setattr(backends, "_module_importable", lambda name: name != "openvino" and real(name))
        caplog.clear()
        options = resolve_auto("model.onnx")
        assert (options.name, options.providers) == ("onnxruntime", ("CPUExecutionProvider",))
        assert "backend 'auto' resolved to onnxruntime" in caplog.text and "openvino" in caplog.text

    monkeypatch.setattr(backends, "_module_importable", lambda name: True)
    monkeypatch.setattr(resources, "cuda_available", lambda: (True, "1 CUDA device(s)"))
    assert resolve_auto("engine.plan") == TensorRT()
    assert resolve_auto("model.onnx").name == "openvino"  # no CUDAExecutionProvider here

    class FakeOrt:
        @staticmethod
        def get_available_providers() -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr("runtime.backends.onnxruntime_backend.import_onnxruntime", lambda: FakeOrt)
    assert resolve_auto("model.onnx") == OnnxRuntimeCuda()
    assert resolve_auto("model.onnx", pipelined=False).providers[0] == "CUDAExecutionProvider"
    monkeypatch.setattr(resources, "cuda_available", lambda: (False, "no driver"))
    caplog.clear()
    assert resolve_auto("engine.plan").name == "onnxruntime"  # OpenVINO reads ONNX files only
    assert "tensorrt: no driver" in caplog.text

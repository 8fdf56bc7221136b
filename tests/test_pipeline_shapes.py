"""One shape per slot and the CUDA-graph sequence, on the emulated device (issue 14, points 7, 8).

* Pipelined devices pad an image's last, partial batch to ``batch`` windows, so every bind and
  every enqueue of an image has one shape; the extra windows' results are dropped and the
  pixels equal the sequential host path. The host device does not pad (no extra compute).
* With ``cuda_graphs`` a slot runs each new shape once uncaptured, captures the next batch of
  that shape and replays it from then on; a capture whose ``end_capture`` fails falls back to
  a plain enqueue with a warning and the image still completes with the right pixels.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from _numpy_backend import BlurUp

from runtime import Upscaler
from runtime.model_info import ModelIO
from runtime.testing import BackendStageFactory, EmulatedDevice


class GraphFactory(BackendStageFactory):
    supports_cuda_graphs = True


class ShapeLog(BlurUp):
    """BlurUp that remembers the batch shape of every call (the host path's "enqueues")."""

    def __init__(self, io: ModelIO = ModelIO.FLOAT32_NCHW) -> None:
        super().__init__(io)
        self.shapes: list[tuple[int, ...]] = []

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return super()._infer(batch)


def sequential(image: np.ndarray, io: ModelIO = ModelIO.FLOAT32_NCHW, **kwargs) -> np.ndarray:
    with Upscaler(backend=BlurUp(io), **kwargs) as up:
        return up.upscale(image)


@pytest.mark.parametrize("io", list(ModelIO))
@pytest.mark.parametrize("schedule", ["lazy", "random"])
def test_every_bind_and_enqueue_of_an_image_has_one_shape(io: ModelIO, schedule: str) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)  # 5x5 = 25 windows: 6 batches of 4, then 1
    device = EmulatedDevice(schedule, seed=3)
    factory = BackendStageFactory(BlurUp(io), device, max_batch=4)
    with Upscaler(backend=factory, device=device, tile=8, halo=1, batch=4, slots=2) as up:
        assert len(up.plan(40, 40)) == 25
        out = up.upscale(image)
    full = io.batch_shape(4, 10, 10)
    assert factory.enqueued_shapes == [full] * 7
    assert set(factory.bound_shapes) == {full}
    np.testing.assert_array_equal(out, sequential(image, io, tile=8, halo=1, batch=4))


def test_each_image_keeps_its_own_single_shape() -> None:
    rng = np.random.default_rng(8)
    big = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    small = rng.integers(
        0, 256, (6, 7, 3), dtype=np.uint8
    )  # one 8x9 window (6x7 plus the mirrored halo), padded to a batch of 4
    device = EmulatedDevice("random", seed=1)
    factory = BackendStageFactory(BlurUp(), device, max_batch=4)
    with Upscaler(backend=factory, device=device, tile=8, halo=1, batch=4, slots=3) as up:
        outs = list(up.upscale_many([big, small, big]))
    assert factory.enqueued_shapes == [(4, 3, 10, 10)] * 7 + [(4, 3, 8, 9)] + [(4, 3, 10, 10)] * 7
    for out, image in zip(outs, [big, small, big], strict=True):
        np.testing.assert_array_equal(out, sequential(image, tile=8, halo=1, batch=4))


def test_the_host_device_does_not_pad() -> None:
    image = np.random.default_rng(9).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    backend = ShapeLog()
    with Upscaler(backend=backend, tile=8, halo=1, batch=4) as up:
        assert not up.executor.pad_batches
        up.upscale(image)
    assert backend.shapes == [(4, 3, 10, 10)] * 6 + [(1, 3, 10, 10)]  # 25 windows computed, not 28


# ------------------------------------------------------------------ CUDA graphs


def test_warm_up_uncaptured_then_capture_then_replay() -> None:
    rng = np.random.default_rng(10)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)  # 7 batches of 4 windows
    small = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)  # another shape: one batch
    device = EmulatedDevice("lazy")
    factory = GraphFactory(BlurUp(), device, max_batch=4)
    with Upscaler(backend=factory, device=device, tile=8, halo=1, batch=4, slots=1, cuda_graphs=True) as up:
        assert up.executor.cuda_graphs
        first = up.upscale(image)
        assert [k for k, _ in device.trace] == ["run", "capture"] + ["replay"] * 6
        device.trace.clear()
        np.testing.assert_array_equal(up.upscale(image), first)
        assert [k for k, _ in device.trace] == ["replay"] * 7  # the graph outlives the image
        device.trace.clear()
        # A new shape is run plainly once; back on the first shape its graph replays; the new
        # shape, seen again after that change, is warmed up again before it is captured.
        outs = [up.upscale(x) for x in (small, image, small, small, small)]
        assert [k for k, _ in device.trace] == ["run"] + ["replay"] * 7 + ["run", "capture", "replay", "replay"]
    np.testing.assert_array_equal(first, sequential(image, tile=8, halo=1, batch=4))
    for out, x in zip(outs, (small, image, small, small, small), strict=True):
        np.testing.assert_array_equal(out, sequential(x, tile=8, halo=1, batch=4))


@pytest.mark.parametrize("slots", [1, 2])
def test_a_failing_end_capture_falls_back_to_plain_enqueues(caplog: pytest.LogCaptureFixture, slots: int) -> None:
    image = np.random.default_rng(11).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    expected = sequential(image, tile=8, halo=1, batch=4)
    device = EmulatedDevice("random", seed=5)
    device.fail_end_capture = slots  # every slot's first capture is invalidated
    factory = GraphFactory(BlurUp(), device, max_batch=4)
    with (
        caplog.at_level(logging.WARNING, logger="runtime.pipeline"),
        Upscaler(backend=factory, device=device, tile=8, halo=1, batch=4, slots=slots, cuda_graphs=True) as up,
    ):
        out = up.upscale(image)
        again = up.upscale(image)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(again, expected)
    assert caplog.text.count("CUDA graph capture failed") == slots
    assert "stream capture invalidated" in caplog.text
    kinds = [k for k, _ in device.trace]
    assert "replay" not in kinds  # the slots gave graphs up
    assert kinds.count("capture") == slots  # one dropped capture per slot, its batch then ran plainly
    assert kinds.count("run") == 14  # every batch of both images ran, once each

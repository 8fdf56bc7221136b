"""The contract between the pipelined CUDA executor and a GPU compute engine.

The executor (``runtime/pipeline.py``) owns everything that is not the model: N in-flight
slots, each with its own CUDA stream, pinned host buffers, device buffers and events; it
gathers tiles into pinned memory, copies them to the device, asks the slot's compute stage
to run the model on that stream, copies the result back and stitches. A GPU backend
(TensorRT, PyTorch CUDA, ONNX Runtime CUDA) only provides a :class:`DeviceStageFactory`
that makes one :class:`DeviceStage` per slot: the model run on device memory the executor
owns, enqueued on the stream the executor gives. So TensorRT-specific code stays small, and
the whole pipeline runs (and is measured) on a GPU machine without TensorRT, with the
PyTorch stage in its place; CI runs it with a CPU stand-in.

Buffers are raw device pointers (``int``) to contiguous tensors in the model's I/O layout
(``ModelIO``: float32 NCHW or uint8 NHWC), sized for ``max_batch`` windows of the fixed
window shape; ``bind`` says how many windows are valid in this call.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..closing import Closing
from ..model_info import ModelInfo

__all__ = ["DeviceStage", "DeviceStageFactory"]


@runtime_checkable
class DeviceStage(Protocol):
    """One slot's model runner on the GPU. Not thread-safe; one per slot."""

    def bind(self, input_ptr: int, output_ptr: int, input_shape: tuple[int, int, int, int]) -> None:
        """Point the model at device buffers for a batch of ``input_shape`` (model layout).

        Called when a slot's shape or buffers change (cheap to call every batch; a stage
        may cache). ``output_shape`` follows from the model's scale and layout.
        """

    def enqueue(self, stream: int) -> None:
        """Queue one model run on the CUDA stream handle ``stream``; returns without waiting.

        Raises (``runtime.errors.UpscaleError`` or a subclass) if the run cannot be queued,
        e.g. TensorRT's ``execute_async_v3`` returning False.
        """

    def close(self) -> None:
        """Release per-slot resources (execution context, ...); idempotent."""


@runtime_checkable
class DeviceStageFactory(Protocol):
    """What a GPU backend gives the executor: model facts plus one stage per slot."""

    @property
    def info(self) -> ModelInfo:
        """Scale, I/O layout, tensor names, recommended halo (from ONNX metadata or sidecar)."""

    @property
    def max_batch(self) -> int:
        """Largest number of windows one ``enqueue`` may take (the engine profile's max)."""

    def window_limits(self) -> tuple[int, int] | None:
        """(min, max) spatial edge of an input window, or None if any size runs."""

    def create_stage(self, slot: int) -> DeviceStage:
        """A new stage for slot ``slot`` (own execution context / session binding)."""

    def close(self) -> None:
        """Release shared resources (engine, runtime, session); idempotent."""


class StageFactoryBase(Closing):
    """The bookkeeping every stage factory shares: model facts, batch limit, closing.

    Subclasses set ``name``, ``self._info`` and ``self._max_batch`` in ``__init__`` and
    implement :meth:`_new_stage` (and :meth:`_close` if they hold resources).
    """

    name = "stage factory"
    _closed = False

    @property
    def info(self) -> ModelInfo:
        return self._info  # type: ignore[attr-defined]

    @property
    def max_batch(self) -> int:
        return self._max_batch  # type: ignore[attr-defined]

    def window_limits(self) -> tuple[int, int] | None:
        """Any window size runs (engines with fixed profiles override this)."""
        return None

    def create_stage(self, slot: int) -> DeviceStage:
        if self._closed:
            from ..errors import UpscaleError

            raise UpscaleError(f"the {self.name} stage factory is closed")
        return self._new_stage(slot)

    def _new_stage(self, slot: int) -> DeviceStage:
        raise NotImplementedError

    def close(self) -> None:
        """Release shared resources; idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """Subclass resources (called once)."""


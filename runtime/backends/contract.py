"""The one runner contract every inference backend follows, CPU or GPU.

A backend is a :class:`StageFactory`: model facts (:class:`~runtime.model_info.ModelInfo`),
the largest batch and window it runs, and one :class:`Stage` per executor slot. A stage is
the model run on buffers the executor owns: :meth:`Stage.bind` points it at an input and an
output buffer for a batch shape, :meth:`Stage.enqueue` queues one run on a stream.

In Polygraphy's style (``infer`` → ``check_inputs`` → ``infer_impl``) the public methods
validate and only the private ``_bind`` / ``_enqueue`` / ``_new_stage`` differ between
backends, so every backend refuses a wrong shape, a bad pointer, an unbound or closed stage
with the same message. One executor (:mod:`runtime.pipeline`) drives every backend: GPU
stages on CUDA streams, CPU stages on the synchronous :class:`~runtime.host.HostDevice`.

Buffers are raw pointers (``int``) to contiguous tensors in the model's layout; what they
point into is said by :attr:`StageFactory.memory`:

* ``"device"``: device memory; ``enqueue`` queues work on the stream and returns (TensorRT,
  PyTorch CUDA, ONNX Runtime CUDA, the emulated stages of :mod:`runtime.testing`).
* ``"host"``: host memory read and written synchronously inside ``enqueue`` (ONNX Runtime
  CPU, any :class:`Backend`); the executor runs these only on a synchronous host device.
"""

from __future__ import annotations

import abc
import ctypes
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np

from ..closing import Closing
from ..errors import InvalidArgumentError, ModelError, UpscaleError
from ..layout import ModelIO
from ..model_info import ModelInfo

__all__ = ["Stage", "StageFactory", "Backend", "host_array", "Memory", "ACTIVATION_TENSORS"]

Memory = Literal["host", "device"]

_NO_LIMIT = 1 << 30

ACTIVATION_TENSORS = 4.0
"""Feature maps at the output resolution a backend holds at once during a call, counted
high: ONNX Runtime's peak for the bundled compact model is 3.4-5.5 of them per pixel
(measured in fresh processes at 144² to 480×270), the paper configuration's 3.0-5.0."""


def _check_pointer(name: str, ptr: object) -> int:
    if isinstance(ptr, bool) or not isinstance(ptr, (int, np.integer)) or ptr <= 0:
        raise InvalidArgumentError(f"{name} must be a buffer pointer (positive int), got {ptr!r}")
    return int(ptr)


class Stage(Closing, abc.ABC):
    """One slot's model runner. Not thread-safe: one per slot, used by one thread."""

    def __init__(self, factory: StageFactory, slot: int) -> None:
        self.factory = factory
        self.slot = slot
        self._bound: tuple[int, int, tuple[int, int, int, int]] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def bound_shape(self) -> tuple[int, int, int, int] | None:
        """The input shape of the last :meth:`bind`, None before the first."""
        return None if self._bound is None else self._bound[2]

    def _live(self) -> None:
        if self._closed:
            raise UpscaleError(f"{self.factory.name} stage for slot {self.slot} is closed; create a new one")

    def bind(self, input_ptr: int, output_ptr: int, input_shape: Sequence[int]) -> None:
        """Point the model at buffers for a batch of ``input_shape`` (the model's layout).

        Checks the pointers and the shape (layout, 3 channels, batch and window within the
        factory's limits) before the backend sees them; the output shape follows from the
        model's scale and layout. Cheap to call every batch; a backend may cache.
        """
        self._live()
        in_ptr = _check_pointer("input_ptr", input_ptr)
        out_ptr = _check_pointer("output_ptr", output_ptr)
        shape = self.factory.check_shape(input_shape)
        self._bind(in_ptr, out_ptr, shape, self.factory.output_shape(shape))
        self._bound = (in_ptr, out_ptr, shape)

    def enqueue(self, stream: int) -> None:
        """Queue one model run on stream handle ``stream`` (0 on the host device).

        Device stages return without waiting; host stages compute before returning. Raises
        (:class:`~runtime.errors.UpscaleError` or a subclass) if the run cannot be queued.
        """
        self._live()
        if self._bound is None:
            raise UpscaleError(f"{self.factory.name} stage for slot {self.slot}: call bind() before enqueue()")
        if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)) or stream < 0:
            raise InvalidArgumentError(f"stream must be a stream handle (int >= 0), got {stream!r}")
        self._enqueue(int(stream))

    def close(self) -> None:
        """Release the slot's resources (execution context, session); idempotent."""
        if not self._closed:
            self._closed = True
            self._bound = None
            self._close()

    @abc.abstractmethod
    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        """Remember (or apply) validated buffers and shapes."""

    @abc.abstractmethod
    def _enqueue(self, stream: int) -> None:
        """Queue (device) or run (host) the model on the bound buffers."""

    def _close(self) -> None:
        """Release subclass resources (called once)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(slot={self.slot}, closed={self._closed})"


class StageFactory(Closing, abc.ABC):
    """What every backend gives the executor: model facts, limits, one stage per slot.

    Subclasses set :attr:`name`, ``self._info`` (and ``self._max_batch`` if limited) and
    implement :meth:`_new_stage` (and :meth:`_close` if they hold resources).
    """

    name: ClassVar[str] = "backend"
    memory: Memory = "device"
    """Where the bound pointers live; see the module docstring."""
    supports_cuda_graphs: bool = False
    """Whether a slot's copy-enqueue-copy may be captured into a CUDA graph."""
    activation_tensors: float = ACTIVATION_TENSORS
    """Output-resolution feature maps alive at once in one call, counted high: sizes the
    ``tile="auto"`` windows (:func:`runtime.upscaler.window_bytes_per_pixel`)."""

    _info: ModelInfo
    _max_batch: int = _NO_LIMIT
    _closed: bool = False

    # -- facts -------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        """Scale, I/O layout, tensor names, recommended halo (metadata or sidecar)."""
        return self._info

    @property
    def io(self) -> ModelIO:
        return self._info.io

    @property
    def scale(self) -> int:
        return self._info.scale

    @property
    def max_batch(self) -> int:
        """The most windows one ``enqueue`` may take (an engine profile's maximum)."""
        return self._max_batch

    @property
    def closed(self) -> bool:
        return self._closed

    def window_limits(self) -> tuple[int, int] | None:
        """``(min, max)`` spatial edge of an input window, or None if any size runs."""
        return None

    def check_shape(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        """``shape`` as a tuple, or :class:`InvalidArgumentError` unless this backend runs it."""
        try:
            dims = tuple(shape)
        except TypeError:
            dims = ()
        if len(dims) != 4 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims):
            raise InvalidArgumentError(f"input_shape must be 4 ints {self.io.shape_text}, got {shape!r}")
        shape = tuple(int(d) for d in dims)
        n, h, w = self.io.check_batch(shape, what="input_shape")
        if n > self.max_batch:
            raise InvalidArgumentError(f"a batch of {n} windows is more than {self.name}'s max_batch {self.max_batch}")
        limits = self.window_limits()
        if limits is not None and not (limits[0] <= h <= limits[1] and limits[0] <= w <= limits[1]):
            raise InvalidArgumentError(f"window {h}x{w} is outside {self.name}'s edge range {limits[0]}..{limits[1]}")
        return shape  # type: ignore[return-value]

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """The output shape the model gives for ``input_shape``."""
        return self.io.output_shape(tuple(input_shape), self.scale)

    # -- stages ------------------------------------------------------------------------
    def create_stage(self, slot: int) -> Stage:
        """A new stage for executor slot ``slot`` (its own context / session binding)."""
        if self._closed:
            raise UpscaleError(f"the {self.name} backend is closed; create a new one")
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or slot < 0:
            raise InvalidArgumentError(f"slot must be an integer >= 0, got {slot!r}")
        return self._new_stage(int(slot))

    @abc.abstractmethod
    def _new_stage(self, slot: int) -> Stage:
        """Make the stage for ``slot`` (arguments already checked)."""

    # -- resources ---------------------------------------------------------------------
    def close(self) -> None:
        """Release shared resources (engine, session, module); idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """Release subclass resources (called once)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(io={self.io.value!r}, scale={self.scale})"


def host_array(ptr: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A numpy view of ``shape`` × ``dtype`` at host address ``ptr`` (no copy)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    flat = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))
    return flat.view(dtype).reshape(shape)


class Backend(StageFactory):
    """A backend whose model is a function on numpy batches in host memory.

    Subclasses implement :meth:`_infer`; :meth:`infer` validates its input and result, and
    the executor runs it through a host stage that views the slot's buffers as arrays.
    ONNX Runtime on the CPU is one; a test model in numpy is another.
    """

    memory: Memory = "host"

    def __init__(self, info: ModelInfo) -> None:
        self._info = info
        self._closed = False

    @property
    def input_name(self) -> str:
        return self._info.input_name

    @property
    def output_name(self) -> str:
        return self._info.output_name

    @property
    def input_dtype(self) -> np.dtype:
        return self.io.dtype

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Upscale a batch of windows in the model's layout; returns the model's output.

        float32-nchw: ``[N,3,H,W]`` float32 in 0..255 → ``[N,3,sH,sW]`` float32 (not
        clipped). uint8-nhwc: ``[N,H,W,3]`` uint8 → ``[N,sH,sW,3]`` uint8.
        """
        if self._closed:
            raise UpscaleError(f"backend {self.name!r} is closed; create a new one")
        if not isinstance(batch, np.ndarray):
            raise InvalidArgumentError(f"batch must be a numpy array, got {type(batch).__name__}")
        if batch.dtype != self.io.dtype:
            raise InvalidArgumentError(
                f"batch dtype must be {self.io.dtype} for a {self.io.value} model, got {batch.dtype}"
            )
        self.check_shape(batch.shape)
        result = self._infer(batch)
        expected = self.output_shape(batch.shape)
        if not isinstance(result, np.ndarray) or result.shape != expected or result.dtype != self.io.dtype:
            got = f"{result.dtype} {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
            raise ModelError(
                f"backend {self.name!r}: model output {self.output_name!r} should be "
                f"{self.io.dtype} {expected} for a x{self.scale} {self.io.value} model, got "
                f"{got}; is the model's scale/io metadata right?"
            )
        return result

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a validated batch."""

    def _new_stage(self, slot: int) -> Stage:
        return _HostStage(self, slot)


class _HostStage(Stage):
    """Runs a :class:`Backend` synchronously on the host buffers the executor binds."""

    factory: Backend

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        dtype = self.factory.io.dtype
        self._x = host_array(input_ptr, dtype, input_shape)
        self._y = host_array(output_ptr, dtype, output_shape)

    def _enqueue(self, stream: int) -> None:
        self._y[...] = self.factory.infer(self._x)

    def _close(self) -> None:
        self.__dict__.pop("_x", None)  # the views die with the stage (a closed stage never enqueues)
        self.__dict__.pop("_y", None)

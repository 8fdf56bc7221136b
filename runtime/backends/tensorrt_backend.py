"""TensorRT compute stage for the pipelined CUDA executor (the contract: ``contract.py``).

``TensorRTStageFactory(engine_path)`` loads an engine built by ``export/to_trt.py``: it
reads the JSON sidecar, checks the engine was built for this TensorRT version and GPU
(naming both when not), deserialises it (``trt.Runtime(logger).deserialize_cuda_engine``)
and checks its I/O tensors against the model's contract. Each executor slot gets a
:class:`TensorRTStage` with its own ``IExecutionContext`` and its own optimisation profile
(the TensorRT developer guide: each execution context in concurrent use must use a
separate optimisation profile; ``export/to_trt.py --profiles N`` builds N identical ones).

The stage uses TensorRT's name-based API (TensorRT >= 8.5; the only one in 10.x and
11.x): ``set_optimization_profile_async(profile, stream)`` once, on the stream of the
first enqueue (the guide: the stream given should be the one used for the following
enqueueV3), then ``set_input_shape`` when the batch shape changes, ``set_tensor_address``
when a buffer changes, and ``execute_async_v3(stream)``. Every one of those returns a
bool, checked (STYLE.md item 6): a False becomes an exception that quotes TensorRT's
last logged errors.

One logger per process (:func:`trt_logger`). TensorRT keeps a single logger pointer: the
first ``trt.Builder``/``trt.Runtime`` fixes it and a second logger given to a later builder or
runtime is ignored (NVIDIA/TensorRT#1475), so per-object loggers would send the second
engine's errors to the first one's (or to a freed object). The one logger forwards to
:mod:`logging` and hands each message to the *captures* open on the thread that logged it
(:meth:`TrtLogger.capture`, one per build, deserialisation, context creation or enqueue), so
an exception quotes the errors of its own call; a message from one of TensorRT's own threads
(the builder's workers) goes to every open capture. Severity: a capture's ``severity`` (the
factory's ``log_severity``, the builder's INFO/WARNING) is the threshold for forwarding the
messages it receives to :mod:`logging` (the most verbose one wins when several receive a
message); messages outside any capture are forwarded from WARNING up. Errors are always
captured, whatever the threshold.

Device: ``device=N`` is the CUDA device the sidecar is checked against (its name and compute
capability, :func:`~runtime.trt_sidecar.query_gpu`) and the one made current
(:func:`select_device`, ``cudaSetDevice``) before the runtime deserialises the engine and
before each execution context is created: TensorRT puts both on the calling thread's current
device. The executor makes the same device current on the thread that enqueues.

CUDA graphs: the factory declares ``supports_cuda_graphs``. NVIDIA's developer guide ("CUDA
Graphs") asks for one ``execute_async_v3`` *without* capture after every input shape change
before capturing (the first enqueue after a shape change may do deferred, non-capturable
work); ``runtime/pipeline.py`` runs each new batch shape of a slot uncaptured once before it
captures that shape. A captured graph bakes the shape and the addresses in.

``tensorrt`` is imported lazily (``import runtime`` works without it); the helpers
:func:`import_tensorrt`, :func:`trt_logger` and :func:`create_trt_object` are shared with
``export/to_trt.py``. Checked against the real bindings of TensorRT 10.16 and 11.4 by
``tests/test_trt_conformance.py``; never run on a real GPU here.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import BackendUnavailableError, InvalidArgumentError, MissingDependencyError, ModelError, UpscaleError
from ..trt_sidecar import (
    EngineMismatchError,
    GpuInfo,
    GpuQueryError,
    check_compatible,
    model_info_from_sidecar,
    query_gpu,
    read_sidecar,
    sidecar_path,
    tf32_allowed,
)
from ..utils import check_int
from .contract import Stage, StageFactory

__all__ = [
    "TRT_INSTALL_HINT",
    "TensorRTStageFactory",
    "TensorRTStage",
    "import_tensorrt",
    "TRT_SEVERITIES",
    "TrtCapture",
    "trt_logger",
    "select_device",
    "create_trt_object",
    "describe_io_tensors",
]

log = logging.getLogger(__name__)

TRT_INSTALL_HINT = (
    "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12 "
    "(or tensorrt-cu13 for CUDA 13; TensorRT 10.x or 11.x)"
)


# --------------------------------------------------------------------------- shared helpers


def import_tensorrt(purpose: str = "the TensorRT backend") -> ModuleType:
    """``import tensorrt``, or :class:`MissingDependencyError` with the install command."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: tensorrt_libs could not dlopen a library
        raise MissingDependencyError(
            f"TensorRT is needed for {purpose} but cannot be imported ({exc}); install it with: {TRT_INSTALL_HINT}"
        ) from exc
    return tensorrt


TRT_SEVERITIES = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "VERBOSE": logging.DEBUG,
}
"""TensorRT's severities (``trt.ILogger.Severity`` names) → :mod:`logging` levels."""

_OUTSIDE_CAPTURE = logging.WARNING
_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()


def _level(severity: str, what: str = "log_severity") -> int:
    try:
        return TRT_SEVERITIES[str(severity).upper()]
    except KeyError:
        raise InvalidArgumentError(f"{what} must be one of {list(TRT_SEVERITIES)}, got {severity!r}") from None


class TrtCapture:
    """What TensorRT logged during one call: its errors, for that call's exception."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.errors: collections.deque[str] = collections.deque(maxlen=20)

    def text(self) -> str:
        """The errors, ' | '-joined ('' if none)."""
        return " | ".join(self.errors)

    def said(self) -> str:
        """'; TensorRT said: ...' with the errors, or ''."""
        return f"; TensorRT said: {self.text()}" if self.errors else ""


def trt_logger(trt: ModuleType) -> Any:
    """The process's one ``trt.ILogger`` (created on first use; thread-safe), given to every
    ``trt.Builder``, ``trt.Runtime`` and ``trt.OnnxParser``; see the module docstring.

    It has :meth:`capture` (a context manager yielding a :class:`TrtCapture`) and ``errors()``
    (the last errors logged in the process, for messages outside any capture). The class is
    defined here because its base comes from the lazily imported module; the object lives as
    long as the process, as TensorRT's raw pointer to it requires.
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is not None and isinstance(_LOGGER, trt.ILogger):
            return _LOGGER
        severity = trt.ILogger.Severity
        levels = {getattr(severity, name): level for name, level in TRT_SEVERITIES.items()}

        class TrtLogger(trt.ILogger):  # type: ignore[name-defined]  # base from the lazily imported module
            def __init__(self) -> None:
                trt.ILogger.__init__(self)  # pybind11 trampoline: the base must be initialised
                self._lock = threading.Lock()
                self._captures: dict[int, list[TrtCapture]] = {}
                self._errors: collections.deque[str] = collections.deque(maxlen=20)

            def log(self, sev: Any, msg: str) -> None:
                level = levels.get(sev, logging.ERROR)
                with self._lock:
                    mine = self._captures.get(threading.get_ident())
                    targets = list(mine) if mine else [c for caps in self._captures.values() for c in caps]
                    if level >= logging.ERROR:
                        self._errors.append(msg)
                        for capture in targets:
                            capture.errors.append(msg)
                threshold = min((c.level for c in targets), default=_OUTSIDE_CAPTURE)
                if level >= threshold:
                    log.log(level, "TensorRT: %s", msg)

            @contextlib.contextmanager
            def capture(self, severity: str = "WARNING") -> Iterator[TrtCapture]:
                """Collect what TensorRT logs on this thread (and from its own threads) until exit."""
                cap = TrtCapture(_level(severity))
                ident = threading.get_ident()
                with self._lock:
                    self._captures.setdefault(ident, []).append(cap)
                try:
                    yield cap
                finally:
                    with self._lock:
                        caps = self._captures[ident]
                        caps.remove(cap)
                        if not caps:
                            del self._captures[ident]

            def errors(self) -> str:
                """The last errors TensorRT logged in this process ('' if none)."""
                return " | ".join(self._errors)

        _LOGGER = TrtLogger()
        return _LOGGER


def select_device(device: int) -> None:
    """Make CUDA device ``device`` current on the calling thread (``cudaSetDevice``): TensorRT
    deserialises an engine and creates execution contexts on the current device."""
    from ..cuda.api import call, cudart

    call(cudart().cudaSetDevice, device)


def create_trt_object(factory: Callable[[Any], Any], logger: Any, what: str) -> Any:
    """``factory(logger)`` (``trt.Builder`` or ``trt.Runtime``) with a clear error when it fails.

    When TensorRT cannot start (no GPU, no driver, CUDA/TensorRT mismatch) its C++ factory
    returns NULL, which the Python bindings surface as ``TypeError: pybind11::init():
    factory function returned nullptr``; that becomes :class:`BackendUnavailableError`.
    """
    with logger.capture() as cap:
        try:
            return factory(logger)
        except TypeError as exc:
            if "nullptr" not in str(exc):
                raise
            said = cap.text() or "nothing"
            raise BackendUnavailableError(
                f"TensorRT could not create its {what}: is there a CUDA GPU with a working driver, "
                f"and does the installed TensorRT match the CUDA version? (TensorRT said: {said})"
            ) from exc


def _enum_name(value: Any) -> str:
    return getattr(value, "name", None) or str(value).rpartition(".")[2]


def describe_io_tensors(engine: Any) -> list[dict[str, Any]]:
    """Name, mode, dtype, shape (-1 = dynamic) and memory format of each engine I/O tensor,
    from ``num_io_tensors``/``get_tensor_name``/``get_tensor_mode``/``get_tensor_dtype``/
    ``get_tensor_shape``/``get_tensor_format``/``get_tensor_format_desc``."""
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        tensors.append(
            {
                "name": name,
                "mode": _enum_name(engine.get_tensor_mode(name)).lower(),
                "dtype": _enum_name(engine.get_tensor_dtype(name)),
                "shape": [int(d) for d in engine.get_tensor_shape(name)],
                "format": _enum_name(engine.get_tensor_format(name)),
                "format_desc": str(engine.get_tensor_format_desc(name)),
            }
        )
    return tensors


def profile_shapes(engine: Any, input_name: str) -> list[dict[str, list[int]]]:
    """``[{"min", "opt", "max"}]`` of ``input_name`` for each optimisation profile."""
    out = []
    for index in range(engine.num_optimization_profiles):
        lo, opt, hi = engine.get_tensor_profile_shape(input_name, index)
        out.append({"min": [int(d) for d in lo], "opt": [int(d) for d in opt], "max": [int(d) for d in hi]})
    return out


# --------------------------------------------------------------------------- the stage


class TensorRTStage(Stage):
    """One slot's TensorRT execution context, bound to optimisation profile ``slot``.

    :meth:`bind` (the contract's checks, then the engine profile's) only remembers the
    buffers: TensorRT is told at the next :meth:`enqueue`, which knows the stream.
    """

    factory: TensorRTStageFactory

    def __init__(self, factory: TensorRTStageFactory, context: Any, slot: int) -> None:
        super().__init__(factory, slot)
        self._context = context
        self.profile = slot  # one profile per concurrent context
        self._pending: tuple[int, int, tuple[int, int, int, int]] | None = None
        self._profile_set = False
        self._shape: tuple[int, ...] | None = None
        self._input_ptr: int | None = None
        self._output_ptr: int | None = None

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        self._pending = (input_ptr, output_ptr, input_shape)

    def _enqueue(self, stream: int) -> None:
        """Queue one run on ``stream`` (``execute_async_v3``); raises if TensorRT refuses,
        quoting what TensorRT logged during this call (its own capture of the one logger)."""
        with self.factory._logger.capture(self.factory.log_severity) as cap:
            self._enqueue_captured(stream, cap)

    def _enqueue_captured(self, stream: int, cap: TrtCapture) -> None:
        ctx = self._context
        assert self._pending is not None  # Stage.enqueue checked bind() ran
        input_ptr, output_ptr, shape = self._pending
        factory = self.factory
        if not self._profile_set:
            if not ctx.set_optimization_profile_async(self.profile, stream):
                raise UpscaleError(
                    f"TensorRT could not select optimisation profile {self.profile} for slot {self.slot}{cap.said()}"
                )
            self._profile_set = True  # a profile switch invalidates shapes and addresses
            self._shape = self._input_ptr = self._output_ptr = None
        if shape != self._shape:
            if not ctx.set_input_shape(factory.info.input_name, shape):
                raise InvalidArgumentError(
                    f"TensorRT rejected input shape {shape} for {factory.engine_path} (profile "
                    f"{self.profile} admits {factory.profiles[self.profile]}){cap.said()}"
                )
            got = tuple(int(d) for d in ctx.get_tensor_shape(factory.info.output_name))
            expected = factory.output_shape(shape)
            if got != expected:
                raise ModelError(
                    f"{factory.engine_path}: output {factory.info.output_name!r} would be {got} for input "
                    f"{shape}, expected {expected} (x{factory.info.scale} {factory.info.io.value}); is the "
                    "model's scale/io metadata right?"
                )
            self._shape = shape
        for name, ptr, attr in (
            (factory.info.input_name, input_ptr, "_input_ptr"),
            (factory.info.output_name, output_ptr, "_output_ptr"),
        ):
            if getattr(self, attr) != ptr:
                if not ctx.set_tensor_address(name, ptr):
                    raise UpscaleError(f"TensorRT refused the address of tensor {name!r}{cap.said()}")
                setattr(self, attr, ptr)
        if not ctx.execute_async_v3(stream):
            raise UpscaleError(
                f"TensorRT could not enqueue {factory.engine_path} on stream {stream:#x} "
                f"(execute_async_v3 returned False){cap.said()}"
            )

    def _close(self) -> None:
        """Release the execution context (TensorRT frees it with its last reference)."""
        self._context = None
        self._pending = None
        self.factory._forget(self)

    def __repr__(self) -> str:
        return f"TensorRTStage(slot={self.slot}, profile={self.profile}, closed={self.closed})"


class TensorRTStageFactory(StageFactory):
    """The TensorRT engine as a :class:`~runtime.backends.contract.StageFactory`.

    ``engine_path``: a plan written by ``export/to_trt.py`` (its sidecar
    ``<engine>.json`` beside it). ``device``: the CUDA device whose GPU (name and compute
    capability) is compared with the one the engine was built for, and on which the engine
    and every execution context are made. ``strict_gpu=False`` turns a different GPU model
    with the same compute capability into a warning. ``scale``, when given, must match.
    ``log_severity``: the threshold for forwarding what TensorRT logs during this factory's
    calls to :mod:`logging` (errors are always quoted in exceptions; see the module docstring).
    Raises :class:`~runtime.errors.MissingDependencyError` (no TensorRT),
    :class:`~runtime.errors.BackendUnavailableError` (TensorRT cannot start: no GPU),
    :class:`~runtime.trt_sidecar.EngineMismatchError` (other TensorRT/GPU) or
    :class:`~runtime.errors.ModelError` (bad engine, sidecar or I/O).
    """

    name = "tensorrt"
    supports_cuda_graphs = True
    """One uncaptured ``execute_async_v3`` after every shape change, then capture (module docstring)."""

    def __init__(
        self,
        engine_path: str | os.PathLike[str],
        *,
        device: int = 0,
        scale: int | None = None,
        strict_gpu: bool = True,
        log_severity: str = "WARNING",
    ) -> None:
        self.engine_path = Path(engine_path)
        self.device = check_int("device", device, 0)
        _level(log_severity)
        self.log_severity = str(log_severity).upper()
        self._stages: list[TensorRTStage] = []
        self._closed = False
        self._engine: Any = None
        self._runtime: Any = None
        path = self.engine_path
        if not path.is_file():
            raise ModelError(f"{path}: no such TensorRT engine file; build one with export/to_trt.py")
        self.sidecar = read_sidecar(sidecar_path(path))
        plan = path.read_bytes()
        if hashlib.sha256(plan).hexdigest() != self.sidecar["engine_sha256"]:
            raise EngineMismatchError(
                f"{path}: the engine does not match its sidecar {sidecar_path(path).name} (SHA-256 "
                "differs; one of them was replaced); rebuild both with export/to_trt.py"
            )
        self._info = model_info_from_sidecar(self.sidecar, engine=str(path), scale=scale)

        self.allow_tf32 = tf32_allowed(self.sidecar)
        """Whether the engine's float32 layers may run in TF32 (for results files)."""

        trt = import_tensorrt("the TensorRT backend")
        try:
            gpu: GpuInfo | None = query_gpu(self.device)
        except GpuQueryError as exc:
            log.warning("%s", exc)
            gpu = None
        check_compatible(self.sidecar, engine=str(path), trt_version=trt.__version__, gpu=gpu, strict_gpu=strict_gpu)

        self._trt = trt
        self._logger = trt_logger(trt)
        select_device(self.device)  # the engine lives on the current device
        self._runtime = create_trt_object(trt.Runtime, self._logger, "runtime")
        with self._logger.capture(self.log_severity) as cap:
            engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelError(f"{path}: TensorRT could not deserialise the engine{cap.said()}")
        self._engine = engine
        self.io_tensors = describe_io_tensors(engine)
        self._check_io()
        self.profiles = profile_shapes(engine, self._info.input_name)
        if not self.profiles:
            raise ModelError(f"{path}: the engine has no optimisation profile")
        self._limits()

    # -- checks ------------------------------------------------------------------------
    def _check_io(self) -> None:
        info, path = self._info, self.engine_path
        inputs = [t for t in self.io_tensors if t["mode"] == "input"]
        outputs = [t for t in self.io_tensors if t["mode"] == "output"]
        names = f"inputs {[t['name'] for t in inputs]}, outputs {[t['name'] for t in outputs]}"
        if [t["name"] for t in inputs] != [info.input_name] or [t["name"] for t in outputs] != [info.output_name]:
            raise ModelError(
                f"{path}: engine has {names}; the model metadata expects one input {info.input_name!r} "
                f"and one output {info.output_name!r}"
            )
        want = info.io.trt_dtype
        for t in inputs + outputs:
            if t["dtype"] != want or len(t["shape"]) != 4:
                raise ModelError(
                    f"{path}: tensor {t['name']!r} is {t['dtype']} rank {len(t['shape'])}, but a "
                    f"{info.io.value} model needs {want} rank 4"
                )
            if t["format"] != "LINEAR":
                raise ModelError(
                    f"{path}: tensor {t['name']!r} has memory format {t['format']} ({t['format_desc']}); the "
                    "executor passes contiguous row-major (LINEAR) buffers: rebuild with export/to_trt.py"
                )

    def _limits(self) -> None:
        lo_axes = self._info.io.spatial_axes
        self._max_batch = min(p["max"][0] for p in self.profiles)
        self._min_batch = max(p["min"][0] for p in self.profiles)
        self._min_edge = max(p["min"][a] for p in self.profiles for a in lo_axes)
        self._max_edge = min(p["max"][a] for p in self.profiles for a in lo_axes)
        if self._min_batch > self._max_batch or self._min_edge > self._max_edge:
            raise ModelError(f"{self.engine_path}: its optimisation profiles do not overlap: {self.profiles}")

    def check_shape(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        """``shape`` as a tuple, or :class:`InvalidArgumentError` unless every profile runs it."""
        io = self._info.io
        if len(shape) != 4 or any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
            raise InvalidArgumentError(f"input_shape must be 4 ints {io.shape_text}, got {tuple(shape)!r}")
        h_axis, w_axis = io.spatial_axes
        if shape[io.channel_axis] != 3:
            raise InvalidArgumentError(f"input_shape must be {io.shape_text} with 3 channels, got {tuple(shape)}")
        if not self._min_batch <= shape[0] <= self._max_batch:
            raise InvalidArgumentError(
                f"batch of {shape[0]} windows is outside {self.engine_path.name}'s profile "
                f"{self._min_batch}..{self._max_batch}; rebuild with export/to_trt.py --batch"
            )
        for axis in (h_axis, w_axis):
            if not self._min_edge <= shape[axis] <= self._max_edge:
                raise InvalidArgumentError(
                    f"window {shape[h_axis]}x{shape[w_axis]} is outside {self.engine_path.name}'s profile "
                    f"edge range {self._min_edge}..{self._max_edge}; use a smaller tile/halo or rebuild "
                    "with export/to_trt.py --tile/--halo/--min-window"
                )
        return tuple(shape)  # type: ignore[return-value]

    # -- StageFactory --------------------------------------------------------------------
    @property
    def num_profiles(self) -> int:
        """Optimisation profiles in the engine = most slots that can run concurrently."""
        return len(self.profiles)

    def window_limits(self) -> tuple[int, int] | None:
        return (self._min_edge, self._max_edge)

    def _new_stage(self, slot: int) -> TensorRTStage:
        """A stage with its own execution context, bound to profile ``slot``."""
        if not 0 <= slot < self.num_profiles:
            raise InvalidArgumentError(
                f"slot {slot!r}: {self.engine_path.name} has {self.num_profiles} optimisation profiles, "
                f"so slots 0..{self.num_profiles - 1} (each concurrent TensorRT context needs its own "
                "profile); use fewer slots or rebuild with export/to_trt.py --profiles N"
            )
        if any(s.slot == slot for s in self._stages):
            raise InvalidArgumentError(f"slot {slot} already has an open TensorRT stage; close it first")
        select_device(self.device)  # the context's memory goes on the current device
        with self._logger.capture(self.log_severity) as cap:
            context = self._engine.create_execution_context()
        if context is None:
            raise UpscaleError(
                f"TensorRT could not create an execution context for {self.engine_path} (out of GPU "
                f"memory?){cap.said()}"
            )
        stage = TensorRTStage(self, context, slot)
        self._stages.append(stage)
        return stage

    def _forget(self, stage: TensorRTStage) -> None:
        if stage in self._stages:
            self._stages.remove(stage)

    def _close(self) -> None:
        """Close every stage, then release the engine and runtime (contexts go first)."""
        for stage in list(self._stages):
            stage.close()
        self._engine = None
        self._runtime = None

    def __repr__(self) -> str:
        return (
            f"TensorRTStageFactory({str(self.engine_path)!r}, io={self._info.io.value!r}, "
            f"scale={self._info.scale}, profiles={len(self.profiles)})"
        )

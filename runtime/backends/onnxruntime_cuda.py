"""ONNX Runtime CUDA compute stage: an ONNX model on the executor's device buffers and stream.

Each slot gets its own ``InferenceSession`` with the CUDA execution provider and the slot's
stream as its compute stream (provider option ``user_compute_stream``), and an IOBinding of
the input and output names to the slot's device buffers (``bind_input``/``bind_output``
with ``device_type='cuda'``, the buffer pointer, element type and shape). ``enqueue`` calls
``run_with_iobinding`` with the run option ``disable_synchronize_execution_providers=1`` so
the call returns once the kernels are queued, and the executor's event after the D2H copy
is the only wait.

Cost of one session per slot: ONNX Runtime fixes the compute stream when a session is
created, so the weights (a few MB for EUSR) and ONNX Runtime's CUDA memory arena are held
once per slot, and every slot pays the session start-up (graph optimisation, cuDNN
algorithm search on first run per shape). A stage creates its session on its first
``enqueue``, when it learns the stream.

Session settings (:func:`cuda_provider_options`, :func:`session_options`): ``use_tf32=0``
unless ``allow_tf32`` (ONNX Runtime's CUDA provider uses TF32 by default, and float32 should
mean float32); ``cudnn_conv_algo_search=HEURISTIC`` (the default EXHAUSTIVE benchmarks every
convolution algorithm per shape, in every slot's session; ``provider_options`` may ask for
it); ``intra_op_num_threads=1``, so three slots do not spin three CPU thread pools for
the few ops that run on the CPU.

ONNX Runtime falls back to the CPU without an error when the CUDA provider cannot load
(cuDNN or cuBLAS missing, a CUDA version mismatch): ``get_available_providers()`` only says
how the wheel was built. So every session's ``get_providers()`` is checked, and a session
that does not run on the requested provider first raises
:class:`~runtime.errors.BackendUnavailableError` with what ONNX Runtime said (its Python
warnings and its native log, captured while the session is created). The factory creates
one such probe session at construction, so the failure comes when the backend is chosen,
not at the first image.

``provider="CPUExecutionProvider"`` runs the same IOBinding code on host memory (synchronous,
no stream; ``memory == "host"``): with ``runtime.testing.DeferredStageFactory`` on the
emulated device that is how CI tests it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, InvalidArgumentError, UpscaleError
from ..utils import check_int
from .contract import Memory, Stage, StageFactory
from .onnxruntime_backend import OnnxRuntimeBackend, import_onnxruntime

__all__ = [
    "OrtCudaStageFactory",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_CUDA_OPTIONS",
    "SESSION_THREADS",
    "cuda_provider_options",
    "session_options",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64

_PROVIDERS = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}

DEFAULT_CUDA_OPTIONS: Mapping[str, str] = {"cudnn_conv_algo_search": "HEURISTIC"}
"""CUDA provider options the factory starts from; ``provider_options`` override them."""

SESSION_THREADS = 1
"""``intra_op_num_threads`` of every session: the GPU computes, one thread feeds it."""

_OWN_OPTIONS = {
    "device_id": "device=",
    "use_tf32": "allow_tf32=",
    "user_compute_stream": "the executor (each slot's stream)",
    "has_user_compute_stream": "the executor (each slot's stream)",
}
"""CUDA provider options the factory sets from its own arguments, and which argument."""


def cuda_provider_options(
    device_id: int, stream: int, *, allow_tf32: bool, provider_options: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The CUDA provider's options for a session on GPU ``device_id`` computing on ``stream``
    (0: ONNX Runtime's own stream): :data:`DEFAULT_CUDA_OPTIONS`, then ``provider_options``,
    then the device, TF32 and the stream."""
    options = {**DEFAULT_CUDA_OPTIONS, **{str(k): str(v) for k, v in (provider_options or {}).items()}}
    options["device_id"] = str(device_id)
    options["use_tf32"] = "1" if allow_tf32 else "0"
    if stream:
        options["user_compute_stream"] = str(stream)
    return options


def session_options(ort: Any, provider: str) -> Any:
    """``SessionOptions`` of every session: :data:`SESSION_THREADS` intra-op threads (and no
    CPU memory arena on the CPU provider, whose buffers are the executor's)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = SESSION_THREADS
    if provider == "CPUExecutionProvider":
        options.enable_cpu_mem_arena = False
    return options


@contextlib.contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Collect what native code writes to file descriptor 2 in the block into ``lines``.

    ONNX Runtime's C++ logger writes there (why a provider library did not load). The
    text is written to the real stderr afterwards as well, so nothing is hidden. Where
    descriptor 2 cannot be redirected, nothing is collected.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            data = sink.read()
            if data:
                os.write(2, data)
                lines.extend(line for line in data.decode(errors="replace").splitlines() if line.strip())


class _OrtMessages:
    """ONNX Runtime's Python warnings and native log while a session is created.

    ``text``: all of it in one line for an error message. Unless the caller raises with it,
    :meth:`replay` passes the warnings on as they came.
    """

    def __init__(self) -> None:
        self.native: list[str] = []
        self.warnings: list[warnings.WarningMessage] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _OrtMessages:
        self.warnings = self._stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        self._stack.enter_context(_native_stderr(self.native))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def text(self) -> str:
        said = [str(w.message) for w in self.warnings] + self.native
        return " | ".join(" ".join(line.split()) for line in said)

    def replay(self) -> None:
        for w in self.warnings:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


class OrtCudaStageFactory(StageFactory):
    """Stages running an ONNX model with ONNX Runtime's CUDA provider through IOBinding.

    ``provider_options`` are added to the CUDA provider's options, over
    :data:`DEFAULT_CUDA_OPTIONS` (e.g. ``{"cudnn_conv_algo_search": "EXHAUSTIVE"}``);
    ``scale`` is needed only for models without the exporter's metadata; ``device`` is the
    GPU index; ``allow_tf32`` lets the CUDA provider use TF32 (``use_tf32``). Raises
    :class:`BackendUnavailableError` when the provider is missing from this onnxruntime or
    does not start (see the module docstring).
    """

    name = "onnxruntime-cuda"

    supports_cuda_graphs = False  # ONNX Runtime has its own graph capture (enable_cuda_graph)

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        device: int = 0,
        provider_options: Mapping[str, Any] | None = None,
        scale: int | None = None,
        allow_tf32: bool = False,
        provider: str = "CUDAExecutionProvider",
    ) -> None:
        ort = import_onnxruntime()
        self.ort = ort
        if not isinstance(allow_tf32, bool):
            raise InvalidArgumentError(f"allow_tf32 must be True or False, got {allow_tf32!r}")
        self.allow_tf32 = allow_tf32
        if provider not in _PROVIDERS:
            raise InvalidArgumentError(f"provider must be one of {list(_PROVIDERS)}, got {provider!r}")
        available = ort.get_available_providers()
        if provider not in available:
            raise BackendUnavailableError(
                f"backend 'onnxruntime-cuda' needs ONNX Runtime's {provider}, but this onnxruntime "
                f"{ort.__version__} offers {available}; install onnxruntime-gpu (instead of onnxruntime) "
                "or use backend='onnxruntime' on the CPU"
            )
        self.provider = provider
        self.device_type = _PROVIDERS[provider]
        self.memory: Memory = "device" if self.device_type == "cuda" else "host"
        self.device_id = check_int("device", device, 0)
        self._max_batch = check_int("max_batch", max_batch, 1)
        self.provider_options = dict(provider_options or {})
        taken = sorted(set(map(str, self.provider_options)) & set(_OWN_OPTIONS))
        if taken:
            raise InvalidArgumentError(
                f"provider_options must not set {taken}: "
                + "; ".join(f"{key} comes from {_OWN_OPTIONS[key]}" for key in taken)
            )
        self.model_path = Path(model_path)
        # Model facts (metadata, names, I/O) from a CPU session, with the same checks and
        # messages as the sequential backend.
        with OnnxRuntimeBackend(self.model_path, scale=scale) as probe:
            self._info = probe.info
        self._closed = False
        self.sessions_created = 0
        if self.device_type == "cuda":
            # a probe, so a CUDA provider that does not start fails here, where backend
            # choice happens, not at the first image (the slots' sessions need their streams)
            self.new_session(0)
        log.info(
            "onnxruntime-cuda: %s (%s, x%d) on %s:%d",
            self.model_path.name,
            self._info.io.value,
            self._info.scale,
            self.device_type,
            self.device_id,
        )

    def _new_stage(self, slot: int) -> _OrtStage:
        return _OrtStage(self, slot)

    def session_settings(self, stream: int) -> tuple[Any, list[Any]]:
        """``(SessionOptions, providers)`` for a session computing on ``stream``."""
        if self.provider == "CUDAExecutionProvider":
            cuda = cuda_provider_options(
                self.device_id, stream, allow_tf32=self.allow_tf32, provider_options=self.provider_options
            )
            providers: list[Any] = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        return session_options(self.ort, self.provider), providers

    def new_session(self, stream: int) -> Any:
        """A session computing on CUDA stream handle ``stream`` (0 / CPU: ONNX Runtime's own).

        Raises :class:`BackendUnavailableError` with ONNX Runtime's words when the session
        does not run on the requested provider first (ONNX Runtime fell back to the CPU).
        """
        options, providers = self.session_settings(stream)
        with _OrtMessages() as said:
            try:
                # enable_fallback=0: a provider that fails to start raises instead of ONNX
                # Runtime retrying on the CPU (older versions ignore it; the check below stays)
                session = self.ort.InferenceSession(
                    str(self.model_path), sess_options=options, providers=providers, enable_fallback=0
                )
            except Exception as exc:
                error = BackendUnavailableError if self.device_type == "cuda" else UpscaleError
                raise error(
                    f"{self.model_path}: ONNX Runtime cannot create a {self.provider} session ({exc})"
                    + (f"; ONNX Runtime said: {said.text}" if said.text else "")
                ) from exc
        running = list(session.get_providers())
        if not running or running[0] != self.provider:
            raise BackendUnavailableError(
                f"backend 'onnxruntime-cuda': ONNX Runtime {self.ort.__version__} did not start {self.provider} "
                f"for {self.model_path.name} (the session runs on {running}); ONNX Runtime said: "
                f"{said.text or 'nothing (raise its log level with onnxruntime.set_default_logger_severity(0))'}. "
                "Check that the CUDA and cuDNN libraries onnxruntime-gpu needs are installed and found, "
                "or use backend='onnxruntime'"
            )
        said.replay()
        self.sessions_created += 1
        return session

    def __repr__(self) -> str:
        return f"OrtCudaStageFactory({self.model_path.name!r}, {self._info.io.value}, {self.provider})"


class _OrtStage(Stage):
    """One slot: a session on the slot's stream and an IOBinding to the slot's buffers."""

    factory: OrtCudaStageFactory

    def __init__(self, factory: OrtCudaStageFactory, slot: int) -> None:
        super().__init__(factory, slot)
        self._session: Any = None
        self._binding: Any = None
        self._stream: int | None = None
        self._buffers: tuple[int, int, tuple[int, ...], tuple[int, ...]] | None = None
        self._applied = False
        self._run_options = factory.ort.RunOptions()
        # Return once the kernels are queued: the executor waits on its own event.
        self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        self._buffers = (input_ptr, output_ptr, input_shape, output_shape)
        self._applied = False

    def _apply_binding(self) -> None:
        factory = self.factory
        info = factory.info
        assert self._buffers is not None  # bind() ran: Stage.enqueue checks it
        in_ptr, out_ptr, in_shape, out_shape = self._buffers
        dtype = info.io.dtype.type
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_input(info.input_name, factory.device_type, factory.device_id, dtype, list(in_shape), in_ptr)
        binding.bind_output(info.output_name, factory.device_type, factory.device_id, dtype, list(out_shape), out_ptr)
        self._applied = True

    def _enqueue(self, stream: int) -> None:
        on_cuda = self.factory.device_type == "cuda"
        if self._session is None or (self._stream != stream and on_cuda):
            if self._session is not None:
                log.warning("slot %d: stream changed, creating a new ONNX Runtime session", self.slot)
            self._session = self.factory.new_session(stream if on_cuda else 0)
            self._binding = self._session.io_binding()
            self._stream = stream
            self._applied = False
        if not self._applied:
            self._apply_binding()
        try:
            self._session.run_with_iobinding(self._binding, self._run_options)
        except Exception as exc:
            raise UpscaleError(f"onnxruntime-cuda stage (slot {self.slot}): run failed ({exc})") from exc

    def _close(self) -> None:
        self._binding = None
        self._session = None

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

``provider="CPUExecutionProvider"`` runs the same IOBinding code on host memory (synchronous,
no stream; ``memory == "host"``): with ``runtime.testing.DeferredStageFactory`` on the
emulated device that is how CI tests it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, InvalidArgumentError, UpscaleError
from ..utils import check_int
from .contract import Memory, Stage, StageFactory
from .onnxruntime_backend import OnnxRuntimeBackend, import_onnxruntime

__all__ = ["OrtCudaStageFactory", "DEFAULT_MAX_BATCH"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64

_PROVIDERS = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


class OrtCudaStageFactory(StageFactory):
    """Stages running an ONNX model with ONNX Runtime's CUDA provider through IOBinding.

    ``provider_options`` are added to the CUDA provider's options (e.g.
    ``{"cudnn_conv_algo_search": "HEURISTIC"}``); ``scale`` is needed only for models
    without the exporter's metadata; ``device`` is the GPU index.
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
        self.model_path = Path(model_path)
        # Model facts (metadata, names, I/O) from a CPU session, with the same checks and
        # messages as the sequential backend.
        with OnnxRuntimeBackend(self.model_path, scale=scale) as probe:
            self._info = probe.info
        self._closed = False
        self.sessions_created = 0
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

    def new_session(self, stream: int) -> Any:
        """A session computing on CUDA stream handle ``stream`` (0 / CPU: ONNX Runtime's own)."""
        ort = self.ort
        options = ort.SessionOptions()
        if self.provider == "CUDAExecutionProvider":
            cuda = {"device_id": str(self.device_id), **{k: str(v) for k, v in self.provider_options.items()}}
            if stream:
                cuda["user_compute_stream"] = str(stream)
            providers: list[Any] = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
        else:
            options.enable_cpu_mem_arena = False
            providers = ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        except Exception as exc:
            raise UpscaleError(
                f"{self.model_path}: ONNX Runtime cannot create a {self.provider} session ({exc})"
            ) from exc
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

"""PyTorch CUDA compute stage: the EUSR module itself as the pipelined executor's model.

This is what runs the whole CUDA pipeline (pinned buffers, streams, async copies, events,
stitching) on a GPU machine without TensorRT, and what parity and throughput of the
pipeline are measured with. Per slot, the stage wraps the executor's device buffers as
tensors without copying (``__cuda_array_interface__``), runs the module on the slot's
stream (``torch.cuda.ExternalStream``) and writes the result into the output buffer with
``copy_`` (which also casts fp16 → float32 and channels-last → the buffer's layout).

* ``io="float32-nchw"``: the buffers hold float32 ``[N,3,H,W]`` in 0..255, the output is not
  clipped (like the exported ONNX model).
* ``io="uint8-nhwc"``: uint8 ``[N,H,W,3]`` in and out, a quarter of the transfer bytes; the
  cast, rounding (half to even, as ONNX Round) and clamping run on the GPU, exactly as in
  ``export/onnx_io.Uint8NHWC``. An NHWC buffer viewed as NCHW is already channels-last.
* ``fp16=True``: ``module.half()``, inputs cast to half at the start and the result cast
  back to the buffer's dtype at the end.
* float32 means float32: TF32 (10-bit mantissas in cuDNN convolutions and cuBLAS matmuls,
  on by default in PyTorch's cuDNN) is off unless ``allow_tf32=True``. TF32 and
  ``cudnn.benchmark`` are process-wide torch settings, so the stage sets them only around
  its own forward pass (:func:`tf32_scope`) and gives the caller's values back after each
  enqueue.
* Device ``cuda:N``: set-up and every enqueue run with GPU N current, the slot's stream is
  ``ExternalStream(handle, device=N)``, and the buffers are wrapped in place: a buffer that
  is not on GPU N is refused rather than silently copied. The module's set-up (weights to
  the GPU, ``half()``, ``channels_last``) runs on torch's legacy stream, which the slots'
  non-blocking streams do not wait for, so set-up ends with a device synchronise.

torch is imported when a factory is created. ``device="cpu"`` runs the same code on the
CPU (tensors over host pointers, no streams; ``memory == "host"``), for tests with the
emulated device.

The runtime never imports the training code: a checkpoint path is turned into a module by a
loader registered under the ``fourpp_eusr.model_loaders`` entry point for its suffix (the
project's ``train`` package registers ``.safetensors`` -> ``train.checkpoint:load_model``),
or the caller passes the ``nn.Module`` itself.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from .._deps import require
from ..errors import BackendUnavailableError, InvalidArgumentError, ModelError, UpscaleError
from ..layout import ModelIO
from ..model_info import ModelInfo
from ..utils import check_int
from .contract import Memory, Stage, StageFactory, host_array

__all__ = ["TorchCudaStageFactory", "DEFAULT_MAX_BATCH", "LOADER_GROUP", "find_loader", "tf32_scope"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64

LOADER_GROUP = "fourpp_eusr.model_loaders"
"""Entry-point group: name = a checkpoint suffix without the dot, value = ``module:function``
taking ``(path, *, weights=)`` and returning an ``nn.Module``."""


def find_loader(suffix: str) -> Callable[..., Any] | None:
    """The registered checkpoint loader for ``suffix`` (e.g. ``".safetensors"``), or None."""
    name = suffix.lower().lstrip(".")
    for entry in metadata.entry_points(group=LOADER_GROUP):
        if entry.name == name:
            loader: Callable[..., Any] = entry.load()
            return loader
    return None


def _import_torch() -> Any:
    return require(
        "torch",
        pip="torch  (a CUDA build for your CUDA version, see pytorch.org)",
        purpose="the 'torch-cuda' backend",
        error=BackendUnavailableError,
    )


@contextlib.contextmanager
def tf32_scope(torch: Any, allow_tf32: bool, *, legacy: bool | None = None) -> Iterator[None]:
    """TF32 in cuDNN convolutions and cuBLAS matmuls on (``allow_tf32``) or off (IEEE float32)
    inside the block; the caller's settings come back afterwards, also on an error.

    torch reads these settings when an op is dispatched on the host, so a block around a
    forward pass decides every kernel it queues. They are process-wide, not per thread:
    torch work on another thread during the block sees the block's setting. torch >= 2.9
    has ``fp32_precision`` per backend and operation (the old ``allow_tf32`` flags are
    being deprecated, and mixing the two APIs can leave the old getters raising), so that
    API is used where it exists (``legacy=None``); ``legacy=True`` forces the old flags.
    """
    backends = torch.backends
    if legacy is None:
        legacy = not hasattr(getattr(backends.cudnn, "conv", None), "fp32_precision")
    if legacy:
        saved_flags = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
        backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
        try:
            yield
        finally:
            backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved_flags
        return
    # conv and rnn together: the old cudnn.allow_tf32 getter raises while they differ
    targets = (backends.cudnn.conv, backends.cudnn.rnn, backends.cuda.matmul)
    saved = [t.fp32_precision for t in targets]
    want = "tf32" if allow_tf32 else "ieee"
    for target in targets:
        target.fp32_precision = want
    try:
        yield
    finally:
        for target, value in zip(targets, saved):
            target.fp32_precision = value


@contextlib.contextmanager
def _cudnn_benchmark(torch: Any, enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` for the block (process-wide, like TF32)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class TorchCudaStageFactory(StageFactory):
    """Stages running an EUSR checkpoint (or any ×scale module) with PyTorch on a GPU.

    ``model``: an EUSR ``.safetensors`` checkpoint (read by the registered loader, moving
    average weights when present) or an ``nn.Module`` (an EUSR, whose ×``scale`` path is
    used, or a module mapping ``[N,3,H,W]`` 0..255 float to ×``scale``; copied, the
    caller's module is left as it is). ``halo`` becomes
    the model's ``recommended_halo`` (checkpoints carry none). ``channels_last`` and
    ``cudnn_benchmark`` are the fast settings for convolutions on NVIDIA GPUs;
    ``allow_tf32`` trades float32 accuracy for TF32 speed. ``cudnn_benchmark`` and
    ``allow_tf32`` hold while the stage runs (torch's process-wide settings are restored
    after each enqueue). ``device``: ``"cuda"`` (the current GPU), ``"cuda:N"``, ``N`` or
    ``"cpu"`` (tests on the emulated device).
    """

    name = "torch-cuda"

    supports_cuda_graphs = False  # torch allocates during the run: capture it with torch.cuda.graphs instead

    def __init__(
        self,
        model: str | os.PathLike | Any,
        *,
        scale: int = 4,
        io: str | ModelIO = ModelIO.FLOAT32_NCHW,
        fp16: bool = False,
        channels_last: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        halo: int | None = None,
        device: str | int = "cuda",
        cudnn_benchmark: bool = True,
        weights: str = "auto",
        allow_tf32: bool = False,
    ) -> None:
        torch = _import_torch()
        if not isinstance(allow_tf32, bool):
            raise InvalidArgumentError(f"allow_tf32 must be True or False, got {allow_tf32!r}")
        if not isinstance(cudnn_benchmark, bool):
            raise InvalidArgumentError(f"cudnn_benchmark must be True or False, got {cudnn_benchmark!r}")
        self.allow_tf32 = allow_tf32
        self.cudnn_benchmark = cudnn_benchmark
        self.torch = torch
        try:
            layout = ModelIO(io)
        except ValueError:
            raise InvalidArgumentError(f"io must be one of {[m.value for m in ModelIO]}, got {io!r}") from None
        # io and scale are known now; names, halo and provenance once the module is loaded
        self._info = ModelInfo(io=layout, scale=check_int("scale", scale, 1), input_name="lr", output_name="sr")
        self._max_batch = check_int("max_batch", max_batch, 1)
        if halo is not None:
            check_int("halo", halo, 0)
        self.fp16 = bool(fp16)
        self.channels_last = bool(channels_last)
        self.device = self._torch_device(device)
        self.memory: Memory = "device" if self.device.type == "cuda" else "host"
        if self.device.type != "cuda" and self.fp16:
            raise InvalidArgumentError("fp16=True needs a CUDA device; on the CPU use fp16=False")

        with self.on_device():
            net, config_name, source = self._load(model, weights)
            net = net.to(self.device).eval()
            net.requires_grad_(False)
            if self.fp16:
                net = net.half()
            if self.channels_last:
                net = net.to(memory_format=torch.channels_last)
            self.net = net
            # the copies above ran on torch's legacy stream; the slots' non-blocking streams
            # do not wait for it, so the weights must be in place before the first enqueue
            self.synchronize()
        self._info = dataclasses.replace(
            self._info,
            recommended_halo=halo,
            config_name=config_name,
            source=source,
            metadata={
                "fp16": self.fp16,
                "channels_last": self.channels_last,
                "allow_tf32": self.allow_tf32,
                "torch": torch.__version__,
            },
        )
        self._closed = False
        log.info(
            "torch-cuda: %s x%d on %s (%s, %s%s)",
            config_name or "module",
            self.scale,
            self.device,
            self.io.value,
            "fp16" if self.fp16 else ("fp32 with TF32" if self.allow_tf32 else "fp32"),
            ", channels_last" if self.channels_last else "",
        )

    def on_device(self) -> Any:
        """A context in which the stage's GPU is torch's current device (nothing on the CPU)."""
        if self.device.type == "cuda":
            return self.torch.cuda.device(self.device)
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        """Wait for all work queued on the stage's device (``torch.<device>.synchronize``)."""
        getattr(self.torch, self.device.type).synchronize(self.device)

    def run_settings(self) -> contextlib.ExitStack:
        """The torch settings the forward pass runs under: GPU, TF32, cudnn.benchmark."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.on_device())
        stack.enter_context(tf32_scope(self.torch, self.allow_tf32))
        if self.device.type == "cuda":
            stack.enter_context(_cudnn_benchmark(self.torch, self.cudnn_benchmark))
        return stack

    def _torch_device(self, device: str | int) -> Any:
        torch = self.torch
        try:
            dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidArgumentError(f"device must be 'cuda', 'cuda:N', N or 'cpu', got {device!r}") from exc
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"backend 'torch-cuda' needs a CUDA build of PyTorch and a GPU, but torch "
                    f"{torch.__version__} (CUDA {torch.version.cuda}) reports torch.cuda.is_available() "
                    "False; install a CUDA build of torch, or use backend='onnxruntime' on the CPU"
                )
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            if index >= torch.cuda.device_count():
                raise InvalidArgumentError(
                    f"device must be below the {torch.cuda.device_count()} GPU(s) here, got {index}"
                )
            dev = torch.device("cuda", index)
        elif dev.type != "cpu":
            raise InvalidArgumentError(f"device must be 'cuda', 'cuda:N', N or 'cpu', got {device!r}")
        return dev

    def _load(self, model: Any, weights: str) -> tuple[Any, str | None, str]:
        torch = self.torch
        if isinstance(model, torch.nn.Module):
            # a copy: moving to the GPU and .half() work in place, and the caller keeps theirs
            net, source, config_name = copy.deepcopy(model), "module", None
        else:
            path = Path(model)
            if not path.is_file():
                raise ModelError(
                    f"{path}: checkpoint not found (backend 'torch-cuda' takes an EUSR .safetensors checkpoint)"
                )
            if path.suffix.lower() != ".safetensors":
                raise ModelError(
                    f"{path}: backend 'torch-cuda' takes an EUSR .safetensors checkpoint, got a "
                    f"{path.suffix or 'suffix-less'} file; ONNX models run with 'onnxruntime-cuda'"
                )
            load_model = find_loader(path.suffix)
            if load_model is None:
                raise ModelError(
                    f"{path}: no checkpoint loader is registered for {path.suffix} files (entry point group "
                    f"{LOADER_GROUP!r}); install the project with pip install -e . or pass the nn.Module"
                )
            try:
                net = load_model(path, weights=weights)
            except (UpscaleError, ValueError, OSError) as exc:
                raise ModelError(f"{path}: cannot load the checkpoint ({exc})") from exc
            source, config_name = f"checkpoint {path.name}", _safetensors_metadata(path).get("config_name")
        if hasattr(net, "path") and hasattr(net, "scales"):  # a multi-scale EUSR: take one path
            if self.scale not in net.scales:
                raise ModelError(f"scale {self.scale} is not a path of this model; it has scales {list(net.scales)}")
            config_name = config_name or _config_name(net)
            net = net.path(self.scale)
        return net, config_name, source

    # -- StageFactory (info, max_batch, window_limits, close come from the base) ---------------
    def _new_stage(self, slot: int) -> _TorchStage:
        return _TorchStage(self, slot)

    def _close(self) -> None:
        self.net = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TorchCudaStageFactory(x{self.scale}, {self.io.value}, fp16={self.fp16}, device={self.device})"


def _config_name(net: Any) -> str | None:
    """The configuration's name if the module records one (informational)."""
    name = getattr(net, "config_name", None) or getattr(getattr(net, "config", None), "name", None)
    return name if isinstance(name, str) else "custom"


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file's JSON header ({} if unreadable).

    The format: an 8-byte little-endian header length, then that many bytes of JSON.
    """
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < (1 << 26) else {}
    except (OSError, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


class _TorchStage(Stage):
    """One slot: tensors over the slot's device buffers, the module run on the slot's stream."""

    factory: TorchCudaStageFactory

    def __init__(self, factory: TorchCudaStageFactory, slot: int) -> None:
        super().__init__(factory, slot)
        self._x: Any = None
        self._y: Any = None
        self._streams: dict[int, Any] = {}

    def _wrap(self, ptr: int, shape: tuple[int, ...]) -> Any:
        """A tensor over the buffer at ``ptr``, in place; refuses a buffer on another device.

        No ``device=`` for ``torch.as_tensor``: torch places a ``__cuda_array_interface__``
        tensor on the GPU that owns the pointer, and a ``device=`` naming another GPU would
        make it a copy, so the stage would write its result where nobody reads it.
        """
        factory = self.factory
        torch = factory.torch
        dtype = factory.io.dtype
        if factory.device.type == "cuda":
            from ..cuda.resources import DeviceArray

            tensor = torch.as_tensor(DeviceArray(ptr, dtype, shape))
        else:
            tensor = torch.from_numpy(host_array(ptr, dtype, shape))
        if tensor.device != factory.device or tensor.data_ptr() != ptr:
            raise InvalidArgumentError(
                f"torch-cuda stage (slot {self.slot}): the buffer at 0x{ptr:x} is on {tensor.device}, but the "
                f"stage runs on {factory.device}; give the executor's device and the stage the same GPU "
                "(Upscaler(device=N) with TorchCuda(device=N), or neither)"
            )
        return tensor

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        with self.factory.on_device():
            self._x = self._wrap(input_ptr, input_shape)
            self._y = self._wrap(output_ptr, output_shape)

    def _stream(self, handle: int) -> Any:
        factory = self.factory
        if factory.device.type != "cuda":
            return contextlib.nullcontext()
        stream = self._streams.get(handle)
        if stream is None:
            torch = factory.torch
            stream = self._streams[handle] = torch.cuda.ExternalStream(handle, device=factory.device)
        return factory.torch.cuda.stream(stream)

    def _enqueue(self, stream: int) -> None:
        factory = self.factory
        torch = factory.torch
        if factory.net is None:
            raise UpscaleError("the torch-cuda stage factory is closed")
        try:
            with factory.run_settings(), self._stream(stream), torch.inference_mode():
                x = self._x
                if factory.io is ModelIO.UINT8_NHWC:
                    x = x.permute(0, 3, 1, 2)  # NHWC memory seen as NCHW: channels-last already
                fmt = torch.channels_last if factory.channels_last else torch.contiguous_format
                x = x.to(dtype=torch.float16 if factory.fp16 else torch.float32, memory_format=fmt)
                y = factory.net(x)
                if factory.io is ModelIO.UINT8_NHWC:
                    y = torch.clamp(torch.round(y.float()), 0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)
                self._y.copy_(y)
        except RuntimeError as exc:  # torch reports CUDA and shape errors as RuntimeError
            raise UpscaleError(f"torch-cuda stage (slot {self.slot}): {exc}") from exc

    def _close(self) -> None:
        self._x = self._y = None
        self._streams.clear()

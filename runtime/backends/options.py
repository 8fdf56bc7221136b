"""Typed backend options: one frozen, keyword-only dataclass per backend.

``Upscaler(model, backend=TensorRT(device=1, slots=3), tile=128)`` says everything about
the backend in one value that is checked when it is made, so a typo (``TensorRT(slot=3)``)
or a bad value (``OnnxRuntime(threads=-1)``) fails at once with the field's name, not
deep inside a backend. Derive variants with :func:`dataclasses.replace`. Strings
(``backend="tensorrt"``) stay as a CLI convenience: :func:`options_for` maps a name to the
default options of that backend.

Each options class knows how to :meth:`~BackendOptions.create` its
:class:`~runtime.backends.contract.StageFactory`; the backend's module (and its heavy
packages) is imported only then.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import BackendUnavailableError, InvalidArgumentError
from ..layout import ModelIO
from ..utils import check_int
from .contract import StageFactory

__all__ = [
    "BackendOptions",
    "GpuOptions",
    "OnnxRuntime",
    "OnnxRuntimeCuda",
    "OpenVino",
    "TensorRT",
    "TorchCuda",
    "OPTIONS",
    "options_for",
    "with_overrides",
]

DEFAULT_SLOTS = 3
"""Slots in flight on a GPU: with 3, one batch computes while one copies and the CPU works
on the third. Each slot costs its buffers and a stage (an execution context, a session)."""


def _check_bool(what: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be True or False, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """What every backend takes. ``scale`` is needed only for models without the exporter's
    metadata (and must agree with it when both exist)."""

    name: ClassVar[str] = ""
    factory: ClassVar[str] = ""
    """``module:Class`` of the backend's :class:`StageFactory`, imported by :meth:`create`."""
    legacy_names: ClassVar[Mapping[str, str]] = {}
    """Old ``backend_options`` keys and the field each one became."""

    scale: int | None = None

    def __post_init__(self) -> None:
        if self.scale is not None:
            check_int(f"{type(self).__name__}(scale=)", self.scale, 1)

    @property
    def pipelined(self) -> bool:
        """Whether it runs on a GPU device (streams, pinned memory) rather than the host."""
        return False

    def factory_kwargs(self) -> dict[str, Any]:
        """The factory's constructor keywords (every field by default)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def create(self, model: str | os.PathLike[str] | Any) -> StageFactory:
        """The backend for ``model`` (imports the backend's module now)."""
        module_name, _, class_name = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise BackendUnavailableError(
                    f"backend {self.name!r} is registered as {self.factory} but module {module_name} is not "
                    "part of this installation"
                ) from exc
            raise
        cls = getattr(module, class_name, None)
        if cls is None:
            raise BackendUnavailableError(
                f"backend {self.name!r} is registered as {self.factory} but {module_name} has no {class_name}"
            )
        factory: StageFactory = cls(model, **self.factory_kwargs())
        return factory


@dataclass(frozen=True, kw_only=True)
class OnnxRuntime(BackendOptions):
    """ONNX Runtime on the CPU (or with its own CUDA provider, copying through host memory).

    ``threads``: intra-op threads of one inference (None: ONNX Runtime's choice, all
    physical cores); ``providers``: execution providers in priority order.
    """

    name: ClassVar[str] = "onnxruntime"
    factory: ClassVar[str] = "runtime.backends.onnxruntime_backend:OnnxRuntimeBackend"
    legacy_names: ClassVar[Mapping[str, str]] = {"intra_op_threads": "threads"}

    threads: int | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threads is not None:
            check_int("OnnxRuntime(threads=)", self.threads, 0)
        if isinstance(self.providers, str) or not all(isinstance(p, str) for p in self.providers):
            raise InvalidArgumentError(
                f"OnnxRuntime(providers=) must be a sequence of provider names, got {self.providers!r}"
            )
        object.__setattr__(self, "providers", tuple(self.providers))

    def factory_kwargs(self) -> dict[str, Any]:
        return {"providers": self.providers, "intra_op_threads": self.threads, "scale": self.scale}


@dataclass(frozen=True, kw_only=True)
class OpenVino(BackendOptions):
    """OpenVINO on the CPU: the same ONNX files as ONNX Runtime, compiled per window shape.

    ``threads``: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's choice, all cores);
    ``streams``: ``NUM_STREAMS`` (None: the hint's choice); ``hint``: ``"latency"`` (the
    executor runs one request at a time) or ``"throughput"``; ``precision``: the float
    parts' ``INFERENCE_PRECISION_HINT``, ``"f32"`` (exact; OpenVINO's own default is bf16 on
    AMX CPUs), ``"bf16"`` or ``"f16"``; ``cache``: keep compiled blobs in ``cache_dir``
    (None: ``$XDG_CACHE_HOME/fourpp-eusr/openvino``); ``max_shapes``: compiled batch shapes
    kept in memory.
    """

    name: ClassVar[str] = "openvino"
    factory: ClassVar[str] = "runtime.backends.openvino_backend:OpenVinoBackend"

    threads: int | None = None
    streams: int | None = None
    hint: str = "latency"
    precision: str = "f32"
    cache: bool = True
    cache_dir: str | None = None
    max_shapes: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threads is not None:
            check_int("OpenVino(threads=)", self.threads, 0)
        if self.streams is not None:
            check_int("OpenVino(streams=)", self.streams, 1)
        if self.hint not in ("latency", "throughput"):
            raise InvalidArgumentError(f"OpenVino(hint=) must be 'latency' or 'throughput', got {self.hint!r}")
        if self.precision not in ("f32", "bf16", "f16"):
            raise InvalidArgumentError(f"OpenVino(precision=) must be 'f32', 'bf16' or 'f16', got {self.precision!r}")
        _check_bool("OpenVino(cache=)", self.cache)
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise InvalidArgumentError(f"OpenVino(cache_dir=) must be a folder path, got {self.cache_dir!r}")
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        check_int("OpenVino(max_shapes=)", self.max_shapes, 1)


@dataclass(frozen=True, kw_only=True)
class GpuOptions(BackendOptions):
    """What every GPU backend takes: the GPU index, slots in flight, CUDA graph replay."""

    device: int = 0
    slots: int = DEFAULT_SLOTS
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = type(self).__name__
        check_int(f"{kind}(device=)", self.device, 0)
        check_int(f"{kind}(slots=)", self.slots, 1)
        _check_bool(f"{kind}(cuda_graphs=)", self.cuda_graphs)

    @property
    def pipelined(self) -> bool:
        return True

    def factory_kwargs(self) -> dict[str, Any]:
        kwargs = super().factory_kwargs()
        del kwargs["slots"], kwargs["cuda_graphs"]  # the executor's, not the factory's
        return kwargs


@dataclass(frozen=True, kw_only=True)
class TensorRT(GpuOptions):
    """A TensorRT engine built by ``export/to_trt.py`` (with its JSON sidecar).

    ``strict_gpu=False`` turns an engine built on another GPU model of the same compute
    capability into a warning; ``log_severity`` is TensorRT's logging threshold.
    """

    name: ClassVar[str] = "tensorrt"
    factory: ClassVar[str] = "runtime.backends.tensorrt_backend:TensorRTStageFactory"

    strict_gpu: bool = True
    log_severity: str = "WARNING"


@dataclass(frozen=True, kw_only=True)
class OnnxRuntimeCuda(GpuOptions):
    """An ONNX model on ONNX Runtime's CUDA provider, on the executor's streams and buffers.

    ``provider_options`` are added to the CUDA provider's options (e.g.
    ``{"cudnn_conv_algo_search": "HEURISTIC"}``); stored as sorted pairs (frozen).
    """

    name: ClassVar[str] = "onnxruntime-cuda"
    factory: ClassVar[str] = "runtime.backends.onnxruntime_cuda:OrtCudaStageFactory"

    max_batch: int = 64
    provider_options: tuple[tuple[str, str], ...] = ()
    allow_tf32: bool = False
    """TF32 convolutions/matmuls (10-bit mantissas): faster on Ampere+, but not fp32."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("OnnxRuntimeCuda(max_batch=)", self.max_batch, 1)
        _check_bool("OnnxRuntimeCuda(allow_tf32=)", self.allow_tf32)
        pairs = self.provider_options
        if isinstance(pairs, Mapping):
            pairs = tuple(pairs.items())
        object.__setattr__(self, "provider_options", tuple(sorted((str(k), str(v)) for k, v in pairs)))

    def factory_kwargs(self) -> dict[str, Any]:
        kwargs = super().factory_kwargs()
        kwargs["provider_options"] = dict(self.provider_options)
        return kwargs


@dataclass(frozen=True, kw_only=True)
class TorchCuda(GpuOptions):
    """The EUSR module itself in PyTorch on a GPU (parity and pipeline measurements).

    The model is an ``nn.Module`` or a checkpoint file read by a registered loader (the
    ``fourpp_eusr.model_loaders`` entry point; ``train`` registers ``.safetensors``).
    ``io`` picks the buffers' layout, ``fp16`` runs the module in half precision,
    ``halo`` becomes the model's recommended halo, ``weights`` chooses a checkpoint's moving average or raw
    weights ("auto", "ema", "raw").
    """

    name: ClassVar[str] = "torch-cuda"
    factory: ClassVar[str] = "runtime.backends.torch_cuda:TorchCudaStageFactory"

    io: ModelIO = ModelIO.FLOAT32_NCHW
    fp16: bool = False
    channels_last: bool = True
    cudnn_benchmark: bool = True
    max_batch: int = 64
    halo: int | None = None
    weights: str = "auto"
    allow_tf32: bool = False
    """TF32 convolutions/matmuls (10-bit mantissas): faster on Ampere+, but not fp32."""

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            object.__setattr__(self, "io", ModelIO(self.io))
        except ValueError:
            raise InvalidArgumentError(
                f"TorchCuda(io=) must be one of {[m.value for m in ModelIO]}, got {self.io!r}"
            ) from None
        check_int("TorchCuda(max_batch=)", self.max_batch, 1)
        for flag in ("fp16", "channels_last", "cudnn_benchmark", "allow_tf32"):
            _check_bool(f"TorchCuda({flag}=)", getattr(self, flag))
        if self.halo is not None:
            check_int("TorchCuda(halo=)", self.halo, 0)
        if self.weights not in ("auto", "ema", "raw"):
            raise InvalidArgumentError(f"TorchCuda(weights=) must be 'auto', 'ema' or 'raw', got {self.weights!r}")

    def factory_kwargs(self) -> dict[str, Any]:
        kwargs = super().factory_kwargs()
        kwargs["scale"] = 4 if self.scale is None else self.scale
        return kwargs


OPTIONS: dict[str, type[BackendOptions]] = {
    cls.name: cls for cls in (OnnxRuntime, OpenVino, TensorRT, TorchCuda, OnnxRuntimeCuda)
}
"""Backend name → its options class (the names ``Upscaler(backend=...)`` accepts, with "auto")."""


def options_for(name: str) -> BackendOptions:
    """The default options of backend ``name`` (``"auto"`` is resolved by the registry)."""
    try:
        return OPTIONS[name]()
    except KeyError:
        raise BackendUnavailableError(f"unknown backend {name!r}; use one of {['auto', *OPTIONS]}") from None


def with_overrides(options: BackendOptions, overrides: Mapping[str, Any], *, what: str) -> BackendOptions:
    """``options`` with ``overrides`` applied by field name; unknown names are an error.

    Old ``backend_options`` keys (``intra_op_threads``) are mapped to their fields.
    """
    fields = {f.name for f in dataclasses.fields(options)}
    renamed = {options.legacy_names.get(k, k): v for k, v in overrides.items()}
    unknown = sorted(set(renamed) - fields)
    if unknown:
        raise InvalidArgumentError(
            f"{what}: {type(options).__name__} has no option(s) {unknown}; its options are {sorted(fields)}"
        )
    return dataclasses.replace(options, **renamed)

"""``Upscaler``: any image in, the ×scale image back, same dtype and channel layout.

How an image goes through (see docs/design.md, "One image through the runtime"):

1. :func:`~runtime.image_io.read_image` turns a path, PIL image or array into an H×W×C
   view plus :class:`~runtime.image_io.ImageInfo` (arrays are not copied).
2. :meth:`Upscaler.plan` cuts it into windows of one shape: on the CPU (``tile="auto"``)
   the whole image when its activations fit ``memory_budget_mb``, else an evenly split
   grid of the largest windows that do (:func:`~runtime.tiling.plan_auto`); with a fixed
   ``tile`` (and on GPUs) :func:`~runtime.tiling.plan_tiles`. Tiny images are padded to the
   backend's minimum size.
3. Batches of ``batch`` windows are gathered into one reused buffer in the model's layout,
   run through the backend, and each tile's upscaled core is written into the output.
   Peak memory is the output array plus a few tile-sized buffers, whatever the image size.

One tile loop runs step 3 for every backend: :class:`~runtime.pipeline.PipelineExecutor`.
The backend (a :class:`~runtime.backends.StageFactory`, made from typed options such as
:class:`~runtime.backends.OnnxRuntime` or :class:`~runtime.backends.TensorRT`) says where its
buffers live, and that picks the executor's device:

* **host** (``backend="onnxruntime"``, any :class:`~runtime.backends.Backend`): the
  synchronous :class:`~runtime.host.HostDevice`, one slot, no copies: one batch after the
  other on the CPU (or ONNX Runtime's own CUDA provider).
* **device** (``backend="tensorrt" | "torch-cuda" | "onnxruntime-cuda"``): a
  :class:`~runtime.cuda.CudaDevice` with ``slots`` CUDA streams in flight, pinned buffers and
  async copies, pipelining tile batches within an image and across the images of
  :meth:`Upscaler.upscale_many`.

Channel layouts and dtypes, decided once here:

* **RGB** goes through the model as is.
* **Gray** is replicated to three channels for the model, and the RGB result is turned
  back into one channel with ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B); for a
  colour-neutral model this equals any one channel, and it averages out small channel
  differences otherwise.
* **Alpha** (RGBA, gray+alpha) is upscaled by the same model, as a gray image, so edges
  in alpha get the same treatment as edges in colour. A constant alpha (the common fully
  opaque case) is copied as that constant without running the model.
* **uint8** is the model's native range. **uint16** is divided by 257 onto 0..255,
  processed in float32 and multiplied back with rounding and clipping to 0..65535; it
  needs a float32-nchw model. **float32** arrays are in 0..255 (the model's range, as
  uint8 levels; :data:`~runtime.image_io.FLOAT_RANGE`): NaN, infinities, values outside it
  and the 0..1 convention are refused with an :class:`~runtime.errors.InvalidArgumentError`
  that says what was seen and how to convert. They come back unrounded, clamped to 0..255
  (the model overshoots a little at bright and dark edges); they too need a float32-nchw model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from .backends import BackendOptions, GpuOptions, StageFactory, resolve, resolve_auto, with_overrides
from .backends.contract import ACTIVATION_TENSORS
from .bundled import BUNDLED_FILES, bundled_model, models_dir, resolve_model
from .closing import Closing
from .device_arrays import DeviceFrame, device_image, host_array_from_dlpack, is_device_source, is_host_dlpack
from .device_tiles import DeviceTarget, check_device_io
from .errors import BackendUnavailableError, ImageWriteError, InvalidArgumentError, ModelError, OutOfMemoryError
from .frames import FRAME_FORMATS, read_frames, write_frames
from .host import HostDevice
from .image_io import FLOAT_RANGE, ImageInfo, ImageSource, check_output_path, read_image, write_image
from .layout import Precision
from .model_info import ModelInfo
from .pipeline import DEFAULT_SLOTS, ImageJob, Pass, PipelineExecutor
from .sysmem import available_memory_bytes
from .tiling import TilePlan, plan_auto, plan_tiles
from .utils import check_int

__all__ = [
    "Upscaler",
    "DEFAULT_TILE",
    "DEFAULT_HALO",
    "MIN_MEMORY_BUDGET_MB",
    "MAX_MEMORY_BUDGET_MB",
    "default_memory_budget_mb",
    "window_bytes_per_pixel",
    "DEFAULT_BATCH",
    "DEFAULT_GPU_BATCH",
    "DEFAULT_SLOTS",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MAX_OVERHEAD",
    "WARN_OVERHEAD",
    "OverheadWarning",
    "default_model_path",
    "check_model_kind",
]

log = logging.getLogger(__name__)

DEFAULT_TILE = 128
"""Core edge of a tile, in low-resolution pixels, where the tile is fixed: on GPU backends
(``tile="auto"`` resolves to it there) and for models whose activation size is unknown."""

MIN_MEMORY_BUDGET_MB = 256.0
"""The smallest default activation budget (MB = 10^6 bytes): what a machine with under 1 GB
free gets. ``benchmarks/memory.py`` checks peak memory at this budget (2048² image: output +
500 MB), and the bundled compact model still takes ~40k-pixel windows under OpenVINO."""

MAX_MEMORY_BUDGET_MB = 2048.0
"""The largest default activation budget: past ~2 GB a bigger window no longer runs faster
per pixel on a CPU (the halo of a 500-pixel window is already under 7 %), it only holds
memory. It lets 480×270 run as one window for the compact and the paper configuration."""

MEMORY_BUDGET_SHARE = 0.25
"""The part of the memory available when an Upscaler is made that ``tile="auto"`` may give
one model call by default (within the bounds above): the output array, the input and
whatever else the application holds need the rest."""

UNKNOWN_MEMORY_BUDGET_MB = 1024.0
"""The default activation budget where the free memory cannot be read (no /proc/meminfo)."""

DEFAULT_HALO = 16
"""Context kept around each tile, in low-resolution pixels, for models whose metadata
gives no ``recommended_halo`` (the export measures nothing; benchmarks/seams.py does, and
the bundled model records the halo chosen from that curve)."""

DEFAULT_BATCH = 1
"""Tiles per backend call on the host. On CPU a 128² tile already fills the cores, and each
extra tile in a call adds its activations (~50 MB for the compact model at ×4) to peak
memory; GPU backends want larger batches and say so when they are chosen."""

DEFAULT_GPU_BATCH = 8
"""Tiles per enqueue for the GPU backends (capped by the stage's ``max_batch``): enough
windows per launch to fill a GPU with 128-pixel tiles, while the buffers of three slots
stay around 0.1 GB (float32 I/O, ×4, halo 16)."""

DEFAULT_MODEL_NAME = BUNDLED_FILES[Precision.FP32]

WARN_OVERHEAD = 2.0
"""Above this many computed window pixels per image pixel (:attr:`TilePlan.overlap`) an image
gets an :class:`OverheadWarning`: the halo costs more than the image itself."""

DEFAULT_MAX_OVERHEAD = 16.0
"""Above this overlap an image is refused unless ``max_overhead`` allows it: ``--tile 4
--halo 100`` computes 2,600× the image (minutes of silence for a 1500² photo), never what
anyone wants; the sane plans computed here are 1.0-1.6×."""

_OVERHEAD_FLOOR_PIXELS = 1 << 16
"""Extra window pixels below which overlap is not worth a word: a tiny image in a window of
the model's minimum size or with its halo of context computes many times its own pixels
(a 1×1 image in a 17×17 window: 289×), and 65k extra pixels cost the bundled model about a
second on two CPU cores."""


class OverheadWarning(UserWarning):
    """The tile plan computes more than :data:`WARN_OVERHEAD` × the image's pixels."""


def default_model_path() -> Path:
    """Where the bundled default model lives (package data; may be absent in a checkout)."""
    return models_dir() / DEFAULT_MODEL_NAME


def default_memory_budget_mb() -> float:
    """:data:`MEMORY_BUDGET_SHARE` of the memory available now, within
    [:data:`MIN_MEMORY_BUDGET_MB`, :data:`MAX_MEMORY_BUDGET_MB`]; :data:`UNKNOWN_MEMORY_BUDGET_MB`
    where it cannot be read. Pass ``memory_budget_mb`` for plans that do not depend on it."""
    available = available_memory_bytes()
    if available is None:
        return UNKNOWN_MEMORY_BUDGET_MB
    return min(max(available * MEMORY_BUDGET_SHARE / 1e6, MIN_MEMORY_BUDGET_MB), MAX_MEMORY_BUDGET_MB)


def window_bytes_per_pixel(info: ModelInfo, tensors: float = ACTIVATION_TENSORS) -> int | None:
    """Activation bytes one input pixel of a window costs during a call, from the metadata.

    An EUSR ×s network's largest tensors are its ``features`` channels at the output
    resolution (the last upscaling module's pixel shuffle and the output convolution read
    them): ``4 bytes × features × s²`` each, ``tensors`` of them alive at once (the backend's
    :attr:`~runtime.backends.StageFactory.activation_tensors`), plus 2 KB for the float32
    input/output copies. None when the model's metadata gives no feature count (an ONNX file
    exported elsewhere): ``tile="auto"`` then keeps the fixed tile's window area.
    """
    config = info.metadata.get("config") if isinstance(info.metadata, Mapping) else None
    features = config.get("features") if isinstance(config, Mapping) else None
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        return None
    return int(4 * features * info.scale * info.scale * tensors) + 2048


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Upscaler(Closing):
    """Upscale images by the model's scale (×4 by default), tile by tile.

    ``model`` is the backend's model: an ONNX file for ONNX Runtime (default: the bundled
    compact ×4 model), a TensorRT engine, an EUSR checkpoint or ``nn.Module`` for PyTorch.
    ``backend`` is typed options (``OnnxRuntime(threads=2)``, ``TensorRT(device=1,
    slots=3)``, see :mod:`runtime.backends.options`), a name (``"auto"``, ``"onnxruntime"``,
    ``"tensorrt"``, ``"torch-cuda"``, ``"onnxruntime-cuda"``: that backend's defaults), or a
    ready :class:`~runtime.backends.StageFactory` (it stays the caller's to close).
    ``precision="int8"`` picks the bundled gated INT8 model (fast on OpenVINO, which
    ``"auto"`` picks on the CPU when installed); with a named ONNX file it checks the
    precision the file records instead (never a silent swap). Default: the exact fp32 model.
    ``tile``, ``halo`` and ``batch`` trade memory for speed, see :mod:`runtime.tiling`:
    ``tile="auto"`` (the default) on the CPU runs the whole image when its activations fit
    ``memory_budget_mb`` (default :func:`default_memory_budget_mb`: a quarter of the free
    memory, 256-2048 MB), else the evenly split grid of the
    largest windows that fit; on a GPU it is :data:`DEFAULT_TILE` (one window shape for every
    image: one engine profile, CUDA graphs that replay, no re-tuning); an int fixes the core
    edge everywhere. :meth:`plan` shows the tiles an image gets, ``--verbose`` logs them.
    ``halo=None`` takes the model's ``recommended_halo`` (else :data:`DEFAULT_HALO`),
    ``batch=None`` :data:`DEFAULT_BATCH` on the host or :data:`DEFAULT_GPU_BATCH` on a GPU.
    ``progress`` shows a tqdm bar over tiles, with ETA (a mapping: extra tqdm arguments, such
    as ``{"delay": 1}`` to show it only for images that take over a second).
    ``output_budget_mb``: :meth:`upscale_file` streams an output array larger than this to a
    tiled TIFF band by band (:mod:`runtime.streaming`; default: half the memory available),
    or refuses other formats.
    A plan computing over :data:`WARN_OVERHEAD` × an image's pixels (small tiles, a large
    halo) gets an :class:`OverheadWarning`, one over ``max_overhead``
    (:data:`DEFAULT_MAX_OVERHEAD`; None: no limit) an :class:`~runtime.errors.InvalidArgumentError`
    before any compute.

    ``slots``, ``cuda_graphs`` and ``device`` override the GPU options of the same names
    (``device`` may also be a device object, such as :class:`runtime.testing.EmulatedDevice`);
    ``backend_options`` (a dict of option names) is the deprecated form of typed options.
    Not thread-safe: one Upscaler per thread.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any | None = None,
        *,
        backend: str | BackendOptions | StageFactory = "auto",
        precision: Precision | str | None = None,
        tile: int | str = "auto",
        halo: int | None = None,
        batch: int | None = None,
        memory_budget_mb: float | None = None,
        output_budget_mb: float | None = None,
        max_overhead: float | None = DEFAULT_MAX_OVERHEAD,
        progress: bool | Mapping[str, Any] = False,
        backend_options: Mapping[str, Any] | None = None,
        slots: int | None = None,
        cuda_graphs: bool | None = None,
        device: int | Any | None = None,
    ) -> None:
        if tile != "auto":
            if isinstance(tile, str):
                raise InvalidArgumentError(f"tile must be 'auto' or an int >= 1, got {tile!r}")
            check_int("tile", tile, 1)
        self._tile_arg: int | str = tile
        self.tile: int | str = tile
        """The fixed core edge, or "auto" (windows from the image size and the memory budget)."""
        self._auto_pixels: int | None = None
        self._limits: tuple[int, int] | None = None
        self._last_plan: TilePlan | None = None
        if memory_budget_mb is not None and (
            isinstance(memory_budget_mb, bool)
            or not isinstance(memory_budget_mb, (int, float))
            or not memory_budget_mb > 0
        ):
            raise InvalidArgumentError(f"memory_budget_mb must be a number > 0, got {memory_budget_mb!r}")
        self.memory_budget_mb = default_memory_budget_mb() if memory_budget_mb is None else float(memory_budget_mb)
        """Activations (MB) one ``tile="auto"`` call on the CPU may take."""
        if output_budget_mb is not None and (
            isinstance(output_budget_mb, bool)
            or not isinstance(output_budget_mb, (int, float))
            or not output_budget_mb > 0
        ):
            raise InvalidArgumentError(f"output_budget_mb must be a number > 0, got {output_budget_mb!r}")
        self.output_budget_mb = None if output_budget_mb is None else float(output_budget_mb)
        if max_overhead is not None and (
            isinstance(max_overhead, bool) or not isinstance(max_overhead, (int, float)) or not max_overhead >= 1
        ):
            raise InvalidArgumentError(f"max_overhead must be a number >= 1 or None (no limit), got {max_overhead!r}")
        self.max_overhead = max_overhead
        if batch is not None:
            check_int("batch", batch, 1)
        if halo is not None:
            check_int("halo", halo, 0)  # refuse a bad value before loading any model
        if slots is not None:
            check_int("slots", slots, 1)
        self._tqdm = require("tqdm", pip="tqdm", purpose="progress=True").tqdm if progress else None
        self._progress_options = dict(progress) if isinstance(progress, Mapping) else {}
        self._executor: PipelineExecutor | None = None
        self._device: Any = None
        self._ingest: Any = None  # the stream device frames are handed over on (made on first use)
        self._owns_backend = self._owns_device = False
        self.options: BackendOptions | None = None
        """The backend's options (None when a ready StageFactory was given)."""

        if isinstance(backend, StageFactory):
            if model is not None or backend_options or precision is not None:
                raise InvalidArgumentError(
                    "model, precision and backend_options cannot be given together with a Backend instance; "
                    "the backend already holds its model"
                )
            self._factory: StageFactory = backend
        elif isinstance(backend, (str, BackendOptions)):
            source = self._model_source(model, precision)
            options = resolve(backend, source if isinstance(source, Path) else None)
            if backend_options:
                warnings.warn(
                    "Upscaler(backend_options={...}) is deprecated; pass typed options, e.g. "
                    f"backend={type(options).__name__}(...)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                options = with_overrides(options, backend_options, what="backend_options")
            self.options = options = self._merge_gpu_arguments(
                options, slots=slots, cuda_graphs=cuda_graphs, device=device
            )
            check_model_kind(source, options.name)
            if options.pipelined and not _is_device(device):
                self._device, self._owns_device = self._cuda_device(options), True
            try:
                self._factory = options.create(source)
            except BackendUnavailableError as exc:
                self._close_device()
                if backend != "auto" or not options.pipelined or _is_device(device):
                    raise
                # "auto" chose a GPU backend that cannot start here (e.g. ONNX Runtime's CUDA
                # provider without cuDNN): say why and move on to the CPU's best backend.
                log.warning("backend 'auto': %s cannot start (%s); using the CPU instead", options.name, exc)
                self.options = options = resolve_auto(source if isinstance(source, Path) else None, pipelined=False)
                self._factory = options.create(source)
            except BaseException:
                self._close_device()
                raise
            self._owns_backend = True
        else:
            raise InvalidArgumentError(
                "backend must be a backend name such as 'auto', backend options such as "
                f"OnnxRuntime(threads=2), or a StageFactory, got {type(backend).__name__}"
            )

        try:
            self._setup(halo, batch, slots, cuda_graphs, device)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _model_source(model: Any, precision: Precision | str | None = None) -> Any:
        """A path for file models (the bundled model of ``precision`` when None), else the
        object (a module). With a file and a precision, the file must record that precision:
        a named model is never swapped for another (runtime/bundled.py)."""
        if model is None:
            if precision is not None:
                return bundled_model(precision)  # a clear ModelError when that variant is missing
            path = default_model_path()
            if not path.is_file():
                raise ModelError(
                    f"the bundled default model {path} is missing from this installation; pass "
                    "model= the path of an .onnx file (export one with python export/to_onnx.py)"
                )
            return path
        if isinstance(model, (str, os.PathLike)):
            return Path(model) if precision is None else resolve_model(model, precision, what="precision")
        if precision is not None:
            raise InvalidArgumentError(f"precision= applies to ONNX file models, not a {type(model).__name__}")
        return model

    @staticmethod
    def _merge_gpu_arguments(options: BackendOptions, **given: Any) -> BackendOptions:
        """Apply Upscaler's ``slots``/``cuda_graphs``/``device`` (GPU index) to GPU options."""
        given = {k: v for k, v in given.items() if v is not None and not (k == "device" and _is_device(v))}
        if not isinstance(options, GpuOptions):
            ignored = sorted(
                k for k, v in given.items() if not (k == "slots" and v == 1) and not (k == "cuda_graphs" and v is False)
            )
            if ignored:
                log.warning(
                    "%s ignored: the %s backend runs on the CPU, one batch at a time",
                    ", ".join(f"{k}={given[k]!r}" for k in ignored),
                    options.name,
                )
            return options
        defaults = type(options)()
        for key, value in given.items():
            current = getattr(options, key)
            if current != getattr(defaults, key) and current != value:
                raise InvalidArgumentError(
                    f"Upscaler({key}={value!r}) contradicts {type(options).__name__}({key}={current!r}); give it once"
                )
        return dataclasses.replace(options, **given) if given else options

    @staticmethod
    def _cuda_device(options: BackendOptions) -> Any:
        from .cuda.resources import CudaDevice

        return CudaDevice(getattr(options, "device", 0))

    def _setup(
        self, halo: int | None, batch: int | None, slots: int | None, cuda_graphs: bool | None, device: Any
    ) -> None:
        factory = self._factory
        recommended = factory.info.recommended_halo
        if halo is None:
            halo = DEFAULT_HALO if recommended is None else recommended
        self.halo = check_int("halo", halo, 0)
        if recommended is not None and self.halo < recommended:
            log.warning(
                "halo=%d is below the model's recommended halo %d: tile seams may show",
                self.halo,
                recommended,
            )
        on_host = factory.memory == "host" and not _is_device(device)
        if self._device is None:
            if _is_device(device):
                self._device = device
            elif on_host:
                self._device, self._owns_device = HostDevice(), True
            else:
                self._device, self._owns_device = (
                    self._cuda_device(self.options or GpuOptions(device=device or 0)),
                    True,
                )
        options = self.options
        if on_host:
            self.batch = DEFAULT_BATCH if batch is None else batch
            self.slots = 1
            graphs = False
        else:
            self.batch = min(DEFAULT_GPU_BATCH, factory.max_batch) if batch is None else batch
            default_slots = options.slots if isinstance(options, GpuOptions) else DEFAULT_SLOTS
            self.slots = default_slots if slots is None else slots
            graphs = options.cuda_graphs if isinstance(options, GpuOptions) else bool(cuda_graphs)
        limits = factory.window_limits()
        self._limits = limits
        if self._tile_arg == "auto" and on_host:
            self._auto_pixels = self._auto_window_pixels(limits)
            try:
                self._executor = PipelineExecutor(
                    factory,
                    self._device,
                    window=None,
                    window_pixels=self._auto_pixels,
                    batch=self.batch,
                    slots=self.slots,
                    cuda_graphs=graphs,
                )
            except MemoryError as exc:
                raise OutOfMemoryError(
                    f"the buffers for batch={self.batch} windows of {self._auto_pixels} pixels (tile='auto', "
                    f"memory_budget_mb={self.memory_budget_mb:g}) could not be allocated; lower memory_budget_mb "
                    "or batch"
                ) from exc
            return
        if self._tile_arg == "auto":  # pipelined: one fixed window shape, inside the engine's edges
            window = DEFAULT_TILE + 2 * self.halo
            if limits is not None:
                window = min(max(window, limits[0]), limits[1])
            tile = max(window - 2 * self.halo, 1)
        else:
            tile = int(self._tile_arg)
        self.tile = tile
        window = tile + 2 * self.halo
        if limits is not None:
            low, high = limits
            if window > high:
                raise InvalidArgumentError(
                    f"tile + 2*halo must be at most {high}, the largest input edge of the model's "
                    f"engine, got {tile} + 2*{self.halo} = {window}; use tile <= {max(high - 2 * self.halo, 1)}"
                )
            if window < low:
                raise InvalidArgumentError(
                    f"tile + 2*halo must be at least {low}, the smallest input edge of the model's "
                    f"engine, got {tile} + 2*{self.halo} = {window}; use tile >= {low - 2 * self.halo}"
                )
        try:
            self._executor = PipelineExecutor(
                factory, self._device, window=(window, window), batch=self.batch, slots=self.slots, cuda_graphs=graphs
            )
        except MemoryError as exc:
            raise OutOfMemoryError(
                f"the buffers for {self.slots} slot(s) of batch={self.batch} windows of {window}x{window} "
                f"(tile={tile} + 2*halo={self.halo}) could not be allocated; use a smaller tile (CLI: --tile 128), "
                "tile='auto' on the CPU (windows sized to memory_budget_mb) or a smaller batch"
            ) from exc

    def _auto_window_pixels(self, limits: tuple[int, int] | None) -> int:
        """The most pixels one ``tile="auto"`` window may have: the budget over the model's
        bytes per pixel and the batch, within the engine's largest edge squared."""
        per_pixel = window_bytes_per_pixel(self.info, self._factory.activation_tensors)
        if per_pixel is None:
            pixels = (DEFAULT_TILE + 2 * self.halo) ** 2
            log.info(
                "tile='auto': the model's metadata gives no feature count, so windows keep the area of tile %d "
                "(%d pixels)",
                DEFAULT_TILE,
                pixels,
            )
        else:
            pixels = int(self.memory_budget_mb * 1e6) // (per_pixel * self.batch)
        if limits is not None:
            pixels = min(pixels, limits[1] * limits[1])
        return max(pixels, 1)

    def _close_device(self) -> None:
        if self._owns_device and self._device is not None:
            self._device.close()
        self._device = None

    # -- properties ------------------------------------------------------------------
    @property
    def backend(self) -> StageFactory:
        """The backend (a :class:`~runtime.backends.StageFactory`)."""
        return self._factory

    @property
    def info(self) -> ModelInfo:
        return self._factory.info

    @property
    def scale(self) -> int:
        return self.info.scale

    @property
    def pipelined(self) -> bool:
        """Whether batches are in flight on a GPU device (streams, async copies)."""
        return not getattr(self._device, "synchronous", False)

    @property
    def executor(self) -> PipelineExecutor:
        """The tile loop every image goes through."""
        assert self._executor is not None  # set in __init__; absent only if __init__ failed
        return self._executor

    @property
    def device(self) -> Any:
        """The executor's device: HostDevice, CudaDevice, or the device object given."""
        return self._device

    # -- public API ------------------------------------------------------------------
    def upscale(self, image: ImageSource | Any, *, output: str | None = None) -> Any:
        """Upscale ``image`` (path, PIL image, H×W / H×W×C array, or a frame on the GPU).

        Returns a (scale·H)×(scale·W)[×C] array with the dtype and channel layout of the
        input: a 2-D gray array (or gray file) gives a 2-D result. A frame on the GPU
        (``__cuda_array_interface__`` or CUDA ``__dlpack__``: CuPy, torch, a decoder's
        surface; H×W×3 uint8 with a uint8-nhwc model) is read in place, without a trip
        through host memory, and gives a :class:`~runtime.device_arrays.DeviceFrame` on the
        same GPU. ``output="host"`` or ``"device"`` asks for the other side (see the
        contract in :mod:`runtime.device_arrays`). Host DLPack producers work like arrays.
        """
        if output not in (None, "host", "device"):
            raise InvalidArgumentError(f"output must be None, 'host' or 'device', got {output!r}")
        if is_device_source(image):
            return self._upscale_device(image, output or "device")
        if is_host_dlpack(image):
            image = host_array_from_dlpack(image)
        array, info = read_image(image)
        if output == "device":
            return self._upscale_device_output(array, info)
        return self._upscale_array(array, info)

    def upscale_file(
        self, src: str | os.PathLike[str], dst: str | os.PathLike[str], *, overwrite: bool = False
    ) -> Path:
        """Read ``src``, upscale it and write ``dst`` atomically, keeping its ICC profile.

        ``dst``'s extension picks the format. An existing ``dst`` raises
        :class:`~runtime.errors.OutputExistsError` unless ``overwrite``; the check runs
        before any compute. An output array larger than ``output_budget_mb`` is streamed to
        a .tif ``dst`` band by band (:func:`runtime.streaming.stream_if_large`), with memory
        bounded by the band whatever the image size; other formats are then refused before
        any compute, with a message that says to write .tif.
        """
        from .streaming import stream_if_large  # numpy + Pillow; tifffile only when it streams

        dst = Path(dst)
        check_output_path(dst, overwrite=overwrite)
        streamed = stream_if_large(self, src, dst, overwrite=overwrite, budget_mb=self.output_budget_mb)
        if streamed is not None:
            return streamed.path
        frames, finfo = read_frames(src)
        if len(frames) == 1:  # exactly read_image's array and ImageInfo
            check_output_path(dst, overwrite=overwrite, info=finfo.image)  # depth/alpha before compute
            result = self._upscale_array(frames[0], finfo.image)
            return write_image(dst, result, finfo.image, overwrite=overwrite)
        if dst.suffix.lower() not in FRAME_FORMATS:
            raise ImageWriteError(
                dst,
                f"{src} has {len(frames)} frames; write {', '.join(sorted(FRAME_FORMATS))} to keep them all "
                f"(got {dst.suffix or 'no suffix'})",
            )
        results = list(self.upscale_many(frames))  # GPU backends pipeline across frames
        return write_frames(dst, results, finfo, overwrite=overwrite)

    def upscale_many(self, images: Iterable[ImageSource]) -> Iterator[np.ndarray]:
        """Upscale each image of ``images`` in order, yielding results one at a time.

        On a GPU the next image is read and its first tiles are in flight while the previous
        one is being finished, so a stream of frames keeps the GPU busy; close the iterator
        (or exhaust it) before using this Upscaler for anything else.
        """
        bar = self._progress(None)
        try:
            jobs = (self._prepare(*read_image(image)) for image in images)
            for result in self.executor.run(jobs, on_batch=bar.update):
                yield _clamp_float(result)
        except Exception as exc:
            if not _allocation_failed(exc) or self._last_plan is None:
                raise
            raise self._out_of_memory(self._last_plan) from exc
        finally:
            bar.close()

    def close(self) -> None:
        """Release the executor, and the backend and device if this Upscaler created them."""
        if self._executor is not None:
            self._executor.close()
        if self._ingest is not None:
            self._ingest.close()
            self._ingest = None
        if self._owns_backend and getattr(self, "_factory", None) is not None:
            self._factory.close()
        self._close_device()

    def __repr__(self) -> str:
        extra = f", slots={self.slots}" if self.pipelined else ""
        tile = (
            f"'auto' (windows <= {self._auto_pixels} px, {self.memory_budget_mb:g} MB)"
            if self._auto_pixels is not None
            else str(self.tile)
        )
        return f"Upscaler(backend={self.backend!r}, tile={tile}, halo={self.halo}, batch={self.batch}{extra})"

    def plan(self, height: int, width: int) -> TilePlan:
        """The tiles a ``height`` × ``width`` image gets (``plan.describe()`` says it in one line)."""
        last = self._last_plan
        if last is not None and (last.image_height, last.image_width) == (height, width):
            return last
        if self._auto_pixels is not None:
            plan = plan_auto(height, width, self.halo, self._auto_pixels, limits=self._limits)
        else:
            assert isinstance(self.tile, int)  # fixed unless _auto_pixels is set
            plan = plan_tiles(height, width, self.tile, self.halo, min_size=self._min_input_size())
        log.info("tiles: %s", plan.describe())  # once per image size: frames of one size log once
        self._last_plan = plan
        return plan

    # -- the pipeline ----------------------------------------------------------------
    def _check_dtype(self, info: ImageInfo) -> tuple[float, float]:
        """Value-range factors into and out of the model for this dtype."""
        io = self.info.io
        if info.dtype == np.uint8:
            return 1.0, 1.0
        if io.is_integer:
            raise InvalidArgumentError(
                f"{info.dtype} images need a float32-nchw model, but this model has {io.value} I/O "
                "(8-bit only); convert the image to uint8 or export the model with float32 I/O"
            )
        if info.dtype == np.uint16:
            return 1.0 / 257.0, 257.0
        return 1.0, 1.0  # float32, already 0..255

    def _min_input_size(self) -> int:
        limits = self._factory.window_limits()
        return 1 if limits is None else limits[0]

    def _prepare(self, array: np.ndarray, info: ImageInfo) -> ImageJob:
        """Plan the tiles and allocate the output of one image: everything but the compute."""
        input_scale, output_scale = self._check_dtype(info)
        height, width, channels = array.shape
        scale = self.scale
        shape = (height * scale, width * scale, channels)
        try:
            output = np.empty(shape, dtype=array.dtype)
        except MemoryError as exc:
            nbytes = int(np.prod(shape)) * array.dtype.itemsize
            raise OutOfMemoryError(
                f"the {width}x{height} image's x{scale} result is a {shape[1]}x{shape[0]}x{channels} {array.dtype} "
                f"array of {_gigabytes(nbytes)}, and that much memory could not be allocated; the output is held "
                "whole, so a smaller tile does not help: write it to a .tif file instead (upscale_file / the CLI "
                "stream outputs over output_budget_mb / --output-budget-mb band by band), or free memory"
            ) from exc
        plan = self.plan(height, width)  # after the output: a plan of an image too large to hold is moot
        self._check_overhead(plan)

        colour = 3 if channels >= 3 else 1
        passes = [Pass(array[:, :, :colour], output[:, :, :colour], colour == 1)]
        if info.layout.has_alpha:
            alpha = array[:height, :width, channels - 1 :]
            low, high = alpha.min(), alpha.max()
            if low == high:
                output[:, :, channels - 1] = low
            else:
                passes.append(Pass(array[:, :, channels - 1 :], output[:, :, channels - 1 :], True))
        log.debug("upscaling %dx%d %s %s in %d tiles", width, height, info.layout.value, info.dtype, len(plan))
        result = output[:, :, 0] if info.ndim == 2 else output
        return ImageJob(plan, passes, result, input_scale, output_scale)

    # -- frames on the GPU -------------------------------------------------------------
    def _device_frame(self, height: int, width: int) -> tuple[DeviceFrame, DeviceTarget]:
        scale = self.scale
        shape = (height * scale, width * scale, 3)
        buffer = self._device.alloc_device(shape[0] * shape[1] * 3)
        return DeviceFrame(buffer, shape, np.uint8, self._device), DeviceTarget(buffer.ptr, *shape)

    def _check_device_capable(self, what: str) -> None:
        if not self.pipelined or not hasattr(self._device, "copy_2d"):
            raise InvalidArgumentError(
                f"{what} needs a GPU backend (tensorrt, torch-cuda or onnxruntime-cuda), but this Upscaler "
                f"runs {self.backend.name} on the CPU; pass a host array (e.g. cupy.asnumpy(frame) or "
                "tensor.cpu().numpy()) or create Upscaler(backend='tensorrt')"
            )

    def _upscale_device(self, frame: Any, output: str) -> Any:
        """A frame on the GPU: windows gathered by device copies, result on the device or host."""
        self._check_device_capable(f"a {type(frame).__name__} on the GPU")
        if self._ingest is None:
            self._ingest = self._device.create_stream()
        image, ready = device_image(frame, stream=self._ingest.handle)
        check_device_io(self.info.io, image)
        if ready is not None:  # the producer's pending work on the frame comes first
            self._device.synchronize_handle(ready)
        plan = self.plan(image.height, image.width)
        self._check_overhead(plan)
        scale = self.scale
        result: Any
        target: Any
        if output == "device":
            result, target = self._device_frame(image.height, image.width)
        else:
            result = target = np.empty((image.height * scale, image.width * scale, 3), np.uint8)
        job = ImageJob(plan, [Pass(image, target)], result)
        try:
            return self._run_one(job)
        finally:
            release = getattr(image.owner, "release", None)  # a consumed DLPack capsule: hand it back now
            if release is not None:
                release()

    def _upscale_device_output(self, array: np.ndarray, info: ImageInfo) -> DeviceFrame:
        self._check_device_capable("output='device'")
        if array.dtype != np.uint8 or array.shape[2] != 3:
            raise InvalidArgumentError(
                f"output='device' gives H×W×3 uint8 frames, got a {info.layout.value} {info.dtype} image"
            )
        job = self._prepare(array, info)
        frame, target = self._device_frame(*array.shape[:2])
        job = dataclasses.replace(job, passes=[Pass(job.passes[0].source, target)], result=frame)
        return self._run_one(job)

    def _run_one(self, job: ImageJob) -> Any:
        bar = self._progress(len(job.plan) * len(job.passes))
        try:
            (result,) = self.executor.run([job], on_batch=bar.update)
            return result
        finally:
            bar.close()

    def _upscale_array(self, array: np.ndarray, info: ImageInfo) -> np.ndarray:
        job = self._prepare(array, info)
        bar = self._progress(len(job.plan) * len(job.passes))
        try:
            (result,) = self.executor.run([job], on_batch=bar.update)
            return _clamp_float(result)
        except Exception as exc:
            if not _allocation_failed(exc):
                raise
            raise self._out_of_memory(job.plan) from exc
        finally:
            bar.close()

    def _out_of_memory(self, plan: TilePlan) -> OutOfMemoryError:
        """What to say when a model call runs out of memory: its windows are too large."""
        height, width = plan.window_shape
        if self._auto_pixels is not None:
            cure = (
                f"lower memory_budget_mb (now {self.memory_budget_mb:g}; CLI: a fixed --tile 128) or batch={self.batch}"
            )
        else:
            cure = "use a smaller tile (CLI: --tile 128) or tile='auto' on the CPU (windows sized to memory_budget_mb)"
        return OutOfMemoryError(
            f"out of memory while running batches of {self.batch} window(s) of {width}x{height} ({plan.describe()}): "
            f"the model's activations did not fit; {cure}"
        )

    def _progress(self, total: int | None) -> Any:
        if self._tqdm is None:
            return _NoProgress()
        return self._tqdm(**{"total": total, "unit": "tile", "leave": False, **self._progress_options})

    def _check_overhead(self, plan: TilePlan) -> None:
        """Warn when ``plan`` computes over :data:`WARN_OVERHEAD` × the image's pixels, refuse it
        over ``max_overhead`` (both only past a megapixel of extra work: tiny images pass)."""
        overlap = plan.overlap
        image_pixels = plan.image_height * plan.image_width
        if overlap <= WARN_OVERHEAD or plan.window_pixels - image_pixels <= _OVERHEAD_FLOOR_PIXELS:
            return
        what = (
            f"tile={self.tile!r}, halo={self.halo}"
            if self._auto_pixels is None
            else f"tile='auto' (windows <= {self._auto_pixels} px), halo={self.halo}"
        )
        cost = f"{what} computes {overlap:,.1f}x this image's pixels ({plan.describe()})"
        cure = (
            "use tile='auto' (CLI: --tile auto)" if self._auto_pixels is None else "raise memory_budget_mb"
        ) + f" or a tile of at least {8 * max(self.halo, 1)} (8x the halo), or a smaller halo"
        if self.max_overhead is not None and overlap > self.max_overhead:
            raise InvalidArgumentError(
                f"refused: {cost}, above max_overhead={self.max_overhead:g}; {cure}; or allow it with "
                f"max_overhead={int(np.ceil(overlap))} (CLI: --max-overhead {int(np.ceil(overlap))})"
            )
        warnings.warn(f"{cost}: the halo costs more than the image; {cure}", OverheadWarning, stacklevel=4)


CHECKPOINT_SUFFIXES = frozenset({".safetensors", ".pt", ".pth", ".ckpt"})
"""Training checkpoints: only ``torch-cuda`` runs one (``.safetensors``); the rest need an export."""


def check_model_kind(model: Any, backend: str) -> None:
    """Refuse a training checkpoint given to a backend that runs ONNX or engine files, saying
    what it is and the two ways forward, instead of ONNX Runtime's ``INVALID_PROTOBUF``."""
    if not isinstance(model, (str, os.PathLike)):
        return
    path = Path(model)
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES or backend == "torch-cuda":
        return
    if suffix == ".safetensors":
        raise ModelError(
            f"{path}: a PyTorch training checkpoint (safetensors), not a model the {backend} backend runs; "
            f"export it to ONNX with `python export/to_onnx.py {path}` and pass the .onnx file, or run the "
            "checkpoint on a GPU with backend='torch-cuda' (CLI: --backend torch-cuda)"
        )
    raise ModelError(
        f"{path}: a {suffix} file is a pickled PyTorch checkpoint, which the runtime never loads (loading it "
        "could run code); the project's checkpoints are .safetensors (train/), exported to ONNX with "
        "python export/to_onnx.py CHECKPOINT"
    )


_ALLOCATION_FAILED = re.compile(r"bad_alloc|failed to allocate|unable to allocate|out of memory", re.IGNORECASE)


def _allocation_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure not yet explained: a MemoryError, or a backend's
    own (ONNX Runtime: ``RUNTIME_EXCEPTION ... std::bad_alloc``, OpenVINO, CUDA's out of memory)."""
    if isinstance(exc, OutOfMemoryError):
        return False
    return isinstance(exc, MemoryError) or bool(_ALLOCATION_FAILED.search(str(exc)))


def _gigabytes(nbytes: int) -> str:
    return f"{nbytes / 1e9:,.2f} GB"


def _clamp_float(result: Any) -> Any:
    """A float32 result clamped in place to 0..255 (integer results are clipped when stitched)."""
    if isinstance(result, np.ndarray) and result.dtype == np.float32:
        np.clip(result, *FLOAT_RANGE, out=result)
    return result


def _is_device(device: Any) -> bool:
    """A device object (not a GPU index or None)."""
    return device is not None and not isinstance(device, int) and hasattr(device, "create_stream")

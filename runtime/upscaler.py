"""``Upscaler``: any image in, the ×scale image back, same dtype and channel layout.

How an image goes through (see DESIGN.md, "Data flow"):

1. :func:`~runtime.image_io.read_image` turns a path, PIL image or array into an H×W×C
   view plus :class:`~runtime.image_io.ImageInfo` (arrays are not copied).
2. :func:`~runtime.tiling.plan_tiles` cuts it into fixed-shape windows; tiny images are
   padded to the backend's minimum size.
3. Batches of ``batch`` windows are gathered into one reused buffer in the model's layout,
   run through the backend, and each tile's upscaled core is written into the output.
   Peak memory is the output array plus a few tile-sized buffers, whatever the image size.

Two ways to run step 3, chosen by the backend:

* **Sequential** (``backend="onnxruntime"``, a :class:`~runtime.backends.Backend`): one
  batch after the other on the CPU (or ONNX Runtime's own CUDA provider). This stays the
  CPU default: on the CPU the model is the whole cost and the executor's emulated copies
  would only add work.
* **Pipelined** (``backend="tensorrt" | "torch-cuda" | "onnxruntime-cuda"``, or a
  :class:`~runtime.backends.DeviceStageFactory`): :class:`~runtime.pipeline.PipelineExecutor`
  with ``slots`` CUDA streams in flight, pinned buffers and async copies, pipelining tile
  batches within an image and across the images of :meth:`Upscaler.upscale_many`.

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
  needs a float32-nchw model. **float32** arrays are taken to be in 0..255 (the model's
  range) and come back unrounded and unclipped: the raw model output, handy for parity
  checks; they too need a float32-nchw model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .closing import Closing
from ._deps import require
from ._validate import check_int
from .backends import STAGE_FACTORIES, Backend, DeviceStageFactory, get_backend, get_stage_factory, resolve_auto
from .errors import InvalidArgumentError, ModelError
from .image_io import ImageInfo, ImageSource, check_output_path, read_image, write_image
from .model_info import ModelInfo, ModelIO
from .pipeline import DEFAULT_SLOTS, ImageJob, Pass, PipelineExecutor
from .stitching import allocate_batch, gather_windows, scatter_cores
from .tiling import pad_image, plan_tiles

__all__ = [
    "Upscaler",
    "DEFAULT_TILE",
    "DEFAULT_HALO",
    "DEFAULT_BATCH",
    "DEFAULT_GPU_BATCH",
    "DEFAULT_SLOTS",
    "DEFAULT_MODEL_NAME",
    "default_model_path",
]

log = logging.getLogger(__name__)

DEFAULT_TILE = 128
"""Core edge of a tile, in low-resolution pixels."""

DEFAULT_HALO = 16
"""Context kept around each tile, in low-resolution pixels, for models whose metadata
gives no ``recommended_halo`` (the export measures nothing; benchmarks/seams.py does, and
the bundled model records the halo chosen from that curve)."""

DEFAULT_BATCH = 1
"""Tiles per backend call. On CPU a 128² tile already fills the cores, and each extra tile
in a call adds its activations (~50 MB for the compact model at ×4) to peak memory; GPU
backends want larger batches and say so when they are chosen."""

DEFAULT_GPU_BATCH = 8
"""Tiles per enqueue for the pipelined GPU backends (capped by the stage's ``max_batch``):
enough windows per launch to fill a GPU with 128-pixel tiles, while the buffers of three
slots stay around 0.1 GB (float32 I/O, ×4, halo 16)."""

DEFAULT_MODEL_NAME = "eusr-compact-x4.onnx"


def default_model_path() -> Path:
    """Where the bundled default model lives (package data; may be absent in a checkout)."""
    return Path(__file__).resolve().parent / "models" / DEFAULT_MODEL_NAME


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Upscaler(Closing):
    """Upscale images by the model's scale (×4 by default), tile by tile.

    ``model`` is the model file of the backend: an ONNX file for ``"onnxruntime"`` and
    ``"onnxruntime-cuda"`` (default: the bundled compact ×4 model), a TensorRT engine for
    ``"tensorrt"``, an EUSR ``.safetensors`` checkpoint for ``"torch-cuda"``. ``backend`` is
    a name (``"auto"``, ``"onnxruntime"``, ``"tensorrt"``, ``"torch-cuda"``,
    ``"onnxruntime-cuda"``), a ready :class:`Backend` or a ready
    :class:`~runtime.backends.DeviceStageFactory` (both stay the caller's to close);
    ``backend_options`` go to the backend's constructor (e.g. ``{"providers": [...],
    "intra_op_threads": 2, "scale": 4}``, ``{"fp16": True}`` for torch-cuda). ``tile``,
    ``halo`` and ``batch`` trade memory for speed, see :mod:`runtime.tiling`; ``halo=None``
    takes the model's ``recommended_halo`` (else :data:`DEFAULT_HALO`), ``batch=None``
    :data:`DEFAULT_BATCH` (sequential) or :data:`DEFAULT_GPU_BATCH` (pipelined).
    ``progress`` shows a tqdm bar over tiles.

    Pipelined backends only: ``slots`` batches in flight (see :mod:`runtime.pipeline`),
    ``cuda_graphs`` to replay the enqueue as a CUDA graph where the stage allows it, and
    ``device``: a GPU index (default 0) or a device object such as
    :class:`~runtime.cuda.emulated.EmulatedDevice`. Not thread-safe: one Upscaler per thread.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        backend: str | Backend | DeviceStageFactory = "auto",
        tile: int = DEFAULT_TILE,
        halo: int | None = None,
        batch: int | None = None,
        progress: bool = False,
        backend_options: Mapping[str, Any] | None = None,
        slots: int = DEFAULT_SLOTS,
        cuda_graphs: bool = False,
        device: int | Any | None = None,
    ) -> None:
        self.tile = check_int("tile", tile, 1)
        if batch is not None:
            check_int("batch", batch, 1)
        if halo is not None:
            check_int("halo", halo, 0)  # refuse a bad value before loading any model
        self.slots = check_int("slots", slots, 1)
        self._tqdm = require("tqdm", pip="tqdm", purpose="progress=True").tqdm if progress else None
        self._backend: Backend | None = None
        self._factory: DeviceStageFactory | None = None
        self._executor: PipelineExecutor | None = None
        self._device: Any = None
        self._owns_backend = self._owns_device = False

        if isinstance(backend, (Backend, DeviceStageFactory)):
            if model is not None or backend_options:
                raise InvalidArgumentError(
                    "model and backend_options cannot be given together with a Backend instance; "
                    "the backend already holds its model"
                )
            if isinstance(backend, Backend):
                self._backend = backend
            else:
                self._factory = backend
        elif isinstance(backend, str):
            path = Path(model) if model is not None else default_model_path()
            if model is None and not path.is_file():
                raise ModelError(
                    f"the bundled default model {path} is missing from this installation; pass "
                    "model= the path of an .onnx file (export one with python export/to_onnx.py)"
                )
            options = dict(backend_options or {})
            name = backend
            if name == "auto":
                name, auto_options = resolve_auto(path)
                options = {**auto_options, **options}
            if name in STAGE_FACTORIES:
                self._device, self._owns_device = self._make_device(device), not _is_device(device)
                try:
                    self._factory = get_stage_factory(name, path, **options)
                except BaseException:
                    self._close_device()
                    raise
            else:
                self._backend = get_backend(name, path, **options)
            self._owns_backend = True
        else:
            raise InvalidArgumentError(
                "backend must be a backend name such as 'auto', a Backend or a DeviceStageFactory, "
                f"got {type(backend).__name__}"
            )

        try:
            self._setup(halo, batch, device, cuda_graphs)
        except BaseException:
            self.close()
            raise

    def _setup(self, halo: int | None, batch: int | None, device: Any, cuda_graphs: bool) -> None:
        recommended = self.info.recommended_halo
        if halo is None:
            halo = DEFAULT_HALO if recommended is None else recommended
        self.halo = check_int("halo", halo, 0)
        if recommended is not None and self.halo < recommended:
            log.warning(
                "halo=%d is below the model's recommended halo %d: tile seams may show",
                self.halo,
                recommended,
            )
        if self._factory is None:
            self.batch = DEFAULT_BATCH if batch is None else batch
            return
        factory = self._factory
        self.batch = min(DEFAULT_GPU_BATCH, factory.max_batch) if batch is None else batch
        window = self.tile + 2 * self.halo
        limits = factory.window_limits()
        if limits is not None:
            low, high = limits
            if window > high:
                raise InvalidArgumentError(
                    f"tile + 2*halo must be at most {high}, the largest input edge of the model's "
                    f"engine, got {self.tile} + 2*{self.halo} = {window}; use tile <= {max(high - 2 * self.halo, 1)}"
                )
            if window < low:
                raise InvalidArgumentError(
                    f"tile + 2*halo must be at least {low}, the smallest input edge of the model's "
                    f"engine, got {self.tile} + 2*{self.halo} = {window}; use tile >= {low - 2 * self.halo}"
                )
        if self._device is None:
            self._device, self._owns_device = self._make_device(device), not _is_device(device)
        self._executor = PipelineExecutor(
            factory, self._device, window=(window, window), batch=self.batch, slots=self.slots, cuda_graphs=cuda_graphs
        )

    @staticmethod
    def _make_device(device: Any) -> Any:
        if _is_device(device):
            return device
        from .cuda.resources import CudaDevice

        return CudaDevice(0 if device is None else device)

    def _close_device(self) -> None:
        if self._owns_device and self._device is not None:
            self._device.close()
        self._device = None

    # -- properties ------------------------------------------------------------------
    @property
    def backend(self) -> Backend | DeviceStageFactory:
        """The sequential Backend, or for pipelined backends the DeviceStageFactory."""
        return self._backend if self._backend is not None else self._factory

    @property
    def info(self) -> ModelInfo:
        return (self._backend if self._backend is not None else self._factory).info

    @property
    def scale(self) -> int:
        return self.info.scale

    @property
    def pipelined(self) -> bool:
        """Whether images go through the pipelined executor (a GPU backend)."""
        return self._executor is not None

    @property
    def executor(self) -> PipelineExecutor | None:
        return self._executor

    @property
    def device(self) -> Any:
        """The executor's device (CudaDevice, EmulatedDevice), None for sequential backends."""
        return self._device

    # -- public API ------------------------------------------------------------------
    def upscale(self, image: ImageSource) -> np.ndarray:
        """Upscale ``image`` (path, PIL image or H×W / H×W×C array).

        Returns a (scale·H)×(scale·W)[×C] array with the dtype and channel layout of the
        input: a 2-D gray array (or gray file) gives a 2-D result.
        """
        array, info = read_image(image)
        return self._upscale_array(array, info)

    def upscale_file(
        self, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False
    ) -> Path:
        """Read ``src``, upscale it and write ``dst`` atomically, keeping its ICC profile.

        ``dst``'s extension picks the format. An existing ``dst`` raises
        :class:`~runtime.errors.OutputExistsError` unless ``overwrite``; the check runs
        before any compute.
        """
        dst = Path(dst)
        check_output_path(dst, overwrite=overwrite)
        array, info = read_image(src)
        result = self._upscale_array(array, info)
        return write_image(dst, result, info, overwrite=overwrite)

    def upscale_many(self, images: Iterable[ImageSource]) -> Iterator[np.ndarray]:
        """Upscale each image of ``images`` in order, yielding results one at a time.

        With a pipelined backend the next image is read and its first tiles are in flight
        while the previous one is being finished, so a stream of frames keeps the GPU busy;
        close the iterator (or exhaust it) before using this Upscaler for anything else.
        """
        if self._executor is None:
            for image in images:
                yield self.upscale(image)
            return
        bar = self._progress(None)
        try:
            jobs = (self._prepare(*read_image(image)) for image in images)
            yield from self._executor.run(jobs, on_batch=bar.update)
        finally:
            bar.close()

    def close(self) -> None:
        """Release the executor, and the backend and device if this Upscaler created them."""
        if self._executor is not None:
            self._executor.close()
        if self._owns_backend:
            for owned in (self._backend, self._factory):
                if owned is not None:
                    owned.close()
        self._close_device()

    def __repr__(self) -> str:
        extra = f", slots={self.slots}" if self.pipelined else ""
        return (
            f"Upscaler(backend={self.backend!r}, tile={self.tile}, halo={self.halo}, batch={self.batch}{extra})"
        )

    # -- the pipeline ----------------------------------------------------------------
    def _check_dtype(self, info: ImageInfo) -> tuple[float, float]:
        """Value-range factors into and out of the model for this dtype."""
        io = self.info.io
        if info.dtype == np.uint8:
            return 1.0, 1.0
        if io is not ModelIO.FLOAT32_NCHW:
            raise InvalidArgumentError(
                f"{info.dtype} images need a float32-nchw model, but this model has {io.value} I/O "
                "(8-bit only); convert the image to uint8 or export the model with float32 I/O"
            )
        if info.dtype == np.uint16:
            return 1.0 / 257.0, 257.0
        return 1.0, 1.0  # float32, already 0..255

    def _min_input_size(self) -> int:
        if self._backend is not None:
            return self._backend.min_input_size
        limits = self._factory.window_limits()
        return 1 if limits is None else limits[0]

    def _prepare(self, array: np.ndarray, info: ImageInfo) -> ImageJob:
        """Plan the tiles and allocate the output of one image: everything but the compute."""
        input_scale, output_scale = self._check_dtype(info)
        height, width, channels = array.shape
        plan = plan_tiles(height, width, self.tile, self.halo, min_size=self._min_input_size())
        if plan.needs_padding:  # only images smaller than the backend's minimum input
            array = pad_image(array, plan.input_height, plan.input_width)
        scale = self.scale
        output = np.empty((height * scale, width * scale, channels), dtype=array.dtype)

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

    def _upscale_array(self, array: np.ndarray, info: ImageInfo) -> np.ndarray:
        job = self._prepare(array, info)
        bar = self._progress(len(job.plan) * len(job.passes))
        try:
            if self._executor is not None:
                (result,) = self._executor.run([job], on_batch=bar.update)
                return result
            self._run_sequential(job, bar)
            return job.result
        finally:
            bar.close()

    def _run_sequential(self, job: ImageJob, bar: Any) -> None:
        io = self._backend.io
        plan = job.plan
        buffer = allocate_batch(io, min(self.batch, len(plan)), *plan.window_shape)
        for p, tiles in job.batches(self.batch):
            inputs = gather_windows(p.source, tiles, buffer, io=io, input_scale=job.input_scale)
            results = self._backend.infer(inputs)
            scatter_cores(
                results, tiles, p.target, scale=self.scale, io=io, output_scale=job.output_scale, to_gray=p.to_gray
            )
            bar.update(len(tiles))

    def _progress(self, total: int | None) -> Any:
        if self._tqdm is None:
            return _NoProgress()
        return self._tqdm(total=total, unit="tile", leave=False)


def _is_device(device: Any) -> bool:
    """A device object (not a GPU index or None)."""
    return device is not None and not isinstance(device, int) and hasattr(device, "create_stream")

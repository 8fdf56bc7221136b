"""``Upscaler``: any image in, the ×scale image back, same dtype and channel layout.

How an image goes through (see DESIGN.md, "Data flow"):

1. :func:`~runtime.image_io.read_image` turns a path, PIL image or array into an H×W×C
   view plus :class:`~runtime.image_io.ImageInfo` (arrays are not copied).
2. :func:`~runtime.tiling.plan_tiles` cuts it into fixed-shape windows; tiny images are
   padded to the backend's minimum size.
3. Batches of ``batch`` windows are gathered into one reused buffer in the model's layout,
   run through the backend, and each tile's upscaled core is written into the output.
   Peak memory is the output array plus a few tile-sized buffers, whatever the image size.

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
from types import TracebackType
from typing import Any

import numpy as np

from ._deps import require
from ._validate import check_int
from .backends import Backend, get_backend
from .errors import InvalidArgumentError, ModelError
from .image_io import ImageInfo, ImageSource, check_output_path, read_image, write_image
from .model_info import ModelIO
from .stitching import allocate_batch, gather_windows, scatter_cores
from .tiling import pad_image, plan_tiles

__all__ = [
    "Upscaler",
    "DEFAULT_TILE",
    "DEFAULT_HALO",
    "DEFAULT_BATCH",
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

DEFAULT_MODEL_NAME = "eusr-compact-x4.onnx"


def default_model_path() -> Path:
    """Where the bundled default model lives (package data; may be absent in a checkout)."""
    return Path(__file__).resolve().parent / "models" / DEFAULT_MODEL_NAME


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Upscaler:
    """Upscale images by the model's scale (×4 by default), tile by tile.

    ``model`` is an ONNX file (default: the bundled compact ×4 model). ``backend`` is a
    registry name (``"auto"``, ``"onnxruntime"``) or a ready :class:`Backend`, which the
    caller keeps ownership of; ``backend_options`` go to the backend's constructor (e.g.
    ``{"providers": [...], "intra_op_threads": 2, "scale": 4}``). ``tile``, ``halo`` and
    ``batch`` trade memory for speed, see :mod:`runtime.tiling`; ``halo=None`` takes the
    model's ``recommended_halo`` (else :data:`DEFAULT_HALO`). ``progress`` shows a tqdm
    bar over tiles. Not thread-safe: use one Upscaler per thread.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        backend: str | Backend = "auto",
        tile: int = DEFAULT_TILE,
        halo: int | None = None,
        batch: int = DEFAULT_BATCH,
        progress: bool = False,
        backend_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.tile = check_int("tile", tile, 1)
        self.batch = check_int("batch", batch, 1)
        if halo is not None:
            check_int("halo", halo, 0)  # refuse a bad value before loading any model
        self._tqdm = require("tqdm", pip="tqdm", purpose="progress=True").tqdm if progress else None

        if isinstance(backend, Backend):
            if model is not None or backend_options:
                raise InvalidArgumentError(
                    "model and backend_options cannot be given together with a Backend instance; "
                    "the backend already holds its model"
                )
            self._backend, self._owns_backend = backend, False
        elif isinstance(backend, str):
            path = Path(model) if model is not None else default_model_path()
            if model is None and not path.is_file():
                raise ModelError(
                    f"the bundled default model {path} is missing from this installation; pass "
                    "model= the path of an .onnx file (export one with python export/to_onnx.py)"
                )
            self._backend = get_backend(backend, path, **dict(backend_options or {}))
            self._owns_backend = True
        else:
            raise InvalidArgumentError(
                f"backend must be a backend name such as 'auto' or a Backend, got {type(backend).__name__}"
            )

        recommended = self._backend.info.recommended_halo
        if halo is None:
            halo = DEFAULT_HALO if recommended is None else recommended
        self.halo = check_int("halo", halo, 0)
        if recommended is not None and self.halo < recommended:
            log.warning(
                "halo=%d is below the model's recommended halo %d: tile seams may show",
                self.halo,
                recommended,
            )

    # -- properties ------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def scale(self) -> int:
        return self._backend.scale

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
        """Upscale each image of ``images`` in order, yielding results one at a time."""
        for image in images:
            yield self.upscale(image)

    def close(self) -> None:
        """Close the backend if this Upscaler created it."""
        if self._owns_backend:
            self._backend.close()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Upscaler(backend={self._backend!r}, tile={self.tile}, halo={self.halo}, batch={self.batch})"
        )

    # -- the pipeline ----------------------------------------------------------------
    def _check_dtype(self, info: ImageInfo) -> tuple[float, float]:
        """Value-range factors into and out of the model for this dtype."""
        io = self._backend.io
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

    def _upscale_array(self, array: np.ndarray, info: ImageInfo) -> np.ndarray:
        input_scale, output_scale = self._check_dtype(info)
        height, width, channels = array.shape
        plan = plan_tiles(height, width, self.tile, self.halo, min_size=self._backend.min_input_size)
        if plan.needs_padding:  # only images smaller than the backend's minimum input
            array = pad_image(array, plan.input_height, plan.input_width)
        scale = self.scale
        output = np.empty((height * scale, width * scale, channels), dtype=array.dtype)

        colour = 3 if channels >= 3 else 1
        passes = [(array[:, :, :colour], output[:, :, :colour], colour == 1)]
        if info.layout.has_alpha:
            alpha = array[:height, :width, channels - 1 :]
            low, high = alpha.min(), alpha.max()
            if low == high:
                output[:, :, channels - 1] = low
            else:
                passes.append((array[:, :, channels - 1 :], output[:, :, channels - 1 :], True))

        io = self._backend.io
        buffer = allocate_batch(io, min(self.batch, len(plan)), *plan.window_shape)
        bar = self._progress(len(plan) * len(passes))
        try:
            for source, target, gray in passes:
                for start in range(0, len(plan), self.batch):
                    tiles = plan.tiles[start : start + self.batch]
                    inputs = gather_windows(source, tiles, buffer, io=io, input_scale=input_scale)
                    results = self._backend.infer(inputs)
                    scatter_cores(
                        results, tiles, target, scale=scale, io=io, output_scale=output_scale, to_gray=gray
                    )
                    bar.update(len(tiles))
        finally:
            bar.close()
        log.debug("upscaled %dx%d %s %s in %d tiles", width, height, info.layout.value, info.dtype, len(plan))
        return output[:, :, 0] if info.ndim == 2 else output

    def _progress(self, total: int) -> Any:
        if self._tqdm is None:
            return _NoProgress()
        return self._tqdm(total=total, unit="tile", leave=False)

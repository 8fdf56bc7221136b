"""The runner contract every inference backend follows.

In Polygraphy's style: the public :meth:`Backend.infer` validates the batch (type, dtype,
rank, layout, channel count) and the result (shape = scale × input), and only the private
:meth:`Backend._infer` differs between backends. Backends hold native resources (sessions,
engines, CUDA streams), so they close explicitly or as context managers. One conformance
test runs every registered backend through the same cases.
"""

from __future__ import annotations

import abc

import numpy as np

from ..closing import Closing
from ..errors import InvalidArgumentError, ModelError, UpscaleError
from ..model_info import ModelInfo, ModelIO
from ..stitching import batch_shape

__all__ = ["Backend"]

_DTYPES = {ModelIO.FLOAT32_NCHW: np.dtype(np.float32), ModelIO.UINT8_NHWC: np.dtype(np.uint8)}


class Backend(Closing, abc.ABC):
    """Runs a ×scale super-resolution model on batches of RGB windows.

    Subclasses set :attr:`name`, call ``super().__init__(info)`` once the model is loaded,
    and implement :meth:`_infer` (and :meth:`_close` if they own resources).
    """

    name: str = "base"

    def __init__(self, info: ModelInfo) -> None:
        self._info = info
        self._closed = False

    # -- facts about the model -------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def io(self) -> ModelIO:
        """The model's I/O layout: float32 NCHW or uint8 NHWC."""
        return self._info.io

    @property
    def scale(self) -> int:
        return self._info.scale

    @property
    def input_name(self) -> str:
        return self._info.input_name

    @property
    def output_name(self) -> str:
        return self._info.output_name

    @property
    def input_dtype(self) -> np.dtype:
        return _DTYPES[self.io]

    @property
    def min_input_size(self) -> int:
        """Smallest spatial input edge the backend runs; smaller images get padded."""
        return 1

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the contract ----------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Upscale a batch of windows in the model's layout; returns the model's output.

        float32-nchw: ``[N,3,H,W]`` float32 in 0..255 → ``[N,3,sH,sW]`` float32 (not
        clipped). uint8-nhwc: ``[N,H,W,3]`` uint8 → ``[N,sH,sW,3]`` uint8.
        """
        if self._closed:
            raise UpscaleError(f"backend {self.name!r} is closed; create a new one")
        self._check_batch(batch)
        n, h, w = self._spatial(batch.shape)
        result = self._infer(batch)
        expected = batch_shape(self.io, n, h * self.scale, w * self.scale)
        if not isinstance(result, np.ndarray) or result.shape != expected or result.dtype != self.input_dtype:
            got = f"{result.dtype} {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
            raise ModelError(
                f"backend {self.name!r}: model output {self.output_name!r} should be "
                f"{self.input_dtype} {expected} for a x{self.scale} {self.io.value} model, got "
                f"{got}; is the model's scale/io metadata right?"
            )
        return result

    def _check_batch(self, batch: np.ndarray) -> None:
        layout = "[N,3,H,W]" if self.io is ModelIO.FLOAT32_NCHW else "[N,H,W,3]"
        if not isinstance(batch, np.ndarray):
            raise InvalidArgumentError(f"batch must be a numpy array, got {type(batch).__name__}")
        if batch.dtype != self.input_dtype:
            raise InvalidArgumentError(
                f"batch dtype must be {self.input_dtype} for a {self.io.value} model, got {batch.dtype}"
            )
        channel_axis = 1 if self.io is ModelIO.FLOAT32_NCHW else 3
        if batch.ndim != 4 or batch.shape[channel_axis] != 3 or 0 in batch.shape:
            raise InvalidArgumentError(
                f"batch must have layout {layout} with 3 channels and no empty axis, got shape {batch.shape}"
            )

    def _spatial(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if self.io is ModelIO.FLOAT32_NCHW:
            return shape[0], shape[2], shape[3]
        return shape[0], shape[1], shape[2]

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a validated batch."""

    # -- resources -------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend's resources; idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """Release subclass resources (called once)."""


    def __repr__(self) -> str:
        return f"{type(self).__name__}(io={self.io.value!r}, scale={self.scale})"

"""A pure-numpy backend with a known receptive field, shared by the executor tests.

It needs no model file or optional dependency, so the pipelined executor, the CUDA layer on
its fake runtime and the tile loop can be compared against the sequential path anywhere.
"""

from __future__ import annotations

import numpy as np

from runtime.backends import Backend
from runtime.model_info import ModelInfo, ModelIO


class BlurUp(Backend):
    """numpy ×2: a 3×3 box blur (receptive radius 1) then nearest upsampling; both layouts."""

    name = "numpy-blur"

    def __init__(self, io: ModelIO = ModelIO.FLOAT32_NCHW, min_size: int = 1) -> None:
        super().__init__(ModelInfo(io=io, scale=2, input_name="lr", output_name="sr", recommended_halo=1))
        self._min = min_size
        self.calls = 0

    def window_limits(self) -> tuple[int, int] | None:
        return None if self._min <= 1 else (self._min, 1 << 30)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = batch.astype(np.float32)
        if self.io is ModelIO.UINT8_NHWC:
            x = x.transpose(0, 3, 1, 2)
        h, w = x.shape[2:]
        p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        y = sum(p[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)) / np.float32(9)
        y = y.repeat(2, 2).repeat(2, 3)
        if self.io is ModelIO.UINT8_NHWC:
            return np.clip(np.rint(y), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()
        return y.astype(np.float32)

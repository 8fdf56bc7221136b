"""The model's I/O layout and its numeric precision, as values that know their facts.

Every place that once branched on ``io is ModelIO.FLOAT32_NCHW`` asks the layout instead:
its numpy dtype, where the channel axis is, the shape of a batch, the TensorRT dtype name,
the ONNX type string. Adding a layout means adding one member here, not hunting branches.
Pure Python and numpy; no backend is imported.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["ModelIO", "Precision"]


class ModelIO(str, Enum):
    """The two I/O contracts an exported model can have."""

    FLOAT32_NCHW = "float32-nchw"
    """Input ``[N,3,H,W]`` float32 RGB in 0..255; output float32, not clipped."""
    UINT8_NHWC = "uint8-nhwc"
    """Input ``[N,H,W,3]`` uint8 RGB; output uint8, rounded and clamped in the graph."""

    # -- facts ---------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the model's input and output tensors."""
        return _FACTS[self][0]

    @property
    def channel_axis(self) -> int:
        """Axis of the 3 colour channels in a batch (1 for NCHW, 3 for NHWC)."""
        return _FACTS[self][1]

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """Axes of height and width in a batch."""
        return (2, 3) if self.channel_axis == 1 else (1, 2)

    @property
    def shape_text(self) -> str:
        """``"[N,3,H,W]"`` or ``"[N,H,W,3]"``, for messages."""
        return "[N,3,H,W]" if self.channel_axis == 1 else "[N,H,W,3]"

    @property
    def trt_dtype(self) -> str:
        """The ``tensorrt.DataType`` member name of the I/O tensors (no tensorrt import)."""
        return _FACTS[self][2]

    @property
    def onnx_type(self) -> str:
        """ONNX Runtime's type string of the I/O tensors (``NodeArg.type``)."""
        return _FACTS[self][3]

    @property
    def is_integer(self) -> bool:
        """Whether the model rounds and clamps its own output (uint8 I/O)."""
        return self.dtype.kind == "u"

    # -- shapes --------------------------------------------------------------------------
    def batch_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The shape of ``batch`` RGB windows of ``height`` × ``width`` in this layout."""
        if self.channel_axis == 1:
            return batch, 3, height, width
        return batch, height, width, 3

    def spatial(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(batch, height, width)`` of a batch shape in this layout."""
        h_axis, w_axis = self.spatial_axes
        return shape[0], shape[h_axis], shape[w_axis]

    def hwc(self, window: np.ndarray) -> np.ndarray:
        """A H×W×3 *view* of one window of a batch (``batch[i]``), whatever the layout.

        Gathering writes through it and stitching reads through it, so neither needs to
        know the layout: ``np.copyto(io.hwc(out[i]), tile)`` fills an NCHW slot in place.
        """
        return window.transpose(1, 2, 0) if self.channel_axis == 1 else window

    def check_batch(self, shape: tuple[int, ...], *, what: str = "batch") -> tuple[int, int, int]:
        """``(batch, height, width)`` of ``shape`` or a clear error if it is not this layout."""
        shape = tuple(shape)
        if (
            len(shape) != 4
            or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape)
            or shape[self.channel_axis] != 3
        ):
            raise InvalidArgumentError(
                f"{what} must have layout {self.shape_text} with 3 channels and no empty axis for "
                f"a {self.value} model, got shape {shape}"
            )
        return self.spatial(shape)

    def output_shape(self, input_shape: tuple[int, ...], scale: int) -> tuple[int, int, int, int]:
        """The model's output shape for ``input_shape`` at ×``scale``."""
        n, h, w = self.spatial(input_shape)
        return self.batch_shape(n, h * scale, w * scale)


_FACTS: dict[ModelIO, tuple[np.dtype, int, str, str]] = {
    ModelIO.FLOAT32_NCHW: (np.dtype(np.float32), 1, "FLOAT", "tensor(float)"),
    ModelIO.UINT8_NHWC: (np.dtype(np.uint8), 3, "UINT8", "tensor(uint8)"),
}


class Precision(str, Enum):
    """What the graph computes in between its I/O edges (the layout does not change).

    TensorRT builds the graph strongly typed, so the graph's own dtypes decide: there is no
    FP16/INT8 builder flag in TensorRT 11. The ONNX metadata records ``"precision"`` only
    for fp16 and int8: a file without the key is float32.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    @classmethod
    def parse(cls, value: str | Precision, *, what: str = "precision") -> Precision:
        """``value`` as a Precision, or an error naming ``what`` and the accepted values."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidArgumentError(f"{what} must be one of {[p.value for p in cls]}, got {value!r}") from None

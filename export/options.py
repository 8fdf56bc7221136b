"""What an ONNX export is asked to do: one frozen value, checked once, passed down.

The exporter's entry points (``export_onnx``, ``export_onnx_variants``, ``export_onnx_all``,
``build_onnx``) take an :class:`ExportOptions` and keyword changes to it, and derive the
per-variant options with :func:`dataclasses.replace`, so a new option is one field here
rather than a keyword threaded through every wrapper.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.onnx_io import ModelIO, Precision, parse_io, parse_precision
from runtime.utils import check_int

__all__ = ["DEFAULT_HALO", "DEFAULT_OPSET", "MIN_OPSET", "EXPORTERS", "ExportOptions"]

DEFAULT_HALO = 16
"""Context pixels (input resolution) the runtime should keep around each tile; stored as
``recommended_halo`` in the metadata. To be tuned against the network's receptive field."""

DEFAULT_OPSET = 18
"""The dynamo exporter's native opset; 17 works too but goes through a version converter."""

MIN_OPSET = 17
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """The variants to export and how; values are normalised and checked on creation
    (:class:`~export.errors.ExportError` naming the field).

    ``ios`` × ``precisions`` are the variants (file naming:
    :func:`export.onnx_io.export_paths`). ``validate``: check each graph against PyTorch
    before anything is written; ``images``: the folder of photos those checks crop from
    (None: ``data/photos/test`` if present); ``seed``: of the random inputs and crops.
    """

    scale: int = 4
    ios: tuple[ModelIO, ...] = (ModelIO.FLOAT32_NCHW,)
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    opset: int = DEFAULT_OPSET
    halo: int = DEFAULT_HALO
    exporter: str = "dynamo"
    validate: bool = True
    images: Path | None = None
    seed: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        try:
            ios = tuple(dict.fromkeys(parse_io(i) for i in _as_tuple(self.ios)))
            precisions = tuple(dict.fromkeys(parse_precision(p) for p in _as_tuple(self.precisions)))
        except ValueError as e:
            raise ExportError(str(e)) from None
        if not ios or not precisions:
            raise ExportError(f"nothing to export: precisions {list(precisions)}, ios {list(ios)}")
        if self.exporter not in EXPORTERS:
            raise ExportError(f"exporter must be one of {list(EXPORTERS)}, got {self.exporter!r}")
        self._set("ios", ios)
        self._set("precisions", precisions)
        self._set("scale", check_int("scale", self.scale, 1, error=ExportError))
        self._set("opset", check_int("opset", self.opset, MIN_OPSET, error=ExportError))
        self._set("halo", check_int("halo", self.halo, 0, error=ExportError))
        self._set("seed", check_int("seed", self.seed, 0, error=ExportError))
        if self.images is not None:
            if not isinstance(self.images, (str, os.PathLike)):
                raise ExportError(f"images must be a folder path or None, got {type(self.images).__name__}")
            self._set("images", Path(self.images))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> ExportOptions:
        """A copy with ``changes`` (field names), checked as a new value is."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown export options {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **changes) if changes else self


def _as_tuple(values: Any) -> tuple:
    """One value (``"fp16"``, ``ModelIO.UINT8_NHWC``) or an iterable of them, as a tuple."""
    if isinstance(values, str):  # ModelIO and Precision are str enums
        return (values,)
    return tuple(values)

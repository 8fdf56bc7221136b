"""Every exception the export package raises on purpose, under :class:`runtime.errors.UpscaleError`.

One place so that the ONNX exporter, the ONNX inspection and the TensorRT builder share
them without importing each other, and so that a caller can catch ``UpscaleError`` for
every expected failure of the whole project. Stdlib bases stay where callers relied on
them (``BuildOptionsError`` is a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime.errors import UpscaleError

if TYPE_CHECKING:
    from export.validate import ValidationReport

__all__ = [
    "ExportError",
    "ExporterFailure",
    "ExportValidationError",
    "BuildOptionsError",
    "TrtBuildError",
    "BuildInputError",
    "TrtUnavailableError",
    "OnnxParseError",
    "EngineBuildError",
]


# --------------------------------------------------------------------------- ONNX export


class ExportError(UpscaleError):
    """Export cannot proceed or failed: bad argument, scale not in the model, unwritable output."""


class ExporterFailure(ExportError):
    """torch.onnx.export itself failed or produced something other than asked for."""


class ExportValidationError(ExportError):
    """The exported graph failed a check; ``.report`` holds the comparison (None for
    structural failures such as onnx.checker or the I/O signature)."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- TensorRT build


class BuildOptionsError(UpscaleError, ValueError):
    """A build option is out of range; the message names the option (CLI flag)."""


class TrtBuildError(UpscaleError):
    """The engine could not be built; ``exit_code`` is the CLI's status for it."""

    exit_code = 1


class BuildInputError(TrtBuildError):
    """Bad input: missing/invalid ONNX, precision mismatch, I/O contract, unwritable output."""

    exit_code = 2


class TrtUnavailableError(TrtBuildError):
    """TensorRT cannot run here: not installed, or no usable GPU/driver."""

    exit_code = 3


class OnnxParseError(TrtBuildError):
    """TensorRT's ONNX parser rejected the graph; ``errors`` lists each parser error."""

    def __init__(self, message: str, errors: Sequence[str]) -> None:
        super().__init__(message)
        self.errors = list(errors)


class EngineBuildError(TrtBuildError):
    """The builder returned no engine, or the engine it made does not deserialise."""

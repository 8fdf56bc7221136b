"""One exception hierarchy for everything the runtime raises on purpose.

Callers (the CLI, an application embedding :class:`runtime.Upscaler`) can catch
:class:`UpscaleError` to handle every expected failure in one place, and the narrower
classes to react to one kind. Messages follow one rule: name the subject (file or
argument), say what was received, what was expected, and what to do about it. Errors
about a file keep the file in ``.path`` so a caller can report it without parsing text.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "UpscaleError",
    "InvalidArgumentError",
    "ImageReadError",
    "ImageWriteError",
    "OutputExistsError",
    "ModelError",
    "BackendUnavailableError",
    "MissingDependencyError",
    "OutOfMemoryError",
]


class UpscaleError(Exception):
    """Base class of every error the runtime raises deliberately."""


class InvalidArgumentError(UpscaleError, ValueError):
    """An argument (size, option, array) is outside what the runtime accepts."""


class _PathError(UpscaleError):
    """An error about one file; ``str()`` reads ``<path>: <reason>``."""

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageReadError(_PathError, OSError):
    """An input image is missing, unreadable, corrupt or in an unsupported mode."""


class ImageWriteError(_PathError, OSError):
    """An output image could not be written (folder missing, format limits, I/O)."""


class OutputExistsError(ImageWriteError, FileExistsError):
    """The output file exists and overwriting was not asked for."""


class ModelError(UpscaleError):
    """A model file is missing, invalid, or does not follow the runtime's I/O contract."""


class MissingDependencyError(UpscaleError, ImportError):
    """An optional Python package needed for the requested feature is not installed."""


class BackendUnavailableError(UpscaleError):
    """The requested inference backend is unknown, not implemented, or cannot run here."""


class OutOfMemoryError(UpscaleError, MemoryError):
    """An allocation failed; the message says how big it was and which option makes it smaller."""

"""Small shared utilities at the bottom of the house: stdlib (and numpy-free) only.

Every package of the project (runtime, export, calibration, train, benchmarks) uses these
instead of its own copy: integer argument checks, the argparse help formatter, image file
listing, atomic writes and file hashes. Nothing here imports another project module except
:mod:`runtime.errors`, so anything may import it without a cycle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import operator
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from .errors import InvalidArgumentError

__all__ = [
    "IMAGE_SUFFIXES",
    "check_int",
    "DefaultsHelpFormatter",
    "is_image_path",
    "list_images",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_sha256",
]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"}
)
"""File extensions treated as images when a folder is listed (compared lower-case)."""


# ----------------------------------------------------------------------------- arguments


def check_int(name: str, value: object, minimum: int, *, error: type[Exception] = InvalidArgumentError) -> int:
    """``value`` as an int if it is an integer >= ``minimum``, else ``error`` naming ``name``.

    Accepts ints and numpy integers, refuses bools and floats (``tile=128.0`` is a bug).
    """
    if isinstance(value, bool):
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})") from None
    if number < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {number}")
    return number


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the meaningless ones: None, flags, required options, and help
    texts that already say their default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if (
            action.default is None
            or isinstance(action.default, bool)
            or action.required
            or "default:" in (action.help or "")
        ):
            return action.help or ""
        return super()._get_help_string(action) or ""


# ----------------------------------------------------------------------------- files


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image extension (:data:`IMAGE_SUFFIXES`)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(
    folder: str | os.PathLike[str],
    *,
    what: str = "image folder",
    suffixes: Iterable[str] = IMAGE_SUFFIXES,
    error: type[Exception] = InvalidArgumentError,
) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    A missing folder or one without images raises ``error`` naming ``what`` (the flag or
    argument the user gave, e.g. ``"--images"``) and what was expected.
    """
    folder = Path(folder)
    wanted = {s.lower() for s in suffixes}
    if not folder.is_dir():
        raise error(f"{what} {folder}: not a folder (expected a folder of images)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted)
    if not files:
        raise error(f"{what} {folder}: holds no image files (looked for {', '.join(sorted(wanted))})")
    return files


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (mkstemp makes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], encode: Callable[[IO[bytes]], None]) -> Path:
    """Run ``encode(file)`` into a temporary file beside ``path``, fsync, rename over ``path``.

    Readers see the old file or the whole new one, never half of it; on any error (or
    KeyboardInterrupt) the temporary file is removed and the exception propagates.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            encode(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, make_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(f: IO[bytes]) -> None:
        f.write(data)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike[str], data: Mapping[str, Any], *, indent: int = 1) -> Path:
    """Write ``data`` as sorted, indented JSON with a final newline, atomically."""
    return atomic_write_bytes(path, (json.dumps(data, indent=indent, sort_keys=True) + "\n").encode())


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (engines and checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()

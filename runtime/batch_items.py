"""What one image of a batch is, and how it is upscaled: shared by ``batch`` and its Ray actors.

:class:`Location` (a local path or a pyarrow filesystem path), :class:`Item` (a source and its
output), :class:`UpscalerSettings` (the ``upscale`` options, picklable for Ray) and
:func:`process_item` (one ``Upscaler.upscale_file`` call, every failure made a result row).
Kept apart from :mod:`runtime.batch` so that :mod:`runtime.batch_ray` can import it while
``batch`` imports ``batch_ray`` only when ``--ray`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import posixpath
import re
import secrets
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._deps import require
from .errors import InvalidArgumentError, OutputExistsError, UpscaleError
from .utils import atomic_write_bytes

__all__ = ["Item", "Location", "UpscalerSettings", "output_name", "process_item", "resolve_location"]

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""What a URI (rather than a local path) starts with: ``scheme://``."""
CLUSTER_PIP = '"fourpp-eusr[cluster]"'


def output_name(source_name: str, scale: int, fmt: str = "png") -> str:
    """The output file name ``upscale`` and ``batch`` give ``source_name`` in a folder.

    ``<stem>_x<scale>.png``, or with ``fmt="same"`` the source's own (lower-cased) extension.
    """
    stem, suffix = posixpath.splitext(posixpath.basename(source_name))
    return f"{stem}_x{scale}{'.png' if fmt == 'png' else suffix.lower()}"


# --------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class Location:
    """A file or folder: on the local disk (``fs`` None) or on a pyarrow filesystem.

    ``text`` is how reports name it (the path or URI), ``path`` what the filesystem takes.
    Both survive pickling, so plans travel to Ray workers.
    """

    text: str
    path: str
    fs: Any = None

    @property
    def local(self) -> bool:
        return self.fs is None

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/")) if self.fs is not None else Path(self.path).name

    def child(self, name: str) -> Location:
        if self.fs is None:
            return Location(str(Path(self.path) / name), str(Path(self.path) / name))
        return Location(_join_uri(self.text, name), posixpath.join(self.path.rstrip("/"), name), self.fs)

    def kind(self) -> str:
        """``"file"``, ``"dir"`` or ``"missing"``."""
        if self.fs is None:
            p = Path(self.path)
            return "dir" if p.is_dir() else "file" if p.exists() else "missing"
        from pyarrow.fs import FileType

        info = self.fs.get_file_info(self.path)
        return {FileType.Directory: "dir", FileType.File: "file"}.get(info.type, "missing")

    def exists(self) -> bool:
        return self.kind() != "missing"

    def read_bytes(self) -> bytes:
        if self.fs is None:
            return Path(self.path).read_bytes()
        with self.fs.open_input_stream(self.path) as f:
            return bytes(f.read())

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` atomically: a reader sees the old file or the whole new one."""
        if self.fs is None:
            atomic_write_bytes(self.path, data)
            return
        tmp = posixpath.join(posixpath.dirname(self.path), f".{self.name}.{secrets.token_hex(4)}.tmp")
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, self.path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.delete_file(tmp)
            raise

    def make_dir(self) -> None:
        if self.fs is None:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        else:
            self.fs.create_dir(self.path, recursive=True)


def _join_uri(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def resolve_location(text: str, *, what: str = "SRC") -> Location:
    """A path or URI as a :class:`Location`; ``file://`` URIs become local paths."""
    if not URI.match(text):
        return Location(text, text)
    fs_module = require("pyarrow.fs", pip=f"{CLUSTER_PIP} (or pyarrow)", purpose=f"the {what} URI {text}")
    try:
        fs, path = fs_module.FileSystem.from_uri(text)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...: one message naming the URI
        raise InvalidArgumentError(f"{what} {text}: pyarrow cannot open this URI ({exc})") from exc
    if isinstance(fs, fs_module.LocalFileSystem):
        return Location(path, path)
    return Location(text, path, fs)


@dataclass(frozen=True)
class Item:
    """One image to upscale: where it is read from and where its output goes."""

    source: Location
    output: Location


# --------------------------------------------------------------------------- the upscaler


@dataclass(frozen=True)
class UpscalerSettings:
    """How to build the Upscaler: the ``upscale`` command's options, picklable for Ray actors."""

    model: str | None = None
    backend: str = "auto"
    threads: int | None = None
    tile: Any = None  # None: the Upscaler's default
    halo: int | None = None
    batch: int | None = None
    slots: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> UpscalerSettings:
        from .bundled import resolve_model

        model = resolve_model(args.model, args.precision, what="--precision")
        return cls(
            model=None if model is None else str(model),
            backend=args.backend,
            threads=args.threads,
            tile=args.tile,
            halo=args.halo,
            batch=args.batch,
            slots=args.slots,
        )

    def backend_options(self) -> Any:
        """``backend`` as a name, or its typed options with ``threads`` applied (as ``upscale --threads``)."""
        if self.threads is None:
            return self.backend
        from .backends import resolve, with_overrides
        from .upscaler import default_model_path

        options = resolve(self.backend, Path(self.model) if self.model is not None else default_model_path())
        if "threads" not in {f.name for f in dataclasses.fields(options)}:
            raise InvalidArgumentError(
                f"--threads applies to the CPU backends (onnxruntime, openvino), not {options.name}"
            )
        return with_overrides(options, {"threads": self.threads}, what="--threads")

    def create(self) -> Any:
        from .upscaler import Upscaler

        extra: dict[str, Any] = {k: v for k, v in (("tile", self.tile), ("slots", self.slots)) if v is not None}
        return Upscaler(self.model, backend=self.backend_options(), halo=self.halo, batch=self.batch, **extra)

    def scale(self) -> int:
        """The model's scale, read from its metadata where that is cheap (ONNX), else by loading it."""
        from .upscaler import default_model_path

        model = Path(self.model) if self.model is not None else default_model_path()
        if model.suffix.lower() == ".onnx":
            from .backends.onnxruntime_backend import OnnxRuntimeBackend

            with OnnxRuntimeBackend(model) as backend:
                return int(backend.info.scale)
        with self.create() as upscaler:
            return int(upscaler.scale)


# --------------------------------------------------------------------------- one image


def process_item(
    upscaler: Any, item: Item, *, overwrite: bool, scratch: Path, data: bytes | None = None
) -> dict[str, Any]:
    """Upscale one item with ``upscaler.upscale_file`` and return its result row.

    A local source is read in place (``data`` None); a remote one, or ``data`` already read
    (Ray's read tasks), is spooled into ``scratch`` under its own name, so the project's reader
    (which may reopen the file for 16-bit samples) sees a real file. A remote output is written
    into ``scratch`` and moved onto its name atomically. Every failure becomes the row's
    ``error``, naming the source, never an exception.
    """
    start = time.perf_counter()
    row: dict[str, Any] = {"source": item.source.text, "output": item.output.text, "status": "done", "error": ""}
    spooled: Path | None = None
    local_out: Path | None = None
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if data is None and item.source.local:
                src = Path(item.source.path)
            else:
                spool_dir = Path(tempfile.mkdtemp(dir=scratch))
                spooled = spool_dir / (item.source.name or "image")
                spooled.write_bytes(item.source.read_bytes() if data is None else data)
                src = spooled
            if item.output.local:
                dst = Path(item.output.path)
                upscaler.upscale_file(src, dst, overwrite=overwrite)
            else:
                if not overwrite and item.output.exists():
                    raise OutputExistsError(item.output.text, "already exists; pass --overwrite to replace it")
                local_out = Path(tempfile.mkdtemp(dir=scratch)) / item.output.name
                upscaler.upscale_file(src, local_out, overwrite=True)
                item.output.write_bytes(local_out.read_bytes())
                dst = local_out
            row["megapixels"] = _input_megapixels(dst, upscaler.scale)
    except UpscaleError as exc:
        row.update(status="failed", error=_named(str(exc), spooled, item.source.text))
    except Exception as exc:  # noqa: BLE001 - one bad image must not end a batch of millions
        row.update(status="failed", error=f"{item.source.text}: unexpected {type(exc).__name__}: {exc}")
    finally:
        for path in (spooled, local_out):
            if path is not None:
                shutil.rmtree(path.parent, ignore_errors=True)
    row.setdefault("megapixels", 0.0)
    row["seconds"] = time.perf_counter() - start
    row["warnings"] = [_named(str(w.message), spooled, item.source.text) for w in caught]
    if row["status"] == "failed" and not row["error"].startswith(item.source.text):
        row["error"] = f"{item.source.text}: {row['error']}"
    return row


def _named(message: str, spooled: Path | None, source: str) -> str:
    """``message`` with the spooled copy's path replaced by the source's name."""
    return message.replace(str(spooled), source) if spooled is not None else message


def _input_megapixels(output: Path, scale: int) -> float:
    from PIL import Image

    with Image.open(output) as image:
        width, height = image.size
    return width * height / (scale * scale) / 1e6

"""Export every asked-for variant, check them all, and only then write them.

A failed check (or a failed export) leaves nothing at any output path: the graphs are
built and validated in memory, the uint8 graph of each precision is cross-checked against
its float graph, and the files are written last, each atomically
(:func:`runtime.utils.atomic_write_bytes`: temporary file, fsync, rename). An unwritable
output is found before the minutes of exporting, not after.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.errors import ExportError, ExportValidationError
from export.graph import build_graph
from export.load import ModelSource, check_scale, load_source
from export.onnx_io import ModelIO, Precision, export_paths
from export.options import ExportOptions
from export.validate import cross_check_io, validate_onnx
from runtime.utils import atomic_write_bytes
from train.models.eusr import EUSR

__all__ = ["export_onnx_all"]


def _check_writable(path: Path) -> None:
    """Fail fast on an output that cannot be written: a folder, or a folder we cannot create
    or write a file in (probed with a temporary file, removed at once)."""
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; -o needs a file name such as {path / 'model.onnx'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ExportError(f"{path}: cannot write the output there ({e.strerror or e}); choose another -o") from None


def export_onnx_all(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike[str],
    path: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    echo: Callable[[str], None] | None = None,
    **changes: Any,
) -> dict[tuple[Precision, ModelIO], Path]:
    """Export every (precision, I/O) variant of ``options`` (naming:
    :func:`export.onnx_io.export_paths`), all validated, and the uint8 graph of each
    precision cross-checked against its float graph (:func:`~export.validate.cross_check_io`)
    when both are exported, before any file is written.

    ``changes`` are :class:`~export.options.ExportOptions` fields applied to ``options``
    (``ios=("uint8-nhwc",)``, ``scale=2``, ...). Raises ``CheckpointError`` (bad
    checkpoint), :class:`ExportError` (bad argument, unwritable output) or
    :class:`ExportValidationError` on a failed check (``.report`` set), leaving nothing at
    the output paths. ``echo`` receives progress lines and the tables.
    """
    echo = echo or (lambda line: None)
    options = (options or ExportOptions()).replace(**changes)
    source = load_source(model_or_checkpoint)
    scale = check_scale(source.model, options.scale)
    paths = export_paths(path, options.ios, options.precisions)
    for out in paths.values():
        _check_writable(out)

    protos = {}
    for precision, io in paths:
        t0 = time.perf_counter()
        proto = build_graph(source, options, io=io, precision=precision)
        echo(
            f"exported x{scale} {io.value} {precision.value} ({options.exporter}, opset {options.opset}) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        if options.validate:
            report = validate_onnx(
                proto, source.model, io=io, scale=scale, images=options.images, seed=options.seed, precision=precision
            )
            echo(report.table())
            echo(report.summary())
            if not report.passed:
                raise ExportValidationError(f"x{scale} {io.value} {precision.value}: {report.summary()}", report)
        protos[(precision, io)] = proto
    if options.validate:
        for precision in options.precisions:
            pair = protos.get((precision, ModelIO.FLOAT32_NCHW)), protos.get((precision, ModelIO.UINT8_NHWC))
            if None in pair:
                continue
            report = cross_check_io(*pair, images=options.images, seed=options.seed)
            echo(report.table())
            echo(report.summary())
            if not report.passed:
                raise ExportValidationError(
                    f"x{scale} {precision.value} uint8 vs float graph: {report.summary()}", report
                )

    blobs = {key: proto.SerializeToString() for key, proto in protos.items()}
    for key, out in paths.items():
        try:
            atomic_write_bytes(out, blobs[key])
        except OSError as e:
            raise ExportError(f"{out}: cannot write the output ({e.strerror or e}); choose another -o") from e
    return paths

"""Export one scale path of a 4PP-EUSR checkpoint to ONNX, and check it against PyTorch.

    python export/to_onnx.py CHECKPOINT -o model.onnx                 # ×4, float32 NCHW
    python export/to_onnx.py CHECKPOINT -o model.onnx --io both       # + model.uint8.onnx
    python -m export.to_onnx CHECKPOINT -o x2.onnx --scale 2 --io uint8-nhwc
    python export/to_onnx.py CHECKPOINT -o model.onnx --precision fp16  # fp16 inside, same I/O
    python export/to_onnx.py CHECKPOINT -o m.onnx --precision both --io both
        # m.onnx, m.uint8.onnx, m.fp16.onnx, m.fp16.uint8.onnx

The graph has dynamic batch, height and width (opset >= 17, default 18), constant-folded,
in eval mode, and carries a JSON description under the ``metadata_props`` key
``fourpp_eusr`` (see :func:`export.graph.build_metadata`), which ``runtime`` reads. I/O
contracts are described in ``export/onnx_io.py``.

Unless told not to, every export is validated before it is written
(``export/validate.py``): ``onnx.checker`` (full check), the graph's I/O signature (names,
dtypes, dynamic axes), then ONNX Runtime (CPU) against PyTorch on random inputs and on
crops of real photos of odd sizes, batch 1 and 3. When both I/O variants of a precision
are exported, the uint8 graph must also equal the float graph rounded within 1 level on
the same inputs. Files are written only after all checks pass (``export/write.py``).

``--precision fp16`` (or ``both``) exports the path with its layers in float16 between
float32 edges (``export/fp16.py`` says why this beats the converters): the I/O contract
is unchanged, the metadata gains ``"precision": "fp16"``. INT8 graphs are made from the
fp32 export by ``calibration/``, not here.

This module is the command line and the public entry points; the work is done by
``export/load.py`` (checkpoint → model), ``export/graph.py`` (model → ONNX graph),
``export/validate.py`` and ``export/write.py``, all driven by one
:class:`~export.options.ExportOptions`.

Exit status: 0 success, 1 validation or export failure, 2 bad arguments or input
(missing/invalid checkpoint, scale not in the model, unwritable output).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from export.errors import ExporterFailure, ExportError, ExportValidationError
from export.graph import build_metadata, build_onnx
from export.load import ModelSource, check_scale, load_source
from export.onnx_io import EXPORT_PRECISIONS, ModelIO, Precision
from export.options import DEFAULT_HALO, DEFAULT_OPSET, EXPORTERS, MIN_OPSET, ExportOptions
from export.validate import (
    CASES,
    DEFAULT_IMAGES,
    MAX_ABS_ERR_FLOAT,
    MAX_ABS_ERR_UINT8,
    MIN_PSNR_DB,
    MIN_PSNR_FP16_DB,
    CaseResult,
    ValidationReport,
    cross_check_io,
    validate_onnx,
)
from export.write import export_onnx_all
from runtime.utils import DefaultsHelpFormatter
from train.checkpoint import CheckpointError
from train.models.eusr import EUSR

__all__ = [
    "DEFAULT_HALO",
    "DEFAULT_OPSET",
    "DEFAULT_IMAGES",
    "MIN_OPSET",
    "EXPORTERS",
    "CASES",
    "MIN_PSNR_DB",
    "MAX_ABS_ERR_FLOAT",
    "MAX_ABS_ERR_UINT8",
    "MIN_PSNR_FP16_DB",
    "ExportError",
    "ExportValidationError",
    "ExporterFailure",
    "ExportOptions",
    "ModelSource",
    "CaseResult",
    "ValidationReport",
    "load_source",
    "build_metadata",
    "build_onnx",
    "validate_onnx",
    "export_onnx",
    "export_onnx_variants",
    "export_onnx_all",
    "cross_check_io",
    "main",
]

Model = EUSR | ModelSource | str | os.PathLike


def export_onnx_variants(
    model_or_checkpoint: Model,
    path: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    ios: Iterable[str | ModelIO] | None = None,
    precision: str | Precision | None = None,
    echo: Callable[[str], None] | None = None,
    **changes: Any,
) -> dict[ModelIO, Path]:
    """Several I/O variants of one precision (naming: :func:`export.onnx_io.variant_paths`),
    keyed by I/O: :func:`export_onnx_all` with ``ios`` (default: both, or ``options.ios``)
    and ``precision`` (default fp32, or the first of ``options.precisions``)."""
    options = options or ExportOptions(ios=tuple(ModelIO))
    options = options.replace(
        ios=options.ios if ios is None else tuple(ios),
        precisions=options.precisions[:1] if precision is None else (precision,),
        **changes,
    )
    paths = export_onnx_all(model_or_checkpoint, path, options, echo=echo)
    return {io: out for (_, io), out in paths.items()}


def export_onnx(
    model_or_checkpoint: Model,
    path: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    io: str | ModelIO | None = None,
    precision: str | Precision | None = None,
    echo: Callable[[str], None] | None = None,
    **changes: Any,
) -> Path:
    """Export the ``scale`` path of an EUSR (model or checkpoint path) to ``path``.

    One variant: ``io`` (default float32-nchw, or the first of ``options.ios``) and
    ``precision`` (default fp32; ``"fp16"``: float16 inside, the same I/O). ``changes``
    are :class:`ExportOptions` fields (``scale=2``, ``exporter="torchscript"``, ``halo=8``,
    ``validate=False``, ``images=``, ``seed=``, ``verbose=``). Validated first unless
    ``validate=False`` (see :func:`validate_onnx`); written atomically, and only when
    validation passes. Raises ``CheckpointError`` (bad checkpoint), :class:`ExportError`
    (bad argument, unwritable output) or :class:`ExportValidationError`.
    """
    options = options or ExportOptions()
    options = options.replace(
        ios=options.ios[:1] if io is None else (io,),
        precisions=options.precisions[:1] if precision is None else (precision,),
        **changes,
    )
    return next(iter(export_onnx_all(model_or_checkpoint, path, options, echo=echo).values()))


# --------------------------------------------------------------------------- CLI


def _refuse_int8(text: str) -> str:
    """``--precision`` values pass through, except int8, refused with what to do instead."""
    if text == Precision.INT8.value:
        raise argparse.ArgumentTypeError(
            "int8 is not made by the ONNX exporter; export fp32, then quantize it: "
            "python -m calibration quantize MODEL.onnx --data calib.npz -o MODEL.int8.onnx"
        )
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="to_onnx.py",
        description=(
            "Export one scale path of a 4PP-EUSR checkpoint to ONNX (dynamic batch/height/width, "
            "metadata under 'fourpp_eusr'), validate it with onnx.checker and ONNX Runtime against "
            "PyTorch, and only then write it."
        ),
        epilog=(
            "--io both writes the float32-nchw model at -o and the uint8-nhwc one beside it as "
            "<stem>.uint8.onnx (model.onnx -> model.uint8.onnx). --precision both writes the fp16 "
            "graphs beside them as <stem>.fp16.onnx (and <stem>.fp16.uint8.onnx); a single "
            "--precision fp16 writes at -o itself. Exit status: 0 ok, 1 validation "
            "or export failed, 2 bad arguments or input."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="EUSR checkpoint (.safetensors) written by train/")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), default=4, help="which path of the multi-scale model")
    p.add_argument(
        "--io",
        choices=[m.value for m in ModelIO] + ["both"],
        default=ModelIO.FLOAT32_NCHW.value,
        help="float32-nchw: float32 [N,3,H,W] 0..255 in/out (unclipped); uint8-nhwc: uint8 [N,H,W,3] "
        "in/out, round+clip in the graph; both: one file of each",
    )
    p.add_argument(
        "--precision",
        type=_refuse_int8,
        choices=[m.value for m in EXPORT_PRECISIONS] + ["both"],
        default=Precision.FP32.value,
        help="fp32; fp16: the layers compute in float16 between float32 edges, I/O unchanged "
        f"(checked: finite, PSNR >= {MIN_PSNR_FP16_DB:g} dB vs float32); both: one file of each "
        "(int8: quantize the fp32 export with python -m calibration quantize)",
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    p.add_argument(
        "--halo", type=int, default=DEFAULT_HALO, help="recommended_halo stored in the metadata (input pixels)"
    )
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="torch.onnx exporter: dynamo (torch.export) or the deprecated torchscript one",
    )
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="write without the onnx.checker / ONNX Runtime checks (not recommended)",
    )
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help=f"folder of photos to crop validation patches from (default: {DEFAULT_IMAGES}, if present)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random validation inputs and crop positions")
    p.add_argument("-v", "--verbose", action="store_true", help="show the exporter's own warnings and logs")
    return p


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ExportOptions:
    """The checked options of the command line; a bad value exits 2 naming its flag."""
    for flag, value, minimum in (
        ("--opset", args.opset, MIN_OPSET),
        ("--halo", args.halo, 0),
        ("--seed", args.seed, 0),
    ):
        if value < minimum:
            parser.error(f"{flag} must be >= {minimum}, got {value}")
    if args.validate and args.images is not None and not args.images.is_dir():
        parser.error(f"--images {args.images}: no such folder")
    try:
        return ExportOptions(
            scale=args.scale,
            ios=tuple(ModelIO) if args.io == "both" else (args.io,),
            precisions=EXPORT_PRECISIONS if args.precision == "both" else (args.precision,),
            opset=args.opset,
            halo=args.halo,
            exporter=args.exporter,
            validate=args.validate,
            images=args.images,
            seed=args.seed,
            verbose=args.verbose,
        )
    except ExportError as e:
        parser.error(str(e))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    options = _options(parser, args)

    t0 = time.perf_counter()
    try:
        source = load_source(args.checkpoint)
        check_scale(source.model, options.scale)
    except (CheckpointError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"loaded {args.checkpoint} (config {source.config_name!r}, scales {list(source.model.scales)}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    try:
        paths = export_onnx_all(source, args.output, options, echo=print)
    except ExportValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"error: nothing written to {args.output}", file=sys.stderr)
        return 1
    except ExporterFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ExportError as e:  # arguments, output path, image folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (precision, io), out in paths.items():
        print(f"wrote {out} (x{options.scale} {io.value} {precision.value}, {out.stat().st_size / 1e6:.2f} MB)")
    print(f"done in {time.perf_counter() - t0:.1f} s" + ("" if options.validate else " (not validated)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

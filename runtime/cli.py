"""Command line: ``fourpp-eusr upscale IMAGES... -o OUT`` and ``fourpp-eusr info MODEL``.

Batch-friendly: each image that fails prints one ``error: <file>: <reason>`` line on
stderr and the others are still processed. Exit status: 0 when every image was written,
1 when some failed, 2 for usage or set-up errors (bad options, no images, unloadable
model) where nothing could be attempted, 130 after Ctrl-C and 143 after SIGTERM (one line,
no traceback; the write in progress leaves no temporary file).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .batch import add_batch_command, output_name
from .batch import run_command as run_batch_command
from .errors import MissingDependencyError, UpscaleError
from .image_io import READ_EXTENSIONS, WRITE_FORMATS, is_image_path, pixel_limit
from .serve import add_serve_command, run_serve_command
from .upscaler import (
    DEFAULT_BATCH,
    DEFAULT_HALO,
    DEFAULT_MAX_OVERHEAD,
    DEFAULT_TILE,
    WARN_OVERHEAD,
    Upscaler,
    check_model_kind,
    default_model_path,
)

__all__ = ["main", "build_parser"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM: what shells report

DEFAULT_MAX_PIXELS = 178_956_970
"""Pixels an input may have (``--max-pixels``): where Pillow refuses by default (twice its
``MAX_IMAGE_PIXELS``), without the "could be decompression bomb" warning below it."""

TILE_BAR_DELAY_S = 1.0
"""On a terminal, an image that takes longer than this gets a bar over its tiles (ETA)."""

IMAGE_LIKE_SUFFIXES = READ_EXTENSIONS | {
    ".apng", ".avif", ".heic", ".heif", ".jxl", ".jp2", ".j2k", ".exr", ".hdr", ".ico", ".psd", ".svg", ".dng",
}  # fmt: skip
"""Extensions that make ``-o`` look like an image file name, writable (WRITE_FORMATS) or not."""


class _UsageError(Exception):
    """A problem with the command line as a whole: exit status 2."""


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks (temporary files) run."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _float_at_least(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum:g}, got {text}")
        return value

    return parse


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _tile(text: str) -> int | str:
    return "auto" if text == "auto" else _int_at_least(1)(text)


PRECISIONS = ("fp32", "int8")
"""The bundled model's variants (runtime/bundled.py)."""


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="which bundled model: fp32 (default, exact) or int8 (its gated INT8 Q/DQ variant: >= 40 dB "
        "PSNR vs fp32, <= 0.3 dB PSNR-Y loss; about 2x fp32's speed on the openvino backend, slower than fp32 "
        "on onnxruntime's CPU provider); with --model, a check that the file records this precision",
    )


def _model_for(args: argparse.Namespace) -> Path | None:
    """``--model`` resolved with ``--precision`` (runtime.bundled.resolve_model: error on a mismatch)."""
    from .bundled import resolve_model

    try:
        return resolve_model(args.model, args.precision, what="--precision")
    except UpscaleError as exc:
        raise _UsageError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fourpp-eusr",
        description="4PP-EUSR super-resolution: upscale images with a tiled ONNX model.",
        epilog="exit status: 0 all written, 1 some images failed, 2 usage or set-up error, 130 Ctrl-C, 143 SIGTERM",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "upscale",
        help="upscale image files or folders of images",
        description="Upscale images. Folders expand to the image files directly inside them.",
    )
    up.add_argument("images", nargs="+", type=Path, metavar="IMAGES", help="image files or folders")
    up.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT",
        help="output folder (created if missing); with one input image, may be a file path "
        f"with an image extension ({', '.join(sorted(WRITE_FORMATS))})",
    )
    up.add_argument(
        "--model",
        type=Path,
        help="ONNX model, TensorRT engine (.plan, with its .json sidecar) or, for torch-cuda, a .safetensors "
        "checkpoint (default: the bundled compact x4 model)",
    )
    _add_precision(up)
    up.add_argument(
        "--backend",
        default="auto",
        help="inference backend: auto, onnxruntime (CPU, or its CUDA provider), openvino (CPU), tensorrt, "
        "torch-cuda, onnxruntime-cuda; the GPU ones run the pipelined CUDA executor (default: auto, logs its choice)",
    )
    up.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help="CPU backends (onnxruntime, openvino): threads of one inference (default: the backend's, all cores)",
    )
    up.add_argument(
        "--tile",
        type=_tile,
        default="auto",
        help="tile edge in input pixels, or auto (the default): on the CPU the whole image when it fits the "
        f"memory budget, else evenly split windows that do (-v shows them); on a GPU {DEFAULT_TILE}",
    )
    up.add_argument(
        "--halo",
        type=_int_at_least(0),
        default=None,
        help=f"context around each tile, in input pixels (default: the model's recommended halo, else {DEFAULT_HALO})",
    )
    up.add_argument(
        "--batch",
        type=_int_at_least(1),
        default=None,
        help=f"tiles per model call (default: {DEFAULT_BATCH} on the CPU, 8 on a GPU)",
    )
    up.add_argument(
        "--slots",
        type=_int_at_least(1),
        default=None,
        help="GPU backends: batches in flight, each with its own CUDA stream and buffers (default 3)",
    )
    up.add_argument(
        "--memory-budget-mb",
        type=_float_at_least(1),
        default=None,
        help="--tile auto on the CPU: activations one model call may take, in MB (default: a quarter of the "
        "memory available, 256-2048 MB; -v shows the windows it gives)",
    )
    up.add_argument(
        "--output-budget-mb",
        type=float,
        default=None,
        help="an output image larger than this (MB) is streamed to disk band by band; it must then be .tif "
        "(-o big.tif, or --format same for a .tif input) (default: half the memory available)",
    )
    up.add_argument(
        "--max-pixels",
        type=_int_at_least(1),
        default=DEFAULT_MAX_PIXELS,
        help="refuse input images (all frames together) of more pixels, a guard against decompression bombs "
        f"(default: {DEFAULT_MAX_PIXELS:,}, about 13400x13400)",
    )
    up.add_argument(
        "--max-overhead",
        type=_float_at_least(1),
        default=DEFAULT_MAX_OVERHEAD,
        help="refuse an image whose tiles compute more than this many times its pixels (small --tile, large "
        f"--halo); above {WARN_OVERHEAD:g}x a warning (default: {DEFAULT_MAX_OVERHEAD:g})",
    )
    up.add_argument("--overwrite", action="store_true", help="replace existing output files")
    up.add_argument(
        "--format",
        choices=("png", "same"),
        default="png",
        help="output format in a folder: png (default) or the same as the input",
    )
    up.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars, no per-file lines (on a terminal, an image that takes over a second shows a "
        "bar over its tiles with ETA; several images also a bar over the images)",
    )
    up.add_argument("-v", "--verbose", action="store_true", help="log backend and tiling details")

    add_batch_command(commands, up)

    demo = commands.add_parser(
        "demo",
        help="upscale the bundled photo and write a comparison with bicubic",
        description="Shrink the bundled photo (not used in training) ×1/4 with MATLAB-bicubic imresize, "
        "upscale it with the model and with bicubic, and write the LR input, the result and a labelled "
        "side-by-side comparison PNG with PSNR/SSIM on Y.",
    )
    demo.add_argument(
        "-o", "--output", type=Path, default=Path("out/demo"), metavar="DIR", help="output folder (default out/demo)"
    )
    demo.add_argument("--photo", type=Path, help="HR photo to use instead of the bundled one")
    demo.add_argument("--model", type=Path, help="ONNX model (default: the bundled compact x4 model)")
    _add_precision(demo)
    demo.add_argument("--backend", default="auto", help="inference backend (default: auto)")

    info = commands.add_parser("info", help="print a model's I/O contract and metadata")
    info.add_argument(
        "model", type=Path, nargs="?", metavar="MODEL", help="ONNX model file (default: the bundled compact x4 model)"
    )
    _add_precision(info)
    info.add_argument("--json", action="store_true", help="print the raw metadata JSON only")

    add_serve_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``--help`` included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    if args.command == "serve":  # a long-running server: it maps SIGTERM and Ctrl-C to a clean stop itself
        return run_serve_command(args)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "batch":
            return run_batch_command(args)
        return _upscale(args)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # one line, not a traceback; the atomic writer removed its temporary file
        print("interrupted (Ctrl-C): the files written so far are complete, none is half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print("terminated (SIGTERM): the files written so far are complete, none is half-written", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# --------------------------------------------------------------------------- upscale


def _expand_inputs(paths: Sequence[Path]) -> list[Path]:
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p))
            if not found:
                log.warning("%s: folder has no image files", path)
            images.extend(found)
        else:
            images.append(path)  # missing files fail later, one error line each
    return images


def _plan_outputs(args: argparse.Namespace, images: list[Path], scale: int) -> list[Path]:
    out: Path = args.output
    suffix = out.suffix.lower()
    single_file = (
        len(args.images) == 1 and not args.images[0].is_dir() and suffix in WRITE_FORMATS and not out.is_dir()
    )  # an existing folder is a folder, whatever its name
    if single_file:
        if args.format != "png":
            print(
                f"warning: --format {args.format} ignored: -o {out} names the file, its extension picks the format",
                file=sys.stderr,
            )
        return [out]
    if suffix in IMAGE_LIKE_SUFFIXES - WRITE_FORMATS.keys() and not out.is_dir():
        raise _UsageError(
            f"-o {out}: looks like an image file name, but {suffix} is not a format this writes "
            f"({', '.join(sorted(WRITE_FORMATS))}); name the file with one of those, or give a folder "
            "name without an image extension (or create that folder first)"
        )
    if out.suffix.lower() in WRITE_FORMATS and not out.is_dir():
        raise _UsageError(
            f"-o {out}: several images or a folder were given, so OUT must be a folder, not an image file name"
        )
    if out.exists() and not out.is_dir():
        raise _UsageError(f"-o {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _UsageError(f"-o {out}: cannot create the output folder ({exc.strerror})") from exc
    return [out / output_name(src.name, scale, args.format) for src in images]


def _tile_progress(quiet: bool) -> bool | dict[str, Any]:
    """Upscaler's ``progress``: on a terminal a bar over the tiles of each image that takes
    over a second (so a large image shows its ETA, small ones stay quiet), else none."""
    if quiet or not sys.stderr.isatty():
        return False
    try:
        from ._deps import require

        require("tqdm", pip="tqdm", purpose="the progress bar")
    except MissingDependencyError:
        return False  # _progress says so once
    return {"delay": TILE_BAR_DELAY_S, "file": sys.stderr, "dynamic_ncols": True}


def _progress(images: list[Path], quiet: bool) -> tuple[Any, Callable[..., None]]:
    """An iterator over ``images`` (with a tqdm bar unless quiet) and a bar-safe printer."""
    plain = lambda line, file=sys.stderr: print(line, file=file)  # noqa: E731
    if quiet or len(images) < 2:
        return images, plain
    try:
        from ._deps import require

        tqdm = require("tqdm", pip="tqdm", purpose="the progress bar").tqdm
    except MissingDependencyError as exc:
        print(f"warning: no progress bar: {exc}", file=sys.stderr)
        return images, plain
    bar = tqdm(images, unit="image", file=sys.stderr)
    return bar, lambda line, file=sys.stderr: tqdm.write(line, file=file)


def _with_threads(backend: str, model: Path | None, threads: int | None) -> Any:
    """``--backend`` as a name, or its typed options with ``--threads`` applied."""
    if threads is None:
        return backend
    import dataclasses

    from .backends import resolve, with_overrides

    options = resolve(backend, model if model is not None else default_model_path())
    if "threads" not in {f.name for f in dataclasses.fields(options)}:
        raise _UsageError(f"--threads applies to the CPU backends (onnxruntime, openvino), not {options.name}")
    return with_overrides(options, {"threads": threads}, what="--threads")


def _upscale(args: argparse.Namespace) -> int:
    images = _expand_inputs(args.images)
    if not images:
        raise _UsageError("no images to upscale: " + ", ".join(map(str, args.images)) + " hold no image files")
    args.model = _model_for(args)
    try:
        extra = {} if args.slots is None else {"slots": args.slots}
        backend = _with_threads(args.backend, args.model, args.threads)
        upscaler = Upscaler(
            args.model,
            backend=backend,
            tile=args.tile,
            halo=args.halo,
            batch=args.batch,
            max_overhead=args.max_overhead,
            memory_budget_mb=args.memory_budget_mb,
            output_budget_mb=args.output_budget_mb,
            progress=_tile_progress(args.quiet),
            **extra,
        )
    except UpscaleError as exc:
        raise _UsageError(str(exc)) from exc
    with pixel_limit(args.max_pixels):
        return _upscale_all(args, images, upscaler)


def _upscale_all(args: argparse.Namespace, images: list[Path], upscaler: Upscaler) -> int:
    from PIL import Image

    failed = 0
    with upscaler:
        outputs = _plan_outputs(args, images, upscaler.scale)
        claimed: dict[Path, Path] = {}
        iterator, say = _progress(images, args.quiet)
        for src, dst in zip(iterator, outputs):
            if dst in claimed:
                say(f"error: {src}: its output {dst} is also the output of {claimed[dst]}; rename one input")
                failed += 1
                continue
            claimed[dst] = src
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # pixel_limit's, "always" undid it
                try:
                    upscaler.upscale_file(src, dst, overwrite=args.overwrite)
                except UpscaleError as exc:
                    failed += 1
                    say(f"error: {exc}" if getattr(exc, "path", None) == str(src) else f"error: {src}: {exc}")
                except Exception as exc:
                    failed += 1
                    log.debug("unexpected failure on %s", src, exc_info=True)
                    say(f"error: {src}: unexpected {type(exc).__name__}: {exc}")
                else:
                    if not args.quiet:
                        say(f"{src} -> {dst}", file=sys.stdout)
            for warning in caught:
                say(f"warning: {warning.message}")
    return EXIT_FAILED if failed else EXIT_OK


# --------------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    args.model = _model_for(args)
    try:
        result = run_demo(args.output, photo=args.photo, model=args.model, backend=args.backend)
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"input (LR):  {result.lr_path}")
    print(f"upscaled:    {result.sr_path}")
    print(f"comparison:  {result.comparison_path}")
    print(
        f"PSNR-Y {result.psnr_y_model:.2f} dB vs bicubic {result.psnr_y_bicubic:.2f} dB "
        f"({result.psnr_y_model - result.psnr_y_bicubic:+.2f} dB); "
        f"SSIM-Y {result.ssim_y_model:.4f} vs {result.ssim_y_bicubic:.4f}"
    )
    print(f"backend:     {result.backend} ({result.seconds:.2f} s, model compilation included)")
    return EXIT_OK


# --------------------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    from .backends.onnxruntime_backend import OnnxRuntimeBackend

    args.model = _model_for(args) or default_model_path()
    try:
        check_model_kind(args.model, "onnxruntime")
        with OnnxRuntimeBackend(args.model) as backend:
            info = backend.info
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(dict(info.metadata), indent=2, sort_keys=True))
        return EXIT_OK
    rows = [
        ("model", str(args.model)),
        ("io", info.io.value),
        ("scale", str(info.scale)),
        ("input", info.input_name),
        ("output", info.output_name),
        ("recommended halo", "-" if info.recommended_halo is None else str(info.recommended_halo)),
        ("config", info.config_name or "-"),
        ("checkpoint sha256", str(info.metadata.get("checkpoint_sha256", "-"))),
        ("facts from", info.source),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 2}}{value}")
    if info.metadata.get("config"):
        print("model config:")
        print(json.dumps(info.metadata["config"], indent=2, sort_keys=True))
    return EXIT_OK

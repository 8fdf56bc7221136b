"""Super-resolution quality: PSNR-Y / SSIM-Y / NIQE of the model and of bicubic, per image and mean.

    python benchmarks/quality.py --model runtime/models/eusr-compact-x4.onnx --data data/photos/test
    python benchmarks/quality.py --model runs/compact/last.safetensors --data Set5 Set14 BSD100
    python benchmarks/quality.py --model m.safetensors --runner upscaler --data DIV2K_valid_HR
    python benchmarks/quality.py --model m.onnx --data Set14 --ma-scorer my_ma.py:score   # + Ma, PI

Protocol (EUSR_SPEC.md, "Evaluation convention"): the HR image is mod-cropped to a
multiple of the scale (bottom/right rows and columns dropped), the LR input is MATLAB's
bicubic ``imresize(hr, 1/scale)`` on uint8 (``runtime.imresize``), the model output and
the bicubic baseline (``imresize(lr, scale)``) are uint8, and PSNR/SSIM are taken on Y
(MATLAB ``rgb2ycbcr``) with ``scale`` pixels of border cropped (``runtime.metrics``).
NIQE (no reference, lower is better; ``runtime.niqe``, the MATLAB release's algorithm,
BasicSR-compatible) is taken on the same Y with the same border, of bicubic, the model
and the HR image (for reference); it needs one 96×96 block after the crop, so smaller
images get none ("-", null) and the mean is over the others. ``--ma-scorer`` adds Ma et
al.'s score from a user-supplied model (not bundled, see ``runtime/niqe.py``) and PIRM's
perceptual index PI = ((10 − Ma) + NIQE) / 2. Gray images are scored as they are.
"gain" = model − bicubic (positive: the model is better; for a lower-is-better metric it
is bicubic − model).

Recognised layouts for each ``--data`` entry (first rule that matches):

1. an image file: that image is the HR image;
2. a folder holding ``*_HR.<ext>`` files (Huang et al.'s SelfExSR release of
   Set5/Set14/BSD100/Urban100, e.g. ``image_SRF_4/img_001_SRF_4_HR.png``): only those;
3. a folder holding images: all of them are HR images, except stems ending in ``_LR``
   or ``_bicubic`` (skipped, and listed);
4. a folder holding no images: its first subfolder named (case-insensitively)
   ``image_SRF_<scale>``, ``HR``, ``GTmod12``, ``GT``, ``original``, ``*_HR`` (DIV2K's
   ``DIV2K_valid_HR``), or any ``image_SRF_<n>``, read with rules 2-3 (BasicSR's
   ``Set5/GTmod12``, ``Set14/original``; SelfExSR's ``Set5/image_SRF_4``).

Folders are not searched deeper. Images whose HR side is under 24 pixels are skipped
(SSIM needs 11×11 pixels after the border crop).

Runners: ``upscaler`` (default for ``.onnx``; a ``.safetensors`` checkpoint is exported
to a temporary ONNX first) runs ``runtime.Upscaler`` with ``--tile``/``--halo``;
``torch`` (default for ``.safetensors``) runs the checkpoint's ×scale path in PyTorch on
the whole image.

Outputs: ``<out>/<name>.json``, ``<out>/<name>.md`` and, for the first ``--strips``
images, ``<out>/<name>_strips/<image>.png``: bicubic | model | HR with a 3× zoomed crop.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
from collections.abc import Iterator, Sequence

from benchmarks.common import (
    BenchmarkError,
    HelpFormatter,
    add_common_args,
    backend_for,
    environment,
    prepared_model,
    require_clean_tree,
    results_dir,
)
from runtime.errors import UpscaleError
from runtime.evaluation import (  # the scoring core; its names stay importable from here
    METRICS,
    MIN_HR_SIDE,
    Dataset,
    EvaluatedModel,
    EvaluationError,
    EvaluationOptions,
    Metric,
    evaluate,
    find_dataset,
    gain,
    kinds,
    ma_metrics,
    mean_row,
    partial_means,
    score_image,
    table,
    write_strip,
)
from runtime.upscaler import DEFAULT_BATCH, DEFAULT_TILE

__all__ = [
    "make_runner",
    "main",
    # from runtime.evaluation
    "METRICS",
    "MIN_HR_SIDE",
    "Dataset",
    "EvaluatedModel",
    "EvaluationError",
    "EvaluationOptions",
    "Metric",
    "evaluate",
    "find_dataset",
    "gain",
    "kinds",
    "ma_metrics",
    "mean_row",
    "partial_means",
    "score_image",
    "table",
    "write_strip",
    "BenchmarkError",
]


@contextlib.contextmanager
def make_runner(args: argparse.Namespace) -> Iterator[EvaluatedModel]:
    """The model of ``--model``/``--runner``: the checkpoint in PyTorch on whole images
    (``train.evaluate.CheckpointRunner``), or ``runtime.Upscaler`` on the ONNX model
    (a checkpoint exported to a temporary ONNX first) with ``--tile``/``--halo``/``--batch``."""
    model = Path(args.model)
    runner = args.runner or ("torch" if model.suffix.lower() == ".safetensors" else "upscaler")
    if runner == "torch":
        if model.suffix.lower() != ".safetensors":
            raise BenchmarkError(f"--runner torch needs a .safetensors checkpoint, got {model}")
        from train.evaluate import checkpoint_model

        with checkpoint_model(model, args.scale, threads=args.threads, weights=args.weights, what="--model") as run:
            yield run
        return
    if args.weights != "auto":
        raise BenchmarkError(f"--weights {args.weights} needs --runner torch (the upscaler runs an exported model)")
    from runtime import Upscaler

    with prepared_model(model, exporter=args.exporter) as prepared:
        with Upscaler(
            prepared.onnx_path,
            backend=backend_for(args.backend, args.threads, prepared.onnx_path),
            tile=args.tile,
            halo=args.halo,
            batch=args.batch,
        ) as up:
            if up.scale != args.scale:
                raise BenchmarkError(
                    f"{model} is a x{up.scale} model; this benchmark was asked for x{args.scale} (--scale)"
                )
            info = up.backend.info
            yield EvaluatedModel(
                up.upscale,
                up.scale,
                {
                    **prepared.description,
                    "runner": "upscaler",
                    "tile": args.tile,
                    "halo": up.halo,
                    "batch": args.batch,
                    "backend": up.backend.name,
                    "providers": list(getattr(up.backend, "providers", ())),
                    "config_name": info.config_name,
                    "recommended_halo": info.recommended_halo,
                },
            )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quality.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[2:6]),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="an .onnx model or a .safetensors checkpoint")
    p.add_argument(
        "--data", type=Path, nargs="+", required=True, help="datasets: folders (see layouts above) or image files"
    )
    p.add_argument(
        "--runner",
        choices=("upscaler", "torch"),
        default=None,
        help="upscaler: runtime.Upscaler on ONNX (default for .onnx); torch: whole-image PyTorch "
        "(default for .safetensors)",
    )
    p.add_argument("--scale", type=int, default=4, help="super-resolution factor (the model must have it)")
    p.add_argument(
        "--weights",
        choices=("auto", "ema", "raw"),
        default="auto",
        help="--runner torch: a checkpoint's moving-average weights (ema), its raw ones, or auto (ema when it has them)",
    )
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="Upscaler tile (LR pixels)")
    p.add_argument(
        "--halo", type=int, default=None, help="Upscaler halo (LR pixels; default: the model's recommended halo)"
    )
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="Upscaler tiles per call")
    p.add_argument(
        "--strips", type=int, default=3, help="write comparison strips for the first N images of each dataset"
    )
    p.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="torch.onnx exporter when a .safetensors model runs with --runner upscaler",
    )
    p.add_argument(
        "--ma-scorer",
        metavar="SPEC",
        default=None,
        help="add Ma et al.'s score and PI = ((10 - Ma) + NIQE) / 2: 'module:function' or "
        "'path/to/file.py:function' naming your scorer (image -> Ma score); Ma's trained model is not "
        "bundled (see runtime/niqe.py)",
    )
    add_common_args(p, name="quality")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    for name in ("tile", "batch", "scale"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if (args.halo is not None and args.halo < 0) or args.strips < 0:
        parser.error("--halo and --strips must be >= 0")
    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
        options = EvaluationOptions(
            data=args.data, out=args.out, name=args.name, scale=args.scale, strips=args.strips, ma_scorer=args.ma_scorer
        )
        evaluate(options, lambda: make_runner(args), environment=env)
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

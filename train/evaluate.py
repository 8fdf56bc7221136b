"""Evaluate a checkpoint the way the paper does: PSNR-Y / SSIM-Y, NIQE, bicubic baseline.

    python -m train.evaluate runs/perceptual/last.safetensors --data Set5 Set14 BSD100
    python -m train.evaluate models/eusr-compact.safetensors --data data/photos/test --strips 5
    python -m train.evaluate ckpt.safetensors --data BSD100 --ma-scorer my_ma.py:score   # adds Ma and PI

A researcher's front end to ``benchmarks/quality.py`` (one implementation of the protocol,
so the numbers in a training log, a paper table and the benchmark results agree): the
checkpoint's ×scale path runs in PyTorch on whole images, LR is MATLAB-bicubic of the
mod-cropped HR, metrics are on Y with ``scale`` pixels of border; NIQE uses the original
pristine model (``runtime.niqe``). ``--data`` takes any folder of HR images or the
Set5/Set14/BSD100 layouts of the SelfExSR release (``image_SRF_4/*_HR.png``), BasicSR
(``GTmod12``, ``original``) and EDSR (``HR/``). Writes ``<out>/<name>.json``,
``<out>/<name>.md`` (per-image and mean table) and comparison strips (PNG) for the first
``--strips`` images of each dataset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from runtime.cli_help import DefaultsHelpFormatter

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="PSNR-Y, SSIM-Y and NIQE of a checkpoint and of bicubic on folders of HR images "
        "(Set5/Set14/BSD100 layouts recognised); per-image and mean table, JSON, comparison strips.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="EUSR checkpoint (.safetensors) from train.pretrain or train.perceptual")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folders (or single HR images)")
    p.add_argument("--scale", type=int, default=4, help="scale evaluated (a path of the model)")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                   help="the checkpoint's moving-average weights (ema, kept by --ema runs), its raw ones, or auto: ema when it has them")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/evaluate/<checkpoint stem>)")
    p.add_argument("--name", default="evaluate", help="stem of the result files")
    p.add_argument("--strips", type=int, default=3, help="comparison strips for the first N images of each dataset")
    p.add_argument("--ma-scorer", metavar="SPEC", default=None,
                   help="user-supplied Ma et al. scorer, 'module:function' or 'file.py:function'; adds Ma and PI columns")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"error: checkpoint {args.checkpoint}: no such file", file=sys.stderr)
        return 2
    if args.checkpoint.suffix.lower() != ".safetensors":
        print(f"error: checkpoint {args.checkpoint}: expected a .safetensors checkpoint "
              "(for an .onnx model use benchmarks/quality.py --model)", file=sys.stderr)
        return 2
    out = args.out or Path("runs/evaluate") / args.checkpoint.stem
    forwarded = ["--model", str(args.checkpoint), "--runner", "torch", "--data", *map(str, args.data),
                 "--scale", str(args.scale), "--weights", args.weights, "--out", str(out), "--name", args.name, "--strips", str(args.strips)]
    if args.ma_scorer:
        forwarded += ["--ma-scorer", args.ma_scorer]
    if args.threads is not None:
        forwarded += ["--threads", str(args.threads)]
    from benchmarks import quality

    return quality.main(forwarded)


if __name__ == "__main__":
    sys.exit(main())

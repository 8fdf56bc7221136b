"""Evaluate a checkpoint the way the paper does: PSNR-Y / SSIM-Y, NIQE, bicubic baseline.

    python -m train.evaluate runs/perceptual/last.safetensors --data Set5 Set14 BSD100
    python -m train.evaluate models/eusr-compact.safetensors --data data/photos/test --strips 5
    python -m train.evaluate ckpt.safetensors --data BSD100 --ma-scorer my_ma.py:score   # adds Ma and PI

A researcher's front end to the protocol of :mod:`runtime.evaluation`, which
``benchmarks/quality.py`` runs too (one implementation, so the numbers in a training log,
a paper table and the benchmark results agree): the checkpoint's ×scale path runs in
PyTorch on whole images (:class:`CheckpointRunner`), LR is MATLAB-bicubic of the
mod-cropped HR, metrics are on Y with ``scale`` pixels of border; NIQE uses the original
pristine model (``runtime.niqe``). ``--data`` takes any folder of HR images or the
Set5/Set14/BSD100 layouts of the SelfExSR release (``image_SRF_4/*_HR.png``), BasicSR
(``GTmod12``, ``original``) and EDSR (``HR/``). Writes ``<out>/<name>.json``,
``<out>/<name>.md`` (per-image and mean table) and comparison strips (PNG) for the first
``--strips`` images of each dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import UpscaleError
from runtime.evaluation import EvaluatedModel, EvaluationError, EvaluationOptions, evaluate
from runtime.results import environment
from runtime.utils import DefaultsHelpFormatter, file_sha256

__all__ = ["CheckpointRunner", "checkpoint_model", "main", "parse_args"]

LUMA_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
WEIGHTS = ("auto", "ema", "raw")


class CheckpointRunner:
    """Whole-image PyTorch inference of a checkpoint's ×scale path, uint8 in and out (gray:
    replicated to RGB, the result turned back into luma like ``runtime.Upscaler``).

    ``weights``: the moving-average weights (ema), the raw ones, or auto (ema when the
    checkpoint has them). ``what`` names the checkpoint argument in errors."""

    def __init__(
        self,
        checkpoint: Path,
        scale: int,
        *,
        threads: int | None = None,
        weights: str = "auto",
        what: str = "checkpoint",
    ) -> None:
        try:
            import torch

            from train.checkpoint import load_model
        except ImportError as exc:
            raise EvaluationError(
                f"running {what} {checkpoint} in PyTorch needs the train extra (torch): {exc}"
            ) from exc
        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        try:
            model = load_model(checkpoint, weights=weights)
        except Exception as exc:  # CheckpointError and friends: one line naming the file
            raise EvaluationError(f"{what} {checkpoint}: cannot load the checkpoint: {exc}") from exc
        if scale not in model.scales:
            raise EvaluationError(f"{checkpoint}: the model has scales {list(model.scales)}, not {scale}")
        self._path = model.path(scale).eval()
        self.scale = scale
        self.description: dict[str, Any] = {
            "source": "checkpoint",
            "path": str(checkpoint),
            "sha256": file_sha256(checkpoint),
            "runner": "torch",
            "whole_image": True,
            "weights": weights,
            "config": model.config.to_dict(),
            "torch_threads": torch.get_num_threads(),
        }

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        torch = self._torch
        rgb = np.repeat(lr[:, :, None], 3, axis=2) if lr.ndim == 2 else lr
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]
        with torch.inference_mode():
            y = self._path(x)[0].numpy().transpose(1, 2, 0)
        if lr.ndim == 2:
            y = y @ LUMA_BT601
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def checkpoint_model(
    checkpoint: Path, scale: int, *, threads: int | None = None, weights: str = "auto", what: str = "checkpoint"
) -> Iterator[EvaluatedModel]:
    """The checkpoint as a :class:`runtime.evaluation.EvaluatedModel` (a context for
    :func:`runtime.evaluation.evaluate`; nothing to close)."""
    if not checkpoint.is_file():
        raise EvaluationError(f"{what} {checkpoint}: no such file")
    run = CheckpointRunner(checkpoint, scale, threads=threads, weights=weights, what=what)
    yield EvaluatedModel(run, run.scale, run.description)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="PSNR-Y, SSIM-Y and NIQE of a checkpoint and of bicubic on folders of HR images "
        "(Set5/Set14/BSD100 layouts recognised); per-image and mean table, JSON, comparison strips.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "checkpoint", type=Path, help="EUSR checkpoint (.safetensors) from train.pretrain or train.perceptual"
    )
    p.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folders (or single HR images)")
    p.add_argument("--scale", type=int, default=4, help="scale evaluated (a path of the model)")
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="the checkpoint's moving-average weights (ema, kept by --ema runs), its raw ones, or auto: ema when it has them",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/evaluate/<checkpoint stem>)")
    p.add_argument("--name", default="evaluate", help="stem of the result files")
    p.add_argument("--strips", type=int, default=3, help="comparison strips for the first N images of each dataset")
    p.add_argument(
        "--ma-scorer",
        metavar="SPEC",
        default=None,
        help="user-supplied Ma et al. scorer, 'module:function' or 'file.py:function'; adds Ma and PI columns",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"error: checkpoint {args.checkpoint}: no such file", file=sys.stderr)
        return 2
    if args.checkpoint.suffix.lower() != ".safetensors":
        print(
            f"error: checkpoint {args.checkpoint}: expected a .safetensors checkpoint "
            "(for an .onnx model use benchmarks/quality.py --model)",
            file=sys.stderr,
        )
        return 2
    env = environment(threads=args.threads)
    try:
        options = EvaluationOptions(
            data=args.data,
            out=args.out or Path("runs/evaluate") / args.checkpoint.stem,
            name=args.name,
            scale=args.scale,
            strips=args.strips,
            ma_scorer=args.ma_scorer,
        )
        evaluate(
            options,
            lambda: checkpoint_model(args.checkpoint, args.scale, threads=args.threads, weights=args.weights),
            environment=env,
        )
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Keep only the weights of a checkpoint, for sharing: ``python -m train.slim IN OUT``.

A training checkpoint carries Adam moments and RNG states (3× the weights) so a run can
resume. A shared model needs the weights alone: the moving average when the run kept one,
else the raw weights. The output is a normal checkpoint (config and provenance in the
header) that ``load_model``, ``--init`` and the ONNX export read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from train.checkpoint import CheckpointError, file_sha256, load_checkpoint, load_model, save_checkpoint

__all__ = ["slim", "main"]


def slim(src: str | Path, dst: str | Path, *, weights: str = "auto") -> Path:
    ckpt = load_checkpoint(src)
    model = load_model(src, weights=weights)
    used = "ema" if ckpt.ema_state and weights != "raw" else "raw"
    state = {
        **ckpt.train_state,
        "slimmed_from": {"file": Path(src).name, "sha256": file_sha256(src), "weights": used},
    }
    return save_checkpoint(
        dst, model, config=ckpt.config, config_name=ckpt.config_name, kind=ckpt.kind, train_state=state
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.slim", description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="training checkpoint")
    p.add_argument("dst", type=Path, help="weights-only checkpoint to write")
    p.add_argument(
        "--weights",
        choices=("auto", "ema", "raw"),
        default="auto",
        help="auto: the moving average when present, else the raw weights",
    )
    args = p.parse_args(argv)
    try:
        out = slim(args.src, args.dst, weights=args.weights)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

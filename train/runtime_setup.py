"""Device, threads and AMP set-up shared by the training commands (one rule for all three)."""

from __future__ import annotations

import argparse
import logging

import torch

__all__ = ["setup_device"]


def setup_device(args: argparse.Namespace, log: logging.Logger) -> tuple[torch.device, bool]:
    """Apply ``--threads``; return ``(device, use_amp)`` from ``--device`` and ``--amp``.

    AMP (float16 autocast + GradScaler) is CUDA-only: asked for elsewhere it is ignored with
    a warning rather than an error, so one command line works on both kinds of machine.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but torch sees no CUDA device")
    use_amp = bool(args.amp and device.type == "cuda")
    if args.amp and not use_amp:
        log.warning("--amp ignored: autocast float16 is used on CUDA only")
    return device, use_amp

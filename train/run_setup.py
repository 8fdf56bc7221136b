"""Training run set-up: the run flags, device, threads, AMP and the run folder, one rule for all three phases."""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING, TextIO

import numpy as np
import torch

if TYPE_CHECKING:
    from train.checkpoint import Checkpoint

__all__ = ["setup_device", "add_run_args", "open_run", "grad_scaler", "seeded_rng", "restore_rng"]


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


def add_run_args(
    g: argparse._ArgumentGroup,
    *,
    log_every: int = 50,
    val_every: int = 1000,
    save_every: int = 1000,
    interval_help: tuple[str, str, str] = ("", "", ""),
) -> None:
    """--device, --amp, --threads, --log-every, --val-every, --save-every, --quiet: the same
    flags on every training command (``interval_help``: help of the three intervals)."""
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    g.add_argument("--amp", action="store_true", help="float16 autocast + GradScaler (CUDA only)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--log-every", type=int, default=log_every, help=interval_help[0] or None)
    g.add_argument("--val-every", type=int, default=val_every, help=interval_help[1] or None)
    g.add_argument("--save-every", type=int, default=save_every, help=interval_help[2] or None)
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def open_run(args: argparse.Namespace) -> tuple[TextIO, TextIO]:
    """Create ``--out``, record the arguments in args.json, open the two logs for appending
    (a resumed run continues them): (train_log.jsonl, val_log.jsonl)."""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    return (args.out / "train_log.jsonl").open("a"), (args.out / "val_log.jsonl").open("a")


def grad_scaler(use_amp: bool, resume: Checkpoint | None, log: logging.Logger) -> torch.amp.GradScaler:
    """The AMP scaler (disabled without AMP), at the loss scale ``resume`` had reached."""
    from train.checkpoint import restore_grad_scaler

    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if resume is not None and restore_grad_scaler(scaler, resume):
        log.info("AMP loss scale restored: %g", scaler.get_scale())
    return scaler


def seeded_rng(seed: int) -> np.random.Generator:
    """Seed torch's global generator and return the run's numpy Generator, both from ``seed``."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    return rng


def restore_rng(rng: np.random.Generator, ckpt: Checkpoint, device: torch.device | None = None) -> None:
    """Continue the random streams saved with ``ckpt``: the numpy Generator, torch's CPU
    generator and, when the training state holds it and ``device`` is CUDA, its generator."""
    if ckpt.rng_numpy:
        rng.bit_generator.state = ckpt.rng_numpy
    if ckpt.rng_torch is not None:
        torch.set_rng_state(ckpt.rng_torch)
    cuda_state = ckpt.train_state.get("rng_cuda")
    if device is not None and device.type == "cuda" and cuda_state is not None:
        torch.cuda.set_rng_state(torch.tensor(cuda_state, dtype=torch.uint8), device)

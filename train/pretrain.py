"""Phase 1 of 4PP-EUSR: L1 pre-training of the multi-scale EUSR.

Defaults are the paper's recipe (EUSR_SPEC.md, "Pre-training"): one scale drawn uniformly
per step, batch 16, 48×48 LR patches, rot90/flip augmentation, L1 on 0–255 values,
Adam(0.9, 0.999, 1e-8), lr 1e-4 halved every 200k steps, 1M steps. Everything is a flag so
short CPU runs (the bundled model) use the same command.

Resume continues exactly where a run stopped: weights, Adam moments, step and both RNG
states are in the checkpoint. ``--scales`` may change on resume (e.g. ×4 first, then all).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.utils import DefaultsHelpFormatter
from train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_state_into,
    model_config,
    restore_optimizer,
    save_checkpoint,
)
from train.data import SAMPLE_BY, PatchDataset
from train.loop import TrainingPhase, halving_factor, run_phase, set_lr
from train.models.eusr import CONFIGS, EUSR, EUSRConfig
from train.run_setup import add_run_args, grad_scaler, open_run, restore_rng, seeded_rng, setup_device
from train.validation import Validator, log_validation
from train.weight_average import WeightAverage, swapped_in

__all__ = [
    "parse_args",
    "main",
    "Validator",
    "WeightAverage",
]  # the last two live in train.validation / train.weight_average

log = logging.getLogger("train.pretrain")

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.pretrain",
        description="Phase 1: L1 pre-training of the multi-scale EUSR on a folder of HR images "
        "(LR made with MATLAB-bicubic imresize). Writes OUT/last.safetensors, OUT/train_log.jsonl, "
        "OUT/val_log.jsonl.",
        formatter_class=DefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--train-dir",
        type=Path,
        nargs="+",
        default=[REPO / "data/photos/train"],
        metavar="DIR",
        help="folder(s) of HR training images (e.g. DIV2K_train_HR); several folders are used together, in the order given",
    )
    d.add_argument(
        "--sample-by",
        choices=SAMPLE_BY,
        default="image",
        help="how a patch's image is drawn: 'image' uniformly per image (DIV2K's equal-size images), "
        "'area' in proportion to its patch positions, i.e. uniform over all patches (images of very different sizes)",
    )
    d.add_argument(
        "--mirror-border",
        type=int,
        default=0,
        metavar="B",
        help="pad each image symmetrically by B LR pixels (B*scale HR) before drawing patches, the border "
        "context the runtime gives edge windows, so patches across an edge train it (default 0: none)",
    )
    d.add_argument(
        "--lr-dir",
        action="append",
        default=[],
        metavar="SCALE=DIR",
        help="use existing LR images for a scale (DIV2K layout: 0001x4.png), e.g. 4=DIV2K_train_LR_bicubic/X4; repeatable",
    )
    d.add_argument(
        "--val-dir", type=Path, default=REPO / "data/photos/test", help="folder of HR validation images ('' to skip)"
    )
    d.add_argument("--val-scale", type=int, default=4, help="scale validated (PSNR-Y, 4 px border)")
    d.add_argument("--patch", type=int, default=48, help="LR patch size for every scale")
    d.add_argument("--no-augment", action="store_true", help="disable rot90/flip augmentation")
    m = p.add_argument_group("model")
    m.add_argument("--config", choices=sorted(CONFIGS), default="paper", help="named EUSR configuration")
    m.add_argument("--scales", default="2,4,8", help="scales trained, comma-separated (must be paths of the model)")
    m.add_argument(
        "--warm-start-from",
        type=int,
        default=None,
        metavar="SCALE",
        help="before training, copy this scale's own modules (feature blocks, EUMs, output conv) into the "
        "other --scales: a warm start when a run trained on one scale continues on all (use with --resume/--init)",
    )
    m.add_argument(
        "--scale-weights", default=None, help="probabilities of drawing each scale (default uniform), e.g. 0.4,0.4,0.2"
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=1_000_000, help="total steps (a resumed run stops at this step too)")
    o.add_argument("--batch-size", type=int, default=16)
    o.add_argument("--lr", type=float, default=1e-4, help="initial learning rate")
    o.add_argument("--lr-halve-every", type=int, default=200_000, help="halve the learning rate every N steps")
    o.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off); "
        "validation, export and load_model use it. Smooths the step-to-step jitter of short runs",
    )
    o.add_argument(
        "--ema-restart",
        action="store_true",
        help="with --resume: start the moving average afresh from the resumed (raw) weights instead of "
        "continuing the checkpoint's, so a new stage's average carries nothing of the stages before it",
    )
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="output folder")
    r.add_argument("--resume", type=Path, default=None, help="checkpoint to continue (weights, optimizer, step, RNG)")
    r.add_argument(
        "--init", type=Path, default=None, help="checkpoint to take weights from, starting a new run at step 0"
    )
    add_run_args(r)
    return p.parse_args(argv)


def _parse_scales(args: argparse.Namespace, model_scales: Sequence[int]) -> tuple[list[int], np.ndarray]:
    try:
        scales = [int(s) for s in str(args.scales).split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --scales expects comma-separated integers, got {args.scales!r}") from None
    bad = [s for s in scales if s not in model_scales]
    if not scales or bad:
        raise SystemExit(f"error: --scales {args.scales!r}: the model has paths {list(model_scales)}")
    if args.scale_weights is None:
        weights = np.full(len(scales), 1.0 / len(scales))
    else:
        try:
            weights = np.array([float(w) for w in args.scale_weights.split(",")])
        except ValueError:
            raise SystemExit(
                f"error: --scale-weights expects comma-separated numbers, got {args.scale_weights!r}"
            ) from None
        if len(weights) != len(scales) or np.any(weights < 0) or weights.sum() <= 0:
            raise SystemExit(
                f"error: --scale-weights needs {len(scales)} non-negative numbers, got {args.scale_weights!r}"
            )
        weights = weights / weights.sum()
    return scales, weights


def _parse_lr_dirs(items: list[str]) -> dict[int, Path]:
    out = {}
    for item in items:
        scale, sep, folder = item.partition("=")
        if not sep or not scale.isdigit():
            raise SystemExit(f"error: --lr-dir expects SCALE=DIR, got {item!r}")
        out[int(scale)] = Path(folder)
    return out


def _load_model(args: argparse.Namespace) -> tuple[EUSR, EUSRConfig, str, Checkpoint | None, Checkpoint | None]:
    """The model of ``--resume`` or ``--init`` (weights loaded), or a new ``--config`` one:
    (model, config, config name, resume checkpoint, source checkpoint)."""
    try:
        resume = load_checkpoint(args.resume) if args.resume else None
        init = load_checkpoint(args.init) if args.init else None
        source = resume or init
        if source is not None:
            config, config_name = model_config(source), source.config_name
        else:
            config, config_name = CONFIGS[args.config], args.config
        model = EUSR(config)
        if source is not None:
            load_state_into(model, source.model_state, source.path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    return model, config, config_name, resume, source


def _warm_start(args: argparse.Namespace, model: EUSR, source: Checkpoint | None, scales: Sequence[int]) -> None:
    """``--warm-start-from``: copy that scale's own modules into the other trained scales."""
    if args.warm_start_from is None:
        return
    if source is None:
        raise SystemExit("error: --warm-start-from needs --resume or --init (a model trained on that scale)")
    if args.warm_start_from not in model.config.scales:
        raise SystemExit(
            f"error: --warm-start-from {args.warm_start_from}: the model has paths {list(model.config.scales)}"
        )
    for s in scales:
        model.copy_path(args.warm_start_from, s)
    log.info(
        "warm start: scales %s initialised from ×%d",
        [s for s in scales if s != args.warm_start_from],
        args.warm_start_from,
    )


def _weight_average(
    args: argparse.Namespace, model: EUSR, scales: Sequence[int], resume: Checkpoint | None
) -> WeightAverage | None:
    """The ``--ema`` average, continued from ``resume`` (warm-started like the model), or
    restarted from the resumed weights with ``--ema-restart``."""
    ema_state = resume.ema_state if resume is not None else None
    if args.ema_restart:
        if resume is not None and resume.ema_state:
            log.info("moving average restarted from the weights of step %d", int(resume.train_state.get("step", 0)))
        ema_state = None
    if ema_state and args.warm_start_from is not None:
        # The average must start from the warm-started modules too, not from their old values.
        averaged = EUSR(model.config)
        averaged.load_state_dict(ema_state)
        for s in scales:
            averaged.copy_path(args.warm_start_from, s)
        ema_state = averaged.state_dict()
    ema = WeightAverage(model, args.ema, ema_state) if args.ema > 0 else None
    if ema is None and resume is not None and resume.ema_state:
        log.warning("%s has moving-average weights but --ema is 0: they are not kept in this run", resume.path)
    return ema


class _PretrainPhase(TrainingPhase):
    """Phase 1 in the shared loop: lr halved every ``--lr-halve-every`` steps, one scale drawn
    per step, L1 on 0–255 values, validation with the weight average."""

    desc = "pretrain"

    def __init__(
        self,
        args: argparse.Namespace,
        model: EUSR,
        optimizer: torch.optim.Optimizer,
        data: PatchDataset,
        rng: np.random.Generator,
        device: torch.device,
        *,
        scales: list[int],
        weights: np.ndarray,
        config_name: str,
        scaler: torch.amp.GradScaler,
        use_amp: bool,
        ema: WeightAverage | None,
        validator: Validator | None,
    ) -> None:
        super().__init__(
            stop=args.steps,
            log_every=args.log_every,
            val_every=args.val_every,
            save_every=args.save_every,
            validates=validator is not None,
        )
        self.args, self.model, self.optimizer, self.data, self.rng, self.device = (
            args,
            model,
            optimizer,
            data,
            rng,
            device,
        )
        self.scales, self.weights, self.config_name, self.scaler, self.use_amp = (
            scales,
            weights,
            config_name,
            scaler,
            use_amp,
        )
        self.ema, self.validator = ema, validator
        self.lr_now, self.scale = args.lr, scales[0]

    def train_step(self, step: int) -> Mapping[str, float]:
        self.lr_now = self.args.lr * halving_factor(step, self.args.lr_halve_every)
        set_lr(self.optimizer, self.lr_now)
        scale = self.scale = int(self.scales[self.rng.choice(len(self.scales), p=self.weights)])
        lr_np, hr_np = self.data.sample(self.rng, scale, self.args.batch_size)
        lr_t = torch.from_numpy(lr_np).to(self.device, non_blocking=True)
        hr_t = torch.from_numpy(hr_np).to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
            sr = self.model(lr_t, scale)
            loss = torch.nn.functional.l1_loss(sr.float(), hr_t)
        if not torch.isfinite(loss):
            self.save(step - 1)
            raise SystemExit(f"error: loss became {loss.item()} at step {step} (scale ×{scale}); last good state saved")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return {"loss": loss.item()}

    def log_fields(self, means: dict[str, float]) -> dict[str, Any]:
        return {"loss": means["loss"], "lr": self.lr_now, "scale": self.scale}

    def postfix(self, record: Mapping[str, Any]) -> dict[str, str]:
        return {"loss": f"{record['loss']:.3f}"}

    def validate(self, step: int) -> dict[str, Any]:
        with swapped_in(self.ema, self.model):
            return self.validator(self.model, self.device)

    def report_validation(self, step: int, record: Mapping[str, Any]) -> None:
        log_validation(log, step, self.validator.scale, record)

    def save(self, step: int) -> None:
        args = self.args
        save_checkpoint(
            args.out / "last.safetensors",
            self.model,
            config=self.model.config.to_dict(),
            config_name=self.config_name,
            optimizer=self.optimizer,
            numpy_rng=self.rng,
            ema_state=self.ema.state if self.ema is not None else None,
            train_state={"step": step, "phase": "pretrain", "scales": self.scales, "seed": args.seed, "lr": args.lr},
            grad_scaler=self.scaler,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device, use_amp = setup_device(args, log)
    rng = seeded_rng(args.seed)
    if args.resume and args.init:
        raise SystemExit("error: give --resume or --init, not both")
    if args.mirror_border < 0:
        raise SystemExit(f"error: --mirror-border expects LR pixels >= 0, got {args.mirror_border}")
    if not 0.0 <= args.ema < 1.0:
        raise SystemExit(f"error: --ema must be in [0, 1), got {args.ema}")
    if args.ema_restart and (args.ema == 0 or args.resume is None):
        raise SystemExit("error: --ema-restart restarts the moving average of a resumed run: give --resume and --ema")
    model, config, config_name, resume, source = _load_model(args)
    scales, weights = _parse_scales(args, config.scales)
    _warm_start(args, model, source, scales)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    start_step = 0
    if resume is not None:
        try:
            restore_optimizer(optimizer, resume)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
        start_step = int(resume.train_state.get("step", 0))
        restore_rng(rng, resume)
        log.info("resumed %s at step %d", resume.path, start_step)
    ema = _weight_average(args, model, scales, resume)
    data = PatchDataset(
        args.train_dir,
        scales,
        lr_patch=args.patch,
        augment=not args.no_augment,
        lr_dirs=_parse_lr_dirs(args.lr_dir),
        sample_by=args.sample_by,
        mirror_border=args.mirror_border,
    )
    validator = Validator(args.val_dir, args.val_scale) if str(args.val_dir) not in ("", ".") else None
    train_log, val_log = open_run(args)
    scaler = grad_scaler(use_amp, resume, log)
    phase = _PretrainPhase(
        args,
        model,
        optimizer,
        data,
        rng,
        device,
        scales=scales,
        weights=weights,
        config_name=config_name,
        scaler=scaler,
        use_amp=use_amp,
        ema=ema,
        validator=validator,
    )
    step = run_phase(phase, start=start_step, train_log=train_log, val_log=val_log, quiet=args.quiet)
    if step == start_step:
        log.info("nothing to do: checkpoint is at step %d and --steps is %d", start_step, args.steps)
    log.info("done: %s", args.out / "last.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Phase 3 of 4PP-EUSR: perceptual fine-tuning of the multi-scale EUSR.

The generator starts from a phase-1 checkpoint, the two score predictors (aesthetic, AVA;
subjective, TID2013) come frozen from phase 2, the discriminator starts from scratch.
Every step takes a batch of ×4 LR patches (48×48, HR 192×192) through the three ×4 routes
(train.routes: ×4; ×2 twice; ×8 then ×0.5 by ``--downscale decimate``, the authors' code,
or ``bicubic``, the paper's wording) and updates both networks from one forward pass
(train.perceptual_step). Generator loss: eq. 8 (train.losses), each term averaged over the
routes used; the discriminator loss is BCE(D(HR), 1) + mean over routes BCE(D(SR), 0).

Outputs: OUT/last.safetensors is an ordinary EUSR checkpoint (kind "eusr": ``load_model``
and export/to_onnx.py take it as is), with the generator's Adam state, step and both RNG
states; OUT/last.discriminator.safetensors holds the discriminator and its Adam state (so
the exported generator file does not carry 5–24 M discriminator weights). ``--resume
OUT/last.safetensors`` finds the sibling and continues bit-exactly.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.utils import DefaultsHelpFormatter
from train.checkpoint import (
    Checkpoint,
    CheckpointError,
    file_sha256,
    load_checkpoint,
    load_state_into,
    model_config,
    restore_optimizer,
    save_checkpoint,
)
from train.data import PatchDataset
from train.loop import TrainingPhase, halving_factor, run_phase, set_lr
from train.losses import LossWeights
from train.models.discriminator import CHECKPOINT_KIND as DISCRIMINATOR_KIND
from train.models.discriminator import DENSE_MODES, Discriminator
from train.models.eusr import EUSR
from train.models.nima import ScorePredictor
from train.perceptual_step import PerceptualTrainer, logs_to_floats
from train.routes import DOWNSCALE_METHODS, ROUTES, bicubic_half, downscale_half, sr_routes
from train.run_setup import add_run_args, grad_scaler, open_run, restore_rng, seeded_rng, setup_device
from train.validation import Validator, log_validation
from train.weight_average import WeightAverage, swapped_in

__all__ = [
    "ROUTES",
    "DOWNSCALE_METHODS",
    "downscale_half",
    "bicubic_half",
    "sr_routes",
    "PerceptualTrainer",
    "logs_to_floats",
    "discriminator_path",
    "parse_args",
    "main",
]

log = logging.getLogger("train.perceptual")

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- checkpoints


def discriminator_path(generator_path: str | Path) -> Path:
    """OUT/last.safetensors → OUT/last.discriminator.safetensors (the sibling file)."""
    p = Path(generator_path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + ".discriminator.safetensors")


def _load_generator(path: Path, weights: str) -> tuple[EUSR, Checkpoint]:
    ckpt = load_checkpoint(path)
    if weights == "ema" and not ckpt.ema_state:
        raise CheckpointError(f"{ckpt.path}: holds no moving-average weights (--generator-weights ema)")
    state = ckpt.ema_state if ckpt.ema_state and weights != "raw" else ckpt.model_state
    model = EUSR(model_config(ckpt))
    load_state_into(model, state, ckpt.path)
    return model, ckpt


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.perceptual",
        description="Phase 3 (4PP-EUSR): perceptual fine-tuning of a phase-1 EUSR with a discriminator and two frozen "
        "score predictors, every step through the three ×4 routes. Writes OUT/last.safetensors (the generator, an "
        "ordinary EUSR checkpoint), OUT/last.discriminator.safetensors, OUT/train_log.jsonl, OUT/val_log.jsonl.",
        formatter_class=DefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--train-dir",
        type=Path,
        default=REPO / "data/photos/train",
        help="folder of HR training images (e.g. DIV2K_train_HR)",
    )
    d.add_argument(
        "--val-dir",
        type=Path,
        default=REPO / "data/photos/val",
        help="folder of HR validation images, ×4 PSNR-Y and NIQE ('' to skip); keep it apart from the photos you report on",
    )
    d.add_argument("--patch", type=int, default=48, help="LR patch size (HR patch is 4×)")
    d.add_argument("--no-augment", action="store_true", help="disable rot90/flip augmentation")
    m = p.add_argument_group("models")
    m.add_argument(
        "--generator", type=Path, default=None, help="phase-1 EUSR checkpoint to start from (not with --resume)"
    )
    m.add_argument(
        "--generator-weights",
        choices=("auto", "ema", "raw"),
        default="auto",
        help="which weights of --generator: auto = its moving average when it has one, else raw",
    )
    m.add_argument(
        "--aesthetic-predictor",
        type=Path,
        default=None,
        help="phase-2 score predictor (AVA) checkpoint; needed unless its terms are off",
    )
    m.add_argument(
        "--subjective-predictor",
        type=Path,
        default=None,
        help="phase-2 score predictor (TID2013) checkpoint; needed unless its terms are off",
    )
    m.add_argument(
        "--discriminator-dense",
        choices=DENSE_MODES,
        default="per_position",
        help="dense layers per 6×6 position (authors' code) or over the flattened map (paper's figure; fixed input size)",
    )
    r = p.add_argument_group("routes")
    r.add_argument("--no-multipass", action="store_true", help="train the ×4 route alone (Table 4 ablation)")
    r.add_argument(
        "--downscale",
        choices=DOWNSCALE_METHODS,
        default="decimate",
        help="×0.5 after the ×8 path: decimate = every second pixel (authors' code), bicubic = MATLAB imresize",
    )
    w = p.add_argument_group("loss (eq. 8: α_r·l_r + α_g·l_g + α_p·(α_as·l_as + α_ar·l_ar + α_ss·l_ss + α_sr·l_sr))")
    w.add_argument(
        "--alpha-r", type=float, default=0.05, help="α_r, reconstruction (L1) weight (Table 6: 0.5, 0.05, 0.005)"
    )
    w.add_argument(
        "--alpha-p", type=float, default=1.0, help="α_p, multiplies every score-predictor term (Table 6: 0 or 1)"
    )
    w.add_argument("--alpha-g", type=float, default=0.1, help="adversarial weight")
    w.add_argument("--alpha-as", type=float, default=0.01, help="aesthetic score weight")
    w.add_argument("--alpha-ar", type=float, default=0.1, help="aesthetic representation weight")
    w.add_argument("--alpha-ss", type=float, default=0.01, help="subjective score weight")
    w.add_argument("--alpha-sr", type=float, default=0.1, help="subjective representation weight")
    w.add_argument("--no-reconstruction", action="store_true", help="drop l_r")
    w.add_argument("--no-adversarial", action="store_true", help="drop l_g (no discriminator is built or trained)")
    w.add_argument("--no-aesthetic", action="store_true", help="drop l_as and l_ar (Table 5 ablation)")
    w.add_argument("--no-subjective", action="store_true", help="drop l_ss and l_sr (Table 5 ablation)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=400_000, help="total steps (a resumed run stops at this step too)")
    o.add_argument("--batch-size", type=int, default=2)
    o.add_argument("--lr-g", type=float, default=1e-5, help="generator learning rate")
    o.add_argument("--lr-d", type=float, default=2e-5, help="discriminator learning rate")
    o.add_argument(
        "--lr-halve-every", type=int, default=1_000_000, help="halve both learning rates every N steps (authors' code)"
    )
    o.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="keep a moving average of the generator's weights (e.g. 0.999; 0 = off); validation, export and load_model use it",
    )
    o.add_argument("--seed", type=int, default=0)
    o.add_argument(
        "--d-warmup",
        type=int,
        default=0,
        metavar="STEPS",
        help="first train the discriminator alone for STEPS steps against the starting generator's outputs "
        "(train/discriminator_warmup.py; for short runs, 0 = the paper: from scratch inside the joint phase)",
    )
    o.add_argument(
        "--d-warmup-lr", type=float, default=None, help="Adam learning rate of the warm-up (default: --lr-d)"
    )
    o.add_argument("--d-warmup-batch", type=int, default=8, help="HR and SR patches per warm-up step (each)")
    o.add_argument(
        "--d-warmup-pool", type=int, default=256, help="training patches upscaled once (every route) for the warm-up"
    )
    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, default=Path("runs/perceptual"), help="output folder")
    g.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="OUT/last.safetensors of a phase-3 run to continue (its .discriminator.safetensors sibling is read too)",
    )
    add_run_args(g)
    return p.parse_args(argv)


def _loss_weights(args: argparse.Namespace) -> LossWeights:
    values = {
        "reconstruction": ("--alpha-r", 0.0 if args.no_reconstruction else args.alpha_r),
        "adversarial": ("--alpha-g", 0.0 if args.no_adversarial else args.alpha_g),
        "aesthetic_score": ("--alpha-as", 0.0 if args.no_aesthetic else args.alpha_as),
        "aesthetic_representation": ("--alpha-ar", 0.0 if args.no_aesthetic else args.alpha_ar),
        "subjective_score": ("--alpha-ss", 0.0 if args.no_subjective else args.alpha_ss),
        "subjective_representation": ("--alpha-sr", 0.0 if args.no_subjective else args.alpha_sr),
        "predictor": ("--alpha-p", args.alpha_p),
    }
    for flag, value in values.values():
        if not (math.isfinite(value) and value >= 0):
            raise SystemExit(f"error: {flag} must be a finite number >= 0, got {value}")
    weights = LossWeights(**{k: v for k, (_, v) in values.items()})
    if not weights.active():
        raise SystemExit("error: every loss term is off (weights 0 or --no-* flags): nothing to train")
    return weights


def _check_args(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--steps", args.steps),
        ("--batch-size", args.batch_size),
        ("--patch", args.patch),
        ("--log-every", args.log_every),
        ("--val-every", args.val_every),
        ("--save-every", args.save_every),
        ("--lr-halve-every", args.lr_halve_every),
    ):
        if value < 1:
            raise SystemExit(f"error: {flag} must be >= 1, got {value}")
    for flag, value in (("--lr-g", args.lr_g), ("--lr-d", args.lr_d)):
        if not (math.isfinite(value) and value >= 0):
            raise SystemExit(f"error: {flag} must be a finite number >= 0, got {value}")
    if args.d_warmup < 0:
        raise SystemExit(f"error: --d-warmup must be >= 0, got {args.d_warmup}")
    for flag, value in (("--d-warmup-batch", args.d_warmup_batch), ("--d-warmup-pool", args.d_warmup_pool)):
        if value < 1:
            raise SystemExit(f"error: {flag} must be >= 1, got {value}")
    if args.d_warmup_lr is None:
        args.d_warmup_lr = args.lr_d
    if args.d_warmup and not (math.isfinite(args.d_warmup_lr) and args.d_warmup_lr > 0):
        raise SystemExit(f"error: --d-warmup-lr (default: --lr-d) must be a finite number > 0, got {args.d_warmup_lr}")
    if not 0.0 <= args.ema < 1.0:
        raise SystemExit(f"error: --ema must be in [0, 1), got {args.ema}")
    if args.resume is not None and args.generator is not None:
        raise SystemExit("error: give --generator (start a run) or --resume (continue one), not both")
    if args.resume is None and args.generator is None:
        raise SystemExit(
            "error: --generator is required: a phase-1 EUSR checkpoint, e.g. models/eusr-compact.safetensors"
        )
    if not args.train_dir.is_dir():
        raise SystemExit(f"error: --train-dir {args.train_dir}: no such folder")
    if str(args.val_dir) not in ("", ".") and not args.val_dir.is_dir():
        raise SystemExit(f"error: --val-dir {args.val_dir}: no such folder ('' skips validation)")


def _check_predictor_flags(args: argparse.Namespace, active: Sequence[str]) -> None:
    """Before anything is loaded: each predictor whose terms are on must be given."""
    for flag, path, terms, off in (
        ("--aesthetic-predictor", args.aesthetic_predictor, ("l_as", "l_ar"), "--no-aesthetic"),
        ("--subjective-predictor", args.subjective_predictor, ("l_ss", "l_sr"), "--no-subjective"),
    ):
        if path is None and any(t in active for t in terms):
            raise SystemExit(f"error: {flag} is required while its loss terms are on (or pass {off}, or --alpha-p 0)")


def _load_predictor(flag: str, path: Path | None, needed: bool, device: torch.device) -> ScorePredictor | None:
    if not needed:
        if path is not None:
            log.info("%s %s not loaded: its loss terms are off", flag, path)
        return None
    from train.models.nima import load_score_predictor

    try:
        return load_score_predictor(path, device=device, frozen=True)
    except CheckpointError as e:
        raise SystemExit(f"error: {flag}: {e}") from None


# --------------------------------------------------------------------------- run set-up


@dataclass
class _Start:
    """Where a run starts: the generator, where it came from and, on resume, what was saved with it."""

    generator: EUSR
    config_name: str
    source: dict[str, Any]
    step: int = 0
    resume: Checkpoint | None = None
    d_ckpt: Checkpoint | None = None


def _load_start(args: argparse.Namespace, weights: LossWeights, routes: Sequence[str]) -> _Start:
    """The generator of ``--generator``, or the run of ``--resume`` with its discriminator file."""
    try:
        if args.resume is not None:
            return _load_resume(args, weights, routes)
        generator, src_ckpt = _load_generator(args.generator, args.generator_weights)
        return _Start(
            generator, src_ckpt.config_name, {"path": str(args.generator), "sha256": file_sha256(args.generator)}
        )
    except CheckpointError as e:
        flag = "--resume" if args.resume is not None else "--generator"
        raise SystemExit(f"error: {flag}: {e}") from None


def _load_resume(args: argparse.Namespace, weights: LossWeights, routes: Sequence[str]) -> _Start:
    resume = load_checkpoint(args.resume)
    if resume.train_state.get("phase") != "perceptual":
        raise SystemExit(
            f"error: --resume {args.resume}: a {resume.train_state.get('phase', 'unknown')!r}-phase checkpoint, "
            "not a phase-3 one; start phase 3 from it with --generator"
        )
    generator = EUSR(model_config(resume))
    load_state_into(generator, resume.model_state, resume.path)
    source = {
        "path": resume.train_state.get("generator_source"),
        "sha256": resume.train_state.get("generator_source_sha256"),
    }
    start = _Start(generator, resume.config_name, source, int(resume.train_state.get("step", 0)), resume)
    if "l_g" in weights.active():
        dpath = discriminator_path(args.resume)
        if not dpath.is_file():
            raise SystemExit(
                f"error: --resume {args.resume}: the discriminator file {dpath} is missing (it is saved beside the generator)"
            )
        start.d_ckpt = load_checkpoint(dpath, expect_kind=DISCRIMINATOR_KIND)
        d_step = int(start.d_ckpt.train_state.get("step", -1))
        if d_step != start.step:
            raise SystemExit(
                f"error: --resume {args.resume} is at step {start.step} but {dpath} at step {d_step}; "
                "the pair was not saved together (interrupted save?)"
            )
    _warn_if_changed(resume, weights, routes, args)
    return start


def _check_generator_paths(args: argparse.Namespace, generator: EUSR, routes: Sequence[str]) -> None:
    need = {4} | ({2, 8} if not args.no_multipass else set())
    if not need <= set(generator.scales):
        raise SystemExit(
            f"error: {args.resume or args.generator}: the generator has paths {list(generator.scales)}; the routes "
            f"{list(routes)} need ×{sorted(need)} (use --no-multipass for a ×4-only model)"
        )


def _load_discriminator(args: argparse.Namespace, d_ckpt: Checkpoint | None, device: torch.device) -> Discriminator:
    """The resumed discriminator, or a new one (``--discriminator-dense``, sized for ``--patch``)."""
    try:
        if d_ckpt is not None:
            discriminator = Discriminator.from_config(d_ckpt.config)
            load_state_into(discriminator, d_ckpt.model_state, d_ckpt.path)
            if discriminator.dense != args.discriminator_dense:
                log.warning(
                    "--discriminator-dense %s ignored: the resumed discriminator is %s",
                    args.discriminator_dense,
                    discriminator.dense,
                )
        else:
            discriminator = Discriminator(args.discriminator_dense, input_size=4 * args.patch)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {discriminator_path(args.resume)}: invalid discriminator config ({e})") from None
    if discriminator.dense == "flatten" and discriminator.input_size != 4 * args.patch:
        raise SystemExit(
            f"error: --patch {args.patch}: the flatten discriminator takes {discriminator.input_size}×{discriminator.input_size} "
            f"HR patches, i.e. --patch {discriminator.input_size // 4}"
        )
    return discriminator.to(device).train()


def _make_trainer(
    args: argparse.Namespace,
    weights: LossWeights,
    routes: Sequence[str],
    start: _Start,
    rng: np.random.Generator,
    device: torch.device,
    use_amp: bool,
) -> tuple[PerceptualTrainer, WeightAverage | None]:
    """Predictors, discriminator, optimizers (resumed with the random streams), the weight
    average and the step, in the order a resumed run must repeat."""
    active = weights.active()
    aesthetic = _load_predictor(
        "--aesthetic-predictor", args.aesthetic_predictor, any(t in active for t in ("l_as", "l_ar")), device
    )
    subjective = _load_predictor(
        "--subjective-predictor", args.subjective_predictor, any(t in active for t in ("l_ss", "l_sr")), device
    )
    if args.d_warmup and "l_g" not in active:
        raise SystemExit("error: --d-warmup needs the adversarial term (it is off: --no-adversarial or --alpha-g 0)")
    discriminator = _load_discriminator(args, start.d_ckpt, device) if "l_g" in active else None
    betas = (0.9, 0.999)
    opt_g = torch.optim.Adam(start.generator.parameters(), lr=args.lr_g, betas=betas, eps=1e-8)
    opt_d = (
        torch.optim.Adam(discriminator.parameters(), lr=args.lr_d, betas=betas, eps=1e-8)
        if discriminator is not None
        else None
    )
    resume = start.resume
    if resume is not None:
        try:
            restore_optimizer(opt_g, resume)
            if opt_d is not None:
                restore_optimizer(opt_d, start.d_ckpt)
        except CheckpointError as e:
            raise SystemExit(f"error: --resume: {e}") from None
        restore_rng(rng, resume)
        log.info("resumed %s at step %d", resume.path, start.step)
    ema_state = resume.ema_state if resume is not None else None
    ema = WeightAverage(start.generator, args.ema, ema_state) if args.ema > 0 else None
    if ema is None and resume is not None and resume.ema_state:
        log.warning("%s has moving-average weights but --ema is 0: they are not kept in this run", resume.path)
    scaler = grad_scaler(use_amp, resume, log)
    trainer = PerceptualTrainer(
        start.generator,
        discriminator,
        aesthetic,
        subjective,
        weights,
        opt_g=opt_g,
        opt_d=opt_d,
        routes=routes,
        downscale=args.downscale,
        amp=use_amp,
        scaler=scaler,
    )
    return trainer, ema


def _predictor_files(
    args: argparse.Namespace, trainer: PerceptualTrainer, resume: Checkpoint | None
) -> dict[str, dict[str, str]]:
    """Path and hash of each predictor in use, recorded in the checkpoint; a resumed run warns
    when one differs from what it was trained with."""
    predictors = {
        name: {"path": str(path), "sha256": file_sha256(path)}
        for name, path, net in (
            ("aesthetic", args.aesthetic_predictor, trainer.aesthetic),
            ("subjective", args.subjective_predictor, trainer.subjective),
        )
        if net is not None
    }
    if resume is not None:
        for name, info in predictors.items():
            old = resume.train_state.get("predictors", {}).get(name, {}).get("sha256")
            if old is not None and old != info["sha256"]:
                log.warning("the %s predictor %s differs from the one this run was trained with", name, info["path"])
    return predictors


def _d_warmup(
    args: argparse.Namespace, start: _Start, trainer: PerceptualTrainer, data: PatchDataset, device: torch.device
) -> dict[str, Any] | None:
    """Run ``--d-warmup`` on a new run; the warm-up record a resumed run was saved with otherwise."""
    if start.resume is not None:
        if args.d_warmup:
            log.warning("--d-warmup %d ignored: a resumed run continues from its saved discriminator", args.d_warmup)
        return start.resume.train_state.get("d_warmup")
    if not args.d_warmup:
        return None
    from train.discriminator_warmup import warm_up_discriminator

    record = warm_up_discriminator(
        trainer.discriminator,
        trainer.generator,
        data,
        steps=args.d_warmup,
        lr=args.d_warmup_lr,
        batch=args.d_warmup_batch,
        pool=args.d_warmup_pool,
        seed=args.seed,
        routes=trainer.routes,
        downscale=args.downscale,
        device=device,
        log_path=args.out / "d_warmup_log.jsonl",
        progress=not args.quiet,
    )
    log.info(
        "discriminator warm-up: %d steps in %.0f s, loss %.3f, D(HR) %.3f, D(SR) %.3f",
        args.d_warmup,
        record["seconds"],
        record["final_loss_d"],
        record["final_d_hr"],
        record["final_d_sr"],
    )
    return record


# --------------------------------------------------------------------------- the loop


class _PerceptualPhase(TrainingPhase):
    """Phase 3 in the shared loop: both learning rates halved every ``--lr-halve-every``
    steps, a joint step, validation with the weight average, the checkpoint pair."""

    desc = "perceptual"

    def __init__(
        self,
        args: argparse.Namespace,
        trainer: PerceptualTrainer,
        data: PatchDataset,
        rng: np.random.Generator,
        device: torch.device,
        *,
        validator: Validator | None,
        ema: WeightAverage | None,
        config_name: str,
        run_state: dict[str, Any],
    ) -> None:
        super().__init__(
            stop=args.steps,
            log_every=args.log_every,
            val_every=args.val_every,
            save_every=args.save_every,
            validates=validator is not None,
        )
        self.args, self.trainer, self.data, self.rng, self.device = args, trainer, data, rng, device
        self.validator, self.ema, self.config_name, self.run_state = validator, ema, config_name, run_state
        self.gen_path = args.out / "last.safetensors"
        self.factor = 1.0

    def train_step(self, step: int) -> Mapping[str, float]:
        args, trainer = self.args, self.trainer
        self.factor = halving_factor(step, args.lr_halve_every)
        set_lr(trainer.opt_g, args.lr_g * self.factor)
        if trainer.opt_d is not None:
            set_lr(trainer.opt_d, args.lr_d * self.factor)
        lr_np, hr_np = self.data.sample(self.rng, 4, args.batch_size)
        lr_t = torch.from_numpy(lr_np).to(self.device, non_blocking=True)
        hr_t = torch.from_numpy(hr_np).to(self.device, non_blocking=True)
        g_loss, d_loss, logs = trainer.forward(lr_t, hr_t)
        values = logs_to_floats(logs)
        bad = [k for k in ("loss_g", "loss_d") if k in values and not math.isfinite(values[k])]
        if bad:
            self.save(step - 1)
            raise SystemExit(
                f"error: {bad[0]} became {values[bad[0]]} at step {step}; last good state saved ({self.gen_path})"
            )
        trainer.update(g_loss, d_loss)
        del g_loss, d_loss, logs
        if self.ema is not None:
            self.ema.update(trainer.generator)
        return values

    def log_fields(self, means: dict[str, float]) -> dict[str, Any]:
        lr_d = self.args.lr_d * self.factor if self.trainer.opt_d is not None else None
        return {**means, "lr_g": self.args.lr_g * self.factor, "lr_d": lr_d}

    def postfix(self, record: Mapping[str, Any]) -> dict[str, str]:
        post = {"g": f"{record['loss_g']:.3f}"}
        if "loss_d" in record:
            post["d"] = f"{record['loss_d']:.3f}"
        return post

    def validate(self, step: int) -> dict[str, Any]:
        with swapped_in(self.ema, self.trainer.generator):
            return self.validator(self.trainer.generator, self.device)

    def report_validation(self, step: int, record: Mapping[str, Any]) -> None:
        log_validation(log, step, 4, record)

    def save(self, step: int) -> None:
        generator, discriminator = self.trainer.generator, self.trainer.discriminator
        # Discriminator first: if the generator write is interrupted the pair disagrees on
        # the step and --resume says so, instead of silently pairing mismatched states.
        if discriminator is not None:
            save_checkpoint(
                discriminator_path(self.gen_path),
                discriminator,
                config=discriminator.config(),
                config_name=discriminator.dense,
                kind=DISCRIMINATOR_KIND,
                optimizer=self.trainer.opt_d,
                train_state={"step": step, "phase": "perceptual"},
            )
        save_checkpoint(
            self.gen_path,
            generator,
            config=generator.config.to_dict(),
            config_name=self.config_name,
            optimizer=self.trainer.opt_g,
            numpy_rng=self.rng,
            ema_state=self.ema.state if self.ema is not None else None,
            train_state={"step": step, **self.run_state},
            grad_scaler=self.trainer.scaler,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _check_args(args)
    weights = _loss_weights(args)
    _check_predictor_flags(args, weights.active())
    device, use_amp = setup_device(args, log)
    routes = ("x4",) if args.no_multipass else ROUTES
    rng = seeded_rng(args.seed)
    start = _load_start(args, weights, routes)
    _check_generator_paths(args, start.generator, routes)
    start.generator.to(device).train()
    trainer, ema = _make_trainer(args, weights, routes, start, rng, device, use_amp)
    data = PatchDataset(args.train_dir, [4], lr_patch=args.patch, augment=not args.no_augment)
    validator = Validator(args.val_dir, 4, niqe=True) if str(args.val_dir) not in ("", ".") else None
    train_log, val_log = open_run(args)
    predictors = _predictor_files(args, trainer, start.resume)
    d_warmup = _d_warmup(args, start, trainer, data, device)
    discriminator = trainer.discriminator
    run_state = {
        "phase": "perceptual",
        "seed": args.seed,
        "routes": list(routes),
        "downscale": args.downscale,
        "loss_weights": weights.to_dict(),
        "lr_g": args.lr_g,
        "lr_d": args.lr_d,
        "predictors": predictors,
        "generator_source": start.source["path"],
        "generator_source_sha256": start.source["sha256"],
        "discriminator": discriminator.config() if discriminator is not None else None,
        "d_warmup": d_warmup,
    }
    phase = _PerceptualPhase(
        args,
        trainer,
        data,
        rng,
        device,
        validator=validator,
        ema=ema,
        config_name=start.config_name,
        run_state=run_state,
    )
    step = run_phase(phase, start=start.step, train_log=train_log, val_log=val_log, quiet=args.quiet)
    if step == start.step:
        log.info("nothing to do: checkpoint is at step %d and --steps is %d", start.step, args.steps)
    log.info("done: %s", phase.gen_path)
    return 0


def _warn_if_changed(resume: Checkpoint, weights: LossWeights, routes: Sequence[str], args: argparse.Namespace) -> None:
    ts = resume.train_state
    for what, old, new in (
        ("loss weights", ts.get("loss_weights"), weights.to_dict()),
        ("routes", ts.get("routes"), list(routes)),
        ("--downscale", ts.get("downscale"), args.downscale),
    ):
        if old is not None and old != new:
            log.warning("resuming with other %s than the run was trained with: %s → %s", what, old, new)


if __name__ == "__main__":
    sys.exit(main())

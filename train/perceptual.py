"""Phase 3 of 4PP-EUSR: perceptual fine-tuning of the multi-scale EUSR.

The generator starts from a phase-1 checkpoint, the two score predictors (aesthetic, AVA;
subjective, TID2013) come frozen from phase 2, the discriminator starts from scratch.
Every step takes a batch of ×4 LR patches (48×48, HR 192×192) through the three ×4 routes
(EUSR_SPEC.md, "Perceptual training"):

- ``x4``:     the ×4 path;
- ``x2x2``:   the ×2 path twice (the second pass takes the first's raw float output);
- ``x8down``: the ×8 path, then a ×0.5 downscale: ``--downscale decimate`` (default) keeps
  pixels (2i, 2j), which is what the authors' code computes (TF1's legacy bicubic resize
  with align_corners=False samples input position 2i exactly, where the cubic kernel is
  1 at that pixel and 0 at its neighbours); ``--downscale bicubic`` is the paper's wording,
  here MATLAB's antialiased bicubic imresize (as the LR images are made), differentiable.

Generator loss: eq. 8 (train.losses), each term averaged over the routes used. The
discriminator loss is BCE(D(HR), 1) + mean over routes BCE(D(SR), 0). Both networks are
updated **simultaneously** from one forward pass, as in the authors' code (one TF op groups
the two Adam updates): the generator's gradient goes through the current discriminator and
the discriminator's through the current SR images. That costs one discriminator pass per
step instead of two and makes resuming exact without any ordering subtleties.

Outputs: OUT/last.safetensors is an ordinary EUSR checkpoint (kind "eusr": ``load_model``
and export/to_onnx.py take it as is), with the generator's Adam state, step and both RNG
states; OUT/last.discriminator.safetensors holds the discriminator and its Adam state (so
the exported generator file does not carry 5–24 M discriminator weights). ``--resume
OUT/last.safetensors`` finds the sibling and continues bit-exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from runtime.utils import DefaultsHelpFormatter
from train.run_setup import add_run_args, grad_scaler, open_run, setup_device
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
from train.losses import (
    LossWeights,
    TERMS,
    adversarial_loss,
    discriminator_loss,
    reconstruction_loss,
    representation_loss,
    score_loss,
)
from train.models.discriminator import CHECKPOINT_KIND as DISCRIMINATOR_KIND
from train.models.discriminator import DENSE_MODES, Discriminator
from train.models.eusr import EUSR
from train.models.nima import ScorePredictor, mean_score
from train.routes import DOWNSCALE_METHODS, ROUTE_SCALES, ROUTES, bicubic_half, downscale_half, sr_routes

__all__ = [
    "ROUTES",
    "DOWNSCALE_METHODS",
    "downscale_half",
    "bicubic_half",
    "sr_routes",
    "PerceptualTrainer",
    "discriminator_path",
    "parse_args",
    "main",
]

log = logging.getLogger("train.perceptual")

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- one step


class PerceptualTrainer:
    """The phase-3 step: routes, eq. 8, discriminator loss, both Adam updates.

    ``forward(lr, hr)`` gives (generator loss, discriminator loss or None, log tensors);
    ``update`` backpropagates each loss into its own network only and steps both
    optimizers. Terms whose effective weight is 0 are skipped, and so are the networks
    only they need (no discriminator without l_g, no predictor without its terms).
    """

    def __init__(
        self,
        generator: EUSR,
        discriminator: nn.Module | None,
        aesthetic: ScorePredictor | None,
        subjective: ScorePredictor | None,
        weights: LossWeights,
        *,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer | None,
        routes: Sequence[str] = ROUTES,
        downscale: str = "decimate",
        amp: bool = False,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.weights = weights
        self.w = weights.effective()
        self.active = weights.active()
        if not self.active:
            raise ValueError("every loss weight is 0: nothing to train")
        if downscale not in DOWNSCALE_METHODS:
            raise ValueError(f"downscale method {downscale!r}; expected one of {list(DOWNSCALE_METHODS)}")
        bad = [r for r in routes if r not in ROUTES]
        if not routes or bad:
            raise ValueError(f"routes {list(routes)}: expected a non-empty subset of {list(ROUTES)}")
        missing = [s for r in routes for s in ROUTE_SCALES[r] if s not in generator.scales]
        if missing:
            raise ValueError(f"routes {list(routes)} need ×{sorted(set(missing))} paths; the generator has {list(generator.scales)}")
        self.use_d = "l_g" in self.active
        self.use_a = any(t in self.active for t in ("l_as", "l_ar"))
        self.use_s = any(t in self.active for t in ("l_ss", "l_sr"))
        for needed, net, what in ((self.use_d, discriminator, "discriminator"), (self.use_a, aesthetic, "aesthetic predictor"),
                                  (self.use_s, subjective, "subjective predictor")):
            if needed and net is None:
                raise ValueError(f"the active loss terms {list(self.active)} need the {what}")
        if self.use_d and opt_d is None:
            raise ValueError("the adversarial term needs a discriminator optimizer")
        self.generator = generator
        self.discriminator = discriminator if self.use_d else None
        self.aesthetic = aesthetic if self.use_a else None
        self.subjective = subjective if self.use_s else None
        self.opt_g = opt_g
        self.opt_d = opt_d if self.use_d else None
        self.routes = tuple(routes)
        self.downscale = downscale
        self.amp = amp
        self.scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
        for p in self._predictors():
            if any(q.requires_grad for q in p.parameters()) or p.training:
                raise ValueError("score predictors must be frozen (eval mode, requires_grad False): use load_score_predictor(frozen=True)")

    def _predictors(self) -> list[ScorePredictor]:
        return [p for p in (self.aesthetic, self.subjective) if p is not None]

    def _autocast(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=self.amp)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        b = lr.shape[0]
        with self._autocast(lr.device):
            srs = sr_routes(self.generator, lr, self.routes, self.downscale)
        for name, sr in srs.items():
            if sr.shape != hr.shape:
                raise ValueError(f"route {name} gives {tuple(sr.shape)}, HR is {tuple(hr.shape)}; HR must be 4× the LR patch")
        names = list(srs)
        per_route: dict[str, list[torch.Tensor]] = {t: [] for t in self.active}
        logs: dict[str, torch.Tensor] = {}
        if "l_r" in self.active:
            per_route["l_r"] = [reconstruction_loss(srs[n], hr) for n in names]
        d_loss = None
        if self.discriminator is not None:
            with self._autocast(lr.device):
                logits = self.discriminator(torch.cat([hr, *(srs[n] for n in names)])).float()
            chunks = logits.split(b)
            logits_hr, logits_sr = chunks[0], chunks[1:]
            per_route["l_g"] = [adversarial_loss(l) for l in logits_sr]
            # Not detached: update() backpropagates this loss into the discriminator only.
            d_loss = discriminator_loss(logits_hr, logits_sr)
            logs["loss_d"] = d_loss.detach()
            logs["d_hr"] = torch.sigmoid(logits_hr.detach()).mean()
            probs = [torch.sigmoid(l.detach()).mean() for l in logits_sr]
            logs["d_sr"] = torch.stack(probs).mean()
            logs.update({f"d_sr/{n}": p for n, p in zip(names, probs)})
        for tag, net, t_score, t_rep in (("a", self.aesthetic, "l_as", "l_ar"), ("s", self.subjective, "l_ss", "l_sr")):
            if net is None:
                continue
            with torch.no_grad(), self._autocast(lr.device):
                probs_hr, feat_hr = net(hr)
            with self._autocast(lr.device):
                probs_sr, feat_sr = net(torch.cat([srs[n] for n in names]))
            score_hr, score_sr = mean_score(probs_hr.float()), mean_score(probs_sr.float()).split(b)
            feat_hr, feat_sr = feat_hr.float(), feat_sr.float().split(b)
            if t_score in self.active:
                per_route[t_score] = [score_loss(s, score_hr) for s in score_sr]
            if t_rep in self.active:
                per_route[t_rep] = [representation_loss(f, feat_hr) for f in feat_sr]
            logs[f"s_{tag}/hr"] = score_hr.detach().mean()
            logs[f"s_{tag}/sr"] = torch.stack([s.detach().mean() for s in score_sr]).mean()
        g_loss = torch.zeros((), device=lr.device)
        for term in TERMS:
            if term not in self.active:
                continue
            values = per_route[term]
            mean = torch.stack(values).mean()
            g_loss = g_loss + self.w[term] * mean
            logs[term] = mean.detach()
            logs.update({f"{term}/{n}": v.detach() for n, v in zip(names, values)})
        logs["loss_g"] = g_loss.detach()
        return g_loss, d_loss, logs

    def update(self, g_loss: torch.Tensor, d_loss: torch.Tensor | None) -> None:
        g_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            self.opt_d.zero_grad(set_to_none=True)
        # inputs= keeps each loss's gradient in its own network: l_g reaches the generator
        # through D without touching D's weights; the D loss never reaches the generator.
        self.scaler.scale(g_loss).backward(inputs=g_params, retain_graph=d_loss is not None)
        if d_loss is not None:
            d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
            self.scaler.scale(d_loss).backward(inputs=d_params)
        self.scaler.step(self.opt_g)
        if self.opt_d is not None:
            self.scaler.step(self.opt_d)
        self.scaler.update()

    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        """forward + update; the logged values as floats."""
        g_loss, d_loss, logs = self.forward(lr, hr)
        self.update(g_loss, d_loss)
        return logs_to_floats(logs)


def logs_to_floats(logs: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """One device sync for all logged scalars."""
    keys = list(logs)
    values = torch.stack([logs[k].float().reshape(()) for k in keys]).cpu().tolist() if keys else []
    return dict(zip(keys, values))


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
    d.add_argument("--train-dir", type=Path, default=REPO / "data/photos/train", help="folder of HR training images (e.g. DIV2K_train_HR)")
    d.add_argument("--val-dir", type=Path, default=REPO / "data/photos/val",
                   help="folder of HR validation images, ×4 PSNR-Y and NIQE ('' to skip); keep it apart from the photos you report on")
    d.add_argument("--patch", type=int, default=48, help="LR patch size (HR patch is 4×)")
    d.add_argument("--no-augment", action="store_true", help="disable rot90/flip augmentation")
    m = p.add_argument_group("models")
    m.add_argument("--generator", type=Path, default=None, help="phase-1 EUSR checkpoint to start from (not with --resume)")
    m.add_argument("--generator-weights", choices=("auto", "ema", "raw"), default="auto",
                   help="which weights of --generator: auto = its moving average when it has one, else raw")
    m.add_argument("--aesthetic-predictor", type=Path, default=None, help="phase-2 score predictor (AVA) checkpoint; needed unless its terms are off")
    m.add_argument("--subjective-predictor", type=Path, default=None, help="phase-2 score predictor (TID2013) checkpoint; needed unless its terms are off")
    m.add_argument("--discriminator-dense", choices=DENSE_MODES, default="per_position",
                   help="dense layers per 6×6 position (authors' code) or over the flattened map (paper's figure; fixed input size)")
    r = p.add_argument_group("routes")
    r.add_argument("--no-multipass", action="store_true", help="train the ×4 route alone (Table 4 ablation)")
    r.add_argument("--downscale", choices=DOWNSCALE_METHODS, default="decimate",
                   help="×0.5 after the ×8 path: decimate = every second pixel (authors' code), bicubic = MATLAB imresize")
    w = p.add_argument_group("loss (eq. 8: α_r·l_r + α_g·l_g + α_p·(α_as·l_as + α_ar·l_ar + α_ss·l_ss + α_sr·l_sr))")
    w.add_argument("--alpha-r", type=float, default=0.05, help="α_r, reconstruction (L1) weight (Table 6: 0.5, 0.05, 0.005)")
    w.add_argument("--alpha-p", type=float, default=1.0, help="α_p, multiplies every score-predictor term (Table 6: 0 or 1)")
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
    o.add_argument("--lr-halve-every", type=int, default=1_000_000, help="halve both learning rates every N steps (authors' code)")
    o.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep a moving average of the generator's weights (e.g. 0.999; 0 = off); validation, export and load_model use it")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--d-warmup", type=int, default=0, metavar="STEPS",
                   help="first train the discriminator alone for STEPS steps against the starting generator's outputs "
                   "(train/discriminator_warmup.py; for short runs, 0 = the paper: from scratch inside the joint phase)")
    o.add_argument("--d-warmup-lr", type=float, default=None, help="Adam learning rate of the warm-up (default: --lr-d)")
    o.add_argument("--d-warmup-batch", type=int, default=8, help="HR and SR patches per warm-up step (each)")
    o.add_argument("--d-warmup-pool", type=int, default=256, help="training patches upscaled once (every route) for the warm-up")
    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, default=Path("runs/perceptual"), help="output folder")
    g.add_argument("--resume", type=Path, default=None,
                   help="OUT/last.safetensors of a phase-3 run to continue (its .discriminator.safetensors sibling is read too)")
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
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--patch", args.patch),
                        ("--log-every", args.log_every), ("--val-every", args.val_every), ("--save-every", args.save_every),
                        ("--lr-halve-every", args.lr_halve_every)):
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
        raise SystemExit("error: --generator is required: a phase-1 EUSR checkpoint, e.g. models/eusr-compact.safetensors")
    if not args.train_dir.is_dir():
        raise SystemExit(f"error: --train-dir {args.train_dir}: no such folder")
    if str(args.val_dir) not in ("", ".") and not args.val_dir.is_dir():
        raise SystemExit(f"error: --val-dir {args.val_dir}: no such folder ('' skips validation)")


def _check_predictor_flags(args: argparse.Namespace, active: Sequence[str]) -> None:
    """Before anything is loaded: each predictor whose terms are on must be given."""
    for flag, path, terms, off in (("--aesthetic-predictor", args.aesthetic_predictor, ("l_as", "l_ar"), "--no-aesthetic"),
                                   ("--subjective-predictor", args.subjective_predictor, ("l_ss", "l_sr"), "--no-subjective")):
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _check_args(args)
    weights = _loss_weights(args)
    _check_predictor_flags(args, weights.active())
    device, use_amp = setup_device(args, log)
    routes = ("x4",) if args.no_multipass else ROUTES
    active = weights.active()
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    # --- generator (and, on resume, everything else saved with it)
    start_step = 0
    resume: Checkpoint | None = None
    d_ckpt: Checkpoint | None = None
    try:
        if args.resume is not None:
            resume = load_checkpoint(args.resume)
            if resume.train_state.get("phase") != "perceptual":
                raise SystemExit(
                    f"error: --resume {args.resume}: a {resume.train_state.get('phase', 'unknown')!r}-phase checkpoint, "
                    "not a phase-3 one; start phase 3 from it with --generator"
                )
            generator = EUSR(model_config(resume))
            load_state_into(generator, resume.model_state, resume.path)
            config_name = resume.config_name
            source = {"path": resume.train_state.get("generator_source"), "sha256": resume.train_state.get("generator_source_sha256")}
            start_step = int(resume.train_state.get("step", 0))
            if "l_g" in active:
                dpath = discriminator_path(args.resume)
                if not dpath.is_file():
                    raise SystemExit(f"error: --resume {args.resume}: the discriminator file {dpath} is missing (it is saved beside the generator)")
                d_ckpt = load_checkpoint(dpath, expect_kind=DISCRIMINATOR_KIND)
                d_step = int(d_ckpt.train_state.get("step", -1))
                if d_step != start_step:
                    raise SystemExit(
                        f"error: --resume {args.resume} is at step {start_step} but {dpath} at step {d_step}; "
                        "the pair was not saved together (interrupted save?)"
                    )
            _warn_if_changed(resume, weights, routes, args)
        else:
            generator, src_ckpt = _load_generator(args.generator, args.generator_weights)
            config_name = src_ckpt.config_name
            source = {"path": str(args.generator), "sha256": file_sha256(args.generator)}
    except CheckpointError as e:
        flag = "--resume" if args.resume is not None else "--generator"
        raise SystemExit(f"error: {flag}: {e}") from None
    need = {4} | ({2, 8} if not args.no_multipass else set())
    if not need <= set(generator.scales):
        raise SystemExit(
            f"error: {args.resume or args.generator}: the generator has paths {list(generator.scales)}; the routes "
            f"{list(routes)} need ×{sorted(need)} (use --no-multipass for a ×4-only model)"
        )
    generator.to(device).train()

    # --- score predictors (frozen) and discriminator (from scratch, or resumed)
    aesthetic = _load_predictor("--aesthetic-predictor", args.aesthetic_predictor, any(t in active for t in ("l_as", "l_ar")), device)
    subjective = _load_predictor("--subjective-predictor", args.subjective_predictor, any(t in active for t in ("l_ss", "l_sr")), device)
    discriminator = None
    if args.d_warmup and "l_g" not in active:
        raise SystemExit("error: --d-warmup needs the adversarial term (it is off: --no-adversarial or --alpha-g 0)")
    if "l_g" in active:
        try:
            if d_ckpt is not None:
                discriminator = Discriminator.from_config(d_ckpt.config)
                load_state_into(discriminator, d_ckpt.model_state, d_ckpt.path)
                if discriminator.dense != args.discriminator_dense:
                    log.warning("--discriminator-dense %s ignored: the resumed discriminator is %s", args.discriminator_dense, discriminator.dense)
            else:
                discriminator = Discriminator(args.discriminator_dense, input_size=4 * args.patch)
        except (TypeError, ValueError) as e:
            raise SystemExit(f"error: {discriminator_path(args.resume)}: invalid discriminator config ({e})") from None
        if discriminator.dense == "flatten" and discriminator.input_size != 4 * args.patch:
            raise SystemExit(
                f"error: --patch {args.patch}: the flatten discriminator takes {discriminator.input_size}×{discriminator.input_size} "
                f"HR patches, i.e. --patch {discriminator.input_size // 4}"
            )
        discriminator.to(device).train()

    betas = (0.9, 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.lr_g, betas=betas, eps=1e-8)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.lr_d, betas=betas, eps=1e-8) if discriminator is not None else None
    if resume is not None:
        try:
            restore_optimizer(opt_g, resume)
            if opt_d is not None:
                restore_optimizer(opt_d, d_ckpt)
        except CheckpointError as e:
            raise SystemExit(f"error: --resume: {e}") from None
        if resume.rng_numpy:
            rng.bit_generator.state = resume.rng_numpy
        if resume.rng_torch is not None:
            torch.set_rng_state(resume.rng_torch)
        log.info("resumed %s at step %d", resume.path, start_step)

    from train.data import PatchDataset
    from train.pretrain import Validator, WeightAverage

    ema_state = resume.ema_state if resume is not None else None
    ema = WeightAverage(generator, args.ema, ema_state) if args.ema > 0 else None
    if ema is None and resume is not None and resume.ema_state:
        log.warning("%s has moving-average weights but --ema is 0: they are not kept in this run", resume.path)
    scaler = grad_scaler(use_amp, resume, log)
    trainer = PerceptualTrainer(
        generator, discriminator, aesthetic, subjective, weights, opt_g=opt_g, opt_d=opt_d,
        routes=routes, downscale=args.downscale, amp=use_amp, scaler=scaler,
    )
    data = PatchDataset(args.train_dir, [4], lr_patch=args.patch, augment=not args.no_augment)
    validator = Validator(args.val_dir, 4, niqe=True) if str(args.val_dir) not in ("", ".") else None
    train_log, val_log = open_run(args)
    predictors = {
        name: {"path": str(path), "sha256": file_sha256(path)}
        for name, path, net in (("aesthetic", args.aesthetic_predictor, aesthetic), ("subjective", args.subjective_predictor, subjective))
        if net is not None
    }
    if resume is not None:
        for name, info in predictors.items():
            old = resume.train_state.get("predictors", {}).get(name, {}).get("sha256")
            if old is not None and old != info["sha256"]:
                log.warning("the %s predictor %s differs from the one this run was trained with", name, info["path"])
    gen_path = args.out / "last.safetensors"
    d_warmup = resume.train_state.get("d_warmup") if resume is not None else None
    if resume is not None and args.d_warmup:
        log.warning("--d-warmup %d ignored: a resumed run continues from its saved discriminator", args.d_warmup)
    elif args.d_warmup:
        from train.discriminator_warmup import warm_up_discriminator

        d_warmup = warm_up_discriminator(
            discriminator, generator, data, steps=args.d_warmup, lr=args.d_warmup_lr, batch=args.d_warmup_batch,
            pool=args.d_warmup_pool, seed=args.seed, routes=routes, downscale=args.downscale, device=device,
            log_path=args.out / "d_warmup_log.jsonl", progress=not args.quiet,
        )
        log.info("discriminator warm-up: %d steps in %.0f s, loss %.3f, D(HR) %.3f, D(SR) %.3f", args.d_warmup,
                 d_warmup["seconds"], d_warmup["final_loss_d"], d_warmup["final_d_hr"], d_warmup["final_d_sr"])

    def save(step: int) -> None:
        state = {
            "step": step, "phase": "perceptual", "seed": args.seed, "routes": list(routes), "downscale": args.downscale,
            "loss_weights": weights.to_dict(), "lr_g": args.lr_g, "lr_d": args.lr_d, "predictors": predictors,
            "generator_source": source["path"], "generator_source_sha256": source["sha256"],
            "discriminator": discriminator.config() if discriminator is not None else None, "d_warmup": d_warmup,
        }
        # Discriminator first: if the generator write is interrupted the pair disagrees on
        # the step and --resume says so, instead of silently pairing mismatched states.
        if discriminator is not None:
            save_checkpoint(discriminator_path(gen_path), discriminator, config=discriminator.config(),
                            config_name=discriminator.dense, kind=DISCRIMINATOR_KIND, optimizer=opt_d,
                            train_state={"step": step, "phase": "perceptual"})
        save_checkpoint(gen_path, generator, config=generator.config.to_dict(), config_name=config_name,
                        optimizer=opt_g, numpy_rng=rng, ema_state=ema.state if ema is not None else None, train_state=state,
                        grad_scaler=scaler)

    from tqdm import tqdm

    bar = tqdm(total=args.steps, initial=start_step, disable=args.quiet, dynamic_ncols=True, desc="perceptual")
    window: dict[str, list[float]] = {}
    t0 = time.time()
    step = start_step
    try:
        for step in range(start_step + 1, args.steps + 1):
            factor = 0.5 ** ((step - 1) // args.lr_halve_every)
            for group in opt_g.param_groups:
                group["lr"] = args.lr_g * factor
            if opt_d is not None:
                for group in opt_d.param_groups:
                    group["lr"] = args.lr_d * factor
            lr_np, hr_np = data.sample(rng, 4, args.batch_size)
            lr_t = torch.from_numpy(lr_np).to(device, non_blocking=True)
            hr_t = torch.from_numpy(hr_np).to(device, non_blocking=True)
            g_loss, d_loss, logs = trainer.forward(lr_t, hr_t)
            values = logs_to_floats(logs)
            bad = [k for k in ("loss_g", "loss_d") if k in values and not math.isfinite(values[k])]
            if bad:
                save(step - 1)
                raise SystemExit(f"error: {bad[0]} became {values[bad[0]]} at step {step}; last good state saved ({gen_path})")
            trainer.update(g_loss, d_loss)
            del g_loss, d_loss, logs
            if ema is not None:
                ema.update(generator)
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            bar.update(1)
            if step % args.log_every == 0 or step == args.steps:
                rec = {"step": step, **{k: float(np.mean(v)) for k, v in window.items()},
                       "lr_g": args.lr_g * factor, "lr_d": args.lr_d * factor if opt_d is not None else None,
                       "elapsed_s": round(time.time() - t0, 1)}
                train_log.write(json.dumps(rec) + "\n")
                train_log.flush()
                post = {"g": f"{rec['loss_g']:.3f}"}
                if "loss_d" in rec:
                    post["d"] = f"{rec['loss_d']:.3f}"
                bar.set_postfix(post)
                window.clear()
            if validator is not None and (step % args.val_every == 0 or step == args.steps):
                with ema.swapped_in(generator) if ema is not None else contextlib.nullcontext():
                    res = validator(generator, device)
                val_log.write(json.dumps({"step": step, **res}) + "\n")
                val_log.flush()
                niqe_note = f", NIQE {res['niqe']:.3f}" if "niqe" in res else ""
                log.info("step %d: val PSNR-Y ×4 %.3f dB (bicubic %.3f, gain %+.3f)%s", step, res["psnr_y"], res["bicubic_psnr_y"],
                         res["gain_db"], niqe_note)
            if step % args.save_every == 0 or step == args.steps:
                save(step)
    finally:
        bar.close()
        train_log.close()
        val_log.close()
    if step == start_step:
        log.info("nothing to do: checkpoint is at step %d and --steps is %d", start_step, args.steps)
    log.info("done: %s", gen_path)
    return 0


def _warn_if_changed(resume: Checkpoint, weights: LossWeights, routes: Sequence[str], args: argparse.Namespace) -> None:
    ts = resume.train_state
    for what, old, new in (("loss weights", ts.get("loss_weights"), weights.to_dict()), ("routes", ts.get("routes"), list(routes)),
                           ("--downscale", ts.get("downscale"), args.downscale)):
        if old is not None and old != new:
            log.warning("resuming with other %s than the run was trained with: %s → %s", what, old, new)


if __name__ == "__main__":
    sys.exit(main())

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
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from runtime.utils import DefaultsHelpFormatter
from train.run_setup import add_run_args, grad_scaler, open_run, setup_device
from train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_into,
    model_config,
    restore_optimizer,
    save_checkpoint,
)
from train.data import PatchDataset, list_images, load_rgb, make_lr, mod_crop
from train.models.eusr import CONFIGS, EUSR

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
    d.add_argument("--train-dir", type=Path, default=REPO / "data/photos/train", help="folder of HR training images (e.g. DIV2K_train_HR)")
    d.add_argument("--lr-dir", action="append", default=[], metavar="SCALE=DIR",
                   help="use existing LR images for a scale (DIV2K layout: 0001x4.png), e.g. 4=DIV2K_train_LR_bicubic/X4; repeatable")
    d.add_argument("--val-dir", type=Path, default=REPO / "data/photos/test", help="folder of HR validation images ('' to skip)")
    d.add_argument("--val-scale", type=int, default=4, help="scale validated (PSNR-Y, 4 px border)")
    d.add_argument("--patch", type=int, default=48, help="LR patch size for every scale")
    d.add_argument("--no-augment", action="store_true", help="disable rot90/flip augmentation")
    m = p.add_argument_group("model")
    m.add_argument("--config", choices=sorted(CONFIGS), default="paper", help="named EUSR configuration")
    m.add_argument("--scales", default="2,4,8", help="scales trained, comma-separated (must be paths of the model)")
    m.add_argument("--warm-start-from", type=int, default=None, metavar="SCALE",
                   help="before training, copy this scale's own modules (feature blocks, EUMs, output conv) into the "
                   "other --scales: a warm start when a run trained on one scale continues on all (use with --resume/--init)")
    m.add_argument("--scale-weights", default=None, help="probabilities of drawing each scale (default uniform), e.g. 0.4,0.4,0.2")
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=1_000_000, help="total steps (a resumed run stops at this step too)")
    o.add_argument("--batch-size", type=int, default=16)
    o.add_argument("--lr", type=float, default=1e-4, help="initial learning rate")
    o.add_argument("--lr-halve-every", type=int, default=200_000, help="halve the learning rate every N steps")
    o.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off); "
                   "validation, export and load_model use it. Smooths the step-to-step jitter of short runs")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="output folder")
    r.add_argument("--resume", type=Path, default=None, help="checkpoint to continue (weights, optimizer, step, RNG)")
    r.add_argument("--init", type=Path, default=None, help="checkpoint to take weights from, starting a new run at step 0")
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
            raise SystemExit(f"error: --scale-weights expects comma-separated numbers, got {args.scale_weights!r}") from None
        if len(weights) != len(scales) or np.any(weights < 0) or weights.sum() <= 0:
            raise SystemExit(f"error: --scale-weights needs {len(scales)} non-negative numbers, got {args.scale_weights!r}")
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


class WeightAverage:
    """Exponential moving average of a model's floating-point state (weights and buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict[str, torch.Tensor] | None = None) -> None:
        self.decay = decay
        own = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        if state:
            if set(state) != set(own):
                raise SystemExit("error: the checkpoint's moving-average weights do not match the model")
            own = {k: state[k].to(own[k].device, own[k].dtype).clone() for k in own}
        self.state = own

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        current = model.state_dict()
        for k, avg in self.state.items():
            avg.lerp_(current[k].detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Run the block with the averaged weights, then put the live ones back."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.state}
        model.load_state_dict(self.state, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(live, strict=False)


class Validator:
    """PSNR-Y of the model vs HR and of bicubic vs HR on whole validation images; with
    ``niqe=True`` also the model's NIQE (phase 3, where PSNR is expected to fall), scored
    as ``train.evaluate`` scores it (uint8, Y or gray, ``scale``-pixel border)."""

    def __init__(self, folder: Path, scale: int, *, niqe: bool = False) -> None:
        from runtime.metrics import psnr_y

        self.scale = scale
        self.niqe = niqe
        self.pairs = []
        for path in list_images(folder):
            hr = mod_crop(load_rgb(path), scale)
            lr = make_lr(hr, scale)
            self.pairs.append((path.name, lr, hr))
        self._psnr_y = psnr_y
        self.bicubic = float(np.mean([psnr_y(*_as_scored(_bicubic_up(lr, scale), hr), border=scale) for _, lr, hr in self.pairs]))

    @torch.no_grad()
    def __call__(self, model: EUSR, device: torch.device) -> dict[str, float]:
        model.eval()
        per, per_niqe = {}, {}
        for name, lr, hr in self.pairs:
            x = torch.from_numpy(lr.transpose(2, 0, 1).copy()).float()[None].to(device)
            sr = model(x, self.scale)[0].permute(1, 2, 0).cpu().numpy()
            scored, ref = _as_scored(sr, hr)
            per[name] = self._psnr_y(scored, ref, border=self.scale)
            if self.niqe:
                from runtime.niqe import BLOCK_SIZE, niqe

                if min(ref.shape[:2]) - 2 * self.scale >= BLOCK_SIZE:
                    per_niqe[name] = niqe(scored, crop_border=self.scale)
        model.train()
        mean = float(np.mean(list(per.values())))
        out = {"psnr_y": mean, "bicubic_psnr_y": self.bicubic, "gain_db": mean - self.bicubic, **{f"psnr_y/{k}": v for k, v in per.items()}}
        if per_niqe:
            out.update({"niqe": float(np.mean(list(per_niqe.values()))), **{f"niqe/{k}": v for k, v in per_niqe.items()}})
        return out


def _as_scored(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gray photos (loaded as RGB) are scored on their gray values, as the field does, not
    on Y of the replicated RGB (which would shrink the range to 16..235 and add 1.3 dB)."""
    if np.array_equal(hr[..., 0], hr[..., 1]) and np.array_equal(hr[..., 0], hr[..., 2]):
        luma = 0.299 * sr[..., 0] + 0.587 * sr[..., 1] + 0.114 * sr[..., 2]
        return luma, hr[..., 0]
    return sr, hr


def _bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    from runtime.imresize import imresize

    return imresize(lr, float(scale))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device, use_amp = setup_device(args, log)

    start_step = 0
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    if args.resume and args.init:
        raise SystemExit("error: give --resume or --init, not both")
    if not 0.0 <= args.ema < 1.0:
        raise SystemExit(f"error: --ema must be in [0, 1), got {args.ema}")
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
    scales, weights = _parse_scales(args, config.scales)
    if args.warm_start_from is not None:
        if source is None:
            raise SystemExit("error: --warm-start-from needs --resume or --init (a model trained on that scale)")
        if args.warm_start_from not in config.scales:
            raise SystemExit(f"error: --warm-start-from {args.warm_start_from}: the model has paths {list(config.scales)}")
        for s in scales:
            model.copy_path(args.warm_start_from, s)
        log.info("warm start: scales %s initialised from ×%d", [s for s in scales if s != args.warm_start_from], args.warm_start_from)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    if resume is not None:
        try:
            restore_optimizer(optimizer, resume)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
        start_step = int(resume.train_state.get("step", 0))
        if resume.rng_numpy:
            rng.bit_generator.state = resume.rng_numpy
        if resume.rng_torch is not None:
            torch.set_rng_state(resume.rng_torch)
        log.info("resumed %s at step %d", resume.path, start_step)

    ema_state = resume.ema_state if resume is not None else None
    if ema_state and args.warm_start_from is not None:
        # The average must start from the warm-started modules too, not from their old values.
        averaged = EUSR(config)
        averaged.load_state_dict(ema_state)
        for s in scales:
            averaged.copy_path(args.warm_start_from, s)
        ema_state = averaged.state_dict()
    ema = WeightAverage(model, args.ema, ema_state) if args.ema > 0 else None
    if ema is None and resume is not None and resume.ema_state:
        log.warning("%s has moving-average weights but --ema is 0: they are not kept in this run", resume.path)
    data = PatchDataset(args.train_dir, scales, lr_patch=args.patch, augment=not args.no_augment, lr_dirs=_parse_lr_dirs(args.lr_dir))
    validator = Validator(args.val_dir, args.val_scale) if str(args.val_dir) not in ("", ".") else None
    train_log, val_log = open_run(args)
    scaler = grad_scaler(use_amp, resume, log)

    def save(step: int) -> Path:
        return save_checkpoint(
            args.out / "last.safetensors", model, config=config.to_dict(), config_name=config_name,
            optimizer=optimizer, numpy_rng=rng, ema_state=ema.state if ema is not None else None,
            train_state={"step": step, "phase": "pretrain", "scales": scales, "seed": args.seed, "lr": args.lr},
            grad_scaler=scaler,
        )

    from tqdm import tqdm

    bar = tqdm(total=args.steps, initial=start_step, disable=args.quiet, dynamic_ncols=True, desc="pretrain")
    window: list[float] = []
    t0 = time.time()
    step = start_step
    for step in range(start_step + 1, args.steps + 1):
        lr_now = args.lr * 0.5 ** ((step - 1) // args.lr_halve_every)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        scale = int(scales[rng.choice(len(scales), p=weights)])
        lr_np, hr_np = data.sample(rng, scale, args.batch_size)
        lr_t = torch.from_numpy(lr_np).to(device, non_blocking=True)
        hr_t = torch.from_numpy(hr_np).to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            sr = model(lr_t, scale)
            loss = torch.nn.functional.l1_loss(sr.float(), hr_t)
        if not torch.isfinite(loss):
            save(step - 1)
            raise SystemExit(f"error: loss became {loss.item()} at step {step} (scale ×{scale}); last good state saved")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(model)
        window.append(loss.item())
        bar.update(1)
        if step % args.log_every == 0 or step == args.steps:
            rec = {"step": step, "loss": float(np.mean(window)), "lr": lr_now, "scale": scale, "elapsed_s": round(time.time() - t0, 1)}
            train_log.write(json.dumps(rec) + "\n")
            train_log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            window.clear()
        if validator is not None and (step % args.val_every == 0 or step == args.steps):
            with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
                res = validator(model, device)
            val_log.write(json.dumps({"step": step, **res}) + "\n")
            val_log.flush()
            log.info("step %d: val PSNR-Y ×%d %.3f dB (bicubic %.3f, gain %+.3f)", step, validator.scale, res["psnr_y"], res["bicubic_psnr_y"], res["gain_db"])
        if step % args.save_every == 0 or step == args.steps:
            save(step)
    bar.close()
    train_log.close()
    val_log.close()
    if step == start_step:
        log.info("nothing to do: checkpoint is at step %d and --steps is %d", start_step, args.steps)
    log.info("done: %s", args.out / "last.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())

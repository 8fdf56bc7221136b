"""Discriminator warm-up for short phase-3 runs (``train.perceptual --d-warmup N``; off by default).

The paper starts the discriminator from scratch and trains it beside the generator for
400k steps, so the first few thousand steps, where it cannot yet tell SR from HR, are a
negligible part of the run. In a run of a few hundred steps they are the whole run: the
demonstration runs on two CPU cores (benchmarks/results/perceptual_demo.md) ended with
D(HR) 0.59-0.70 vs D(SR) 0.38-0.44, so l_g pushed the generator along the gradient of a
nearly untrained network for most of the run.

The warm-up trains the discriminator alone first, against the starting generator's own
outputs: a pool of training patches is upscaled once through every route (no generator
gradients, no predictors), then the discriminator takes ``steps`` Adam steps on random
HR/SR batches of that pool. That costs a fraction of a joint step (no generator or
predictor passes per step). It has its own Adam (the joint phase starts a fresh one at
``--lr-d``) and its own numpy random stream, so the joint phase draws exactly the batches
it would draw without the warm-up (same seed, paired comparison).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from train.data import PatchDataset
from train.losses import discriminator_loss
from train.routes import sr_routes

__all__ = ["warmup_rng", "build_pool", "warm_up_discriminator"]

# Second word of the warm-up's numpy seed: [seed, _STREAM] never equals the joint phase's
# default_rng(seed) stream.
_STREAM = 0xD15C


def warmup_rng(seed: int) -> np.random.Generator:
    """The warm-up's own random stream, independent of the joint phase's ``default_rng(seed)``."""
    return np.random.default_rng([seed, _STREAM])


@torch.no_grad()
def build_pool(
    generator: nn.Module,
    data: PatchDataset,
    rng: np.random.Generator,
    size: int,
    routes: Sequence[str],
    downscale: str,
    device: torch.device,
    chunk: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` HR patches (size, 3, H, W) and their SR through every route (routes, size, 3, H, W),
    float32 in [0, 255] on ``device``. The generator is put in eval mode for the pass and
    restored after."""
    was_training = generator.training
    generator.eval()
    hrs: list[torch.Tensor] = []
    srs: list[torch.Tensor] = []
    try:
        for start in range(0, size, chunk):
            lr_np, hr_np = data.sample(rng, 4, min(chunk, size - start))
            out = sr_routes(generator, torch.from_numpy(lr_np).to(device), routes, downscale)
            hrs.append(torch.from_numpy(hr_np).to(device))
            srs.append(torch.stack([out[r].float() for r in routes]))
    finally:
        generator.train(was_training)
    return torch.cat(hrs), torch.cat(srs, dim=1)


def warm_up_discriminator(
    discriminator: nn.Module,
    generator: nn.Module,
    data: PatchDataset,
    *,
    steps: int,
    lr: float,
    batch: int,
    pool: int,
    seed: int,
    routes: Sequence[str],
    downscale: str,
    device: torch.device,
    log_path: Path | None = None,
    log_every: int = 25,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``discriminator`` alone for ``steps`` Adam steps against the generator's outputs.

    Each step: ``batch`` HR patches and ``batch`` SR patches (each from a random route) of
    the pool, loss BCE(D(HR), 1) + BCE(D(SR), 0) as in the joint phase. Returns a summary
    (settings, seconds, final loss and mean D(HR)/D(SR) over the last ``log_every`` steps)
    that the run stores in its checkpoint; writes a line per ``log_every`` steps to
    ``log_path`` (JSON lines) when given.
    """
    for name, value in (("steps", steps), ("batch", batch), ("pool", pool)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"discriminator warm-up: {name} must be a positive int, got {value!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"discriminator warm-up: lr must be a finite number > 0, got {lr!r}")
    from tqdm import tqdm

    rng = warmup_rng(seed)
    t0 = time.time()
    hr_pool, sr_pool = build_pool(generator, data, rng, pool, routes, downscale, device)
    pool_s = time.time() - t0
    opt = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    discriminator.train()
    window: dict[str, list[float]] = {"loss_d": [], "d_hr": [], "d_sr": []}
    last: dict[str, float] = {}
    log_file = open(log_path, "w") if log_path is not None else None
    try:
        for step in tqdm(range(1, steps + 1), disable=not progress, dynamic_ncols=True, desc="D warm-up"):
            idx = torch.from_numpy(rng.integers(0, pool, batch)).to(device)
            route = torch.from_numpy(rng.integers(0, len(routes), batch)).to(device)
            hr, sr = hr_pool[idx], sr_pool[route, idx]
            logits = discriminator(torch.cat([hr, sr]))
            logits_hr, logits_sr = logits.split(batch)
            loss = discriminator_loss(logits_hr, [logits_sr])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"discriminator warm-up: loss became {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window["loss_d"].append(loss.item())
            window["d_hr"].append(torch.sigmoid(logits_hr.detach()).mean().item())
            window["d_sr"].append(torch.sigmoid(logits_sr.detach()).mean().item())
            if step % log_every == 0 or step == steps:
                last = {k: float(np.mean(v)) for k, v in window.items()}
                if log_file is not None:
                    log_file.write(json.dumps({"step": step, **last, "elapsed_s": round(time.time() - t0, 1)}) + "\n")
                    log_file.flush()
                for v in window.values():
                    v.clear()
    finally:
        if log_file is not None:
            log_file.close()
    return {
        "steps": steps,
        "lr": lr,
        "batch": batch,
        "pool": pool,
        "routes": list(routes),
        "pool_seconds": round(pool_s, 1),
        "seconds": round(time.time() - t0, 1),
        **{f"final_{k}": v for k, v in last.items()},
    }

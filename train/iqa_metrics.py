"""How well a score predictor does: EMD, and SROCC/PLCC of its mean score against the
ground truth's (numpy only, no scipy), beside the EMD of a constant predictor."""

from __future__ import annotations

import math

import numpy as np
import torch

from train.iqa_data import mean_of
from train.models.nima import ScorePredictor, emd_loss

__all__ = ["rankdata", "srocc", "plcc", "evaluate"]


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
def evaluate(
    model: ScorePredictor,
    images: np.ndarray,
    targets: np.ndarray,
    *,
    device: torch.device,
    batch_size: int = 32,
    prior: np.ndarray | None = None,
    amp: bool = False,
) -> dict[str, float | None]:
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

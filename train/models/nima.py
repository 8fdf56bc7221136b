"""NIMA-style score predictor (Talebi & Milanfar 2018) as 4PP-EUSR uses it (phase 2).

MobileNetV2 → global average pool (1280-d) → dropout 0.75 (train only) → dense 10 →
softmax over scores 1..10. The network takes pixel values in [0, 255] and scales them
itself with (x − 127.5)/127.5 (EUSR_SPEC.md), so phase 3 can feed SR output directly.
``forward`` returns both the score distribution and the pooled feature: phase 3 uses the
mean score (l_as, l_ss) and the feature (l_ar, l_sr).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from train.models.mobilenet_v2 import FEATURE_DIM, MobileNetV2

__all__ = [
    "ScorePredictorConfig",
    "ScorePredictor",
    "mean_score",
    "emd_loss",
    "SCORE_VALUES",
    "save_score_predictor",
    "load_score_predictor",
    "CHECKPOINT_KIND",
]

CHECKPOINT_KIND = "score_predictor"
SCORE_VALUES = torch.arange(1, 11, dtype=torch.float32)  # the 10 bins are scores 1..10


@dataclass(frozen=True, kw_only=True)
class ScorePredictorConfig:
    num_scores: int = 10
    dropout: float = 0.75
    input_size: int = 192  # training crop; the network itself takes any size
    dataset: str = ""  # "ava" or "tid2013" (informational: which quality the head predicts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ScorePredictorConfig:
        return cls(**d)


class ScorePredictor(nn.Module):
    def __init__(self, config: ScorePredictorConfig | None = None) -> None:
        super().__init__()
        self.config = config or ScorePredictorConfig()
        self.backbone = MobileNetV2()
        del self.backbone.classifier  # the ImageNet head is not part of the predictor
        self.head = nn.Sequential(nn.Dropout(self.config.dropout), nn.Linear(FEATURE_DIM, self.config.num_scores))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """1280-d pooled feature of images in [0, 255] (B, 3, H, W)."""
        return self.backbone.pooled((x - 127.5) / 127.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score distribution (B, 10), pooled feature (B, 1280)) of images in [0, 255]."""
        feat = self.features(x)
        return torch.softmax(self.head(feat), dim=1), feat


def mean_score(probs: torch.Tensor) -> torch.Tensor:
    """Expected score Σ s·p(s) over the scores 1..N (B,)."""
    values = torch.arange(1, probs.shape[-1] + 1, dtype=probs.dtype, device=probs.device)
    return (probs * values).sum(dim=-1)


def emd_loss(pred: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Normalised earth mover's distance between score distributions, averaged over the batch:
    (mean_k |CDF_p(k) − CDF_q(k)|^r)^(1/r) (NIMA, eq. 1; r = 2 is the "squared EMD")."""
    if pred.shape != target.shape:
        raise ValueError(f"emd_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    cdf_diff = torch.cumsum(pred, dim=-1) - torch.cumsum(target, dim=-1)
    per_sample = cdf_diff.abs().pow(r).mean(dim=-1).pow(1.0 / r)
    return per_sample.mean()


def save_score_predictor(path: str | os.PathLike, model: ScorePredictor, **kwargs):
    """``save_checkpoint`` with this model's kind and config (kwargs: optimizer, train_state, ...)."""
    from train.checkpoint import save_checkpoint

    return save_checkpoint(
        path,
        model,
        config=model.config.to_dict(),
        config_name=model.config.dataset or "custom",
        kind=CHECKPOINT_KIND,
        **kwargs,
    )


def load_score_predictor(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", frozen: bool = True
) -> ScorePredictor:
    """A phase-2 checkpoint as a ScorePredictor; ``frozen``: eval mode, no gradients (phase 3)."""
    from train.checkpoint import CheckpointError, load_checkpoint, load_state_into

    ckpt = load_checkpoint(path, expect_kind=CHECKPOINT_KIND)
    try:
        config = ScorePredictorConfig.from_dict(ckpt.config)
    except TypeError as e:
        raise CheckpointError(f"{ckpt.path}: invalid score-predictor config in header ({e})") from None
    model = ScorePredictor(config)
    state = ckpt.ema_state or ckpt.model_state
    load_state_into(model, state, ckpt.path)
    model.to(device)
    if frozen:
        model.eval()
        model.requires_grad_(False)
    return model

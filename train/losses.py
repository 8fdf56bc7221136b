"""The loss terms of 4PP-EUSR (phase 3, eq. 8 of the paper) and the discriminator loss.

Each function takes one route's tensors; the trainer averages every term over the routes
used (three with multi-pass upscaling, one without). Reductions follow the authors'
TensorFlow code, since the weights of eq. 8 were tuned with them:

- l_r  = mean |SR − HR| over every pixel and channel, values in [0, 255] (as phase 1);
- l_g  = −log D(SR) = BCE-with-logits(D(SR), 1), mean over images and logit positions;
- l_as, l_ss = max(0, (10 − S(SR)) − 0.8·(10 − S(HR))), mean over the batch, where S is
  the mean of the predicted score distribution over the scores 1..10;
- l_ar, l_sr = squared L2 between pooled 1280-d features, **mean over elements** (batch ×
  1280), as tf.losses.mean_squared_error in the authors' code; a sum over the 1280 dims
  would make these terms 1280× larger than the weight 0.1 was tuned for;
- discriminator: BCE(D(HR), 1) + mean over routes of BCE(D(SR), 0), each mean over
  images and positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

__all__ = [
    "LossWeights",
    "TERMS",
    "PREDICTOR_TERMS",
    "reconstruction_loss",
    "adversarial_loss",
    "score_loss",
    "representation_loss",
    "discriminator_loss",
    "SCORE_MARGIN",
    "MAX_SCORE",
]

SCORE_MARGIN = 0.8  # SR may be 20% *worse* than HR (in 10 − score) before the hinge acts
MAX_SCORE = 10.0

# Short names used in logs, in eq. 8's order.
TERMS = ("l_r", "l_g", "l_as", "l_ar", "l_ss", "l_sr")
PREDICTOR_TERMS = ("l_as", "l_ar", "l_ss", "l_sr")


@dataclass(frozen=True, kw_only=True)
class LossWeights:
    """Weights of eq. 8: α_r·l_r + α_g·l_g + α_p·(α_as·l_as + α_ar·l_ar + α_ss·l_ss + α_sr·l_sr).

    Defaults are the paper's. Table 6 varies ``reconstruction`` (α_r ∈ {0.5, 0.05, 0.005})
    and ``predictor`` (α_p ∈ {0, 1}, the switch on every score-predictor term). A term whose
    effective weight is 0 is not computed at all (no predictor or discriminator pass for it).
    """

    reconstruction: float = 0.05  # α_r
    adversarial: float = 0.1  # α_g
    aesthetic_score: float = 0.01  # α_as
    aesthetic_representation: float = 0.1  # α_ar
    subjective_score: float = 0.01  # α_ss
    subjective_representation: float = 0.1  # α_sr
    predictor: float = 1.0  # α_p

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not value >= 0
                or value == float("inf")
            ):
                raise ValueError(f"LossWeights.{f.name} must be a finite number >= 0, got {value!r}")

    def effective(self) -> dict[str, float]:
        """Weight of each term as it enters the total (α_p folded into the predictor terms)."""
        p = float(self.predictor)
        return {
            "l_r": float(self.reconstruction),
            "l_g": float(self.adversarial),
            "l_as": p * self.aesthetic_score,
            "l_ar": p * self.aesthetic_representation,
            "l_ss": p * self.subjective_score,
            "l_sr": p * self.subjective_representation,
        }

    def active(self) -> tuple[str, ...]:
        """Terms with a non-zero effective weight, in eq. 8's order."""
        return tuple(k for k, w in self.effective().items() if w != 0)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def reconstruction_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """l_r: mean absolute error over all elements (0–255 values)."""
    _same_shape("reconstruction_loss", sr, hr)
    return F.l1_loss(sr.float(), hr.float())


def adversarial_loss(logits_sr: torch.Tensor) -> torch.Tensor:
    """l_g = −log D(SR), computed stably from logits, mean over images and positions."""
    logits_sr = logits_sr.float()
    return F.binary_cross_entropy_with_logits(logits_sr, torch.ones_like(logits_sr))


def score_loss(score_sr: torch.Tensor, score_hr: torch.Tensor, margin: float = SCORE_MARGIN) -> torch.Tensor:
    """l_as / l_ss: hinge on the predicted mean scores (B,), mean over the batch.

    Zero as long as SR's distance from the best score stays within ``margin`` × HR's, so
    the generator is pushed only where SR looks clearly worse than its ground truth.
    """
    _same_shape("score_loss", score_sr, score_hr)
    gap = (MAX_SCORE - score_sr.float()) - margin * (MAX_SCORE - score_hr.float())
    return torch.clamp(gap, min=0).mean()


def representation_loss(feat_sr: torch.Tensor, feat_hr: torch.Tensor) -> torch.Tensor:
    """l_ar / l_sr: squared L2 between pooled features, mean over all elements (B × 1280)."""
    _same_shape("representation_loss", feat_sr, feat_hr)
    return F.mse_loss(feat_sr.float(), feat_hr.float())


def discriminator_loss(logits_hr: torch.Tensor, logits_sr: Sequence[torch.Tensor]) -> torch.Tensor:
    """BCE(D(HR), 1) + mean over routes of BCE(D(SR), 0) (logits; SR detached by the caller
    when the generator must not receive this gradient)."""
    if len(logits_sr) == 0:
        raise ValueError("discriminator_loss needs the logits of at least one SR route")
    logits_hr = logits_hr.float()
    real = F.binary_cross_entropy_with_logits(logits_hr, torch.ones_like(logits_hr))
    fake = sum(
        F.binary_cross_entropy_with_logits(x.float(), torch.zeros_like(x, dtype=torch.float32)) for x in logits_sr
    )
    return real + fake / len(logits_sr)


def _same_shape(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: SR {tuple(a.shape)} and HR {tuple(b.shape)} differ in shape")

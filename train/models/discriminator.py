"""The 4PP-EUSR discriminator (phase 3): ten 3×3 convs, two dense layers, logits out.

Layer for layer as ../shared/EUSR_SPEC.md ("Perceptual training"): convs with bias
3→32 s1, 32→32 s2, 32→64 s1, 64→64 s2, 64→128 s1, 128→128 s2, 128→256 s1, 256→256 s2,
256→512 s1, 512→512 s2, each followed by LeakyReLU(0.2); no batch norm. Then dense 1024 +
LeakyReLU(0.2) + dense 1, giving logits (the sigmoid lives in the BCE-with-logits loss).
It sees raw 0–255 RGB values, as in the authors' code (no mean subtraction, no scaling).

Two readings of "dense" (``dense=``):

- ``"per_position"`` (default): the two dense layers act on each 512-d position of the
  final feature map (as 1×1 convs), so a 192×192 image gives 6×6 = 36 logits. This is what
  the authors' TensorFlow code does (flatten, then reshape to (-1, 512) before the dense
  layers), i.e. what the published numbers were produced with. It also works at any input
  size that survives five stride-2 convs (small test patches, other crops), and it is much
  smaller: 0.53 M dense weights instead of 18.9 M for a true flatten at 192.
- ``"flatten"``: the paper's figure, one dense layer over the whole flattened 6×6×512 map,
  one logit per image. Needs the input size fixed at construction (``input_size``).

Stride-2 convs pad one pixel on every side (PyTorch's symmetric padding); TensorFlow's
"same" pads only bottom/right for even sizes. The output size is the same; only the pixel
alignment of the sampling grid differs, which matters for porting weights, and the authors
published no discriminator weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Discriminator", "DENSE_MODES", "CONV_CHANNELS", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "discriminator"
DENSE_MODES = ("per_position", "flatten")
# (output channels, stride) of the ten convs.
CONV_CHANNELS: tuple[tuple[int, int], ...] = (
    (32, 1),
    (32, 2),
    (64, 1),
    (64, 2),
    (128, 1),
    (128, 2),
    (256, 1),
    (256, 2),
    (512, 1),
    (512, 2),
)


def _conv_out(n: int) -> int:
    """Spatial size after the ten convs (3×3, padding 1, stride 1 or 2)."""
    for _, stride in CONV_CHANNELS:
        n = (n - 1) // stride + 1
    return n


class Discriminator(nn.Module):
    """``forward(x)`` maps (B, 3, H, W) RGB in [0, 255] to logits: (B, 1, H/32, W/32) for
    ``per_position``, (B, 1) for ``flatten``."""

    def __init__(self, dense: str = "per_position", input_size: int = 192, negative_slope: float = 0.2) -> None:
        super().__init__()
        if dense not in DENSE_MODES:
            raise ValueError(f"Discriminator dense={dense!r}; expected one of {list(DENSE_MODES)}")
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise ValueError(f"Discriminator input_size must be a positive int, got {input_size!r}")
        self.dense = dense
        self.input_size = input_size
        self.negative_slope = negative_slope
        layers: list[nn.Module] = []
        cin = 3
        for cout, stride in CONV_CHANNELS:
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(negative_slope)]
            cin = cout
        self.features = nn.Sequential(*layers)
        if dense == "per_position":
            self.head = nn.Sequential(nn.Conv2d(cin, 1024, 1), nn.LeakyReLU(negative_slope), nn.Conv2d(1024, 1, 1))
        else:
            side = _conv_out(input_size)
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(cin * side * side, 1024), nn.LeakyReLU(negative_slope), nn.Linear(1024, 1)
            )
        # The authors' TF layers default to Glorot-uniform kernels and zero biases.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Discriminator expects (B, 3, H, W) RGB, got shape {tuple(x.shape)}")
        if self.dense == "flatten" and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"Discriminator(dense='flatten') was built for {self.input_size}×{self.input_size} inputs, "
                f"got {x.shape[-2]}×{x.shape[-1]}; crop to that size, build it with input_size="
                f"{x.shape[-1] if x.shape[-1] == x.shape[-2] else '...'}, or use dense='per_position' (any size)"
            )
        return self.head(self.features(x))

    def config(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this network."""
        return {"dense": self.dense, "input_size": self.input_size, "negative_slope": self.negative_slope}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Discriminator:
        return cls(**config)

    def extra_repr(self) -> str:
        return f"dense={self.dense!r}, input_size={self.input_size}"

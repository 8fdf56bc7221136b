"""Tiny ONNX models for the runtime tests, exported from PyTorch on the fly.

* ``nearest``: nearest-neighbour ×scale, so the expected output is exactly computable.
* ``conv``: three 3×3 convolutions + PixelShuffle (fixed seed) on top of a nearest
  upsample: a receptive field of radius 3 LR pixels, so tiling with halo >= 3 must match
  whole-image inference and halo 0 must not.

Both come as float32-nchw or uint8-nhwc (rounding/clamping inside the graph), with or
without the exporter's ``fourpp_eusr`` metadata. A plain helper module: the session-scoped
fixtures that export each model once per run live in conftest.py.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

RECEPTIVE_RADIUS = 3  # the conv model's receptive field radius in LR pixels


class NearestUp(nn.Module):
    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


class ConvUp(nn.Module):
    def __init__(self, scale: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        with torch.no_grad():
            for p in self.body.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.skip = NearestUp(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + 0.1 * self.body(x)


class Uint8NHWC(nn.Module):
    """uint8 [N,H,W,3] in and out, normalisation and rounding inside the graph."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.core(x.permute(0, 3, 1, 2).float())
        return y.round().clamp(0, 255).permute(0, 2, 3, 1).to(torch.uint8)  # cast last: uint8 only at the edges


def export_model(
    path: Path,
    kind: str = "nearest",
    *,
    scale: int = 4,
    io: str = "float32-nchw",
    metadata: bool | dict = True,
    static_hw: int | None = None,
) -> Path:
    """Export a test model to ``path`` and return it."""
    core = NearestUp(scale) if kind == "nearest" else ConvUp(scale)
    core.eval()
    if io == "uint8-nhwc":
        module: nn.Module = Uint8NHWC(core)
        example = torch.zeros(1, static_hw or 8, static_hw or 8, 3, dtype=torch.uint8)
        dyn = {"lr": {0: "n", 1: "h", 2: "w"}, "sr": {0: "n", 1: "H", 2: "W"}}
    else:
        module = core
        example = torch.zeros(1, 3, static_hw or 8, static_hw or 8)
        dyn = {"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "H", 3: "W"}}
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes=None if static_hw else dyn,
            opset_version=17,
            dynamo=False,
        )
    if metadata:
        model = onnx.load(str(path))
        meta = {
            "format": 1,
            "scale": scale,
            "io": io,
            "input": "lr",
            "output": "sr",
            "value_range": [0, 255],
            "config_name": f"test-{kind}",
            "config": {"kind": kind},
            "checkpoint_sha256": "0" * 64,
            "recommended_halo": RECEPTIVE_RADIUS if kind == "conv" else 0,
        }
        if isinstance(metadata, dict):
            meta.update(metadata)
        entry = model.metadata_props.add()
        entry.key, entry.value = "fourpp_eusr", json.dumps(meta)
        onnx.save(model, str(path))
    return path


def reference(path: Path, lr_nchw: np.ndarray) -> np.ndarray:
    """Whole-image inference with plain onnxruntime: the ground truth for tiling."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["sr"], {"lr": lr_nchw})[0]

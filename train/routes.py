"""The three ×4 routes of phase 3 (EUSR_SPEC.md, "Perceptual training") and the ×0.5 downscale.

- ``x4``:     the ×4 path;
- ``x2x2``:   the ×2 path twice (the second pass takes the first's raw float output);
- ``x8down``: the ×8 path, then a ×0.5 downscale: ``decimate`` keeps pixels (2i, 2j), which
  is what the authors' code computes (TF1's legacy bicubic resize with align_corners=False
  samples input position 2i exactly, where the cubic kernel is 1 at that pixel and 0 at its
  neighbours); ``bicubic`` is the paper's wording, here MATLAB's antialiased bicubic
  imresize (as the LR images are made), differentiable.

A module of its own because both the joint phase (train.perceptual) and the discriminator
warm-up (train.discriminator_warmup) upscale through the routes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from train.models.eusr import EUSR

__all__ = ["ROUTES", "ROUTE_SCALES", "DOWNSCALE_METHODS", "bicubic_half", "downscale_half", "sr_routes"]

ROUTES = ("x4", "x2x2", "x8down")
ROUTE_SCALES = {"x4": (4,), "x2x2": (2,), "x8down": (8,)}
"""The generator paths each route runs through."""
DOWNSCALE_METHODS = ("decimate", "bicubic")

_BICUBIC_TABLES: dict[tuple[int, str], tuple[torch.Tensor, np.ndarray]] = {}


def _half_table(n: int, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    key = (n, str(device))
    if key not in _BICUBIC_TABLES:
        from runtime.imresize import resize_weights

        idx, w = resize_weights(n, math.ceil(n / 2), 0.5, antialias=True)
        _BICUBIC_TABLES[key] = (torch.from_numpy(idx).to(device), w)
    return _BICUBIC_TABLES[key]


def bicubic_half(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)`` (bicubic, antialiased, mirrored borders) on (..., H, W),
    float, differentiable: runtime/imresize.py's float path as gathers and weighted sums
    (8 taps per output pixel). Rows first, as MATLAB does for equal scales."""
    if x.ndim < 2:
        raise ValueError(f"bicubic_half expects (..., H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    idx, wt = _half_table(h, x.device)
    weights = torch.from_numpy(wt).to(x.device, x.dtype)
    x = (x[..., idx, :] * weights[:, :, None]).sum(dim=-2)  # (..., H/2, taps, W) → (..., H/2, W)
    idx, wt = _half_table(w, x.device)
    weights = torch.from_numpy(wt).to(x.device, x.dtype)
    return (x[..., idx] * weights).sum(dim=-1)


def downscale_half(x: torch.Tensor, method: str = "decimate") -> torch.Tensor:
    """Halve (..., H, W): ``decimate`` keeps pixels (2i, 2j) (authors' code), ``bicubic`` is
    MATLAB's antialiased bicubic (the paper's wording)."""
    if method == "decimate":
        return x[..., ::2, ::2]
    if method == "bicubic":
        return bicubic_half(x)
    raise ValueError(f"downscale method {method!r}; expected one of {list(DOWNSCALE_METHODS)}")


def sr_routes(
    generator: EUSR, lr: torch.Tensor, routes: Sequence[str] = ROUTES, downscale: str = "decimate"
) -> dict[str, torch.Tensor]:
    """The ×4 SR images of each route (raw floats, not rounded or clipped)."""
    out: dict[str, torch.Tensor] = {}
    for route in routes:
        if route == "x4":
            out[route] = generator(lr, 4)
        elif route == "x2x2":
            out[route] = generator(generator(lr, 2), 2)
        elif route == "x8down":
            out[route] = downscale_half(generator(lr, 8), downscale)
        else:
            raise ValueError(f"unknown route {route!r}; expected some of {list(ROUTES)}")
    return out

"""Validation of an EUSR during phases 1 and 3: PSNR-Y (and NIQE) on whole images, scored
exactly as ``train.evaluate`` scores them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.data import list_images, load_rgb, make_lr, mod_crop
from train.models.eusr import EUSR

__all__ = ["Validator", "log_validation"]


class Validator:
    """PSNR-Y of the model vs HR and of bicubic vs HR on whole validation images; with
    ``niqe=True`` also the model's NIQE (phase 3, where PSNR is expected to fall), scored
    as ``train.evaluate`` scores it (uint8, Y or gray, ``scale``-pixel border)."""

    def __init__(self, folder: Path, scale: int, *, niqe: bool = False) -> None:
        from runtime.metrics import psnr_y

        self.scale = scale
        self.niqe = niqe
        self.pairs = []
        for path in list_images(folder):
            hr = mod_crop(load_rgb(path), scale)
            lr = make_lr(hr, scale)
            self.pairs.append((path.name, lr, hr))
        self._psnr_y = psnr_y
        self.bicubic = float(
            np.mean([psnr_y(*_as_scored(_bicubic_up(lr, scale), hr), border=scale) for _, lr, hr in self.pairs])
        )

    @torch.no_grad()
    def __call__(self, model: EUSR, device: torch.device) -> dict[str, float]:
        model.eval()
        per, per_niqe = {}, {}
        for name, lr, hr in self.pairs:
            x = torch.from_numpy(lr.transpose(2, 0, 1).copy()).float()[None].to(device)
            sr = model(x, self.scale)[0].permute(1, 2, 0).cpu().numpy()
            scored, ref = _as_scored(sr, hr)
            per[name] = self._psnr_y(scored, ref, border=self.scale)
            if self.niqe:
                from runtime.niqe import BLOCK_SIZE, niqe

                if min(ref.shape[:2]) - 2 * self.scale >= BLOCK_SIZE:
                    per_niqe[name] = niqe(scored, crop_border=self.scale)
        model.train()
        mean = float(np.mean(list(per.values())))
        out = {
            "psnr_y": mean,
            "bicubic_psnr_y": self.bicubic,
            "gain_db": mean - self.bicubic,
            **{f"psnr_y/{k}": v for k, v in per.items()},
        }
        if per_niqe:
            out.update(
                {"niqe": float(np.mean(list(per_niqe.values()))), **{f"niqe/{k}": v for k, v in per_niqe.items()}}
            )
        return out


def log_validation(log: logging.Logger, step: int, scale: int, res: Mapping[str, Any]) -> None:
    """The one-line summary of a validation (NIQE when it was scored)."""
    niqe_note = f", NIQE {res['niqe']:.3f}" if "niqe" in res else ""
    log.info(
        "step %d: val PSNR-Y ×%d %.3f dB (bicubic %.3f, gain %+.3f)%s",
        step,
        scale,
        res["psnr_y"],
        res["bicubic_psnr_y"],
        res["gain_db"],
        niqe_note,
    )


def _as_scored(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gray photos (loaded as RGB) are scored on their gray values, as the field does, not
    on Y of the replicated RGB (which would shrink the range to 16..235 and add 1.3 dB)."""
    if np.array_equal(hr[..., 0], hr[..., 1]) and np.array_equal(hr[..., 0], hr[..., 2]):
        luma = 0.299 * sr[..., 0] + 0.587 * sr[..., 1] + 0.114 * sr[..., 2]
        return luma, hr[..., 0]
    return sr, hr


def _bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    from runtime.imresize import imresize

    return imresize(lr, float(scale))

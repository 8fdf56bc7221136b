"""Training data for phase 1: random LR/HR patch pairs from a folder of HR images.

DIV2K layout works as is: point ``hr_dir`` at ``DIV2K_train_HR`` and LR images are made on
the fly with MATLAB-bicubic ``imresize`` (cached per image and scale), or pass
``lr_dirs={4: "DIV2K_train_LR_bicubic/X4", ...}`` to use DIV2K's own LR files
(``0001x4.png`` beside ``0001.png``). ``hr_dir`` may also be several folders (their images
in the order given) or a list of image files.

A patch's image is drawn uniformly per image by default, which is uniform per pixel on
DIV2K's equal-size images; ``sample_by="area"`` draws it in proportion to its number of patch
positions instead (uniform over every patch of the set), for folders whose images differ
much in size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.imresize import imresize
from runtime.utils import IMAGE_SUFFIXES, is_image_path
from runtime.utils import list_images as _list_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "SAMPLE_BY",
    "list_images",
    "list_image_sources",
    "load_rgb",
    "mod_crop",
    "PatchDataset",
    "make_lr",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = IMAGE_SUFFIXES
"""The image suffixes a folder is listed with: the project's one set (runtime.utils)."""

SAMPLE_BY = ("image", "area")
"""How PatchDataset draws a patch's image: uniformly per image, or by number of patch positions."""


def list_images(folder: str | Path) -> list[Path]:
    """The images of a training or validation folder, sorted; FileNotFoundError naming the
    folder when it is missing or holds none."""
    return _list_images(folder, what="image folder", error=FileNotFoundError)


def list_image_sources(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    """The images of one folder, or of several folders and image files in the order given
    (each folder sorted): a single folder lists exactly as :func:`list_images`."""
    if isinstance(sources, (str, Path)):
        return list_images(sources)
    paths: list[Path] = []
    for source in sources:
        source = Path(source)
        # An image file stands for itself; anything else must be a folder of images.
        paths.extend([source] if source.is_file() and is_image_path(source) else list_images(source))
    if not paths:
        raise FileNotFoundError("no training images: the list of folders/files is empty")
    return paths


def load_rgb(path: str | Path) -> np.ndarray:
    """H×W×3 uint8; gray images are replicated to three channels, alpha dropped."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise OSError(f"{path}: cannot read as an image ({e})") from None


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop so both sides are multiples of ``scale`` (the field's convention)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic LR image (uint8) of a mod-cropped HR image."""
    return imresize(mod_crop(hr, scale), 1.0 / scale)


@dataclass
class _Item:
    path: Path
    hr: np.ndarray
    lr: dict[int, np.ndarray]
    hr_padded: dict[int, np.ndarray] | None = None  # per scale, with --mirror-border only

    def hr_for(self, scale: int) -> np.ndarray:
        return self.hr if self.hr_padded is None else self.hr_padded[scale]


def _mirror(img: np.ndarray, border: int) -> np.ndarray:
    return np.pad(img, ((border, border), (border, border), (0, 0)), mode="symmetric")


class PatchDataset:
    """Random aligned patch pairs, drawn with a caller-owned numpy Generator (reproducible).

    ``mirror_border=b`` pads every LR image by ``b`` pixels and its HR image by ``b·scale`` in
    the runtime's border mode before patches are drawn, so patches that cross an image edge
    show the network the mirrored context the runtime gives border windows (issue 16's band).
    """

    def __init__(
        self,
        hr_dir: str | Path | Sequence[str | Path],
        scales: Sequence[int],
        *,
        lr_patch: int = 48,
        augment: bool = True,
        lr_dirs: Mapping[int, str | Path] | None = None,
        sample_by: str = "image",
        mirror_border: int = 0,
    ) -> None:
        if sample_by not in SAMPLE_BY:
            raise ValueError(f"sample_by must be one of {SAMPLE_BY}, got {sample_by!r}")
        if mirror_border < 0:
            raise ValueError(f"mirror_border must be >= 0 LR pixels, got {mirror_border}")
        paths = list_image_sources(hr_dir)
        self.sample_by = sample_by
        self.scales = tuple(scales)
        self.lr_patch = lr_patch
        self.augment = augment
        self.items: list[_Item] = []
        for path in paths:
            hr = load_rgb(path)
            lrs = {}
            for s in self.scales:
                if lr_dirs and s in lr_dirs:
                    lr_path = Path(lr_dirs[s]) / f"{path.stem}x{s}{path.suffix}"
                    lrs[s] = load_rgb(lr_path)
                else:
                    lrs[s] = make_lr(hr, s)
            padded = None
            if mirror_border:
                # the runtime's border context (runtime.tiling.BORDER_MODE, symmetric): LR padded by
                # b and HR by b*s stay an exact pair, since MATLAB's bicubic pads symmetrically too
                lrs = {s: _mirror(lr, mirror_border) for s, lr in lrs.items()}
                padded = {s: _mirror(mod_crop(hr, s), mirror_border * s) for s in self.scales}
            self.items.append(_Item(path, hr, lrs, padded))
        self._eligible = {
            s: [i for i, it in enumerate(self.items) if min(it.lr[s].shape[:2]) >= lr_patch] for s in self.scales
        }
        for s, idx in self._eligible.items():
            skipped = len(self.items) - len(idx)
            if not idx:
                raise ValueError(
                    f"no image in {hr_dir} is large enough for ×{s} patches "
                    f"(LR patch {lr_patch} needs HR images of at least {lr_patch * s} px per side)"
                )
            if skipped:
                log.warning("×%d: %d image(s) smaller than %d px skipped", s, skipped, lr_patch * s)
        # Patch positions per eligible image: the image-drawing probabilities of sample_by="area".
        self._area_p = {}
        for s, idx in self._eligible.items():
            counts = np.array(
                [
                    (self.items[i].lr[s].shape[0] - lr_patch + 1) * (self.items[i].lr[s].shape[1] - lr_patch + 1)
                    for i in idx
                ],
                np.float64,
            )
            self._area_p[s] = counts / counts.sum()

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, rng: np.random.Generator, scale: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(lr, hr) float32 NCHW batches in [0, 255] for one scale."""
        p = self.lr_patch
        lr_out = np.empty((batch, 3, p, p), np.float32)
        hr_out = np.empty((batch, 3, p * scale, p * scale), np.float32)
        eligible = self._eligible[scale]
        by_area = self.sample_by == "area"
        for b in range(batch):
            # Two draws that consume the stream differently: "image" keeps the historical one.
            pick = rng.choice(len(eligible), p=self._area_p[scale]) if by_area else rng.integers(len(eligible))
            item = self.items[eligible[pick]]
            lr_img = item.lr[scale]
            y = int(rng.integers(lr_img.shape[0] - p + 1))
            x = int(rng.integers(lr_img.shape[1] - p + 1))
            lr = lr_img[y : y + p, x : x + p]
            hr = item.hr_for(scale)[y * scale : (y + p) * scale, x * scale : (x + p) * scale]
            if self.augment:
                k = int(rng.integers(4))
                flip = bool(rng.integers(2))
                lr, hr = np.rot90(lr, k), np.rot90(hr, k)
                if flip:
                    lr, hr = lr[:, ::-1], hr[:, ::-1]
            lr_out[b] = lr.transpose(2, 0, 1)
            hr_out[b] = hr.transpose(2, 0, 1)
        return lr_out, hr_out

"""Image-quality data for the phase-2 score predictors: AVA and TID2013 readers, splits, crops.

Readers validate every line and raise ``ValueError`` naming the file, the line number, what
was found and what was expected, so a truncated download or a file of the wrong dataset is
caught before training starts. Listed images whose file is missing are skipped with one
warning (AVA's official image packs lack a few ids); none left is an error.

Targets are score distributions over the 10 bins, scores 1..10:

* AVA: the normalised vote histogram (columns c1..c10 of ``AVA.txt``).
* TID2013: a Gaussian from the MOS mean and standard deviation, with the score range
  shifted from [0, 9] to [1, 10] (EUSR_SPEC.md): mean μ = MOS + 1, σ = the listed std
  (a shift does not change it). The density is evaluated at the bin values 1, 2, ..., 10
  and normalised to sum 1 — a discretised, truncated Gaussian, so its mean is μ only when
  σ is moderate and μ not near 1 or 10. σ below ``MIN_STD`` (1e-3) is raised to it: all
  the mass then lies on the bin nearest μ (halved between two at an exact tie); the
  computation is a softmax of −(s − μ)²/(2σ²), which never underflows to all zeros.

Splits: AVA holds out ``val_count`` images (5,000 as the paper) drawn with a seed; a set
with fewer than twice that many images holds out ``val_fraction`` of them instead (small
or synthetic sets). TID2013 puts reference images 1..3 (files ``i01_*``, ``i02_*``,
``i03_*``: 360 images) in validation and the rest (2,640) in training.

Crops (``IQADataset``): the image is first resized so its shorter side is ``resize`` pixels
(default 256; bicubic, antialiased when shrinking, aspect kept; 0 keeps the native size),
then training takes a random ``crop``×``crop`` window (192, the spec's input size) and a
horizontal flip with probability 1/2; validation takes the centre crop. NIMA resizes to
256 and crops 224; the spec's 192 crop keeps the same 3/4 field of view less. An image
whose shorter side is still below ``crop`` after that is resized up so it equals ``crop``.
The module needs numpy and Pillow only (no torch); the caller owns the numpy Generator.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from train.data import load_rgb

__all__ = [
    "NUM_SCORES",
    "SCORES",
    "MIN_STD",
    "IQAEntry",
    "read_ava",
    "read_tid2013",
    "split_ava",
    "split_tid2013",
    "tid_target",
    "mean_of",
    "IQADataset",
    "TID_NAME",
]

log = logging.getLogger(__name__)

NUM_SCORES = 10
SCORES = np.arange(1, NUM_SCORES + 1, dtype=np.float64)  # the bins are the scores 1..10
MIN_STD = 1e-3
TID_MOS_RANGE = (0.0, 9.0)
# TID2013 file names: i<reference>_<distortion type>_<level>.bmp (any case).
TID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.[a-z0-9]+$", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class IQAEntry:
    """One rated image: its file, its target distribution over scores 1..10 and, for
    TID2013, the index of its reference image (0 for AVA)."""

    name: str
    path: Path
    target: np.ndarray = field(repr=False)
    group: int = 0

    @property
    def mean(self) -> float:
        return float((self.target * SCORES).sum())


def mean_of(target: np.ndarray) -> np.ndarray:
    """Mean score Σ s·p(s) of distributions over scores 1..10 (last axis)."""
    return (np.asarray(target, np.float64) * SCORES).sum(axis=-1)


def _records(lines: list[str], path: Path, count: int, expected: str) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, "FILE, line N", fields) of each non-blank line; a line with another
    number of fields than ``count`` is an error naming the file, the line and what was expected."""
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {lineno}"
        if len(fields) != count:
            raise ValueError(f"{where}: found {len(fields)} fields ({line.strip()[:80]!r}); expected {expected}")
        yield lineno, where, fields


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e}); expected {what}") from None
    return text.splitlines()


def _image_index(folder: Path) -> dict[str, Path]:
    """File names in ``folder``, keyed by lower case (TID2013 mixes i01_.. and I01_..)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    index: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        index.setdefault(p.name.lower(), p)
    return index


def _drop_missing(entries: list[IQAEntry], missing: list[str], listing: Path, folder: Path) -> list[IQAEntry]:
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        log.warning(
            "%s: %d of %d listed images have no file in %s; skipped (%s)",
            listing,
            len(missing),
            len(missing) + len(entries),
            folder,
            shown,
        )
    if not entries:
        raise FileNotFoundError(f"{listing}: none of the {len(missing)} listed images was found in {folder}")
    return entries


# --- AVA -------------------------------------------------------------------------------------


def read_ava(ava_txt: str | Path, images_dir: str | Path | None = None) -> list[IQAEntry]:
    """Entries of ``AVA.txt`` (``index image_id c1..c10 tag1 tag2 challenge_id``, 15
    integers a line) whose ``<images_dir>/<image_id>.jpg`` exists; ``images_dir`` defaults
    to ``images/`` beside ``AVA.txt``."""
    ava_txt = Path(ava_txt)
    folder = Path(images_dir) if images_dir is not None else ava_txt.parent / "images"
    lines = _read_lines(ava_txt, "AVA.txt (index image_id c1..c10 tag1 tag2 challenge_id)")
    files = _image_index(folder)
    entries: list[IQAEntry] = []
    missing: list[str] = []
    seen: dict[str, int] = {}
    for lineno, where, fields in _records(
        lines, ava_txt, 15, "15 integers: index image_id c1..c10 tag1 tag2 challenge_id"
    ):
        values = []
        for column, v in enumerate(fields, 1):
            try:
                values.append(int(v))
            except ValueError:
                raise ValueError(
                    f"{where}: field {column} is {v!r}; expected 15 integers "
                    "(index image_id c1..c10 tag1 tag2 challenge_id)"
                ) from None
        image_id, counts = fields[1], np.array(values[2:12], dtype=np.float64)
        if (counts < 0).any():
            raise ValueError(f"{where}: negative vote count in c1..c10 {values[2:12]}; expected counts >= 0")
        if counts.sum() <= 0:
            raise ValueError(f"{where}: image {image_id} has no votes (c1..c10 all 0); expected at least one vote")
        if image_id in seen:
            raise ValueError(f"{where}: image id {image_id} is listed again (first on line {seen[image_id]})")
        seen[image_id] = lineno
        path = files.get(f"{image_id}.jpg")
        if path is None:
            missing.append(f"{image_id}.jpg")
            continue
        entries.append(IQAEntry(name=image_id, path=path, target=counts / counts.sum()))
    if not seen:
        raise ValueError(f"{ava_txt}: holds no entries; expected lines of 15 integers")
    return _drop_missing(entries, missing, ava_txt, folder)


def split_ava(
    entries: Sequence[IQAEntry], *, val_count: int = 5000, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[IQAEntry], list[IQAEntry]]:
    """(train, val): ``val_count`` images held out at random (seeded), or ``val_fraction``
    of them when the set has fewer than 2·``val_count`` images. Both keep file order."""
    n = len(entries)
    if val_count < 1:
        raise ValueError(f"val_count must be at least 1, got {val_count}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise ValueError(f"an AVA split needs at least 2 images, got {n}")
    n_val = val_count if n >= 2 * val_count else min(n - 1, max(1, round(val_fraction * n)))
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return [e for e, v in zip(entries, is_val) if not v], [e for e, v in zip(entries, is_val) if v]


# --- TID2013 ---------------------------------------------------------------------------------


def tid_target(mos: float, std: float, *, shift: float = 1.0) -> np.ndarray:
    """Discretised Gaussian over scores 1..10 with mean ``mos + shift`` and std ``std``
    (floored at MIN_STD), normalised to sum 1 (see the module docstring)."""
    mu, sigma = float(mos) + shift, max(float(std), MIN_STD)
    logits = -((SCORES - mu) ** 2) / (2.0 * sigma * sigma)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def read_tid2013(root: str | Path, images_dir: str | Path | None = None) -> list[IQAEntry]:
    """Entries of TID2013's ``mos_with_names.txt`` (``MOS name`` a line) and ``mos_std.txt``
    (one std a line, same order) whose image exists in ``images_dir`` (default
    ``<root>/distorted_images``; names matched case-insensitively)."""
    root = Path(root)
    mos_path, std_path = root / "mos_with_names.txt", root / "mos_std.txt"
    folder = Path(images_dir) if images_dir is not None else root / "distorted_images"
    mos_lines = _read_lines(mos_path, "TID2013 mos_with_names.txt (lines 'MOS name', e.g. '5.51429 i01_01_1.bmp')")
    std_lines = _read_lines(std_path, "TID2013 mos_std.txt (one standard deviation a line)")
    rows: list[tuple[int, float, str, int]] = []  # (line, mos, name, reference)
    lo, hi = TID_MOS_RANGE
    for lineno, where, fields in _records(mos_lines, mos_path, 2, "'MOS name', e.g. '5.51429 i01_01_1.bmp'"):
        try:
            mos = float(fields[0])
        except ValueError:
            raise ValueError(f"{where}: MOS {fields[0]!r} is not a number; expected 'MOS name'") from None
        if not (math.isfinite(mos) and lo <= mos <= hi):
            raise ValueError(f"{where}: MOS {fields[0]} is outside TID2013's range [{lo:g}, {hi:g}]")
        m = TID_NAME.match(fields[1])
        if m is None:
            raise ValueError(
                f"{where}: image name {fields[1]!r} does not look like TID2013's "
                "i<reference>_<type>_<level>.bmp (e.g. i01_01_1.bmp)"
            )
        rows.append((lineno, mos, fields[1], int(m.group(1))))
    stds: list[float] = []
    for _, where, fields in _records(std_lines, std_path, 1, "one number"):
        try:
            s = float(fields[0])
        except ValueError:
            raise ValueError(f"{where}: {fields[0]!r} is not a number; expected a standard deviation") from None
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"{where}: standard deviation {fields[0]} is negative or not finite; expected >= 0")
        stds.append(s)
    if not rows:
        raise ValueError(f"{mos_path}: holds no entries; expected lines 'MOS name'")
    if len(stds) != len(rows):
        raise ValueError(
            f"{std_path} has {len(stds)} values but {mos_path} lists {len(rows)} images; "
            "expected one standard deviation per image, in the same order"
        )
    seen: dict[str, int] = {}
    files = _image_index(folder)
    entries: list[IQAEntry] = []
    missing: list[str] = []
    for (lineno, mos, name, ref), std in zip(rows, stds):
        key = name.lower()
        if key in seen:
            raise ValueError(f"{mos_path}, line {lineno}: image {name} is listed again (first on line {seen[key]})")
        seen[key] = lineno
        path = files.get(key)
        if path is None:
            missing.append(name)
            continue
        entries.append(IQAEntry(name=name, path=path, target=tid_target(mos, std), group=ref))
    return _drop_missing(entries, missing, mos_path, folder)


def split_tid2013(
    entries: Sequence[IQAEntry], *, val_refs: Iterable[int] = (1, 2, 3)
) -> tuple[list[IQAEntry], list[IQAEntry]]:
    """(train, val): images of reference images ``val_refs`` (and all their distortions)
    are validation, the rest training."""
    refs = set(val_refs)
    train = [e for e in entries if e.group not in refs]
    val = [e for e in entries if e.group in refs]
    if not val:
        raise ValueError(f"no image belongs to the validation references {sorted(refs)}")
    if not train:
        raise ValueError(f"every image belongs to the validation references {sorted(refs)}; nothing left to train on")
    return train, val


# --- crops -----------------------------------------------------------------------------------


class IQADataset:
    """Rated images as uint8 crops (no torch): random crop + flip for training, centre crop
    for validation, after the shorter-side resize described in the module docstring.
    ``cache`` keeps the resized images in memory (fine for TID2013; AVA is ~250k images)."""

    def __init__(
        self, entries: Sequence[IQAEntry], *, crop: int = 192, resize: int = 256, train: bool = True, cache: bool = True
    ) -> None:
        if crop < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        if resize and resize < crop:
            raise ValueError(
                f"resize {resize} is smaller than the crop {crop}; expected resize >= crop (or 0: native size)"
            )
        if not entries:
            raise ValueError("no images to build a dataset from")
        self.entries = list(entries)
        self.crop, self.resize, self.train, self.cache = crop, resize, train, cache
        self.targets = np.stack([e.target for e in self.entries]).astype(np.float32)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, i: int) -> np.ndarray:
        """The resized H×W×3 uint8 image ``i`` (shorter side ``resize``, at least ``crop``)."""
        img = self._cache.get(i)
        if img is not None:
            return img
        img = load_rgb(self.entries[i].path)
        h, w = img.shape[:2]
        short = self.resize if self.resize else max(min(h, w), self.crop)
        short = max(short, self.crop)
        if min(h, w) != short:
            s = short / min(h, w)
            nh, nw = (short, max(short, round(w * s))) if h <= w else (max(short, round(h * s)), short)
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
        if self.cache:
            self._cache[i] = img
        return img

    def item(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """A crop×crop×3 uint8 crop of image ``i``: random (+ flip) when training, from
        ``rng``; centre otherwise."""
        img = self.image(i)
        h, w = img.shape[:2]
        c = self.crop
        if self.train:
            if rng is None:
                raise ValueError("a training crop needs the caller's numpy Generator")
            top, left = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            out = img[top : top + c, left : left + c]
            if rng.random() < 0.5:
                out = out[:, ::-1]
        else:
            top, left = (h - c) // 2, (w - c) // 2
            out = img[top : top + c, left : left + c]
        return out

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, 3, crop, crop) float32 in [0, 255], targets (B, 10) float32)."""
        crops = np.stack([self.item(int(i), rng) for i in indices])
        return crops.transpose(0, 3, 1, 2).astype(np.float32), self.targets[np.asarray(indices, dtype=np.int64)]

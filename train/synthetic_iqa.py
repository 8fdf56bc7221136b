"""SYNTHETIC stand-ins for TID2013 and AVA, in their real file formats, made from a folder
of photos: what the tests train on and what the demonstration phase-3 run uses as its
score predictors (AVA and TID2013 cannot be downloaded here). They are not AVA or TID2013:
the "opinion" is a formula of the distortion strength, the same for both formats, so a
predictor trained on either measures technical quality (sharpness, noise, compression),
not aesthetics.

Distortions, each with a severity u in [0, 1] (parameters interpolated linearly between
the anchors below; u = 0 is the undistorted crop):

  01  Gaussian blur, σ = 0.7, 1.2, 1.8, 2.6, 3.6 px at u = 0.2, 0.4, 0.6, 0.8, 1
  02  bicubic down then up (MATLAB imresize: the blur SR starts from), factor 2, 3, 4
      at u = 0.5, 0.75, 1
  03  Gaussian noise, σ = 3, 7, 12, 20, 30 (0–255 scale) at u = 0.2, 0.4, 0.6, 0.8, 1
  04  JPEG, quality 50, 30, 18, 10, 5 at u = 0.2, 0.4, 0.6, 0.8, 1

Quality on the 1..10 scale: q = 8.6 − 6.6·u + jitter (jitter ~ N(0, 0.2), q clipped to
[1, 10]): pristine ≈ 8.6, the strongest level of every type ≈ 2, strictly decreasing in u
before the jitter.

* ``--format tid2013``: ``--references`` crops (``--size`` px square) of the photos, taken
  in turn from each photo (reference k from photo (k−1) mod n, so i01–i03, the validation
  split, come from three different photos), each in 19 versions: the pristine crop
  (``iKK_00_0.bmp``, type 00: TID2013 itself lists no pristine images) and types 01–04 at
  their levels (5, 3, 5, 5 levels at u = 0.2..1; 0.5, 0.75, 1). ``mos_with_names.txt``
  holds MOS = q − 1 (TID2013's 0..9 scale), ``mos_std.txt`` a std drawn from U(0.55, 0.95).
* ``--format ava``: ``--count`` crops at random photo positions, each with no distortion
  (probability 1/5) or one type at u ~ U(0.05, 1); ``AVA.txt`` lists a vote histogram of
  60–240 votes drawn from a discretised Gaussian around q (σ ~ U(1.0, 1.6), AVA-like
  spread); images are ``images/<id>.jpg`` stored as JPEG quality 95, 4:4:4 (visually
  lossless; the pristine ones thus carry faint JPEG rounding).

Everything is drawn from one seeded numpy Generator: the same arguments give the same
files. ``synthetic.json`` records every image's distortion, parameter and quality.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from runtime.imresize import imresize
from runtime.utils import DefaultsHelpFormatter
from train.data import list_images, load_rgb
from train.iqa_data import SCORES, read_ava, read_tid2013

__all__ = ["DISTORTIONS", "quality", "distort", "make_tid2013", "make_ava", "main"]

log = logging.getLogger("train.synthetic_iqa")

REPO = Path(__file__).resolve().parent.parent

Q_PRISTINE, Q_WORST, Q_JITTER = 8.6, 2.0, 0.2
# type → (name, parameter, severities of the anchors, parameter at the anchors, TID levels)
DISTORTIONS: dict[int, tuple[str, str, tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    1: (
        "gaussian_blur",
        "sigma",
        (0, 0.2, 0.4, 0.6, 0.8, 1.0),
        (0, 0.7, 1.2, 1.8, 2.6, 3.6),
        (0.2, 0.4, 0.6, 0.8, 1.0),
    ),
    2: ("bicubic_down_up", "factor", (0, 0.5, 0.75, 1.0), (1, 2, 3, 4), (0.5, 0.75, 1.0)),
    3: ("gaussian_noise", "sigma", (0, 0.2, 0.4, 0.6, 0.8, 1.0), (0, 3, 7, 12, 20, 30), (0.2, 0.4, 0.6, 0.8, 1.0)),
    4: ("jpeg", "quality", (0, 0.2, 0.4, 0.6, 0.8, 1.0), (100, 50, 30, 18, 10, 5), (0.2, 0.4, 0.6, 0.8, 1.0)),
}
SYNTHETIC_NOTE = (
    "SYNTHETIC stand-in written by train.synthetic_iqa ({fmt} file format): NOT {real}. "
    "Opinion scores are a formula of distortion strength (see synthetic.json and the module docstring)."
)


def quality(severity: float) -> float:
    """Noise-free quality (1..10 scale) of a distortion of severity ``severity``."""
    return Q_PRISTINE - (Q_PRISTINE - Q_WORST) * float(severity)


def distort(img: np.ndarray, kind: int, severity: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(distorted uint8 image, the distortion's parameter); ``kind`` 0 or severity 0 = none."""
    if kind == 0 or severity <= 0:
        return img, 0.0
    _, _, us, params, _ = DISTORTIONS[kind]
    p = float(np.interp(severity, us, params))
    if kind == 1:
        out = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=p)))
    elif kind == 2:
        h, w = img.shape[:2]
        small = imresize(img, output_shape=(max(1, round(h / p)), max(1, round(w / p))))
        out = imresize(small, output_shape=(h, w))
    elif kind == 3:
        out = np.clip(np.rint(img + rng.normal(0.0, p, img.shape)), 0, 255).astype(np.uint8)
    elif kind == 4:
        p = float(round(p))
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(p))
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    else:
        raise ValueError(f"unknown distortion type {kind}; expected 0..{max(DISTORTIONS)}")
    return out, p


def _noisy_quality(severity: float, rng: np.random.Generator) -> float:
    return float(np.clip(quality(severity) + rng.normal(0.0, Q_JITTER), 1.0, 10.0))


def _load_photos(photos: Path, size: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for path in list_images(photos):
        img = load_rgb(path)
        if min(img.shape[:2]) < size:
            raise SystemExit(
                f"error: {path} is {img.shape[1]}×{img.shape[0]}; --size {size} needs photos at least that large"
            )
        out.append((path.name, img))
    return out


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    h, w = img.shape[:2]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return img[top : top + size, left : left + size], top, left


def _write_notes(out: Path, fmt: str, real: str, args: dict, records: list[dict]) -> None:
    note = SYNTHETIC_NOTE.format(fmt=fmt, real=real)
    (out / "README.txt").write_text(note + "\n")
    (out / "synthetic.json").write_text(json.dumps({"note": note, "args": args, "images": records}, indent=1))


def make_tid2013(photos: Path, out: Path, *, references: int = 24, size: int = 256, seed: int = 0) -> int:
    """Write a synthetic TID2013-format set; returns the number of images."""
    rng = np.random.default_rng(seed)
    srcs = _load_photos(photos, size)
    if not 1 <= references <= 99:
        raise SystemExit(f"error: --references must be in 1..99 (two-digit TID names), got {references}")
    folder = out / "distorted_images"
    folder.mkdir(parents=True, exist_ok=True)
    mos_lines, std_lines, records = [], [], []
    for k in range(1, references + 1):
        src_name, src = srcs[(k - 1) % len(srcs)]
        ref, top, left = _crop(src, size, rng)
        versions = [(0, 0, 0.0)] + [(t, lvl, u) for t, d in DISTORTIONS.items() for lvl, u in enumerate(d[4], 1)]
        for kind, level, u in versions:
            img, param = distort(ref, kind, u, rng)
            q = _noisy_quality(u, rng)
            std = float(rng.uniform(0.55, 0.95))
            name = f"i{k:02d}_{kind:02d}_{level}.bmp"
            Image.fromarray(img).save(folder / name)
            mos_lines.append(f"{q - 1.0:.5f} {name}")
            std_lines.append(f"{std:.5f}")
            records.append(
                {
                    "name": name,
                    "photo": src_name,
                    "top": top,
                    "left": left,
                    "type": kind,
                    "distortion": DISTORTIONS[kind][0] if kind else "none",
                    "severity": u,
                    "parameter": param,
                    "quality": round(q, 5),
                }
            )
    (out / "mos_with_names.txt").write_text("\n".join(mos_lines) + "\n")
    (out / "mos_std.txt").write_text("\n".join(std_lines) + "\n")
    _write_notes(
        out,
        "TID2013",
        "TID2013",
        {"photos": str(photos), "references": references, "size": size, "seed": seed},
        records,
    )
    return len(records)


def make_ava(photos: Path, out: Path, *, count: int = 600, size: int = 256, seed: int = 0) -> int:
    """Write a synthetic AVA-format set; returns the number of images."""
    rng = np.random.default_rng(seed)
    srcs = _load_photos(photos, size)
    if count < 2:
        raise SystemExit(f"error: --count must be at least 2, got {count}")
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    lines, records = [], []
    for i in range(1, count + 1):
        src_name, src = srcs[int(rng.integers(len(srcs)))]
        crop, top, left = _crop(src, size, rng)
        kind = int(rng.integers(0, len(DISTORTIONS) + 1))
        u = float(rng.uniform(0.05, 1.0)) if kind else 0.0
        img, param = distort(crop, kind, u, rng)
        q = _noisy_quality(u, rng)
        spread = float(rng.uniform(1.0, 1.6))
        p = np.exp(-((SCORES - q) ** 2) / (2 * spread**2))
        counts = rng.multinomial(int(rng.integers(60, 241)), p / p.sum())
        image_id = 700000 + i
        Image.fromarray(img).save(folder / f"{image_id}.jpg", quality=95, subsampling=0)
        lines.append(" ".join(str(v) for v in (i, image_id, *counts.tolist(), 0, 0, 1)))
        records.append(
            {
                "name": f"{image_id}.jpg",
                "photo": src_name,
                "top": top,
                "left": left,
                "type": kind,
                "distortion": DISTORTIONS[kind][0] if kind else "none",
                "severity": u,
                "parameter": param,
                "quality": round(q, 5),
                "votes": int(counts.sum()),
            }
        )
    (out / "AVA.txt").write_text("\n".join(lines) + "\n")
    _write_notes(
        out,
        "AVA",
        "the AVA aesthetics data set",
        {"photos": str(photos), "count": count, "size": size, "seed": seed},
        records,
    )
    return len(records)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.synthetic_iqa",
        description="Write a small SYNTHETIC image-quality set in TID2013's or AVA's file format from a folder of "
        "photos (distorted crops, opinion scores a formula of the distortion strength). A stand-in for tests and "
        "demonstrations, not a substitute for the real data sets.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--photos", type=Path, default=REPO / "data/photos/train", help="folder of source photos")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--format", choices=("tid2013", "ava"), required=True, help="file format written")
    p.add_argument("--size", type=int, default=256, help="side of the square crops, px")
    p.add_argument("--references", type=int, default=24, help="tid2013: reference crops (19 images each)")
    p.add_argument("--count", type=int, default=600, help="ava: number of images")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.size < 8:
        raise SystemExit(f"error: --size must be at least 8, got {args.size}")
    try:
        if args.format == "tid2013":
            n = make_tid2013(args.photos, args.out, references=args.references, size=args.size, seed=args.seed)
            n_read = len(read_tid2013(args.out))
        else:
            n = make_ava(args.photos, args.out, count=args.count, size=args.size, seed=args.seed)
            n_read = len(read_ava(args.out / "AVA.txt"))
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    log.info("wrote %d synthetic %s-format images to %s (%d read back)", n, args.format, args.out, n_read)
    return 0


if __name__ == "__main__":
    sys.exit(main())

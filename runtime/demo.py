"""The README's first command: upscale a bundled photo and compare with bicubic.

The bundled photo (not used in training) is shrunk ×¼ with MATLAB-bicubic ``imresize``,
upscaled ×4 by the model and by bicubic, and the three are written side by side with
their PSNR/SSIM on Y, plus a zoomed row where the difference shows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import ImageReadError, ImageWriteError
from .image_io import read_image, write_image
from .imresize import imresize
from .metrics import psnr_y, ssim_y

__all__ = ["DEMO_PHOTO", "DemoResult", "run_demo", "comparison_strip"]

log = logging.getLogger(__name__)

DEMO_PHOTO = Path(__file__).resolve().parent / "assets" / "demo.png"
"""scikit-image's ``immunohistochemistry`` photo (no known copyright restrictions)."""


@dataclass(frozen=True)
class DemoResult:
    lr_path: Path
    sr_path: Path
    comparison_path: Path
    psnr_y_model: float
    psnr_y_bicubic: float
    ssim_y_model: float
    ssim_y_bicubic: float
    backend: str = ""
    """The backend that ran (``"auto"`` resolved, e.g. ``"openvino"``)."""
    seconds: float = 0.0
    """Wall time of the model's upscale alone."""


MIN_PHOTO_SCALES = 4
"""The smallest photo edge, in multiples of the scale: its LR version is then at least 4x4."""


def _make_folder(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(folder, f"cannot create the output folder ({exc.strerror})") from exc
    return missing


def _label(img: Image.Image, text: str) -> Image.Image:
    font = ImageFont.load_default(size=max(12, img.width // 28)) if hasattr(ImageFont, "load_default") else None
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((0, 0), text, font=font)
    pad = 4
    draw.rectangle((0, 0, box[2] + 2 * pad, box[3] + 2 * pad), fill=(0, 0, 0))
    draw.text((pad, pad), text, fill=(255, 255, 255), font=font)
    return img


def comparison_strip(
    panels: list[tuple[str, np.ndarray]], *, zoom_box: tuple[int, int, int, int] | None = None
) -> Image.Image:
    """Labelled panels side by side; with ``zoom_box`` (y0, x0, y1, x1) a 3× enlarged row below."""
    images = [Image.fromarray(np.asarray(a)).convert("RGB") for _, a in panels]
    w, h = images[0].size
    rows = [[_label(im.copy(), name) for (name, _), im in zip(panels, images)]]
    if zoom_box is not None:
        y0, x0, y1, x1 = zoom_box
        zw, zh = x1 - x0, y1 - y0
        factor = max(1, w // zw)
        rows.append(
            [
                _label(
                    im.crop((x0, y0, x1, y1)).resize((zw * factor, zh * factor), Image.Resampling.NEAREST),
                    f"{name} (zoom)",
                )
                for (name, _), im in zip(panels, images)
            ]
        )
    row_heights = [max(im.height for im in row) for row in rows]
    canvas = Image.new(
        "RGB", (w * len(images) + 4 * (len(images) - 1), sum(row_heights) + 4 * (len(rows) - 1)), (255, 255, 255)
    )
    y = 0
    for row, rh in zip(rows, row_heights):
        for i, im in enumerate(row):
            canvas.paste(im, (i * (w + 4), y))
        y += rh + 4
    return canvas


def run_demo(
    out_dir: str | Path = "out/demo",
    *,
    photo: str | Path | None = None,
    model: str | Path | None = None,
    backend: str = "auto",
    overwrite: bool = True,
) -> DemoResult:
    """Shrink, upscale, compare; returns the paths written and the scores."""
    from .upscaler import Upscaler

    photo = Path(photo) if photo else DEMO_PHOTO
    out_dir = Path(out_dir)
    hr, _info = read_image(photo)  # an ImageReadError names the photo
    hr = np.asarray(hr)
    if hr.dtype != np.uint8:
        raise ImageReadError(photo, f"the demo takes an 8-bit photo, this one is {hr.dtype}; pass an 8-bit copy")
    if hr.ndim == 3 and hr.shape[2] == 4:
        hr = hr[..., :3]
    with Upscaler(model, backend=backend) as up:
        scale = up.scale
        if min(hr.shape[:2]) < MIN_PHOTO_SCALES * scale:
            raise ImageReadError(
                photo,
                f"{hr.shape[1]}x{hr.shape[0]} pixels is too small for the demo, which shrinks it x1/{scale} and "
                f"upscales it back: give a photo of at least {MIN_PHOTO_SCALES * scale}x{MIN_PHOTO_SCALES * scale} "
                "(a few hundred pixels show the difference)",
            )
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        lr = imresize(hr, 1.0 / scale)
        t0 = time.perf_counter()
        sr = up.upscale(lr)
        seconds = time.perf_counter() - t0
        backend_name = str(getattr(up.backend, "name", type(up.backend).__name__))
    bicubic = imresize(lr, float(scale))
    stem = photo.stem
    lr_path = out_dir / f"{stem}_lr.png"
    sr_path = out_dir / f"{stem}_x{scale}.png"
    cmp_path = out_dir / f"{stem}_comparison.png"
    created = _make_folder(out_dir)  # only now, when there is something to write
    try:
        for path, arr in ((lr_path, lr), (sr_path, sr)):
            write_image(path, arr, overwrite=overwrite)
    except BaseException:
        for folder in reversed(created):  # leave nothing behind that this call made
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    scores = dict(
        psnr_y_model=psnr_y(sr, hr, border=scale),
        psnr_y_bicubic=psnr_y(bicubic, hr, border=scale),
        ssim_y_model=ssim_y(sr, hr, border=scale),
        ssim_y_bicubic=ssim_y(bicubic, hr, border=scale),
    )
    h, w = hr.shape[:2]
    zoom = (h // 3, w // 3, h // 3 + h // 5, w // 3 + w // 5)
    strip = comparison_strip(
        [
            (f"bicubic  {scores['psnr_y_bicubic']:.2f} dB / {scores['ssim_y_bicubic']:.3f}", bicubic),
            (f"EUSR x{scale}  {scores['psnr_y_model']:.2f} dB / {scores['ssim_y_model']:.3f}", sr),
            ("original", hr),
        ],
        zoom_box=zoom,
    )
    strip.save(cmp_path)
    return DemoResult(lr_path, sr_path, cmp_path, **scores, backend=backend_name, seconds=seconds)

"""Batch test inputs shared by tests/test_batch.py and tests/test_batch_ray.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from runtime.image_io import write_image

GOOD = ("camera.png", "hubble_crop.png", "deep16.png")


def make_sources(folder: Path, photos: Path) -> Path:
    """Two real photo crops (gray, RGB), a 16-bit RGB PNG and a corrupt PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("camera", "hubble_crop"):
        Image.open(photos / "test" / f"{name}.png").crop((100, 100, 148, 140)).save(folder / f"{name}.png")
    rgb = np.asarray(Image.open(photos / "test" / "hubble_crop.png").convert("RGB").crop((200, 200, 240, 232)))
    deep = rgb.astype(np.uint16) * 257 + (np.arange(rgb.size, dtype=np.uint16).reshape(rgb.shape) % 251)
    write_image(folder / "deep16.png", deep)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 8)
    return folder

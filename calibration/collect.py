"""Calibration data: LR windows of the engine's window shape, cut from real images.

INT8 scales are only as good as the activations seen while calibrating, so the windows come
from real photos (not noise), at random positions in every image, in exactly the window
shape (tile + 2·halo) and the dtype/layout the ONNX model takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.errors import UpscaleError
from runtime.imresize import imresize
from runtime.model_info import METADATA_KEY, ModelInfo, ModelIO, parse_metadata
from runtime.utils import list_images as _list_images

__all__ = ["CalibrationError", "list_images", "load_rgb", "read_model_info", "collect", "save_npz", "load_npz"]

META_KEY = "__calibration__"
"""npz entry holding the collection's provenance as a JSON string."""


class CalibrationError(UpscaleError, ValueError):
    """A user-facing error: bad arguments, files or data."""


@dataclass(frozen=True)
class Collected:
    """The windows (model input layout) and how they were made."""

    array: np.ndarray
    input_name: str
    meta: dict


def list_images(folder: Path, *, flag: str = "--images") -> list[Path]:
    """Sorted image files of ``folder``; a CalibrationError names the flag when there are none."""
    return _list_images(folder, what=flag, error=CalibrationError)


def load_rgb(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB (gray is replicated: the model takes RGB)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read the image ({exc})") from exc


def read_model_info(model: Path, *, what: str = "--model") -> ModelInfo:
    """The exporter's metadata of ``model`` (read with ONNX Runtime, no torch); errors name
    it as ``what`` (the flag or argument the user gave)."""
    import onnxruntime as ort

    if not model.is_file():
        raise CalibrationError(f"{what} {model}: file not found")
    try:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CalibrationError(f"{what} {model}: ONNX Runtime cannot load it ({exc})") from exc
    custom = sess.get_modelmeta().custom_metadata_map or {}
    if METADATA_KEY not in custom:
        raise CalibrationError(
            f"{what} {model}: no {METADATA_KEY!r} metadata; export it with export/to_onnx.py or pass --io"
        )
    return parse_metadata(custom[METADATA_KEY], model=str(model))


def to_model_layout(windows: np.ndarray, io: ModelIO) -> np.ndarray:
    """N×H×W×3 uint8 windows → the model's input (float32 NCHW 0..255 or uint8 NHWC)."""
    if io.channel_axis == 3:
        return np.ascontiguousarray(windows, dtype=io.dtype)
    return np.ascontiguousarray(windows.transpose(0, 3, 1, 2), dtype=io.dtype)


def collect(
    images: Path,
    *,
    samples: int = 64,
    tile: int = 128,
    halo: int = 8,
    scale: int = 4,
    io: ModelIO = ModelIO.FLOAT32_NCHW,
    input_name: str = "lr",
    lr_given: bool = False,
    flips: bool = False,
    seed: int = 0,
) -> Collected:
    """Sample ``samples`` windows of (tile+2·halo)² LR pixels, spread over every image.

    HR images are cropped to a multiple of ``scale`` and MATLAB-bicubic downscaled (as the
    model was trained); with ``lr_given`` the images are used as they are.
    """
    if tile < 1:
        raise CalibrationError(f"--tile must be >= 1, got {tile}")
    if halo < 0:
        raise CalibrationError(f"--halo must be >= 0, got {halo}")
    files = list_images(images)
    if samples < len(files):
        raise CalibrationError(
            f"--samples {samples}: fewer than the {len(files)} images in {images}; every image "
            f"must give at least one window (expected --samples >= {len(files)})"
        )
    win = tile + 2 * halo
    rng = np.random.default_rng(seed)
    out = np.empty((samples, win, win, 3), np.uint8)
    per_image: dict[str, int] = {}
    k = 0
    for i, path in enumerate(files):
        img = _lr_image(path, win=win, scale=scale, lr_given=lr_given, tile=tile, halo=halo)
        n = samples // len(files) + (1 if i < samples % len(files) else 0)
        per_image[path.name] = n
        _cut_windows(img, out[k : k + n], rng, flips=flips)
        k += n
    meta = {
        "images": str(images),
        "files": per_image,
        "samples": samples,
        "tile": tile,
        "halo": halo,
        "window": win,
        "scale": scale,
        "io": io.value,
        "input": input_name,
        "lr_given": lr_given,
        "flips": flips,
        "seed": seed,
    }
    return Collected(array=to_model_layout(out, io), input_name=input_name, meta=meta)


def _lr_image(path: Path, *, win: int, scale: int, lr_given: bool, tile: int, halo: int) -> np.ndarray:
    """The LR image windows are cut from: ``path`` MATLAB-bicubic downscaled (or as it is,
    with ``lr_given``), refused when smaller than one window."""
    img = load_rgb(path)
    if not lr_given:
        h, w = (img.shape[0] // scale) * scale, (img.shape[1] // scale) * scale
        if h < win * scale or w < win * scale:
            raise CalibrationError(
                f"{path}: {img.shape[1]}x{img.shape[0]} HR is too small for a {win}x{win} LR "
                f"window at x{scale} (expected at least {win * scale}x{win * scale}; "
                "use --lr-given for LR images or a smaller --tile/--halo)"
            )
        return imresize(img[:h, :w], 1.0 / scale)
    if img.shape[0] < win or img.shape[1] < win:
        raise CalibrationError(
            f"{path}: {img.shape[1]}x{img.shape[0]} LR is too small for a {win}x{win} window "
            f"(tile {tile} + 2*halo {halo}; expected at least {win}x{win})"
        )
    return img


def _cut_windows(img: np.ndarray, out: np.ndarray, rng: np.random.Generator, *, flips: bool) -> None:
    """Fill ``out`` (n, win, win, 3) with windows of ``img`` at random positions (and random
    flips), drawing from ``rng`` in a fixed order so a seed gives the same windows."""
    win = out.shape[1]
    for j in range(len(out)):
        y = int(rng.integers(0, img.shape[0] - win + 1))
        x = int(rng.integers(0, img.shape[1] - win + 1))
        crop = img[y : y + win, x : x + win]
        if flips:
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if rng.random() < 0.5:
                crop = crop[::-1]
        out[j] = crop


def save_npz(c: Collected, path: Path) -> None:
    """Write the windows under the model's input name, with the provenance as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **{c.input_name: c.array, META_KEY: np.array(json.dumps(c.meta))})


def load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The input arrays of a calibration file and its provenance (empty if absent)."""
    if not path.is_file():
        raise CalibrationError(f"--data {path}: file not found (write one with `python -m calibration collect`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"--data {path}: not a readable .npz ({exc})") from exc
    meta_arr = arrays.pop(META_KEY, None)
    meta = json.loads(str(meta_arr)) if meta_arr is not None else {}
    if not arrays:
        raise CalibrationError(f"--data {path}: holds no input arrays")
    return arrays, meta

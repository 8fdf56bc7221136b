"""Super-resolution quality: PSNR-Y / SSIM-Y / NIQE of the model and of bicubic, per image and mean.

    python benchmarks/quality.py --model runtime/models/eusr-compact-x4.onnx --data data/photos/test
    python benchmarks/quality.py --model runs/compact/last.safetensors --data Set5 Set14 BSD100
    python benchmarks/quality.py --model m.safetensors --runner upscaler --data DIV2K_valid_HR
    python benchmarks/quality.py --model m.onnx --data Set14 --ma-scorer my_ma.py:score   # + Ma, PI

Protocol (EUSR_SPEC.md, "Evaluation convention"): the HR image is mod-cropped to a
multiple of the scale (bottom/right rows and columns dropped), the LR input is MATLAB's
bicubic ``imresize(hr, 1/scale)`` on uint8 (``runtime.imresize``), the model output and
the bicubic baseline (``imresize(lr, scale)``) are uint8, and PSNR/SSIM are taken on Y
(MATLAB ``rgb2ycbcr``) with ``scale`` pixels of border cropped (``runtime.metrics``).
NIQE (no reference, lower is better; ``runtime.niqe``, the MATLAB release's algorithm,
BasicSR-compatible) is taken on the same Y with the same border, of bicubic, the model
and the HR image (for reference); it needs one 96×96 block after the crop, so smaller
images get none ("-", null) and the mean is over the others. ``--ma-scorer`` adds Ma et
al.'s score from a user-supplied model (not bundled, see ``runtime/niqe.py``) and PIRM's
perceptual index PI = ((10 − Ma) + NIQE) / 2. Gray images are scored as they are.
"gain" = model − bicubic (positive: the model is better; for a lower-is-better metric it
is bicubic − model).

Recognised layouts for each ``--data`` entry (first rule that matches):

1. an image file: that image is the HR image;
2. a folder holding ``*_HR.<ext>`` files (Huang et al.'s SelfExSR release of
   Set5/Set14/BSD100/Urban100, e.g. ``image_SRF_4/img_001_SRF_4_HR.png``): only those;
3. a folder holding images: all of them are HR images, except stems ending in ``_LR``
   or ``_bicubic`` (skipped, and listed);
4. a folder holding no images: its first subfolder named (case-insensitively)
   ``image_SRF_<scale>``, ``HR``, ``GTmod12``, ``GT``, ``original``, ``*_HR`` (DIV2K's
   ``DIV2K_valid_HR``), or any ``image_SRF_<n>``, read with rules 2-3 (BasicSR's
   ``Set5/GTmod12``, ``Set14/original``; SelfExSR's ``Set5/image_SRF_4``).

Folders are not searched deeper. Images whose HR side is under 24 pixels are skipped
(SSIM needs 11×11 pixels after the border crop).

Runners: ``upscaler`` (default for ``.onnx``; a ``.safetensors`` checkpoint is exported
to a temporary ONNX first) runs ``runtime.Upscaler`` with ``--tile``/``--halo``;
``torch`` (default for ``.safetensors``) runs the checkpoint's ×scale path in PyTorch on
the whole image.

Outputs: ``<out>/<name>.json``, ``<out>/<name>.md`` and, for the first ``--strips``
images, ``<out>/<name>_strips/<image>.png``: bicubic | model | HR with a 3× zoomed crop.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import fnmatch
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.upscaler import DEFAULT_BATCH, DEFAULT_TILE
from benchmarks._common import (
    BenchmarkError,
    expected_errors,
    HelpFormatter,
    IMAGE_SUFFIXES,
    add_common_args,
    backend_options,
    environment,
    file_sha256,
    fmt_float,
    list_images,
    load_image_uint8,
    markdown_table,
    prepared_model,
    write_results,
)

MIN_HR_SIDE = 24
LUMA_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_DERIVED_STEM = re.compile(r"_(lr|bicubic)$", re.IGNORECASE)

# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One score column. Full-reference metrics get ``fn(sr, hr, border)``; no-reference
    ones (``reference=False``) get ``fn(sr, None, border)``, ignore the HR image, and are
    also taken of the HR image itself (column "HR": what a perfect result would score).
    ``fn`` returns None where the metric does not apply (NIQE of an image under one 96×96
    block). A metric made of earlier ones of the same image (PI from NIQE and Ma) gives
    ``derive(values_so_far_by_key)`` instead of ``fn``."""

    key: str
    label: str
    fn: Callable[[np.ndarray, np.ndarray | None, int], float | None] | None = None
    derive: Callable[[Mapping[str, float | None]], float | None] | None = None
    reference: bool = True
    higher_is_better: bool = True
    digits: int = 2

    def __post_init__(self) -> None:
        if (self.fn is None) == (self.derive is None):
            raise ValueError(f"metric {self.key!r}: give exactly one of fn and derive")


def _psnr_y(sr: np.ndarray, hr: np.ndarray | None, border: int) -> float:
    from runtime.metrics import psnr_y

    return psnr_y(sr, hr, border=border)


def _ssim_y(sr: np.ndarray, hr: np.ndarray | None, border: int) -> float:
    from runtime.metrics import ssim_y

    return ssim_y(sr, hr, border=border)


def _niqe(img: np.ndarray, _hr: np.ndarray | None, border: int) -> float | None:
    from runtime.niqe import BLOCK_SIZE, niqe

    if min(img.shape[:2]) - 2 * border < BLOCK_SIZE:
        return None
    return niqe(img, crop_border=border, convert_to="y")


METRICS: tuple[Metric, ...] = (
    Metric(key="psnr_y", label="PSNR-Y", fn=_psnr_y, digits=2),
    Metric(key="ssim_y", label="SSIM-Y", fn=_ssim_y, digits=4),
    Metric(key="niqe", label="NIQE", fn=_niqe, reference=False, higher_is_better=False, digits=3),
    # Everything below (JSON, tables, means, strip labels) follows this tuple (plus
    # ma_metrics() with --ma-scorer).
)
"""The scores computed for the model and for bicubic (no-reference ones also of HR), in column order."""


def ma_metrics(spec: str) -> tuple[Metric, ...]:
    """Ma et al.'s score by the user-supplied scorer ``spec`` and PI from it and NIQE.

    The scorer sees the image with the same border crop as NIQE (PIRM 2018 shaved the
    scale too), as uint8 H×W×3 (H×W for gray datasets)."""
    from runtime.niqe import load_ma_scorer, perceptual_index

    scorer = load_ma_scorer(spec)

    def ma(img: np.ndarray, _hr: np.ndarray | None, border: int) -> float:
        h, w = img.shape[:2]
        return scorer(np.ascontiguousarray(img[border : h - border, border : w - border]))

    def pi(values: Mapping[str, float | None]) -> float | None:
        niqe_value, ma_value = values.get("niqe"), values.get("ma")
        return None if niqe_value is None or ma_value is None else perceptual_index(niqe_value, ma_value)

    return (
        Metric(key="ma", label="Ma", fn=ma, reference=False, higher_is_better=True, digits=3),
        Metric(key="pi", label="PI", derive=pi, reference=False, higher_is_better=False, digits=3),
    )


def gain(metric: Metric, model: float | None, bicubic: float | None) -> float | None:
    if model is None or bicubic is None:
        return None
    return model - bicubic if metric.higher_is_better else bicubic - model


def kinds(metric: Metric) -> tuple[str, ...]:
    """The row keys' suffixes of one metric, in column order."""
    return ("bicubic", "model", "gain") + (() if metric.reference else ("hr",))


def fmt_gain(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:+.{digits}f}"


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    name: str
    root: Path
    layout: str
    images: tuple[Path, ...]
    skipped: tuple[str, ...] = ()


def _hr_files(folder: Path) -> tuple[list[Path], str, list[str]] | None:
    """Rules 2-3 of the module docstring for one folder, or None when it holds no images."""
    files = list_images(folder)
    if not files:
        return None
    hr = [p for p in files if p.stem.upper().endswith("_HR")]
    if hr:
        return hr, f"*_HR files in {folder.name}/", [p.name for p in files if p not in hr]
    keep = [p for p in files if not _DERIVED_STEM.search(p.stem)]
    skipped = [p.name for p in files if p not in keep]
    if not keep:
        return None
    return keep, f"folder of HR images ({folder.name}/)", skipped


def find_dataset(entry: Path, *, scale: int) -> Dataset:
    """Resolve one ``--data`` entry to its HR images (rules of the module docstring)."""
    if entry.is_file():
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise BenchmarkError(f"--data {entry}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Dataset(entry.stem, entry.parent, "single image", (entry,))
    if not entry.is_dir():
        raise BenchmarkError(f"--data {entry}: no such file or folder")
    found = _hr_files(entry)
    if found:
        files, layout, skipped = found
        return Dataset(entry.name, entry, layout, tuple(files), tuple(skipped))
    subdirs = sorted(p for p in entry.iterdir() if p.is_dir())
    patterns = [f"image_srf_{scale}", "hr", "gtmod12", "gt", "original", "*_hr", "image_srf_*"]
    for pattern in patterns:
        for sub in subdirs:
            if fnmatch.fnmatchcase(sub.name.lower(), pattern):
                found = _hr_files(sub)
                if found:
                    files, layout, skipped = found
                    return Dataset(entry.name, entry, layout, tuple(files), tuple(skipped))
    raise BenchmarkError(
        f"--data {entry}: no HR images found: the folder holds no images, and none of its subfolders "
        f"{[p.name for p in subdirs]} is a recognised HR folder (image_SRF_{scale}, HR, GTmod12, GT, original, "
        "*_HR, image_SRF_<n>) holding images; pass the folder of HR images itself"
    )


# --------------------------------------------------------------------------- runners


class _TorchRunner:
    """Whole-image PyTorch inference of a checkpoint's ×scale path (gray: replicated to
    RGB, result turned back into luma like ``runtime.Upscaler``)."""

    def __init__(self, checkpoint: Path, threads: int | None, scale: int, weights: str = "auto") -> None:
        try:
            import torch

            from train.checkpoint import load_model
        except ImportError as exc:
            raise BenchmarkError(f"--runner torch needs the train extra (torch): {exc}") from exc
        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        try:
            model = load_model(checkpoint, weights=weights)
        except Exception as exc:  # CheckpointError and friends: one line naming the file
            raise BenchmarkError(f"--model {checkpoint}: cannot load the checkpoint: {exc}") from exc
        if scale not in model.scales:
            raise BenchmarkError(f"{checkpoint}: the model has scales {list(model.scales)}, not {scale}")
        self._path = model.path(scale).eval()
        self.scale = scale
        self.info = {"runner": "torch", "whole_image": True, "weights": weights, "config": model.config.to_dict(),
                     "torch_threads": torch.get_num_threads()}

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        torch = self._torch
        rgb = np.repeat(lr[:, :, None], 3, axis=2) if lr.ndim == 2 else lr
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]
        with torch.inference_mode():
            y = self._path(x)[0].numpy().transpose(1, 2, 0)
        if lr.ndim == 2:
            y = y @ LUMA_BT601
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def make_runner(args: argparse.Namespace) -> Iterator[tuple[Callable[[np.ndarray], np.ndarray], int, dict[str, Any]]]:
    """Yield ``(run, scale, description)`` for ``--model``/``--runner``."""
    model = Path(args.model)
    runner = args.runner or ("torch" if model.suffix.lower() == ".safetensors" else "upscaler")
    if runner == "torch":
        if model.suffix.lower() != ".safetensors":
            raise BenchmarkError(f"--runner torch needs a .safetensors checkpoint, got {model}")
        if not model.is_file():
            raise BenchmarkError(f"--model {model}: no such file")
        run = _TorchRunner(model, args.threads, args.scale, args.weights)
        yield run, run.scale, {"source": "checkpoint", "path": str(model), "sha256": file_sha256(model), **run.info}
        return
    if args.weights != "auto":
        raise BenchmarkError(f"--weights {args.weights} needs --runner torch (the upscaler runs an exported model)")
    from runtime import Upscaler

    with prepared_model(model, exporter=args.exporter) as prepared:
        with Upscaler(prepared.onnx_path, backend=args.backend, tile=args.tile, halo=args.halo, batch=args.batch,
                      backend_options=backend_options(args.threads)) as up:
            if up.scale != args.scale:
                raise BenchmarkError(f"{model} is a x{up.scale} model; this benchmark was asked for x{args.scale} (--scale)")
            info = up.backend.info
            yield up.upscale, up.scale, {
                **prepared.description, "runner": "upscaler", "tile": args.tile, "halo": up.halo, "batch": args.batch,
                "backend": up.backend.name, "providers": list(getattr(up.backend, "providers", ())),
                "config_name": info.config_name, "recommended_halo": info.recommended_halo,
            }


# --------------------------------------------------------------------------- measuring


def score_image(path: Path, run: Callable[[np.ndarray], np.ndarray], scale: int,
                metrics: Sequence[Metric] = METRICS) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """Scores of one HR image, and the images for its strip; None if it is too small."""
    from runtime.imresize import imresize

    hr = load_image_uint8(path)
    h, w = hr.shape[:2]
    hr = hr[: h - h % scale, : w - w % scale]
    if min(hr.shape[:2]) < MIN_HR_SIDE:
        return None
    lr = imresize(hr, 1.0 / scale)
    t0 = time.perf_counter()
    sr = run(lr)
    seconds = time.perf_counter() - t0
    bicubic = imresize(lr, float(scale))
    if sr.shape != hr.shape or bicubic.shape != hr.shape:
        raise BenchmarkError(f"{path}: output shapes {sr.shape} (model), {bicubic.shape} (bicubic) differ from HR {hr.shape}")
    row: dict[str, Any] = {
        "image": path.stem,
        "path": str(path),
        "hr_size": [hr.shape[1], hr.shape[0]],
        "channels": 1 if hr.ndim == 2 else 3,
        "seconds": seconds,
    }
    scores: dict[str, dict[str, float | None]] = {}
    for kind, img in (("bicubic", bicubic), ("model", sr), ("hr", hr)):
        values: dict[str, float | None] = {}
        for m in metrics:
            if kind == "hr" and m.reference:
                continue
            values[m.key] = m.derive(values) if m.derive is not None else m.fn(img, hr if m.reference else None, scale)
        scores[kind] = values
    for m in metrics:
        row[f"{m.key}_bicubic"] = scores["bicubic"][m.key]
        row[f"{m.key}_model"] = scores["model"][m.key]
        row[f"{m.key}_gain"] = gain(m, row[f"{m.key}_model"], row[f"{m.key}_bicubic"])
        if not m.reference:
            row[f"{m.key}_hr"] = scores["hr"][m.key]
    return row, {"hr": hr, "sr": sr, "bicubic": bicubic}


def mean_row(rows: Sequence[dict[str, Any]], metrics: Sequence[Metric] = METRICS) -> dict[str, Any]:
    """Means per column; a no-reference metric's over the images it applies to (``<key>_images`` of them)."""
    out: dict[str, Any] = {"images": len(rows)}
    for m in metrics:
        for kind in kinds(m):
            values = [r[f"{m.key}_{kind}"] for r in rows]
            if m.reference:
                out[f"{m.key}_{kind}"] = float(np.mean(values)) if values else math.nan
            else:
                known = [v for v in values if v is not None and not math.isnan(v)]
                out[f"{m.key}_{kind}"] = float(np.mean(known)) if known else None
        if not m.reference:
            out[f"{m.key}_images"] = sum(r[f"{m.key}_model"] is not None and not math.isnan(r[f"{m.key}_model"])
                                         for r in rows)
    out["seconds"] = float(np.sum([r["seconds"] for r in rows]))
    return out


def write_strip(images: dict[str, np.ndarray], row: dict[str, Any], path: Path, scale: int,
                metrics: Sequence[Metric] = METRICS) -> Path:
    from runtime.demo import comparison_strip

    def label(kind: str) -> str:
        return "  ".join(f"{m.label} {fmt_float(row[f'{m.key}_{kind}'], m.digits)}" for m in metrics
                         if kind != "hr" or not m.reference)

    hr = images["hr"]
    h, w = hr.shape[:2]
    zoom = (h // 3, w // 3, h // 3 + max(h // 5, 1), w // 3 + max(w // 5, 1))
    strip = comparison_strip(
        [(f"bicubic  {label('bicubic')}", images["bicubic"]), (f"model x{scale}  {label('model')}", images["sr"]),
         (f"HR  {label('hr')}".rstrip(), hr)],
        zoom_box=zoom,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


def table(datasets: Sequence[dict[str, Any]], metrics: Sequence[Metric] = METRICS) -> str:
    headers = ["dataset", "image", "size"]
    for m in metrics:
        headers += [f"{m.label} {'HR' if k == 'hr' else k}" for k in kinds(m)]
    headers.append("model s")

    def cells(r: dict[str, Any], m: Metric) -> list[str]:
        return [fmt_gain(r[f"{m.key}_{k}"], m.digits) if k == "gain" else fmt_float(r[f"{m.key}_{k}"], m.digits)
                for k in kinds(m)]

    rows = []
    for ds in datasets:
        for r in ds["images"]:
            row = [ds["name"], r["image"], f"{r['hr_size'][0]}x{r['hr_size'][1]}"]
            for m in metrics:
                row += cells(r, m)
            rows.append(row + [f"{r['seconds']:.2f}"])
        mean = ds["mean"]
        row = [ds["name"], f"**mean** ({mean['images']})", ""]
        for m in metrics:
            row += cells(mean, m)
        rows.append(row + [f"{mean['seconds']:.2f}"])
    return markdown_table(headers, rows)


def partial_means(datasets: Sequence[dict[str, Any]], metrics: Sequence[Metric] = METRICS) -> list[str]:
    """One line per no-reference metric whose mean leaves images out."""
    notes = []
    for ds in datasets:
        for m in metrics:
            n = ds["mean"].get(f"{m.key}_images")
            if n is not None and n < ds["mean"]["images"]:
                notes.append(f"{ds['name']}: {m.label} mean over {n} of {ds['mean']['images']} images (no score for the "
                             "others: NIQE needs a 96×96 block after the border crop).")
    return notes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quality.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[2:6]),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="an .onnx model or a .safetensors checkpoint")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="datasets: folders (see layouts above) or image files")
    p.add_argument("--runner", choices=("upscaler", "torch"), default=None,
                   help="upscaler: runtime.Upscaler on ONNX (default for .onnx); torch: whole-image PyTorch "
                   "(default for .safetensors)")
    p.add_argument("--scale", type=int, default=4, help="super-resolution factor (the model must have it)")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                   help="--runner torch: a checkpoint's moving-average weights (ema), its raw ones, or auto (ema when it has them)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="Upscaler tile (LR pixels)")
    p.add_argument("--halo", type=int, default=None, help="Upscaler halo (LR pixels; default: the model's recommended halo)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="Upscaler tiles per call")
    p.add_argument("--strips", type=int, default=3, help="write comparison strips for the first N images of each dataset")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                   help="torch.onnx exporter when a .safetensors model runs with --runner upscaler")
    p.add_argument("--ma-scorer", metavar="SPEC", default=None,
                   help="add Ma et al.'s score and PI = ((10 - Ma) + NIQE) / 2: 'module:function' or "
                   "'path/to/file.py:function' naming your scorer (image -> Ma score); Ma's trained model is not "
                   "bundled (see runtime/niqe.py)")
    add_common_args(p, name="quality")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("tile", "batch", "scale"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if (args.halo is not None and args.halo < 0) or args.strips < 0:
        parser.error("--halo and --strips must be >= 0")
    env = environment(threads=args.threads)
    datasets: list[dict[str, Any]] = []
    try:
        metrics = METRICS + (ma_metrics(args.ma_scorer) if args.ma_scorer else ())
        found = [find_dataset(d, scale=args.scale) for d in args.data]
        with make_runner(args) as (run, scale, model):
            for ds in found:
                print(f"{ds.name}: {len(ds.images)} HR images ({ds.layout})"
                      + (f"; skipped {', '.join(ds.skipped)}" if ds.skipped else ""), flush=True)
                rows, strips, too_small = [], [], []
                for path in ds.images:
                    scored = score_image(path, run, scale, metrics)
                    if scored is None:
                        too_small.append(path.name)
                        continue
                    row, images = scored
                    rows.append(row)
                    print("  " + "  ".join([row["image"]] + [
                        f"{m.label} {fmt_float(row[f'{m.key}_bicubic'], m.digits)} -> {fmt_float(row[f'{m.key}_model'], m.digits)}"
                        + ("" if m.reference else f" (HR {fmt_float(row[f'{m.key}_hr'], m.digits)})")
                        for m in metrics]), flush=True)
                    if len(strips) < args.strips:
                        strips.append(str(write_strip(images, row, args.out / f"{args.name}_strips" / f"{ds.name}_{row['image']}.png",
                                                      scale, metrics)))
                if not rows:
                    raise BenchmarkError(f"{ds.root}: no image large enough (HR side >= {MIN_HR_SIDE})")
                datasets.append({
                    "name": ds.name, "root": str(ds.root), "layout": ds.layout, "skipped": list(ds.skipped),
                    "too_small": too_small, "images": rows, "mean": mean_row(rows, metrics), "strips": strips,
                })
    except expected_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = {
        "benchmark": "quality",
        "environment": env,
        "model": model,
        "settings": {
            "scale": scale,
            "border": scale,
            "lr": "MATLAB-bicubic imresize(hr, 1/scale) of the mod-cropped uint8 HR, uint8",
            "bicubic": "MATLAB-bicubic imresize(lr, scale), uint8",
            "metrics": [{"key": m.key, "label": m.label, "reference": m.reference, "higher_is_better": m.higher_is_better}
                        for m in metrics],
            "gain": "model - bicubic (bicubic - model for lower-is-better metrics)",
            "niqe": "runtime.niqe: MATLAB NIQE release algorithm and pristine model, BasicSR-compatible; Y channel, "
                    "border crop = scale; null where no 96x96 block remains; <key>_hr: of the HR image",
            "ma_scorer": args.ma_scorer,
        },
        "datasets": datasets,
    }
    md_table = table(datasets, metrics)
    notes = partial_means(datasets, metrics)
    markdown = "\n\n".join([
        f"# Quality x{scale}: {Path(model['path']).name}",
        f"{env['date']}, commit {env['git']['commit']}, {env['host']['cpu']}; runner {model['runner']}; "
        f"LR = {data['settings']['lr']}; Y channel, {scale}-pixel border; NIQE (lower is better) also of HR"
        + (f"; Ma by {args.ma_scorer}, PI = ((10 - Ma) + NIQE) / 2" if args.ma_scorer else "") + ".",
        md_table,
        *(["\n".join(f"- {n}" for n in notes)] if notes else []),
        *[f"![{Path(s).stem}]({Path(s).relative_to(args.out)})" for ds in datasets for s in ds["strips"]],
    ])
    paths = write_results(args.out, args.name, data, markdown)
    print(f"wrote {paths['json']}, {paths['md']}" + (f" and {sum(len(d['strips']) for d in datasets)} strips" if args.strips else ""))
    print()
    print(md_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

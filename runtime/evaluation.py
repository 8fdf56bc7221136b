"""The super-resolution evaluation protocol: scores of a model and of bicubic on HR images.

One implementation for ``benchmarks/quality.py`` and ``python -m train.evaluate``, so the
numbers of a benchmark, a training log and a paper table agree (EUSR_SPEC.md,
"Evaluation convention"): each HR image is mod-cropped to a multiple of the scale, the LR
input is MATLAB's bicubic ``imresize(hr, 1/scale)`` on uint8 (:mod:`runtime.imresize`),
the model's output and the bicubic baseline (``imresize(lr, scale)``) are uint8, PSNR and
SSIM are taken on Y with ``scale`` pixels of border (:mod:`runtime.metrics`), and NIQE
(:mod:`runtime.niqe`, no reference) on the same Y and border, of bicubic, the model and
the HR image. Optional Ma et al. and PI columns come from a user-supplied scorer.

The model is any ``uint8 LR -> uint8 SR`` function (``runtime.Upscaler.upscale``, a
PyTorch runner): :class:`EvaluatedModel`. :func:`evaluate` runs the whole protocol and
writes ``<out>/<name>.json``, ``.md`` and comparison strips. numpy and Pillow only at
import.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, UpscaleError
from .results import commit_label, fmt_float, markdown_table, write_results
from .utils import IMAGE_SUFFIXES, check_int, is_image_path, list_images

__all__ = [
    "EvaluationError",
    "MIN_HR_SIDE",
    "Metric",
    "METRICS",
    "ma_metrics",
    "metrics_for",
    "gain",
    "kinds",
    "load_image_uint8",
    "Dataset",
    "find_dataset",
    "EvaluatedModel",
    "score_image",
    "mean_row",
    "write_strip",
    "table",
    "partial_means",
    "EvaluationOptions",
    "EvaluationReport",
    "evaluate",
]

MIN_HR_SIDE = 24
"""Smallest HR side scored: SSIM needs 11×11 pixels after the border crop."""
_DERIVED_STEM = re.compile(r"_(lr|bicubic)$", re.IGNORECASE)

Upscale = Callable[[np.ndarray], np.ndarray]
"""uint8 H×W(×3) LR -> uint8 (H·scale)×(W·scale)(×3) SR."""


class EvaluationError(UpscaleError, ValueError):
    """The evaluation cannot run as asked (no HR images, a model of another scale...)."""


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
    from .metrics import psnr_y

    if hr is None:
        raise EvaluationError("PSNR-Y needs the HR reference image")
    return psnr_y(sr, hr, border=border)


def _ssim_y(sr: np.ndarray, hr: np.ndarray | None, border: int) -> float:
    from .metrics import ssim_y

    if hr is None:
        raise EvaluationError("SSIM-Y needs the HR reference image")
    return ssim_y(sr, hr, border=border)


def _niqe(img: np.ndarray, _hr: np.ndarray | None, border: int) -> float | None:
    from .niqe import BLOCK_SIZE, niqe

    if min(img.shape[:2]) - 2 * border < BLOCK_SIZE:
        return None
    return niqe(img, crop_border=border, convert_to="y")


METRICS: tuple[Metric, ...] = (
    Metric(key="psnr_y", label="PSNR-Y", fn=_psnr_y, digits=2),
    Metric(key="ssim_y", label="SSIM-Y", fn=_ssim_y, digits=4),
    Metric(key="niqe", label="NIQE", fn=_niqe, reference=False, higher_is_better=False, digits=3),
    # Everything below (JSON, tables, means, strip labels) follows this tuple (plus
    # ma_metrics() with a Ma scorer).
)
"""The scores computed for the model and for bicubic (no-reference ones also of HR), in column order."""


def ma_metrics(spec: str) -> tuple[Metric, ...]:
    """Ma et al.'s score by the user-supplied scorer ``spec`` and PI from it and NIQE.

    The scorer sees the image with the same border crop as NIQE (PIRM 2018 shaved the
    scale too), as uint8 H×W×3 (H×W for gray datasets)."""
    from .niqe import load_ma_scorer, perceptual_index

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


def metrics_for(ma_scorer: str | None) -> tuple[Metric, ...]:
    """:data:`METRICS`, plus Ma and PI when a Ma scorer spec is given."""
    return METRICS + (ma_metrics(ma_scorer) if ma_scorer else ())


def gain(metric: Metric, model: float | None, bicubic: float | None) -> float | None:
    """model − bicubic (bicubic − model for a lower-is-better metric): positive = model better."""
    if model is None or bicubic is None:
        return None
    return model - bicubic if metric.higher_is_better else bicubic - model


def kinds(metric: Metric) -> tuple[str, ...]:
    """The row keys' suffixes of one metric, in column order."""
    return ("bicubic", "model", "gain") + (() if metric.reference else ("hr",))


def _fmt_gain(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:+.{digits}f}"


# --------------------------------------------------------------------------- datasets


def load_image_uint8(path: str | os.PathLike[str]) -> np.ndarray:
    """An 8-bit H×W (gray) or H×W×3 (colour) array: alpha dropped, 16-bit scaled to 8."""
    from .image_io import read_image

    array, _info = read_image(path)
    array = np.asarray(array)
    if array.dtype == np.uint16:
        array = np.clip(np.round(array / 257.0), 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise EvaluationError(f"{path}: expected an 8- or 16-bit image, got {array.dtype}")
    channels = array.shape[2]
    if channels in (1, 2):  # gray (+ alpha)
        return np.ascontiguousarray(array[:, :, 0])
    return np.ascontiguousarray(array[:, :, :3])


@dataclass(frozen=True)
class Dataset:
    """The HR images of one ``data`` entry and how they were found."""

    name: str
    root: Path
    layout: str
    images: tuple[Path, ...]
    skipped: tuple[str, ...] = ()


def _hr_files(folder: Path) -> tuple[list[Path], str, list[str]] | None:
    """Rules 2-3 of :func:`find_dataset` for one folder, or None when it holds no HR images."""
    try:
        files = list_images(folder)
    except InvalidArgumentError:  # no images here: the caller looks in subfolders
        return None
    hr = [p for p in files if p.stem.upper().endswith("_HR")]
    if hr:
        return hr, f"*_HR files in {folder.name}/", [p.name for p in files if p not in hr]
    keep = [p for p in files if not _DERIVED_STEM.search(p.stem)]
    skipped = [p.name for p in files if p not in keep]
    if not keep:
        return None
    return keep, f"folder of HR images ({folder.name}/)", skipped


def find_dataset(entry: str | os.PathLike[str], *, scale: int, what: str = "--data") -> Dataset:
    """The HR images of one dataset entry (``what`` names it in errors), first rule that matches:

    1. an image file: that image;
    2. a folder holding ``*_HR.<ext>`` files (SelfExSR's ``image_SRF_4/img_001_SRF_4_HR.png``): those;
    3. a folder holding images: all of them except stems ending in ``_LR`` or ``_bicubic``;
    4. a folder without images: its first subfolder named (case-insensitively)
       ``image_SRF_<scale>``, ``HR``, ``GTmod12``, ``GT``, ``original``, ``*_HR`` (DIV2K) or
       any ``image_SRF_<n>``, read with rules 2-3. Folders are not searched deeper.
    """
    entry = Path(entry)
    if entry.is_file():
        if not is_image_path(entry):
            raise EvaluationError(f"{what} {entry}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Dataset(entry.stem, entry.parent, "single image", (entry,))
    if not entry.is_dir():
        raise EvaluationError(f"{what} {entry}: no such file or folder")
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
    raise EvaluationError(
        f"{what} {entry}: no HR images found: the folder holds no images, and none of its subfolders "
        f"{[p.name for p in subdirs]} is a recognised HR folder (image_SRF_{scale}, HR, GTmod12, GT, original, "
        "*_HR, image_SRF_<n>) holding images; pass the folder of HR images itself"
    )


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class EvaluatedModel:
    """What is scored: ``run`` (uint8 LR -> uint8 SR), its scale, and a description for the
    report (at least ``"path"`` and ``"runner"``)."""

    run: Upscale
    scale: int
    description: Mapping[str, Any]


def score_image(
    path: Path, run: Upscale, scale: int, metrics: Sequence[Metric] = METRICS
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """Scores of one HR image, and the images for its strip; None if it is too small."""
    from .imresize import imresize

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
        raise EvaluationError(
            f"{path}: output shapes {sr.shape} (model), {bicubic.shape} (bicubic) differ from HR {hr.shape}"
        )
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
            if m.derive is not None:
                values[m.key] = m.derive(values)
            elif m.fn is not None:
                values[m.key] = m.fn(img, hr if m.reference else None, scale)
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
            out[f"{m.key}_images"] = sum(
                r[f"{m.key}_model"] is not None and not math.isnan(r[f"{m.key}_model"]) for r in rows
            )
    out["seconds"] = float(np.mean([r["seconds"] for r in rows]))
    return out


def write_strip(
    images: Mapping[str, np.ndarray],
    row: Mapping[str, Any],
    path: Path,
    scale: int,
    metrics: Sequence[Metric] = METRICS,
) -> Path:
    """bicubic | model | HR side by side, scores in the labels, a 3× zoomed crop below."""
    from .demo import comparison_strip

    def label(kind: str) -> str:
        return "  ".join(
            f"{m.label} {fmt_float(row[f'{m.key}_{kind}'], m.digits)}"
            for m in metrics
            if kind != "hr" or not m.reference
        )

    hr = images["hr"]
    h, w = hr.shape[:2]
    zoom = (h // 3, w // 3, h // 3 + max(h // 5, 1), w // 3 + max(w // 5, 1))
    strip = comparison_strip(
        [
            (f"bicubic  {label('bicubic')}", images["bicubic"]),
            (f"model x{scale}  {label('model')}", images["sr"]),
            (f"HR  {label('hr')}".rstrip(), hr),
        ],
        zoom_box=zoom,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


# --------------------------------------------------------------------------- report


def table(datasets: Sequence[Mapping[str, Any]], metrics: Sequence[Metric] = METRICS) -> str:
    """Per-image rows and a mean row per dataset, every metric's bicubic/model/gain(/HR) columns."""
    headers = ["dataset", "image", "size"]
    for m in metrics:
        headers += [f"{m.label} {'HR' if k == 'hr' else k}" for k in kinds(m)]
    headers.append("model s")

    def cells(r: Mapping[str, Any], m: Metric) -> list[str]:
        return [
            _fmt_gain(r[f"{m.key}_{k}"], m.digits) if k == "gain" else fmt_float(r[f"{m.key}_{k}"], m.digits)
            for k in kinds(m)
        ]

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


def partial_means(datasets: Sequence[Mapping[str, Any]], metrics: Sequence[Metric] = METRICS) -> list[str]:
    """One line per no-reference metric whose mean leaves images out."""
    notes = []
    for ds in datasets:
        for m in metrics:
            n = ds["mean"].get(f"{m.key}_images")
            if n is not None and n < ds["mean"]["images"]:
                notes.append(
                    f"{ds['name']}: {m.label} mean over {n} of {ds['mean']['images']} images (no score for the "
                    "others: NIQE needs a 96×96 block after the border crop)."
                )
    return notes


@dataclass(frozen=True, kw_only=True)
class EvaluationOptions:
    """What to evaluate and where the report goes.

    ``data``: dataset entries (see :func:`find_dataset`); ``strips``: comparison strips for
    the first N images of each dataset; ``ma_scorer``: a Ma et al. scorer spec
    (``module:function`` or ``file.py:function``) adding Ma and PI; ``data_flag`` names
    the entries in errors."""

    data: Sequence[str | os.PathLike[str]]
    out: str | os.PathLike[str]
    name: str
    scale: int = 4
    strips: int = 3
    ma_scorer: str | None = None
    data_flag: str = "--data"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(Path(d) for d in self.data))
        object.__setattr__(self, "out", Path(self.out))
        check_int("scale", self.scale, 1, error=EvaluationError)
        check_int("strips", self.strips, 0, error=EvaluationError)
        if not self.data:
            raise EvaluationError(f"{self.data_flag}: no dataset given; expected folders of HR images or image files")


@dataclass
class EvaluationReport:
    """What :func:`evaluate` wrote: the JSON document, the Markdown, the table, the paths."""

    data: dict[str, Any]
    markdown: str
    table: str
    paths: dict[str, Path] = field(default_factory=dict)


def _score_dataset(
    ds: Dataset,
    model: EvaluatedModel,
    metrics: Sequence[Metric],
    options: EvaluationOptions,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    echo(
        f"{ds.name}: {len(ds.images)} HR images ({ds.layout})"
        + (f"; skipped {', '.join(ds.skipped)}" if ds.skipped else "")
    )
    rows: list[dict[str, Any]] = []
    strips: list[str] = []
    too_small: list[str] = []
    for path in ds.images:
        scored = score_image(path, model.run, model.scale, metrics)
        if scored is None:
            too_small.append(path.name)
            continue
        row, images = scored
        rows.append(row)
        echo(
            "  "
            + "  ".join(
                [row["image"]]
                + [
                    f"{m.label} {fmt_float(row[f'{m.key}_bicubic'], m.digits)} -> {fmt_float(row[f'{m.key}_model'], m.digits)}"
                    + ("" if m.reference else f" (HR {fmt_float(row[f'{m.key}_hr'], m.digits)})")
                    for m in metrics
                ]
            )
        )
        if len(strips) < options.strips:
            strip = Path(options.out) / f"{options.name}_strips" / f"{ds.name}_{row['image']}.png"
            strips.append(str(write_strip(images, row, strip, model.scale, metrics)))
    if not rows:
        raise EvaluationError(f"{ds.root}: no image large enough (HR side >= {MIN_HR_SIDE})")
    return {
        "name": ds.name,
        "root": str(ds.root),
        "layout": ds.layout,
        "skipped": list(ds.skipped),
        "too_small": too_small,
        "images": rows,
        "mean": mean_row(rows, metrics),
        "strips": strips,
    }


def _settings(scale: int, metrics: Sequence[Metric], ma_scorer: str | None) -> dict[str, Any]:
    return {
        "scale": scale,
        "border": scale,
        "lr": "MATLAB-bicubic imresize(hr, 1/scale) of the mod-cropped uint8 HR, uint8",
        "bicubic": "MATLAB-bicubic imresize(lr, scale), uint8",
        "metrics": [
            {"key": m.key, "label": m.label, "reference": m.reference, "higher_is_better": m.higher_is_better}
            for m in metrics
        ],
        "gain": "model - bicubic (bicubic - model for lower-is-better metrics)",
        "niqe": "runtime.niqe: MATLAB NIQE release algorithm and pristine model, BasicSR-compatible; Y channel, "
        "border crop = scale; null where no 96x96 block remains; <key>_hr: of the HR image",
        "ma_scorer": ma_scorer,
    }


def _markdown(data: Mapping[str, Any], md_table: str, notes: Sequence[str], out: Path) -> str:
    env, model, settings = data["environment"], data["model"], data["settings"]
    scale, ma_scorer = settings["scale"], settings["ma_scorer"]
    return "\n\n".join(
        [
            f"# Quality x{scale}: {Path(model['path']).name}",
            f"{env['date']}, commit {commit_label(env)}, {env['host']['cpu']}; runner {model['runner']}; "
            f"LR = {settings['lr']}; Y channel, {scale}-pixel border; NIQE (lower is better) also of HR"
            + (f"; Ma by {ma_scorer}, PI = ((10 - Ma) + NIQE) / 2" if ma_scorer else "")
            + ".",
            md_table,
            *(["\n".join(f"- {n}" for n in notes)] if notes else []),
            *[f"![{Path(s).stem}]({Path(s).relative_to(out)})" for ds in data["datasets"] for s in ds["strips"]],
        ]
    )


def evaluate(
    options: EvaluationOptions,
    open_model: Callable[[], AbstractContextManager[EvaluatedModel]],
    *,
    environment: Mapping[str, Any],
    echo: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Score ``open_model()``'s model and bicubic on every dataset of ``options`` and write
    ``<out>/<name>.json``, ``.md`` and the strips; progress, then the table, go to ``echo``.

    The datasets (and a Ma scorer) are resolved before the model is opened, so a wrong
    path fails before an export or a checkpoint load. ``environment``: the provenance
    record of :func:`runtime.results.environment`. Raises :class:`UpscaleError`
    subclasses for anything the user can fix.
    """
    say = echo or (lambda line: print(line, flush=True))
    metrics = metrics_for(options.ma_scorer)
    found = [find_dataset(d, scale=options.scale, what=options.data_flag) for d in options.data]
    with open_model() as model:
        datasets = [_score_dataset(ds, model, metrics, options, say) for ds in found]
        description = dict(model.description)
        scale = model.scale
    data = {
        "benchmark": "quality",
        "environment": dict(environment),
        "model": description,
        "settings": _settings(scale, metrics, options.ma_scorer),
        "datasets": datasets,
    }
    md_table = table(datasets, metrics)
    markdown = _markdown(data, md_table, partial_means(datasets, metrics), Path(options.out))
    paths = write_results(options.out, options.name, data, markdown)
    say(
        f"wrote {paths['json']}, {paths['md']}"
        + (f" and {sum(len(d['strips']) for d in datasets)} strips" if options.strips else "")
    )
    say("")
    say(md_table)
    return EvaluationReport(data=data, markdown=markdown, table=md_table, paths=paths)

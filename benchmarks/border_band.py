"""Border band: are the outer output rows and columns as good as the interior?

    python benchmarks/border_band.py                        # bundled model, data/photos/test
    python benchmarks/border_band.py --model m.onnx --band 8 data/photos/test
    python benchmarks/border_band.py --update-results       # rewrite benchmarks/results/border_band.*

Border windows get the halo as mirrored context beyond the image edge (``runtime.tiling``);
before that, the network's own zero padding decided the border pixels. For every photo (the
evaluation protocol: HR cropped to a multiple of the scale, LR = MATLAB-bicubic ×1/scale,
bicubic ×scale as the baseline, PSNR on Y of uint8 images), two measurements, no border crop:

1. **The band against the interior** (issue 16's figure): PSNR-Y gain over bicubic of the
   outer ``--band`` output rows/columns, and of everything inside them, for the model run with
   no border context (zero padding, the old behaviour) and with the runtime's mirrored border
   (its halo). Content differs between band and interior (a flat background gains little
   anywhere), so this gap mixes content with border handling.
2. **Border handling alone** (a context oracle): an inner crop of the LR image (``--margin``
   LR pixels in from each side) is upscaled on its own (zero padding, or the mirrored border),
   and its band is compared with the same output pixels computed with the *real* surrounding
   pixels (the full image). The difference is what the border handling costs, nothing else.

"The model with border b" is the whole image padded by b (``benchmarks.common.with_border``)
through one window; the runtime's default ``Upscaler`` output is checked against it for
b = halo (max abs difference reported). Writes ``<out>/border_band.json``, ``.md`` and
``.png`` (a corner of the worst photo: HR, bicubic, zero padding, mirrored); ``--out``
defaults to a fresh temporary folder, ``--update-results`` writes benchmarks/results/.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import math
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.common import (
    REPO_ROOT,
    BenchmarkError,
    HelpFormatter,
    add_allow_dirty,
    environment,
    fmt_float,
    load_image_uint8,
    markdown_table,
    require_clean_tree,
    with_border,
    write_results,
)
from benchmarks.throughput_models import quiet_halo_warning
from runtime.errors import UpscaleError
from runtime.tiling import BORDER_MODE

RESULTS = REPO_ROOT / "benchmarks" / "results"
DEFAULT_IMAGES = REPO_ROOT / "data" / "photos" / "test"
TARGET_GAP_DB = 1.0
"""Issue 16: the band's gain within 1 dB of the interior's."""

Run = Callable[[np.ndarray], np.ndarray]


def _y(img: np.ndarray) -> np.ndarray:
    from runtime.metrics import rgb_to_y

    return rgb_to_y(np.asarray(img))


def band_mask(shape: tuple[int, int], band: int) -> np.ndarray:
    """True on the outer ``band`` rows and columns of an image of ``shape``."""
    mask = np.zeros(shape, bool)
    mask[:band] = mask[-band:] = True
    mask[:, :band] = mask[:, -band:] = True
    return mask


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64))[mask]
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def measure_photo(
    path: Path, run: Run, *, scale: int, halo: int, band: int, margin: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Both measurements for one photo; ``run`` is the model on a whole image (no border)."""
    from runtime.imresize import imresize

    hr = load_image_uint8(path)
    if hr.ndim == 2:
        hr = np.repeat(hr[:, :, None], 3, axis=2)
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale, :3]
    # uint8 LR as a file would hold it, handed over as float32 so the raw output comes back
    lr = np.clip(np.rint(imresize(hr, 1.0 / scale)), 0, 255).astype(np.float32)
    if min(lr.shape[:2]) <= 2 * margin + 2 * band // scale + 2:
        raise BenchmarkError(f"{path}: {lr.shape[1]}x{lr.shape[0]} LR is too small for --margin {margin}")
    bicubic = imresize(lr, float(scale))
    yh, yb = _y(hr), _y(bicubic)
    outer = band_mask(yh.shape, band)
    zero = run(lr)
    mirrored = with_border(run, halo, scale)(lr)

    def gains(sr: np.ndarray, mask: np.ndarray, ref_y: np.ndarray, bic_y: np.ndarray) -> float:
        return masked_psnr(_y(sr), ref_y, mask) - masked_psnr(bic_y, ref_y, mask)

    row: dict[str, Any] = {"image": path.stem, "lr_size": [lr.shape[1], lr.shape[0]]}
    for name, sr in (("zero", zero), ("mirrored", mirrored)):
        row[f"band_gain_{name}"] = gains(sr, outer, yh, yb)
        row[f"interior_gain_{name}"] = gains(sr, ~outer, yh, yb)
        row[f"gap_{name}"] = row[f"interior_gain_{name}"] - row[f"band_gain_{name}"]
    # the alternatives to the runtime's fill: other numpy.pad modes, a wider border
    for mode, border in border_variants(halo):
        if (mode, border) != (BORDER_MODE, halo):
            sr = with_border(run, border, scale, mode)(lr)
            row[variant_key(mode, border)] = gains(sr, outer, yh, yb)
    row[variant_key(BORDER_MODE, halo)] = row["band_gain_mirrored"]
    # the oracle: an inner crop alone vs the same pixels with the real context around them
    m, s = margin, margin * scale
    inner = (slice(s, -s), slice(s, -s))
    yh_c, yb_c = yh[inner], yb[inner]
    crop_band = band_mask(yh_c.shape, band)
    real = mirrored[inner]  # margin >= halo: the crop's band pixels see real pixels only
    crop = lr[m:-m, m:-m]
    alone = {"zero": run(crop), "mirrored": with_border(run, halo, scale)(crop)}
    row["crop_band_gain_real_context"] = gains(real, crop_band, yh_c, yb_c)
    for name, sr in alone.items():
        row[f"crop_band_gain_{name}"] = gains(sr, crop_band, yh_c, yb_c)
        row[f"crop_band_loss_{name}"] = row["crop_band_gain_real_context"] - row[f"crop_band_gain_{name}"]
        row[f"crop_band_psnr_vs_real_{name}"] = masked_psnr(_y(sr), _y(real), crop_band)
    return row, {"hr": hr, "lr": lr, "bicubic": bicubic, "zero": zero, "mirrored": mirrored}


BORDER_MODES = ("symmetric", "reflect", "edge")


def border_variants(halo: int) -> list[tuple[str, int]]:
    """(numpy.pad mode, border width) pairs measured beside the runtime's own: every mode at
    the halo, and the runtime's mode at twice and four times the halo."""
    return [(mode, halo) for mode in BORDER_MODES] + [(BORDER_MODE, 2 * halo), (BORDER_MODE, 4 * halo)]


def variant_key(mode: str, border: int) -> str:
    return f"band_gain_{mode}_{border}"


def mean_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {"image": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def corner_figure(images: dict[str, np.ndarray], row: dict[str, Any], path: Path, size: int = 48) -> Path:
    """The top-left ``size``² output corner of one photo, 4× enlarged: HR, bicubic, zero, mirrored."""
    from runtime.demo import comparison_strip

    def corner(a: np.ndarray) -> np.ndarray:
        return (
            np.clip(np.rint(np.asarray(a, np.float64)), 0, 255).astype(np.uint8)[:size, :size].repeat(4, 0).repeat(4, 1)
        )

    panels = [
        ("HR", corner(images["hr"])),
        ("bicubic", corner(images["bicubic"])),
        (f"zero padding {row['band_gain_zero']:+.2f} dB", corner(images["zero"])),
        (f"mirrored {row['band_gain_mirrored']:+.2f} dB", corner(images["mirrored"])),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    comparison_strip(panels).save(path)
    return path


def markdown(data: dict[str, Any]) -> str:
    s = data["settings"]
    env = data["environment"]
    rows = [*data["rows"], data["mean"]]
    band_table = markdown_table(
        ["photo", "band, zero pad", "band, mirrored", "interior", "gap (interior − band)", "within 1 dB"],
        [
            [
                r["image"],
                f"{r['band_gain_zero']:+.2f}",
                f"{r['band_gain_mirrored']:+.2f}",
                f"{r['interior_gain_mirrored']:+.2f}",
                f"{r['gap_mirrored']:.2f}",
                "yes" if r["gap_mirrored"] <= TARGET_GAP_DB else "**no**",
            ]
            for r in rows
        ],
    )
    oracle_table = markdown_table(
        ["photo", "real context", "mirrored", "zero pad", "mirrored loss", "zero-pad loss", "mirrored vs real"],
        [
            [
                r["image"],
                f"{r['crop_band_gain_real_context']:+.2f}",
                f"{r['crop_band_gain_mirrored']:+.2f}",
                f"{r['crop_band_gain_zero']:+.2f}",
                f"{r['crop_band_loss_mirrored']:.2f}",
                f"{r['crop_band_loss_zero']:.2f}",
                f"{fmt_float(r['crop_band_psnr_vs_real_mirrored'], 1)} dB",
            ]
            for r in rows
        ],
    )
    variants = border_variants(s["halo"])
    variant_table = markdown_table(
        [
            "photo",
            "zero pad",
            *(
                f"{mode} {border}{' (runtime)' if (mode, border) == (BORDER_MODE, s['halo']) else ''}"
                for mode, border in variants
            ),
        ],
        [
            [
                r["image"],
                f"{r['band_gain_zero']:+.2f}",
                *(
                    f"{r[variant_key(mode, border)]:+.2f}" if variant_key(mode, border) in r else "-"
                    for mode, border in variants
                ),
            ]
            for r in rows
        ],
    )
    return "\n\n".join(
        [
            "# Border band: outer output rows/columns vs the interior",
            f"{env['date']}, commit {env['git']['commit'][:7]}{' (dirty)' if env['git']['dirty'] else ''}, "
            f"{env['host'].get('cpu', '')}; model {s['model']} ({s['backend']}), ×{s['scale']}, halo {s['halo']} "
            f"(the mirrored border), band {s['band']} output px, photos {s['images']}. Default Upscaler output vs "
            f"the model on the image padded by the halo: max |Δ| {fmt_float(data['default_vs_bordered_max_abs'], 4)}.",
            "## The band against the interior",
            "PSNR-Y gain over bicubic (dB), no border crop: the outer band and everything inside it. Content differs "
            "between the two (a flat background gains little anywhere), so the gap mixes content with border handling.",
            band_table,
            "## Border handling alone",
            f"An inner crop ({s['margin']} LR px in from each side) upscaled on its own; its band's gain (dB) against the "
            "same output pixels computed with the real pixels around them. Loss = real context − alone.",
            oracle_table,
            "## How the border is filled",
            "The band's gain (dB) over bicubic with the border filled by each numpy.pad mode at the halo's width "
            "(symmetric: mirrored with the edge pixel repeated; reflect: mirrored about the edge pixel; edge: the edge "
            "pixel replicated), and with the runtime's mode at twice and four times the halo. Bicubic, and the MATLAB "
            "downscale that made the LR image, pad symmetrically.",
            variant_table,
            "![corner](border_band.png)",
            f"Corner: the top-left of {data['figure_photo']} (48² output px, 4× enlarged).",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("images", nargs="*", type=Path, default=[DEFAULT_IMAGES], help="HR photos or folders")
    p.add_argument("--model", default=None, help="ONNX model (default: the bundled one)")
    p.add_argument("--backend", default="auto", help="runtime backend (auto, onnxruntime, openvino)")
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    p.add_argument("--band", type=int, default=8, help="output rows/columns of the band")
    p.add_argument("--margin", type=int, default=16, help="LR pixels the oracle's crop lies inside the image")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: a fresh temporary folder)")
    p.add_argument("--update-results", action="store_true", help="write benchmarks/results/border_band.*")
    add_allow_dirty(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from runtime import Upscaler
    from runtime.utils import list_images

    args = _parser().parse_args(argv)
    if args.band < 1 or args.margin < 1:
        _parser().error("--band and --margin must be >= 1")
    if args.out is not None and args.update_results:
        _parser().error("--out and --update-results exclude each other")
    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
        paths = [
            p
            for entry in args.images
            for p in (list_images(entry, error=BenchmarkError) if entry.is_dir() else [entry])
        ]
        if not paths:
            raise BenchmarkError(f"no images in {', '.join(map(str, args.images))}")
        backend: Any = args.backend
        if args.threads is not None:
            from benchmarks.common import backend_for

            backend = backend_for(args.backend, args.threads, args.model)
        with Upscaler(args.model, backend=backend) as default:
            halo, scale = default.halo, default.scale
            if args.margin < halo:
                raise BenchmarkError(f"--margin {args.margin} must be >= the halo {halo} (the oracle's real context)")
            # one window for the largest image plus its border: buffers are sized by the tile
            tile = max(max(_size(p)) for p in paths) // scale + 2 * max(b for _, b in border_variants(halo))
            with quiet_halo_warning(), Upscaler(backend=default.backend, tile=tile, halo=0) as whole:
                rows, figures = [], {}
                worst_delta = 0.0
                for path in paths:
                    row, images = measure_photo(
                        path, whole.upscale, scale=scale, halo=halo, band=args.band, margin=args.margin
                    )
                    delta = np.abs(default.upscale(images["lr"]) - images["mirrored"]).max()
                    worst_delta = max(worst_delta, float(delta))
                    rows.append(row)
                    figures[row["image"]] = images
                    print(
                        f"  {row['image']}: band {row['band_gain_zero']:+.2f} -> {row['band_gain_mirrored']:+.2f} dB, "
                        f"interior {row['interior_gain_mirrored']:+.2f}; crop alone loses "
                        f"{row['crop_band_loss_zero']:.2f} (zero pad) / {row['crop_band_loss_mirrored']:.2f} (mirrored)",
                        flush=True,
                    )
            model = str(args.model or "bundled (runtime/models)")
            backend_name = default.backend.name
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    worst = min(rows, key=lambda r: r["band_gain_zero"] - r["interior_gain_zero"])
    data = {
        "benchmark": "border_band",
        "environment": env,
        "settings": {
            "model": model,
            "backend": backend_name,
            "scale": scale,
            "halo": halo,
            "band": args.band,
            "margin": args.margin,
            "images": ", ".join(
                sorted(str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p) for p in paths)
            ),
        },
        "rows": rows,
        "mean": mean_row(rows),
        "default_vs_bordered_max_abs": worst_delta,
        "figure_photo": worst["image"],
    }
    out = RESULTS if args.update_results else (args.out or Path(tempfile.mkdtemp(prefix="border_band-")))
    figure = corner_figure(figures[worst["image"]], worst, out / "border_band.png")
    paths_written = write_results(out, "border_band", data, markdown(data))
    print(f"wrote {paths_written['json']}, {paths_written['md']}, {figure}")
    return 0


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


if __name__ == "__main__":
    sys.exit(main())
